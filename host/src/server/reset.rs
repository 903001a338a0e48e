//! The stateless reset key of a node's endpoints, kept across restarts.
//!
//! A QUIC endpoint that receives a packet for a connection it does not know answers with a
//! *stateless reset*, which the sender believes only if its token matches the one the
//! connection was given at its start: an HMAC of the connection id under the endpoint's
//! reset key. quinn draws that key at random per process, so a node restarted on the same
//! port could not reset the connections its peers and clients held with the process before
//! it: they went on sending into the void until their idle timeout (3 s for peers, 30 s for
//! clients), and a request forwarded to a restarted leader in that window failed with an
//! unknown outcome. With the key kept in `<data-dir>/reset-key`, the new process resets such
//! a connection at its first packet (a keep-alive at most 500 ms later for peers) and the
//! sender dials afresh.
//!
//! The key is secret (whoever holds it can reset the node's connections), written with mode
//! 0600. A file of the wrong size is replaced by a new key: nothing depends on it but the
//! resets of connections made before the restart.

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The key file's name, in the data directory.
pub const RESET_KEY_FILE: &str = "reset-key";
const KEY_LEN: usize = 32;

/// The endpoint settings that make the node's stateless resets believed after a restart.
#[derive(Clone)]
pub struct ResetKey(Arc<hmac::Key>);

impl std::fmt::Debug for ResetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetKey(..)")
    }
}

impl ResetKey {
    /// The key kept in `data_dir`, made (durably) when there is none or it is malformed.
    ///
    /// # Errors
    ///
    /// The file cannot be read or written.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<ResetKey> {
        let path = data_dir.join(RESET_KEY_FILE);
        // The size first: a file of another size is replaced, never read whole.
        let secret = match fs::metadata(&path) {
            Ok(meta) if meta.len() == KEY_LEN as u64 => {
                fs::read(&path).with_context(|| format!("reading {}", path.display()))?
            }
            Ok(meta) => {
                tracing::warn!(path = %path.display(), len = meta.len(), "malformed reset key; making a new one");
                create(data_dir)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(data_dir)?,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if secret.len() != KEY_LEN {
            anyhow::bail!("{} changed size while it was read", path.display());
        }
        Ok(ResetKey(Arc::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            &secret,
        ))))
    }

    /// quinn's endpoint settings with this key. Connection ids carry a hash that the
    /// endpoint checks before answering a packet of an unknown connection (anything else is
    /// dropped unanswered); its key is drawn from the reset key, so that the ids a previous
    /// process gave out pass the check and get their reset.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let tag = hmac::sign(&self.0, b"etch connection ids");
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&tag.as_ref()[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        let mut config = quinn::EndpointConfig::new(self.0.clone());
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        config
    }

    /// A server endpoint on `addr` whose resets use this key.
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    pub fn bind(
        &self,
        addr: SocketAddr,
        server: quinn::ServerConfig,
    ) -> io::Result<quinn::Endpoint> {
        let socket = std::net::UdpSocket::bind(addr)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| io::Error::other("no async runtime for the QUIC endpoint"))?;
        quinn::Endpoint::new(self.endpoint_config(), Some(server), socket, runtime)
    }
}

/// Writes a new random key: a temporary file (mode 0600), fsynced, renamed into place.
fn create(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut secret = vec![0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("no randomness for the reset key"))?;
    let tmp = data_dir.join(format!("{RESET_KEY_FILE}.tmp"));
    let write = || -> io::Result<()> {
        fs::create_dir_all(data_dir)?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&secret)?;
        file.sync_all()?;
        fs::rename(&tmp, data_dir.join(RESET_KEY_FILE))?;
        fs::File::open(data_dir)?.sync_all()
    };
    write().with_context(|| format!("writing {}", tmp.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_survives_a_restart_and_a_malformed_one_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sign = |k: &ResetKey| hmac::sign(&k.0, b"connection id").as_ref().to_vec();
        let first = ResetKey::load_or_create(dir.path()).expect("create");
        let again = ResetKey::load_or_create(dir.path()).expect("load");
        assert_eq!(sign(&first), sign(&again));
        let path = dir.path().join(RESET_KEY_FILE);
        let mode = fs::metadata(&path).expect("stat").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        fs::write(&path, b"short").expect("damage");
        let replaced = ResetKey::load_or_create(dir.path()).expect("replace");
        assert_ne!(sign(&first), sign(&replaced));
        assert_eq!(fs::read(&path).expect("read").len(), KEY_LEN);

        // An oversized file is replaced by its size alone.
        fs::write(&path, vec![7u8; 1 << 20]).expect("oversize");
        let again = ResetKey::load_or_create(dir.path()).expect("replace");
        assert_ne!(sign(&replaced), sign(&again));
        assert_eq!(fs::read(&path).expect("read").len(), KEY_LEN);
    }
}

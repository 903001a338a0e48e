//! The node's TLS material, replaced while the node runs.
//!
//! [`Tls`] holds what the CA bundle, the node's certificate and key, and the revocation list
//! say now ([`Loaded`]). [`Tls::reload`] reads the files again and, when they make a
//! working whole (PEM that parses, a key that matches the certificate, a list that a CA of
//! the bundle signed, a certificate the bundle vouches for), puts them in force at once:
//!
//! - new handshakes on both endpoints use the new server configs
//!   (`quinn::Endpoint::set_server_config`), and the node dials peers with the new client
//!   config;
//! - every open connection is asked again ([`refused_since`]): a client or peer whose
//!   certificate the new material refuses (revoked, its CA gone from the bundle) is closed
//!   with [`close::CERTIFICATE_REVOKED`] and the reason; so is a cached outgoing peer
//!   connection whose server certificate would now be refused.
//!
//! Material that does not make a working whole is logged at ERROR and changes nothing: the
//! node keeps serving with what it had. Who calls `reload` and when (SIGHUP, a poll of the
//! files) is the binary's business; [`Tls::reload`] with [`Trigger::Poll`] acts only on
//! files that changed and have stayed the same since the previous poll, so that a
//! certificate written before its key is not tried half-replaced.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use etch_proto::codes::close;
use etch_proto::pki::{self, Identity, Role, TlsFiles};
use etch_proto::{ALPN_CLIENT, ALPN_PEER};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use tokio::sync::watch;

use crate::raft::network::Peers;

/// Where the revocation list is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlFile {
    pub path: PathBuf,
    /// Whether a missing file is an error. When not, a missing file means no list: the
    /// embedded default watches `crl.pem` beside its CA, which `etchctl certs revoke` makes.
    pub required: bool,
}

/// What the files said when they were last loaded, with the verifiers built from them.
pub struct Loaded {
    identity: Identity,
    client: Arc<dyn ClientCertVerifier>,
    node: Arc<dyn ClientCertVerifier>,
    /// The gRPC front's TLS server config (clients, HTTP/2), built once per load: a
    /// handshake only clones it.
    grpc: Arc<rustls::ServerConfig>,
    /// The HTTPS metrics listener's (no client certificate, HTTP/1.1), likewise.
    metrics: Arc<rustls::ServerConfig>,
}

impl Loaded {
    fn load(files: &TlsFiles, crl: Option<&CrlFile>) -> anyhow::Result<Self> {
        let mut identity = Identity::load(files)?;
        if let Some(crl) = crl
            && (crl.required || crl.path.exists())
        {
            identity = identity.with_crl_file(&crl.path)?;
        }
        Ok(Loaded {
            client: identity.verifier(Role::Client)?,
            node: identity.verifier(Role::Node)?,
            grpc: Arc::new(identity.server_config(Role::Client, b"h2")?),
            metrics: Arc::new(identity.server_config_without_client_auth()?),
            identity,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The TLS server config of the gRPC front (client certificates, ALPN `h2`).
    pub fn grpc_server_config(&self) -> Arc<rustls::ServerConfig> {
        self.grpc.clone()
    }

    /// The TLS server config of the HTTPS metrics listener (the node's certificate, no
    /// client certificate asked).
    pub fn metrics_server_config(&self) -> Arc<rustls::ServerConfig> {
        self.metrics.clone()
    }

    /// `Err(reason)` when the certificate chain `chain` of an open connection would be
    /// refused as `role` by this material.
    pub fn recheck(&self, role: Role, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let verifier = match role {
            Role::Client => &self.client,
            Role::Node => &self.node,
        };
        pki::recheck(verifier.as_ref(), chain)
    }

    /// The QUIC server config of the endpoint that admits `role`.
    fn server_config(
        &self,
        role: Role,
        transport: &Arc<quinn::TransportConfig>,
    ) -> anyhow::Result<quinn::ServerConfig> {
        let alpn = match role {
            Role::Client => ALPN_CLIENT,
            Role::Node => ALPN_PEER,
        };
        let tls = self.identity.server_config(role, alpn)?;
        let mut config =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
        config.transport_config(transport.clone());
        Ok(config)
    }

    /// The QUIC client config the node dials its peers with.
    fn peer_client_config(
        &self,
        transport: &Arc<quinn::TransportConfig>,
    ) -> anyhow::Result<quinn::ClientConfig> {
        let tls = self.identity.client_config(ALPN_PEER)?;
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        config.transport_config(transport.clone());
        Ok(config)
    }
}

/// What made [`Tls::reload`] look at the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// An operator asked (SIGHUP): load whatever the files hold now.
    Signal,
    /// A periodic look: load only files that changed and have settled since the last look.
    Poll,
}

/// What [`Tls::reload`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The new material is in force.
    Reloaded,
    /// Nothing to do (unchanged, still being written, or already refused as it is).
    Unchanged,
}

/// The endpoints and peer mesh the material is put in force on.
struct Targets {
    client: quinn::Endpoint,
    client_transport: Arc<quinn::TransportConfig>,
    peer: quinn::Endpoint,
    peers: Arc<Peers>,
}

/// The raw bytes of the files (`None`: unreadable), to tell a change.
type Contents = Vec<Option<Vec<u8>>>;

#[derive(Default)]
struct Seen {
    /// What is in force.
    applied: Contents,
    /// What the previous poll saw, when it differed from `applied`.
    polled: Option<Contents>,
    /// What was last refused, so that a poll does not log the same error every second.
    failed: Option<Contents>,
}

/// The node's TLS material, current and reloadable. See the module doc.
pub struct Tls {
    files: TlsFiles,
    crl: Option<CrlFile>,
    peer_transport: Arc<quinn::TransportConfig>,
    current: watch::Sender<Arc<Loaded>>,
    seen: Mutex<Seen>,
    targets: OnceLock<Targets>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("crl", &self.crl)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the material; peers are dialled with `peer_transport`.
    ///
    /// # Errors
    ///
    /// A file is missing or malformed, the key does not match the certificate, or the
    /// revocation list is not signed by a CA of the bundle.
    pub fn load(
        files: TlsFiles,
        crl: Option<CrlFile>,
        peer_transport: Arc<quinn::TransportConfig>,
    ) -> anyhow::Result<Self> {
        let applied = contents(&files, crl.as_ref());
        let loaded = Loaded::load(&files, crl.as_ref())?;
        // Fail now rather than at the first reload if the configs cannot be built.
        loaded.server_config(Role::Node, &peer_transport)?;
        Ok(Tls {
            files,
            crl,
            peer_transport,
            current: watch::Sender::new(Arc::new(loaded)),
            seen: Mutex::new(Seen {
                applied,
                ..Seen::default()
            }),
            targets: OnceLock::new(),
        })
    }

    /// The material in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.borrow().clone()
    }

    /// Follows the material in force (see [`refused_since`]).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Loaded>> {
        self.current.subscribe()
    }

    /// The QUIC server config, from the material in force, of the endpoint that admits `role`.
    pub fn server_config(
        &self,
        role: Role,
        transport: &Arc<quinn::TransportConfig>,
    ) -> anyhow::Result<quinn::ServerConfig> {
        self.current().server_config(role, transport)
    }

    /// The peer server config, from the material in force.
    pub fn peer_server_config(&self) -> anyhow::Result<quinn::ServerConfig> {
        self.server_config(Role::Node, &self.peer_transport)
    }

    /// The config to dial peers with, from the material in force.
    pub fn peer_client_config(&self) -> anyhow::Result<quinn::ClientConfig> {
        self.current().peer_client_config(&self.peer_transport)
    }

    /// Tells reloads where to put new material in force (once, when the node has bound
    /// its endpoints).
    pub(crate) fn attach(
        &self,
        client: quinn::Endpoint,
        client_transport: Arc<quinn::TransportConfig>,
        peer: quinn::Endpoint,
        peers: Arc<Peers>,
    ) {
        let _ = self.targets.set(Targets {
            client,
            client_transport,
            peer,
            peers,
        });
    }

    /// Reads the files again and puts them in force if they changed (always, for
    /// [`Trigger::Signal`]) and make a working whole; logs the outcome (INFO, or ERROR with
    /// the old material kept).
    ///
    /// # Errors
    ///
    /// The new material was refused; the old stays in force.
    pub fn reload(&self, trigger: Trigger) -> anyhow::Result<Reload> {
        let now = contents(&self.files, self.crl.as_ref());
        // Plain data, consistent after any panic.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if trigger == Trigger::Poll {
            if now == seen.applied {
                seen.polled = None;
                return Ok(Reload::Unchanged);
            }
            if seen.polled.as_ref() != Some(&now) {
                seen.polled = Some(now);
                return Ok(Reload::Unchanged);
            }
            if seen.failed.as_ref() == Some(&now) {
                return Ok(Reload::Unchanged);
            }
        }
        match self.apply() {
            Ok(loaded) => {
                let changed = changed(&seen.applied, &now);
                seen.applied = now;
                seen.polled = None;
                seen.failed = None;
                tracing::info!(
                    ?trigger,
                    changed = %changed.join(","),
                    cert = %self.files.cert.display(),
                    revocation_lists = loaded.identity.crl_count(),
                    "reloaded TLS material; new connections use it"
                );
                Ok(Reload::Reloaded)
            }
            Err(e) => {
                seen.failed = Some(now);
                tracing::error!(?trigger, error = %format!("{e:#}"), "TLS material not reloaded; the node keeps its previous certificates");
                Err(e)
            }
        }
    }

    /// Loads, checks and puts in force; on any error nothing has changed.
    fn apply(&self) -> anyhow::Result<Arc<Loaded>> {
        let loaded = Loaded::load(&self.files, self.crl.as_ref())?;
        loaded.identity.check_own(Role::Node).map_err(|reason| {
            anyhow::anyhow!(
                "{} would be refused by the node's own CA bundle {}: {reason}",
                self.files.cert.display(),
                self.files.ca.display()
            )
        })?;
        let loaded = Arc::new(loaded);
        if let Some(targets) = self.targets.get() {
            let client = loaded
                .server_config(Role::Client, &targets.client_transport)
                .context("client endpoint config")?;
            let peer = loaded
                .server_config(Role::Node, &self.peer_transport)
                .context("peer endpoint config")?;
            let dial = loaded
                .peer_client_config(&self.peer_transport)
                .context("peer client config")?;
            targets.client.set_server_config(Some(client));
            targets.peer.set_server_config(Some(peer));
            targets.peers.set_client_config(dial);
            targets
                .peers
                .close_refused(|chain| loaded.recheck(Role::Node, chain));
        }
        // Open incoming connections recheck themselves when they see this.
        self.current.send_replace(loaded.clone());
        Ok(loaded)
    }
}

fn contents(files: &TlsFiles, crl: Option<&CrlFile>) -> Contents {
    let mut paths: Vec<&Path> = vec![&files.ca, &files.cert, &files.key];
    paths.extend(crl.map(|c| c.path.as_path()));
    paths.into_iter().map(|p| std::fs::read(p).ok()).collect()
}

/// Names of the files whose contents differ.
fn changed(before: &Contents, after: &Contents) -> Vec<&'static str> {
    const NAMES: [&str; 4] = ["ca", "cert", "key", "crl"];
    (before.iter().zip(after))
        .zip(NAMES)
        .filter(|((b, a), _)| b != a)
        .map(|(_, name)| name)
        .collect()
}

/// The certificate chain a connection's peer presented.
pub fn peer_chain(conn: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|chain| *chain)
}

/// Resolves, with the reason, once the material in force refuses `chain` as `role`: a
/// connection's task selects on it and closes the connection ([`close_revoked`]). The first
/// check is at once, since the connection may have been accepted under the material a
/// reload has just replaced. Never resolves once the node is gone.
pub async fn refused_since(
    mut tls: watch::Receiver<Arc<Loaded>>,
    role: Role,
    chain: Vec<CertificateDer<'static>>,
) -> String {
    tls.mark_changed();
    while tls.changed().await.is_ok() {
        let loaded = tls.borrow_and_update().clone();
        if let Err(reason) = loaded.recheck(role, &chain) {
            return reason;
        }
    }
    std::future::pending().await
}

/// Closes `conn` because its certificate is refused now.
pub fn close_revoked(conn: &quinn::Connection, reason: &str) {
    let text = format!("certificate refused since the connection was made: {reason}");
    conn.close(close::CERTIFICATE_REVOKED.into(), text.as_bytes());
}

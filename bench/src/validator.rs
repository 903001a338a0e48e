//! `put --validator FILE.wasm`: a validator plugin bound to the written keys for the run, so
//! that its cost on the write path is measured as users would pay it.
//!
//! The binding (named [`BINDING`]) covers the prefix that every key of the run shares, and
//! is removed when the run ends, failed or not. The values become JSON documents of the
//! requested size (`{"v":"vvv…"}`), so that a schema validator has something to judge.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use etch_client::Client;

/// The binding's name.
pub const BINDING: &str = "etch-bench";

/// A validator to bind: the component and its settings (`name=value`).
#[derive(Clone, Debug)]
pub struct Validator {
    pub file: PathBuf,
    pub config: Vec<(String, String)>,
}

impl Validator {
    /// Parses `--validator-config` settings.
    pub fn new(file: &Path, config: &[String]) -> Result<Validator> {
        let config = config
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => bail!("--validator-config {kv:?}: expected NAME=VALUE"),
            })
            .collect::<Result<_>>()?;
        Ok(Validator {
            file: file.to_owned(),
            config,
        })
    }

    /// Binds the validator to `prefix`, replacing a binding of the same name.
    pub async fn install(&self, client: &Client, prefix: &[u8]) -> Result<()> {
        let wasm = std::fs::read(&self.file)
            .with_context(|| format!("reading the validator {}", self.file.display()))?;
        // Every node compiles the component, right after a workload left the cluster busy
        // (a debug build on two cores can take longer than one request timeout). Installing
        // under the same name replaces the binding, so a timed-out install is retried.
        let mut attempt = 1;
        loop {
            let mut install = client.plugin_install(BINDING, wasm.clone(), prefix);
            for (k, v) in &self.config {
                install = install.config(k.as_str(), v.as_str());
            }
            match install.await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 3 && is_timeout(&e) => attempt += 1,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("installing the validator {}", self.file.display())
                    });
                }
            }
        }
    }

    /// Removes the binding.
    pub async fn remove(client: &Client) -> Result<()> {
        client
            .plugin_remove(BINDING)
            .await
            .context("removing the validator binding")?;
        Ok(())
    }
}

/// A JSON document of exactly `size` bytes (at least the 8 of `{"v":""}`).
pub fn json_value(size: usize) -> Vec<u8> {
    let pad = size.saturating_sub(8);
    format!("{{\"v\":\"{}\"}}", "v".repeat(pad)).into_bytes()
}

/// The longest prefix that every key number below `space` shares, at `size` bytes.
pub fn common_prefix(first: &[u8], last: &[u8]) -> Vec<u8> {
    first
        .iter()
        .zip(last)
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| *a)
        .collect()
}

/// Whether `e` says the request ran out of time (its outcome unknown).
fn is_timeout(e: &etch_client::Error) -> bool {
    matches!(
        e,
        etch_client::Error::Timeout { .. } | etch_client::Error::Server(etch_proto::Error::Timeout)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_of_the_size_asked() {
        let v = json_value(256);
        assert_eq!(v.len(), 256);
        let parsed: serde_json::Value = serde_json::from_slice(&v).expect("json");
        assert!(parsed["v"].is_string());
        assert_eq!(json_value(0), b"{\"v\":\"\"}");
    }

    #[test]
    fn prefix_is_shared_by_the_key_space() {
        assert_eq!(common_prefix(b"00000000", b"00009999"), b"0000");
        assert_eq!(common_prefix(b"00000000", b"00000000"), b"00000000");
        assert_eq!(common_prefix(b"0", b"9"), b"");
    }
}

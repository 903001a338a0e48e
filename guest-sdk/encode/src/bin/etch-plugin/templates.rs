//! What `etch-plugin new` writes: a standalone crate with its own workspace, the guest SDK
//! as a path dependency, a small release profile and a plugin with a native test.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

#[derive(Clone, Copy)]
pub enum Kind {
    Validator,
    Reactor,
}

/// Writes the crate `name` of `kind` into `dir` (which must not exist, or be empty),
/// depending on the guest SDK at `sdk`; returns the files written.
pub fn write(dir: &Path, name: &str, kind: Kind, sdk: &Path) -> Result<Vec<PathBuf>> {
    check_name(name)?;
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = sdk.to_str().context("the guest SDK's path is not UTF-8")?;
    let files = [
        ("Cargo.toml", cargo_toml(name, sdk)),
        (".gitignore", "/target\n".to_owned()),
        (
            "src/lib.rs",
            match kind {
                Kind::Validator => VALIDATOR,
                Kind::Reactor => REACTOR,
            }
            .replace("{{name}}", name),
        ),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A crate name cargo takes and a plugin name etch takes.
fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!(
            "{name:?} is not a plugin name: lowercase letters, digits, `-` and `_`, starting with \
             a letter, at most 64 characters"
        );
    }
    Ok(())
}

fn cargo_toml(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the WebAssembly module etch-plugin build turns into a component; rlib: the
# native tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
etch-plugin = {{ path = "{sdk}" }}

# A workspace of its own, so that it builds wherever it lives.
[workspace]

# Small components: size over speed, no unwinding machinery.
[profile.release]
opt-level = "s"
lto = true
strip = true
panic = "abort"
codegen-units = 1
"#
    )
}

const VALIDATOR: &str = r#"//! {{name}}: an etch validator. It runs on the leader before a write that touches the
//! prefix it is bound to is proposed, sees every key the write changes (with its previous
//! version), and allows the write or denies it with a reason the client sees.
//!
//! This one refuses values over the `max-value-bytes` setting (1024 by default):
//!
//! ```text
//! etch-plugin build
//! etchctl plugin install {{name}} target/etch-plugin/{{name}}.wasm --prefix /config/ \
//!   --hook validate --config max-value-bytes=256
//! ```

use etch_plugin::{Host, OpKind, Request, Validator, Verdict};

/// The validator.
pub struct Plugin;

/// The `max-value-bytes` setting: 1024 when unset.
fn max_value_bytes(setting: Option<&str>) -> Result<usize, String> {
    match setting {
        None => Ok(1024),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("max-value-bytes={v:?} is not a number")),
    }
}

impl Validator for Plugin {
    /// Runs once per instance, before its first call: a setting the plugin cannot use
    /// fails every call (the binding's `--on-error` decides what that means for writes)
    /// and `etchctl plugin list` shows why.
    fn init(_: &dyn Host, config: &[(String, String)]) -> Result<(), String> {
        let setting = config.iter().find(|(k, _)| k == "max-value-bytes");
        max_value_bytes(setting.map(|(_, v)| v.as_str())).map(|_| ())
    }

    fn validate(host: &dyn Host, request: &Request) -> Verdict {
        let max = match max_value_bytes(host.config("max-value-bytes").as_deref()) {
            Ok(max) => max,
            Err(e) => return Verdict::deny("config", e),
        };
        for op in request.ops_in_prefix().filter(|op| op.kind == OpKind::Put) {
            if op.value.len() > max {
                return Verdict::deny(
                    "too-large",
                    format!("{}: {} bytes, over the limit of {max}", op.key_str(), op.value.len()),
                );
            }
        }
        Verdict::Allow
    }
}

etch_plugin::export_validator!(Plugin);

#[cfg(test)]
mod tests {
    use etch_plugin::testing::Harness;

    use super::Plugin;

    #[test]
    fn values_over_the_limit_are_refused() {
        let mut h = Harness::<Plugin>::new("/config/").config("max-value-bytes", "4");
        assert!(h.put("/config/a", "1234").is_allow());
        assert!(!h.put("/config/a", "12345").is_allow());
        assert_eq!(h.get("/config/a").map(|kv| kv.value), Some(b"1234".to_vec()));
    }

    #[test]
    fn a_setting_that_is_not_a_number_fails_init() {
        let h = Harness::<Plugin>::new("/config/").config("max-value-bytes", "lots");
        assert_eq!(h.init(), Err("max-value-bytes=\"lots\" is not a number".to_owned()));
    }
}
"#;

const REACTOR: &str = r#"//! {{name}}: an etch reactor. It runs on the leader after changes under the prefix it is
//! bound to commit, gets them in batches in revision order (at least once: a batch whose
//! call fails is delivered again), and may write keys in turn; its own writes never trigger
//! it again.
//!
//! This one counts the changes in the key the `counter` setting names (`/counts/changes`
//! by default):
//!
//! ```text
//! etch-plugin build
//! etchctl plugin install {{name}} target/etch-plugin/{{name}}.wasm --prefix /config/ \
//!   --hook react --config counter=/counts/config
//! ```

use etch_plugin::{Event, Reactor, ReactorHost};

/// The reactor.
pub struct Plugin;

impl Reactor for Plugin {
    fn on_events(host: &dyn ReactorHost, events: &[Event]) -> Result<(), String> {
        let counter = host
            .config("counter")
            .unwrap_or_else(|| "/counts/changes".to_owned());
        let before: u64 = host
            .get(counter.as_bytes())
            .and_then(|kv| String::from_utf8(kv.value).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let after = before + events.len() as u64;
        host.put(counter.as_bytes(), after.to_string().as_bytes())
    }
}

etch_plugin::export_reactor!(Plugin);

#[cfg(test)]
mod tests {
    use etch_plugin::testing::ReactorHarness;

    use super::Plugin;

    #[test]
    fn every_change_is_counted() {
        let mut h = ReactorHarness::<Plugin>::new("/config/").config("counter", "/n");
        h.put("/config/a", "1");
        h.put("/config/b", "2");
        h.run().expect("the first batch");
        h.delete("/config/a");
        h.run().expect("the second batch");
        assert_eq!(h.get("/n").map(|kv| kv.value), Some(b"3".to_vec()));
    }
}
"#;

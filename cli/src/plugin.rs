//! `plugin install|list|remove|reset`: WebAssembly plugins (no etcdctl counterpart).
//!
//! `install` reads a component built by `etch-plugin build` (or any component of the
//! `validator` or `reactor` world in `guest-sdk/wit/etch.wit`), uploads it and binds it to
//! a prefix with a hook: `validate` (judge writes before they commit) or `react` (receive
//! committed changes after the fact).
//! Output is one line per fact, in the spirit of etcdctl's simple format.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use etch_client::proto::plugin::{PluginInfo, PluginLimits};

use crate::context::Context;
use crate::print::Format;

/// `plugin ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum PluginCommand {
    /// Upload a plugin component and bind it to a key prefix (replacing a binding of the
    /// same name): prints its sha256.
    Install(InstallArgs),
    /// List the bindings: name, hook, prefix, (validators) mode and failure policy,
    /// (reactors) retry policy, limits, sha256, the leader's call counters and, for a
    /// reactor, its checkpoint, status (ok, retrying, stalled, parked) and last error, one
    /// binding per line.
    List,
    /// Remove a binding (and its component, once no binding uses it).
    Remove(RemoveArgs),
    /// Move a reactor's checkpoint to a revision (root only): it goes on with the changes
    /// after it, skipping a batch it cannot take; a parked reactor is unparked.
    Reset(ResetArgs),
}

/// `plugin reset NAME --to-revision R`.
#[derive(Args, Clone, Debug)]
pub struct ResetArgs {
    /// The reactor's binding name.
    pub name: String,
    /// The new checkpoint: the reactor's next batch starts after this revision.
    #[arg(long)]
    pub to_revision: i64,
}

/// When a plugin runs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Before a write touching the prefix is proposed.
    Validate,
    /// After changes under the prefix commit (on the leader, in batches).
    React,
}

/// Whether refusals are enforced.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    /// Log and count refusals, never reject.
    Audit,
}

/// What a plugin failure does.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    FailClosed,
    FailOpen,
}

/// `plugin install NAME FILE --prefix P --hook validate|react [...]`.
#[derive(Args, Clone, Debug)]
pub struct InstallArgs {
    /// The binding's name.
    pub name: String,
    /// The component (.wasm).
    pub file: PathBuf,
    /// The plugin judges writes touching keys with this prefix (validate), or receives the
    /// changes of keys with this prefix (react).
    #[arg(long)]
    pub prefix: String,
    /// When the plugin runs.
    #[arg(long, value_enum, default_value = "validate")]
    pub hook: Hook,
    /// A setting for the plugin, NAME=VALUE; repeat for more.
    #[arg(long = "config", value_name = "NAME=VALUE")]
    pub config: Vec<String>,
    /// Fuel per call (about one unit per WebAssembly instruction) [default: 50000000].
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Deadline per call, in milliseconds of the call's CPU time [default: 200]; a call
    /// starved of CPU also ends after ten times as long in wall time (at most 2.5 s, or the
    /// deadline if longer).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Memory cap per call, in MiB [default: 32].
    #[arg(long)]
    pub memory_mb: Option<u32>,
    /// enforce: a refusal rejects the write; audit: it is only logged and counted.
    #[arg(long, value_enum, default_value = "enforce")]
    pub mode: Mode,
    /// What a plugin failure (trap, fuel, deadline, memory) does to the write (validators).
    #[arg(long, value_enum, default_value = "fail-closed")]
    pub on_error: OnError,
    /// Reactors: park the reactor after its batch failed this many times in a row, instead
    /// of retrying for ever (`plugin reset` moves a parked reactor on).
    #[arg(long, value_name = "N", conflicts_with = "on_error")]
    pub park_after: Option<u32>,
}

impl InstallArgs {
    /// The settings as (name, value) pairs.
    pub fn config_pairs(&self) -> Result<Vec<(String, String)>> {
        self.config
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => bail!("--config takes NAME=VALUE, got {kv:?}"),
            })
            .collect()
    }
}

/// `plugin remove NAME`.
#[derive(Args, Clone, Debug)]
pub struct RemoveArgs {
    /// The binding's name.
    pub name: String,
}

/// An install over the request size limit: the limit, and the flags that raise it.
fn too_large(size: u64, limit: u64) -> String {
    format!(
        "the install request is {size} bytes, over the request size limit of {limit} bytes: \
         raise it with --max-request-bytes, on etchctl and on every etchd (a release build by \
         `etch-plugin build` is the smallest component)"
    )
}

pub async fn run(ctx: &Context, cmd: &PluginCommand) -> Result<()> {
    // Only `list` has a json and a table form; the others print one line of fact.
    if !matches!(cmd, PluginCommand::List) && ctx.printer.format != Format::Simple {
        anyhow::bail!(
            "plugin install, remove and reset print simple output only (-w json and -w table \
             are for plugin list)"
        );
    }
    match cmd {
        PluginCommand::Install(args) => {
            let config = args.config_pairs()?;
            let wasm = std::fs::read(&args.file)
                .with_context(|| format!("reading {}", args.file.display()))?;
            let defaults = PluginLimits::default();
            let client = ctx.client()?;
            let mut install = client
                .plugin_install(&args.name, wasm, args.prefix.as_bytes())
                .fuel(args.fuel.unwrap_or(defaults.fuel))
                .timeout(Duration::from_millis(
                    args.timeout_ms.unwrap_or(defaults.timeout_ms),
                ))
                .memory_mb(args.memory_mb.unwrap_or(defaults.memory_mb));
            for (k, v) in config {
                install = install.config(k, v);
            }
            if args.mode == Mode::Audit {
                install = install.audit();
            }
            if args.on_error == OnError::FailOpen {
                install = install.fail_open();
            }
            if args.hook == Hook::React {
                install = install.react();
            }
            if let Some(after) = args.park_after {
                install = install.park_after(after);
            }
            let resp = match install.await {
                Err(etch_client::Error::RequestTooLarge { size, limit }) => {
                    anyhow::bail!(too_large(size as u64, limit as u64))
                }
                Err(etch_client::Error::Server(etch_client::proto::Error::TooLarge {
                    size,
                    limit,
                })) => anyhow::bail!(too_large(size, limit)),
                other => other?,
            };
            let verb = if resp.replaced {
                "replaced"
            } else {
                "installed"
            };
            println!("Plugin {} {verb} (sha256 {})", args.name, resp.sha256);
            Ok(())
        }
        PluginCommand::List => {
            let resp = ctx.client()?.plugin_list().await?;
            match ctx.printer.format {
                Format::Simple => {
                    for p in &resp.plugins {
                        println!("{}", list_line(p));
                    }
                }
                Format::Json => println!("{}", list_json(&resp.plugins)),
                Format::Table => print!("{}", list_table(&resp.plugins)),
            }
            Ok(())
        }
        PluginCommand::Remove(args) => {
            ctx.client()?.plugin_remove(&args.name).await?;
            println!("Plugin {} removed", args.name);
            Ok(())
        }
        PluginCommand::Reset(args) => {
            let resp = ctx
                .client()?
                .plugin_reset(&args.name, args.to_revision)
                .await?;
            println!(
                "Plugin {} reset to revision {} (was {})",
                args.name, args.to_revision, resp.previous
            );
            Ok(())
        }
    }
}

/// `plugin list -w json`: `{"plugins":[...]}`, one object per binding with every field the
/// simple form shows (a prefix or config value that is not UTF-8 is written lossily).
pub fn list_json(plugins: &[PluginInfo]) -> String {
    use etch_client::proto::plugin::{FailurePolicy, PluginMode};
    let items: Vec<serde_json::Value> = plugins
        .iter()
        .map(|p| {
            let b = &p.binding;
            let mut item = serde_json::json!({
                "name": b.name,
                "prefix": String::from_utf8_lossy(&b.prefix),
                "hook": b.hook.name(),
                "sha256": p.sha256,
                "size": p.size,
                "config": (b.config.iter())
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                    .collect::<serde_json::Map<_, _>>(),
                "fuel": b.limits.fuel,
                "timeout_ms": b.limits.timeout_ms,
                "memory_mb": b.limits.memory_mb,
                "calls": p.calls,
                "failures": p.failures,
                "status": p.status.name(),
            });
            if b.hook == etch_client::proto::plugin::PluginHook::Validate {
                item["mode"] = match b.mode {
                    PluginMode::Enforce => "enforce",
                    PluginMode::Audit => "audit",
                }
                .into();
                item["on_error"] = match b.on_error {
                    FailurePolicy::FailOpen => "fail-open",
                    _ => "fail-closed",
                }
                .into();
                item["denials"] = p.denials.into();
            } else {
                item["checkpoint"] = p.checkpoint.into();
                item["last_error"] = p.last_error.clone().into();
                if let FailurePolicy::Park { after } = b.on_error {
                    item["park_after"] = after.into();
                }
            }
            item
        })
        .collect();
    serde_json::json!({ "plugins": items }).to_string()
}

/// `plugin list -w table`: one row per binding.
pub fn list_table(plugins: &[PluginInfo]) -> String {
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            let b = &p.binding;
            vec![
                b.name.clone(),
                String::from_utf8_lossy(&b.prefix).into_owned(),
                b.hook.name().to_owned(),
                p.status.name().to_owned(),
                p.calls.to_string(),
                p.failures.to_string(),
                p.sha256.chars().take(12).collect(),
            ]
        })
        .collect();
    crate::print::table::render(
        &[
            "NAME", "PREFIX", "HOOK", "STATUS", "CALLS", "FAILURES", "SHA256",
        ],
        &rows,
        crate::print::table::Align::Left,
    )
}

/// One binding as `plugin list` prints it.
pub fn list_line(p: &PluginInfo) -> String {
    use etch_client::proto::plugin::{FailurePolicy, PluginHook, PluginMode};
    let b = &p.binding;
    let mode = match b.mode {
        PluginMode::Enforce => "enforce",
        PluginMode::Audit => "audit",
    };
    let on_error = match b.on_error {
        FailurePolicy::FailClosed => "fail-closed".to_owned(),
        FailurePolicy::FailOpen => "fail-open".to_owned(),
        FailurePolicy::Park { after } => format!("park-after={after}"),
    };
    let config: Vec<String> = b.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // Mode, failure policy and denials are a validator's: a reactor judges nothing.
    let validator = b.hook == PluginHook::Validate;
    let judging = match (validator, b.on_error) {
        (true, _) => format!("{mode}, {on_error}, "),
        (false, FailurePolicy::Park { .. }) => format!("{on_error}, "),
        (false, _) => "retry, ".to_owned(),
    };
    let denials = if validator {
        format!("denials={}, ", p.denials)
    } else {
        String::new()
    };
    let mut line = format!(
        "{}, {}, prefix={}, {judging}fuel={}, timeout={}ms, memory={}MiB, sha256={}, size={}, calls={}, {denials}failures={}, config=[{}]",
        b.name,
        b.hook.name(),
        String::from_utf8_lossy(&b.prefix),
        b.limits.fuel,
        b.limits.timeout_ms,
        b.limits.memory_mb,
        &p.sha256[..p.sha256.len().min(12)],
        p.size,
        p.calls,
        p.failures,
        config.join(" "),
    );
    if !validator {
        line.push_str(&format!(
            ", checkpoint={}, status={}",
            p.checkpoint,
            p.status.name()
        ));
        if !p.last_error.is_empty() {
            line.push_str(&format!(", last-error={}", p.last_error));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Plugin {
        #[command(subcommand)]
        cmd: PluginCommand,
    }

    #[test]
    fn install_flags_parse() {
        let cli = Plugin::try_parse_from([
            "plugin",
            "install",
            "schema",
            "s.wasm",
            "--prefix",
            "/svc/",
            "--hook",
            "validate",
            "--config",
            "schema={\"type\":\"object\"}",
            "--config",
            "x=1=2",
            "--fuel",
            "1000",
            "--timeout-ms",
            "20",
            "--memory-mb",
            "8",
            "--mode",
            "audit",
            "--on-error",
            "fail-open",
        ])
        .expect("parse");
        let PluginCommand::Install(args) = cli.cmd else {
            panic!("not an install")
        };
        assert_eq!(
            args.config_pairs().expect("pairs"),
            [
                ("schema".to_owned(), "{\"type\":\"object\"}".to_owned()),
                ("x".to_owned(), "1=2".to_owned())
            ]
        );
        assert_eq!(
            (args.fuel, args.timeout_ms, args.memory_mb),
            (Some(1000), Some(20), Some(8))
        );
        assert_eq!((args.mode, args.on_error), (Mode::Audit, OnError::FailOpen));
    }

    #[test]
    fn bad_config_and_missing_prefix_are_refused() {
        let cli = Plugin::try_parse_from([
            "plugin", "install", "a", "a.wasm", "--prefix", "/", "--config", "novalue",
        ])
        .expect("parse");
        let PluginCommand::Install(args) = cli.cmd else {
            panic!("not an install")
        };
        assert!(args.config_pairs().is_err());
        assert!(Plugin::try_parse_from(["plugin", "install", "a", "a.wasm"]).is_err());
        assert!(
            Plugin::try_parse_from([
                "plugin", "install", "a", "a.wasm", "--prefix", "/", "--hook", "later"
            ])
            .is_err()
        );
    }

    #[test]
    fn react_hook_parses_and_lists_with_its_checkpoint() {
        use etch_client::proto::plugin::{PluginBinding, PluginHook};
        let cli = Plugin::try_parse_from([
            "plugin", "install", "audit", "a.wasm", "--prefix", "/app/", "--hook", "react",
        ])
        .expect("parse");
        let PluginCommand::Install(args) = cli.cmd else {
            panic!("not an install")
        };
        assert_eq!(args.hook, Hook::React);
        let info = PluginInfo {
            binding: PluginBinding {
                name: "audit".into(),
                prefix: b"/app/".to_vec(),
                hook: PluginHook::React,
                ..Default::default()
            },
            sha256: "ab".repeat(32),
            checkpoint: 42,
            last_error: "trapped: unreachable".into(),
            status: etch_client::proto::plugin::PluginStatus::Retrying,
            ..Default::default()
        };
        let line = list_line(&info);
        assert!(
            line.starts_with("audit, react, prefix=/app/, retry, fuel="),
            "{line}"
        );
        assert!(
            !line.contains("enforce") && !line.contains("fail-closed"),
            "{line}"
        );
        assert!(!line.contains("denials"), "{line}");
        let validator = PluginInfo {
            binding: PluginBinding {
                hook: PluginHook::Validate,
                ..info.binding.clone()
            },
            ..info.clone()
        };
        let line = list_line(&validator);
        assert!(
            line.starts_with("audit, validate, prefix=/app/, enforce, fail-closed, fuel="),
            "{line}"
        );
        assert!(line.contains(", denials=0, "), "{line}");
        let line = list_line(&info);
        assert!(
            line.ends_with(", checkpoint=42, status=retrying, last-error=trapped: unreachable"),
            "{line}"
        );
    }

    #[test]
    fn list_prints_json_and_a_table_with_each_hooks_own_fields() {
        use etch_client::proto::plugin::{PluginBinding, PluginHook};
        let reactor = PluginInfo {
            binding: PluginBinding {
                name: "audit".into(),
                prefix: b"/app/".to_vec(),
                hook: PluginHook::React,
                config: vec![("audit-prefix".into(), "/audit/".into())],
                ..Default::default()
            },
            sha256: "ab".repeat(32),
            checkpoint: 42,
            calls: 3,
            ..Default::default()
        };
        let validator = PluginInfo {
            binding: PluginBinding {
                name: "guard".into(),
                hook: PluginHook::Validate,
                ..reactor.binding.clone()
            },
            denials: 2,
            ..reactor.clone()
        };
        let json: serde_json::Value =
            serde_json::from_str(&list_json(&[reactor.clone(), validator.clone()])).expect("json");
        let listed = json["plugins"].as_array().expect("plugins");
        assert_eq!(listed[0]["name"], "audit");
        assert_eq!(listed[0]["checkpoint"], 42);
        assert_eq!(listed[0]["config"]["audit-prefix"], "/audit/");
        assert!(
            listed[0].get("on_error").is_none(),
            "a reactor: {}",
            listed[0]
        );
        assert_eq!(listed[1]["on_error"], "fail-closed");
        assert_eq!(listed[1]["denials"], 2);
        assert!(
            listed[1].get("checkpoint").is_none(),
            "a validator: {}",
            listed[1]
        );
        assert_eq!(list_json(&[]), r#"{"plugins":[]}"#);
        let table = list_table(&[reactor, validator]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("NAME") && l.contains("STATUS")),
            "{table}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("audit") && l.contains("react")),
            "{table}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("guard") && l.contains("validate")),
            "{table}"
        );
    }
}

//! `etch-plugin build`: cargo for `wasm32-unknown-unknown` with a small stack, then each
//! module wrapped in a component.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;

/// rustc's default shadow stack is 1 MiB; 128 KiB keeps a plugin's whole linear memory
/// within what the node keeps resident between calls, so a call costs a memset instead of
/// unmapping the pages it touched (etch's BENCHMARKS.md, put100v).
const STACK_BYTES: u32 = 128 * 1024;
const TARGET: &str = "wasm32-unknown-unknown";

#[derive(Args)]
pub struct BuildArgs {
    /// The plugin crate's (or a workspace's) Cargo.toml (default: ./Cargo.toml).
    #[arg(long)]
    manifest_path: Option<PathBuf>,
    /// cargo's target directory (default: the crate's own).
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// Where to write the components (default: TARGET_DIR/etch-plugin).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// The plugin's stack, in bytes.
    #[arg(long, default_value_t = STACK_BYTES)]
    stack_size: u32,
    /// More arguments for `cargo build` (e.g. `-- --locked`).
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    target_directory: PathBuf,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

pub fn run(args: &BuildArgs) -> Result<()> {
    let manifest = args
        .manifest_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("Cargo.toml"));
    if !manifest.is_file() {
        bail!(
            "no {}: run etch-plugin build in a plugin crate, or pass --manifest-path",
            manifest.display()
        );
    }
    let metadata = metadata(&manifest)?;
    let plugins: Vec<(&str, &str)> = metadata
        .packages
        .iter()
        .filter_map(|p| {
            let lib = p
                .targets
                .iter()
                .find(|t| t.kind.iter().any(|k| k == "cdylib"))?;
            Some((p.name.as_str(), lib.name.as_str()))
        })
        .collect();
    if plugins.is_empty() {
        bail!(
            "no plugin crate in {}: a plugin's Cargo.toml has `[lib] crate-type = [\"cdylib\"]` \
             (etch-plugin new writes one)",
            manifest.display()
        );
    }
    check_target(manifest.parent().unwrap_or(Path::new(".")))?;
    let target_dir = args
        .target_dir
        .clone()
        .unwrap_or_else(|| metadata.target_directory.clone());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--config")
        .arg(format!(
            "target.{TARGET}.rustflags=[\"-C\", \"link-arg=-zstack-size={}\"]",
            args.stack_size
        ))
        .args(&args.cargo_args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| target_dir.join("etch-plugin"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for (package, lib) in plugins {
        let module_path = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", lib.replace('-', "_")));
        let module = std::fs::read(&module_path)
            .with_context(|| format!("reading {}", module_path.display()))?;
        let world = etch_plugin_encode::world(&module)
            .with_context(|| format!("{package}: reading its embedded world"))?;
        let component = etch_plugin_encode::encode(&module)
            .with_context(|| format!("{package}: encoding the component"))?;
        let out = out_dir.join(format!("{package}.wasm"));
        std::fs::write(&out, &component).with_context(|| format!("writing {}", out.display()))?;
        let hook = match world.as_str() {
            "reactor" => "react",
            _ => "validate",
        };
        println!(
            "built {package}, a {world} ({} bytes): {}\n  install: etchctl plugin install {package} {} --prefix /PREFIX/ --hook {hook}",
            component.len(),
            out.display(),
            out.display()
        );
    }
    Ok(())
}

fn metadata(manifest: &Path) -> Result<Metadata> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed for {}: {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("reading cargo metadata's answer")
}

/// With rustup, the target must be installed for the toolchain that builds in `dir`; say
/// how when it is not.
fn check_target(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(dir)
        .output()
    else {
        return Ok(()); // no rustup: cargo will say what is missing
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && !installed.lines().any(|t| t.trim() == TARGET) {
        bail!("the {TARGET} target is not installed: rustup target add {TARGET}");
    }
    Ok(())
}

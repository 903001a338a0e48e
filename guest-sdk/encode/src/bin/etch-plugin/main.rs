//! `etch-plugin`: make, build and encode etch plugins.
//!
//! - `etch-plugin new NAME --validator|--reactor` writes a standalone plugin crate (its
//!   own workspace, a small release profile, the guest SDK, a native test) from
//!   `templates.rs`;
//! - `etch-plugin build` builds a plugin crate (or a workspace of them) for
//!   `wasm32-unknown-unknown` with a small stack and wraps each module in the component
//!   etch loads (`build.rs`), printing where it is and how to install it;
//! - `etch-plugin encode IN.wasm OUT.wasm` does the wrapping alone.
//!
//! Install it with `cargo install --path guest-sdk/encode` from an etch checkout.

mod build;
mod templates;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

/// Make, build and encode etch plugins (WebAssembly validators and reactors).
#[derive(Parser)]
#[command(name = "etch-plugin", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new plugin crate, ready to test (`cargo test`) and build (`etch-plugin build`).
    New(NewArgs),
    /// Build a plugin crate (or each plugin of a workspace) into components etch loads.
    Build(build::BuildArgs),
    /// Wrap a core module built for wasm32-unknown-unknown in the component etch loads.
    Encode {
        /// The core module (`target/wasm32-unknown-unknown/release/NAME.wasm`).
        input: PathBuf,
        /// Where to write the component.
        output: PathBuf,
        /// Embed this world of etch's WIT first: for a module written against the canonical
        /// ABI by hand, in a language without wit-bindgen. A world of the newest contract
        /// (`validator`, `reactor`; `validator-core`, `reactor-core` without `init`) or
        /// `NAME@VERSION` of an older one (`validator@0.1.0`).
        #[arg(long)]
        world: Option<String>,
    },
}

#[derive(Args)]
struct NewArgs {
    /// The plugin's name: the crate's and the directory's (letters, digits, `-`, `_`).
    name: String,
    /// A validator: judges writes before they commit (`--hook validate`).
    #[arg(long, conflicts_with = "reactor", required_unless_present = "reactor")]
    validator: bool,
    /// A reactor: acts on changes after they commit (`--hook react`).
    #[arg(long)]
    reactor: bool,
    /// Where to write the crate (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The guest SDK (`guest-sdk` of an etch checkout) the crate depends on (default: the
    /// one this tool was built from).
    #[arg(long, env = "ETCH_PLUGIN_SDK")]
    sdk: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let done = match cli.command {
        Command::New(args) => new(args),
        Command::Build(args) => build::run(&args),
        Command::Encode {
            input,
            output,
            world,
        } => encode(&input, &output, world.as_deref()),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn new(args: NewArgs) -> Result<()> {
    let kind = if args.reactor {
        templates::Kind::Reactor
    } else {
        templates::Kind::Validator
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = match args.sdk {
        Some(sdk) => sdk,
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
    };
    let sdk = sdk
        .canonicalize()
        .ok()
        .filter(|s| s.join("wit/etch.wit").is_file());
    let Some(sdk) = sdk else {
        anyhow::bail!(
            "the etch guest SDK is not where this tool was built from: pass --sdk PATH (the \
             guest-sdk directory of an etch checkout)"
        );
    };
    let written = templates::write(&dir, &args.name, kind, &sdk)?;
    for path in &written {
        println!("created {}", path.display());
    }
    println!(
        "\nnext:\n  cd {}\n  cargo test            # the native test\n  etch-plugin build     # the component, under target/etch-plugin/",
        dir.display()
    );
    Ok(())
}

fn encode(input: &std::path::Path, output: &std::path::Path, world: Option<&str>) -> Result<()> {
    let mut module =
        std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    if let Some(world) = world {
        etch_plugin_encode::embed_world(&mut module, world)?;
    }
    let component = etch_plugin_encode::encode(&module)?;
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(output, &component).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{} ({} bytes) -> {} ({} bytes)",
        input.display(),
        module.len(),
        output.display(),
        component.len()
    );
    Ok(())
}

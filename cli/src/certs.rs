//! `certs init`: a CA and node and client certificates for a cluster.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use etch_client::proto::pki::{InitOptions, init_dir};

/// `certs ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum CertsCommand {
    /// Write a CA (or reuse the one in DIR) and issue node and client certificates:
    /// DIR/ca.crt, DIR/ca.key, DIR/NAME.crt and DIR/NAME.key for each name.
    Init(InitArgs),
}

#[derive(Args, Clone, Debug)]
pub struct InitArgs {
    /// Directory to write to (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Node certificates to issue, by node name.
    #[arg(long, value_delimiter = ',', default_value = "n1")]
    pub nodes: Vec<String>,
    /// Client certificates to issue, by principal (the certificate's common name).
    #[arg(long, value_delimiter = ',', default_value = "root")]
    pub clients: Vec<String>,
    /// Host names and IP addresses the node certificates are valid for.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
    pub hosts: Vec<String>,
}

pub fn run(cmd: &CertsCommand) -> Result<()> {
    let CertsCommand::Init(args) = cmd;
    // `--nodes ""` means none.
    let names = |v: &[String]| v.iter().filter(|s| !s.is_empty()).cloned().collect();
    let opts = InitOptions {
        nodes: names(&args.nodes),
        clients: names(&args.clients),
        hosts: names(&args.hosts),
    };
    let written = init_dir(&args.dir, &opts)
        .with_context(|| format!("writing certificates to {}", args.dir.display()))?;
    if !written.iter().any(|p| p.ends_with("ca.crt")) {
        println!("reusing the CA in {}", args.dir.display());
    }
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

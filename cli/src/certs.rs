//! `certs init`: a CA and node and client certificates for a cluster; `certs revoke`: a
//! certificate added to the CA's revocation list, `DIR/crl.pem`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use etch_client::proto::crl;
use etch_client::proto::pki::{InitOptions, init_dir};

/// `certs ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum CertsCommand {
    /// Write a CA (or reuse the one in DIR) and issue node and client certificates:
    /// DIR/ca.crt, DIR/ca.key, DIR/NAME.crt and DIR/NAME.key for each name.
    Init(InitArgs),
    /// Add DIR/NAME.crt to the CA's revocation list DIR/crl.pem (made if missing; earlier
    /// entries kept, CRL number incremented), signed with DIR/ca.key. Nodes started with
    /// --client-crl-file DIR/crl.pem (or the embedded CA's) refuse it from their next look
    /// at the file, and close its open connections.
    Revoke(RevokeArgs),
}

#[derive(Args, Clone, Debug)]
pub struct RevokeArgs {
    /// The certificate directory (as `certs init` wrote it).
    #[arg(long)]
    pub dir: PathBuf,
    /// The certificate to revoke: DIR/NAME.crt.
    pub name: String,
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
    match cmd {
        CertsCommand::Init(args) => init(args),
        CertsCommand::Revoke(args) => revoke(args),
    }
}

fn revoke(args: &RevokeArgs) -> Result<()> {
    let done = crl::revoke(&args.dir, &args.name)
        .with_context(|| format!("revoking {} in {}", args.name, args.dir.display()))?;
    if done.already {
        println!(
            "certificate {} (serial {}) is already revoked in {}",
            args.name,
            done.serial,
            done.path.display()
        );
    } else {
        println!(
            "revoked certificate {} (serial {}) in {}: CRL number {}, {} revoked",
            args.name,
            done.serial,
            done.path.display(),
            done.crl_number,
            done.revoked
        );
    }
    Ok(())
}

fn init(args: &InitArgs) -> Result<()> {
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

//! `lease grant|revoke|timetolive|list|keep-alive`: etcdctl's lease verbs. Lease IDs are
//! printed and read in hex, as etcdctl does.

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use etch_client::{KeepAliveStatus, LeaseId};

use crate::context::Context;

/// `lease ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds: prints its ID.
    Grant(GrantArgs),
    /// Revoke a lease, deleting the keys attached to it.
    Revoke(IdArgs),
    /// Print a lease's granted and remaining TTL (and its keys with --keys).
    Timetolive(TimeToLiveArgs),
    /// List the live leases.
    List,
    /// Keep a lease alive, printing each refresh, until interrupted (or once with --once).
    KeepAlive(KeepAliveArgs),
}

/// `lease grant TTL`.
#[derive(Args, Clone, Debug)]
pub struct GrantArgs {
    /// Time to live, in seconds.
    pub ttl: i64,
}

/// `lease revoke ID`.
#[derive(Args, Clone, Debug)]
pub struct IdArgs {
    /// The lease's ID, in hex as `lease grant` prints it.
    pub id: String,
}

impl IdArgs {
    pub fn id(&self) -> Result<LeaseId> {
        lease_id(&self.id)
    }
}

/// `lease timetolive ID [--keys]`.
#[derive(Args, Clone, Debug)]
pub struct TimeToLiveArgs {
    #[command(flatten)]
    pub lease: IdArgs,
    /// Also list the keys attached to the lease.
    #[arg(long)]
    pub keys: bool,
}

/// `lease keep-alive ID [--once]`.
#[derive(Args, Clone, Debug)]
pub struct KeepAliveArgs {
    #[command(flatten)]
    pub lease: IdArgs,
    /// Refresh once and exit.
    #[arg(long)]
    pub once: bool,
}

/// A lease ID in hex, as etcdctl reads it.
fn lease_id(s: &str) -> Result<LeaseId> {
    LeaseId::from_str_radix(s, 16)
        .with_context(|| format!("bad lease ID arg ({s}), expecting ID in Hex"))
}

pub async fn run(ctx: &Context, cmd: &LeaseCommand) -> Result<()> {
    match cmd {
        LeaseCommand::Grant(args) => {
            let resp = ctx.client()?.lease_grant(args.ttl).await?;
            ctx.print(|p, w| p.lease_grant(w, &resp))
        }
        LeaseCommand::Revoke(args) => {
            let id = args.id()?;
            let resp = ctx.client()?.lease_revoke(id).await?;
            ctx.print(|p, w| p.lease_revoke(w, id, &resp))
        }
        LeaseCommand::Timetolive(args) => {
            let id = args.lease.id()?;
            let client = ctx.client()?;
            let mut req = client.lease_time_to_live(id);
            if args.keys {
                req = req.keys();
            }
            let resp = req.await?;
            ctx.print(|p, w| p.lease_time_to_live(w, &resp, args.keys))
        }
        LeaseCommand::List => {
            let resp = ctx.client()?.lease_leases().await?;
            ctx.print(|p, w| p.lease_leases(w, &resp))
        }
        LeaseCommand::KeepAlive(args) => keep_alive(ctx, args).await,
    }
}

async fn keep_alive(ctx: &Context, args: &KeepAliveArgs) -> Result<()> {
    let id = args.lease.id()?;
    let client = ctx.client()?;
    if args.once {
        let resp = client.lease_keep_alive(id).keep_alive().await?;
        return ctx.print(|p, w| p.lease_keep_alive(w, &resp));
    }
    let mut handle = client.keep_lease_alive(id);
    let printing = async {
        let mut retrying = false;
        loop {
            match handle.changed().await {
                KeepAliveStatus::Alive { ttl, .. } => {
                    retrying = false;
                    let resp = etch_client::LeaseKeepAliveResponse {
                        id,
                        ttl,
                        ..Default::default()
                    };
                    ctx.print(|p, w| p.lease_keep_alive(w, &resp))?;
                }
                KeepAliveStatus::Gone => break,
                // Said once per outage, on stderr, so that a script reading stdout sees
                // only refreshes.
                status @ KeepAliveStatus::Retrying { .. } => {
                    if !retrying {
                        eprintln!("lease {id:016x} keep-alive {status}");
                    }
                    retrying = true;
                    continue;
                }
                KeepAliveStatus::Starting => {}
            }
        }
        if ctx.printer.format != crate::print::Format::Json {
            ctx.print(|_, w| writeln!(w, "lease {id:016x} expired or revoked."))?;
        }
        Ok(())
    };
    tokio::select! {
        done = printing => done,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex() {
        assert_eq!(
            lease_id("694d77aa9e38260f").expect("hex"),
            0x694d77aa9e38260f
        );
        let err = lease_id("xyz").expect_err("not hex");
        assert!(err.to_string().contains("expecting ID in Hex"), "{err}");
    }
}

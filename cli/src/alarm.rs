//! `alarm list`, `alarm disarm` and `defrag`, as etcdctl's: alarms print one per line as
//! `memberID:ID alarm:NAME` (the member ID in decimal).

use std::io::Write;

use anyhow::{Result, bail};
use clap::Subcommand;
use etch_client::proto::alarm::AlarmMember;

use crate::context::Context;
use crate::endpoint::{ClusterArgs, each_endpoint, endpoints};

/// `alarm ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum AlarmCommand {
    /// List the raised alarms (NOSPACE: the database passed --quota-backend-bytes).
    List,
    /// Clear every raised alarm (root only): once space is freed (compact, defrag), writes
    /// that add data go through again. Prints the alarms cleared.
    Disarm,
}

pub async fn run(ctx: &Context, cmd: &AlarmCommand) -> Result<()> {
    let client = ctx.client()?;
    let alarms = client.alarm_list().await?;
    let shown = match cmd {
        AlarmCommand::List => alarms,
        AlarmCommand::Disarm => {
            let mut cleared = Vec::new();
            for alarm in alarms {
                cleared.extend(client.alarm_disarm(alarm).await?);
            }
            cleared
        }
    };
    ctx.print(|_, w| print(w, &shown))
}

fn print(w: &mut dyn Write, alarms: &[AlarmMember]) -> std::io::Result<()> {
    for a in alarms {
        writeln!(w, "memberID:{} alarm:{}", a.member_id, a.alarm.name())?;
    }
    Ok(())
}

/// `defrag [--cluster]`: defragments each endpoint (or every member) in turn.
pub async fn defrag(ctx: &Context, args: &ClusterArgs) -> Result<()> {
    let endpoints = endpoints(ctx, args).await?;
    let results = each_endpoint(ctx, &endpoints, |client| async move {
        client.defragment().await.map(drop)
    })
    .await?;
    let mut failed = 0;
    for (endpoint, result) in results {
        match result {
            Ok(()) => {
                ctx.print(|_, w| writeln!(w, "Finished defragmenting etch member[{endpoint}]"))?
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "Failed to defragment etch member[{endpoint}] ({})",
                    crate::context::error_line(&e.into())
                );
            }
        }
    }
    if failed > 0 {
        bail!("failed to defragment {failed} endpoint(s)");
    }
    Ok(())
}

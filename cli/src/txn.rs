//! `txn`: reads etcdctl's txn syntax from standard input (see [`crate::txn_parse`]) and
//! prints `SUCCESS` or `FAILURE`, then each response as the single commands print it.

use std::io;

use anyhow::{Result, bail};
use clap::Args;
use etch_client::proto::{Request, Response};

use crate::context::Context;
use crate::txn_parse::read_txn;

/// `txn [-i]`.
#[derive(Args, Clone, Debug)]
pub struct TxnArgs {
    /// Prompt for each section (compares, success requests, failure requests).
    #[arg(short, long)]
    pub interactive: bool,
}

pub async fn run(ctx: &Context, args: &TxnArgs) -> Result<()> {
    let mut input = io::stdin().lock();
    let mut stdout = io::stdout();
    let prompts: Option<&mut dyn io::Write> = if args.interactive {
        Some(&mut stdout)
    } else {
        None
    };
    let txn = read_txn(&mut input, prompts)?;
    let client = ctx.client()?;
    match client.request(Request::Txn(txn)).await? {
        Response::Txn(r) => ctx.print(|p, w| p.txn(w, &r)),
        other => bail!("unexpected response {other:?}"),
    }
}

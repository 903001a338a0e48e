//! Compare-and-swap with a transaction: take a job only if it is still idle.
//!
//! Run against a node on its embedded defaults: `cargo run -p etch-client --example txn`
//! (`common/mod.rs` for `ETCH_ENDPOINTS` / `ETCH_CERTS`).

use etch_client::{Client, Compare, CompareResult, TxnOp};

use common::options;

mod common;

#[tokio::main]
async fn main() -> etch_client::Result<()> {
    let client = Client::connect(options()).await?;
    client.put("/jobs/42/state", "idle").await?;

    let took = take(&client, "/jobs/42/state").await?;
    println!("took the job: {took}");
    // A second try finds it busy.
    let again = take(&client, "/jobs/42/state").await?;
    println!("took it again: {again}");

    // Create a key only if it does not exist yet (its create revision is 0).
    let created = client
        .txn()
        .when(Compare::create_revision(
            "/jobs/43/state",
            CompareResult::Equal,
            0,
        ))
        .and_then(TxnOp::put("/jobs/43/state", "idle"))
        .await?;
    println!("created job 43: {}", created.succeeded);

    client.delete("/jobs/").prefix().await?;
    Ok(())
}

/// Takes the job whose state is at `key` if it is idle (etcd's If / Then / Else): whether
/// this call took it.
async fn take(client: &Client, key: &str) -> etch_client::Result<bool> {
    let resp = client
        .txn()
        .when(Compare::value(key, CompareResult::Equal, "idle"))
        .and_then(TxnOp::put(key, "busy"))
        .or_else(TxnOp::get(key))
        .await?;
    Ok(resp.succeeded)
}

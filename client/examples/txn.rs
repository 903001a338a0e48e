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

    // etcd's If / Then / Else.
    let took = client
        .txn()
        .when(Compare::value(
            "/jobs/42/state",
            CompareResult::Equal,
            "idle",
        ))
        .and_then(TxnOp::put("/jobs/42/state", "busy"))
        .or_else(TxnOp::get("/jobs/42/state"))
        .await?;
    println!("took the job: {}", took.succeeded);

    // A second try finds it busy: the else branch read the state.
    let again = client
        .txn()
        .when(Compare::value(
            "/jobs/42/state",
            CompareResult::Equal,
            "idle",
        ))
        .and_then(TxnOp::put("/jobs/42/state", "busy"))
        .or_else(TxnOp::get("/jobs/42/state"))
        .await?;
    println!("took it again: {}", again.succeeded);

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

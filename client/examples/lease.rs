//! A key that lives as long as its lease: grant, attach, keep alive in the background,
//! then revoke.
//!
//! Run against a node on its embedded defaults: `cargo run -p etch-client --example lease`
//! (`common/mod.rs` for `ETCH_ENDPOINTS` / `ETCH_CERTS`).

use etch_client::{Client, KeepAliveStatus};

use common::options;

mod common;

#[tokio::main]
async fn main() -> etch_client::Result<()> {
    let client = Client::connect(options()).await?;
    let lease = client.lease_grant(5).await?;
    println!("lease {:016x} granted with TTL {}s", lease.id, lease.ttl);
    client
        .put("/locks/report", "worker-1")
        .lease(lease.id)
        .await?;

    // Refreshed every TTL/3 while the handle lives.
    let mut keep_alive = client.keep_lease_alive(lease.id);
    for _ in 0..3 {
        match keep_alive.changed().await {
            status @ KeepAliveStatus::Alive { .. } => println!("{status}"),
            status @ KeepAliveStatus::Retrying { .. } => eprintln!("{status}"),
            KeepAliveStatus::Gone => break,
            KeepAliveStatus::Starting => {}
        }
    }

    let ttl = client.lease_time_to_live(lease.id).keys().await?;
    println!("{}s left, keys attached: {}", ttl.ttl, ttl.keys.len());

    drop(keep_alive);
    client.lease_revoke(lease.id).await?;
    let gone = client.get_value("/locks/report").await?.is_none();
    println!("key deleted with its lease: {gone}");
    Ok(())
}

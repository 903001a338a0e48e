//! Service discovery: an instance registers itself under a lease and keeps it alive; a
//! client lists the instances and watches them come and go.
//!
//! Run against a node on its embedded defaults: `cargo run -p etch-client --example
//! discovery` (`common/mod.rs` for `ETCH_ENDPOINTS` / `ETCH_CERTS`).

use etch_client::{Client, EventType};

use common::options;

const SERVICE: &str = "/services/web/";

mod common;

#[tokio::main]
async fn main() -> etch_client::Result<()> {
    let client = Client::connect(options()).await?;

    // The registry as it is now, and a watch from just after that read: nothing missed.
    let now = client.get(SERVICE).prefix().await?;
    println!("{} instances now", now.kvs.len());
    let mut watcher = client
        .watch(SERVICE)
        .prefix()
        .start_revision(now.header.revision + 1)
        .await?;

    // An instance registers: its key goes away with its lease if it stops refreshing.
    let lease = client.lease_grant(10).await?;
    let me = format!("{SERVICE}10.0.0.7:8080");
    client.put(me.as_str(), "healthy").lease(lease.id).await?;
    let keep_alive = client.keep_lease_alive(lease.id);

    // It leaves: revoking the lease deletes its key, and the watcher sees both.
    let registered = watcher.next().await.expect("the watch is open")?;
    for event in &registered.events {
        println!("{:?} {}", event.kind, event.kv.key_str());
    }
    drop(keep_alive);
    client.lease_revoke(lease.id).await?;
    let left = watcher.next().await.expect("the watch is open")?;
    for event in &left.events {
        assert_eq!(event.kind, EventType::Delete);
        println!("{:?} {}", event.kind, event.kv.key_str());
    }
    watcher.cancel();
    Ok(())
}

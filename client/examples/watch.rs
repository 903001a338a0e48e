//! Watch a prefix while another task changes it; report when the watch is resuming.
//!
//! Run against a node on its embedded defaults: `cargo run -p etch-client --example watch`
//! (`common/mod.rs` for `ETCH_ENDPOINTS` / `ETCH_CERTS`).

use etch_client::{Client, EventType, WatchState};

use common::options;

mod common;

#[tokio::main]
async fn main() -> etch_client::Result<()> {
    let client = Client::connect(options()).await?;
    let start = client.put("/feature/x", "off").await?.header.revision;

    // From the revision after that put: every later change, in order, each once, across
    // reconnections.
    let mut watcher = client
        .watch("/feature/")
        .prefix()
        .prev_kv()
        .start_revision(start + 1)
        .await?;

    let writer = client.clone();
    tokio::spawn(async move {
        writer.put("/feature/x", "on").await?;
        writer.put("/feature/y", "on").await?;
        writer.delete("/feature/x").await?;
        Ok::<(), etch_client::Error>(())
    });

    let mut states = watcher.states();
    let mut seen = 0;
    while seen < 3 {
        tokio::select! {
            resp = watcher.next() => {
                let Some(resp) = resp else { break };
                for event in resp?.events {
                    seen += 1;
                    match event.kind {
                        EventType::Put => println!("PUT {} = {}", event.kv.key_str(), event.kv.value_str()),
                        EventType::Delete => println!("DELETE {}", event.kv.key_str()),
                    }
                }
            }
            Ok(()) = states.changed() => {
                if let WatchState::Resuming { from_revision, error, .. } = &*states.borrow_and_update() {
                    eprintln!("watch disconnected ({error}); resuming from revision {from_revision}");
                }
            }
        }
    }
    watcher.cancel();
    client.delete("/feature/").prefix().await?;
    Ok(())
}

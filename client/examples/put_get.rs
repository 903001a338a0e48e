//! Put a key, read it back, list a prefix, delete it.
//!
//! Start a node on its embedded defaults (`etchd`, in some directory), then from the same
//! directory: `cargo run -p etch-client --example put_get`. `ETCH_ENDPOINTS` (comma
//! separated) and `ETCH_CERTS` (a directory with `ca.crt`, `root.crt`, `root.key`) point
//! the examples elsewhere (`common/mod.rs`).

use etch_client::Client;

use common::options;

mod common;

#[tokio::main]
async fn main() -> etch_client::Result<()> {
    let client = Client::connect(options()).await?;

    let put = client.put("/config/db/port", "5432").prev_kv().await?;
    println!("put at revision {}", put.header.revision);

    match client.get_value("/config/db/port").await? {
        Some(port) => println!("/config/db/port = {}", String::from_utf8_lossy(&port)),
        None => println!("/config/db/port is not set"),
    }

    client.put("/config/db/host", "10.0.0.5").await?;
    let all = client.get("/config/").prefix().await?;
    for kv in &all.kvs {
        println!(
            "{} = {} (version {})",
            kv.key_str(),
            kv.value_str(),
            kv.version
        );
    }

    let deleted = client.delete("/config/").prefix().await?.deleted;
    println!("deleted {deleted} keys");
    Ok(())
}

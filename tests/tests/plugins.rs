//! Validator plugins on a real 3-node cluster: the json-schema example plugin (built by
//! `scripts/build-plugins` into `target/plugins/`) installed with etchctl, then good and bad
//! writes through etchctl and the SDK, a txn judged as a whole, audit mode, and enforcement
//! surviving the loss of the leader (every node has the plugin in its replicated state).

use std::path::PathBuf;
use std::time::Duration;

use etch_client::proto::Error as ServerError;
use etch_client::{Client, ClientOptions, Error, TxnOp};
use etch_tests::{Cluster, etchctl_with, ok_stdout, wait_for};

const SCHEMA: &str = r#"schema={"type":"object","required":["host"],"properties":{"host":{"type":"string"},"port":{"type":"integer"}}}"#;

/// A component built by `scripts/build-plugins`.
fn plugin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/plugins/<name>.wasm
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    let path = target.join("plugins").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} not found: build the plugins first (scripts/build-plugins, as scripts/test does)",
        path.display()
    );
    path
}

/// Index of the node that says it leads.
fn leader_index(cluster: &mut Cluster) -> usize {
    wait_for("a leader", Duration::from_secs(20), || {
        let tls = cluster.client_tls("root");
        (0..cluster.nodes.len()).find(|&i| {
            if !cluster.nodes[i].is_running() {
                return false;
            }
            let out = etchctl_with(&cluster.nodes[i].endpoint(), &tls, &["endpoint", "status"]);
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(", true, false,")
        })
    })
}

fn client(cluster: &Cluster) -> Client {
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint()).collect();
    let opts = ClientOptions::new(endpoints, cluster.client_tls("root"))
        .request_timeout(Duration::from_secs(10));
    Client::new(opts).expect("client")
}

fn stderr(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure, got {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_is_enforced_across_the_cluster_and_a_leader_loss() {
    let wasm = plugin("json-schema");
    let wasm = wasm.to_str().expect("utf-8 path");
    let mut cluster = Cluster::new(3, &[]);

    let out = ok_stdout(&cluster.etchctl(&[
        "plugin",
        "install",
        "schema",
        wasm,
        "--prefix",
        "/svc/",
        "--hook",
        "validate",
        "--config",
        SCHEMA,
        "--timeout-ms",
        "2000",
    ]));
    assert!(out.starts_with("Plugin schema installed (sha256 "), "{out}");

    // A valid document passes, an invalid one is refused with the plugin's reason.
    ok_stdout(&cluster.etchctl(&["put", "/svc/a", r#"{"host":"10.0.0.1","port":80}"#]));
    let err = stderr(&cluster.etchctl(&["put", "/svc/b", r#"{"port":80}"#]));
    assert!(
        err.contains("rejected by plugin schema: /svc/b: $.host is required (code schema)"),
        "{err}"
    );
    let client = client(&cluster);
    let refused = client.put("/svc/b", "not json").await;
    assert!(
        matches!(
            &refused,
            Err(Error::Server(ServerError::PluginRejected { plugin, code, .. }))
                if plugin == "schema" && code == "not-json"
        ),
        "{refused:?}"
    );
    assert_eq!(client.get("/svc/b").await.expect("get").count, 0);
    // Keys outside the prefix are not judged.
    client
        .put("/other", "not json")
        .await
        .expect("outside the prefix");

    // A txn is judged as a whole: one bad document refuses all of it.
    let txn = client
        .txn()
        .and_then([
            TxnOp::put("/svc/c", r#"{"host":"c"}"#),
            TxnOp::put("/svc/d", r#"{"host":4}"#),
        ])
        .await;
    assert!(
        matches!(&txn, Err(Error::Server(ServerError::PluginRejected { reason, .. })) if reason.contains("/svc/d")),
        "{txn:?}"
    );
    assert_eq!(client.get("/svc/c").await.expect("get").count, 0);
    client
        .txn()
        .and_then([
            TxnOp::put("/svc/c", r#"{"host":"c"}"#),
            TxnOp::put("/svc/d", r#"{"host":"d"}"#),
        ])
        .await
        .expect("a valid txn");

    // Audit mode records refusals without enforcing them.
    ok_stdout(&cluster.etchctl(&[
        "plugin",
        "install",
        "watcher",
        wasm,
        "--prefix",
        "/audit/",
        "--config",
        SCHEMA,
        "--mode",
        "audit",
        "--timeout-ms",
        "2000",
    ]));
    client
        .put("/audit/x", "not json")
        .await
        .expect("audit never rejects");
    let list = ok_stdout(&cluster.etchctl(&["plugin", "list"]));
    let watcher = list
        .lines()
        .find(|l| l.starts_with("watcher, "))
        .unwrap_or_else(|| panic!("no watcher in {list}"));
    assert!(
        watcher.contains(", audit, ") && watcher.contains("denials=1"),
        "{list}"
    );

    // Kill the leader: the new one enforces the same binding.
    let leader = leader_index(&mut cluster);
    cluster.nodes[leader].kill();
    let new_leader = leader_index(&mut cluster);
    assert_ne!(new_leader, leader);
    // A fresh client: one connected to the dead leader would rightly report a write it had
    // sent as of unknown outcome instead of retrying it.
    let live: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| cluster.nodes[i].endpoint())
        .collect();
    let opts = ClientOptions::new(live, cluster.client_tls("root"))
        .request_timeout(Duration::from_secs(10));
    let client = Client::new(opts).expect("client");
    let refused = client.put("/svc/e", r#"{"port":"eighty"}"#).await;
    assert!(
        matches!(
            &refused,
            Err(Error::Server(ServerError::PluginRejected { .. }))
        ),
        "{refused:?}"
    );
    client
        .put("/svc/e", r#"{"host":"e"}"#)
        .await
        .expect("valid after the failover");

    // Removing the binding lifts the rule.
    ok_stdout(&cluster.etchctl(&["plugin", "remove", "schema"]));
    client
        .put("/svc/f", "free text")
        .await
        .expect("no plugin any more");
    let list = ok_stdout(&cluster.etchctl(&["plugin", "list"]));
    assert!(!list.contains("schema, "), "{list}");
}

#[test]
fn a_broken_component_is_refused_at_install() {
    let cluster = Cluster::new(1, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asmnope").expect("write");
    let err = stderr(&cluster.etchctl(&[
        "plugin",
        "install",
        "bogus",
        bogus.to_str().expect("utf-8"),
        "--prefix",
        "/x/",
    ]));
    assert!(
        err.contains("invalid argument: plugin bogus: invalid component"),
        "{err}"
    );
    assert_eq!(ok_stdout(&cluster.etchctl(&["plugin", "list"])), "");
}

//! Plugins on a real 3-node cluster, with the example plugins built by
//! `scripts/build-plugins` into `target/plugins/`:
//!
//! - validators: json-schema installed with etchctl, then good and bad writes through
//!   etchctl and the SDK, a txn judged as a whole, audit mode, and enforcement surviving the
//!   loss of the leader (every node has the plugin in its replicated state);
//! - reactors: the audit-log reactor records every committed change exactly once and in
//!   commit order, is never triggered by its own records, loses nothing across a leader
//!   kill, and a failing reactor is reported and retried while the cluster keeps serving.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etch_client::proto::Error as ServerError;
use etch_client::proto::watch::EventType;
use etch_client::{Client, ClientOptions, Error, TxnOp};
use etch_tests::{Cluster, etchctl_with, ok_stdout, plugin_wasm, wait_for, wait_for_async};

const SCHEMA: &str = r#"schema={"type":"object","required":["host"],"properties":{"host":{"type":"string"},"port":{"type":"integer"}}}"#;

fn stderr(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure, got {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_is_enforced_across_the_cluster_and_a_leader_loss() {
    let wasm = plugin_wasm("json-schema");
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
    let client = cluster.root_client();
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
    let leader = cluster.leader_index();
    cluster.nodes[leader].kill();
    let new_leader = cluster.leader_index();
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

// Reactors: the audit-log example.

/// One audit record, or one committed change it should describe: (revision, index of the
/// change within the revision, "put" or "delete", key).
type Change = (i64, usize, String, String);

/// Installs audit-log as reactor `name` on `prefix`, writing records under `audit_prefix`.
fn install_audit_log(cluster: &Cluster, name: &str, prefix: &str, audit_prefix: Option<&str>) {
    let wasm = plugin_wasm("audit-log");
    let mut args = vec![
        "plugin",
        "install",
        name,
        wasm.to_str().expect("utf-8 path"),
        "--prefix",
        prefix,
        "--hook",
        "react",
        "--timeout-ms",
        "5000",
    ];
    let config = audit_prefix.map(|p| format!("audit-prefix={p}"));
    if let Some(config) = &config {
        args.extend(["--config", config]);
    }
    let out = ok_stdout(&cluster.etchctl(&args));
    assert!(out.starts_with(&format!("Plugin {name} ")), "{out}");
}

/// The records under `audit_prefix`, in key order.
async fn audit_records(client: &Client, audit_prefix: &str) -> Vec<Change> {
    let resp = client
        .get(audit_prefix)
        .prefix()
        .await
        .expect("range the records");
    resp.kvs
        .iter()
        .map(|kv| {
            let key = String::from_utf8_lossy(&kv.key);
            let (rev, index) = key[audit_prefix.len()..]
                .split_once('/')
                .unwrap_or_else(|| panic!("bad record key {key}"));
            let record: serde_json::Value =
                serde_json::from_slice(&kv.value).expect("a JSON record");
            let revision: i64 = rev.parse().expect("revision digits");
            assert_eq!(record["revision"], revision, "{record}");
            (
                revision,
                index.parse().expect("index digits"),
                record["type"].as_str().expect("type").to_owned(),
                record["key"].as_str().expect("key").to_owned(),
            )
        })
        .collect()
}

/// Waits until the record of the first change at `revision` exists.
async fn await_record(client: &Client, audit_prefix: &str, revision: i64) {
    let key = format!("{audit_prefix}{revision:020}/{:06}", 0);
    let what = format!("the audit record of revision {revision}");
    wait_for_async(&what, Duration::from_secs(60), || async {
        let resp = client.get(key.as_str()).await.ok()?;
        (resp.count == 1).then_some(())
    })
    .await;
}

/// The committed changes under `prefix` from `from` through `through`, read back from
/// history with a watch.
async fn committed_changes(client: &Client, prefix: &str, from: i64, through: i64) -> Vec<Change> {
    let mut watcher = client
        .watch(prefix)
        .prefix()
        .start_revision(from)
        .await
        .expect("watch history");
    let mut changes = Vec::new();
    let mut seen = 0;
    while seen < through {
        let resp = tokio::time::timeout(Duration::from_secs(20), watcher.next())
            .await
            .expect("history arrives")
            .expect("watch open")
            .expect("watch response");
        let mut index = BTreeMap::<i64, usize>::new();
        for e in &resp.events {
            let rev = e.kv.mod_revision;
            seen = seen.max(rev);
            if rev > through {
                continue;
            }
            let i = index.entry(rev).or_default();
            let kind = match e.kind {
                EventType::Put => "put",
                EventType::Delete => "delete",
            };
            changes.push((
                rev,
                *i,
                kind.to_owned(),
                String::from_utf8_lossy(&e.kv.key).into_owned(),
            ));
            *i += 1;
        }
    }
    watcher.cancel();
    changes
}

/// The line of binding `name` in `plugin list`.
fn list_line(cluster: &Cluster, name: &str) -> String {
    let list = ok_stdout(&cluster.etchctl(&["plugin", "list"]));
    list.lines()
        .find(|l| l.starts_with(&format!("{name}, ")))
        .unwrap_or_else(|| panic!("no {name} in {list}"))
        .to_owned()
}

/// The `checkpoint=N` of a reactor's `plugin list` line.
fn checkpoint_of(line: &str) -> i64 {
    line.split(", ")
        .find_map(|f| f.strip_prefix("checkpoint="))
        .unwrap_or_else(|| panic!("no checkpoint in {line}"))
        .parse()
        .expect("a revision")
}

/// The `user` of the audit record of the first change at `revision`.
async fn recorded_user(client: &Client, audit_prefix: &str, revision: i64) -> String {
    await_record(client, audit_prefix, revision).await;
    let key = format!("{audit_prefix}{revision:020}/{:06}", 0);
    let resp = client.get(key.as_str()).await.expect("the record");
    let record: serde_json::Value =
        serde_json::from_slice(&resp.kvs[0].value).expect("a JSON record");
    record["user"].as_str().unwrap_or_default().to_owned()
}

/// Reactor events carry who made each change, and a reactor writes with the rights of the
/// user who installed it: `ops` (holding the root role) installs audit-log; alice (granted
/// /app/) and root write; the records name them. Once ops loses the root role, the
/// reactor's writes are refused (reported on `plugin list`) and nothing is recorded; with
/// the role back, it records what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactor_events_name_their_user_and_a_reactor_has_its_installers_rights() {
    let cluster = Cluster::single();
    etch_tests::Certs::new(&cluster.certs.dir, &[], &["ops"]);
    for args in [
        vec!["role", "add", "app"],
        vec![
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
        vec!["user", "add", "alice"],
        vec!["user", "grant-role", "alice", "app"],
        vec!["user", "add", "ops"],
        vec!["user", "grant-role", "ops", "root"],
    ] {
        ok_stdout(&cluster.etchctl(&args));
    }
    let wasm = plugin_wasm("audit-log");
    let install = [
        "plugin",
        "install",
        "audit",
        wasm.to_str().expect("utf-8 path"),
        "--prefix",
        "/app/",
        "--hook",
        "react",
        "--timeout-ms",
        "5000",
        "--config",
        "audit-prefix=/audit/",
    ];
    let ops = cluster.client_tls("ops");
    ok_stdout(&etchctl_with(&cluster.endpoints(), &ops, &install));
    let root = cluster.client().await;
    let alice = Client::new(cluster.client_options("alice")).expect("alice");
    let by_alice = alice
        .put("/app/a", "1")
        .await
        .expect("alice writes /app/")
        .header
        .revision;
    let by_root = root
        .put("/app/b", "2")
        .await
        .expect("root writes")
        .header
        .revision;
    assert_eq!(recorded_user(&root, "/audit/", by_alice).await, "alice");
    assert_eq!(recorded_user(&root, "/audit/", by_root).await, "root");

    // Without its installer's root role, the reactor may not write its records.
    ok_stdout(&cluster.etchctl(&["user", "revoke-role", "ops", "root"]));
    let missed = root
        .put("/app/c", "3")
        .await
        .expect("root writes")
        .header
        .revision;
    wait_for("the reactor to be refused", Duration::from_secs(30), || {
        let line = list_line(&cluster, "audit");
        line.contains("permission denied: user ops may not write")
            .then_some(())
    });
    let key = format!("/audit/{missed:020}/{:06}", 0);
    assert_eq!(root.get(key.as_str()).await.expect("get").count, 0);
    // Given back, it catches up.
    ok_stdout(&cluster.etchctl(&["user", "grant-role", "ops", "root"]));
    assert_eq!(recorded_user(&root, "/audit/", missed).await, "root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_records_every_change_exactly_once_in_commit_order() {
    let cluster = Cluster::new(3, &[]);
    install_audit_log(&cluster, "audit", "/app/", Some("/audit/"));
    let line = list_line(&cluster, "audit");
    assert!(line.starts_with("audit, react, prefix=/app/, "), "{line}");
    // Eager compile: the leader compiled the component before proposing it, and each
    // follower compiles it while applying the install, before the binding takes effect.
    wait_for(
        "both followers to compile the plugin",
        Duration::from_secs(20),
        || {
            let compiled = cluster
                .nodes
                .iter()
                .filter(|n| {
                    n.log_text()
                        .contains("compiled plugin ahead of its binding")
                })
                .count();
            (compiled == 2).then_some(())
        },
    );
    let client = cluster.root_client();

    // Every write to the records, to see each one written exactly once.
    let mut records_watch = client
        .watch("/audit/")
        .prefix()
        .await
        .expect("watch the records");

    let start = client
        .put("/app/k0", "v0")
        .await
        .expect("put")
        .header
        .revision;
    for i in 1..30 {
        client
            .put(format!("/app/k{}", i % 7), format!("v{i}"))
            .await
            .expect("put");
        if i % 10 == 0 {
            client.put("/outside", "x").await.expect("put outside");
        }
    }
    client.delete("/app/k3").await.expect("delete");
    client
        .txn()
        .and_then([
            TxnOp::put("/app/t1", "a"),
            TxnOp::put("/app/t2", "b"),
            TxnOp::delete("/app/k4"),
        ])
        .await
        .expect("txn");
    client
        .delete("/app/k")
        .prefix()
        .await
        .expect("delete range");
    let fence = client
        .put("/app/fence", "end")
        .await
        .expect("put")
        .header
        .revision;
    await_record(&client, "/audit/", fence).await;

    let records = audit_records(&client, "/audit/").await;
    let history = committed_changes(&client, "/app/", start, fence).await;
    assert_eq!(
        history.len(),
        40,
        "30 puts, a delete, a txn of 3, a delete of 5, the fence"
    );
    assert_eq!(records, history, "one record per change, in commit order");

    // Each record was written once: as many puts of distinct keys as records, nothing else.
    let mut written = HashSet::new();
    while written.len() < records.len() {
        let resp = tokio::time::timeout(Duration::from_secs(20), records_watch.next())
            .await
            .expect("record events arrive")
            .expect("watch open")
            .expect("watch response");
        for e in resp.events {
            assert_eq!(e.kind, EventType::Put, "{e:?}");
            let key = String::from_utf8_lossy(&e.kv.key).into_owned();
            assert!(written.insert(key.clone()), "{key} written twice");
        }
    }
    let line = list_line(&cluster, "audit");
    assert!(checkpoint_of(&line) >= fence, "{line}");
    assert!(line.contains(", failures=0, "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_is_not_triggered_by_its_own_writes() {
    let cluster = Cluster::new(3, &[]);
    // The records go under the prefix the reactor watches.
    install_audit_log(&cluster, "audit", "/", Some("/audit/"));
    let client = cluster.root_client();
    let start = client.put("/x/0", "0").await.expect("put").header.revision;
    for i in 1..5 {
        client.put(format!("/x/{i}"), "v").await.expect("put");
    }
    let fence = client
        .put("/x/fence", "1")
        .await
        .expect("put")
        .header
        .revision;
    await_record(&client, "/audit/", fence).await;
    // Every record written so far committed before this second fence; once its record
    // exists the reactor has handled every revision up to it, its own included.
    let fence2 = client
        .put("/x/fence2", "2")
        .await
        .expect("put")
        .header
        .revision;
    await_record(&client, "/audit/", fence2).await;

    let records = audit_records(&client, "/audit/").await;
    let audited: Vec<&str> = records.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(
        audited,
        [
            "/x/0",
            "/x/1",
            "/x/2",
            "/x/3",
            "/x/4",
            "/x/fence",
            "/x/fence2"
        ],
        "{records:?}"
    );
    assert_eq!(records[0].0, start);
    // The checkpoint key is etch's: clients may not write it, and do not see it.
    let err = client
        .put("\0etch/reactor/audit/checkpoint", "1")
        .await
        .expect_err("reserved");
    assert!(
        matches!(&err, Error::Server(ServerError::InvalidArgument(m)) if m.contains("reserved")),
        "{err:?}"
    );
    let user_keys = client.get("").prefix().count_only().await.expect("count");
    assert_eq!(
        user_keys.count,
        7 + records.len() as i64,
        "the /x/ keys and records only"
    );
    let all = client.get("").prefix().keys_only().await.expect("range");
    assert!(
        all.kvs.iter().all(|kv| !kv.key.starts_with(b"\0")),
        "{:?}",
        all.kvs
    );
    // `del "" --prefix`, the usual way to wipe a store, empties the user's key space and
    // leaves the reactor's checkpoint: the next change is recorded after it.
    let out = ok_stdout(&cluster.etchctl(&["del", "", "--prefix"]));
    assert_eq!(out, format!("{}\n", user_keys.count));
    assert!(checkpoint_of(&list_line(&cluster, "audit")) >= fence2);
    let after = client
        .put("/x/after", "1")
        .await
        .expect("put")
        .header
        .revision;
    await_record(&client, "/audit/", after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_loses_nothing_across_a_leader_kill() {
    let mut cluster = Cluster::new(3, &[]);
    install_audit_log(&cluster, "audit", "/app/", Some("/audit/"));
    let start = cluster
        .root_client()
        .put("/app/start", "0")
        .await
        .expect("put")
        .header
        .revision;

    // A writer that keeps going through the failover (its errors are expected then).
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint()).collect();
        let tls = cluster.client_tls("root");
        tokio::spawn(async move {
            let opts = ClientOptions::new(endpoints, tls).request_timeout(Duration::from_secs(5));
            let client = Client::new(opts).expect("client");
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if client
                    .put(format!("/app/w{}", i % 13), format!("{i}"))
                    .await
                    .is_ok()
                {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let wait_acked = |n: usize| {
        let acked = acked.clone();
        async move {
            let what = format!("{n} acknowledged writes");
            wait_for_async(&what, Duration::from_secs(60), || async {
                (acked.load(Ordering::Relaxed) >= n).then_some(())
            })
            .await;
        }
    };
    wait_acked(40).await;
    let leader = cluster.leader_index();
    cluster.nodes[leader].kill();
    let before = acked.load(Ordering::Relaxed);
    wait_acked(before + 40).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");

    let live: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| cluster.nodes[i].endpoint())
        .collect();
    let opts = ClientOptions::new(live, cluster.client_tls("root"))
        .request_timeout(Duration::from_secs(10));
    let client = Client::new(opts).expect("client");
    let fence = client
        .put("/app/fence", "end")
        .await
        .expect("put")
        .header
        .revision;
    await_record(&client, "/audit/", fence).await;

    // At least once: every committed change has its record (a change delivered twice
    // rewrote the same record), and nothing else is recorded.
    let records = audit_records(&client, "/audit/").await;
    let history = committed_changes(&client, "/app/", start, fence).await;
    assert!(history.len() > 80, "{}", history.len());
    let missing: Vec<&Change> = history.iter().filter(|c| !records.contains(c)).collect();
    assert!(missing.is_empty(), "changes without a record: {missing:?}");
    assert_eq!(records, history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_reactor_is_reported_and_retried_while_the_cluster_serves() {
    let cluster = Cluster::new(3, &[]);
    // With an empty audit-prefix its `init` fails, and so every batch.
    install_audit_log(&cluster, "audit", "/app/", Some(""));
    let client = cluster.root_client();
    let rev = client
        .put("/app/a", "1")
        .await
        .expect("put")
        .header
        .revision;
    let line = wait_for("two failed attempts", Duration::from_secs(30), || {
        let line = list_line(&cluster, "audit");
        let failures: u64 = line
            .split(", ")
            .find_map(|f| f.strip_prefix("failures="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (failures >= 2).then_some(line)
    });
    assert!(
        line.contains("last-error=init failed: audit-prefix may not be empty"),
        "{line}"
    );
    assert_eq!(checkpoint_of(&line), 0, "{line}");
    // The cluster serves meanwhile.
    client
        .put("/app/b", "2")
        .await
        .expect("put while the reactor fails");
    assert_eq!(client.get("/app/a").await.expect("get").count, 1);

    // Fixing the binding delivers what was held back: nothing was skipped. Without the
    // setting the records go under `/audit` + the binding's prefix, which the reactor asks
    // the node for (contract 0.2.0).
    install_audit_log(&cluster, "audit", "/app/", None);
    await_record(&client, "/audit/app/", rev).await;
    let records = audit_records(&client, "/audit/app/").await;
    assert_eq!(records[0], (rev, 0, "put".to_owned(), "/app/a".to_owned()));
    assert_eq!(records.len(), 2, "{records:?}");
}

/// A node that joined after the plugin was installed gets the component and its binding in
/// a snapshot (the log behind it is purged), compiles it, and enforces the binding once it
/// is the only member left, and so the leader.
#[test]
fn a_node_that_joined_later_enforces_the_binding_as_leader() {
    let wasm = plugin_wasm("json-schema");
    let wasm = wasm.to_str().expect("utf-8 path");
    let snapshots = ["--snapshot-count", "20", "--snapshot-catchup-entries", "5"];
    let mut cluster = Cluster::new(1, &snapshots);
    let out = ok_stdout(&cluster.etchctl(&[
        "plugin", "install", "schema", wasm, "--prefix", "/svc/", "--hook", "validate", "--config",
        SCHEMA,
    ]));
    assert!(out.starts_with("Plugin schema installed"), "{out}");
    // Enough writes for snapshots, so that the newcomer cannot catch up from the log.
    for i in 0..60 {
        ok_stdout(&cluster.etchctl(&["put", &format!("/other/{i}"), "x"]));
    }

    let added = cluster.add_learner("n2");
    assert!(added.contains("added as learner"), "{added}");
    let id_of = |cluster: &Cluster, name: &str| {
        let list = ok_stdout(&cluster.etchctl(&["member", "list"]));
        let line = (list.lines())
            .find(|l| l.contains(&format!(", {name},")))
            .unwrap_or_else(|| panic!("{name} listed:\n{list}"))
            .to_owned();
        line.split(',').next().expect("id").trim().to_owned()
    };
    let n2_id = id_of(&cluster, "n2");
    wait_for("n2 to be promoted", Duration::from_secs(30), || {
        (cluster
            .etchctl(&["member", "promote", &n2_id])
            .status
            .success())
        .then_some(())
    });
    assert!(
        cluster.nodes[1].log_text().contains("installing snapshot"),
        "n2 caught up by snapshot"
    );

    // n1 leaves; n2, alone, leads and must judge writes itself.
    let n1_id = id_of(&cluster, "n1");
    ok_stdout(&cluster.etchctl(&["member", "remove", &n1_id]));
    cluster.nodes[0].kill();
    let tls = cluster.client_tls("root");
    let n2 = cluster.nodes[1].endpoint();
    wait_for("n2 to take writes", Duration::from_secs(30), || {
        let out = etchctl_with(&n2, &tls, &["put", "/svc/ok", r#"{"host":"h"}"#]);
        out.status.success().then_some(())
    });
    let status = ok_stdout(&etchctl_with(&n2, &tls, &["endpoint", "status"]));
    assert!(status.contains(", true, false,"), "n2 leads: {status}");
    let err = stderr(&etchctl_with(
        &n2,
        &tls,
        &["put", "/svc/bad", r#"{"port":1}"#],
    ));
    assert!(
        err.contains("rejected by plugin schema: /svc/bad: $.host is required"),
        "{err}"
    );
}

/// A plugin author's path from an empty directory, as docs/plugins.md tells it:
/// `etch-plugin new` for a validator and a reactor, their native tests, `etch-plugin build`,
/// then `etchctl plugin install` with the command it printed; the validator refuses with
/// its reason and the reactor counts. The crates build with the toolchain the repository
/// pins, in a target directory of their own beside the workspace's (built once per
/// checkout).
#[test]
fn a_new_plugin_crate_builds_and_installs_from_an_empty_directory() {
    let empty = tempfile::tempdir().expect("tempdir");
    let target = etch_tests::bin("etch-plugin")
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the target directory")
        .join("plugin-template");
    let toolchain = pinned_toolchain();
    let run = |program: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            .current_dir(empty.path())
            .env("RUSTUP_TOOLCHAIN", &toolchain)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tool = etch_tests::bin("etch-plugin");
    let target_arg = target.to_str().expect("utf-8 path");
    // The crate's native tests: the validator has two, the reactor one.
    let cargo_test = |manifest: &str, tests: usize| {
        let args = [
            "test",
            "--manifest-path",
            manifest,
            "--target-dir",
            target_arg,
        ];
        let tested = run(std::path::Path::new("cargo"), &args);
        assert!(
            tested.contains(&format!("{tests} passed")),
            "{manifest}: {tested}"
        );
    };
    let mut built = BTreeMap::new();
    for (name, kind, tests) in [("my-check", "--validator", 2), ("my-count", "--reactor", 1)] {
        run(&tool, &["new", name, kind]);
        let manifest = format!("{name}/Cargo.toml");
        cargo_test(&manifest, tests);
        let out = run(
            &tool,
            &[
                "build",
                "--manifest-path",
                &manifest,
                "--target-dir",
                target_arg,
            ],
        );
        // "built NAME, a KIND (N bytes): PATH" then "  install: etchctl plugin install ...".
        let install = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("install: etchctl "))
            .unwrap_or_else(|| panic!("no install line in {out}"))
            .replace("/PREFIX/", "/config/");
        built.insert(name, install);
    }

    // docs/plugins.md's snippets, each plugin with its tests, in crates of their own.
    let blocks = doc_rust_blocks();
    assert_eq!(
        blocks.len(),
        4,
        "docs/plugins.md: a validator, its tests, a reactor, its tests"
    );
    for (name, kind, code) in [
        ("no-empty", "--validator", [&blocks[0], &blocks[1]]),
        ("counter", "--reactor", [&blocks[2], &blocks[3]]),
    ] {
        run(&tool, &["new", name, kind]);
        let lib = empty.path().join(name).join("src/lib.rs");
        std::fs::write(&lib, code.map(String::as_str).join("\n")).expect("write lib.rs");
        cargo_test(&format!("{name}/Cargo.toml"), 1);
    }

    let cluster = Cluster::new(1, &[]);
    // The wrong ways first, each refused with what to do: the raw module of a plain cargo
    // build, a reactor as a validator, a component over the request size limit.
    let module = target.join("wasm32-unknown-unknown/release/my_check.wasm");
    let module = module.to_str().expect("utf-8 path");
    let err = stderr(&cluster.etchctl(&[
        "plugin", "install", "raw", module, "--prefix", "/x/", "--hook", "validate",
    ]));
    assert!(err.contains("core WebAssembly module"), "{err}");
    assert!(err.contains("etch-plugin build"), "{err}");
    let reactor: Vec<&str> = built["my-count"].split(' ').collect();
    let as_validator: Vec<&str> = reactor
        .iter()
        .map(|a| if *a == "react" { "validate" } else { a })
        .collect();
    let err = stderr(&cluster.etchctl(&as_validator));
    assert!(
        err.contains("this component is a reactor: install it with `--hook react`"),
        "{err}"
    );
    let mut small = vec!["--max-request-bytes", "1024"];
    small.extend(reactor.iter().copied());
    let err = stderr(&cluster.etchctl(&small));
    assert!(
        err.contains("over the request size limit of 1024 bytes"),
        "{err}"
    );
    assert!(err.contains("--max-request-bytes"), "{err}");

    let mut install: Vec<&str> = built["my-check"].split(' ').collect();
    install.extend(["--config", "max-value-bytes=4"]);
    ok_stdout(&cluster.etchctl(&install));
    let mut install: Vec<&str> = built["my-count"].split(' ').collect();
    install.extend(["--config", "counter=/counts/n"]);
    ok_stdout(&cluster.etchctl(&install));

    let refused = cluster.etchctl(&["put", "/config/a", "12345"]);
    let err = stderr(&refused);
    assert!(err.contains("too-large"), "{err}");
    assert!(err.contains("over the limit of 4"), "{err}");
    ok_stdout(&cluster.etchctl(&["put", "/config/a", "1234"]));
    ok_stdout(&cluster.etchctl(&["put", "/config/b", "1"]));
    wait_for("the reactor's count", Duration::from_secs(20), || {
        let out = cluster.etchctl(&["get", "/counts/n", "--print-value-only"]);
        (String::from_utf8_lossy(&out.stdout) == "2\n").then_some(())
    });

    // The template's `init` (contract 0.2.0) refuses a setting it cannot use: every write
    // under that binding fails closed, saying why.
    let bad = built["my-check"]
        .replacen("install my-check ", "install bad-check ", 1)
        .replace("/config/", "/bad/");
    let mut install: Vec<&str> = bad.split(' ').collect();
    install.extend(["--config", "max-value-bytes=lots"]);
    ok_stdout(&cluster.etchctl(&install));
    let err = stderr(&cluster.etchctl(&["put", "/bad/a", "1"]));
    assert!(
        err.contains(
            "plugin bad-check failed: init failed: max-value-bytes=\"lots\" is not a number"
        ),
        "{err}"
    );
}

/// The Rust code blocks of docs/plugins.md, in order.
fn doc_rust_blocks() -> Vec<String> {
    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/plugins.md");
    let text = std::fs::read_to_string(doc).expect("docs/plugins.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```rust") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The toolchain `rust-toolchain.toml` pins (`channel = "..."`).
fn pinned_toolchain() -> String {
    let pin = concat!(env!("CARGO_MANIFEST_DIR"), "/../rust-toolchain.toml");
    let text = std::fs::read_to_string(pin).expect("rust-toolchain.toml");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .map(|c| c.trim_matches('"').to_owned())
        .expect("a channel in rust-toolchain.toml")
}

/// A validator written in C (plugins/c-no-empty, built by scripts/build-plugins with
/// Debian's clang and lld, the canonical ABI by hand) is installed and judges writes like a
/// Rust one: the contract is the WIT, not the language.
#[test]
fn a_validator_written_in_c_refuses_empty_values() {
    let wasm = plugin_wasm("c-no-empty");
    let wasm = wasm.to_str().expect("utf-8 path");
    let cluster = Cluster::new(1, &[]);
    let out = ok_stdout(&cluster.etchctl(&[
        "plugin", "install", "no-empty", wasm, "--prefix", "/cfg/", "--hook", "validate",
    ]));
    assert!(out.starts_with("Plugin no-empty installed"), "{out}");
    ok_stdout(&cluster.etchctl(&["put", "/cfg/a", "1"]));
    let err = stderr(&cluster.etchctl(&["put", "/cfg/b", ""]));
    assert!(
        err.contains("rejected by plugin no-empty: /cfg/b: empty values are refused (code empty)"),
        "{err}"
    );
    // Outside its prefix, and in a txn whose other op is refused, as for any validator.
    ok_stdout(&cluster.etchctl(&["put", "/other/c", ""]));
    let txn = cluster.etchctl_stdin(&["txn"], "\nput /cfg/c 1\nput /cfg/d \"\"\n\n");
    let err = stderr(&txn);
    assert!(err.contains("/cfg/d: empty values are refused"), "{err}");
    assert_eq!(
        ok_stdout(&cluster.etchctl(&["get", "/cfg/", "--prefix", "--keys-only"])),
        "/cfg/a\n\n"
    );
}

/// A reactor whose batch keeps failing (audit-log with an empty setting) is parked after
/// `--park-after` failures in a row, shown as such and no longer called; `plugin reset`
/// moves its checkpoint past the batch and unparks it, and it is called again for what
/// comes after. Resetting a validator, or to a revision that does not exist yet, and
/// parking a validator are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_reactor_is_reported_and_moved_on_by_a_reset() {
    let cluster = Cluster::new(1, &[]);
    let wasm = plugin_wasm("audit-log");
    let wasm = wasm.to_str().expect("utf-8 path");
    let install = |extra: &[&str]| {
        let mut args = vec![
            "plugin", "install", "audit", wasm, "--prefix", "/app/", "--hook", "react",
        ];
        args.extend(extra);
        cluster.etchctl(&args)
    };
    ok_stdout(&install(&[
        "--park-after",
        "2",
        "--config",
        "audit-prefix=",
    ]));
    let client = cluster.root_client();
    let stuck = client
        .put("/app/a", "1")
        .await
        .expect("put")
        .header
        .revision;
    let field = |line: &str, name: &str| -> u64 {
        line.split(", ")
            .find_map(|f| f.strip_prefix(name))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let parked = wait_for("the reactor to be parked", Duration::from_secs(30), || {
        let line = list_line(&cluster, "audit");
        line.contains("status=parked").then_some(line)
    });
    assert!(parked.contains(", park-after=2, "), "{parked}");
    assert_eq!(field(&parked, "failures="), 2, "{parked}");
    assert_eq!(field(&parked, "calls="), 2, "{parked}");
    assert_eq!(checkpoint_of(&parked), 0, "{parked}");
    assert!(parked.contains("last-error=init failed"), "{parked}");

    let out = ok_stdout(&cluster.etchctl(&[
        "plugin",
        "reset",
        "audit",
        "--to-revision",
        &stuck.to_string(),
    ]));
    assert_eq!(
        out,
        format!("Plugin audit reset to revision {stuck} (was 0)\n")
    );
    let moved = wait_for("the reset to take", Duration::from_secs(30), || {
        let line = list_line(&cluster, "audit");
        (checkpoint_of(&line) == stuck && !line.contains("status=parked")).then_some(line)
    });
    assert_eq!(field(&moved, "calls="), 2, "nothing new to take: {moved}");
    // The next change is taken (and fails again: the setting is still empty).
    client.put("/app/b", "2").await.expect("put");
    wait_for("a call after the reset", Duration::from_secs(30), || {
        (field(&list_line(&cluster, "audit"), "calls=") > 2).then_some(())
    });

    let err = stderr(&cluster.etchctl(&["plugin", "reset", "audit", "--to-revision", "999999"]));
    assert!(
        err.contains("is not between 0 and the current revision"),
        "{err}"
    );
    let guard = plugin_wasm("guard");
    let guard = guard.to_str().expect("utf-8 path");
    ok_stdout(&cluster.etchctl(&[
        "plugin", "install", "g", guard, "--prefix", "/g/", "--hook", "validate",
    ]));
    let err = stderr(&cluster.etchctl(&["plugin", "reset", "g", "--to-revision", "1"]));
    assert!(err.contains("only a reactor has a checkpoint"), "{err}");
    let err = stderr(&cluster.etchctl(&[
        "plugin",
        "install",
        "g2",
        guard,
        "--prefix",
        "/g/",
        "--hook",
        "validate",
        "--park-after",
        "2",
    ]));
    assert!(err.contains("only a reactor can be parked"), "{err}");
}

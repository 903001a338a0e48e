//! Hostile plugins against the host side of a call, on a real node (issue 12, findings 6
//! and 7). Each plugin is a hand-written WAT module encoded as a component here, installed
//! with `etchctl`, and met with its typed outcome while the node serves on:
//!
//! - a validator looping on `kv.get` of large distinct keys fails (`PluginFailed`, the
//!   host-side memory cap) and the node's RSS stays bounded;
//! - a validator with a 70,000-byte key in `kv.get` fails typed (no panic);
//! - a validator flooding `log` leaves the node log small;
//! - a validator denying with a 1 MiB reason reaches the client with at most 4 KiB;
//! - a reactor staging 1,000 puts per batch is reported on `plugin list` while another
//!   reactor on the same prefix and plain writes go on; a revision too large for a reactor
//!   shows it `stalled`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etch_client::Error;
use etch_client::proto::Error as ServerError;
use etch_plugin_encode::wat;
use etch_tests::{Cluster, ok_stdout, wait_for, wait_for_async};

const ALLOW: &str = "(i32.store8 (i32.const 16) (i32.const 0)) (i32.const 16)";

/// A component of `world` from a core module in WAT.
fn encode(wat: &str, world: &str) -> Vec<u8> {
    wat::component(wat, world).expect("component")
}

/// A validator with `pages` of memory whose `validate` runs `body`.
fn validator(pages: u32, body: &str) -> Vec<u8> {
    encode(
        &format!(
            r#"(module
              (import "etch:plugin/kv@0.1.0" "get" (func $get (param i32 i32 i32)))
              (import "etch:plugin/log@0.1.0" "log" (func $log (param i32 i32 i32)))
              (memory (export "memory") {pages})
              (global $heap (mut i32) (i32.const 4096))
              (data (i32.const 100) "loud")
              CABI_REALLOC
              (func (export "validate") (param i32 i32 i32 i32 i64 i32 i32) (result i32)
                (local $i i32)
                {body}))"#
        ),
        "validator@0.1.0",
    )
}

/// A reactor whose `on-events` runs `body`; `$put` stages a write, `/out/` is at 100.
fn reactor(body: &str) -> Vec<u8> {
    encode(
        &format!(
            r#"(module
              (import "etch:plugin/kv-write@0.1.0" "put" (func $put (param i32 i32 i32 i32 i32)))
              (memory (export "memory") 1)
              (global $heap (mut i32) (i32.const 4096))
              (data (i32.const 100) "/out/")
              CABI_REALLOC
              (func (export "on-events") (param i32 i32) (result i32)
                (local $i i32)
                {body}))"#
        ),
        "reactor@0.1.0",
    )
}

/// Writes `wasm` beside the cluster and installs it as `name` on `prefix` with `extra`
/// flags.
fn install(cluster: &Cluster, name: &str, wasm: &[u8], prefix: &str, extra: &[&str]) {
    let path: PathBuf = cluster.dir.path().join(format!("{name}.wasm"));
    std::fs::write(&path, wasm).expect("write the component");
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec!["plugin", "install", name, path, "--prefix", prefix];
    args.extend_from_slice(extra);
    let out = ok_stdout(&cluster.etchctl(&args));
    assert!(
        out.starts_with(&format!("Plugin {name} installed")),
        "{out}"
    );
}

/// The resident set of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = (status.lines())
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

fn log_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The `plugin list` line of binding `name`.
fn list_line(cluster: &Cluster, name: &str) -> String {
    let list = ok_stdout(&cluster.etchctl(&["plugin", "list"]));
    (list.lines())
        .find(|l| l.starts_with(&format!("{name}, ")))
        .unwrap_or_default()
        .to_owned()
}

async fn plugin_failed(client: &etch_client::Client, key: &str) -> String {
    match client.put(key, "v").await {
        Err(Error::Server(ServerError::PluginFailed { cause, .. })) => cause,
        other => panic!("expected PluginFailed for {key}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_validators_fail_typed_and_the_node_stays_bounded() {
    let cluster = Cluster::single();
    let pid = cluster.nodes[0].pid().expect("running");
    let client = cluster.root_client();

    // 1. kv.get of 20,000 distinct 8 KiB keys in one call: 160 MB of read set before.
    let reader = format!(
        "(loop $l
           (i32.store (i32.const 32768) (local.get $i))
           (call $get (i32.const 32768) (i32.const 8192) (i32.const 48))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 20000))))
         {ALLOW}"
    );
    install(
        &cluster,
        "reader",
        &validator(1, &reader),
        "/read/",
        &["--timeout-ms", "5000"],
    );
    let before = rss(pid);
    for i in 0..8 {
        let cause = plugin_failed(&client, &format!("/read/{i}")).await;
        assert!(
            cause.starts_with("host-side memory cap exceeded: "),
            "{cause}"
        );
        assert!(cause.contains("read set"), "{cause}");
    }
    let after = rss(pid);
    assert!(
        after < before + (64 << 20),
        "RSS grew from {before} to {after} bytes"
    );

    // 2. A 70,000-byte key in kv.get: a typed failure, and the node serves on.
    let long = format!("(call $get (i32.const 4096) (i32.const 70000) (i32.const 48)) {ALLOW}");
    install(&cluster, "long", &validator(2, &long), "/long/", &[]);
    let cause = plugin_failed(&client, "/long/k").await;
    assert_eq!(
        cause,
        "invalid argument: kv.get: key of 70000 bytes exceeds the limit of 8192 bytes"
    );

    // 3. A log flood: 2,000 error lines of 64 KiB per call, five calls (640 MB before).
    let flood = format!(
        "(loop $l
           (call $log (i32.const 3) (i32.const 65536) (i32.const 65536))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 2000))))
         {ALLOW}"
    );
    install(
        &cluster,
        "noisy",
        &validator(2, &flood),
        "/noisy/",
        &["--timeout-ms", "5000"],
    );
    let log = find_log(cluster.dir.path());
    let size = log_size(&log);
    for i in 0..5 {
        client
            .put(format!("/noisy/{i}"), "v")
            .await
            .expect("allowed");
    }
    let grown = log_size(&log) - size;
    assert!(grown < 1 << 20, "the node log grew by {grown} bytes");
    // The count of dropped lines comes with the next line let through, once the bucket has
    // refilled (20 lines a second): a fast machine can run all five floods before that.
    let mut n = 5;
    wait_for_async("the flood to be reported", Duration::from_secs(20), || {
        n += 1;
        let key = format!("/noisy/{n}");
        let (client, text) = (&client, &cluster);
        async move {
            client.put(key, "v").await.expect("allowed");
            (text.nodes[0].log_text())
                .contains("plugin log lines suppressed")
                .then_some(())
        }
    })
    .await;

    // 4. A 1 MiB denial reason reaches the client cut to 4 KiB.
    let loud = "(memory.fill (i32.const 65536) (i32.const 120) (i32.const 1048576))
        (i32.store8 (i32.const 16) (i32.const 1))
        (i32.store (i32.const 20) (i32.const 100)) (i32.store (i32.const 24) (i32.const 4))
        (i32.store (i32.const 28) (i32.const 65536)) (i32.store (i32.const 32) (i32.const 1048576))
        (i32.const 16)";
    install(&cluster, "loud", &validator(20, loud), "/loud/", &[]);
    match client.put("/loud/k", "v").await {
        Err(Error::Server(ServerError::PluginRejected { code, reason, .. })) => {
            assert_eq!(code, "loud");
            assert!(reason.len() <= 4096, "a reason of {} bytes", reason.len());
            assert!(reason.ends_with("(1048576 bytes, cut)"), "{reason:.100}");
        }
        other => panic!("expected PluginRejected, got {other:?}"),
    }

    // The node serves on: a write outside every prefix, and it is still running.
    client.put("/plain", "v").await.expect("a plain write");
    assert!(
        rss(pid) < before + (64 << 20),
        "RSS after every attack: {} bytes",
        rss(pid)
    );
}

/// The node's log file in the cluster directory (`<name>.log`).
fn find_log(dir: &Path) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                return path;
            }
        }
    }
    panic!("no node log under {}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_staging_too_much_is_reported_and_others_go_on() {
    let cluster = Cluster::single();
    let client = cluster.root_client();
    // Stages /out/<i> for i in 0..1000 per batch, ignoring refusals, and returns ok.
    let flood = "(loop $l
           (i32.store (i32.const 105) (local.get $i))
           (call $put (i32.const 100) (i32.const 9) (i32.const 100) (i32.const 5) (i32.const 48))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
         (i32.store8 (i32.const 32) (i32.const 0)) (i32.const 32)";
    install(
        &cluster,
        "flood",
        &reactor(flood),
        "/in/",
        &["--hook", "react"],
    );
    // A well-behaved reactor on the same prefix: stages /out/ok = /out/.
    let good = "(i32.store (i32.const 105) (i32.const 0x6b6f)) 
        (call $put (i32.const 100) (i32.const 7) (i32.const 100) (i32.const 5) (i32.const 48))
        (i32.store8 (i32.const 32) (i32.const 0)) (i32.const 32)";
    install(
        &cluster,
        "good",
        &reactor(good),
        "/in/",
        &["--hook", "react"],
    );
    // Reactors with a 1 MiB cap take at most 512 KiB of events in one call.
    install(
        &cluster,
        "small",
        &reactor("(i32.store8 (i32.const 32) (i32.const 0)) (i32.const 32)"),
        "/big/",
        &["--hook", "react", "--memory-mb", "1"],
    );

    client
        .put("/in/a", "v")
        .await
        .expect("a write under both reactors");
    let line = wait_for(
        "the flooding reactor reported",
        Duration::from_secs(20),
        || {
            let line = list_line(&cluster, "flood");
            line.contains("last-error=staged writes exceed one transaction")
                .then_some(line)
        },
    );
    assert!(line.contains("status=retrying"), "{line}");
    assert!(line.contains("at most 127 writes"), "{line}");
    // The other reactor and plain writes are unaffected.
    wait_for("the good reactor's write", Duration::from_secs(20), || {
        let out = cluster.etchctl(&["get", "/out/ok"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("/out/")
            .then_some(())
    });
    client.put("/plain", "v").await.expect("a plain write");
    assert!(list_line(&cluster, "good").contains("status=ok"));

    // One revision of 4 x 300 KiB under /big/: more than the small reactor can take.
    let value = "x".repeat(300 << 10);
    let ops: Vec<etch_client::TxnOp> = (0..4)
        .map(|i| etch_client::TxnOp::put(format!("/big/{i}"), value.clone()))
        .collect();
    client.txn().and_then(ops).await.expect("a large txn");
    let line = wait_for("the small reactor stalled", Duration::from_secs(20), || {
        let line = list_line(&cluster, "small");
        line.contains("status=stalled").then_some(line)
    });
    assert!(line.contains("more than one call can take"), "{line}");
}

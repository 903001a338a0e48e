//! Hostile plugins against a real etchd: what a validator that never returns can no longer
//! do to the node (issue 12, finding 5). Each plugin is written in WAT here and encoded as
//! a component, as `etch-plugin build` does; each test names the typed outcome it expects.
//!
//! - an install above the node's maxima (an hour of deadline, all the fuel there is) is
//!   refused with `InvalidArgument` naming the flag;
//! - 24 writers into a looping validator each get `PluginFailed` (out of fuel, deadline, or
//!   not run when the plugin threads are full) while reads, leases, watches and writes
//!   outside its prefix go on being answered;
//! - removing the binding interrupts a call that would otherwise run for ten minutes;
//! - SIGTERM stops a node busy in such calls, and the data directory opens again.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etch_client::proto::Error as ServerError;
use etch_client::{Client, Error};
use etch_plugin_encode::wat;
use etch_tests::{Cluster, ok_stdout, wait_for, wait_for_async};

/// Writes the spinning validator into the cluster's directory.
fn spin_file(cluster: &Cluster) -> PathBuf {
    let path = cluster.dir.path().join("spin.wasm");
    let wasm = wat::component(wat::SPINNING_VALIDATOR, "validator@0.1.0").expect("component");
    std::fs::write(&path, wasm).expect("write spin.wasm");
    path
}

/// `etchctl plugin install spin FILE --prefix /spin/ ARGS...`.
fn install(cluster: &Cluster, wasm: &std::path::Path, args: &[&str]) -> std::process::Output {
    let wasm = wasm.to_str().expect("utf-8 path");
    let mut argv = vec!["plugin", "install", "spin", wasm, "--prefix", "/spin/"];
    argv.extend_from_slice(args);
    cluster.etchctl(&argv)
}

fn client(cluster: &Cluster, timeout: Duration) -> Client {
    Client::new(cluster.client_options("root").request_timeout(timeout)).expect("client")
}

#[test]
fn installs_above_the_node_maxima_are_refused_naming_the_flag() {
    let cluster = Cluster::single();
    let wasm = spin_file(&cluster);
    for (args, flag) in [
        (["--timeout-ms", "3600000"], "--plugin-max-timeout-ms"),
        (["--fuel", "18446744073709551615"], "--plugin-max-fuel"),
    ] {
        let out = install(&cluster, &wasm, &args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid argument"), "{err}");
        assert!(err.contains(flag), "{err}");
    }
    // At the maxima is fine; the node's own flag raises them.
    ok_stdout(&install(
        &cluster,
        &wasm,
        &["--timeout-ms", "2000", "--fuel", "1000000000"],
    ));
    let raised = Cluster::single_with(&["--plugin-max-timeout-ms", "3600000"]);
    let wasm = spin_file(&raised);
    ok_stdout(&install(&raised, &wasm, &["--timeout-ms", "3600000"]));
}

/// Whether `result` is the failure a write into the spinning validator may get.
fn spin_failure(result: &Result<etch_client::PutResponse, Error>) -> bool {
    matches!(result, Err(Error::Server(ServerError::PluginFailed { plugin, cause }))
        if plugin == "spin"
            && (cause == "out of fuel"
                || cause.starts_with("deadline of 2000 ms ")
                || cause.starts_with("not run: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_validator_under_24_writers_fails_typed_while_the_node_serves_on() {
    let cluster = Cluster::single();
    let wasm = spin_file(&cluster);
    // Limits a default node accepts (its maxima: 5 s, 1e9 fuel).
    ok_stdout(&install(
        &cluster,
        &wasm,
        &["--timeout-ms", "2000", "--fuel", "1000000000"],
    ));
    // A call may last ten times its 2 s deadline when its thread is starved of CPU (the
    // deadline counts CPU time), after up to 2.5 s in the queue: the client waits longer.
    let client = client(&cluster, Duration::from_secs(30));
    client.put("/calm/seed", "1").await.expect("seed");
    let mut watcher = client.watch("/calm/").prefix().await.expect("watch");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for i in 0..24 {
        let (client, stop, failures) = (client.clone(), stop.clone(), failures.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = client.put(format!("/spin/{i}"), "x").await;
                assert!(spin_failure(&result), "writer {i}: {result:?}");
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The validator is busy: some calls have already ended in their limits.
    wait_for_async("the first failed calls", Duration::from_secs(60), || {
        let n = failures.load(Ordering::Relaxed);
        async move { (n >= 8).then_some(()) }
    })
    .await;

    // Everything else is answered while the writers go on (before, reads, leases and
    // watches queued behind the calls on the blocking pool). The bound only keeps a stuck
    // node from hanging the test: how fast they are answered is measured by
    // `etch-bench hostile` (BENCHMARKS.md), never asserted here.
    let bound = Duration::from_secs(10);
    for round in 0..5 {
        let key = format!("/calm/{round}");
        let within = |what: &str| format!("{what} (round {round}) within {bound:?}");
        tokio::time::timeout(bound, client.put(key.as_str(), "v"))
            .await
            .unwrap_or_else(|_| panic!("{}", within("a put outside the prefix")))
            .expect("put outside the prefix");
        let got = tokio::time::timeout(bound, client.get(key.as_str()))
            .await
            .unwrap_or_else(|_| panic!("{}", within("a linearizable read")))
            .expect("get");
        assert_eq!(
            got.kvs.first().map(|kv| kv.value.clone()),
            Some(b"v".to_vec())
        );
        let event = tokio::time::timeout(bound, async {
            loop {
                let response = watcher.next().await.expect("watch open").expect("response");
                if let Some(event) = response.events.first() {
                    return event.kv.key.clone();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{}", within("a watch event")));
        assert_eq!(event, key.as_bytes());
        let lease = tokio::time::timeout(bound, client.lease_grant(30))
            .await
            .unwrap_or_else(|_| panic!("{}", within("a lease grant")))
            .expect("lease grant");
        assert!(lease.id != 0);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer
            .await
            .expect("every writer got a typed plugin failure");
    }
    let list = ok_stdout(&cluster.etchctl(&["plugin", "list"]));
    assert!(list.contains("spin, "), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_binding_interrupts_its_running_call() {
    let cluster = Cluster::single_with(&[
        "--plugin-max-timeout-ms",
        "600000",
        "--plugin-max-fuel",
        "18446744073709551615",
    ]);
    let wasm = spin_file(&cluster);
    ok_stdout(&install(
        &cluster,
        &wasm,
        &["--timeout-ms", "600000", "--fuel", "18446744073709551615"],
    ));
    let client = client(&cluster, Duration::from_secs(60));
    let put = {
        let client = client.clone();
        tokio::spawn(async move { client.put("/spin/a", "x").await })
    };
    let node = &cluster.nodes[0];
    wait_for("the call to start", Duration::from_secs(30), || {
        node.log_text().contains("spinning").then_some(())
    });
    ok_stdout(&cluster.etchctl(&["plugin", "remove", "spin"]));
    let result = put.await.expect("task");
    assert!(
        matches!(&result, Err(Error::Server(ServerError::PluginFailed { plugin, cause }))
            if plugin == "spin" && cause == "interrupted: the binding was removed or replaced"),
        "{result:?}"
    );
    // Nothing is bound any more.
    client.put("/spin/b", "x").await.expect("unbound put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_node_busy_in_a_looping_validator() {
    let mut cluster = Cluster::single_with(&[
        "--plugin-max-timeout-ms",
        "600000",
        "--plugin-max-fuel",
        "18446744073709551615",
    ]);
    let wasm = spin_file(&cluster);
    ok_stdout(&install(
        &cluster,
        &wasm,
        &["--timeout-ms", "600000", "--fuel", "18446744073709551615"],
    ));
    let client = client(&cluster, Duration::from_secs(60));
    client.put("/kept", "v").await.expect("put");
    let writers: Vec<_> = (0..12)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.put(format!("/spin/{i}"), "x").await })
        })
        .collect();
    let log_has_spinning = || cluster.nodes[0].log_text().contains("spinning");
    wait_for("a call to start", Duration::from_secs(30), || {
        log_has_spinning().then_some(())
    });
    // SIGTERM; `stop` waits (up to 20 s, against calls of ten minutes) for a clean exit.
    cluster.nodes[0].stop();
    for writer in writers {
        writer.abort();
    }
    // The data directory is free: the node starts on it again, with its data.
    let tls = cluster.client_tls("root");
    cluster.nodes[0].start(&tls);
    let got = client.get("/kept").await.expect("get after restart");
    assert_eq!(
        got.kvs.first().map(|kv| kv.value.clone()),
        Some(b"v".to_vec())
    );
}

//! etch-bench against real etchd processes: every workload runs and its `--json` output
//! parses with the counts asked for, with and without a validator plugin bound.
//! Request counts are tiny and no timing is asserted: figures belong in BENCHMARKS.md.

use std::process::{Command, Output};

use etch_tests::{Cluster, ok_stdout};
use serde_json::Value;

fn bench(cluster: &Cluster, args: &[&str]) -> Output {
    let tls = cluster.client_tls("root");
    Command::new(env!("CARGO_BIN_EXE_etch-bench"))
        .arg("--endpoints")
        .arg(cluster.endpoints())
        .arg("--cacert")
        .arg(&tls.ca)
        .arg("--cert")
        .arg(&tls.cert)
        .arg("--key")
        .arg(&tls.key)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run etch-bench")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "etch-bench failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn assert_complete(report: &Value, workload: &str, requests: u64) {
    assert_eq!(report["workload"], workload, "{report}");
    assert_eq!(report["requests"], requests, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["rps"].as_f64().is_some_and(|r| r > 0.0), "{report}");
    for p in ["min", "p50", "p90", "p99", "p99_9", "max"] {
        assert!(
            report["latency_ms"][p].as_f64().is_some(),
            "{p} missing: {report}"
        );
    }
}

#[test]
fn workloads_run_and_report_json() {
    let cluster = Cluster::single();
    let put = [
        "put",
        "--json",
        "--total",
        "40",
        "--clients",
        "4",
        "--conns",
        "2",
    ];
    let report = json(&bench(
        &cluster,
        &[&put[..], &["--sequential-keys", "--key-space-size", "10"]].concat(),
    ));
    assert_complete(&report, "put", 40);
    assert_eq!(report["params"]["conns"], 2);
    assert_eq!(report["params"]["key_size"], 8);

    // The puts wrote keys 00000000..00000009.
    for consistency in ["l", "s"] {
        let args = [
            "range",
            "00000000",
            "00000010",
            "--json",
            "--total",
            "20",
            "--clients",
            "2",
            "--consistency",
            consistency,
        ];
        let report = json(&bench(&cluster, &args));
        assert_complete(&report, "range", 20);
        assert_eq!(report["params"]["consistency"], consistency);
    }

    let args = [
        "txn-put",
        "--json",
        "--total",
        "10",
        "--txn-ops",
        "3",
        "--key-space-size",
        "100",
    ];
    let report = json(&bench(&cluster, &args));
    assert_complete(&report, "txn-put", 10);

    // Every watcher sees every put: 3 watchers x 5 puts.
    let args = [
        "watch-latency",
        "--json",
        "--watchers",
        "3",
        "--put-total",
        "5",
        "--put-rate",
        "50",
    ];
    let report = json(&bench(&cluster, &args));
    assert_complete(&report, "watch-latency", 15);

    // The text summary has etcd's shape.
    let out = bench(&cluster, &["put", "--total", "5"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for needle in [
        "Summary:",
        "Requests/sec:",
        "Latency distribution:",
        "99.9% in",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

/// `put --validator`: the plugin judges every put of the run (its call counter says so),
/// a value it refuses fails the run's requests with its reason, and the binding is gone
/// afterwards.
#[test]
fn validator_is_bound_for_the_run_and_removed_after() {
    let cluster = Cluster::single();
    let wasm = etch_tests::plugin_wasm("json-schema");
    let wasm = wasm.to_str().expect("utf-8 path");
    let schema = r#"schema={"type":"object","required":["v"]}"#;
    let args = [
        "put",
        "--json",
        "--total",
        "30",
        "--clients",
        "3",
        "--validator",
        wasm,
        "--validator-config",
        schema,
    ];
    let report = json(&bench(&cluster, &args));
    assert_complete(&report, "put", 30);
    assert_eq!(report["params"]["validator"], wasm);
    // The values are JSON documents of --val-size bytes.
    let value = ok_stdout(&cluster.etchctl(&["get", "00000000", "--print-value-only"]));
    assert_eq!(value.trim_end().len(), 256, "{value}");
    assert!(value.starts_with("{\"v\":\""), "{value}");
    let list = ok_stdout(&cluster.etchctl(&["plugin", "list"]));
    assert!(
        !list.contains("etch-bench"),
        "the binding outlived the run:\n{list}"
    );

    // A schema the values break: every request fails with the plugin's reason.
    let refusing = r#"schema={"type":"object","required":["missing"]}"#;
    let args = [
        "put",
        "--json",
        "--total",
        "5",
        "--validator",
        wasm,
        "--validator-config",
        refusing,
    ];
    let report = json(&bench(&cluster, &args));
    assert_eq!(report["errors"], 5, "{report}");
    let errors = report.to_string();
    assert!(
        errors.contains("etch-bench"),
        "the plugin's name in {errors}"
    );

    let out = bench(
        &cluster,
        &["put", "--validator", "missing.wasm", "--total", "1"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.wasm"), "{stderr}");
}

#[test]
fn suite_starts_a_cluster_and_reports_every_workload() {
    let out = Command::new(env!("CARGO_BIN_EXE_etch-bench"))
        .args(["--json", "suite", "--scale", "0.002", "--etchd"])
        .arg(etch_tests::bin("etchd"))
        .arg("--json-schema")
        .arg(etch_tests::plugin_wasm("json-schema"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run etch-bench suite");
    let report = json(&out);
    let workloads = report["workloads"].as_array().expect("workloads");
    let names: Vec<&str> = workloads
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "put1",
            "put100",
            "put100v",
            "getl",
            "gets",
            "range",
            "watch1000",
            "grow1",
            "grow2",
            "grow3"
        ],
        "{report}"
    );
    // A smoke run on a loaded machine: some requests may fail (a re-election under CPU
    // starvation); what matters here is that every workload ran and reported.
    for w in workloads {
        let requests = w["requests"].as_u64().expect("requests");
        let errors = w["errors"].as_u64().expect("errors");
        assert!(requests > 0 && errors < requests, "{w}");
    }
    let disk = report["disk_bytes_after_grow"].as_object().expect("disk");
    assert_eq!(disk.len(), 3, "{report}");
    assert!(
        disk.values()
            .all(|bytes| bytes.as_u64().is_some_and(|b| b > 0)),
        "{report}"
    );
    // The catch-up member reached the revision the cluster had when it was added.
    let catch_up = &report["catch_up"];
    assert!(
        catch_up["secs"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
    assert!(
        catch_up["revision"].as_i64().is_some_and(|r| r > 1),
        "{report}"
    );
    let rss = report["rss_kib_after_put"].as_object().expect("rss");
    assert_eq!(rss.len(), 3, "{report}");
    assert!(
        rss.values()
            .all(|kib| kib.as_u64().is_some_and(|kib| kib > 0)),
        "{report}"
    );
}

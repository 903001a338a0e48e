//! etcd client libraries nobody here wrote, against a real 3-node etch over the gRPC front
//! with mutual TLS: etcd3 for Node.js, from npm (`tests/clients/node`, installed by
//! scripts/test), runs `smoke.js` — put/get, a txn, prefixes, a delete, a watch, a lease with
//! a key, keep-alive and revoke, and the error of a compacted revision.

use std::process::Command;

use etch_tests::Cluster;

#[test]
fn the_node_etcd3_client_works_against_etch() {
    let cluster = Cluster::new(3, &[]);
    let root = cluster.client_tls("root");
    let endpoints: Vec<String> = (cluster.nodes.iter())
        .map(|n| format!("https://{}", n.endpoint()))
        .collect();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/node");
    let out = Command::new("node")
        .arg("--no-deprecation")
        .arg("smoke.js")
        .current_dir(dir)
        .env("ETCD_ENDPOINTS", endpoints.join(","))
        .env("ETCD_CA", &root.ca)
        .env("ETCD_CERT", &root.cert)
        .env("ETCD_KEY", &root.key)
        .output()
        .expect("node (scripts/test installs nodejs and the client under tests/clients/node)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "smoke.js failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let expected = serde_json::json!([
        {"step": "get", "value": "bar"},
        {"step": "txn", "value": {"succeeded": true, "value": "baz"}},
        {"step": "prefix", "value": {"node/p/a": "1", "node/p/b": "2"}},
        {"step": "count", "value": 3},
        {"step": "deleted", "value": ["node/p/b"]},
        {"step": "watch", "value": [["put", "1"], ["delete"]]},
        {"step": "lease-key", "value": "v"},
        {"step": "keepalive", "value": true},
        {"step": "revoked", "value": null},
        {"step": "lease-id", "value": true},
        {"step": "compacted", "value": "GRPCOutOfRangeError: 11 OUT_OF_RANGE: etcdserver: mvcc: required revision has been compacted"},
        {"step": "done", "value": true},
    ]);
    assert_eq!(serde_json::Value::Array(steps), expected);
}

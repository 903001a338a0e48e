//! The same etcdctl command lines against a real etcd and against etch, answer for answer.
//!
//! Debian's `etcd` (package etcd-server, 3.4, installed by scripts/test) runs on loopback
//! beside a single etch node; Debian's `etcdctl` runs each command of [`SCRIPT`] against
//! both, and what it prints (stdout, the `Error:` line, the exit status) must be the same.
//! Both stores start empty, so their revisions agree; `-w json` headers are compared
//! without the ids and term, which differ by nature.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use etch_proto::pki::TlsFiles;
use etch_tests::Cluster;

/// One etcdctl invocation: its arguments and what it reads on stdin.
struct Step {
    args: &'static [&'static str],
    stdin: &'static str,
}

const fn run(args: &'static [&'static str]) -> Step {
    Step { args, stdin: "" }
}

const fn with_stdin(args: &'static [&'static str], stdin: &'static str) -> Step {
    Step { args, stdin }
}

/// Writes, sorted and filtered reads, put's ignore flags, txns, errors, compaction.
const SCRIPT: &[Step] = &[
    run(&["put", "a", "3"]),
    run(&["put", "b", "1"]),
    run(&["put", "c", "2"]),
    run(&["put", "b", "4"]),
    run(&["put", "dir/x", "x"]),
    run(&["put", "dir/y", "y"]),
    run(&["get", "a", "--from-key"]),
    run(&[
        "get",
        "a",
        "--from-key",
        "--sort-by=value",
        "--order=descend",
        "--limit=2",
    ]),
    run(&["get", "a", "--from-key", "--sort-by=VERSION"]),
    run(&[
        "get",
        "a",
        "--from-key",
        "--sort-by=key",
        "--order=DESCEND",
        "--keys-only",
    ]),
    run(&[
        "get",
        "a",
        "--from-key",
        "--sort-by=modify",
        "--order=ascend",
        "--limit=3",
    ]),
    run(&[
        "get",
        "a",
        "--from-key",
        "--sort-by=create",
        "--order=descend",
        "-w",
        "json",
    ]),
    run(&[
        "get",
        "a",
        "--from-key",
        "--sort-by=value",
        "--keys-only",
        "-w",
        "json",
    ]),
    run(&["get", "dir/", "--prefix", "--limit=1", "-w", "json"]),
    run(&[
        "get",
        "",
        "--prefix",
        "--limit=1",
        "--keys-only",
        "-w",
        "json",
    ]),
    run(&[
        "get",
        "a",
        "--from-key",
        "--print-value-only",
        "--order=descend",
    ]),
    run(&[
        "get",
        "a",
        "--from-key",
        "--rev=4",
        "--sort-by=value",
        "--consistency=s",
    ]),
    run(&["put", "leased", "v", "--lease=1234"]),
    run(&["put", "a", "--ignore-value"]),
    run(&["get", "a", "-w", "json"]),
    run(&["put", "a", "9", "--ignore-lease", "--prev-kv"]),
    run(&["put", "nope", "--ignore-value"]),
    run(&["put", "nope", "v", "--ignore-lease"]),
    run(&["put", "", "v"]),
    run(&["get", "a", "--rev=1000"]),
    with_stdin(
        &["txn"],
        "value(\"a\") = \"9\"\n\nput x 1\nget a\n\nput y 2\n\n",
    ),
    with_stdin(
        &["txn", "-w", "json"],
        "version(\"zz\") > \"0\"\n\nput x 2\n\nget a\nget dir/ --prefix --keys-only\n\n",
    ),
    with_stdin(&["txn"], "\nput k 1\nput k 2\n\n\n"),
    with_stdin(
        &["txn"],
        "mod(\"a\") < \"100\"\n\ndel dir/ --prefix --prev-kv\nput dir/z z\n\n\n",
    ),
    run(&["del", "a", "--prev-kv"]),
    run(&["del", "zz"]),
    run(&["compact", "3"]),
    run(&["get", "b", "--rev=2"]),
    run(&["get", "b", "--rev=3", "-w", "json"]),
    run(&["del", "", "--prefix"]),
    run(&["get", "", "--prefix", "-w", "json"]),
    // Users and roles (authorization stays as each store has it: off in etcd, on in etch
    // for the root user the commands run as).
    run(&["user", "add", "alice", "--no-password"]),
    run(&["user", "add", "alice", "--no-password"]),
    run(&["user", "add", "", "--no-password"]),
    run(&["role", "add", "ops"]),
    run(&["role", "add", "ops"]),
    run(&[
        "role",
        "grant-permission",
        "ops",
        "readwrite",
        "/app/",
        "--prefix",
    ]),
    run(&["role", "grant-permission", "ops", "read", "/cfg"]),
    run(&["role", "get", "ops"]),
    run(&["role", "get", "nope"]),
    run(&["user", "grant-role", "alice", "ops"]),
    run(&["user", "grant-role", "alice", "ops"]),
    run(&["user", "grant-role", "alice", "nope"]),
    run(&["user", "get", "alice"]),
    run(&["user", "get", "nobody"]),
    run(&["role", "revoke-permission", "ops", "/app/", "--prefix"]),
    run(&["role", "revoke-permission", "ops", "/nothing"]),
    run(&["user", "revoke-role", "alice", "ops"]),
    run(&["user", "revoke-role", "alice", "ops"]),
    run(&["user", "delete", "alice"]),
    run(&["user", "delete", "alice"]),
    run(&["role", "delete", "ops"]),
];

/// What a run of etcdctl said, made comparable.
#[derive(Debug, PartialEq, Eq)]
struct Said {
    status: Option<i32>,
    stdout: String,
    /// The `Error:` lines (etcdctl's gRPC retry logs, with times, are left out).
    errors: Vec<String>,
}

fn said(out: &Output) -> Said {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stdout = match serde_json::from_str::<serde_json::Value>(&stdout) {
        Ok(mut json) => {
            mask_ids(&mut json);
            format!("{json}\n")
        }
        Err(_) => stdout,
    };
    Said {
        status: out.status.code(),
        stdout,
        errors: String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("Error:"))
            .map(str::to_owned)
            .collect(),
    }
}

/// Zeroes the fields of a header that name a cluster, a member or a term.
fn mask_ids(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::Object(map) => {
            for (name, value) in map.iter_mut() {
                if ["cluster_id", "member_id", "raft_term"].contains(&name.as_str()) {
                    *value = serde_json::Value::from(0);
                } else {
                    mask_ids(value);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_ids),
        _ => {}
    }
}

fn etcdctl(endpoint_args: &[String], step: &Step) -> Output {
    let mut args = endpoint_args.to_vec();
    args.extend(["--dial-timeout=5s".into(), "--command-timeout=10s".into()]);
    args.extend(step.args.iter().map(|a| (*a).to_owned()));
    etch_tests::etcdctl_output(&args, step.stdin)
}

/// A single-member etcd on loopback ports, in a temporary directory; killed on drop.
struct Etcd {
    child: Child,
    client_url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let client_url = format!("http://127.0.0.1:{}", etch_tests::free_port());
        let peer_url = format!("http://127.0.0.1:{}", etch_tests::free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "diff"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("diff={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server; scripts/test installs it)");
        let etcd = Etcd {
            child,
            client_url,
            _dir: dir,
        };
        let args = etcd.args();
        etch_tests::wait_for("etcd to serve", Duration::from_secs(30), || {
            let health = etcdctl(&args, &run(&["endpoint", "health"]));
            health.status.success().then_some(())
        });
        etcd
    }

    fn args(&self) -> Vec<String> {
        vec![format!("--endpoints={}", self.client_url)]
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn etcdctl_prints_the_same_against_etch_as_against_etcd() {
    let etcd = Etcd::start();
    let cluster = Cluster::single();
    let tls = cluster.client_tls("root");
    let ca = TlsFiles::in_dir(&cluster.certs.dir, "root").ca;
    let etch_args = vec![
        format!("--endpoints=https://{}", cluster.nodes[0].endpoint()),
        format!("--cacert={}", ca.display()),
        format!("--cert={}", tls.cert.display()),
        format!("--key={}", tls.key.display()),
    ];
    let mut differences = Vec::new();
    for step in SCRIPT {
        let from_etcd = said(&etcdctl(&etcd.args(), step));
        let from_etch = said(&etcdctl(&etch_args, step));
        if from_etcd != from_etch {
            differences.push(format!(
                "etcdctl {:?} (stdin {:?}):\n  etcd: {from_etcd:?}\n  etch: {from_etch:?}",
                step.args, step.stdin
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} commands differ:\n{}",
        differences.len(),
        SCRIPT.len(),
        differences.join("\n")
    );
}

//! etcd's own command-line client against etch: Debian's `etcdctl` (package etcd-client,
//! etcd 3.4, installed by scripts/test) talks to a real 3-node etch through the gRPC front
//! with mutual TLS, and prints what it prints against etcd.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use etch_proto::pki::TlsFiles;
use etch_tests::Cluster;

/// etcdctl's arguments to reach every node of `cluster` as the holder of `tls`.
fn base_args(cluster: &Cluster, tls: Option<&TlsFiles>) -> Vec<String> {
    let endpoints: Vec<String> = (cluster.nodes.iter())
        .map(|n| format!("https://{}", n.endpoint()))
        .collect();
    args_to(cluster, &endpoints.join(","), tls)
}

/// etcdctl's arguments to reach node `i` of `cluster` alone as the holder of `tls`.
fn node_args(cluster: &Cluster, i: usize, tls: Option<&TlsFiles>) -> Vec<String> {
    args_to(
        cluster,
        &format!("https://{}", cluster.nodes[i].endpoint()),
        tls,
    )
}

fn args_to(cluster: &Cluster, endpoints: &str, tls: Option<&TlsFiles>) -> Vec<String> {
    let mut args = vec![
        format!("--endpoints={endpoints}"),
        "--dial-timeout=5s".into(),
        "--command-timeout=10s".into(),
    ];
    let ca = TlsFiles::in_dir(&cluster.certs.dir, "root").ca;
    args.push(format!("--cacert={}", ca.display()));
    if let Some(tls) = tls {
        args.push(format!("--cert={}", tls.cert.display()));
        args.push(format!("--key={}", tls.key.display()));
    }
    args
}

/// etcdctl with `base` arguments, then `args`.
fn etcdctl_with(base: Vec<String>, args: &[&str], stdin: &str) -> Output {
    let mut all = base;
    all.extend(args.iter().map(|a| (*a).to_owned()));
    etch_tests::etcdctl_output(&all, stdin)
}

fn etcdctl_as(cluster: &Cluster, tls: Option<&TlsFiles>, args: &[&str], stdin: &str) -> Output {
    etcdctl_with(base_args(cluster, tls), args, stdin)
}

fn etcdctl(cluster: &Cluster, args: &[&str]) -> String {
    let out = etcdctl_as(cluster, Some(&cluster.client_tls("root")), args, "");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn etcdctl_fails(cluster: &Cluster, tls: Option<&TlsFiles>, args: &[&str]) -> String {
    let out = etcdctl_as(cluster, tls, args, "");
    assert!(!out.status.success(), "etcdctl {args:?} succeeded: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `etcdctl watch ARGS` as the holder of `tls`, which must end by itself within 20 s
/// (not hang); its output, stdout then stderr.
fn watch_that_ends(cluster: &Cluster, tls: &TlsFiles, args: &[&str]) -> String {
    let watched = Command::new("timeout")
        .args(["20", "etcdctl"])
        .env("ETCDCTL_API", "3")
        .args(base_args(cluster, Some(tls)))
        .arg("watch")
        .args(args)
        .output()
        .expect("etcdctl watch");
    assert_ne!(
        watched.status.code(),
        Some(124),
        "etcdctl watch hung: {watched:?}"
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&watched.stdout),
        String::from_utf8_lossy(&watched.stderr)
    )
}

/// The revision of the store, as `get -w json` reports it.
fn revision(cluster: &Cluster) -> i64 {
    let json: serde_json::Value =
        serde_json::from_str(&etcdctl(cluster, &["get", "-w", "json", "none"])).expect("json");
    json["header"]["revision"].as_i64().expect("a revision")
}

#[test]
fn etcdctl_reads_writes_txns_compacts_and_lists_through_the_grpc_front() {
    let cluster = Cluster::new(3, &[]);
    assert_eq!(etcdctl(&cluster, &["put", "foo", "bar"]), "OK\n");
    let first = revision(&cluster);
    assert_eq!(etcdctl(&cluster, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(etcdctl(&cluster, &["put", "foo2", "x"]), "OK\n");
    assert_eq!(
        etcdctl(&cluster, &["get", "foo", "--prefix", "--keys-only"]),
        "foo\n\nfoo2\n\n"
    );
    let listed: serde_json::Value = serde_json::from_str(&etcdctl(
        &cluster,
        &["get", "foo", "--prefix", "--limit=1", "-w", "json"],
    ))
    .expect("json");
    assert_eq!(listed["count"], 2, "{listed}");
    assert_eq!(listed["more"], true, "{listed}");
    assert_eq!(listed["kvs"].as_array().map(Vec::len), Some(1), "{listed}");

    let json: serde_json::Value =
        serde_json::from_str(&etcdctl(&cluster, &["get", "foo", "-w", "json"])).expect("json");
    let kv = &json["kvs"][0];
    assert_eq!(kv["key"], "Zm9v", "base64 of foo: {json}");
    assert_eq!(kv["value"], "YmFy");
    assert_eq!(kv["create_revision"], first);
    assert_eq!(kv["version"], 1);
    assert!(json["header"]["member_id"].as_u64().is_some(), "{json}");

    // A txn: etcdctl's interactive format on stdin.
    let txn = etcdctl_as(
        &cluster,
        Some(&cluster.client_tls("root")),
        &["txn"],
        "value(\"foo\") = \"bar\"\n\nput foo baz\n\nput foo nope\n\n",
    );
    assert!(txn.status.success(), "{txn:?}");
    assert_eq!(String::from_utf8_lossy(&txn.stdout), "SUCCESS\n\nOK\n");
    assert_eq!(
        etcdctl(&cluster, &["get", "foo", "--print-value-only"]),
        "baz\n"
    );
    assert_eq!(
        etcdctl(&cluster, &["get", "foo", &format!("--rev={first}")]),
        "foo\nbar\n"
    );

    assert_eq!(etcdctl(&cluster, &["del", "foo2"]), "1\n");
    assert_eq!(etcdctl(&cluster, &["get", "foo2"]), "");
    let now = revision(&cluster);
    assert_eq!(
        etcdctl(&cluster, &["compact", &now.to_string()]),
        format!("compacted revision {now}\n")
    );
    let err = etcdctl_fails(
        &cluster,
        Some(&cluster.client_tls("root")),
        &["get", "foo", &format!("--rev={first}")],
    );
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );

    // A watch from a compacted revision ends with etcd's reason (a Go client pairs the
    // cancellation with the watch it saw created; it must not hang or crash).
    let said = watch_that_ends(
        &cluster,
        &cluster.client_tls("root"),
        &["foo", &format!("--rev={first}")],
    );
    assert!(
        said.contains("required revision has been compacted"),
        "{said}"
    );

    // The members, as etcd lists them: the gRPC front is at the client address.
    let members = etcdctl(&cluster, &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    for node in &cluster.nodes {
        let line = format!(
            ", started, {}, https://{}, https://{}, false",
            node.name,
            node.peer_endpoint(),
            node.endpoint()
        );
        assert!(members.contains(&line), "{line} in {members}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&etcdctl(&cluster, &["endpoint", "status", "-w", "json"]))
            .expect("json");
    let statuses = status.as_array().expect("one status per endpoint");
    assert_eq!(statuses.len(), 3);
    let leaders: Vec<u64> = statuses
        .iter()
        .map(|s| s["Status"]["leader"].as_u64().expect("a leader"))
        .collect();
    assert!(leaders.windows(2).all(|w| w[0] == w[1]), "{leaders:?}");
    // etcdctl 3.4 prints health to stderr.
    let health = etcdctl_as(
        &cluster,
        Some(&cluster.client_tls("root")),
        &["endpoint", "health"],
        "",
    );
    assert!(health.status.success(), "{health:?}");
    let health = String::from_utf8_lossy(&health.stderr);
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");

    // A request over the size limit is refused before it reaches Raft, and the node
    // serves on.
    let big = "x".repeat(2 << 20);
    let out = etcdctl_as(
        &cluster,
        Some(&cluster.client_tls("root")),
        &["put", "big"],
        &big,
    );
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("larger than max") || err.contains("too large"),
        "{err}"
    );
    assert_eq!(etcdctl(&cluster, &["get", "big"]), "");

    // Identity: no client certificate, no connection; a user without roles is refused
    // with etcd's message.
    let err = etcdctl_fails(&cluster, None, &["get", "foo"]);
    assert!(
        err.contains("certificate") || err.contains("tls") || err.contains("deadline exceeded"),
        "a refused handshake: {err}"
    );
    let alice = cluster.client_tls("alice");
    let err = etcdctl_fails(&cluster, Some(&alice), &["put", "foo", "1"]);
    assert!(err.contains("etcdserver: permission denied"), "{err}");
    // So is a watch of hers: refused, not hung, not a crash of the client.
    let said = watch_that_ends(&cluster, &alice, &["foo"]);
    assert!(said.contains("permission denied"), "{said}");
    assert!(!said.contains("panic"), "{said}");
}

#[test]
fn etcdctl_leases_and_watches_through_the_grpc_front() {
    let cluster = Cluster::new(3, &[]);
    let granted = etcdctl(&cluster, &["lease", "grant", "60"]);
    let id = granted
        .strip_prefix("lease ")
        .and_then(|rest| rest.strip_suffix(" granted with TTL(60s)\n"))
        .unwrap_or_else(|| panic!("{granted}"))
        .to_owned();
    assert_eq!(
        etcdctl(&cluster, &["put", "leased", "v", &format!("--lease={id}")]),
        "OK\n"
    );
    let ttl = etcdctl(&cluster, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
        "{ttl}"
    );
    assert!(ttl.ends_with("attached keys([leased])\n"), "{ttl}");
    assert_eq!(
        etcdctl(&cluster, &["lease", "list"]),
        format!("found 1 leases\n{id}\n")
    );
    let kept = etcdctl(&cluster, &["lease", "keep-alive", "--once", &id]);
    assert_eq!(kept, format!("lease {id} keepalived with TTL(60)\n"));
    assert_eq!(
        etcdctl(&cluster, &["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(etcdctl(&cluster, &["get", "leased"]), "");
    assert_eq!(
        etcdctl(&cluster, &["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );

    // A watch from a past revision replays, then follows new changes.
    etcdctl(&cluster, &["put", "w/a", "1"]);
    let from = revision(&cluster);
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(base_args(&cluster, Some(&cluster.client_tls("root"))))
        .args(["watch", "w/", "--prefix", &format!("--rev={from}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let stdout = watch.stdout.take().expect("stdout");
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    etcdctl(&cluster, &["put", "w/b", "2"]);
    etcdctl(&cluster, &["del", "w/a"]);
    let mut got = Vec::new();
    while got.len() < 8 {
        match seen.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => got.push(line),
            Err(e) => panic!("watch output stopped at {got:?}: {e}"),
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        got,
        ["PUT", "w/a", "1", "PUT", "w/b", "2", "DELETE", "w/a"],
        "then an empty value line"
    );
}

#[test]
fn etcdctl_saves_a_snapshot_etchctl_can_read_and_restore() {
    let cluster = Cluster::new(3, &[]);
    for i in 0..20 {
        etcdctl(
            &cluster,
            &["put", &format!("snap/{i:02}"), &"v".repeat(1000)],
        );
    }
    let revision = revision(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("etch.snapshot");
    let file_arg = file.to_str().expect("utf-8 path");
    // etcdctl asks one member (its rule), over gRPC, and writes what it streams.
    let save_as = |tls: &TlsFiles, file: &str| {
        etcdctl_with(
            node_args(&cluster, 1, Some(tls)),
            &["snapshot", "save", file],
            "",
        )
    };
    let saved = save_as(&cluster.client_tls("root"), file_arg);
    assert!(saved.status.success(), "{saved:?}");
    assert_eq!(
        String::from_utf8_lossy(&saved.stdout),
        format!("Snapshot saved at {file_arg}\n")
    );
    // The file is an etch backup of the whole state: its status, and a restore of it.
    let status: serde_json::Value = serde_json::from_str(&etch_tests::ok_stdout(
        &cluster.etchctl(&["snapshot", "status", file_arg, "-w", "json"]),
    ))
    .expect("json");
    assert_eq!(status["revision"].as_i64(), Some(revision), "{status}");
    assert!(status["totalKey"].as_u64() >= Some(20), "{status}");
    let restored = dir.path().join("restored");
    let out = cluster.etchctl(&[
        "snapshot",
        "restore",
        file_arg,
        "--data-dir",
        restored.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{out:?}");
    // A user who is not root may not take one.
    let refused = save_as(
        &cluster.client_tls("alice"),
        dir.path().join("no").to_str().expect("utf-8"),
    );
    assert!(!refused.status.success(), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn etcdctl_manages_users_and_roles_through_the_grpc_front() {
    let cluster = Cluster::single();
    let ok = |args: &[&str]| etcdctl(&cluster, args);
    assert_eq!(
        ok(&["user", "add", "alice", "--no-password"]),
        "User alice created\n"
    );
    assert_eq!(ok(&["role", "add", "ops"]), "Role ops created\n");
    assert_eq!(
        ok(&[
            "role",
            "grant-permission",
            "ops",
            "readwrite",
            "/app/",
            "--prefix"
        ]),
        "Role ops updated\n"
    );
    assert_eq!(
        ok(&["user", "grant-role", "alice", "ops"]),
        "Role ops is granted to user alice\n"
    );
    assert_eq!(ok(&["user", "get", "alice"]), "User: alice\nRoles: ops\n");
    let listed = ok(&["user", "list"]);
    assert!(
        listed.contains("alice\n") && listed.contains("root\n"),
        "{listed}"
    );
    // The grant is in force at once: alice writes under /app/ and nowhere else.
    let alice = cluster.client_tls("alice");
    let out = etcdctl_as(&cluster, Some(&alice), &["put", "/app/x", "1"], "");
    assert!(out.status.success(), "{out:?}");
    let err = etcdctl_fails(&cluster, Some(&alice), &["put", "/other", "1"]);
    assert!(err.contains("etcdserver: permission denied"), "{err}");
    // Passwords are refused with a sentence that says why.
    let err = etcdctl_fails(
        &cluster,
        Some(&cluster.client_tls("root")),
        &["user", "add", "bob:secret"],
    );
    assert!(err.contains("etch users have no password"), "{err}");
}

#[test]
fn etcdctl_moves_a_members_peer_endpoint() {
    let mut cluster = Cluster::new(3, &[]);
    let members = etcdctl(&cluster, &["member", "list", "-w", "json"]);
    let json: serde_json::Value = serde_json::from_str(&members).expect("json");
    let moved = (json["members"].as_array().expect("members").iter())
        .find(|m| m["name"] == "n3")
        .expect("n3 listed")["ID"]
        .as_u64()
        .expect("an id");
    let port = etch_tests::free_port();
    let url = format!("https://127.0.0.1:{port}");
    let updated = etcdctl(
        &cluster,
        &[
            "member",
            "update",
            &format!("{moved:x}"),
            &format!("--peer-urls={url}"),
        ],
    );
    assert!(
        updated.starts_with(&format!("Member {moved:16x} updated in cluster ")),
        "{updated}"
    );
    let listed = etcdctl(&cluster, &["member", "list"]);
    assert!(listed.contains(&url), "{listed}");
    // n3 starts listening there, and takes the writes made since.
    cluster.nodes[2].kill();
    cluster.nodes[2].peer_port = port;
    // (n3 may have led: the others elect a leader first.)
    etch_tests::wait_for("a write without n3", Duration::from_secs(30), || {
        let root = cluster.client_tls("root");
        let out = etcdctl_as(&cluster, Some(&root), &["put", "after-move", "1"], "");
        out.status.success().then_some(())
    });
    cluster.restart(2);
    etch_tests::wait_for("n3 to take a write", Duration::from_secs(30), || {
        let n3 = node_args(&cluster, 2, Some(&cluster.client_tls("root")));
        let args = ["get", "after-move", "--consistency=s", "--print-value-only"];
        (etcdctl_with(n3, &args, "").stdout == b"1\n").then_some(())
    });
    // A member that does not exist, and more than one URL, are refused.
    let err = etcdctl_fails(
        &cluster,
        Some(&cluster.client_tls("root")),
        &[
            "member",
            "update",
            "1234",
            "--peer-urls=https://127.0.0.1:1",
        ],
    );
    assert!(err.contains("not found"), "{err}");
    let err = etcdctl_fails(
        &cluster,
        Some(&cluster.client_tls("root")),
        &[
            "member",
            "update",
            &format!("{moved:x}"),
            "--peer-urls=https://a:1,https://b:2",
        ],
    );
    assert!(err.contains("one peer URL"), "{err}");
}

#[test]
fn etcdctl_adds_a_member_that_is_running_at_its_peer_url() {
    let mut cluster = Cluster::new(3, &[]);
    let root = cluster.client_tls("root");
    // etcd's request carries no name, and etch takes it from the certificate of the node
    // at the URL: with nothing there, the refusal says what to do.
    let nobody = format!("--peer-urls=https://127.0.0.1:{}", etch_tests::free_port());
    let err = etcdctl_fails(&cluster, Some(&root), &["member", "add", "n4", &nobody]);
    assert!(
        err.contains("must be running") && err.contains("etchctl member add NAME"),
        "{err}"
    );
    // Started first, the new node waits to be reached; etcdctl then adds it.
    let mut n4 = cluster.joining_node("n4");
    n4.start_serving(&root);
    let url = format!("--peer-urls=https://{}", n4.peer_endpoint());
    let added = etcdctl(&cluster, &["member", "add", "n4", &url]);
    let id = etch_host::node_id("n4");
    assert!(
        added.starts_with(&format!("Member {id:16x} added to cluster ")),
        "{added}"
    );
    assert!(added.contains("ETCD_NAME=\"n4\""), "{added}");
    cluster.nodes.push(n4);
    // A voter under its certificate's name, taking the writes.
    let listed = etcdctl(&cluster, &["member", "list"]);
    assert!(
        listed.contains(&format!(
            "{id:x}, started, n4, https://{}",
            cluster.nodes[3].peer_endpoint()
        )),
        "{listed}"
    );
    assert!(
        listed.contains("false\n") && !listed.contains("true\n"),
        "{listed}"
    );
    etcdctl(&cluster, &["put", "after-add", "1"]);
    etch_tests::wait_for("n4 to take a write", Duration::from_secs(30), || {
        let n4 = node_args(&cluster, 3, Some(&root));
        let args = ["get", "after-add", "--consistency=s", "--print-value-only"];
        (etcdctl_with(n4, &args, "").stdout == b"1\n").then_some(())
    });
    // The same node again is refused.
    let err = etcdctl_fails(&cluster, Some(&root), &["member", "add", "n4", &url]);
    assert!(err.contains("already exists"), "{err}");
}

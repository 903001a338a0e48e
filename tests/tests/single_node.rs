//! A secure single-node etch, end to end: real `etchd` processes on loopback with generated
//! certificates, driven through the SDK, `etchctl` and raw QUIC streams.
//!
//! Every test starts its own node on free ports, except `embedded_default_newcomer_flow`: it
//! is the one test that runs `etchd` with no flags, and so on the fixed ports 7379/7380.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use etch_client::proto::{self, PutRequest, Request, Response, ResponseOp, StatusRequest};
use etch_client::{Client, ClientOptions, Compare, CompareResult, Error, KeyValue, TxnOp};
use etch_proto::pki::{self, InitOptions, TlsFiles};
use etch_proto::{ALPN_CLIENT, ALPN_PEER, DEFAULT_MAX_REQUEST_BYTES, frame};
use etch_tests::{
    Cluster, bin, etchctl_with, ok_stdout, quic_dial, raw_exchange, raw_tls, raw_tls_anonymous,
    wait_for,
};
use rustls::AlertDescription;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const MAX_REQUEST: u64 = DEFAULT_MAX_REQUEST_BYTES as u64;

#[test]
fn embedded_default_newcomer_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("etchd.log");
    let mut etchd = KillOnDrop(
        bare(&bin("etchd"), dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("etchd log"))
            .spawn()
            .expect("spawn etchd"),
    );
    let etchctl = |args: &[&str]| {
        bare(&bin("etchctl"), dir.path())
            .args(args)
            .output()
            .expect("run etchctl")
    };
    wait_for(
        "etchd with no flags to serve",
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = etchd.0.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("etchd exited with {status} (is port 7379 taken?); log:\n{log}");
            }
            etchctl(&["endpoint", "health"])
                .status
                .success()
                .then_some(())
        },
    );
    let certs = dir.path().join("etch-data/certs");
    for file in ["ca.crt", "root.crt", "root.key"] {
        assert!(
            certs.join(file).is_file(),
            "{file} not created in {certs:?}"
        );
    }
    let health = ok_stdout(&etchctl(&["endpoint", "health"]));
    assert!(health.starts_with("127.0.0.1:7379 is healthy"), "{health}");
    assert_eq!(ok_stdout(&etchctl(&["put", "greeting", "hello"])), "OK\n");
    assert_eq!(
        ok_stdout(&etchctl(&["get", "greeting"])),
        "greeting\nhello\n"
    );
    // The embedded CA's revocation list is picked up once `certs revoke` makes it.
    let certs_dir = certs.to_str().expect("utf-8");
    ok_stdout(&etchctl(&[
        "certs",
        "init",
        "--dir",
        certs_dir,
        "--nodes",
        "",
        "--clients",
        "alice",
    ]));
    let alice = TlsFiles::in_dir(&certs, "alice");
    let status = |tls: &TlsFiles| etchctl_with("127.0.0.1:7379", tls, &["endpoint", "status"]);
    assert!(status(&alice).status.success(), "alice is served");
    let said = ok_stdout(&etchctl(&["certs", "revoke", "--dir", certs_dir, "alice"]));
    assert!(said.starts_with("revoked certificate alice"), "{said}");
    let refused = wait_for("alice to be refused", Duration::from_secs(15), || {
        let out = status(&alice);
        (!out.status.success()).then_some(out)
    });
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("revoked"), "{err}");
    assert_eq!(
        ok_stdout(&etchctl(&["get", "greeting"])),
        "greeting\nhello\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_end_to_end() {
    let cluster = single().await;
    let client = cluster.client().await;
    assert_eq!(client.status().await.expect("status").header.revision, 1);

    // Put, prev_kv and the revisions of a key.
    let put = client.put("sdk/a", "1").await.expect("put");
    assert_eq!((put.header.revision, put.prev_kv), (2, None));
    let put = client.put("sdk/a", "2").prev_kv().await.expect("put");
    assert_eq!(put.header.revision, 3);
    assert_eq!(put.prev_kv, Some(kv("sdk/a", "1", 2, 2, 1)));
    let got = client.get("sdk/a").await.expect("get");
    assert_eq!((got.header.revision, got.count), (3, 1));
    assert_eq!(got.kvs, [kv("sdk/a", "2", 2, 3, 2)]);

    // Ranges: prefix with a limit, keys only, count only, a point in time.
    for (key, value) in [("sdk/b", "b"), ("sdk/c", "c"), ("other/x", "x")] {
        client.put(key, value).await.expect("put");
    }
    let page = client.get("sdk/").prefix().limit(2).await.expect("get");
    assert_eq!(keys(&page.kvs), ["sdk/a", "sdk/b"]);
    assert!(page.more);
    assert_eq!((page.count, page.header.revision), (3, 6));
    let bare = client.get("sdk/").prefix().keys_only().await.expect("get");
    assert_eq!(keys(&bare.kvs), ["sdk/a", "sdk/b", "sdk/c"]);
    assert!(
        bare.kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.mod_revision > 0)
    );
    let counted = client.get("sdk/").prefix().count_only().await.expect("get");
    assert_eq!((counted.kvs.len(), counted.count), (0, 3));
    let then = client.get("sdk/a").revision(2).await.expect("get");
    assert_eq!(then.kvs, [kv("sdk/a", "1", 2, 2, 1)]);
    let before = client.get("sdk/a").revision(1).await.expect("get");
    assert_eq!((before.kvs.len(), before.count), (0, 0));

    // Delete a range with prev_kv.
    let deleted = client
        .delete("sdk/")
        .prefix()
        .prev_kv()
        .await
        .expect("delete");
    assert_eq!((deleted.deleted, deleted.header.revision), (3, 7));
    assert_eq!(keys(&deleted.prev_kvs), ["sdk/a", "sdk/b", "sdk/c"]);
    assert_eq!(deleted.prev_kvs[0].value, b"2");
    assert_eq!(client.get("sdk/").prefix().await.expect("get").count, 0);

    // Compare-and-swap: the success branch, then the failure branch of the same txn.
    let cas = || {
        client
            .txn()
            .when([Compare::value("other/x", CompareResult::Equal, "x")])
            .and_then([TxnOp::put("other/x", "y"), TxnOp::get("other/x")])
            .or_else([TxnOp::get("other/x")])
    };
    let won = cas().await.expect("txn");
    assert!(won.succeeded);
    assert_eq!(won.header.revision, 8);
    assert!(
        matches!(&won.responses[..], [ResponseOp::Put(_), ResponseOp::Range(r)] if r.kvs == [kv("other/x", "y", 6, 8, 2)]),
        "{won:?}"
    );
    let lost = cas().await.expect("txn");
    assert!(!lost.succeeded);
    assert_eq!(lost.header.revision, 8, "the failure branch only reads");
    assert!(
        matches!(&lost.responses[..], [ResponseOp::Range(r)] if r.kvs == [kv("other/x", "y", 6, 8, 2)]),
        "{lost:?}"
    );
    let twice = client
        .txn()
        .and_then([TxnOp::put("dup", "1"), TxnOp::put("dup", "2")])
        .await;
    assert!(
        matches!(twice, Err(Error::Server(proto::Error::InvalidArgument(_)))),
        "{twice:?}"
    );

    // Compaction: the floor stays readable, below it is gone; the future is refused.
    client.compact(5).await.expect("compact");
    let floor = client
        .get("sdk/a")
        .revision(5)
        .await
        .expect("get at the floor");
    assert_eq!(floor.kvs, [kv("sdk/a", "2", 2, 3, 2)]);
    let gone = client.get("sdk/a").revision(4).await;
    assert!(
        matches!(
            gone,
            Err(Error::Server(proto::Error::Compacted {
                compact_revision: 5
            }))
        ),
        "{gone:?}"
    );
    let future = client.get("other/x").revision(1000).await;
    assert!(
        matches!(
            future,
            Err(Error::Server(proto::Error::FutureRevision {
                current_revision: 8
            }))
        ),
        "{future:?}"
    );

    let local = client
        .get("other/x")
        .serializable()
        .await
        .expect("serializable get");
    assert_eq!(local.kvs, [kv("other/x", "y", 6, 8, 2)]);
    let status = client.status().await.expect("status");
    assert_eq!((status.name.as_str(), status.header.revision), ("n1", 8));
    assert_eq!(status.leader, Some(status.header.member_id));
    assert_eq!(status.compact_revision, 5);
    assert!(!status.is_learner && status.errors.is_empty(), "{status:?}");
    assert!(status.raft_applied_index > 0 && status.raft_applied_index <= status.raft_index);
}

/// Keys and values are bytes: etchctl takes arguments that are not UTF-8, as etcdctl does,
/// and prints them back escaped with `--hex` and as base64 with `-w json`.
#[test]
fn etchctl_takes_keys_and_values_that_are_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let cluster = Cluster::single();
    let endpoints = cluster.endpoints();
    let root = cluster.client_tls("root");
    let run = |args: &[&OsStr]| ok_stdout(&etch_tests::etchctl_with(&endpoints, &root, args));
    let key = OsStr::from_bytes(b"k\xff\xfe");
    let value = OsStr::from_bytes(b"v\x80");
    assert_eq!(run(&[OsStr::new("put"), key, value]), "OK\n");
    assert_eq!(
        run(&[OsStr::new("get"), key, OsStr::new("--hex")]),
        "\\x6b\\xff\\xfe\n\\x76\\x80\n"
    );
    let json: serde_json::Value = serde_json::from_str(&run(&[
        OsStr::new("get"),
        key,
        OsStr::new("-w"),
        OsStr::new("json"),
    ]))
    .expect("json");
    assert_eq!(
        json["kvs"][0]["key"], "a//+",
        "base64 of k\\xff\\xfe: {json}"
    );
    assert_eq!(json["kvs"][0]["value"], "doA=");
    assert_eq!(run(&[OsStr::new("del"), key]), "1\n");
}

#[test]
fn etchctl_verbs_and_output() {
    let cluster = Cluster::single();
    let ctl = |args: &[&str]| ok_stdout(&cluster.etchctl(args));
    for (key, value) in [("/e/a", "1"), ("/e/b", "2"), ("/e/c", "3")] {
        assert_eq!(ctl(&["put", key, value]), "OK\n");
    }
    assert_eq!(ctl(&["put", "/e/a", "11", "--prev-kv"]), "OK\n/e/a\n1\n");
    assert_eq!(ctl(&["put", "zz", "z"]), "OK\n"); // revision 6
    // No value and nothing on stdin: etcdctl's usage error, nothing written.
    let refused = cluster.etchctl(&["put", "/e/x"]);
    assert!(!refused.status.success());
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "Error: put command needs 1 argument and input from stdin or 2 arguments\n"
    );

    assert_eq!(
        ctl(&["get", "/e/", "--prefix"]),
        "/e/a\n11\n/e/b\n2\n/e/c\n3\n"
    );
    assert_eq!(
        ctl(&["get", "/e/b", "--from-key"]),
        "/e/b\n2\n/e/c\n3\nzz\nz\n"
    );
    assert_eq!(ctl(&["get", "/e/a", "--rev", "2"]), "/e/a\n1\n");
    assert_eq!(
        ctl(&["get", "/e/", "--prefix", "--limit", "2"]),
        "/e/a\n11\n/e/b\n2\n"
    );
    assert_eq!(
        ctl(&["get", "/e/", "--prefix", "--keys-only"]),
        "/e/a\n\n/e/b\n\n/e/c\n\n"
    );
    assert_eq!(ctl(&["get", "/e/", "--prefix", "--count-only"]), "3\n");
    assert_eq!(
        ctl(&["get", "/e/", "--prefix", "--print-value-only"]),
        "11\n2\n3\n"
    );
    assert_eq!(ctl(&["get", "/e/a", "--serializable"]), "/e/a\n11\n");

    let json: serde_json::Value =
        serde_json::from_str(&ctl(&["get", "/e/", "--prefix", "-w", "json"])).expect("JSON");
    assert_eq!(json["header"]["revision"], 6);
    assert_eq!(json["count"], 3);
    assert_eq!(json["kvs"][0]["key"], "L2UvYQ=="); // base64("/e/a")
    assert_eq!(json["kvs"][0]["value"], "MTE="); // base64("11")
    assert_eq!(json["kvs"][0]["mod_revision"], 5);

    let deleted = ctl(&["del", "/e/", "--prefix", "--prev-kv"]);
    assert_eq!(deleted, "3\n/e/a\n11\n/e/b\n2\n/e/c\n3\n");
    assert_eq!(ctl(&["get", "/e/", "--prefix"]), "");

    let txn = |compare: &str| {
        let script = format!("{compare}\n\nput t1 \"yes\"\nget zz\n\nput t1 no\n\n");
        ok_stdout(&cluster.etchctl_stdin(&["txn"], &script))
    };
    assert_eq!(txn(r#"value("zz") = "z""#), "SUCCESS\n\nOK\n\nzz\nz\n");
    assert_eq!(txn(r#"mod("zz") > "6""#), "FAILURE\n\nOK\n");
    assert_eq!(ctl(&["get", "t1"]), "t1\nno\n");

    assert_eq!(ctl(&["compact", "5"]), "compacted revision 5\n");
    assert_eq!(ctl(&["get", "/e/a", "--rev", "5"]), "/e/a\n11\n");
    let below = cluster.etchctl(&["get", "/e/a", "--rev", "4"]);
    assert_one_error_line(&below, "compacted");

    let endpoint = cluster.nodes[0].endpoint();
    let status = ctl(&["endpoint", "status"]);
    let fields: Vec<&str> = status.trim_end().split(", ").collect();
    assert_eq!(status.lines().count(), 1, "{status}");
    assert_eq!(fields[0], endpoint, "{status}");
    assert_eq!(
        fields[4..6],
        ["true", "false"],
        "leader, not a learner: {status}"
    );
    let health = ctl(&["endpoint", "health"]);
    let healthy = format!("{endpoint} is healthy: successfully committed proposal: took = ");
    assert!(health.starts_with(&healthy), "{health}");
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_and_missing_certificates_are_refused() {
    let cluster = single().await;
    let endpoint = cluster.nodes[0].endpoint();
    let other = cluster.dir.path().join("other-ca");
    let opts = InitOptions {
        nodes: vec![],
        clients: vec!["root".into()],
        hosts: vec![],
    };
    pki::init_dir(&other, &opts).expect("another CA");
    let stranger = TlsFiles {
        ca: cluster.client_tls("root").ca,
        ..TlsFiles::in_dir(&other, "root")
    };

    let out = tokio::task::block_in_place(|| etchctl_with(&endpoint, &stranger, &["get", "k"]));
    assert_one_error_line(&out, "certificate");

    let opts = ClientOptions::new([endpoint.clone()], stranger).request_timeout(secs(3));
    let result = match Client::connect(opts).await {
        Ok(client) => client.get("k").await.map(drop),
        Err(e) => Err(e),
    };
    assert!(
        matches!(result, Err(Error::CertificateRefused { .. })),
        "{result:?}"
    );

    // No certificate at all: the handshake may complete on our side (TLS 1.3), but the node
    // closes the connection before serving a single stream.
    let anonymous = raw_tls_anonymous(&cluster.client_tls("root").ca, ALPN_CLIENT);
    let closed = refused(&endpoint, anonymous).await;
    assert!(
        is_tls_alert(&closed, AlertDescription::CertificateRequired),
        "{closed}"
    );

    // A client certificate is no node certificate: the peer endpoint refuses it, saying why
    // (the reason travels in QUIC's close frame).
    let as_peer = raw_tls(&cluster.client_tls("root"), ALPN_PEER);
    let closed = refused(&cluster.nodes[0].peer_endpoint(), as_peer).await;
    assert!(
        is_tls_alert(&closed, AlertDescription::CertificateUnknown)
            && closed
                .to_string()
                .contains("\"root\" is not a node certificate"),
        "{closed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_never_takes_the_node_down() {
    let cluster = single().await;
    let endpoint = cluster.nodes[0].endpoint();
    let tls = raw_tls(&cluster.client_tls("root"), ALPN_CLIENT);
    let conn = quic_dial(&endpoint, tls)
        .await
        .expect("dial with a client certificate");

    // (a) garbage in a well-formed frame, and a request variant that does not exist
    for body in [&[0xee, 0xee, 0xee][..], &[0x7f]] {
        let answer = raw_exchange(&conn, &framed(body)).await.expect("an answer");
        assert!(
            matches!(answer, Some(Err(proto::Error::InvalidArgument(_)))),
            "{answer:?}"
        );
    }
    // (b) a header announcing 2 MiB (no body follows), then a whole 2 MiB put
    let two_mib = 2 * 1024 * 1024;
    let announced = (two_mib as u32).to_be_bytes();
    let answer = raw_exchange(&conn, &announced).await.expect("an answer");
    let refusal = proto::Error::TooLarge {
        size: two_mib,
        limit: MAX_REQUEST,
    };
    assert_eq!(answer, Some(Err(refusal)));
    let put = Request::Put(PutRequest {
        key: b"big".to_vec(),
        value: vec![7; two_mib as usize],
        ..Default::default()
    });
    let whole = frame::encode(&put, usize::MAX).expect("encode");
    let answer = raw_exchange(&conn, &whole).await.expect("an answer");
    assert!(
        matches!(answer, Some(Err(proto::Error::TooLarge { size, limit: MAX_REQUEST })) if size > two_mib),
        "{answer:?}"
    );
    // (c) the SDK refuses the same put before sending it
    let client = cluster.client().await;
    let sdk = client.put("big", vec![7; two_mib as usize]).await;
    assert!(
        matches!(
            sdk,
            Err(Error::RequestTooLarge {
                limit: DEFAULT_MAX_REQUEST_BYTES,
                ..
            })
        ),
        "{sdk:?}"
    );
    // (d) streams that end half-way: inside the header, inside the body, and a reset one
    for partial in [&[0, 0][..], &[0, 0, 0, 100, 1, 2, 3]] {
        let answer = raw_exchange(&conn, partial).await.expect("the stream ends");
        assert_eq!(answer, None, "no answer to {partial:?}");
    }
    let (mut send, _recv) = conn.open_bi().await.expect("open a stream");
    send.write_all(&[0, 0, 0, 50, 1]).await.expect("write");
    send.reset(7u32.into()).expect("reset");
    // ... and a connection dropped in the middle of a request.
    let doomed = quic_dial(&endpoint, raw_tls(&cluster.client_tls("root"), ALPN_CLIENT))
        .await
        .expect("dial");
    let (mut send, _recv) = doomed.open_bi().await.expect("open a stream");
    send.write_all(&[0, 0, 0, 50, 1]).await.expect("write");
    doomed.close(0u32.into(), b"bye");

    // The node still serves: on the same raw connection, and through the SDK.
    let status = frame::encode(&Request::Status(StatusRequest {}), usize::MAX).expect("encode");
    let answer = raw_exchange(&conn, &status).await.expect("an answer");
    assert!(
        matches!(answer, Some(Ok(Response::Status(_)))),
        "{answer:?}"
    );
    client
        .put("still", "here")
        .await
        .expect("put after the abuse");
    let got = client.get("still").await.expect("get");
    assert_eq!(got.kvs[0].value, b"here");
    assert_eq!(client.get("big").await.expect("get").count, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_keeps_acknowledged_writes() {
    let mut cluster = single().await;
    let (acks, mut acked) = mpsc::unbounded_channel::<(String, String)>();
    let mut writers = JoinSet::new();
    for w in 0..4 {
        let (opts, acks) = (cluster.client_options("root"), acks.clone());
        writers.spawn(async move {
            let client = Client::connect(opts).await.expect("connect");
            for i in 0.. {
                let (key, value) = (format!("kill/{w}/{i:05}"), format!("{w}.{i}"));
                if client.put(key.as_str(), value.as_str()).await.is_err() {
                    return;
                }
                let _ = acks.send((key, value));
            }
        });
    }
    drop(acks);
    let mut seen = Vec::new();
    while seen.len() < 100 {
        let ack = tokio::time::timeout(secs(20), acked.recv()).await;
        let ack = ack.expect("writes are acknowledged in time");
        seen.push(ack.expect("a writer is still writing"));
    }
    // kill -9 with writes in flight; nothing can be acknowledged until the restart.
    tokio::task::block_in_place(|| cluster.nodes[0].kill());
    writers.abort_all();
    while writers.join_next().await.is_some() {}
    while let Ok(ack) = acked.try_recv() {
        seen.push(ack);
    }

    tokio::task::block_in_place(|| cluster.restart(0));
    let client = cluster.client().await;
    let stored = client
        .get("kill/")
        .prefix()
        .await
        .expect("get after restart");
    let stored: BTreeMap<&[u8], &[u8]> = stored
        .kvs
        .iter()
        .map(|kv| (&kv.key[..], &kv.value[..]))
        .collect();
    for (key, value) in &seen {
        let found = stored.get(key.as_bytes()).copied();
        assert_eq!(
            found,
            Some(value.as_bytes()),
            "acknowledged {key} lost by kill -9"
        );
    }
    let revision = client.status().await.expect("status").header.revision;
    // The empty store is at revision 1; every acknowledged put advanced it by one.
    assert!(
        revision > seen.len() as i64,
        "revision {revision} after {} acknowledged writes",
        seen.len()
    );
}

#[test]
fn stop_and_start_keep_data() {
    let mut cluster = Cluster::single();
    assert_eq!(ok_stdout(&cluster.etchctl(&["put", "kept", "yes"])), "OK\n");
    ok_stdout(&cluster.etchctl(&["put", "kept", "still"]));
    cluster.nodes[0].stop();
    assert!(!cluster.nodes[0].is_running());
    let root = cluster.client_tls("root");
    cluster.nodes[0].start(&root);
    assert_eq!(
        ok_stdout(&cluster.etchctl(&["get", "kept"])),
        "kept\nstill\n"
    );
    assert_eq!(
        ok_stdout(&cluster.etchctl(&["get", "kept", "--rev", "2"])),
        "kept\nyes\n"
    );
}

// Helpers.

/// One node, started off the async runtime's worker threads.
async fn single() -> Cluster {
    tokio::task::spawn_blocking(Cluster::single)
        .await
        .expect("start a node")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease: 0,
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// `body` behind its 4-byte big-endian length.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// An etchctl run that failed with one `Error: ...` line on stderr mentioning `what`.
fn assert_one_error_line(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure, got: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("Error: ") && stderr.contains(what),
        "{stderr}"
    );
}

/// Dials `addr` with `tls` and sends a request, which must fail; returns why the node
/// closed the connection.
async fn refused(addr: &str, tls: rustls::ClientConfig) -> quinn::ConnectionError {
    let conn = match quic_dial(addr, tls).await {
        Ok(conn) => conn,
        Err(refused) => return refused,
    };
    let request = frame::encode(&Request::Status(StatusRequest {}), usize::MAX).expect("encode");
    let answer = tokio::time::timeout(secs(10), raw_exchange(&conn, &request)).await;
    assert!(
        matches!(answer, Ok(Err(_))),
        "a refused connection answered: {answer:?}"
    );
    conn.close_reason().expect("the node closed the connection")
}

/// Whether the connection was closed with the TLS alert `alert` (QUIC carries alerts as
/// the codes 0x100..=0x1ff).
fn is_tls_alert(e: &quinn::ConnectionError, alert: AlertDescription) -> bool {
    let code = 0x100 + u64::from(u8::from(alert));
    matches!(e, quinn::ConnectionError::ConnectionClosed(c) if u64::from(c.error_code) == code)
}

/// `program` in `cwd`, with none of the `ETCH*` settings or `RUST_LOG` of this environment.
fn bare(program: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd).env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ETCH") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A child process killed (`kill -9`) and reaped when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The SDK's examples (`client/examples`, built with the tests) run against a real node and
/// print what they say they do.
#[test]
fn the_sdk_examples_run_against_a_node() {
    let cluster = Cluster::new(1, &[]);
    let tls = cluster.client_tls("root");
    let certs = tls.ca.parent().expect("the certificate directory");
    let run = |name: &str| {
        let path = bin("examples").join(name);
        let out = Command::new(&path)
            .env("ETCH_ENDPOINTS", cluster.nodes[0].endpoint())
            .env("ETCH_CERTS", certs)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "example {name} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let put_get = run("put_get");
    assert!(put_get.contains("/config/db/port = 5432"), "{put_get}");
    assert!(
        put_get.contains("/config/db/host = 10.0.0.5 (version 1)"),
        "{put_get}"
    );
    assert!(put_get.contains("deleted 2 keys"), "{put_get}");
    let txn = run("txn");
    assert!(txn.contains("took the job: true"), "{txn}");
    assert!(txn.contains("took it again: false"), "{txn}");
    assert!(txn.contains("created job 43: true"), "{txn}");
    let watch = run("watch");
    assert_eq!(
        watch,
        "PUT /feature/x = on\nPUT /feature/y = on\nDELETE /feature/x\n"
    );
    let lease = run("lease");
    assert!(lease.contains("alive: TTL 5s"), "{lease}");
    assert!(lease.contains("keys attached: 1"), "{lease}");
    assert!(
        lease.contains("key deleted with its lease: true"),
        "{lease}"
    );
    let discovery = run("discovery");
    assert!(
        discovery.contains("Put /services/web/10.0.0.7:8080"),
        "{discovery}"
    );
    assert!(
        discovery.contains("Delete /services/web/10.0.0.7:8080"),
        "{discovery}"
    );
}

/// A watch whose node is gone says so: etchctl tells on stderr that the stream broke and
/// from which revision it resumes, keeps trying (as etcdctl does, silently), and says when
/// it is resumed; the changes made meanwhile arrive once.
#[test]
fn an_etchctl_watch_whose_node_is_gone_says_so() {
    use std::io::{BufRead, BufReader};
    let mut cluster = Cluster::single();
    let root = cluster.client_tls("root");
    let mut watch =
        etch_tests::etchctl_command(&cluster.endpoints(), &root, &["watch", "gone/", "--prefix"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("etchctl watch");
    let lines = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    };
    let out = lines(Box::new(watch.stdout.take().expect("stdout")));
    let err = lines(Box::new(watch.stderr.take().expect("stderr")));
    let next = |rx: &std::sync::mpsc::Receiver<String>, what: &str| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{what} within 30 s: {e}"))
    };
    // The watch is live once it delivers a put (retried: it may be made before the watch).
    let put = |cluster: &Cluster, v: &str| ok_stdout(&cluster.etchctl(&["put", "gone/a", v]));
    put(&cluster, "1");
    let first = wait_for("the watch to deliver", Duration::from_secs(30), || {
        out.recv_timeout(Duration::from_secs(1)).ok().or_else(|| {
            put(&cluster, "1");
            None
        })
    });
    assert_eq!(first, "PUT");
    let rest = [next(&out, "the key"), next(&out, "the value")];
    assert_eq!(rest, ["gone/a", "1"]);

    cluster.nodes[0].kill();
    let broke = next(&err, "the break reported");
    assert!(broke.starts_with("watch: the stream broke ("), "{broke}");
    assert!(broke.contains("); resuming from revision "), "{broke}");

    let tls = cluster.client_tls("root");
    cluster.nodes[0].start(&tls);
    let resumed = next(&err, "the resumption reported");
    assert!(
        resumed.starts_with("watch: resumed on 127.0.0.1:"),
        "{resumed}"
    );
    put(&cluster, "2");
    // Events of the puts before the kill may still be on their way: read up to the new one,
    // every event before it being one of those.
    let mut events = Vec::new();
    while events.last().map(|e: &Vec<String>| e[2].as_str()) != Some("2") {
        events.push((0..3).map(|_| next(&out, "the change after")).collect());
    }
    for event in &events[..events.len() - 1] {
        assert_eq!(event, &["PUT", "gone/a", "1"], "{events:?}");
    }
    let _ = watch.kill();
    let _ = watch.wait();
}

/// `etchctl watch -i`: watch commands read from standard input, one per line, all running
/// at once; a line that is not one is reported and skipped.
#[test]
fn an_interactive_etchctl_watch_runs_each_line() {
    use std::io::{BufRead, BufReader, Write};
    let cluster = Cluster::single();
    ok_stdout(&cluster.etchctl(&["put", "i/seed", "0"]));
    let json: serde_json::Value = serde_json::from_str(&ok_stdout(
        &cluster.etchctl(&["get", "i/seed", "-w", "json"]),
    ))
    .expect("json");
    let from = json["header"]["revision"].as_i64().expect("revision") + 1;
    let root = cluster.client_tls("root");
    let mut watch = etch_tests::etchctl_command(&cluster.endpoints(), &root, &["watch", "-i"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("etchctl watch -i");
    let mut stdin = watch.stdin.take().expect("stdin");
    writeln!(
        stdin,
        "watch i/a --rev {from}\nget i/a\nwatch i/b --prefix --rev {from}"
    )
    .expect("write the watch lines");
    let stdout = BufReader::new(watch.stdout.take().expect("stdout"));
    let (tx, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    ok_stdout(&cluster.etchctl(&["put", "i/a", "1"]));
    ok_stdout(&cluster.etchctl(&["put", "i/b/x", "2"]));
    let mut got: Vec<String> = (0..6)
        .map(|_| {
            seen.recv_timeout(Duration::from_secs(30))
                .expect("both watches' events within 30 s")
        })
        .collect::<Vec<_>>()
        .chunks(3)
        .map(|event| event.join(" "))
        .collect();
    got.sort();
    assert_eq!(got, ["PUT i/a 1", "PUT i/b/x 2"]);
    let _ = watch.kill();
    let output = watch.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Invalid watch command \"get i/a\""),
        "{stderr}"
    );
    drop(stdin);
}

//! The client against a scripted in-process QUIC node: the wire exchange, leader
//! redirects and hints, retries, the no-resend rule for writes, certificate refusal,
//! dialling past dead endpoints, and the long-lived streams: watch resumption and
//! compaction, lease keep-alives.
//! (Tests against a real `etchd` live in the workspace's `tests/`.)

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etch_client::proto::lease::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use etch_client::proto::pki::{Identity, InitOptions, TlsFiles, init_dir};
use etch_client::proto::watch::{
    Event, EventType, WatchControl, WatchCreateRequest, WatchResponse,
};
use etch_client::proto::{
    self, KeyValue, PutResponse, Request, Response, ResponseHeader, Revision,
};
use etch_client::{Client, ClientOptions, Error, KeepAliveStatus, WatchState};

/// What the fake node does with request number `n` (from 0): answer, or drop the
/// connection without answering (`None`).
type Script = dyn Fn(usize, &Request) -> Option<Result<Response, proto::Error>> + Send + Sync;

/// What the fake node does with a stream that opens with a watch or a keep-alive: it gets
/// the first request, the connection, and both sides of the stream.
type StreamScript = dyn Fn(
        Request,
        quinn::Connection,
        quinn::SendStream,
        quinn::RecvStream,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>
    + Send
    + Sync;

struct FakeNode {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
}

type Answer = Result<Response, proto::Error>;

async fn answer(send: &mut quinn::SendStream, answer: Answer) {
    proto::frame::write(send, &answer, 1 << 20)
        .await
        .expect("answer");
}

fn certs(dir: &Path) {
    let opts = InitOptions {
        nodes: vec!["n1".into()],
        clients: vec!["root".into()],
        hosts: vec!["127.0.0.1".into(), "localhost".into()],
    };
    init_dir(dir, &opts).expect("certs");
}

fn start(dir: &Path, script: Arc<Script>) -> FakeNode {
    start_streaming(dir, script, None)
}

/// A node that answers requests with `script` and hands watch and keep-alive streams to
/// `streams`.
fn start_streaming(
    dir: &Path,
    script: Arc<Script>,
    streams: Option<Arc<StreamScript>>,
) -> FakeNode {
    let identity = Identity::load(&TlsFiles::in_dir(dir, "n1")).expect("node identity");
    let tls = identity
        .server_config(proto::pki::Role::Client, proto::ALPN_CLIENT)
        .expect("server config");
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic config");
    let config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let endpoint =
        quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = endpoint.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let (script, counter, streams) = (script.clone(), counter.clone(), streams.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    // Room for a request over the default limit (see the size limit test).
                    let Ok(Some(req)) = proto::frame::read::<_, Request>(&mut recv, 8 << 20).await
                    else {
                        return;
                    };
                    if let (Some(streams), Request::Watch(_) | Request::LeaseKeepAlive(_)) =
                        (&streams, &req)
                    {
                        tokio::spawn(streams(req, conn.clone(), send, recv));
                        continue;
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    match script(n, &req) {
                        Some(answer) => {
                            proto::frame::write(&mut send, &answer, 1 << 20)
                                .await
                                .expect("answer");
                            send.finish().expect("finish");
                        }
                        None => {
                            conn.close(0u32.into(), b"scripted drop");
                            return;
                        }
                    }
                }
            });
        }
    });
    FakeNode { addr, seen }
}

/// A dead node: a bound UDP socket that never answers (so no ICMP refusal either), as a
/// killed node's host looks to QUIC. Keep it alive for the test's duration.
fn dead() -> (std::net::UdpSocket, SocketAddr) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

fn options(endpoint: SocketAddr, tls: TlsFiles) -> ClientOptions {
    ClientOptions::new([endpoint.to_string()], tls)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(5))
}

fn put_ok(revision: i64) -> Option<Result<Response, proto::Error>> {
    Some(Ok(Response::Put(PutResponse {
        header: ResponseHeader {
            revision,
            ..Default::default()
        },
        prev_kv: None,
    })))
}

#[tokio::test]
async fn follows_the_leader_and_remembers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let leader = start(dir.path(), Arc::new(|_, _| put_ok(7)));
    let hint = leader.addr.to_string();
    let follower = start(
        dir.path(),
        Arc::new(move |_, _| {
            Some(Err(proto::Error::NotLeader {
                leader: Some(hint.clone()),
            }))
        }),
    );
    let tls = TlsFiles::in_dir(dir.path(), "root");
    let client = Client::connect(options(follower.addr, tls))
        .await
        .expect("connect");
    let resp = client.put("k", "v").await.expect("put");
    assert_eq!(resp.header.revision, 7);
    assert_eq!(
        client.leader().await.map(|l| l.to_string()),
        Some(leader.addr.to_string())
    );
    client.put("k", "w").await.expect("second put");
    assert_eq!(follower.seen.load(Ordering::SeqCst), 1, "asked once");
    assert_eq!(leader.seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retries_unavailable_and_resends_only_a_named_write_of_unknown_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let tls = TlsFiles::in_dir(dir.path(), "root");

    let flaky = start(
        dir.path(),
        Arc::new(|n, _| match n {
            0 => Some(Err(proto::Error::Unavailable {
                reason: "electing".into(),
            })),
            _ => put_ok(3),
        }),
    );
    let client = Client::connect(options(flaky.addr, tls.clone()))
        .await
        .expect("connect");
    client.put("k", "v").await.expect("retried put");
    assert_eq!(flaky.seen.load(Ordering::SeqCst), 2);

    // The node drops the connection after reading the request: a put goes as a named
    // write, so it is sent again, with the same name (the node applies it once)…
    let names = Arc::new(std::sync::Mutex::new(Vec::new()));
    let noted = names.clone();
    let dropper = start(
        dir.path(),
        Arc::new(move |n, req| {
            if let Request::Once(once) = req {
                noted.lock().expect("names").push((once.client, once.seq));
            }
            match n {
                0 | 2 => None,
                _ => put_ok(4),
            }
        }),
    );
    let client = Client::connect(options(dropper.addr, tls.clone()))
        .await
        .expect("connect");
    client.put("k", "v").await.expect("resent named put");
    assert_eq!(dropper.seen.load(Ordering::SeqCst), 2);
    let names = names.lock().expect("names").clone();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], names[1], "the retry is the same write");
    // …while a write that cannot be named (a lease grant) is not re-sent.
    let err = client.lease_grant(10).await.expect_err("outcome unknown");
    assert!(
        matches!(err, Error::ConnectionLost { sent: true, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(dropper.seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let other = tempfile::tempdir().expect("tempdir");
    certs(other.path());
    let node = start(dir.path(), Arc::new(|_, _| put_ok(1)));
    // Trusts the node's CA, but presents a certificate signed by another CA.
    let tls = TlsFiles {
        ca: dir.path().join("ca.crt"),
        cert: other.path().join("root.crt"),
        key: other.path().join("root.key"),
    };
    let err = match Client::connect(options(node.addr, tls)).await {
        Err(e) => e,
        Ok(client) => client.put("k", "v").await.expect_err("refused"),
    };
    let Error::CertificateRefused { endpoint, reason } = &err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert_eq!(endpoint, &node.addr.to_string());
    assert!(reason.contains("TLS alert"), "{reason}");
    assert!(
        reason.contains("not signed by the cluster's CA"),
        "{reason}"
    );
    assert_eq!(node.seen.load(Ordering::SeqCst), 0);
    assert!(
        err.to_string()
            .starts_with(&format!("certificate refused by {}: ", node.addr)),
        "{err}"
    );
}

#[tokio::test]
async fn a_dead_endpoint_listed_first_does_not_hold_up_the_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let tls = TlsFiles::in_dir(dir.path(), "root");
    let live = start(dir.path(), Arc::new(|_, _| put_ok(4)));
    let (_a, dead_a) = dead();
    let (_b, dead_b) = dead();
    // A dial of a dead endpoint lasts the whole connect timeout, here far longer than the
    // request timeout: dialled one after another, the request could only time out.
    let opts = ClientOptions::new(
        [
            dead_a.to_string(),
            dead_b.to_string(),
            live.addr.to_string(),
        ],
        tls,
    )
    .connect_timeout(Duration::from_secs(600))
    .request_timeout(Duration::from_secs(30));

    let lazy = Client::new(opts.clone()).expect("client");
    let resp = lazy
        .put("d", "4")
        .await
        .expect("put past two dead endpoints");
    assert_eq!(resp.header.revision, 4);
    assert_eq!(live.seen.load(Ordering::SeqCst), 1);

    let connect = tokio::time::timeout(Duration::from_secs(30), Client::connect(opts)).await;
    let client = connect
        .expect("connect waited for a dead endpoint")
        .expect("connect");
    client
        .put("d", "5")
        .await
        .expect("put on the live endpoint");
    assert_eq!(live.seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn with_every_endpoint_dead_the_first_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let (_a, dead_a) = dead();
    let (_b, dead_b) = dead();
    let opts = ClientOptions::new(
        [dead_a.to_string(), dead_b.to_string()],
        TlsFiles::in_dir(dir.path(), "root"),
    )
    .connect_timeout(Duration::from_millis(300));
    let err = Client::connect(opts).await.expect_err("nobody answers");
    assert!(
        matches!(&err, Error::Connect { endpoint, .. } if *endpoint == dead_a.to_string()),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_refusal_by_every_endpoint_is_reported_past_a_dead_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let other = tempfile::tempdir().expect("tempdir");
    certs(other.path());
    let first = start(dir.path(), Arc::new(|_, _| put_ok(1)));
    let second = start(dir.path(), Arc::new(|_, _| put_ok(1)));
    let (_dead, dead) = dead();
    let stranger = TlsFiles {
        ca: dir.path().join("ca.crt"),
        cert: other.path().join("root.crt"),
        key: other.path().join("root.key"),
    };
    let opts = ClientOptions::new(
        [
            dead.to_string(),
            first.addr.to_string(),
            second.addr.to_string(),
        ],
        stranger,
    )
    .connect_timeout(Duration::from_secs(1))
    .request_timeout(Duration::from_secs(10));
    // Through `connect` and through a lazy client's first request: the refusal shows during
    // the handshake or on the first stream, whichever the race makes of it.
    let connected = match Client::connect(opts.clone()).await {
        Err(e) => Err(e),
        Ok(client) => client.put("k", "v").await.map(drop),
    };
    let lazy = Client::new(opts)
        .expect("client")
        .put("k", "v")
        .await
        .map(drop);
    for result in [connected, lazy] {
        let err = result.expect_err("refused");
        assert!(
            matches!(&err, Error::CertificateRefused { endpoint, .. }
                if *endpoint == first.addr.to_string() || *endpoint == second.addr.to_string()),
            "{err:?}"
        );
    }
    assert_eq!(first.seen.load(Ordering::SeqCst), 0);
    assert_eq!(second.seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_deadline_after_unavailable_keeps_the_nodes_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let reason = "no leader: the cluster cannot elect one (is a majority of members down?)";
    let node = start(
        dir.path(),
        Arc::new(move |_, _| {
            Some(Err(proto::Error::Unavailable {
                reason: reason.into(),
            }))
        }),
    );
    let opts = options(node.addr, TlsFiles::in_dir(dir.path(), "root"))
        .request_timeout(Duration::from_secs(1));
    let err = Client::new(opts)
        .expect("client")
        .put("d", "4")
        .await
        .expect_err("never available");
    let Error::Timeout { last_error, .. } = &err else {
        panic!("expected a timeout, got {err:?}");
    };
    assert!(
        matches!(last_error.as_deref(),
            Some(Error::Server(proto::Error::Unavailable { reason: r })) if r == reason),
        "{last_error:?}"
    );
    assert!(node.seen.load(Ordering::SeqCst) >= 1);
}

fn header(revision: Revision) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..Default::default()
    }
}

fn put_event(revision: Revision) -> Event {
    Event {
        kind: EventType::Put,
        kv: KeyValue {
            key: b"k".to_vec(),
            create_revision: 1,
            mod_revision: revision,
            version: revision,
            value: format!("v{revision}").into_bytes(),
            lease: 0,
        },
        prev_kv: None,
    }
}

fn watch_answer(resp: WatchResponse) -> Answer {
    Ok(Response::Watch(resp))
}

/// One response holding an event per revision in `revisions`.
fn events(revisions: &[Revision]) -> Answer {
    watch_answer(WatchResponse {
        header: header(revisions.last().copied().unwrap_or_default()),
        events: revisions.iter().map(|&r| put_event(r)).collect(),
        ..Default::default()
    })
}

fn created(revision: Revision) -> Answer {
    watch_answer(WatchResponse {
        header: header(revision),
        created: true,
        ..Default::default()
    })
}

fn progress(revision: Revision) -> Answer {
    watch_answer(WatchResponse {
        header: header(revision),
        ..Default::default()
    })
}

fn compacted(compact_revision: Revision) -> Answer {
    watch_answer(WatchResponse {
        canceled: true,
        cancel_reason: "mvcc: required revision has been compacted".into(),
        compact_revision,
        ..Default::default()
    })
}

/// Records each watch creation's start revision; returns the creation's index.
fn record(starts: &Mutex<Vec<Revision>>, req: &WatchCreateRequest) -> usize {
    let mut starts = starts.lock().expect("lock");
    starts.push(req.start_revision);
    starts.len() - 1
}

fn revisions(resp: &WatchResponse) -> Vec<Revision> {
    resp.events.iter().map(|e| e.kv.mod_revision).collect()
}

fn no_requests() -> Arc<Script> {
    Arc::new(|_, _| Some(Err(proto::Error::Internal("unexpected request".into()))))
}

const PATIENCE: Duration = Duration::from_secs(20);

async fn next(watcher: &mut etch_client::Watcher) -> Option<etch_client::Result<WatchResponse>> {
    tokio::time::timeout(PATIENCE, watcher.next())
        .await
        .expect("a watch response in time")
}

#[tokio::test]
async fn a_broken_watch_resumes_after_the_last_delivered_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let starts = Arc::new(Mutex::new(Vec::new()));
    // The test says when the second stream's connection may die: once it has seen what was
    // sent on it (a close discards what is still in flight).
    let kill = Arc::new(tokio::sync::Notify::new());
    let (node_starts, node_kill) = (starts.clone(), kill.clone());
    let streams: Arc<StreamScript> = Arc::new(move |req, conn, mut send, mut recv| {
        let (starts, kill) = (node_starts.clone(), node_kill.clone());
        Box::pin(async move {
            let Request::Watch(w) = req else { return };
            answer(&mut send, created(12)).await;
            match record(&starts, &w) {
                // Revision 2 has two events; then the node ends the stream without a cancel.
                0 => {
                    answer(&mut send, events(&[1])).await;
                    answer(&mut send, events(&[2, 2])).await;
                    answer(&mut send, events(&[3])).await;
                    send.finish().expect("finish");
                }
                // Revisions 6 and 7 changed other keys: a progress notification covers them.
                // Then the node dies.
                1 => {
                    answer(&mut send, events(&[4])).await;
                    answer(&mut send, events(&[5])).await;
                    answer(&mut send, progress(7)).await;
                    kill.notified().await;
                    conn.close(0u32.into(), b"killed");
                }
                _ => {
                    answer(&mut send, events(&[8, 9])).await;
                    answer(&mut send, events(&[10])).await;
                    answer(&mut send, events(&[11, 12])).await;
                    while let Ok(Some(ctl)) =
                        proto::frame::read::<_, WatchControl>(&mut recv, 1 << 20).await
                    {
                        match ctl {
                            WatchControl::Progress => answer(&mut send, progress(12)).await,
                            WatchControl::Cancel => {
                                let canceled = WatchResponse {
                                    canceled: true,
                                    ..Default::default()
                                };
                                answer(&mut send, watch_answer(canceled)).await;
                                send.finish().expect("finish");
                                return;
                            }
                        }
                    }
                }
            }
        })
    });
    let node = start_streaming(dir.path(), no_requests(), Some(streams));
    let client = Client::connect(options(node.addr, TlsFiles::in_dir(dir.path(), "root")))
        .await
        .expect("connect");

    let mut watcher = client.watch("k").start_revision(1).await.expect("created");
    assert_eq!(watcher.created_header().revision, 12);
    let (mut delivered, mut notified) = (Vec::new(), Vec::new());
    while delivered.last() != Some(&12) {
        let resp = next(&mut watcher).await.expect("open").expect("response");
        if resp.is_progress_notify() {
            notified.push(resp.header.revision);
            kill.notify_one();
        }
        delivered.extend(revisions(&resp));
    }
    assert_eq!(delivered, [1, 2, 2, 3, 4, 5, 8, 9, 10, 11, 12]);
    assert_eq!(notified, [7]);
    assert_eq!(*starts.lock().expect("lock"), [1, 4, 8]);

    watcher.request_progress().expect("progress");
    let resp = next(&mut watcher).await.expect("open").expect("progress");
    assert!(resp.is_progress_notify());
    assert_eq!(resp.header.revision, 12);
    watcher.cancel();
    assert!(next(&mut watcher).await.is_none(), "ends after a cancel");
    assert!(matches!(watcher.request_progress(), Err(Error::WatchEnded)));
    assert_eq!(
        starts.lock().expect("lock").len(),
        3,
        "no resume after a cancel"
    );
}

#[tokio::test]
async fn a_compacted_revision_ends_the_watch_with_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let starts = Arc::new(Mutex::new(Vec::new()));
    let node_starts = starts.clone();
    let streams: Arc<StreamScript> = Arc::new(move |req, _conn, mut send, _recv| {
        let starts = node_starts.clone();
        Box::pin(async move {
            let Request::Watch(w) = req else { return };
            match record(&starts, &w) {
                0 => answer(&mut send, compacted(5)).await,
                1 => {
                    answer(&mut send, created(9)).await;
                    answer(&mut send, events(&[6])).await;
                }
                // Compacted while the client was away.
                _ => answer(&mut send, compacted(9)).await,
            }
            send.finish().expect("finish");
        })
    });
    let node = start_streaming(dir.path(), no_requests(), Some(streams));
    let client = Client::connect(options(node.addr, TlsFiles::in_dir(dir.path(), "root")))
        .await
        .expect("connect");

    let err = client
        .watch("k")
        .start_revision(2)
        .await
        .expect_err("compacted");
    assert!(
        matches!(
            err,
            Error::WatchCompacted {
                compact_revision: 5
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    let mut watcher = client.watch("k").start_revision(6).await.expect("created");
    let resp = next(&mut watcher).await.expect("open").expect("events");
    assert_eq!(revisions(&resp), [6]);
    let err = next(&mut watcher)
        .await
        .expect("an error")
        .expect_err("compacted");
    assert!(
        matches!(
            err,
            Error::WatchCompacted {
                compact_revision: 9
            }
        ),
        "{err:?}"
    );
    assert!(next(&mut watcher).await.is_none(), "not retried");
    assert_eq!(*starts.lock().expect("lock"), [2, 6, 7]);
}

fn keep_alive_answer(id: i64) -> Answer {
    Ok(Response::LeaseKeepAlive(LeaseKeepAliveResponse {
        header: ResponseHeader::default(),
        id,
        ttl: 1,
    }))
}

#[tokio::test]
async fn the_keep_alive_helper_survives_a_dead_node_and_stops_when_the_lease_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let (opened, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (node_opened, node_answered) = (opened.clone(), answered.clone());
    let streams: Arc<StreamScript> = Arc::new(move |req, conn, mut send, mut recv| {
        let (opened, answered) = (node_opened.clone(), node_answered.clone());
        Box::pin(async move {
            let Request::LeaseKeepAlive(first) = req else {
                return;
            };
            let stream = opened.fetch_add(1, Ordering::SeqCst);
            let mut refreshes_here = 0;
            loop {
                refreshes_here += 1;
                if stream == 0 && refreshes_here == 3 {
                    // The node dies with a refresh in flight.
                    conn.close(0u32.into(), b"killed");
                    return;
                }
                if answered.load(Ordering::SeqCst) == 4 {
                    answer(&mut send, Err(proto::Error::LeaseNotFound(first.id))).await;
                    send.finish().expect("finish");
                    return;
                }
                answered.fetch_add(1, Ordering::SeqCst);
                answer(&mut send, keep_alive_answer(first.id)).await;
                let Ok(Some(LeaseKeepAliveRequest { id })) =
                    proto::frame::read::<_, LeaseKeepAliveRequest>(&mut recv, 1 << 20).await
                else {
                    return;
                };
                assert_eq!(id, first.id);
            }
        })
    });
    let node = start_streaming(dir.path(), no_requests(), Some(streams));
    let client = Client::connect(options(node.addr, TlsFiles::in_dir(dir.path(), "root")))
        .await
        .expect("connect");

    let mut handle = client.keep_lease_alive(0x694d77aa9e38260f);
    assert_eq!(handle.id(), 0x694d77aa9e38260f);
    tokio::time::timeout(PATIENCE, handle.gone())
        .await
        .expect("the lease is reported gone");
    assert_eq!(handle.status(), KeepAliveStatus::Gone);
    assert_eq!(answered.load(Ordering::SeqCst), 4);
    assert_eq!(
        opened.load(Ordering::SeqCst),
        2,
        "reopened once after the kill"
    );
}

#[tokio::test]
async fn dropping_the_keep_alive_handle_ends_its_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let ended = Arc::new(tokio::sync::Notify::new());
    let node_ended = ended.clone();
    let streams: Arc<StreamScript> = Arc::new(move |req, _conn, mut send, mut recv| {
        let ended = node_ended.clone();
        Box::pin(async move {
            let Request::LeaseKeepAlive(first) = req else {
                return;
            };
            loop {
                answer(&mut send, keep_alive_answer(first.id)).await;
                let next = proto::frame::read::<_, LeaseKeepAliveRequest>(&mut recv, 1 << 20).await;
                if !matches!(next, Ok(Some(_))) {
                    ended.notify_one();
                    return;
                }
            }
        })
    });
    let node = start_streaming(dir.path(), no_requests(), Some(streams));
    let client = Client::connect(options(node.addr, TlsFiles::in_dir(dir.path(), "root")))
        .await
        .expect("connect");
    let mut handle = client.keep_lease_alive(7);
    let status = tokio::time::timeout(PATIENCE, handle.changed())
        .await
        .expect("a refresh");
    let KeepAliveStatus::Alive { ttl, refreshes, .. } = status else {
        panic!("expected a refresh, got {status}");
    };
    assert_eq!((ttl, refreshes), (1, 1));
    drop(handle);
    tokio::time::timeout(PATIENCE, ended.notified())
        .await
        .expect("the node sees the stream end");
    // The client itself is still usable.
    let mut stream = client.lease_keep_alive(7);
    assert_eq!(stream.keep_alive().await.expect("refresh").ttl, 1);
}

fn put_hinting(revision: i64, leader: String) -> Option<Answer> {
    Some(Ok(Response::Put(PutResponse {
        header: ResponseHeader {
            revision,
            leader_hint: Some(leader),
            ..Default::default()
        },
        prev_kv: None,
    })))
}

#[tokio::test]
async fn a_leader_hint_moves_later_requests_to_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let leader = start(dir.path(), Arc::new(|_, _| put_ok(7)));
    let hint = leader.addr.to_string();
    let follower = start(
        dir.path(),
        Arc::new(move |_, _| put_hinting(6, hint.clone())),
    );
    let client = Client::connect(options(follower.addr, TlsFiles::in_dir(dir.path(), "root")))
        .await
        .expect("connect");
    let first = client
        .put("k", "v")
        .await
        .expect("put through the follower");
    assert_eq!(first.header.revision, 6);
    assert_eq!(
        client.leader().await.map(|l| l.to_string()),
        Some(leader.addr.to_string())
    );
    // The leader is dialled in the background; requests go on meanwhile.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while leader.seen.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never moved to the leader"
        );
        client.put("k", "v").await.expect("put");
    }
    let asked_follower = follower.seen.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(client.put("k", "v").await.expect("put").header.revision, 7);
    }
    assert_eq!(follower.seen.load(Ordering::SeqCst), asked_follower);
}

#[tokio::test]
async fn an_unreachable_hinted_leader_does_not_hold_up_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let (_dead, dead) = dead();
    let follower = start(
        dir.path(),
        Arc::new(move |_, _| put_hinting(6, dead.to_string())),
    );
    // Dialling the dead leader would take far longer than a request may.
    let opts = options(follower.addr, TlsFiles::in_dir(dir.path(), "root"))
        .connect_timeout(Duration::from_secs(600))
        .request_timeout(Duration::from_secs(5));
    let client = Client::connect(opts).await.expect("connect");
    for _ in 0..5 {
        client
            .put("k", "v")
            .await
            .expect("put through the follower");
    }
    assert_eq!(follower.seen.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn the_request_size_limit_is_an_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let node = start(dir.path(), Arc::new(|_, _| put_ok(2)));
    let tls = TlsFiles::in_dir(dir.path(), "root");
    let value = vec![b'x'; proto::DEFAULT_MAX_REQUEST_BYTES];
    let client = Client::connect(options(node.addr, tls.clone()))
        .await
        .expect("connect");
    let err = client
        .put("k", value.clone())
        .await
        .expect_err("over the default");
    assert!(matches!(err, Error::RequestTooLarge { .. }), "{err:?}");
    assert_eq!(node.seen.load(Ordering::SeqCst), 0);
    let roomy = options(node.addr, tls).max_request_bytes(4 << 20);
    let client = Client::connect(roomy).await.expect("connect");
    client
        .put("k", value)
        .await
        .expect("within the raised limit");
    assert_eq!(node.seen.load(Ordering::SeqCst), 1);
}

/// A named write whose first answer was lost keeps being sent until the request timeout,
/// past `max_attempts`: giving up with the node's retryable error would hide that the first
/// copy may have been applied. The timeout then says the outcome is unknown and names the
/// endpoint tried. Other requests stop at `max_attempts` with the node's error.
#[tokio::test]
async fn a_write_of_unknown_outcome_says_so_and_names_the_endpoints_tried() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let tls = TlsFiles::in_dir(dir.path(), "root");
    let node = start(
        dir.path(),
        Arc::new(|n, _| match n {
            0 => None,
            _ => Some(Err(proto::Error::Unavailable {
                reason: "electing".into(),
            })),
        }),
    );
    let opts = options(node.addr, tls.clone())
        .request_timeout(Duration::from_secs(2))
        .max_attempts(2);
    let client = Client::connect(opts.clone()).await.expect("connect");
    let err = client.put("k", "v").await.expect_err("never applied");
    let Error::Timeout {
        tried,
        outcome_unknown,
        ..
    } = &err
    else {
        panic!("expected a timeout, got {err:?}");
    };
    assert!(*outcome_unknown, "{err}");
    assert!(err.outcome_unknown());
    assert_eq!(tried, &[node.addr.to_string()]);
    let text = err.to_string();
    assert!(text.contains("outcome unknown"), "{text}");
    assert!(text.contains(&node.addr.to_string()), "{text}");
    assert!(
        node.seen.load(Ordering::SeqCst) > 2,
        "retried past max_attempts"
    );

    // A read stops at max_attempts with the node's own (retryable) error.
    let before = node.seen.load(Ordering::SeqCst);
    let err = client.get("k").await.expect_err("unavailable");
    let Error::Server(proto::Error::Unavailable { .. }) = &err else {
        panic!("expected the node's Unavailable, got {err:?}");
    };
    assert!(!err.outcome_unknown());
    assert_eq!(node.seen.load(Ordering::SeqCst) - before, 2);

    // Without exactly-once, a lost answer ends the write at once, outcome unknown.
    let dropper = start(dir.path(), Arc::new(|_, _| None));
    let unnamed = Client::connect(options(dropper.addr, tls).exactly_once(false))
        .await
        .expect("connect");
    let err = unnamed.put("k", "v").await.expect_err("answer lost");
    assert!(err.outcome_unknown(), "{err:?}");
    assert_eq!(dropper.seen.load(Ordering::SeqCst), 1, "never sent again");
}

/// A per-client request timeout ([`Client::with_timeout`]) applies to the requests made
/// through that handle only.
#[tokio::test]
async fn with_timeout_bounds_the_requests_of_its_handle() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let node = start(
        dir.path(),
        Arc::new(|_, _| {
            Some(Err(proto::Error::Unavailable {
                reason: "electing".into(),
            }))
        }),
    );
    let opts = options(node.addr, TlsFiles::in_dir(dir.path(), "root"))
        .request_timeout(Duration::from_secs(30))
        .max_attempts(u32::MAX);
    let client = Client::connect(opts).await.expect("connect");
    let quick = client.with_timeout(Duration::from_millis(300));
    assert_eq!(quick.request_timeout(), Duration::from_millis(300));
    assert_eq!(client.request_timeout(), Duration::from_secs(30));
    let err = quick.get("k").await.expect_err("unavailable");
    let Error::Timeout { after, .. } = err else {
        panic!("expected the handle's timeout, got {err:?}");
    };
    assert_eq!(after, Duration::from_millis(300));
}

/// While refreshes fail (here: the node answers `Unavailable` to every new keep-alive
/// stream for a while), the handle says it is retrying, since when, and when the last
/// refresh succeeded; once the node answers again it is alive again.
#[tokio::test]
async fn a_failing_keep_alive_reports_retrying_then_alive() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let opened = Arc::new(AtomicUsize::new(0));
    let node_opened = opened.clone();
    let streams: Arc<StreamScript> = Arc::new(move |req, _conn, mut send, mut recv| {
        let opened = node_opened.clone();
        Box::pin(async move {
            let Request::LeaseKeepAlive(first) = req else {
                return;
            };
            let n = opened.fetch_add(1, Ordering::SeqCst);
            // Stream 0 refreshes once, then breaks; streams 1..12 are refused; later ones
            // serve.
            if (1..12).contains(&n) {
                answer(
                    &mut send,
                    Err(proto::Error::Unavailable {
                        reason: "no leader".into(),
                    }),
                )
                .await;
                return;
            }
            loop {
                answer(&mut send, keep_alive_answer(first.id)).await;
                if n == 0 {
                    return;
                }
                let next = proto::frame::read::<_, LeaseKeepAliveRequest>(&mut recv, 1 << 20).await;
                let Ok(Some(_)) = next else {
                    return;
                };
            }
        })
    });
    let node = start_streaming(dir.path(), no_requests(), Some(streams));
    let opts = options(node.addr, TlsFiles::in_dir(dir.path(), "root"))
        .request_timeout(Duration::from_millis(300));
    let client = Client::connect(opts).await.expect("connect");
    let mut handle = client.keep_lease_alive(9);
    let retrying = tokio::time::timeout(PATIENCE, async {
        loop {
            if let status @ KeepAliveStatus::Retrying { .. } = handle.changed().await {
                return status;
            }
        }
    })
    .await
    .expect("a retrying status");
    let KeepAliveStatus::Retrying { last_refresh, .. } = &retrying else {
        unreachable!("matched above");
    };
    assert_eq!(last_refresh.map(|(_, ttl)| ttl), Some(1));
    let text = retrying.to_string();
    assert!(text.starts_with("retrying since "), "{text}");
    assert!(text.contains("last refresh"), "{text}");
    let alive = tokio::time::timeout(PATIENCE, async {
        loop {
            if let status @ KeepAliveStatus::Alive { .. } = handle.changed().await {
                return status;
            }
        }
    })
    .await
    .expect("alive again");
    assert!(alive.to_string().starts_with("alive: TTL 1s"), "{alive}");
}

/// A watch tells its owner where it stands: live on the node, resuming (from which
/// revision, why) while its stream is down and the node refuses to create it again, live
/// again, and ended after a cancel.
#[tokio::test]
async fn a_watch_reports_resuming_while_it_is_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let opened = Arc::new(AtomicUsize::new(0));
    let node_opened = opened.clone();
    let streams: Arc<StreamScript> = Arc::new(move |req, _conn, mut send, mut recv| {
        let opened = node_opened.clone();
        Box::pin(async move {
            let Request::Watch(_) = req else { return };
            let n = opened.fetch_add(1, Ordering::SeqCst);
            if (1..8).contains(&n) {
                let refused = Err(proto::Error::Unavailable {
                    reason: "no leader".into(),
                });
                answer(&mut send, refused).await;
                return;
            }
            answer(&mut send, created(3)).await;
            if n == 0 {
                answer(&mut send, events(&[3])).await;
                send.finish().expect("finish");
                return;
            }
            // The client's cancel: answered as the node does.
            if let Ok(Some(WatchControl::Cancel)) =
                proto::frame::read::<_, WatchControl>(&mut recv, 1 << 20).await
            {
                let canceled = WatchResponse {
                    canceled: true,
                    ..Default::default()
                };
                answer(&mut send, watch_answer(canceled)).await;
                send.finish().expect("finish");
            }
        })
    });
    let node = start_streaming(dir.path(), no_requests(), Some(streams));
    let client = Client::connect(options(node.addr, TlsFiles::in_dir(dir.path(), "root")))
        .await
        .expect("connect");
    let mut watcher = client.watch("k").start_revision(3).await.expect("created");
    assert_eq!(
        watcher.state(),
        WatchState::Live {
            endpoint: node.addr.to_string()
        }
    );
    let mut states = watcher.states();
    let state = until(&mut states, resuming).await;
    let WatchState::Resuming { from_revision, .. } = state else {
        unreachable!("matched above");
    };
    assert_eq!(from_revision, 4, "after the last delivered event");
    until(&mut states, live).await;
    assert_eq!(
        revisions(&next(&mut watcher).await.expect("open").expect("events")),
        [3]
    );
    watcher.cancel();
    until(&mut states, |s| *s == WatchState::Ended).await;
}

fn resuming(state: &WatchState) -> bool {
    match state {
        WatchState::Resuming { .. } => true,
        WatchState::Live { .. } | WatchState::Ended => false,
    }
}

fn live(state: &WatchState) -> bool {
    match state {
        WatchState::Live { .. } => true,
        WatchState::Resuming { .. } | WatchState::Ended => false,
    }
}

/// Waits (up to [`PATIENCE`]) for the watcher's state to become one that `want` accepts.
async fn until(
    states: &mut tokio::sync::watch::Receiver<WatchState>,
    want: fn(&WatchState) -> bool,
) -> WatchState {
    let state = tokio::time::timeout(PATIENCE, states.wait_for(want))
        .await
        .expect("the state in time")
        .expect("the watch task reports its end first");
    state.clone()
}

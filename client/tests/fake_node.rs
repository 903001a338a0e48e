//! The client against a scripted in-process QUIC node: the wire exchange, leader
//! redirects, retries, the no-resend rule for writes, certificate refusal, and dialling
//! past dead endpoints.
//! (Tests against a real `etchd` live in the workspace's `tests/`.)

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etch_client::proto::pki::{Identity, InitOptions, TlsFiles, init_dir};
use etch_client::proto::{self, PutResponse, RangeResponse, Request, Response, ResponseHeader};
use etch_client::{Client, ClientOptions, Error};

/// What the fake node does with request number `n` (from 0): answer, or drop the
/// connection without answering (`None`).
type Script = dyn Fn(usize, &Request) -> Option<Result<Response, proto::Error>> + Send + Sync;

struct FakeNode {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
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
    let identity = Identity::load(&TlsFiles::in_dir(dir, "n1")).expect("node identity");
    let tls = identity
        .server_config(None, proto::ALPN_CLIENT)
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
            let (script, counter) = (script.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let Ok(Some(req)) = proto::frame::read::<_, Request>(&mut recv, 1 << 20).await
                    else {
                        return;
                    };
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
async fn retries_unavailable_but_never_resends_an_unknown_write() {
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

    // The node drops the connection after reading the request: a write is not re-sent…
    let dropper = start(
        dir.path(),
        Arc::new(|n, _| match n {
            0 => None,
            _ => Some(Ok(Response::Range(RangeResponse::default()))),
        }),
    );
    let client = Client::connect(options(dropper.addr, tls.clone()))
        .await
        .expect("connect");
    let err = client.put("k", "v").await.expect_err("outcome unknown");
    assert!(
        matches!(err, Error::ConnectionLost { sent: true, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(dropper.seen.load(Ordering::SeqCst), 1);
    // …but a read is.
    client.get("k").await.expect("read retried");
    assert_eq!(dropper.seen.load(Ordering::SeqCst), 2);
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

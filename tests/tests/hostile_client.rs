//! Hostile clients against a real etchd (issue 12, finding 3): a raw QUIC client with a
//! valid certificate that crafts frames and misuses streams and connections. Each attack
//! has its expected typed outcome; after each, the node still answers a normal request and
//! its resident memory stays below [`RSS_BOUND_MB`].
//!
//! The node's limits are set low (short deadlines, small caps) so that each attack meets
//! them within a second or two; the defaults are the same code with larger numbers.

use std::sync::Arc;
use std::time::Duration;

use etch_client::{Client, ClientOptions};
use etch_proto::codes;
use etch_proto::{
    self as proto, ALPN_CLIENT, RangeRequest, Request, Response, StatusRequest, frame,
};
use etch_tests::{Cluster, etchctl_with, raw_exchange, raw_tls, rss_mib, wait_for_async};

/// Resident memory a node may not pass during the attacks on request frames and must be
/// back under once any attack is over, in MiB. An idle debug node holds ~35 MiB.
const RSS_BOUND_MB: u64 = 300;

/// Peak resident memory while a client never reads its answers (100 ranges of 4 MB on one
/// connection), in MiB. The node holds at most a connection budget (64 MiB) of encoded
/// answers plus the large ranges being built (two at a time, `node::route::LARGE_RANGES`);
/// peaks of 110-120 MiB were measured, 200-430 MiB when up to 16 were built at once. The
/// unbounded code held every answer twice (response and frame): 100 x 4 MB is 800 MB, and
/// the finding's 200 x 6 MB reached 1.2 GB.
const UNREAD_PEAK_BOUND_MB: u64 = 300;

/// Samples a process's RSS every 20 ms until the returned handle is asked for the peak.
struct RssPeak {
    stop: Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl RssPeak {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss_mib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(rss_mib(pid))
        });
        RssPeak { stop, sampler }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.sampler.join().expect("sampler")
    }
}

/// Dials the node as `principal` with `transport` (keep-alives, flow control windows).
async fn dial(
    cluster: &Cluster,
    principal: &str,
    transport: quinn::TransportConfig,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let tls = raw_tls(&cluster.client_tls(principal), ALPN_CLIENT);
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    let endpoint =
        quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).expect("bind UDP");
    let addr = cluster.nodes[0].endpoint().parse().expect("address");
    endpoint
        .connect_with(config, addr, "localhost")
        .expect("start a connection")
        .await
}

async fn dial_plain(cluster: &Cluster, principal: &str) -> quinn::Connection {
    dial(cluster, principal, quinn::TransportConfig::default())
        .await
        .expect("dial")
}

fn status_frame() -> Vec<u8> {
    frame::encode(&Request::Status(StatusRequest {}), usize::MAX).expect("encode")
}

/// One Status exchange on `conn` succeeds.
async fn answers_status(conn: &quinn::Connection) -> bool {
    let status = status_frame();
    let answer = tokio::time::timeout(Duration::from_secs(10), raw_exchange(conn, &status));
    matches!(answer.await, Ok(Ok(Some(Ok(Response::Status(_))))))
}

/// The node answers a normal SDK write and read, and etchctl, and is under the RSS bound.
async fn still_serves(cluster: &Cluster, what: &str) {
    let client = cluster.client().await;
    client
        .put("after", what)
        .await
        .expect("put after the attack");
    let got = client.get("after").await.expect("get after the attack");
    assert_eq!(got.kvs[0].value, what.as_bytes());
    let out = cluster.etchctl(&["get", "after"]);
    assert!(out.status.success(), "etchctl after {what}: {out:?}");
    let pid = cluster.nodes[0].pid().expect("running");
    let rss = rss_mib(pid);
    eprintln!("after {what}: RSS {rss} MiB");
    assert!(rss < RSS_BOUND_MB, "RSS {rss} MiB after {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_frames_get_typed_answers_and_slow_or_partial_ones_hit_the_read_deadline() {
    let cluster = Cluster::single_with(&["--client-read-timeout", "1000"]);
    let pid = cluster.nodes[0].pid().expect("running");
    let conn = dial_plain(&cluster, "root").await;

    // Oversize length prefix, garbage body, truncated frame.
    let answer = raw_exchange(&conn, &u32::MAX.to_be_bytes())
        .await
        .expect("an answer");
    assert!(
        matches!(
            answer,
            Some(Err(proto::Error::TooLarge {
                size: 0xffff_ffff,
                ..
            }))
        ),
        "{answer:?}"
    );
    let garbage = [0, 0, 0, 3, 0xee, 0xee, 0xee];
    let answer = raw_exchange(&conn, &garbage).await.expect("an answer");
    assert!(
        matches!(answer, Some(Err(proto::Error::InvalidArgument(_)))),
        "{answer:?}"
    );
    let answer = raw_exchange(&conn, &[0, 0, 0, 9, 1])
        .await
        .expect("the stream ends");
    assert_eq!(answer, None);

    // A slow sender: one byte of a Status request every 300 ms. The node stops the stream
    // at its read deadline (the old code waited for ever and answered).
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    let slow = tokio::spawn(async move {
        for byte in status_frame() {
            if send.write_all(&[byte]).await.is_err() {
                return send.stopped().await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let _ = send.finish();
        send.stopped().await
    });
    let stopped = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("stopped well before the whole request trickled in")
        .expect("task");
    assert_eq!(
        stopped.expect("stopped").map(|c| c.into_inner()),
        Some(codes::stream::READ_TIMEOUT.into())
    );
    let reset = recv.read_to_end(1024).await;
    assert!(
        matches!(reset, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(c))) if c.into_inner() == u64::from(codes::stream::READ_TIMEOUT)),
        "{reset:?}"
    );

    // Partial frames held open: 100 streams each announce 1.5 MiB and send 1 MiB of it.
    let rss = RssPeak::start(pid);
    let mut held = Vec::new();
    for _ in 0..100 {
        let (mut send, recv) = conn.open_bi().await.expect("open");
        held.push(tokio::spawn(async move {
            let mut partial = (1536u32 * 1024).to_be_bytes().to_vec();
            partial.resize(4 + (1 << 20), 7);
            let _ = send.write_all(&partial).await;
            let stopped = send.stopped().await;
            drop(recv);
            stopped.ok().flatten().map(|c| c.into_inner())
        }));
    }
    for task in held {
        let code = tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("every partial frame is stopped at the read deadline")
            .expect("task");
        assert_eq!(code, Some(codes::stream::READ_TIMEOUT.into()));
    }
    let peak = rss.peak();
    eprintln!("partial frames: peak RSS {peak} MiB");
    assert!(
        peak < RSS_BOUND_MB,
        "peak RSS {peak} MiB under partial frames"
    );

    assert!(
        answers_status(&conn).await,
        "the same connection still serves"
    );
    still_serves(&cluster, "crafted frames").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_its_answers_is_bounded() {
    let cluster = Cluster::single_with(&["--client-write-timeout", "2000"]);
    let pid = cluster.nodes[0].pid().expect("running");
    // 40 keys of 100 KB: each range answers 4 MB.
    let client = cluster.client().await;
    for i in 0..40 {
        client
            .put(format!("big/{i:02}"), vec![b'v'; 100_000])
            .await
            .expect("put a large value");
    }
    let baseline = rss_mib(pid);

    // A client that withholds QUIC flow control: 64 KiB for all of its streams together.
    let mut transport = quinn::TransportConfig::default();
    transport
        .receive_window(65_536u32.into())
        .stream_receive_window(16_384u32.into());
    let conn = dial(&cluster, "root", transport).await.expect("dial");
    let range = frame::encode(
        &Request::Range(RangeRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            ..Default::default()
        }),
        usize::MAX,
    )
    .expect("encode");
    let rss = RssPeak::start(pid);
    let mut streams = Vec::new();
    for _ in 0..100 {
        let (mut send, recv) = conn.open_bi().await.expect("open");
        send.write_all(&range).await.expect("send the range");
        send.finish().expect("finish");
        streams.push(recv);
    }
    // Meanwhile another client is served.
    client
        .put("other", "served")
        .await
        .expect("another client writes");
    assert_eq!(client.get("other").await.expect("get").count, 1);
    // Every answer is dropped: refused for want of room, or reset at the write deadline.
    for mut recv in streams {
        let reset = tokio::time::timeout(Duration::from_secs(30), recv.received_reset())
            .await
            .expect("the node gives up on an unread answer");
        let code = reset.expect("reset").map(|c| c.into_inner());
        assert!(
            code == Some(codes::stream::UNREAD_RESPONSES.into())
                || code == Some(codes::stream::WRITE_TIMEOUT.into()),
            "{code:?}"
        );
    }
    let peak = rss.peak();
    conn.close(0u32.into(), b"done");
    eprintln!("never reading: baseline {baseline} MiB, peak RSS {peak} MiB");
    assert!(
        peak < UNREAD_PEAK_BOUND_MB,
        "peak RSS {peak} MiB under unread answers"
    );
    still_serves(&cluster, "unread answers").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_flood_waits_for_free_streams() {
    let cluster = Cluster::single_with(&["--max-client-streams", "16"]);
    let conn = dial_plain(&cluster, "root").await;
    // 16 streams with half a request each take every stream the connection may open...
    let mut held = Vec::new();
    for _ in 0..16 {
        let (mut send, recv) = conn.open_bi().await.expect("open");
        send.write_all(&[0, 0, 1, 0, 1]).await.expect("write");
        held.push((send, recv));
    }
    // ... so a 17th cannot be opened until one ends (the old cap was 1024).
    let seventeenth = tokio::time::timeout(Duration::from_millis(500), conn.open_bi()).await;
    assert!(seventeenth.is_err(), "a 17th stream was opened");
    drop(held);
    // 500 requests at once on one connection: each waits for a stream and is answered.
    let mut flood = Vec::new();
    for _ in 0..500 {
        let conn = conn.clone();
        flood.push(tokio::spawn(async move { answers_status(&conn).await }));
    }
    for task in flood {
        assert!(
            task.await.expect("task"),
            "a flooded request went unanswered"
        );
    }
    still_serves(&cluster, "a stream flood").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_flood_is_refused_with_a_reason() {
    let cluster = Cluster::single_with(&[
        "--max-client-connections",
        "5",
        "--max-client-connections-per-principal",
        "3",
    ]);
    // alice may hold three connections; the fourth is closed with the reason.
    let mut alice = Vec::new();
    for _ in 0..3 {
        let conn = dial_plain(&cluster, "alice").await;
        assert!(answers_status(&conn).await, "an admitted connection serves");
        alice.push(conn);
    }
    let fourth = dial(&cluster, "alice", quinn::TransportConfig::default()).await;
    let closed = match fourth {
        Ok(conn) => tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("the fourth connection is closed"),
        Err(e) => e,
    };
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code.into_inner() == u64::from(codes::close::TOO_MANY_FOR_PRINCIPAL)
            && String::from_utf8_lossy(&c.reason).contains("principal alice (limit 3)")),
        "{closed:?}"
    );
    // The SDK and etchctl say why.
    let opts = ClientOptions::new([cluster.nodes[0].endpoint()], cluster.client_tls("alice"))
        .request_timeout(Duration::from_secs(3));
    let sdk = match Client::connect(opts).await {
        Ok(client) => client.get("k").await.map(drop),
        Err(e) => Err(e),
    };
    let message = anyhow_like(&sdk);
    assert!(
        message.contains("too many connections for principal alice"),
        "{message}"
    );
    let out = etchctl_with(
        &cluster.nodes[0].endpoint(),
        &cluster.client_tls("alice"),
        &["get", "k"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("too many connections for principal alice"),
        "{stderr}"
    );

    // Flood the node as root: past its cap of 5 a connection is closed with the node's reason
    // (fewer than 2 may fit: a connection of the harness's start-up probe may still count).
    let mut root = Vec::new();
    let refused = loop {
        assert!(root.len() <= 2, "more than 5 connections admitted");
        let conn = dial_plain(&cluster, "root").await;
        if answers_status(&conn).await {
            root.push(conn);
            continue;
        }
        break conn.close_reason().expect("closed");
    };
    assert!(
        matches!(&refused, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code.into_inner() == u64::from(codes::close::TOO_MANY_CONNECTIONS)),
        "{refused:?}"
    );
    // Those admitted are still served, and a freed place is taken again.
    for conn in alice.iter().chain(&root) {
        assert!(
            answers_status(conn).await,
            "an admitted connection stopped serving"
        );
    }
    alice.pop().expect("one").close(0u32.into(), b"bye");
    wait_for_async(
        "a place for alice again",
        Duration::from_secs(10),
        || async {
            let conn = dial_plain(&cluster, "alice").await;
            answers_status(&conn).await.then_some(())
        },
    )
    .await;
    drop(root);
    drop(alice);
    still_serves(&cluster, "a connection flood").await;
}

/// Formats an SDK result's error with its sources, as etchctl prints it.
fn anyhow_like(result: &Result<(), etch_client::Error>) -> String {
    let Err(e) = result else {
        return "no error".into();
    };
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_closed_even_with_keep_alives() {
    let cluster = Cluster::single_with(&["--client-idle-timeout", "1000"]);
    let chatty = || {
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_millis(200)));
        transport
    };
    let idle = dial(&cluster, "root", chatty()).await.expect("dial");
    let watching = dial(&cluster, "root", chatty()).await.expect("dial");
    assert!(answers_status(&idle).await);
    // A watch is an open stream: its connection is never idle, however quiet.
    let mut watch = etch_tests::RawWatch::open(
        &watching,
        proto::watch::WatchCreateRequest {
            key: b"w".to_vec(),
            ..Default::default()
        },
    )
    .await
    .expect("open a watch");
    let created = watch.next().await.expect("created");
    assert!(created.is_some_and(|c| c.created));

    let closed = tokio::time::timeout(Duration::from_secs(10), idle.closed())
        .await
        .expect("the idle connection is closed despite its keep-alives");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code.into_inner() == u64::from(codes::close::IDLE)),
        "{closed:?}"
    );
    assert_eq!(
        watching.close_reason(),
        None,
        "the watching connection was closed"
    );
    let client = cluster.client().await;
    client.put("w", "event").await.expect("put");
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch still delivers")
        .expect("an event");
    assert!(event.is_some_and(|e| e.events.len() == 1));
    still_serves(&cluster, "idle connections").await;
}

/// Snapshot streams (`snapshot save`) that nobody reads: each holds at most a bounded
/// buffer, no more than two stream at once (a third is refused at once with the reason),
/// both are reset at the write deadline, and then a snapshot is served again. A client that
/// is not root is refused.
#[tokio::test(flavor = "multi_thread")]
async fn snapshots_nobody_reads_are_bounded_refused_past_two_and_reset() {
    let cluster = Cluster::single_with(&["--client-write-timeout", "1000"]);
    let pid = cluster.nodes[0].pid().expect("running");
    let client = cluster.client().await;
    // 8 MB of values: far more than a stream's flow-control window.
    for i in 0..8 {
        client
            .put(format!("big/{i}"), vec![b'v'; 1_000_000])
            .await
            .expect("put a large value");
    }
    let snapshot =
        frame::encode(&Request::Snapshot(Default::default()), usize::MAX).expect("encode");
    let open = |conn: quinn::Connection| {
        let snapshot = snapshot.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await.expect("open");
            send.write_all(&snapshot).await.expect("send");
            send.finish().expect("finish");
            let first: Option<Result<Response, proto::Error>> =
                frame::read(&mut recv, proto::DEFAULT_MAX_RESPONSE_BYTES)
                    .await
                    .expect("the first answer");
            (first.expect("an answer"), recv)
        }
    };
    let mut transport = quinn::TransportConfig::default();
    transport
        .receive_window(65_536u32.into())
        .stream_receive_window(16_384u32.into());
    let conn = dial(&cluster, "root", transport).await.expect("dial");
    let rss = RssPeak::start(pid);
    let (first, mut a) = open(conn.clone()).await;
    assert!(matches!(first, Ok(Response::Snapshot(_))), "{first:?}");
    let (second, mut b) = open(conn.clone()).await;
    assert!(matches!(second, Ok(Response::Snapshot(_))), "{second:?}");
    let (third, _) = open(conn.clone()).await;
    match third {
        Err(proto::Error::Unavailable { reason }) => {
            assert!(reason.contains("already streaming 2 snapshots"), "{reason}");
        }
        other => panic!("a third snapshot at once: {other:?}"),
    }
    let (denied, _) = open(dial_plain(&cluster, "alice").await).await;
    match denied {
        Err(proto::Error::PermissionDenied(_)) => {}
        other => panic!("a snapshot for alice: {other:?}"),
    }
    // Neither is read: both are reset at the write deadline.
    for recv in [&mut a, &mut b] {
        let reset = tokio::time::timeout(Duration::from_secs(30), recv.received_reset())
            .await
            .expect("the node gives up on an unread snapshot");
        let code = reset.expect("reset").map(|c| c.into_inner());
        assert_eq!(code, Some(codes::stream::WRITE_TIMEOUT.into()));
    }
    let peak = rss.peak();
    eprintln!("unread snapshots: peak RSS {peak} MiB");
    assert!(
        peak < RSS_BOUND_MB,
        "peak RSS {peak} MiB under unread snapshots"
    );
    // The slots are free again: a whole snapshot streams to a reader.
    let (got, saved) = wait_for_async("a snapshot slot", Duration::from_secs(10), || {
        let client = &client;
        async move {
            let mut saved = Vec::new();
            let got = client.snapshot(&mut saved).await.ok()?;
            Some((got, saved))
        }
    })
    .await;
    assert_eq!(got.bytes, saved.len() as u64);
    assert!(got.bytes > 8_000_000, "{got:?}");
    still_serves(&cluster, "unread snapshots").await;
}

//! Hostile watchers (issue 12, finding 4): watch streams whose responses are never read must
//! not make a node hold memory in proportion to what they are sent, and must still get every
//! revision, in order, once they read again.
//!
//! Before the fix, 5 such watchers with `prev_kv` and 150 puts of 1 MiB took a node from
//! 27 MB to 1.37 GB: each watcher's queue held 128 revisions, each event deep-copied per
//! watcher (value and previous value: 2 MiB a revision).

use std::time::{Duration, Instant};

use etch_client::proto::{Request, Response};
use etch_proto::watch::{EventType, WatchCreateRequest, WatchResponse};
use etch_proto::{ALPN_CLIENT, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES, frame};
use etch_tests::{Answer, Cluster, quic_dial, raw_tls, settled_rss_mib};

const WATCHERS: usize = 5;
const PUTS: usize = 150;
const VALUE: usize = 1 << 20;
/// Keys the puts cycle over, so that most puts replace a 1 MiB value (a 1 MiB `prev_kv`).
const KEYS: usize = 10;
/// The bound on the node's peak RSS. The node idles at about 30 MB; a watcher's queue may
/// hold 16 MiB (shared with the others), a blocked stream one response of 2 MiB, and the
/// store its memtables and cache.
const RSS_BOUND_KIB: u64 = 400 * 1024;

/// A raw watch stream: the created response was read, nothing after it until [`read_until`].
struct Stalled {
    _conn: quinn::Connection,
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
}

async fn open_watch(cluster: &Cluster) -> Stalled {
    open_watch_from(cluster, 0).await
}

/// [`open_watch`] from revision `start` (0: from now).
async fn open_watch_from(cluster: &Cluster, start: i64) -> Stalled {
    let tls = raw_tls(&cluster.client_tls("root"), ALPN_CLIENT);
    let conn = quic_dial(&cluster.nodes[0].endpoint(), tls)
        .await
        .expect("dial the node");
    let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
    let watch = Request::Watch(WatchCreateRequest {
        key: b"big/".to_vec(),
        range_end: b"big0".to_vec(),
        prev_kv: true,
        start_revision: start,
        ..Default::default()
    });
    let bytes = frame::encode(&watch, DEFAULT_MAX_REQUEST_BYTES).expect("encode");
    send.write_all(&bytes).await.expect("send the watch");
    let created = next_response(&mut recv).await;
    assert!(created.created, "the first response creates the watch");
    Stalled {
        _conn: conn,
        _send: send,
        recv,
    }
}

async fn next_response(recv: &mut quinn::RecvStream) -> WatchResponse {
    let answer: Answer = frame::read(recv, DEFAULT_MAX_RESPONSE_BYTES)
        .await
        .expect("a frame")
        .expect("the stream stays open");
    match answer {
        Ok(Response::Watch(resp)) => resp,
        other => panic!("expected a watch response, got {other:?}"),
    }
}

/// Peak and current resident set size of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .expect("field in /proc/PID/status");
        line.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("a number of KiB")
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_watchers_with_large_values_keep_memory_bounded_and_lose_nothing() {
    let cluster = Cluster::single();
    let pid = cluster.nodes[0].pid().expect("the node runs");
    // A 10 s request timeout: 1 MiB puts on a debug build share 2 cores with other builds.
    let client = cluster.root_client();

    let mut stalled = Vec::new();
    for _ in 0..WATCHERS {
        stalled.push(open_watch(&cluster).await);
    }
    let (_, before) = memory_kib(pid);

    let started = Instant::now();
    let mut revisions = Vec::with_capacity(PUTS);
    for i in 0..PUTS {
        let key = format!("big/{}", i % KEYS);
        let value = vec![b'a' + (i % 26) as u8; VALUE];
        let put = client
            .put(key, value)
            .await
            .expect("the node accepts the put");
        revisions.push(put.header.revision);
    }
    let put_time = started.elapsed();

    // The node keeps serving while the watchers stall.
    let got = client.get("big/0").await.expect("the node serves reads");
    assert_eq!(got.kvs.len(), 1);
    assert_eq!(got.kvs[0].value.len(), VALUE);

    let (peak, now) = memory_kib(pid);
    eprintln!(
        "{WATCHERS} stalled watchers, {PUTS} puts of 1 MiB in {put_time:?}: \
         RSS {before} KiB before, peak {peak} KiB, now {now} KiB"
    );
    assert!(
        peak < RSS_BOUND_KIB,
        "peak RSS {peak} KiB is over the bound of {RSS_BOUND_KIB} KiB"
    );

    // One stalled watcher reads again: every revision, once, in order, with its prev_kv.
    let mut watcher = stalled.pop().expect("a watcher");
    let last = *revisions.last().expect("puts were made");
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(40), async {
        while seen.last() != Some(&last) {
            let resp = next_response(&mut watcher.recv).await;
            assert!(!resp.canceled, "nothing was compacted: {resp:?}");
            if resp.is_progress_notify() {
                continue;
            }
            assert_eq!(resp.events.len(), 1, "one put a revision");
            let event = &resp.events[0];
            let i = seen.len();
            assert_eq!(event.kind, EventType::Put);
            assert_eq!(event.kv.key, format!("big/{}", i % KEYS).into_bytes());
            assert_eq!(event.kv.value.len(), VALUE);
            assert_eq!(event.kv.value[0], b'a' + (i % 26) as u8);
            match &event.prev_kv {
                None => assert!(i < KEYS, "revision {} lacks prev_kv", resp.header.revision),
                Some(prev) => {
                    assert!(i >= KEYS, "a first put has no previous version");
                    assert_eq!(prev.value[0], b'a' + ((i - KEYS) % 26) as u8);
                }
            }
            seen.push(resp.header.revision);
        }
    })
    .await
    .expect("the resumed watcher catches up within 40 s");
    assert_eq!(seen, revisions, "every revision once, in order");

    let (peak, now) = memory_kib(pid);
    eprintln!("after one watcher caught up: peak {peak} KiB, now {now} KiB");
    assert!(
        peak < RSS_BOUND_KIB,
        "peak RSS {peak} KiB while catching up"
    );
    drop(stalled);
}

/// Many stalled watch streams on one connection: each would hold the frame it is writing
/// (2 MiB with `prev_kv`), but a connection's watches build and write at most
/// `watch_stream::DELIVERY_BYTES` of frames at once, the rest waiting before they copy
/// anything.
/// Before, 200 such streams pinned 228 MiB under 30 puts of 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_stalled_watch_streams_of_one_connection_pin_a_bounded_amount() {
    const STREAMS: usize = 200;
    let cluster = Cluster::single_with(&["--client-write-timeout", "60000"]);
    let pid = cluster.nodes[0].pid().expect("the node runs");
    let client = cluster.root_client();
    let tls = raw_tls(&cluster.client_tls("root"), ALPN_CLIENT);
    let conn = quic_dial(&cluster.nodes[0].endpoint(), tls)
        .await
        .expect("dial the node");
    let mut stalled = Vec::new();
    for _ in 0..STREAMS {
        let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
        let watch = Request::Watch(WatchCreateRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            prev_kv: true,
            ..Default::default()
        });
        let bytes = frame::encode(&watch, DEFAULT_MAX_REQUEST_BYTES).expect("encode");
        send.write_all(&bytes).await.expect("send the watch");
        assert!(next_response(&mut recv).await.created);
        stalled.push((send, recv));
    }
    let (_, before) = memory_kib(pid);
    let mut first = 0;
    for i in 0..30 {
        let put = client
            .put(format!("big/{}", i % KEYS), vec![b'v'; VALUE])
            .await
            .expect("the node accepts the put");
        if first == 0 {
            first = put.header.revision;
        }
    }
    // A watcher of another connection reads every event from the first put: the node has
    // dealt them all out by then.
    let mut reader = open_watch_from(&cluster, first).await;
    let mut seen = 0;
    while seen < 30 {
        let resp = tokio::time::timeout(Duration::from_secs(30), next_response(&mut reader.recv))
            .await
            .expect("events within 30 s");
        seen += resp.events.len();
    }
    let at_once = memory_kib(pid).1 / 1024;
    let before = before / 1024;
    let settled = settled_rss_mib(pid, before + 200, etch_tests::RSS_SETTLE).await;
    eprintln!(
        "{STREAMS} stalled streams: RSS {before} MiB before, {at_once} MiB once the events \
         were out, {settled} MiB settled"
    );
    assert!(
        settled < before + 200,
        "{STREAMS} stalled streams pin {} MiB (before {before} MiB)",
        settled.saturating_sub(before)
    );
    drop(stalled);
}

/// A connection's stalled watch streams do not hold up its other watches while what they
/// hold is small: 20 streams left unread, each with more 64 KiB values than its window
/// takes, and another watch of the same connection still gets its event at once. (With a
/// count of 16 responses per connection instead of bytes, the 20 blocked writes held them
/// all and that watch waited for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_of_small_values_do_not_hold_up_the_connections_other_watches() {
    let cluster = Cluster::single();
    let client = cluster.root_client();
    let tls = raw_tls(&cluster.client_tls("root"), ALPN_CLIENT);
    let conn = quic_dial(&cluster.nodes[0].endpoint(), tls)
        .await
        .expect("dial the node");
    let open = |key: &'static [u8], end: &'static [u8]| {
        let conn = conn.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
            let watch = Request::Watch(WatchCreateRequest {
                key: key.to_vec(),
                range_end: end.to_vec(),
                ..Default::default()
            });
            let bytes = frame::encode(&watch, DEFAULT_MAX_REQUEST_BYTES).expect("encode");
            send.write_all(&bytes).await.expect("send the watch");
            assert!(next_response(&mut recv).await.created);
            (send, recv)
        }
    };
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(open(b"mid/", b"mid0").await);
    }
    let mut other = open(b"other", b"").await;
    // 40 values of 64 KiB: 2.5 MiB for each stalled stream, past its window.
    for i in 0..40 {
        client
            .put(format!("mid/{i}"), vec![b'm'; 64 * 1024])
            .await
            .expect("the node accepts the put");
    }
    client.put("other", "seen").await.expect("put other");
    let resp = tokio::time::timeout(Duration::from_secs(20), next_response(&mut other.1))
        .await
        .expect("the other watch gets its event within 20 s");
    assert_eq!(resp.events.len(), 1);
    assert_eq!(resp.events[0].kv.value, b"seen");
    drop(stalled);
}

//! Watch and lease with real etchd processes and raw protocol streams: watchers recording
//! every event across a leader kill and a follower restart under concurrent writes, checked
//! against the committed history for etcd's six watch guarantees; lease expiry deleting
//! keys; a leader change that must not expire a live lease early.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etch_proto::lease::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use etch_proto::watch::{EventType, WatchControl, WatchCreateRequest};
use etch_proto::{
    Error, PutRequest, RangeRequest, Request, RequestOp, Response, Revision, TxnRequest, prefix_end,
};
use etch_tests::{Answer, Cluster, RawClient, RawWatch, wait_for};
use tokio::runtime::Runtime;

const PREFIX: &[u8] = b"w/";

fn raw_client(cluster: &Cluster) -> Arc<RawClient> {
    let endpoints = cluster.nodes.iter().map(|n| n.endpoint()).collect();
    Arc::new(RawClient::new(endpoints, &cluster.client_tls("root")))
}

/// Index of the node that says it is the leader, among the running ones.
fn leader_index(rt: &Runtime, client: &RawClient) -> usize {
    wait_for("a leader", Duration::from_secs(30), || {
        (0..client.endpoints().len()).find(|&i| {
            let addr = client.endpoints()[i].clone();
            let status =
                rt.block_on(client.request_to(&addr, &Request::Status(Default::default())));
            matches!(status, Ok(Ok(Response::Status(s))) if s.leader == Some(s.header.member_id))
        })
    })
}

fn put(key: &[u8], value: &[u8], lease: i64) -> Request {
    Request::Put(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..PutRequest::default()
    })
}

/// What one watcher saw.
#[derive(Default)]
struct Seen {
    /// Per response: its revision and the keys of its events, in order.
    responses: Vec<(Revision, Vec<Vec<u8>>)>,
    reconnects: usize,
    /// The progress notification asked for at the end, with the number of responses seen
    /// before it.
    bookmark: Option<(Revision, usize)>,
}

impl Seen {
    fn last(&self) -> Revision {
        self.responses.last().map_or(0, |(rev, _)| *rev)
    }
}

/// Watches `PREFIX` from revision 1 on node `first`, moving to the next node whenever the
/// stream breaks and resuming from the last revision seen + 1. Once `done` holds a
/// revision and everything up to it was seen, asks for a progress notification and stops.
async fn record(
    client: Arc<RawClient>,
    first: usize,
    seen: Arc<Mutex<Seen>>,
    done: Arc<AtomicU64>,
) {
    let n = client.endpoints().len();
    for i in first.. {
        let addr = client.endpoints()[i % n].clone();
        let Ok(conn) = client.conn(&addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let start = seen.lock().expect("watcher record").last() + 1;
        let req = WatchCreateRequest {
            key: PREFIX.to_vec(),
            range_end: prefix_end(PREFIX),
            start_revision: start,
            ..Default::default()
        };
        let Ok(mut watch) = RawWatch::open(&conn, req).await else {
            seen.lock().expect("watcher record").reconnects += 1;
            continue;
        };
        let mut asked = false;
        loop {
            let finish = done.load(Ordering::SeqCst) as Revision;
            if !asked && finish > 0 && seen.lock().expect("watcher record").last() >= finish {
                asked = watch.control(WatchControl::Progress).await.is_ok();
            }
            let next = tokio::time::timeout(Duration::from_millis(500), watch.next()).await;
            let resp = match next {
                Err(_) => continue,
                Ok(Ok(Some(resp))) => resp,
                Ok(_) => break,
            };
            let mut seen = seen.lock().expect("watcher record");
            assert!(!resp.canceled, "watch canceled: {}", resp.cancel_reason);
            if resp.created {
                assert_eq!(
                    resp.header.revision,
                    start - 1,
                    "created names the revision before start"
                );
                continue;
            }
            if resp.is_progress_notify() {
                if asked {
                    let count = seen.responses.len();
                    seen.bookmark = Some((resp.header.revision, count));
                    return;
                }
                continue;
            }
            let rev = resp.header.revision;
            assert!(
                rev > seen.last(),
                "ordered and unique: {rev} after {}",
                seen.last()
            );
            for event in &resp.events {
                assert_eq!(
                    event.kv.mod_revision, rev,
                    "atomic: an event of another revision"
                );
                assert_eq!(event.kind, EventType::Put);
            }
            seen.responses
                .push((rev, resp.events.iter().map(|e| e.kv.key.clone()).collect()));
        }
        seen.lock().expect("watcher record").reconnects += 1;
    }
}

#[test]
fn watchers_see_every_committed_change_across_leader_kill_and_follower_restart() {
    let mut cluster = Cluster::new(3, &[]);
    let rt = Runtime::new().expect("runtime");
    let client = raw_client(&cluster);
    let done = Arc::new(AtomicU64::new(0));
    let watchers: Vec<_> = (0..3)
        .map(|i| {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let task = rt.spawn(record(client.clone(), i, seen.clone(), done.clone()));
            (seen, task)
        })
        .collect();

    // The writer: unique keys, every fifth write a txn of two keys (one revision).
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
        rt.spawn(async move {
            for i in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let key = format!("w/{i:05}").into_bytes();
                let req = if i % 5 == 0 {
                    let mut other = key.clone();
                    other.push(b'+');
                    Request::Txn(TxnRequest {
                        compare: vec![],
                        success: vec![
                            RequestOp::Put(PutRequest {
                                key: key.clone(),
                                value: b"t".to_vec(),
                                ..Default::default()
                            }),
                            RequestOp::Put(PutRequest {
                                key: other,
                                value: b"t".to_vec(),
                                ..Default::default()
                            }),
                        ],
                        failure: vec![],
                    })
                } else {
                    put(&key, b"v", 0)
                };
                if client.request(&req, Duration::from_secs(20)).await.is_ok() {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let await_writes = |more: u64| {
        let target = acked.load(Ordering::SeqCst) + more;
        wait_for(
            &format!("{target} acknowledged writes"),
            Duration::from_secs(60),
            || (acked.load(Ordering::SeqCst) >= target).then_some(()),
        );
    };

    await_writes(30);
    let leader = leader_index(&rt, &client);
    cluster.nodes[leader].kill();
    await_writes(30);
    cluster.restart(leader);
    // Restart the follower that was never killed: its own watcher is still on it.
    let killed = leader;
    let leader = leader_index(&rt, &client);
    let follower = (0..3)
        .find(|&i| i != leader && i != killed)
        .unwrap_or((leader + 1) % 3);
    cluster.restart(follower);
    await_writes(30);
    stop.store(true, Ordering::SeqCst);
    rt.block_on(writer).expect("writer");

    // The committed history of the prefix: every key was put once, so its mod revision is
    // the revision of the write that created it.
    let range = Request::Range(RangeRequest {
        key: PREFIX.to_vec(),
        range_end: prefix_end(PREFIX),
        ..Default::default()
    });
    let Ok(Response::Range(state)) = rt.block_on(client.request(&range, Duration::from_secs(20)))
    else {
        panic!("the final range failed");
    };
    let mut truth: BTreeMap<Revision, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for kv in &state.kvs {
        truth
            .entry(kv.mod_revision)
            .or_default()
            .insert(kv.key.clone());
    }
    let last = *truth.keys().last().expect("some writes committed");
    assert!(
        truth.len() >= 90,
        "at least the acknowledged writes: {}",
        truth.len()
    );
    done.store(last as u64, Ordering::SeqCst);

    let mut reconnects = 0;
    for (i, (seen, task)) in watchers.into_iter().enumerate() {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), task).await })
            .unwrap_or_else(|_| panic!("watcher {i} did not catch up with revision {last}"))
            .expect("watcher task");
        let seen = seen.lock().expect("watcher record");
        reconnects += seen.reconnects;
        // Reliable and atomic: exactly the committed revisions, each whole in one response.
        let got: BTreeMap<Revision, BTreeSet<Vec<u8>>> = seen
            .responses
            .iter()
            .map(|(rev, keys)| (*rev, keys.iter().cloned().collect()))
            .collect();
        assert_eq!(
            got.len(),
            seen.responses.len(),
            "watcher {i}: a revision twice"
        );
        assert_eq!(
            got, truth,
            "watcher {i}: events differ from the committed history"
        );
        // Bookmarkable: the progress notification came after every event up to it.
        let (bookmark, count) = seen.bookmark.expect("a progress notification");
        assert!(
            bookmark >= last,
            "watcher {i}: progress at {bookmark} < {last}"
        );
        assert_eq!(
            count,
            truth.range(..=bookmark).count(),
            "watcher {i}: events after the bookmark"
        );
    }
    // Resumable: the watchers on the killed and restarted nodes had to resume elsewhere.
    assert!(reconnects >= 2, "only {reconnects} reconnects");
}

fn time_to_live(rt: &Runtime, client: &RawClient, id: i64) -> LeaseTimeToLiveResponse {
    let req = Request::LeaseTimeToLive(LeaseTimeToLiveRequest { id, keys: true });
    match rt.block_on(client.request(&req, Duration::from_secs(20))) {
        Ok(Response::LeaseTimeToLive(ttl)) => ttl,
        other => panic!("time-to-live failed: {other:?}"),
    }
}

fn count(rt: &Runtime, client: &RawClient, prefix: &[u8]) -> i64 {
    let range = Request::Range(RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        count_only: true,
        ..Default::default()
    });
    match rt.block_on(client.request(&range, Duration::from_secs(20))) {
        Ok(Response::Range(r)) => r.count,
        other => panic!("range failed: {other:?}"),
    }
}

fn grant(rt: &Runtime, client: &RawClient, addr: &str, ttl: i64) -> i64 {
    let req = Request::LeaseGrant(LeaseGrantRequest { ttl, id: 0 });
    match rt.block_on(client.request_to(addr, &req)) {
        Ok(Ok(Response::LeaseGrant(g))) => {
            assert!(g.id > 0);
            g.id
        }
        other => panic!("grant failed: {other:?}"),
    }
}

#[test]
fn lease_expiry_deletes_its_keys_in_one_revision() {
    let cluster = Cluster::new(3, &[]);
    let rt = Runtime::new().expect("runtime");
    let client = raw_client(&cluster);
    let leader = leader_index(&rt, &client);
    let follower = client.endpoints()[(leader + 1) % 3].clone();

    // Granted through a follower (forwarded), with the minimum TTL.
    let id = grant(&rt, &client, &follower, 1);
    assert_eq!(
        time_to_live(&rt, &client, id).granted_ttl,
        etch_proto::lease::MIN_LEASE_TTL
    );
    let mut last_put = 0;
    for key in [b"l/a".as_slice(), b"l/b"] {
        let answer: Answer =
            rt.block_on(client.request(&put(key, b"v", id), Duration::from_secs(20)));
        let Ok(Response::Put(put)) = answer else {
            panic!("put with the lease: {answer:?}");
        };
        last_put = put.header.revision;
    }
    let unknown = rt.block_on(client.request(&put(b"l/c", b"v", id + 1), Duration::from_secs(20)));
    assert_eq!(unknown, Err(Error::LeaseNotFound(id + 1)));

    // A watcher on the follower, from after the puts (a follower's "now" may not have
    // applied them yet).
    let conn = rt.block_on(client.conn(&follower)).expect("connect");
    let mut watch = rt
        .block_on(RawWatch::open(
            &conn,
            WatchCreateRequest {
                key: b"l/".to_vec(),
                range_end: prefix_end(b"l/"),
                start_revision: last_put + 1,
                ..Default::default()
            },
        ))
        .expect("watch");
    let created = rt
        .block_on(watch.next())
        .expect("created")
        .expect("created");
    assert!(created.created);

    // Keep-alives on one stream to the follower (forwarded) keep the lease past its TTL.
    let (mut send, mut recv) = rt.block_on(conn.open_bi()).expect("stream");
    let granted_at = Instant::now();
    let mut frames = 0;
    while granted_at.elapsed() < Duration::from_secs(7) {
        let written = if frames == 0 {
            let first = Request::LeaseKeepAlive(LeaseKeepAliveRequest { id });
            rt.block_on(etch_proto::frame::write(&mut send, &first, 1 << 20))
        } else {
            rt.block_on(etch_proto::frame::write(
                &mut send,
                &LeaseKeepAliveRequest { id },
                1 << 20,
            ))
        };
        written.expect("keep-alive frame");
        let answer: Option<Answer> = rt
            .block_on(etch_proto::frame::read(&mut recv, 1 << 20))
            .expect("keep-alive answer");
        match answer {
            Some(Ok(Response::LeaseKeepAlive(k))) => assert_eq!((k.id, k.ttl), (id, 5)),
            other => panic!("keep-alive failed: {other:?}"),
        }
        frames += 1;
        // Time passing is the point here, not synchronisation.
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(count(&rt, &client, b"l/"), 2, "kept alive past its TTL");
    let _ = send.finish();

    // Without keep-alives it expires: both deletes arrive in one response, one revision.
    let resp = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), watch.next()).await })
        .expect("the lease to expire within 30 s")
        .expect("a watch response")
        .expect("a watch response");
    let keys: Vec<&[u8]> = resp.events.iter().map(|e| e.kv.key.as_slice()).collect();
    assert_eq!(keys, [b"l/a".as_slice(), b"l/b"]);
    assert!(
        resp.events
            .iter()
            .all(|e| e.kind == EventType::Delete && e.kv.mod_revision == resp.header.revision)
    );
    assert_eq!(count(&rt, &client, b"l/"), 0);
    assert_eq!(time_to_live(&rt, &client, id).ttl, -1);
}

#[test]
fn a_leader_change_does_not_expire_a_live_lease_early() {
    const TTL: u64 = 8;
    let mut cluster = Cluster::new(3, &[]);
    let rt = Runtime::new().expect("runtime");
    let client = raw_client(&cluster);
    let leader = leader_index(&rt, &client);
    let leader_addr = client.endpoints()[leader].clone();
    let follower = client.endpoints()[(leader + 1) % 3].clone();
    let id = grant(&rt, &client, &leader_addr, TTL as i64);
    let answer = rt.block_on(client.request(&put(b"svc/a", b"up", id), Duration::from_secs(20)));
    let put_revision = match &answer {
        Ok(Response::Put(p)) => p.header.revision,
        other => panic!("put with the lease: {other:?}"),
    };

    // Watch the key from a follower that stays up: the delete event tells when it expired.
    // It starts after the put, which the follower may not have applied yet.
    let conn = rt.block_on(client.conn(&follower)).expect("connect");
    let watch = WatchCreateRequest {
        key: b"svc/a".to_vec(),
        start_revision: put_revision + 1,
        ..Default::default()
    };
    let mut watch = rt.block_on(RawWatch::open(&conn, watch)).expect("watch");
    assert!(
        rt.block_on(watch.next())
            .expect("created")
            .expect("created")
            .created
    );

    // A last keep-alive on the leader, then the leader dies at once.
    let last_keep_alive = Instant::now();
    let keep = Request::LeaseKeepAlive(LeaseKeepAliveRequest { id });
    match rt.block_on(client.request_to(&leader_addr, &keep)) {
        Ok(Ok(Response::LeaseKeepAlive(k))) => assert_eq!(k.ttl, TTL as i64),
        other => panic!("keep-alive failed: {other:?}"),
    }
    cluster.nodes[leader].kill();

    // The new leader knows no deadline and must give the lease a full TTL from its takeover,
    // which comes after the last keep-alive: the delete cannot come sooner than TTL after it.
    let resp = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), watch.next()).await })
        .expect("the lease to expire under the new leader within 60 s")
        .expect("a watch response")
        .expect("a watch response");
    let expired_after = last_keep_alive.elapsed();
    assert_eq!(resp.events.len(), 1);
    assert_eq!(resp.events[0].kind, EventType::Delete);
    assert!(
        expired_after >= Duration::from_secs(TTL),
        "expired {expired_after:?} after the last keep-alive, before its TTL of {TTL} s"
    );
    assert_eq!(time_to_live(&rt, &client, id).ttl, -1);
    assert_eq!(count(&rt, &client, b"svc/"), 0);
}

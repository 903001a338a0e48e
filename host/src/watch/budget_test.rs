//! The byte budget of live queues, beyond the golden script `byte_budget.txt`: shared events,
//! and a pseudo-random run in which watchers that read at different paces, with small
//! budgets, each still get every revision they want once, in order.

use std::sync::Arc;

use etch_proto::watch::WatchCreateRequest;
use etch_proto::{PutRequest, Request, Revision};
use fjall::Database;
use tempfile::TempDir;

use super::queue::Pop;
use super::{Filter, Hub, Limits, Step, Watcher};
use crate::mvcc::Store;

fn store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::builder(dir.path()).open().expect("open db");
    let store = Store::open(&db).expect("open store");
    (dir, store)
}

/// Limits no test here reaches: 128 revisions and 1 MiB per watcher, 64 MiB per node.
const ROOMY: Limits = Limits {
    revisions: 128,
    bytes: 1 << 20,
    node_bytes: 64 << 20,
};

fn put(store: &Store, hub: &Hub, key: &str, len: usize) -> Revision {
    let req = etch_proto::Mutation::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: vec![b'v'; len],
        ..Default::default()
    });
    store
        .apply(&req, b"entry")
        .expect("storage")
        .expect("the put applies");
    hub.publish().expect("publish");
    store.revision()
}

fn watch(key: &str, end: &str, prev_kv: bool) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        prev_kv,
        ..Default::default()
    }
}

#[test]
fn watchers_share_one_copy_of_each_event() {
    let (_dir, store) = store();
    let hub = Hub::new(store.clone(), ROOMY);
    let every = Arc::new(Filter::new(&watch("\0", "\0", true)));
    let plain = Arc::new(Filter::new(&watch("\0", "\0", false)));
    let one = Arc::new(Filter::new(&watch("a", "", false)));
    let (a, _) = hub.register_now(&every);
    let (b, _) = hub.register_now(&plain);
    let (c, _) = hub.register_now(&one);
    put(&store, &hub, "a", 10_000);
    let pop = |queue: &super::queue::Queue| match queue.try_pop() {
        Pop::Batch(batch) => batch,
        other => panic!("expected a batch, got {other:?}"),
    };
    let (a, b, c) = (pop(&a.queue), pop(&b.queue), pop(&c.queue));
    assert!(
        Arc::ptr_eq(&a.events, &b.events) && Arc::ptr_eq(&a.events, &c.events),
        "one slice of events for every watcher that wants all of them"
    );
}

#[test]
fn stalled_watchers_together_stay_within_the_node_pool() {
    let (_dir, store) = store();
    let limits = Limits {
        revisions: 128,
        bytes: 1 << 20,
        node_bytes: 256 * 1024,
    };
    let hub = Hub::new(store.clone(), limits);
    // 50 watchers, each on its own key, 40 of them never reading: each may queue 1 MiB, so
    // without the node's pool those could pin 40 MiB between them.
    let registrations: Vec<_> = (0..50)
        .map(|i| {
            let filter = Arc::new(Filter::new(&watch(&format!("k{i:02}"), "", false)));
            hub.register_now(&filter).0
        })
        .collect();
    for round in 0..10 {
        for (i, registration) in registrations.iter().enumerate() {
            put(&store, &hub, &format!("k{i:02}"), 20_000 + round);
            if i < 10 {
                while let Pop::Batch(_) = registration.queue.try_pop() {}
            }
            // Charged at most the pool, plus one revision in each queue that was empty.
            assert!(
                hub.queued_bytes() <= 256 * 1024 + 50 * 21_000,
                "round {round}, key {i}: {} bytes queued",
                hub.queued_bytes()
            );
        }
    }
    // The first 10 read after every put: they never hold more than one revision, so the
    // pool never sends them to history; the 40 that never read are sent there.
    let overflowed: Vec<bool> = (registrations.iter())
        .map(|r| r.queue.usage().is_none())
        .collect();
    assert!(overflowed[10..].iter().all(|&o| o), "{overflowed:?}");
    assert!(overflowed[..10].iter().all(|&o| !o), "{overflowed:?}");
    // Reading a queue, and dropping one, give their bytes back to the pool.
    while let Pop::Batch(_) = registrations[0].queue.try_pop() {}
    drop(registrations);
    assert_eq!(hub.queued_bytes(), 0);
}

/// A small deterministic generator (no dependency, same run every time).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn slow_watchers_under_a_small_budget_get_every_revision_once_in_order() {
    let (_dir, store) = store();
    let limits = Limits {
        revisions: 16,
        bytes: 8 * 1024,
        node_bytes: 64 << 20,
    };
    let hub = Hub::new(store.clone(), limits);
    // (filter, how often it reads: one step in `pace` puts on average)
    let specs = [
        (watch("\0", "\0", true), 1),
        (watch("\0", "\0", false), 4),
        (watch("k1", "k3", true), 9),
        (watch("k2", "", true), 40),
        (watch("\0", "\0", true), 1000),
    ];
    let mut watchers: Vec<(Watcher, u64, Vec<Revision>)> = specs
        .iter()
        .map(|(req, pace)| {
            let (watcher, _) = Watcher::open(&hub, req).expect("open");
            (watcher, *pace, Vec::new())
        })
        .collect();
    let mut rng = Lcg(7);
    let mut written: Vec<(Revision, String)> = Vec::new();
    let mut dropped_to_history = 0;
    for _ in 0..600 {
        let key = format!("k{}", rng.below(5));
        let len = rng.below(3000) as usize;
        written.push((put(&store, &hub, &key, len), key));
        for (watcher, pace, seen) in &mut watchers {
            if watcher.queued().is_none() {
                dropped_to_history += 1;
            }
            if rng.below(*pace) == 0 {
                drain(watcher, seen);
            }
        }
    }
    assert!(
        dropped_to_history > 0,
        "the budget sent watchers to history"
    );
    for ((req, _), (watcher, _, seen)) in specs.iter().zip(&mut watchers) {
        drain(watcher, seen);
        let filter = Filter::new(req);
        let wanted: Vec<Revision> = written
            .iter()
            .filter(|(_, key)| filter.wants(&event(key)))
            .map(|(rev, _)| *rev)
            .collect();
        assert_eq!(*seen, wanted, "watcher of {req:?}");
    }
}

fn drain(watcher: &mut Watcher, seen: &mut Vec<Revision>) {
    while let Step::Send(resp) = watcher.step().expect("step") {
        assert!(!resp.canceled, "nothing is compacted");
        if !resp.is_progress_notify() {
            seen.push(resp.header.revision);
        }
    }
}

fn event(key: &str) -> etch_proto::watch::Event {
    etch_proto::watch::Event {
        kind: etch_proto::watch::EventType::Put,
        kv: etch_proto::KeyValue {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        },
        prev_kv: None,
    }
}

/// A watch from now starts after the store's applied revision even while the hub has not
/// published it yet: a client that wrote and then watched is not told of its own write.
#[test]
fn a_watch_from_now_starts_after_what_is_applied_not_what_is_published() {
    let (_dir, store) = store();
    let hub = Hub::new(store.clone(), ROOMY);
    put(&store, &hub, "k", 1);
    // Applied, not yet published (the feed task lags under load).
    let req = Request::Put(PutRequest {
        key: b"k".to_vec(),
        value: b"unpublished".to_vec(),
        ..Default::default()
    });
    let _ = store.apply_request(&req, b"entry").expect("storage");
    let applied = store.revision();
    assert!(hub.published() < applied);
    let (mut watcher, created) =
        Watcher::open(&hub, &watch("k", "", false)).expect("a watch from now");
    assert_eq!(
        created.header.revision, applied,
        "it starts after the applied revision"
    );
    hub.publish().expect("publish");
    let Ok(Step::Idle) = watcher.step() else {
        panic!("the write before the watch is not delivered");
    };
    let later = put(&store, &hub, "k", 2);
    let Ok(Step::Send(resp)) = watcher.step() else {
        panic!("the next write is delivered");
    };
    assert_eq!(resp.events[0].kv.mod_revision, later);
}

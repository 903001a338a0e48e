//! Writes named by a request id apply once: a retry answers what the first did, alone, in
//! a batch of puts and after a snapshot; old and forgotten ids behave as documented.

use etch_proto::{Mutation, PutRequest, Response};

use super::*;
use crate::testing::temp_store;

fn id(client: u64, seq: u64, stamp_ms: u64) -> RequestId {
    RequestId {
        client,
        seq,
        stamp_ms,
    }
}

fn put(key: &str, value: &str) -> Mutation {
    Mutation::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn revision_of(answer: &Recorded) -> i64 {
    match answer {
        Ok(Response::Put(p)) => p.header.revision,
        other => panic!("not a put's answer: {other:?}"),
    }
}

fn version_of(store: &crate::mvcc::Store, key: &str) -> i64 {
    let view = store.view().expect("view");
    view.get(key.as_bytes())
        .expect("get")
        .map_or(0, |kv| kv.version)
}

#[test]
fn a_retried_write_answers_what_the_first_did_and_applies_once() {
    let (_dir, store) = temp_store();
    let first = store
        .apply_once(&put("k", "v1"), None, &id(7, 1, 1000), b"a")
        .expect("storage");
    let again = store
        .apply_once(&put("k", "v1"), None, &id(7, 1, 2000), b"a")
        .expect("storage");
    assert_eq!(first, again);
    assert_eq!(store.revision(), revision_of(&first));
    assert_eq!(version_of(&store, "k"), 1);
    // Another client's seq 1, and this client's seq 2, are other writes.
    store
        .apply_once(&put("k", "v2"), None, &id(8, 1, 1000), b"a")
        .expect("storage")
        .expect("put");
    store
        .apply_once(&put("k", "v3"), None, &id(7, 2, 1000), b"a")
        .expect("storage")
        .expect("put");
    assert_eq!(version_of(&store, "k"), 3);
}

#[test]
fn a_refusal_is_recorded_too() {
    let (_dir, store) = temp_store();
    let with_lease = Mutation::Put(PutRequest {
        key: "k".into(),
        value: "v".into(),
        lease: 42,
        ..Default::default()
    });
    let first = store
        .apply_once(&with_lease, None, &id(1, 1, 0), b"a")
        .expect("storage");
    assert!(first.is_err(), "an unknown lease: {first:?}");
    let again = store
        .apply_once(&with_lease, None, &id(1, 1, 0), b"a")
        .expect("storage");
    assert_eq!(first, again);
}

#[test]
fn a_retry_in_the_same_batch_of_puts_applies_once() {
    let (_dir, store) = temp_store();
    let (a, b) = (
        PutRequest {
            key: "a".into(),
            value: "1".into(),
            ..Default::default()
        },
        PutRequest {
            key: "b".into(),
            value: "2".into(),
            ..Default::default()
        },
    );
    let (first, other) = (id(3, 1, 0), id(3, 2, 0));
    let answers = store
        .apply_puts(
            &[
                (&a, None, Some(&first)),
                (&b, None, Some(&other)),
                (&a, None, Some(&first)),
            ],
            b"a",
        )
        .expect("storage");
    assert_eq!(answers[0], answers[2]);
    assert_eq!(version_of(&store, "a"), 1);
    assert_eq!(store.revision(), revision_of(&answers[1]));
    // And a retry in a later batch, or alone.
    let later = store
        .apply_puts(&[(&b, None, Some(&other))], b"a")
        .expect("storage");
    assert_eq!(later[0], answers[1]);
    let alone = store
        .apply_once(&put("a", "1"), None, &first, b"a")
        .expect("storage");
    assert_eq!(alone, answers[0]);
    assert_eq!(version_of(&store, "b"), 1);
}

#[test]
fn a_request_older_than_the_window_is_refused_not_applied_again() {
    let (_dir, store) = temp_store();
    store
        .apply_once(&put("k", "old"), None, &id(5, 1, 0), b"a")
        .expect("storage")
        .expect("put");
    store
        .apply_once(&put("k", "new"), None, &id(5, 1 + WINDOW, 0), b"a")
        .expect("storage")
        .expect("put");
    let revision = store.revision();
    match store
        .apply_once(&put("k", "old"), None, &id(5, 1, 0), b"a")
        .expect("storage")
    {
        Err(etch_proto::Error::InvalidArgument(why)) => {
            assert!(why.contains("older than"), "{why}")
        }
        other => panic!("a request behind the window: {other:?}"),
    }
    assert_eq!(store.revision(), revision);
    // Inside the window, an unseen id is simply a new write.
    store
        .apply_once(&put("k", "mid"), None, &id(5, 2 + WINDOW / 2, 0), b"a")
        .expect("storage")
        .expect("put");
}

#[test]
fn expiry_forgets_clients_not_seen_since_the_cut_off() {
    let (_dir, store) = temp_store();
    let (quiet, busy) = (id(1, 1, 1_000), id(2, 1, 5_000));
    store
        .apply_once(&put("q", "v"), None, &quiet, b"a")
        .expect("storage")
        .expect("put");
    store
        .apply_once(&put("b", "v"), None, &busy, b"a")
        .expect("storage")
        .expect("put");
    assert_eq!(store.expire_sessions(2_000, b"a").expect("expire"), 1);
    assert_eq!(store.expire_sessions(2_000, b"a").expect("expire"), 0);
    // The busy client is still deduplicated; the forgotten one's retry is a new write.
    store
        .apply_once(&put("b", "v"), None, &busy, b"a")
        .expect("storage")
        .expect("put");
    assert_eq!(version_of(&store, "b"), 1);
    store
        .apply_once(&put("q", "v"), None, &quiet, b"a")
        .expect("storage")
        .expect("put");
    assert_eq!(version_of(&store, "q"), 2);
}

#[test]
fn snapshots_carry_the_recorded_outcomes() {
    let (_dir, store) = temp_store();
    let first = store
        .apply_once(&put("k", "v"), None, &id(9, 1, 0), b"a")
        .expect("storage");
    let mut exported = Vec::new();
    store.export(&mut exported).expect("export");
    let (_dir2, other) = temp_store();
    other
        .import(&mut exported.as_slice(), b"a")
        .expect("import");
    let again = other
        .apply_once(&put("k", "v"), None, &id(9, 1, 0), b"a")
        .expect("storage");
    assert_eq!(first, again);
    assert_eq!(version_of(&other, "k"), 1);
}

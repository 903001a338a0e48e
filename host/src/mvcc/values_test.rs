//! A value is stored once: the live version whole in `kv_current` and a marker in
//! `kv_versions`, rewritten whole in the batch that replaces or deletes the key. Stores
//! written before kept every version whole; they read, and hash, the same.

use etch_proto::{DeleteRangeRequest, KeyValue, Mutation, PutRequest, RangeRequest, Revision};
use fjall::Readable;

use super::keycode::version_key;
use super::layout::{Version, VersionRecord, decode, encode};
use super::*;
use crate::testing::{put, temp_store};

/// The raw `kv_versions` record of `key` at `rev`, decoded.
fn record(store: &Store, key: &str, rev: Revision) -> Option<VersionRecord> {
    let spaces = store.spaces();
    let snap = spaces.db.snapshot();
    snap.get(&spaces.versions, version_key(key.as_bytes(), rev))
        .expect("get")
        .map(|raw| decode(&raw).expect("decode"))
}

/// `key`'s value at `rev` (0: now), through a client's range.
fn value_at(store: &Store, key: &str, rev: Revision) -> Option<Vec<u8>> {
    let req = RangeRequest {
        key: key.into(),
        revision: rev,
        ..Default::default()
    };
    let resp = store.range(&req).expect("storage").expect("range");
    resp.kvs.into_iter().next().map(|kv| kv.value)
}

fn whole(
    key: &str,
    value: &str,
    create: Revision,
    modified: Revision,
    version: i64,
) -> VersionRecord {
    VersionRecord::Full(Version::from_kv(&KeyValue {
        key: key.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        value: value.into(),
        lease: 0,
    }))
}

fn delete(store: &Store, key: &str) {
    let req = Mutation::DeleteRange(DeleteRangeRequest {
        key: key.into(),
        ..Default::default()
    });
    store
        .apply(&req, b"applied")
        .expect("storage")
        .expect("delete");
}

fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

#[test]
fn the_live_version_is_a_marker_until_it_is_replaced_or_deleted() {
    let (_dir, store) = temp_store();
    put(&store, "k", "one"); // revision 2
    assert_eq!(record(&store, "k", 2), Some(VersionRecord::Live));

    put(&store, "k", "two"); // 3
    assert_eq!(record(&store, "k", 2), Some(whole("k", "one", 2, 2, 1)));
    assert_eq!(record(&store, "k", 3), Some(VersionRecord::Live));

    delete(&store, "k"); // 4
    assert_eq!(record(&store, "k", 3), Some(whole("k", "two", 2, 3, 2)));
    assert_eq!(record(&store, "k", 4), Some(VersionRecord::Deleted));

    assert_eq!(value_at(&store, "k", 2).as_deref(), Some(&b"one"[..]));
    assert_eq!(value_at(&store, "k", 3).as_deref(), Some(&b"two"[..]));
    assert_eq!(value_at(&store, "k", 4), None);

    // Watch history reads the same values, and each event's previous version.
    let events = store.watch_events(3).expect("storage").expect("events");
    let [event] = events.as_slice() else {
        panic!("one event at 3: {events:?}");
    };
    assert_eq!(event.kv.value, b"two");
    assert_eq!(
        event.prev_kv.as_ref().map(|kv| kv.value.as_slice()),
        Some(&b"one"[..])
    );
    let events = store.watch_events(4).expect("storage").expect("events");
    let [event] = events.as_slice() else {
        panic!("one event at 4: {events:?}");
    };
    assert_eq!(
        event.prev_kv.as_ref().map(|kv| kv.value.as_slice()),
        Some(&b"two"[..])
    );
}

#[test]
fn a_run_that_writes_a_key_twice_keeps_the_first_whole() {
    let (_dir, store) = temp_store();
    put(&store, "k", "before"); // 2
    let (one, two, other) = (put_req("k", "one"), put_req("k", "two"), put_req("j", "x"));
    let answers = store
        .apply_puts(
            &[(&one, None, None), (&other, None, None), (&two, None, None)],
            b"applied",
        )
        .expect("storage");
    assert!(
        answers.iter().all(std::result::Result::is_ok),
        "{answers:?}"
    );
    // k at 3, j at 4, k at 5.
    assert_eq!(record(&store, "k", 2), Some(whole("k", "before", 2, 2, 1)));
    assert_eq!(record(&store, "k", 3), Some(whole("k", "one", 2, 3, 2)));
    assert_eq!(record(&store, "j", 4), Some(VersionRecord::Live));
    assert_eq!(record(&store, "k", 5), Some(VersionRecord::Live));
    for (rev, value) in [(2, "before"), (3, "one"), (4, "one"), (5, "two")] {
        assert_eq!(value_at(&store, "k", rev), Some(value.into()), "k at {rev}");
    }
}

/// Rewrites every `Live` record whole, as stores written before the marker hold them.
fn to_old_form(store: &Store) {
    let spaces = store.spaces();
    let snap = spaces.db.snapshot();
    let mut batch = spaces.db.batch();
    for item in snap.iter(&spaces.current) {
        let (key, raw) = item.into_inner().expect("current");
        let version: Version = decode(&raw).expect("version");
        let old_form: Option<Version> = Some(version.clone());
        batch.insert(
            &spaces.versions,
            version_key(&key, version.mod_revision),
            encode(&old_form).expect("encode"),
        );
    }
    batch.commit().expect("commit");
}

#[test]
fn a_store_that_kept_every_version_whole_reads_and_hashes_the_same() {
    let (_dir, store) = temp_store();
    put(&store, "k", "one");
    put(&store, "k", "two");
    put(&store, "j", "x");
    let hash = |rev| store.hash_kv(rev).expect("storage").expect("hash").hash;
    let before: Vec<_> = (2..=4)
        .map(|rev| (hash(rev), value_at(&store, "k", rev)))
        .collect();

    to_old_form(&store);
    let Some(VersionRecord::Full(_)) = record(&store, "j", 4) else {
        panic!(
            "the live version of j is not whole: {:?}",
            record(&store, "j", 4)
        );
    };
    let after: Vec<_> = (2..=4)
        .map(|rev| (hash(rev), value_at(&store, "k", rev)))
        .collect();
    assert_eq!(before, after);

    // Writing on: the replaced version, already whole, stays right.
    put(&store, "j", "y");
    assert_eq!(value_at(&store, "j", 4).as_deref(), Some(&b"x"[..]));
    assert_eq!(value_at(&store, "j", 5).as_deref(), Some(&b"y"[..]));
}

#[test]
fn a_live_marker_without_its_version_is_corrupt_data_not_a_wrong_answer() {
    let (_dir, store) = temp_store();
    put(&store, "k", "one"); // 2
    put(&store, "j", "x"); // 3
    let spaces = store.spaces();
    let mut batch = spaces.db.batch();
    batch.remove(&spaces.current, "k");
    batch.commit().expect("commit");
    let req = RangeRequest {
        key: "k".into(),
        revision: 2,
        ..Default::default()
    };
    let Err(Error::Corrupt(why)) = store.range(&req) else {
        panic!("a marker without its version read as data");
    };
    assert!(why.contains("not in kv_current"), "{why}");
}

//! What a read may cost: a range stops at one answer's bytes ([`super::view::MAX_RANGE_BYTES`])
//! instead of building an answer it could never send, a txn's ranges share that budget, and
//! a history reader with a selection reads neither the values of keys it did not select nor
//! more of a huge revision than its budget.

use etch_proto::{
    DeleteRangeRequest, Error as ProtoError, PutRequest, RangeRequest, Request, RequestOp,
    Response, TxnRequest,
};
use fjall::Database;
use tempfile::TempDir;

use super::Store;
use super::view::MAX_RANGE_BYTES;

const MIB: usize = 1 << 20;

fn store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::builder(dir.path()).open().expect("open db");
    let store = Store::open(&db).expect("open store");
    (dir, store)
}

fn apply(store: &Store, req: Request) -> Result<Response, ProtoError> {
    store.apply_request(&req, b"entry").expect("storage")
}

/// `n` keys `prefix/NNN` of `len` bytes each, one revision each.
fn fill(store: &Store, prefix: &str, n: usize, len: usize) {
    for i in 0..n {
        let put = PutRequest {
            key: format!("{prefix}/{i:03}").into_bytes(),
            value: vec![b'v'; len],
            ..Default::default()
        };
        apply(store, Request::Put(put)).expect("put");
    }
}

fn prefix(p: &str) -> RangeRequest {
    let key = format!("{p}/").into_bytes();
    let mut end = key.clone();
    *end.last_mut().expect("not empty") += 1;
    RangeRequest {
        key,
        range_end: end,
        ..Default::default()
    }
}

#[test]
fn a_range_past_one_answer_fails_before_it_holds_more() {
    let (_dir, store) = store();
    // 70 MiB under one prefix: more than one answer can carry.
    fill(&store, "big", 70, MIB);
    let err = store
        .range(&prefix("big"))
        .expect("storage")
        .expect_err("too large");
    assert!(
        matches!(err, ProtoError::TooLarge { size, limit } if limit == MAX_RANGE_BYTES as u64 && size > limit && size < limit + 2 * MIB as u64),
        "{err:?}"
    );
    // What fits is served: a page, the count, the keys.
    let page = store
        .range(&RangeRequest {
            limit: 10,
            ..prefix("big")
        })
        .expect("storage")
        .expect("a page fits");
    assert_eq!((page.kvs.len(), page.count, page.more), (10, 70, true));
    let count = store
        .range(&RangeRequest {
            count_only: true,
            ..prefix("big")
        })
        .expect("storage")
        .expect("a count fits");
    assert_eq!((count.kvs.len(), count.count), (0, 70));
    let keys = store
        .range(&RangeRequest {
            keys_only: true,
            ..prefix("big")
        })
        .expect("storage")
        .expect("the keys fit");
    assert_eq!(keys.kvs.len(), 70);
}

#[test]
fn the_ranges_of_one_txn_share_one_answer() {
    let (_dir, store) = store();
    fill(&store, "a", 40, MIB);
    fill(&store, "b", 40, MIB);
    let txn = |ops: Vec<RequestOp>| {
        Request::Txn(TxnRequest {
            success: ops,
            ..Default::default()
        })
    };
    let one = apply(&store, txn(vec![RequestOp::Range(prefix("a"))]));
    assert!(matches!(one, Ok(Response::Txn(_))), "40 MiB fit: {one:?}");
    let revision = store.revision();
    // Each range fits alone; together they do not, and the txn's put is not applied.
    let both = apply(
        &store,
        txn(vec![
            RequestOp::Put(PutRequest {
                key: b"written".to_vec(),
                value: b"x".to_vec(),
                ..Default::default()
            }),
            RequestOp::Range(prefix("a")),
            RequestOp::Range(prefix("b")),
        ]),
    );
    assert!(matches!(both, Err(ProtoError::TooLarge { .. })), "{both:?}");
    assert_eq!(store.revision(), revision, "a failed txn writes nothing");
}

#[test]
fn a_history_reader_reads_only_what_it_selected_and_its_budget() {
    let (_dir, store) = store();
    fill(&store, "k", 40, 100_000);
    let range = prefix("k");
    let del = apply(
        &store,
        Request::DeleteRange(DeleteRangeRequest {
            key: range.key,
            range_end: range.range_end,
            prev_kv: false,
        }),
    );
    assert!(del.is_ok(), "{del:?}");
    let rev = store.revision();
    let view = store.view().expect("view");
    let one = view
        .watch_events_where(rev, |k| k == b"k/007", usize::MAX)
        .expect("storage")
        .expect("readable");
    assert_eq!(one.events.len(), 1);
    assert_eq!(
        one.bytes,
        2 * 5 + 100_000,
        "both keys and the previous value"
    );
    assert!(!one.cut);
    // A budget of 250 kB stops after the third deleted value (each 100 kB).
    let some = view
        .watch_events_where(rev, |_| true, 250_000)
        .expect("storage")
        .expect("readable");
    assert_eq!(some.events.len(), 3);
    assert!(some.cut);
    let all = view.watch_events(rev).expect("storage").expect("readable");
    assert_eq!(all.len(), 40);
}

//! The first release's frames still read, and are still written, byte for byte.

use super::*;
use crate::{Compare, CompareResult, CompareTarget, lease};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn range() -> RangeRequest {
    RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 7,
        revision: 9,
        keys_only: true,
        serializable: true,
        ..RangeRequest::default()
    }
}

fn put() -> PutRequest {
    PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 5,
        prev_kv: true,
        ..PutRequest::default()
    }
}

fn txn() -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            key: b"c".to_vec(),
            range_end: vec![],
            result: CompareResult::Equal,
            target: CompareTarget::Version(3),
        }],
        success: vec![RequestOp::Range(range()), RequestOp::Put(put())],
        failure: vec![RequestOp::DeleteRange(delete())],
    }
}

fn delete() -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b"d".to_vec(),
        range_end: vec![],
        prev_kv: true,
    }
}

/// Frames written by the first release (before `layout` existed), with what they say.
fn first_release() -> Vec<(&'static str, Request)> {
    let once = |seq, write| {
        Request::Once(OnceRequest {
            client: 1,
            seq,
            write,
        })
    };
    vec![
        ("00016101620e12010001", Request::Range(range())),
        ("01016b01760a01", Request::Put(put())),
        ("0201640001", Request::DeleteRange(delete())),
        (
            "03010163000000060200016101620e1201000101016b01760a01010201640001",
            Request::Txn(txn()),
        ),
        ("05", Request::Status(StatusRequest {})),
        (
            "0b1406",
            Request::LeaseGrant(lease::LeaseGrantRequest { ttl: 10, id: 3 }),
        ),
        ("19010200016b01760a01", once(2, OnceWrite::Put(put()))),
        (
            "19010302010163000000060200016101620e1201000101016b01760a01010201640001",
            once(3, OnceWrite::Txn(txn())),
        ),
        (
            "1901040101640001",
            once(4, OnceWrite::DeleteRange(delete())),
        ),
    ]
}

#[test]
fn first_release_frames_read_and_are_written_unchanged() {
    for (frame, request) in first_release() {
        let read: Request =
            postcard::from_bytes(&unhex(frame)).expect("a first-release frame reads");
        assert_eq!(read, request, "{frame}");
        let written = postcard::to_allocvec(&request).expect("encode");
        assert_eq!(
            hex(&written),
            frame,
            "{request:?} is written in the first layout"
        );
    }
}

#[test]
fn new_fields_travel_in_appended_variants_and_round_trip() {
    let sorted = RangeRequest {
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Mod,
        min_mod_revision: 2,
        max_create_revision: 40,
        ..range()
    };
    let keep = PutRequest {
        value: vec![],
        ignore_value: true,
        ignore_lease: true,
        lease: 0,
        ..put()
    };
    let nested = TxnRequest {
        success: vec![
            RequestOp::Range(sorted.clone()),
            RequestOp::Put(keep.clone()),
            RequestOp::Txn(txn()),
        ],
        ..txn()
    };
    let requests = [
        Request::Range(sorted),
        Request::Put(keep.clone()),
        Request::Txn(nested.clone()),
        Request::Once(OnceRequest {
            client: 9,
            seq: 1,
            write: OnceWrite::Put(keep),
        }),
        Request::Once(OnceRequest {
            client: 9,
            seq: 2,
            write: OnceWrite::Txn(nested),
        }),
    ];
    for request in requests {
        let bytes = postcard::to_allocvec(&request).expect("encode");
        let back: Request = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, request);
    }
    // The appended variants: an older reader refuses them instead of misreading them.
    let bytes = postcard::to_allocvec(&Request::Range(RangeRequest {
        sort_order: SortOrder::Ascend,
        ..range()
    }))
    .expect("encode");
    assert_eq!(bytes[0], 27, "Range2 follows the 27 first variants");
}

#[test]
fn txns_nested_past_the_bound_are_refused_while_read() {
    let nest = |depth: usize| {
        let mut txn = TxnRequest::default();
        for _ in 0..depth {
            txn = TxnRequest {
                success: vec![RequestOp::Txn(txn)],
                ..TxnRequest::default()
            };
        }
        Request::Txn(txn)
    };
    let at_bound = postcard::to_allocvec(&nest(MAX_TXN_DEPTH)).expect("encode");
    let read: Request = postcard::from_bytes(&at_bound).expect("a txn nested to the bound reads");
    assert_eq!(read, nest(MAX_TXN_DEPTH));
    let over = postcard::to_allocvec(&nest(MAX_TXN_DEPTH + 1)).expect("encode");
    let Err(e) = postcard::from_bytes::<Request>(&over) else {
        panic!("a txn nested past the bound was read");
    };
    assert!(!e.to_string().is_empty());
    // A hostile frame: the nesting prefix repeated far past the bound (a txn whose success
    // branch holds one txn, ...) is refused without recursing through it.
    let mut hostile = vec![3u8, 0];
    for _ in 0..100_000 {
        hostile.extend_from_slice(&[1, 3, 0]);
    }
    assert!(postcard::from_bytes::<Request>(&hostile).is_err());
    // The depth count is back to zero: the bound still admits a txn at it.
    postcard::from_bytes::<Request>(&at_bound).expect("the count unwinds after a refusal");
}

#[test]
fn log_entries_of_whole_requests_read_as_mutations() {
    // The writes of the first release's frames are what its log entries hold.
    for (frame, request) in first_release() {
        let bytes = unhex(frame);
        match Mutation::from_request(request) {
            Ok(mutation) => {
                let read: Mutation = postcard::from_bytes(&bytes).expect("a logged write reads");
                assert_eq!(read, mutation, "{frame}");
                let written = postcard::to_allocvec(&mutation).expect("encode");
                assert_eq!(hex(&written), frame, "{mutation:?} is logged as it was");
            }
            Err(request) => {
                // (postcard keeps no message of its own for the refusal.)
                assert!(
                    postcard::from_bytes::<Mutation>(&bytes).is_err(),
                    "{request:?} read as a mutation"
                );
            }
        }
    }
}

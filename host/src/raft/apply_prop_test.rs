//! Property tests: whatever a log entry holds, apply answers it and never panics, and two
//! replicas that apply the same entries agree on every answer and on their hash.
//!
//! The commands are drawn to hit the limits: keys at, just over and far over
//! `MAX_KEY_BYTES` (the 70,000-byte key that once stopped every node), keys full of zero
//! bytes (stored escaped, at twice their length), guards naming such keys, txns with
//! ranges and compares on them, compactions at any revision, leases that exist or not,
//! batches of all of it. Wire bytes are drawn at random too and decoded as every message a
//! node reads from the network.

use etch_proto::lease::{LeaseGrantRequest, LeaseRevokeRequest};
use etch_proto::limits::MAX_KEY_BYTES;
use etch_proto::{
    CompactRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, Mutation,
    PutRequest, RangeRequest, RequestOp, SortOrder, SortTarget, TxnRequest,
};
use openraft::storage::RaftStateMachine;
use proptest::prelude::*;

use super::state_machine::tests::{Node, entry};
use super::types::{Command, Named};
use crate::mvcc::{Guard, Read};

/// Keys: a few short ones that collide, and ones at and around the limits.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), b"b\0".to_vec(), b"c".to_vec()]),
        1 => Just(Vec::new()),
        1 => Just(vec![b'k'; MAX_KEY_BYTES]),
        1 => Just(vec![0; MAX_KEY_BYTES]),
        1 => Just(vec![b'k'; MAX_KEY_BYTES + 1]),
        1 => Just(vec![0; 70_000]),
    ]
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        1 => Just(vec![0]),
        1 => key(),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..8),
        1 => Just(vec![7; 100_000]),
    ]
}

fn lease() -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(0i64), 1 => 1i64..4, 1 => any::<i64>()]
}

fn put() -> impl Strategy<Value = PutRequest> {
    let keep = prop_oneof![4 => Just((false, false)), 1 => (any::<bool>(), any::<bool>())];
    (key(), value(), lease(), any::<bool>(), keep).prop_map(
        |(key, value, lease, prev_kv, (ignore_value, ignore_lease))| PutRequest {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        },
    )
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range() -> impl Strategy<Value = RangeRequest> {
    let order = prop::sample::select(vec![SortOrder::None, SortOrder::Ascend, SortOrder::Descend]);
    let target = prop::sample::select(vec![
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ]);
    let filters =
        prop_oneof![3 => Just((0, 0, 0, 0)), 1 => (0i64..40, 0i64..40, 0i64..40, 0i64..40)];
    (
        key(),
        range_end(),
        -2i64..3,
        -1i64..40,
        order,
        target,
        filters,
    )
        .prop_map(
            |(key, range_end, limit, revision, sort_order, sort_target, filters)| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order,
                sort_target,
                min_mod_revision: filters.0,
                max_mod_revision: filters.1,
                min_create_revision: filters.2,
                max_create_revision: filters.3,
                ..Default::default()
            },
        )
}

fn op() -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        put().prop_map(RequestOp::Put),
        delete().prop_map(RequestOp::DeleteRange),
        range().prop_map(RequestOp::Range),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        any::<i64>().prop_map(CompareTarget::Version),
        any::<i64>().prop_map(CompareTarget::ModRevision),
        any::<i64>().prop_map(CompareTarget::CreateRevision),
        value().prop_map(CompareTarget::Value),
        lease().prop_map(CompareTarget::Lease),
    ];
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ]);
    (key(), range_end(), result, target).prop_map(|(key, range_end, result, target)| Compare {
        key,
        range_end,
        result,
        target,
    })
}

/// A txn whose branches may hold nested txns, a few levels deep.
fn txn() -> impl Strategy<Value = TxnRequest> {
    let flat = (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op(), 0..4),
        prop::collection::vec(op(), 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        });
    flat.prop_recursive(3, 12, 3, |inner| {
        let op = prop_oneof![3 => op(), 1 => inner.prop_map(RequestOp::Txn)];
        (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(op.clone(), 0..3),
            prop::collection::vec(op, 0..3),
        )
            .prop_map(|(compare, success, failure)| TxnRequest {
                compare,
                success,
                failure,
            })
    })
}

/// What a log entry may carry (a read cannot be put in the log: `Mutation` has no variant
/// for one; a read-only txn can).
fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => put().prop_map(Mutation::Put),
        2 => delete().prop_map(Mutation::DeleteRange),
        3 => txn().prop_map(Mutation::Txn),
        1 => range().prop_map(|r| Mutation::Txn(TxnRequest { success: vec![RequestOp::Range(r)], ..TxnRequest::default() })),
        1 => (-5i64..40).prop_map(|revision| Mutation::Compact(CompactRequest { revision, physical: false })),
        1 => (any::<i64>(), 0i64..4).prop_map(|(ttl, id)| Mutation::LeaseGrant(LeaseGrantRequest { ttl, id })),
        1 => lease().prop_map(|id| Mutation::LeaseRevoke(LeaseRevokeRequest { id })),
    ]
}

fn guard() -> impl Strategy<Value = Guard> {
    let read = (key(), range_end(), 0u64..3, 0i64..30).prop_map(
        |(key, range_end, count, max_mod_revision)| Read {
            key,
            range_end,
            count,
            max_mod_revision,
        },
    );
    (0u64..2, prop::collection::vec(read, 0..3)).prop_map(|(bindings_version, reads)| Guard {
        bindings_version,
        reads,
        principal: String::new(),
    })
}

fn single() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => mutation().prop_map(Command::Kv),
        2 => (mutation(), guard()).prop_map(|(request, guard)| Command::Write { request, guard }),
        1 => lease().prop_map(|id| Command::LeaseExpire { id }),
        // Few clients and sequence numbers, so that retries of one id happen.
        2 => (0u64..3, 1u64..4, 0u64..3, put()).prop_map(|(client, seq, stamp, put)| {
            Command::Once {
                id: crate::mvcc::RequestId { client, seq, stamp_ms: stamp * 1000 },
                write: Named::Kv(Mutation::Put(put)),
            }
        }),
        1 => (0u64..3, 1u64..4, delete(), guard()).prop_map(|(client, seq, delete, guard)| {
            Command::Once {
                id: crate::mvcc::RequestId { client, seq, stamp_ms: 0 },
                write: Named::Write { request: Mutation::DeleteRange(delete), guard },
            }
        }),
        1 => (0u64..4).prop_map(|s| Command::SessionsExpire { before_ms: s * 1000 }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => single(),
        1 => prop::collection::vec(single(), 1..6).prop_map(Command::Batch),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = postcard::from_bytes::<Command>(&bytes);
        let _ = postcard::from_bytes::<etch_proto::Request>(&bytes);
        let _ = postcard::from_bytes::<super::wire::Envelope>(&bytes);
        let _ = postcard::from_bytes::<super::wire::PeerResponse>(&bytes);
        let _ = postcard::from_bytes::<Result<etch_proto::Response, etch_proto::Error>>(&bytes);
    }

}

/// Runs `f` on a thread with a 16 MiB stack: proptest's nested strategies for commands
/// (unions of maps of tuples) and serde's debug-build frames take more than a test
/// thread's 2 MiB; a failure inside is raised again here.
fn on_a_big_stack(f: impl FnOnce() + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(f)
        .expect("spawn the property's thread");
    if let Err(failure) = thread.join() {
        std::panic::resume_unwind(failure);
    }
}

#[test]
fn a_truncated_or_flipped_command_never_panics_a_decoder() {
    on_a_big_stack(|| {
        proptest!(|(command in command(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>())| {
            let mut bytes = postcard::to_allocvec(&command).expect("encode");
            let at = flip.index(bytes.len());
            bytes[at] ^= 0x5a;
            let _ = postcard::from_bytes::<Command>(&bytes);
            bytes.truncate(cut.index(bytes.len()));
            let _ = postcard::from_bytes::<Command>(&bytes);
        });
    });
}

#[test]
fn apply_answers_every_command_alike_on_every_replica() {
    on_a_big_stack(|| {
        let config = ProptestConfig {
            cases: 32,
            ..ProptestConfig::default()
        };
        proptest!(config, |(commands in prop::collection::vec(command(), 1..16))| {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let (one, two) = (Node::new(), Node::new());
            let (mut sm_one, mut sm_two) = (one.state_machine(), two.state_machine());
            for (i, command) in commands.into_iter().enumerate() {
                let e = entry(i as u64 + 1, command);
                let a = runtime.block_on(sm_one.apply([e.clone()])).expect("apply");
                let b = runtime.block_on(sm_two.apply([e])).expect("apply");
                prop_assert_eq!(a, b);
            }
            let hash = |r: &Node| r.store.hash_kv(0).expect("hash").expect("hash");
            prop_assert_eq!(hash(&one), hash(&two));
            prop_assert_eq!(one.store.revision(), two.store.revision());
        });
    });
}

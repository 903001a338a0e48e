//! Builders → wire requests, without a server.

use etch_proto::{
    CompactRequest, CompareResult, CompareTarget, DeleteRangeRequest, MemberAddRequest,
    MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, PutRequest, RangeRequest,
    Request, RequestOp, SortOrder, SortTarget, TxnRequest,
};

use crate::client::tests::certs;
use crate::{Client, ClientOptions, Compare, TxnOp};

fn client() -> (tempfile::TempDir, Client) {
    let (dir, tls) = certs();
    let client = Client::new(ClientOptions::new(["127.0.0.1:7379"], tls)).expect("client");
    (dir, client)
}

#[test]
fn put_options_map_to_the_request() {
    let (_dir, c) = client();
    assert_eq!(
        c.put("k", "v").prev_kv().lease(0x1f).into_request(),
        Request::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 0x1f,
            prev_kv: true,
            ..PutRequest::default()
        })
    );
    assert_eq!(
        c.put("k", "").ignore_value().ignore_lease().into_request(),
        Request::Put(PutRequest {
            key: b"k".to_vec(),
            ignore_value: true,
            ignore_lease: true,
            ..PutRequest::default()
        })
    );
    assert!(c.put(vec![0u8, 1], b"x".to_vec()).into_request().is_write());
}

#[test]
fn get_options_map_to_the_request() {
    let (_dir, c) = client();
    let req = c
        .get("/a/")
        .prefix()
        .limit(3)
        .revision(7)
        .keys_only()
        .count_only()
        .serializable()
        .sort(SortTarget::Mod, SortOrder::Descend)
        .mod_revisions(2, 9)
        .create_revisions(1, 0)
        .into_request();
    assert_eq!(
        req,
        Request::Range(RangeRequest {
            key: b"/a/".to_vec(),
            range_end: b"/a0".to_vec(),
            limit: 3,
            revision: 7,
            keys_only: true,
            count_only: true,
            serializable: true,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Mod,
            min_mod_revision: 2,
            max_mod_revision: 9,
            min_create_revision: 1,
            max_create_revision: 0,
        })
    );
    assert!(!req.is_write());
    let Request::Range(r) = c.get("a").from_key().into_request() else {
        panic!("not a range")
    };
    assert_eq!((r.key, r.range_end), (b"a".to_vec(), vec![0]));
    let Request::Range(r) = c.get("").prefix().into_request() else {
        panic!("not a range")
    };
    assert_eq!(
        (r.key, r.range_end),
        (vec![0], vec![0]),
        "empty prefix = all keys"
    );
    let Request::Range(r) = c.get("a").range_end("c").into_request() else {
        panic!("not a range")
    };
    assert_eq!(r.range_end, b"c".to_vec());
}

#[test]
fn delete_and_compact_map_to_the_request() {
    let (_dir, c) = client();
    assert_eq!(
        c.delete("x").prefix().prev_kv().into_request(),
        Request::DeleteRange(DeleteRangeRequest {
            key: b"x".to_vec(),
            range_end: b"y".to_vec(),
            prev_kv: true,
        })
    );
    assert_eq!(
        c.compact(9).physical().into_request(),
        Request::Compact(CompactRequest {
            revision: 9,
            physical: true
        })
    );
}

#[test]
fn txn_maps_compares_and_branches() {
    let (_dir, c) = client();
    let req = c
        .txn()
        .when([
            Compare::value("k", CompareResult::Equal, "v"),
            Compare::mod_revision("m", CompareResult::Greater, 3).with_prefix(),
        ])
        .and_then([TxnOp::put("k", "w").prev_kv().lease(5)])
        .or_else([
            TxnOp::get("k").keys_only().lease(9),
            TxnOp::delete("d").from_key(),
        ])
        .into_request();
    let Request::Txn(TxnRequest {
        compare,
        success,
        failure,
    }) = req.clone()
    else {
        panic!("not a txn")
    };
    assert_eq!(compare.len(), 2);
    assert_eq!(compare[0].target, CompareTarget::Value(b"v".to_vec()));
    assert_eq!(compare[1].target, CompareTarget::ModRevision(3));
    assert_eq!(compare[1].range_end, b"n".to_vec());
    assert_eq!(
        success,
        [RequestOp::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"w".to_vec(),
            lease: 5,
            prev_kv: true,
            ..PutRequest::default()
        })]
    );
    assert_eq!(
        failure[0],
        RequestOp::Range(RangeRequest {
            key: b"k".to_vec(),
            keys_only: true,
            ..Default::default()
        }),
        "lease is ignored on a get"
    );
    assert_eq!(
        failure[1],
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: b"d".to_vec(),
            range_end: vec![0],
            prev_kv: false,
        })
    );
    assert!(req.is_write());
    let read_only = c.txn().and_then([TxnOp::get("a")]).into_request();
    assert!(!read_only.is_write());
}

#[test]
fn member_builders_map_to_the_request() {
    let (_dir, c) = client();
    let list = c.member_list().into_request();
    assert_eq!(list, Request::MemberList(MemberListRequest {}));
    assert!(!list.is_write());
    let add = MemberAddRequest {
        name: "n4".into(),
        peer_addr: "10.0.0.4:7380".into(),
        is_learner: false,
    };
    assert_eq!(
        c.member_add("n4", "10.0.0.4:7380").into_request(),
        Request::MemberAdd(add.clone())
    );
    let learner = c.member_add("n4", "10.0.0.4:7380").learner().into_request();
    assert_eq!(
        learner,
        Request::MemberAdd(MemberAddRequest {
            is_learner: true,
            ..add
        })
    );
    assert!(learner.is_write());
    assert_eq!(
        c.member_promote(0x8e9e05c52164694d).into_request(),
        Request::MemberPromote(MemberPromoteRequest {
            id: 0x8e9e05c52164694d
        })
    );
    let remove = c.member_remove(7).into_request();
    assert_eq!(remove, Request::MemberRemove(MemberRemoveRequest { id: 7 }));
    assert!(remove.is_write());
}

#[test]
fn response_names_come_from_the_variant() {
    let r = etch_proto::Response::Put(Default::default());
    assert_eq!(crate::kv::response_name(&r), "Put");
}

#[test]
fn watch_options_map_to_the_request() {
    use etch_proto::watch::WatchCreateRequest;
    let (_dir, c) = client();
    let req = c
        .watch("/a/")
        .prefix()
        .start_revision(9)
        .prev_kv()
        .no_put()
        .no_delete()
        .progress_notify()
        .into_request();
    assert_eq!(
        req,
        Request::Watch(WatchCreateRequest {
            key: b"/a/".to_vec(),
            range_end: b"/a0".to_vec(),
            start_revision: 9,
            progress_notify: true,
            no_put: true,
            no_delete: true,
            prev_kv: true,
        })
    );
    assert!(!req.is_write());
    let Request::Watch(w) = c.watch("").from_key().into_request() else {
        panic!("not a watch")
    };
    assert_eq!((w.key, w.range_end), (vec![0], vec![0]));
    let Request::Watch(w) = c.watch("a").range_end("c").into_request() else {
        panic!("not a watch")
    };
    assert_eq!(w.range_end, b"c".to_vec());
}

#[test]
fn lease_builders_map_to_the_request() {
    use etch_proto::lease::{
        LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    };
    let (_dir, c) = client();
    assert_eq!(
        c.lease_grant(60).id(0x1f).into_request(),
        Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 0x1f })
    );
    assert_eq!(
        c.lease_revoke(7).into_request(),
        Request::LeaseRevoke(LeaseRevokeRequest { id: 7 })
    );
    assert_eq!(
        c.lease_time_to_live(7).keys().into_request(),
        Request::LeaseTimeToLive(LeaseTimeToLiveRequest { id: 7, keys: true })
    );
    assert_eq!(
        c.lease_leases().into_request(),
        Request::LeaseLeases(LeaseLeasesRequest {})
    );
    assert_eq!(c.lease_keep_alive(7).id(), 7);
}

#[test]
fn a_nested_txn_op_maps_to_a_nested_request() {
    let (_dir, c) = client();
    let req = c
        .txn()
        .and_then(
            TxnOp::txn()
                .when(Compare::version("b", CompareResult::Equal, 0))
                .and_then(TxnOp::put("b", "1").ignore_lease())
                .or_else(TxnOp::get("b").sort(SortTarget::Value, SortOrder::Ascend)),
        )
        .into_request();
    let Request::Txn(outer) = req else {
        panic!("not a txn")
    };
    let [RequestOp::Txn(inner)] = &outer.success[..] else {
        panic!("not one nested txn: {:?}", outer.success)
    };
    assert_eq!(inner.compare.len(), 1);
    let [RequestOp::Put(p)] = &inner.success[..] else {
        panic!("not a put: {:?}", inner.success)
    };
    assert!(p.ignore_lease && !p.ignore_value);
    let [RequestOp::Range(r)] = &inner.failure[..] else {
        panic!("not a range: {:?}", inner.failure)
    };
    assert_eq!(
        (r.sort_target, r.sort_order),
        (SortTarget::Value, SortOrder::Ascend)
    );
    // Txn options on other ops, and other options on a txn, are ignored.
    assert_eq!(
        TxnOp::put("k", "v").when(Compare::version("k", CompareResult::Equal, 0)),
        TxnOp::put("k", "v")
    );
    assert_eq!(TxnOp::txn().prev_kv().limit(3), TxnOp::txn());
}

//! etcd's v3 messages to etch's requests and back, and etch's errors as the gRPC statuses
//! etcd answers with. Pure translation: what a request means is the node's business.
//!
//! A field etch does not serve yet is refused with `InvalidArgument` naming it, never
//! ignored: a client that asked for a sort order must not get unsorted keys.

use etch_etcd_api::etcdserverpb as pb;
use etch_etcd_api::mvccpb;
use etch_proto::watch::{Event, EventType, WatchCreateRequest, WatchResponse};
use etch_proto::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Error,
    KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
};
use tonic::{Code, Status};

/// The status etcd's server answers `e` with: the code its clients branch on and, where
/// etcd has one, etcd's own message (clients match on those strings).
pub(super) fn status(e: Error) -> Status {
    let (code, message) = match &e {
        Error::Compacted { .. } => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".to_owned(),
        ),
        Error::FutureRevision { .. } => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision".to_owned(),
        ),
        Error::LeaseNotFound(_) => (
            Code::NotFound,
            "etcdserver: requested lease not found".to_owned(),
        ),
        Error::TooLarge { .. } => (
            Code::InvalidArgument,
            "etcdserver: request is too large".to_owned(),
        ),
        Error::NoSpace => (
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded".to_owned(),
        ),
        Error::Timeout => (
            Code::Unavailable,
            "etcdserver: request timed out".to_owned(),
        ),
        Error::OutcomeUnknown { .. } => (
            Code::Unavailable,
            "etcdserver: request timed out, possibly due to previous leader failure".to_owned(),
        ),
        Error::NotLeader { .. } => (
            Code::FailedPrecondition,
            "etcdserver: not leader".to_owned(),
        ),
        Error::Unavailable { reason } if reason.starts_with("no leader") => {
            (Code::Unavailable, "etcdserver: no leader".to_owned())
        }
        Error::PermissionDenied(_) => (
            Code::PermissionDenied,
            "etcdserver: permission denied".to_owned(),
        ),
        Error::Unauthenticated(why) => (Code::Unauthenticated, format!("etcdserver: {why}")),
        Error::InvalidArgument(why) => (Code::InvalidArgument, format!("etcdserver: {why}")),
        Error::Unavailable { .. }
        | Error::Conflict
        | Error::PluginRejected { .. }
        | Error::PluginFailed { .. }
        | Error::Internal(_) => (code_of(&e), format!("etcdserver: {e}")),
    };
    Status::new(code, message)
}

fn code_of(e: &Error) -> Code {
    match e.grpc_code() {
        "Unavailable" => Code::Unavailable,
        "FailedPrecondition" => Code::FailedPrecondition,
        "Aborted" => Code::Aborted,
        "InvalidArgument" => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

fn unsupported(what: &str) -> Status {
    Status::invalid_argument(format!("etcdserver: etch does not serve {what} yet"))
}

pub(super) fn header(h: &ResponseHeader) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        revision: h.revision,
        raft_term: h.raft_term,
    })
}

pub(super) fn kv(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub(super) fn range_request(r: pb::RangeRequest) -> Result<RangeRequest, Status> {
    use pb::range_request::{SortOrder as Order, SortTarget as Target};
    let sort_order = match Order::try_from(r.sort_order) {
        Ok(Order::None) => SortOrder::None,
        Ok(Order::Ascend) => SortOrder::Ascend,
        Ok(Order::Descend) => SortOrder::Descend,
        Err(_) => return Err(Status::invalid_argument("etcdserver: invalid sort option")),
    };
    let sort_target = match Target::try_from(r.sort_target) {
        Ok(Target::Key) => SortTarget::Key,
        Ok(Target::Version) => SortTarget::Version,
        Ok(Target::Create) => SortTarget::Create,
        Ok(Target::Mod) => SortTarget::Mod,
        Ok(Target::Value) => SortTarget::Value,
        Err(_) => return Err(Status::invalid_argument("etcdserver: invalid sort option")),
    };
    Ok(RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        keys_only: r.keys_only,
        count_only: r.count_only,
        serializable: r.serializable,
        sort_order,
        sort_target,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub(super) fn range_response(r: RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: header(&r.header),
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

pub(super) fn put_request(r: pb::PutRequest) -> PutRequest {
    PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub(super) fn put_response(r: PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: header(&r.header),
        prev_kv: r.prev_kv.map(kv),
    }
}

pub(super) fn delete_request(r: pb::DeleteRangeRequest) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

pub(super) fn delete_response(r: DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: header(&r.header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv).collect(),
    }
}

fn compare(c: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare result",
            ));
        }
    };
    // The target names the field; the union holds its operand (absent: its zero value).
    let union = c.target_union;
    let target = match T::try_from(c.target) {
        Ok(T::Version) => CompareTarget::Version(match union {
            Some(U::Version(v)) => v,
            _ => 0,
        }),
        Ok(T::Create) => CompareTarget::CreateRevision(match union {
            Some(U::CreateRevision(v)) => v,
            _ => 0,
        }),
        Ok(T::Mod) => CompareTarget::ModRevision(match union {
            Some(U::ModRevision(v)) => v,
            _ => 0,
        }),
        Ok(T::Value) => CompareTarget::Value(match union {
            Some(U::Value(v)) => v,
            _ => Vec::new(),
        }),
        Ok(T::Lease) => CompareTarget::Lease(match union {
            Some(U::Lease(v)) => v,
            _ => 0,
        }),
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare target",
            ));
        }
    };
    Ok(Compare {
        key: c.key,
        range_end: c.range_end,
        result,
        target,
    })
}

fn request_op(op: pb::RequestOp) -> Result<RequestOp, Status> {
    use pb::request_op::Request as R;
    match op.request {
        Some(R::RequestRange(r)) => Ok(RequestOp::Range(range_request(r)?)),
        Some(R::RequestPut(p)) => Ok(RequestOp::Put(put_request(p))),
        Some(R::RequestDeleteRange(d)) => Ok(RequestOp::DeleteRange(delete_request(d))),
        // Nesting is bounded by the protobuf decoder's recursion limit, then by the shape
        // check (`MAX_TXN_DEPTH`).
        Some(R::RequestTxn(t)) => Ok(RequestOp::Txn(txn_request(t)?)),
        None => Err(Status::invalid_argument(
            "etcdserver: a txn op with no request",
        )),
    }
}

pub(super) fn txn_request(t: pb::TxnRequest) -> Result<TxnRequest, Status> {
    let ops = |ops: Vec<pb::RequestOp>| -> Result<Vec<RequestOp>, Status> {
        ops.into_iter().map(request_op).collect()
    };
    Ok(TxnRequest {
        compare: (t.compare.into_iter().map(compare)).collect::<Result<_, _>>()?,
        success: ops(t.success)?,
        failure: ops(t.failure)?,
    })
}

pub(super) fn txn_response(t: TxnResponse) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    let op = |op: ResponseOp| pb::ResponseOp {
        response: Some(match op {
            ResponseOp::Range(r) => R::ResponseRange(range_response(r)),
            ResponseOp::Put(p) => R::ResponsePut(put_response(p)),
            ResponseOp::DeleteRange(d) => R::ResponseDeleteRange(delete_response(d)),
            ResponseOp::Txn(t) => R::ResponseTxn(txn_response(t)),
        }),
    };
    pb::TxnResponse {
        header: header(&t.header),
        succeeded: t.succeeded,
        responses: t.responses.into_iter().map(op).collect(),
    }
}

pub(super) fn watch_create(w: pb::WatchCreateRequest) -> Result<WatchCreateRequest, Status> {
    use pb::watch_create_request::FilterType;
    if w.fragment {
        return Err(unsupported("fragmented watch responses"));
    }
    let filtered = |f: FilterType| w.filters.contains(&(f as i32));
    Ok(WatchCreateRequest {
        no_put: filtered(FilterType::Noput),
        no_delete: filtered(FilterType::Nodelete),
        key: w.key,
        range_end: w.range_end,
        start_revision: w.start_revision,
        progress_notify: w.progress_notify,
        prev_kv: w.prev_kv,
    })
}

pub(super) fn watch_response(w: WatchResponse, watch_id: i64) -> pb::WatchResponse {
    let event = |e: Event| mvccpb::Event {
        r#type: match e.kind {
            EventType::Put => mvccpb::event::EventType::Put,
            EventType::Delete => mvccpb::event::EventType::Delete,
        } as i32,
        kv: Some(kv(e.kv)),
        prev_kv: e.prev_kv.map(kv),
    };
    pb::WatchResponse {
        header: header(&w.header),
        watch_id,
        created: w.created,
        canceled: w.canceled,
        compact_revision: w.compact_revision,
        cancel_reason: w.cancel_reason,
        fragment: false,
        events: w.events.into_iter().map(event).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_messages_for_the_errors_clients_match_on() {
        let compacted = status(Error::Compacted {
            compact_revision: 3,
        });
        assert_eq!(compacted.code(), Code::OutOfRange);
        assert_eq!(
            compacted.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let lease = status(Error::LeaseNotFound(7));
        assert_eq!(lease.code(), Code::NotFound);
        assert_eq!(lease.message(), "etcdserver: requested lease not found");
        let unknown = status(Error::OutcomeUnknown {
            reason: "raft stopped".into(),
        });
        assert_eq!(unknown.code(), Code::Unavailable);
    }

    #[test]
    fn sorts_filters_and_nested_txns_are_carried_and_bad_enums_refused() {
        let sorted = pb::RangeRequest {
            sort_order: pb::range_request::SortOrder::Descend as i32,
            sort_target: pb::range_request::SortTarget::Value as i32,
            min_mod_revision: 3,
            max_create_revision: 9,
            ..Default::default()
        };
        let r = range_request(sorted).expect("a sorted, filtered range");
        assert_eq!(
            (r.sort_order, r.sort_target),
            (SortOrder::Descend, SortTarget::Value)
        );
        assert_eq!((r.min_mod_revision, r.max_create_revision), (3, 9));
        let bad = pb::RangeRequest {
            sort_order: 7,
            ..Default::default()
        };
        let Err(refused) = range_request(bad) else {
            panic!("an unknown sort order is refused");
        };
        assert_eq!(refused.code(), Code::InvalidArgument);
        let nested = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestTxn(Default::default())),
            }],
            ..Default::default()
        };
        let t = txn_request(nested).expect("a nested txn");
        assert_eq!(t.success, [RequestOp::Txn(TxnRequest::default())]);
        let watch = pb::WatchCreateRequest {
            fragment: true,
            ..Default::default()
        };
        assert!(
            watch_create(watch).is_err(),
            "fragment is refused, not ignored"
        );
    }

    #[test]
    fn a_compare_takes_its_operand_from_the_union() {
        let c = pb::Compare {
            result: pb::compare::CompareResult::Greater as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(9)),
            range_end: Vec::new(),
        };
        let c = compare(c).expect("a compare");
        assert_eq!(c.target, CompareTarget::ModRevision(9));
        assert_eq!(c.result, CompareResult::Greater);
    }
}

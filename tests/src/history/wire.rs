//! Between history operations and the wire: [`Op::request`] builds the etch request,
//! [`outcome`] reads the answer back.

use etch_proto::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, Request,
    RequestOp, Response, TxnRequest,
};

use super::op::{Op, OpResult, Outcome};

impl Op {
    /// The request that performs this operation: a linearizable range for a get, and a txn
    /// for a CAS whose compare is `value == expected`, or `create_revision == 0` (missing)
    /// when nothing is expected.
    pub fn request(&self) -> Request {
        let put = |key: &[u8], value: &[u8]| PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        };
        let range = |key: &[u8]| RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        };
        match self {
            Op::Put { key, value } => Request::Put(put(key, value)),
            Op::Get { key } => Request::Range(range(key)),
            Op::Delete { key } => Request::DeleteRange(DeleteRangeRequest {
                key: key.clone(),
                ..DeleteRangeRequest::default()
            }),
            Op::Cas { key, expected, new } => {
                let target = match expected {
                    Some(value) => CompareTarget::Value(value.clone()),
                    None => CompareTarget::CreateRevision(0),
                };
                Request::Txn(TxnRequest {
                    compare: vec![Compare {
                        key: key.clone(),
                        range_end: Vec::new(),
                        result: CompareResult::Equal,
                        target,
                    }],
                    success: vec![RequestOp::Put(put(key, new))],
                    failure: vec![RequestOp::Range(range(key))],
                })
            }
        }
    }
}

/// The outcome of `op` given what the SDK returned: an answer of the right kind is `Ok`, an
/// error the SDK calls retryable (the store is certainly untouched) is `Failed`, anything
/// else — a timeout, a connection lost after sending, an answer of the wrong kind — is
/// `Unknown`.
pub fn outcome(op: &Op, answer: &Result<Response, etch_client::Error>) -> Outcome {
    match answer {
        Ok(response) => result(op, response).map_or(Outcome::Unknown, Outcome::Ok),
        Err(e) if e.is_retryable() => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

fn result(op: &Op, response: &Response) -> Option<OpResult> {
    Some(match (op, response) {
        (Op::Put { .. }, Response::Put(r)) => OpResult::Put {
            revision: r.header.revision,
        },
        (Op::Get { key }, Response::Range(r)) => {
            let kv = r.kvs.iter().find(|kv| kv.key == *key);
            OpResult::Get {
                value: kv.map(|kv| kv.value.clone()),
                mod_revision: kv.map_or(0, |kv| kv.mod_revision),
                revision: r.header.revision,
            }
        }
        (Op::Delete { .. }, Response::DeleteRange(r)) => OpResult::Delete {
            deleted: r.deleted,
            revision: r.header.revision,
        },
        (Op::Cas { .. }, Response::Txn(r)) => OpResult::Cas {
            succeeded: r.succeeded,
            revision: r.header.revision,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use etch_proto::{KeyValue, RangeResponse, ResponseHeader};

    use super::*;

    #[test]
    fn a_range_answer_becomes_a_get_result() {
        let op = Op::Get { key: b"k".to_vec() };
        let response = Response::Range(RangeResponse {
            header: ResponseHeader {
                revision: 9,
                ..ResponseHeader::default()
            },
            kvs: vec![KeyValue {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                mod_revision: 7,
                ..KeyValue::default()
            }],
            ..RangeResponse::default()
        });
        let expected = OpResult::Get {
            value: Some(b"v".to_vec()),
            mod_revision: 7,
            revision: 9,
        };
        assert_eq!(outcome(&op, &Ok(response)), Outcome::Ok(expected));
    }

    #[test]
    fn retryable_errors_fail_and_others_are_unknown() {
        let op = Op::Delete { key: b"k".to_vec() };
        let not_leader = etch_client::Error::Server(etch_proto::Error::NotLeader { leader: None });
        assert_eq!(outcome(&op, &Err(not_leader)), Outcome::Failed);
        let timeout = etch_client::Error::Server(etch_proto::Error::Timeout);
        assert_eq!(outcome(&op, &Err(timeout)), Outcome::Unknown);
        let stopped = etch_client::Error::Server(etch_proto::Error::OutcomeUnknown {
            reason: "raft stopped".into(),
        });
        assert_eq!(outcome(&op, &Err(stopped)), Outcome::Unknown);
        let wrong_kind = Response::Put(Default::default());
        assert_eq!(outcome(&op, &Ok(wrong_kind)), Outcome::Unknown);
    }

    #[test]
    fn cas_on_a_missing_key_compares_create_revision() {
        let op = Op::Cas {
            key: b"k".to_vec(),
            expected: None,
            new: b"v".to_vec(),
        };
        let Request::Txn(txn) = op.request() else {
            panic!("a CAS is a txn");
        };
        assert_eq!(txn.compare[0].target, CompareTarget::CreateRevision(0));
        assert!(!txn.is_read_only());
    }
}

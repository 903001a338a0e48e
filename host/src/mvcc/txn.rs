//! Transactions: compares, then one branch of ops, all at one revision.
//!
//! The checks follow etcd, in etcd's order:
//!
//! 1. Before anything runs, both branches are checked on their own (as etcd's
//!    `checkTxnRequest` / `checkIntervals` do): every op names a key, and within a branch no
//!    key is put twice nor both put and covered by a delete range. Two overlapping deletes
//!    are allowed. A delete's `range_end` of `\0` means "to the end" here (etcd's interval
//!    tree reads it literally, an old etcd quirk not worth copying).
//! 2. The compares are evaluated against the state before the txn.
//! 3. The chosen branch is checked as etcd's `checkRequests` does: range revisions against
//!    the pre-txn revision and compaction floor, put leases against the lease table.
//! 4. Its ops run in order; a range sees the writes of earlier ops.

use std::collections::BTreeSet;

use etch_proto::{
    Compare, CompareResult, CompareTarget, Error as ProtoError, KeyRange, KeyValue, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};

use super::error::Result;
use super::lease::check_lease;
use super::view::{empty_key, read_revision};
use super::write::WriteTx;

type Outcome<T> = Result<std::result::Result<T, ProtoError>>;

/// Runs `req` inside `tx`. On an inner error the caller must drop `tx` unwritten.
pub(crate) fn execute(tx: &mut WriteTx<'_>, req: &TxnRequest) -> Outcome<TxnResponse> {
    if let Err(e) = check_branch(&req.success).and_then(|()| check_branch(&req.failure)) {
        return Ok(Err(e));
    }
    let mut succeeded = true;
    for cmp in &req.compare {
        if !holds(tx, cmp)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    if let Err(e) = check_chosen(tx, ops)? {
        return Ok(Err(e));
    }
    let mut responses = Vec::with_capacity(ops.len());
    // One answer: all of the txn's ranges together return at most one answer's bytes.
    let mut budget = super::view::MAX_RANGE_BYTES;
    for op in ops {
        responses.push(match op {
            RequestOp::Range(r) => match tx.range(r, &mut budget)? {
                Ok(resp) => ResponseOp::Range(resp),
                Err(e) => return Ok(Err(e)),
            },
            RequestOp::Put(p) => ResponseOp::Put(tx.put(p)?),
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(tx.delete_range(d)?),
        });
    }
    let mut resp = TxnResponse {
        succeeded,
        responses,
        ..Default::default()
    };
    resp.header.revision = tx.current_revision();
    Ok(Ok(resp))
}

/// Step 1: keys present, no key written twice within the branch.
fn check_branch(ops: &[RequestOp]) -> std::result::Result<(), ProtoError> {
    let duplicate = || ProtoError::InvalidArgument("duplicate key given in txn request".into());
    let mut deletes = Vec::new();
    for op in ops {
        let key = match op {
            RequestOp::Range(r) => &r.key,
            RequestOp::Put(p) => &p.key,
            RequestOp::DeleteRange(d) => {
                deletes.push(KeyRange::new(&d.key, &d.range_end));
                &d.key
            }
        };
        if key.is_empty() {
            return Err(empty_key());
        }
    }
    let mut puts = BTreeSet::new();
    for op in ops {
        if let RequestOp::Put(p) = op
            && (!puts.insert(p.key.as_slice()) || deletes.iter().any(|d| d.contains(&p.key)))
        {
            return Err(duplicate());
        }
    }
    Ok(())
}

/// Step 3: what etcd checks of the chosen branch before running it.
fn check_chosen(tx: &WriteTx<'_>, ops: &[RequestOp]) -> Outcome<()> {
    let view = tx.view();
    for op in ops {
        match op {
            RequestOp::Range(r) => {
                if let Err(e) = read_revision(r.revision, view.revision, view.compact) {
                    return Ok(Err(e));
                }
            }
            RequestOp::Put(p) => {
                if let Err(e) = check_lease(view, p.lease)? {
                    return Ok(Err(e));
                }
            }
            RequestOp::DeleteRange(_) => {}
        }
    }
    Ok(Ok(()))
}

/// Whether `cmp` holds for every key in its range. An empty range compares as one missing
/// key: version, revisions and lease 0, and a value compare is false.
fn holds(tx: &WriteTx<'_>, cmp: &Compare) -> Result<bool> {
    let range = KeyRange::new(&cmp.key, &cmp.range_end);
    let mut any = false;
    for kv in tx.scan(&range) {
        any = true;
        if !compare(cmp, &kv?) {
            return Ok(false);
        }
    }
    if any {
        return Ok(true);
    }
    Ok(!matches!(cmp.target, CompareTarget::Value(_)) && compare(cmp, &KeyValue::default()))
}

fn compare(cmp: &Compare, kv: &KeyValue) -> bool {
    let order = match &cmp.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::CreateRevision(r) => kv.create_revision.cmp(r),
        CompareTarget::ModRevision(r) => kv.mod_revision.cmp(r),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(l) => kv.lease.cmp(l),
    };
    match cmp.result {
        CompareResult::Equal => order.is_eq(),
        CompareResult::Greater => order.is_gt(),
        CompareResult::Less => order.is_lt(),
        CompareResult::NotEqual => order.is_ne(),
    }
}

#[cfg(test)]
mod tests {
    use etch_proto::{DeleteRangeRequest, PutRequest};

    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.into(),
            ..Default::default()
        })
    }

    fn del(key: &str, end: &[u8]) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: end.to_vec(),
            prev_kv: false,
        })
    }

    #[test]
    fn duplicate_rules_match_etcd() {
        assert!(check_branch(&[put("a"), put("b")]).is_ok());
        assert!(check_branch(&[put("a"), put("a")]).is_err());
        assert!(check_branch(&[del("a", b"c"), put("b")]).is_err());
        assert!(check_branch(&[put("b"), del("a", b"c")]).is_err());
        assert!(check_branch(&[put("c"), del("a", b"c")]).is_ok());
        assert!(check_branch(&[put("z"), del("a", &[0])]).is_err());
        assert!(check_branch(&[del("a", b"c"), del("b", b"d")]).is_ok());
        assert_eq!(check_branch(&[put("")]), Err(empty_key()));
    }
}

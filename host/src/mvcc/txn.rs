//! Transactions: compares, then one branch of ops, all at one revision.
//!
//! The checks follow etcd, in etcd's order:
//!
//! 1. Before anything runs, both branches are checked on their own (as etcd's
//!    `checkTxnRequest` / `checkIntervals` do): every op names a key, and within a branch no
//!    key is put twice nor both put and covered by a delete range. Two overlapping deletes
//!    are allowed. A nested txn's puts and deletes count in its parent's branch (either of
//!    its branches may run; the same key put in both of them is fine). A delete's
//!    `range_end` of `\0` means "to the end" here (etcd's interval tree reads it literally,
//!    an old etcd quirk not worth copying).
//! 2. The compares are evaluated against the state before the txn — nested txns' compares
//!    too, all before any op runs (etcd's `compareToPath`): the branch taken at every
//!    level is known first.
//! 3. The chosen branches are checked as etcd's `checkRequests` does: range revisions
//!    against the pre-txn revision and compaction floor, put leases against the lease table.
//! 4. Their ops run in order; a range sees the writes of earlier ops. A nested txn's
//!    answer has an empty header, as etcd's.

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
    if let Err(e) = check_branch(&req.success).and_then(|_| check_branch(&req.failure)) {
        return Ok(Err(e));
    }
    let mut path = Vec::new();
    choose(tx, req, &mut path)?;
    if let Err(e) = check_chosen(tx, req, &path)? {
        return Ok(Err(e));
    }
    // One answer: all of the txn's ranges together return at most one answer's bytes.
    let mut budget = super::view::MAX_RANGE_BYTES;
    let mut path = path.into_iter();
    let mut resp = match run(tx, req, &mut path, &mut budget)? {
        Ok(resp) => resp,
        Err(e) => return Ok(Err(e)),
    };
    resp.header.revision = tx.current_revision();
    Ok(Ok(resp))
}

/// The branch a txn takes: its compares' verdict.
fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// The txns nested in `ops`.
fn nested(ops: &[RequestOp]) -> impl Iterator<Item = &TxnRequest> {
    ops.iter().filter_map(|op| match op {
        RequestOp::Txn(t) => Some(t),
        _ => None,
    })
}

/// Step 2: the verdict of `req` and of every txn nested in the branches taken, depth
/// first, all against the state before the txn.
fn choose(tx: &WriteTx<'_>, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
    let mut succeeded = true;
    for cmp in &req.compare {
        if !holds(tx, cmp)? {
            succeeded = false;
            break;
        }
    }
    path.push(succeeded);
    for inner in nested(branch(req, succeeded)) {
        choose(tx, inner, path)?;
    }
    Ok(())
}

/// Step 4: runs the branch `path` chose of `req` and of its nested txns.
fn run(
    tx: &mut WriteTx<'_>,
    req: &TxnRequest,
    path: &mut std::vec::IntoIter<bool>,
    budget: &mut usize,
) -> Outcome<TxnResponse> {
    let succeeded = path.next().unwrap_or_default();
    let ops = branch(req, succeeded);
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        responses.push(match op {
            RequestOp::Range(r) => match tx.range(r, budget)? {
                Ok(resp) => ResponseOp::Range(resp),
                Err(e) => return Ok(Err(e)),
            },
            RequestOp::Put(p) => match tx.put(p)? {
                Ok(resp) => ResponseOp::Put(resp),
                Err(e) => return Ok(Err(e)),
            },
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(tx.delete_range(d)?),
            RequestOp::Txn(t) => match run(tx, t, path, budget)? {
                Ok(resp) => ResponseOp::Txn(resp),
                Err(e) => return Ok(Err(e)),
            },
        });
    }
    Ok(Ok(TxnResponse {
        succeeded,
        responses,
        ..Default::default()
    }))
}

/// The keys a branch puts and the ranges it deletes, nested txns included.
#[derive(Default)]
struct Writes {
    puts: BTreeSet<Vec<u8>>,
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Writes {
    fn deletes(&self, key: &[u8]) -> bool {
        (self.deletes.iter()).any(|(k, end)| KeyRange::new(k, end).contains(key))
    }
}

/// Step 1: keys present, no key written twice within the branch (etcd's `checkIntervals`).
fn check_branch(ops: &[RequestOp]) -> std::result::Result<Writes, ProtoError> {
    let duplicate = || ProtoError::InvalidArgument("duplicate key given in txn request".into());
    let mut writes = Writes::default();
    for op in ops {
        let key = match op {
            RequestOp::Range(r) => &r.key,
            RequestOp::Put(p) => &p.key,
            RequestOp::DeleteRange(d) => {
                writes.deletes.push((d.key.clone(), d.range_end.clone()));
                &d.key
            }
            RequestOp::Txn(_) => continue,
        };
        if key.is_empty() {
            return Err(empty_key());
        }
    }
    for inner in nested(ops) {
        let then = check_branch(&inner.success)?;
        let otherwise = check_branch(&inner.failure)?;
        for key in &then.puts {
            if writes.puts.contains(key) || writes.deletes(key) {
                return Err(duplicate());
            }
        }
        for key in &otherwise.puts {
            // A key of both branches is fine: only one of them runs.
            if (writes.puts.contains(key) && !then.puts.contains(key)) || writes.deletes(key) {
                return Err(duplicate());
            }
        }
        writes.puts.extend(then.puts);
        writes.puts.extend(otherwise.puts);
        writes.deletes.extend(then.deletes);
        writes.deletes.extend(otherwise.deletes);
    }
    for op in ops {
        if let RequestOp::Put(p) = op
            && (writes.puts.contains(&p.key) || writes.deletes(&p.key))
        {
            return Err(duplicate());
        }
        if let RequestOp::Put(p) = op {
            writes.puts.insert(p.key.clone());
        }
    }
    Ok(writes)
}

/// Step 3: what etcd checks of the chosen branches before running them.
fn check_chosen(tx: &WriteTx<'_>, req: &TxnRequest, path: &[bool]) -> Outcome<()> {
    let view = tx.view();
    let mut verdicts = path.iter().copied();
    let mut pending = vec![req];
    // Depth first, as `choose` recorded the verdicts.
    while let Some(txn) = pending.pop() {
        let ops = branch(txn, verdicts.next().unwrap_or_default());
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
                RequestOp::DeleteRange(_) | RequestOp::Txn(_) => {}
            }
        }
        pending.extend(nested(ops).collect::<Vec<_>>().into_iter().rev());
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
        assert_eq!(check_branch(&[put("")]).err(), Some(empty_key()));
    }

    fn nest(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp::Txn(TxnRequest {
            compare: vec![],
            success,
            failure,
        })
    }

    #[test]
    fn nested_duplicate_rules_match_etcd() {
        // A key in both branches of a nested txn: only one runs.
        assert!(check_branch(&[nest(vec![put("a")], vec![put("a")])]).is_ok());
        // A nested put of a key the parent puts, or deletes.
        assert!(check_branch(&[put("a"), nest(vec![put("a")], vec![])]).is_err());
        assert!(check_branch(&[nest(vec![], vec![put("b")]), del("a", b"c")]).is_err());
        // Two nested txns that put one key.
        assert!(
            check_branch(&[nest(vec![put("a")], vec![]), nest(vec![put("a")], vec![])]).is_err()
        );
        assert!(
            check_branch(&[nest(vec![put("a")], vec![]), nest(vec![], vec![put("b")])]).is_ok()
        );
        // A nested delete covering a parent's put.
        assert!(check_branch(&[put("b"), nest(vec![del("a", b"c")], vec![])]).is_err());
        assert_eq!(
            check_branch(&[nest(vec![put("")], vec![])]).err(),
            Some(empty_key())
        );
    }
}

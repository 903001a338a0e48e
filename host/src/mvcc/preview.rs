//! Previews: what a write *would* change, computed on the leader before it is proposed, so
//! that validator plugins can judge it.
//!
//! [`preview`] runs the request through the same machinery apply uses (a [`WriteTx`] over a
//! [`View`]), then drops the result instead of committing it. The [`Change`]s list every key
//! the write changes, in sub-revision order, each with its previous live version; a txn's
//! compares are evaluated, so only the branch that will run is listed. The [`Read`]s are
//! what the preview depended on (the touched keys and ranges, the compares): carried in the
//! write's [`super::Guard`], they make apply refuse the write if the preview went stale.

use etch_proto::{KeyValue, Request, RequestOp, TxnRequest};

use super::error::Result;
use super::guard::Read;
use super::lease::check_lease;
use super::store::Outcome;
use super::txn;
use super::view::{View, empty_key};
use super::write::WriteTx;

/// One key a write changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// The new value, `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The live version before the write.
    pub prev: Option<KeyValue>,
}

/// What a write would change, and what that depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preview {
    pub changes: Vec<Change>,
    pub reads: Vec<Read>,
}

/// Previews a Put, DeleteRange or Txn against `view`; any other request changes no key.
/// The inner error is the one apply would return (an empty key, an unknown lease, a bad
/// txn).
pub(crate) fn preview(view: &View, req: &Request) -> Outcome<Preview> {
    let mut tx = WriteTx::new(view);
    let mut reads = Vec::new();
    match req {
        Request::Put(p) => {
            if p.key.is_empty() {
                return Ok(Err(empty_key()));
            }
            if let Err(e) = check_lease(view, p.lease)? {
                return Ok(Err(e));
            }
            if let Err(e) = tx.put(p)? {
                return Ok(Err(e));
            }
            reads.push(Read::observe(view, &p.key, b"")?);
        }
        Request::DeleteRange(d) => {
            if d.key.is_empty() {
                return Ok(Err(empty_key()));
            }
            tx.delete_range(d)?;
            reads.push(Read::observe(view, &d.key, &d.range_end)?);
        }
        Request::Txn(t) => {
            if let Err(e) = txn::execute(&mut tx, t)? {
                return Ok(Err(e));
            }
            observe_txn(view, t, &mut reads)?;
        }
        _ => return Ok(Ok(Preview::default())),
    }
    let changes = tx
        .changes()
        .into_iter()
        .map(|(key, after)| {
            Ok(Change {
                prev: view.get(&key)?,
                value: after.map(|kv| kv.value),
                key,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Ok(Preview { changes, reads }))
}

/// Records what a txn's outcome depends on: every compare and every written key or range
/// of the txn and of the txns nested in it, both branches (more than the branches taken
/// read: a change there only makes the write be judged again).
fn observe_txn(view: &View, t: &TxnRequest, reads: &mut Vec<Read>) -> Result<()> {
    for cmp in &t.compare {
        reads.push(Read::observe(view, &cmp.key, &cmp.range_end)?);
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Put(p) => reads.push(Read::observe(view, &p.key, b"")?),
            RequestOp::DeleteRange(d) => reads.push(Read::observe(view, &d.key, &d.range_end)?),
            RequestOp::Txn(inner) => observe_txn(view, inner, reads)?,
            RequestOp::Range(_) => {}
        }
    }
    Ok(())
}

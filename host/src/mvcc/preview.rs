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
            // The put read the key's live version; it is in `before` if there was one.
            reads.push(Read::of_key(&p.key, tx.before(&p.key)));
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
        .map(|(key, after)| Change {
            // Every changed key was read by the write: its live version then is `before`.
            prev: tx.before(&key).cloned(),
            value: after.map(|kv| kv.value),
            key,
        })
        .collect();
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

#[cfg(test)]
mod tests {
    use etch_proto::{DeleteRangeRequest, PutRequest, TxnRequest};

    use super::*;
    use crate::testing::{put, temp_store};

    fn put_op(key: &str, value: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    #[test]
    fn each_change_carries_the_version_the_view_holds_and_a_put_its_fingerprint() {
        let (_dir, store) = temp_store();
        for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("c2", "4")] {
            put(&store, k, v);
        }
        put(&store, "a", "5");
        let view = store.view().expect("view");

        for key in ["a", "new"] {
            let Ok(Ok(preview)) = preview(
                &view,
                &Request::Put(PutRequest {
                    key: key.into(),
                    value: b"x".to_vec(),
                    ..Default::default()
                }),
            ) else {
                panic!("a put previews");
            };
            let observed = Read::observe(&view, key.as_bytes(), b"").expect("observe");
            assert_eq!(preview.reads, [observed], "{key}");
            assert_eq!(preview.changes.len(), 1);
            assert_eq!(
                preview.changes[0].prev,
                view.get(key.as_bytes()).expect("get")
            );
        }

        let txn = Request::Txn(TxnRequest {
            success: vec![
                put_op("a", "6"),
                put_op("new", "7"),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b"b".to_vec(),
                    ..Default::default()
                }),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b"c".to_vec(),
                    range_end: b"d".to_vec(),
                    ..Default::default()
                }),
            ],
            ..Default::default()
        });
        let Ok(Ok(preview)) = preview(&view, &txn) else {
            panic!("the txn previews");
        };
        let keys: Vec<&[u8]> = (preview.changes.iter()).map(|c| c.key.as_slice()).collect();
        assert_eq!(keys, [&b"a"[..], b"new", b"b", b"c", b"c2"]);
        for change in &preview.changes {
            assert_eq!(change.prev, view.get(&change.key).expect("get"));
        }
        let values: Vec<Option<&[u8]>> = (preview.changes.iter())
            .map(|c| c.value.as_deref())
            .collect();
        assert_eq!(values, [Some(&b"6"[..]), Some(b"7"), None, None, None]);
    }
}

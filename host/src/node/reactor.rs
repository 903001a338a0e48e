//! Driving reactor plugins on the leader.
//!
//! One task per node ([`run_reactors`]) waits until the node leads. It then confirms its
//! leadership with a read-index round, so that its applied state holds every entry
//! committed before its term — in particular every checkpoint a former leader wrote — and
//! serves every `react` binding in turn while it leads, waking on each applied batch.
//!
//! # Checkpoints and at-least-once
//!
//! Each reactor `NAME` has a checkpoint key, `"\0etch/reactor/NAME/checkpoint"`, holding in
//! decimal the last revision whose events it has processed. A new leader reads it and
//! resumes after it (a reactor without one starts after the revision at which its binding
//! was installed). The leader keeps a cursor per reactor in memory; each step hands the
//! reactor one batch of events after the cursor (`crate::plugin::Plugins::react`). When the
//! call returns `ok`, the leader proposes **one** transaction:
//!
//! ```text
//! if mod_revision(checkpoint key) == the one the leader last read
//! then <the writes the reactor staged>, put checkpoint key = last revision of the batch
//! ```
//!
//! through the normal write path: validators judge it like any write, and the reactor's
//! reads guard it like a validator's. So a batch's writes and the checkpoint that covers
//! it commit together or not at all. A failed call (trap, fuel, deadline, memory, `err`)
//! or a write that does not commit leaves the checkpoint where it was, and the batch is
//! delivered again after a pause that doubles up to [`BACKOFF_MAX`] — at least once. A
//! leader change re-delivers at most the batch in flight. The compare makes the effect
//! exactly once per checkpoint advance even when two leaders overlap: a deposed leader's
//! transaction that commits late makes the new leader's compare fail, and it re-reads the
//! checkpoint instead of writing the same batch twice.
//!
//! # Origin: never triggered by its own writes
//!
//! The reactor's writes share their revision with a put of its checkpoint key, and only
//! that transaction writes the key (clients may not write under `"\0etch/"`). So a revision
//! that puts a reactor's checkpoint key *is* that reactor's own write, and the reactor skips
//! it whole; other reactors see it like any change. Reactors never see `"\0etch/"` keys.
//!
//! A stretch of revisions with nothing for a reactor moves only the in-memory cursor:
//! writing a checkpoint for it would be a change that other reactors see, and two idle
//! reactors would wake each other for ever. After [`IDLE_CHECKPOINT_LAG`] such revisions the
//! leader does write one (so a new leader need not rescan them, and compaction does not
//! overtake a reactor that merely had nothing to do).

use std::collections::HashMap;
use std::time::Duration;

use etch_proto::plugin::{FailurePolicy, PluginBinding, PluginHook};
use etch_proto::{
    Compare, CompareResult, CompareTarget, Error, PutRequest, Request, RequestOp, Response,
    Revision, TxnRequest,
};
use tokio::time::Instant;

use super::Node;
use crate::mvcc::BindingRecord;
use crate::plugin::{Checkpoint, Outcome, Step, checkpoint_key, read_checkpoint};

/// First pause after a failed batch.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between two attempts at a failing batch.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Revisions without events for a reactor after which its checkpoint is written anyway.
pub const IDLE_CHECKPOINT_LAG: Revision = 1000;

/// Where the leader stands with one reactor.
#[derive(Debug)]
struct Cursor {
    /// The revision its binding was installed at: a binding removed and installed again
    /// gets a new cursor (the way past a revision it is stalled at).
    installed_at: Revision,
    /// The first revision not yet handed over (or found empty).
    next: Revision,
    /// The checkpoint as last read or written.
    checkpoint: Checkpoint,
    /// The pause after the next failure.
    backoff: Duration,
    /// No attempt before this instant (after a failure).
    retry_at: Option<Instant>,
    /// Failures of the current batch in a row.
    failures: u32,
    /// Parked by the binding's `Park` policy: not called until its checkpoint moves.
    parked: bool,
}

/// What one step did.
enum Progress {
    /// Moved on (or found nothing new).
    Done,
    /// Failed; try again at the cursor's `retry_at`.
    Failed,
    /// This node no longer leads.
    Deposed,
}

/// Runs the reactors whenever this node leads, until the state machine stops.
pub(super) async fn run_reactors(node: Node, mut applied: tokio::sync::watch::Receiver<i64>) {
    let mut metrics = node.raft().metrics();
    loop {
        let term = {
            let m = metrics.borrow_and_update();
            (m.current_leader == Some(node.id())).then_some(m.current_term)
        };
        if let Some(term) = term {
            lead(&node, term, &mut applied).await;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Whether this node still leads in `term`.
fn leads(node: &Node, term: u64) -> bool {
    let m = node.raft().metrics();
    let m = m.borrow();
    m.current_leader == Some(node.id()) && m.current_term == term
}

/// Serves the reactors while this node leads in `term`.
async fn lead(node: &Node, term: u64, applied: &mut tokio::sync::watch::Receiver<i64>) {
    let mut pause = BACKOFF_MIN;
    while let Err(e) = node.confirm_leadership().await {
        if !leads(node, term) {
            return;
        }
        tracing::debug!(error = %e, "reactors wait for leadership to be confirmed");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BACKOFF_MAX);
    }
    let mut cursors: HashMap<String, Cursor> = HashMap::new();
    let mut metrics = node.raft().metrics();
    // The reactor bindings, re-read only when the bindings version moves.
    let mut reactors: (Option<u64>, Vec<BindingRecord>) = (None, Vec::new());
    loop {
        if !leads(node, term) {
            return;
        }
        applied.borrow_and_update();
        let version = Some(node.store().bindings_version());
        if version != reactors.0 {
            reactors = match node.store().plugin_bindings() {
                Ok((version, bindings)) => (
                    Some(version),
                    bindings
                        .into_iter()
                        .filter(|b| b.binding.hook == PluginHook::React)
                        .collect(),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "reactors cannot read the bindings");
                    (None, Vec::new())
                }
            };
        }
        let reactors = &reactors.1;
        cursors.retain(|name, _| reactors.iter().any(|r| r.binding.name == *name));
        let mut wake: Option<Instant> = None;
        let mut more = false;
        for record in reactors {
            let name = &record.binding.name;
            // A cursor is made again for a new install, and when the checkpoint of a parked
            // or failing reactor moved under it (`plugin reset`): that also unparks. A
            // reactor that is going on learns of a move when its next commit's compare
            // fails, so the store is only read for the ones that are not.
            let fresh = (cursors.get(name)).is_none_or(|cursor| {
                cursor.installed_at != record.installed_at
                    || ((cursor.parked || cursor.failures > 0) && moved(node, name, cursor))
            });
            if fresh {
                node.inner.plugins.set_parked(name, false);
                match load(node, &record.binding, record.installed_at) {
                    Some(cursor) => cursors.insert(name.clone(), cursor),
                    None => continue,
                };
            }
            let Some(cursor) = cursors.get_mut(name) else {
                continue; // inserted just above
            };
            if cursor.parked {
                continue;
            }
            if let Some(at) = cursor.retry_at
                && Instant::now() < at
            {
                wake = Some(wake.map_or(at, |w| w.min(at)));
                continue;
            }
            match step(node, record, cursor).await {
                Progress::Done => {
                    cursor.retry_at = None;
                    cursor.failures = 0;
                    more |= cursor.next <= node.store().revision();
                }
                Progress::Failed => {
                    cursor.failures += 1;
                    if let FailurePolicy::Park { after } = record.binding.on_error
                        && cursor.failures >= after
                    {
                        tracing::warn!(plugin = %name, failures = cursor.failures, from = cursor.next, "reactor parked: its batch failed too often; `etchctl plugin reset` moves it on");
                        cursor.parked = true;
                        cursor.retry_at = None;
                        node.inner.plugins.set_parked(name, true);
                        continue;
                    }
                    let at = Instant::now() + cursor.backoff;
                    cursor.retry_at = Some(at);
                    cursor.backoff = (cursor.backoff * 2).min(BACKOFF_MAX);
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
                Progress::Deposed => return,
            }
        }
        if more {
            continue;
        }
        let until = wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            changed = metrics.changed() => if changed.is_err() { return },
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

/// Whether reactor `name`'s stored checkpoint is no longer the one `cursor` holds.
fn moved(node: &Node, name: &str, cursor: &Cursor) -> bool {
    read_checkpoint(node.store(), name)
        .is_ok_and(|stored| stored.mod_revision != cursor.checkpoint.mod_revision)
}

/// The cursor of a reactor from its stored checkpoint.
fn load(node: &Node, binding: &PluginBinding, installed_at: Revision) -> Option<Cursor> {
    match read_checkpoint(node.store(), &binding.name) {
        Ok(checkpoint) => Some(Cursor {
            installed_at,
            next: checkpoint.revision.max(installed_at) + 1,
            checkpoint,
            backoff: BACKOFF_MIN,
            retry_at: None,
            failures: 0,
            parked: false,
        }),
        Err(e) => {
            tracing::error!(plugin = %binding.name, error = %e, "cannot read the reactor's checkpoint");
            None
        }
    }
}

/// Runs one step of one reactor and commits what it produced.
async fn step(node: &Node, record: &BindingRecord, cursor: &mut Cursor) -> Progress {
    let name = record.binding.name.clone();
    let from = cursor.next;
    // On the plugin threads, as validators: never the blocking pool reads use.
    let step = (node.inner.plugins)
        .react_on_executor(node.store(), record, from, &node.limits())
        .await;
    let step = match step {
        Ok(step) => step,
        Err(e @ crate::plugin::PluginError::NotRun(_)) => {
            tracing::warn!(plugin = %name, from, error = %e, "reactor step not run; it will be retried");
            node.inner.plugins.count_failure(&name, &e.to_string());
            return Progress::Failed;
        }
        Err(e) => {
            tracing::warn!(plugin = %name, from, error = %e, "reactor failed; its batch will be retried");
            return Progress::Failed;
        }
    };
    match step {
        Step::Idle { through } => {
            cursor.next = through + 1;
            if through - cursor.checkpoint.revision >= IDLE_CHECKPOINT_LAG {
                return commit(node, record, cursor, through, Outcome::default()).await;
            }
            Progress::Done
        }
        Step::Compacted { floor } => {
            tracing::warn!(plugin = %name, from, floor, "reactor missed revisions {from}..{floor}: compacted before it could read them");
            node.inner.plugins.count_failure(
                &name,
                &format!("revisions {from}..{floor} were compacted before it could read them"),
            );
            cursor.next = floor;
            Progress::Done
        }
        Step::Batch {
            through, outcome, ..
        } => commit(node, record, cursor, through, outcome).await,
    }
}

/// Proposes a batch's writes with the checkpoint `through`, conditional on the checkpoint
/// being as last read.
async fn commit(
    node: &Node,
    record: &BindingRecord,
    cursor: &mut Cursor,
    through: Revision,
    outcome: Outcome,
) -> Progress {
    let name = record.binding.name.as_str();
    let key = checkpoint_key(name);
    let mut success = coalesce(outcome.writes);
    success.push(RequestOp::Put(PutRequest {
        key: key.clone(),
        value: through.to_string().into_bytes(),
        ..Default::default()
    }));
    let txn = TxnRequest {
        compare: vec![Compare {
            key,
            range_end: Vec::new(),
            result: CompareResult::Equal,
            target: CompareTarget::ModRevision(cursor.checkpoint.mod_revision),
        }],
        success,
        failure: Vec::new(),
    };
    let principal = format!("reactor:{name}");
    // A staged txn obeys the client limits, checked here as a client's are where it enters,
    // and its writes need the rights of the user who installed the reactor (the checkpoint
    // is etch's own).
    let staged = Request::Txn(TxnRequest {
        success: txn.success[..txn.success.len() - 1].to_vec(),
        ..TxnRequest::default()
    });
    let request = Request::Txn(txn);
    let answer = match node.limits().check(&request).and_then(|()| {
        let installer = record.installed_by.as_str();
        node.authorize(installer, &staged)
    }) {
        Ok(checked) => {
            node.judge_and_propose(&principal, request, &outcome.reads, checked, None)
                .await
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(Response::Txn(t)) if t.succeeded => {
            cursor.checkpoint = Checkpoint {
                revision: through,
                mod_revision: t.header.revision,
            };
            cursor.next = cursor.next.max(through + 1);
            cursor.backoff = BACKOFF_MIN;
            Progress::Done
        }
        Ok(Response::Txn(_)) => {
            // Another leader's checkpoint committed after we read ours: resume from it.
            tracing::info!(
                plugin = name,
                "reactor checkpoint moved under this leader; resuming from it"
            );
            match read_checkpoint(node.store(), name) {
                Ok(checkpoint) => {
                    cursor.checkpoint = checkpoint;
                    cursor.next = checkpoint.revision + 1;
                    Progress::Done
                }
                Err(e) => {
                    node.inner.plugins.count_failure(name, &e.to_string());
                    Progress::Failed
                }
            }
        }
        Ok(other) => {
            let cause = format!("unexpected answer to its write: {other:?}");
            node.inner.plugins.count_failure(name, &cause);
            Progress::Failed
        }
        Err(Error::NotLeader { .. }) => Progress::Deposed,
        Err(e) => {
            tracing::warn!(plugin = name, error = %e, "reactor writes did not commit; the batch will be retried");
            node.inner
                .plugins
                .count_failure(name, &format!("its writes did not commit: {e}"));
            Progress::Failed
        }
    }
}

/// The staged writes as one txn branch may hold them: one op per key, the last one staged.
fn coalesce(writes: Vec<RequestOp>) -> Vec<RequestOp> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<RequestOp> = writes
        .into_iter()
        .rev()
        .filter(|op| {
            let key = match op {
                RequestOp::Put(p) => &p.key,
                RequestOp::DeleteRange(d) => &d.key,
                RequestOp::Range(r) => &r.key,
                // Staging makes no nested txn; one would be kept as it is.
                RequestOp::Txn(_) => return true,
            };
            seen.insert(key.clone())
        })
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use etch_proto::DeleteRangeRequest;

    use super::*;

    fn put(key: &str, value: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    #[test]
    fn coalesce_keeps_the_last_write_of_each_key() {
        let del = RequestOp::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: Vec::new(),
            prev_kv: false,
        });
        let out = coalesce(vec![
            put("a", "1"),
            put("b", "1"),
            del.clone(),
            put("b", "2"),
        ]);
        assert_eq!(out, vec![del, put("b", "2")]);
    }
}

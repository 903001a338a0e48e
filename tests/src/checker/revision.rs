//! The global pass: what revisions say across keys, and values that came from nowhere.
//!
//! The per-key search sees one key at a time, so it cannot tell that two keys' writes
//! reported the same revision, or that a read of one key reported a revision older than
//! a write of another key that had already completed. These checks run over the whole
//! history in `O(n log n)` before the search.

use std::collections::{HashMap, HashSet};

use etch_proto::Revision;

use super::verdict::Violation;
use crate::history::{Entry, Op, OpResult, Outcome};

/// Every revision a write reported is reported by no other write.
pub(super) fn duplicates(entries: &[Entry]) -> Option<Violation> {
    let mut creator: HashMap<Revision, &Entry> = HashMap::new();
    for e in entries {
        let Some(result) = e.result().filter(|r| r.wrote()) else {
            continue;
        };
        if let Some(first) = creator.insert(result.revision(), e) {
            return Some(Violation::DuplicateRevision {
                revision: result.revision(),
                first: first.clone(),
                second: e.clone(),
            });
        }
    }
    None
}

/// An operation that began after another ended reports a revision at least as new, and a
/// newer one when it wrote.
pub(super) fn real_time(entries: &[Entry]) -> Option<Violation> {
    let answered: Vec<(&Entry, u64, &OpResult)> = entries
        .iter()
        .filter_map(|e| Some((e, e.completed?, e.result()?)))
        .collect();
    let mut by_completion = answered.clone();
    by_completion.sort_by_key(|&(_, done, _)| done);
    let mut by_invocation = answered;
    by_invocation.sort_by_key(|&(e, _, _)| e.invoked);
    let mut ended = by_completion.iter().peekable();
    let mut newest: Option<(&Entry, Revision)> = None;
    for &(later, _, result) in &by_invocation {
        while let Some(&(e, _, r)) = ended.next_if(|&&(_, done, _)| done < later.invoked) {
            if newest.is_none_or(|(_, rev)| r.revision() > rev) {
                newest = Some((e, r.revision()));
            }
        }
        let Some((earlier, rev)) = newest else {
            continue;
        };
        let revision = result.revision();
        if revision < rev || (result.wrote() && revision == rev) {
            return Some(Violation::RevisionOrder {
                earlier: earlier.clone(),
                later: later.clone(),
            });
        }
    }
    None
}

/// A value a read returned was written by some operation that may have taken effect.
pub(super) fn never_written(entries: &[Entry]) -> Option<Violation> {
    let mut written: HashSet<(&[u8], &[u8])> = HashSet::new();
    for e in entries.iter().filter(|e| e.outcome != Outcome::Failed) {
        match &e.op {
            Op::Put { key, value }
            | Op::Cas {
                key, new: value, ..
            } => {
                written.insert((key, value));
            }
            Op::Get { .. } | Op::Delete { .. } => {}
        }
    }
    entries.iter().find_map(|e| match e.result() {
        Some(OpResult::Get {
            value: Some(value), ..
        }) if !written.contains(&(e.op.key(), value.as_slice())) => {
            Some(Violation::NeverWritten { read: e.clone() })
        }
        _ => None,
    })
}

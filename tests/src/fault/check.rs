//! The checks a scenario ends with, each answering `Err` with an explanation.
//!
//! - the history is linearizable (a budget overrun is a failure to check, not a pass);
//! - every acknowledged write is in the committed history, at the revision the client was
//!   told, and nothing was committed that a client was told certainly failed;
//! - the final data is what the committed history adds up to;
//! - every watcher's stream keeps etcd's watch guarantees against the committed history.

use std::collections::BTreeMap;

use etch_proto::KeyValue;
use etch_proto::watch::{Event, EventType};

use super::watcher::Recorder;
use crate::checker::watch::{Committed, check_watch};
use crate::checker::{self, Budget, Verdict};
use crate::history::{Entry, Op, Outcome, show};

/// The history is linearizable.
pub fn linearizable(entries: &[Entry]) -> Result<(), String> {
    match checker::check(entries, &Budget::default()) {
        Verdict::Linearizable => Ok(()),
        Verdict::Violation(v) => Err(format!("the history is not linearizable: {v}")),
        Verdict::Unknown(why) => Err(format!(
            "the checker could not decide ({why}); the workload must stay checkable"
        )),
    }
}

/// The event a write leaves in the committed history, if it changed something.
fn expected_event(op: &Op) -> Option<(EventType, &[u8], &[u8])> {
    match op {
        Op::Put { key, value }
        | Op::Cas {
            key, new: value, ..
        } => Some((EventType::Put, key, value)),
        Op::Delete { key } => Some((EventType::Delete, key, &[])),
        Op::Get { .. } => None,
    }
}

fn is(event: &Event, kind: EventType, key: &[u8], value: &[u8]) -> bool {
    event.kind == kind
        && event.kv.key == key
        && (kind == EventType::Delete || event.kv.value == value)
}

/// Every acknowledged write is committed at the revision it reported; returns how many.
pub fn acknowledged_writes_committed(
    entries: &[Entry],
    committed: &Committed,
) -> Result<usize, String> {
    let mut count = 0;
    for e in entries {
        let Some(result) = e.result().filter(|r| r.wrote()) else {
            continue;
        };
        let Some((kind, key, value)) = expected_event(&e.op) else {
            continue;
        };
        let revision = result.revision();
        let found = committed
            .get(&revision)
            .is_some_and(|events| events.iter().any(|ev| is(ev, kind, key, value)));
        if !found {
            return Err(format!(
                "acknowledged write missing from the committed history:\n  {e}\n revision {revision} holds {:?}",
                committed.get(&revision)
            ));
        }
        count += 1;
    }
    Ok(count)
}

/// Every committed change to a workload key came from a write not known to have failed.
pub fn nothing_committed_that_failed(
    entries: &[Entry],
    committed: &Committed,
    prefix: &[u8],
) -> Result<(), String> {
    let possible: Vec<(EventType, &[u8], &[u8])> = (entries.iter())
        .filter(|e| e.outcome != Outcome::Failed)
        .filter_map(|e| expected_event(&e.op))
        .collect();
    let events = committed
        .values()
        .flatten()
        .filter(|ev| ev.kv.key.starts_with(prefix));
    for ev in events {
        if !possible
            .iter()
            .any(|&(kind, key, value)| is(ev, kind, key, value))
        {
            return Err(format!(
                "committed at revision {}: {:?} {} = {}, which no client may have written \
                 (failed writes excluded)",
                ev.kv.mod_revision,
                ev.kind,
                show(&ev.kv.key),
                show(&ev.kv.value)
            ));
        }
    }
    Ok(())
}

/// The final data under `prefix` is the last committed change of each key.
pub fn final_state_matches(
    committed: &Committed,
    data: &[KeyValue],
    prefix: &[u8],
) -> Result<(), String> {
    let mut replayed: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
    for ev in committed
        .values()
        .flatten()
        .filter(|ev| ev.kv.key.starts_with(prefix))
    {
        match ev.kind {
            EventType::Put => replayed.insert(&ev.kv.key, &ev.kv.value),
            EventType::Delete => replayed.remove(ev.kv.key.as_slice()),
        };
    }
    let stored: BTreeMap<&[u8], &[u8]> = (data.iter())
        .filter(|kv| kv.key.starts_with(prefix))
        .map(|kv| (kv.key.as_slice(), kv.value.as_slice()))
        .collect();
    if stored != replayed {
        let show_map = |m: &BTreeMap<&[u8], &[u8]>| {
            m.iter()
                .map(|(k, v)| format!("{}={}", show(k), show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "the final data is not what the committed history adds up to:\n stored:   {}\n replayed: {}",
            show_map(&stored),
            show_map(&replayed)
        ));
    }
    Ok(())
}

/// The watcher's stream keeps the watch guarantees against `committed`.
pub fn watch_stream(recorder: &Recorder, committed: &Committed) -> Result<(), String> {
    check_watch(committed, &recorder.spec, &recorder.received())
        .map_err(|v| format!("watcher {} broke a watch guarantee: {v}", recorder.name))
}

/// Counts of a history's outcomes: (answered, failed, unknown).
pub fn outcomes(entries: &[Entry]) -> (usize, usize, usize) {
    entries
        .iter()
        .fold((0, 0, 0), |(ok, failed, unknown), e| match e.outcome {
            Outcome::Ok(_) => (ok + 1, failed, unknown),
            Outcome::Failed => (ok, failed + 1, unknown),
            Outcome::Unknown => (ok, failed, unknown + 1),
        })
}

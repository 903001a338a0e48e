//! Checks one watcher's stream against the events the store committed.
//!
//! etch promises etcd's watch guarantees (see `etch_proto::watch`), which this checks of a
//! recorded stream:
//! - *ordered*: event revisions never go back, and none is at or below a revision a
//!   progress notification already covered;
//! - *unique*: no event (revision, key) arrives twice;
//! - *atomic*: all events of one revision arrive in one response;
//! - *reliable*: every committed event in the watched range, from the start revision up
//!   to the last revision the watcher heard of (its last event or progress notification),
//!   arrived — no gaps;
//! - and nothing arrives that was not committed (a phantom).
//!
//! The committed history comes from whatever the test trusts as the truth: a watch over
//! every key from revision 1 on a quiet cluster, or the writes of a history whose outcomes
//! are all known. Event filters (`no_put`, `no_delete`) are not modelled.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use etch_proto::watch::{Event, WatchResponse};
use etch_proto::{KeyRange, Revision};

use crate::history::show;

/// What the watcher asked for.
#[derive(Clone, Debug, Default)]
pub struct WatchSpec {
    pub key: Vec<u8>,
    /// etcd's conventions: empty for `key` alone, `[0]` for every key `>= key`.
    pub range_end: Vec<u8>,
    /// First revision watched; `0` takes the revision after the `created` response's header.
    pub start_revision: Revision,
}

/// The committed events of each revision, across all keys.
pub type Committed = BTreeMap<Revision, Vec<Event>>;

/// Groups events by the revision that made them (`kv.mod_revision`).
pub fn committed(events: impl IntoIterator<Item = Event>) -> Committed {
    let mut by_revision = Committed::new();
    for event in events {
        by_revision
            .entry(event.kv.mod_revision)
            .or_default()
            .push(event);
    }
    by_revision
}

/// A broken watch guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchViolation {
    /// An event of `revision` came after one of, or a progress notification for, `after`.
    OutOfOrder { revision: Revision, after: Revision },
    /// The event of `revision` for `key` arrived twice.
    Duplicate { revision: Revision, key: Vec<u8> },
    /// The events of `revision` were split across responses.
    Split { revision: Revision },
    /// The committed event of `revision` for `key` never arrived, though later ones did.
    Gap { revision: Revision, key: Vec<u8> },
    /// An event arrived that the store never committed (or not in that form).
    Phantom { revision: Revision, key: Vec<u8> },
}

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchViolation::OutOfOrder { revision, after } => {
                write!(
                    f,
                    "event of revision {revision} arrived after revision {after}"
                )
            }
            WatchViolation::Duplicate { revision, key } => {
                write!(
                    f,
                    "event of revision {revision} for {} arrived twice",
                    show(key)
                )
            }
            WatchViolation::Split { revision } => {
                write!(
                    f,
                    "events of revision {revision} arrived in more than one response"
                )
            }
            WatchViolation::Gap { revision, key } => write!(
                f,
                "event of revision {revision} for {} never arrived, though later ones did",
                show(key)
            ),
            WatchViolation::Phantom { revision, key } => write!(
                f,
                "event of revision {revision} for {} was never committed",
                show(key)
            ),
        }
    }
}

/// Checks `received`, everything one watcher got in order, against `committed`.
///
/// # Errors
///
/// The first broken guarantee, in stream order; gaps are looked for last.
pub fn check_watch(
    committed: &Committed,
    spec: &WatchSpec,
    received: &[WatchResponse],
) -> Result<(), WatchViolation> {
    let range = KeyRange::new(&spec.key, &spec.range_end);
    let start = match spec.start_revision {
        0 => received
            .iter()
            .find(|r| r.created)
            .map_or(1, |r| r.header.revision + 1),
        start => start,
    };
    // (revision, key) → the response it arrived in.
    let mut seen: HashMap<(Revision, &[u8]), usize> = HashMap::new();
    let mut response_of: HashMap<Revision, usize> = HashMap::new();
    // Everything up to here has been delivered, by the watcher's own account.
    let mut through = start - 1;
    for (i, response) in received.iter().enumerate() {
        if response.is_progress_notify() {
            through = through.max(response.header.revision);
            continue;
        }
        for event in &response.events {
            let (revision, key) = (event.kv.mod_revision, event.kv.key.as_slice());
            if seen.insert((revision, key), i).is_some() {
                let key = key.to_vec();
                return Err(WatchViolation::Duplicate { revision, key });
            }
            let earlier = response_of.insert(revision, i);
            if earlier.is_some_and(|j| j != i) {
                return Err(WatchViolation::Split { revision });
            }
            // At `through` only as another event of the revision this response is carrying.
            if revision < through || (revision == through && earlier.is_none()) {
                return Err(WatchViolation::OutOfOrder {
                    revision,
                    after: through,
                });
            }
            through = revision;
            let matches =
                |c: &Event| c.kind == event.kind && c.kv.key == key && c.kv.value == event.kv.value;
            let known = committed
                .get(&revision)
                .is_some_and(|c| c.iter().any(matches));
            if !known || !range.contains(key) {
                let key = key.to_vec();
                return Err(WatchViolation::Phantom { revision, key });
            }
        }
    }
    for (&revision, events) in committed.range(start..=through) {
        for event in events.iter().filter(|e| range.contains(&e.kv.key)) {
            if !seen.contains_key(&(revision, event.kv.key.as_slice())) {
                let key = event.kv.key.clone();
                return Err(WatchViolation::Gap { revision, key });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use etch_proto::KeyValue;
    use etch_proto::watch::EventType;

    use super::*;

    fn put(key: &str, value: &str, revision: Revision) -> Event {
        Event {
            kind: EventType::Put,
            kv: KeyValue {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                mod_revision: revision,
                ..KeyValue::default()
            },
            prev_kv: None,
        }
    }

    fn response(events: Vec<Event>) -> WatchResponse {
        WatchResponse {
            events,
            ..WatchResponse::default()
        }
    }

    fn progress(revision: Revision) -> WatchResponse {
        let mut r = WatchResponse::default();
        r.header.revision = revision;
        r
    }

    /// Revisions 2..=5 under `/a/`: a txn writes two keys at 3; `/b` at 4 is outside.
    fn store() -> Committed {
        committed([
            put("/a/1", "v2", 2),
            put("/a/1", "v3", 3),
            put("/a/2", "w3", 3),
            put("/b", "x4", 4),
            put("/a/2", "w5", 5),
        ])
    }

    fn prefix_a(start_revision: Revision) -> WatchSpec {
        WatchSpec {
            key: b"/a/".to_vec(),
            range_end: etch_proto::prefix_end(b"/a/"),
            start_revision,
        }
    }

    #[test]
    fn a_faithful_stream_passes() {
        let received = [
            response(vec![put("/a/1", "v2", 2)]),
            response(vec![put("/a/1", "v3", 3), put("/a/2", "w3", 3)]),
            progress(4),
            response(vec![put("/a/2", "w5", 5)]),
        ];
        assert_eq!(check_watch(&store(), &prefix_a(2), &received), Ok(()));
        // Resuming from 3 needs nothing older.
        assert_eq!(check_watch(&store(), &prefix_a(3), &received[1..]), Ok(()));
    }

    #[test]
    fn a_duplicated_event_is_caught() {
        let received = [
            response(vec![put("/a/1", "v2", 2)]),
            response(vec![put("/a/1", "v2", 2)]),
        ];
        let err = check_watch(&store(), &prefix_a(2), &received);
        assert_eq!(
            err,
            Err(WatchViolation::Duplicate {
                revision: 2,
                key: b"/a/1".to_vec()
            })
        );
    }

    #[test]
    fn a_gap_is_caught() {
        let received = [
            response(vec![put("/a/1", "v2", 2)]),
            response(vec![put("/a/2", "w5", 5)]),
        ];
        let err = check_watch(&store(), &prefix_a(2), &received);
        assert!(
            matches!(err, Err(WatchViolation::Gap { revision: 3, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn a_gap_before_a_progress_notification_is_caught() {
        let received = [response(vec![put("/a/1", "v2", 2)]), progress(5)];
        let err = check_watch(&store(), &prefix_a(2), &received);
        assert!(
            matches!(err, Err(WatchViolation::Gap { revision: 3, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn a_split_revision_is_caught() {
        let received = [
            response(vec![put("/a/1", "v3", 3)]),
            response(vec![put("/a/2", "w3", 3)]),
        ];
        let err = check_watch(&store(), &prefix_a(3), &received);
        assert_eq!(err, Err(WatchViolation::Split { revision: 3 }));
    }

    #[test]
    fn out_of_order_and_phantom_events_are_caught() {
        let received = [
            response(vec![put("/a/2", "w5", 5)]),
            response(vec![put("/a/1", "v2", 2)]),
        ];
        let err = check_watch(&store(), &prefix_a(2), &received);
        assert_eq!(
            err,
            Err(WatchViolation::OutOfOrder {
                revision: 2,
                after: 5
            })
        );
        let received = [response(vec![put("/b", "x4", 4)])];
        let err = check_watch(&store(), &prefix_a(2), &received);
        assert!(
            matches!(err, Err(WatchViolation::Phantom { revision: 4, .. })),
            "{err:?}"
        );
        let received = [response(vec![put("/a/1", "forged", 2)])];
        let err = check_watch(&store(), &prefix_a(2), &received);
        assert!(
            matches!(err, Err(WatchViolation::Phantom { revision: 2, .. })),
            "{err:?}"
        );
    }
}

//! Which events a watcher wants, and in what shape.

use std::sync::Arc;

use etch_proto::KeyRange;
use etch_proto::watch::{Event, EventType, WatchCreateRequest};

use super::queue::Shared;

/// A watcher's selection: its key range (etcd's `range_end` conventions), the event kinds
/// it leaves out, and whether it wants each event's previous version.
#[derive(Clone, Debug)]
pub struct Filter {
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
}

impl Filter {
    pub fn new(req: &WatchCreateRequest) -> Self {
        Filter {
            key: req.key.clone(),
            range_end: req.range_end.clone(),
            no_put: req.no_put,
            no_delete: req.no_delete,
            prev_kv: req.prev_kv,
        }
    }

    /// Whether `event` is one this watcher wants.
    pub fn wants(&self, event: &Event) -> bool {
        let kind_ok = match event.kind {
            EventType::Put => !self.no_put,
            EventType::Delete => !self.no_delete,
        };
        kind_ok && self.wants_key(&event.kv.key)
    }

    /// Whether `key` is in this watcher's range (etch's own keys never are).
    pub fn wants_key(&self, key: &[u8]) -> bool {
        KeyRange::new(&self.key, &self.range_end).contains(key) && !crate::mvcc::is_reserved(key)
    }

    /// The events of one revision this watcher wants, in their order, with `prev_kv` left
    /// out unless asked for: for a revision read from history, which nobody shares.
    pub fn select(&self, events: Vec<Event>) -> Vec<Event> {
        events
            .into_iter()
            .filter(|e| self.wants(e))
            .map(|e| self.shape(e))
            .collect()
    }

    /// The events of one published revision this watcher wants, still shared: the hub's
    /// whole slice when it wants every event (the common case, a watcher per prefix), else
    /// a new slice of the same events; `None` when it wants none. `prev_kv` stays in the
    /// shared events and is left out only by [`Filter::respond`].
    pub fn select_shared(&self, events: &Shared) -> Option<Shared> {
        let wanted = events.iter().filter(|e| self.wants(e)).count();
        if wanted == 0 {
            return None;
        }
        if wanted == events.len() {
            return Some(events.clone());
        }
        Some(events.iter().filter(|e| self.wants(e)).cloned().collect())
    }

    /// The events of a response, owned: the one copy of shared events a watcher makes, for
    /// the one response it is sending.
    pub fn respond(&self, events: &[Arc<Event>]) -> Vec<Event> {
        events
            .iter()
            .map(|e| Event {
                kind: e.kind,
                kv: e.kv.clone(),
                prev_kv: if self.prev_kv {
                    e.prev_kv.clone()
                } else {
                    None
                },
            })
            .collect()
    }

    fn shape(&self, mut event: Event) -> Event {
        if !self.prev_kv {
            event.prev_kv = None;
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use etch_proto::KeyValue;

    use super::*;

    fn event(kind: EventType, key: &[u8]) -> Event {
        Event {
            kind,
            kv: KeyValue {
                key: key.to_vec(),
                ..Default::default()
            },
            prev_kv: Some(KeyValue::default()),
        }
    }

    #[test]
    fn selects_by_range_and_kind() {
        let filter = Filter::new(&WatchCreateRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            no_delete: true,
            ..Default::default()
        });
        let events = [
            event(EventType::Put, b"a"),
            event(EventType::Delete, b"b"),
            event(EventType::Put, b"c"),
        ];
        let got = filter.select(events.to_vec());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kv.key, b"a");
        assert_eq!(got[0].prev_kv, None, "prev_kv only when asked for");
    }

    #[test]
    fn etchs_own_keys_are_never_watched() {
        let everything = Filter::new(&WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        });
        assert!(everything.wants_key(b"/app/a"));
        assert!(!everything.wants_key(b"\0etch/reactor/audit/checkpoint"));
    }

    #[test]
    fn shared_selections_share_the_events() {
        let shared: Shared = [
            event(EventType::Put, b"a"),
            event(EventType::Put, b"b"),
            event(EventType::Put, b"x"),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let every = Filter::new(&WatchCreateRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            ..Default::default()
        });
        let all = every.select_shared(&shared).expect("every event");
        assert!(
            Arc::ptr_eq(&all, &shared),
            "a watcher of everything shares the slice"
        );
        assert_eq!(
            every.respond(&all)[0].prev_kv,
            None,
            "prev_kv left out on sending"
        );

        let some = Filter::new(&WatchCreateRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: true,
            ..Default::default()
        });
        let picked = some.select_shared(&shared).expect("two events");
        assert_eq!(picked.len(), 2);
        assert!(Arc::ptr_eq(&picked[0], &shared[0]) && Arc::ptr_eq(&picked[1], &shared[1]));
        assert!(
            some.respond(&picked)[0].prev_kv.is_some(),
            "prev_kv when asked for"
        );

        let none = Filter::new(&WatchCreateRequest {
            key: b"q".to_vec(),
            ..Default::default()
        });
        assert!(none.select_shared(&shared).is_none());
    }
}

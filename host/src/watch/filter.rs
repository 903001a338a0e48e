//! Which events a watcher wants, and in what shape.

use etch_proto::KeyRange;
use etch_proto::watch::{Event, EventType, WatchCreateRequest};

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
        kind_ok && KeyRange::new(&self.key, &self.range_end).contains(&event.kv.key)
    }

    /// The events of one revision this watcher wants, in their order, with `prev_kv` left
    /// out unless asked for.
    pub fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| self.wants(e))
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
        let got = filter.select(&events);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kv.key, b"a");
        assert_eq!(got[0].prev_kv, None, "prev_kv only when asked for");
    }
}

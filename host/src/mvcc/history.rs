//! Change history as watchers see it: the events of one revision, each with the key's
//! previous version.
//!
//! `kv_history` lists the keys touched at a revision; the new version is the `kv_versions`
//! record at that revision, the previous one the newest record below it. Compaction keeps,
//! per key, the newest version at or below the floor, so above the floor the previous
//! version is always still there; at the floor itself it may be gone (prev_kv is then left
//! out, as etcd leaves it out for compacted history).

use std::ops::Bound::{Excluded, Included};

use etch_proto::watch::{Event as WatchEvent, EventType};
use etch_proto::{KeyValue, Revision};
use fjall::Readable;

use super::error::Result;
use super::keycode::{decode_version_key, key_prefix, version_key};
use super::store::{Outcome, Store, event_of, touches_in};
use super::view::View;

/// The selected events of one revision ([`View::watch_events_where`]).
#[derive(Debug, Default)]
pub struct Changes {
    pub events: Vec<WatchEvent>,
    /// Keys and values of both versions of every event read.
    pub bytes: usize,
    /// Reading stopped past the byte budget: the revision has more selected events.
    pub cut: bool,
    /// Whose write made the revision (empty for etch's own, a lease expiry).
    pub principal: String,
}

impl Store {
    /// The changes made at `rev` as watch events, in sub-revision order, each with the key's
    /// previous live version (when there was one). Empty for a revision that wrote nothing.
    ///
    /// # Errors
    ///
    /// As [`Store::events_at`]: Compacted below the floor, FutureRevision past the current
    /// revision (inner); storage failure or corrupt history (outer).
    pub fn watch_events(&self, rev: Revision) -> Outcome<Vec<WatchEvent>> {
        View::open(&self.spaces())?.watch_events(rev)
    }
}

impl View {
    /// [`Store::watch_events`] as this snapshot sees them.
    ///
    /// # Errors
    ///
    /// As [`Store::watch_events`].
    pub fn watch_events(&self, rev: Revision) -> Outcome<Vec<WatchEvent>> {
        Ok(self
            .watch_events_where(rev, |_| true, usize::MAX)?
            .map(|changes| changes.events))
    }

    /// The events at `rev` whose keys `keep` selects, as [`View::watch_events`] gives them;
    /// the others' values and previous versions are never read. Reading stops once the
    /// selected events take more than `max_bytes` (keys and values of both versions): then
    /// [`Changes::cut`] is set and the rest of the revision is left unread, so a reader
    /// with a budget never holds much more than its budget of one huge revision.
    ///
    /// # Errors
    ///
    /// As [`Store::watch_events`].
    pub fn watch_events_where(
        &self,
        rev: Revision,
        keep: impl Fn(&[u8]) -> bool,
        max_bytes: usize,
    ) -> Outcome<Changes> {
        let touches = match touches_in(self, rev)? {
            Ok(touches) => touches,
            Err(e) => return Ok(Err(e)),
        };
        let mut changes = Changes {
            principal: touches.principal,
            ..Changes::default()
        };
        for touch in touches.touches.into_iter().filter(|t| keep(&t.key)) {
            if changes.bytes > max_bytes {
                changes.cut = true;
                break;
            }
            let event = event_of(self, rev, touch)?;
            let prev_kv = self.previous(&event.kv.key, rev)?;
            let kv_bytes = |kv: &KeyValue| kv.key.len() + kv.value.len();
            changes.bytes += kv_bytes(&event.kv) + prev_kv.as_ref().map_or(0, kv_bytes);
            changes.events.push(WatchEvent {
                kind: if event.is_delete {
                    EventType::Delete
                } else {
                    EventType::Put
                },
                kv: event.kv,
                prev_kv,
            });
        }
        Ok(Ok(changes))
    }

    /// The live version of `key` just before `rev`: the newest record below `rev`, unless it
    /// is a deletion.
    pub fn previous(&self, key: &[u8], rev: Revision) -> Result<Option<KeyValue>> {
        let bounds = (Included(key_prefix(key)), Excluded(version_key(key, rev)));
        let Some(item) = self
            .snapshot()
            .range(&self.spaces().versions, bounds)
            .next_back()
        else {
            return Ok(None);
        };
        let (raw_key, raw) = item.into_inner()?;
        let (_, at) = decode_version_key(&raw_key)?;
        Ok(self
            .read_version(key, at, &raw)?
            .map(|v| v.into_kv(key.to_vec())))
    }
}

//! Watch messages: change notification with etcd's guarantees.
//!
//! A client opens a watch by sending [`crate::Request::Watch`] as the first frame of a new
//! bidirectional stream and keeps its send side open. The node answers with a stream of
//! `Result<Response::Watch(WatchResponse), Error>` frames:
//! 1. `created: true` (with the revision the watch starts after);
//! 2. events, ordered by revision, every event of one revision in one response, never twice,
//!    with no gap inside retained history;
//! 3. progress notifications (no events, `header.revision = R`: every event at or below `R`
//!    has been delivered), periodically when asked for and on request;
//! 4. at most one `canceled: true`, after which the node finishes the stream; a start
//!    revision below the compaction floor cancels with `compact_revision` set.
//!
//! On its send side the client may later write [`WatchControl`] frames: ask for a progress
//! notification, or cancel. Closing the stream also cancels.

use serde::{Deserialize, Serialize};

use crate::message::ResponseHeader;
use crate::types::{KeyValue, Revision};

/// What to watch and from where.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchCreateRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// etcd's conventions: empty for `key` alone, `[0]` for every key `>= key`.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Replay from this revision (inclusive); `0` for "changes after now".
    pub start_revision: Revision,
    /// Send periodic progress notifications while there are no events.
    pub progress_notify: bool,
    /// Leave out put events.
    pub no_put: bool,
    /// Leave out delete events.
    pub no_delete: bool,
    /// Attach each event's previous version of the key.
    pub prev_kv: bool,
}

/// Frames a client may send on an open watch stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchControl {
    /// Ask for a progress notification now.
    Progress,
    /// Cancel the watch; the node answers `canceled: true` and finishes the stream.
    Cancel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Put,
    Delete,
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventType,
    /// The key after the change; for a delete, the key with `mod_revision` set to the
    /// deletion revision and everything else empty, as etcd sends it.
    pub kv: KeyValue,
    /// The key before the change, when asked for with `prev_kv` and it existed.
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    pub header: ResponseHeader,
    /// The first response of a watch.
    pub created: bool,
    /// The last response of a watch.
    pub canceled: bool,
    /// Why the watch was canceled, for people.
    pub cancel_reason: String,
    /// Set when canceled because the start revision was compacted: the lowest revision
    /// still available.
    pub compact_revision: Revision,
    /// Events, ordered by revision; all events of one revision are in the same response.
    /// Empty in a progress notification.
    pub events: Vec<Event>,
}

impl WatchResponse {
    /// A progress notification: no events and not a created/canceled message.
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty() && !self.created && !self.canceled
    }
}

//! [`Watcher`]: one watch, as a state machine without I/O. The stream driver
//! (`crate::server::watch_stream`) asks it for the next response with [`Watcher::step`] and
//! waits with [`Watcher::ready`]; golden scripts drive it the same way, deterministically.

use std::sync::Arc;

use etch_proto::watch::{WatchCreateRequest, WatchResponse};
use etch_proto::{Error as ProtoError, Revision};

use super::filter::Filter;
use super::hub::{Hub, Registration};
use super::queue::{Batch, Pop};
use crate::mvcc;

/// What the watcher has for its client now.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this response. After a `canceled` one the watch is over.
    Send(WatchResponse),
    /// Nothing until [`Watcher::ready`] completes (or a progress request, or a cancel).
    Idle,
}

/// What a step that reads history is assumed to take, before it reads: one revision of
/// a large request with its previous values. At 1 MiB, 200 stalled streams of one
/// connection catching up on 2 MiB revisions ran 32 history reads at once, and the node's
/// RSS rose 220 MiB under a loaded machine (30 MiB at 4 MiB).
pub const HISTORY_STEP_BYTES: usize = 4 * 1024 * 1024;

/// One watch: either live (registered with the hub, reading its bounded queue) or catching
/// up (reading history from storage, revision by revision, until it reaches the hub).
pub struct Watcher {
    hub: Hub,
    filter: Arc<Filter>,
    /// The next revision this watcher has not looked at yet.
    next: Revision,
    live: Option<Registration>,
    /// A batch taken off the queue by [`Watcher::ready`], not yet sent: with the response
    /// being written, the most a watcher holds beside its queue.
    stash: Option<Batch>,
    /// The hub dropped us (queue full, or compacted history): catch up from storage.
    lagged: bool,
    progress_wanted: bool,
    done: bool,
}

impl Watcher {
    /// Opens a watch: the `created` response and the watcher, or the single `canceled`
    /// response when `start_revision` is below the compaction floor.
    pub fn open(
        hub: &Hub,
        req: &WatchCreateRequest,
    ) -> Result<(Watcher, WatchResponse), WatchResponse> {
        let filter = Arc::new(Filter::new(req));
        let floor = hub.store().compact_revision();
        if req.start_revision > 0 && req.start_revision < floor {
            return Err(compacted(floor, hub.store().revision()));
        }
        let mut watcher = Watcher {
            hub: hub.clone(),
            filter,
            next: req.start_revision,
            live: None,
            stash: None,
            lagged: false,
            progress_wanted: false,
            done: false,
        };
        if req.start_revision <= 0 {
            let (registration, published) = hub.register_now(&watcher.filter);
            watcher.live = Some(registration);
            watcher.next = published + 1;
        }
        let mut created = WatchResponse {
            created: true,
            ..Default::default()
        };
        created.header.revision = watcher.next - 1;
        Ok((watcher, created))
    }

    /// Whether the next [`Watcher::step`] reads only memory (else it may read storage and
    /// belongs on a blocking thread).
    pub fn is_live(&self) -> bool {
        self.live.is_some() && !self.lagged
    }

    /// About how many bytes of events the next [`Watcher::step`] takes: the next live batch
    /// (0 with none queued), or [`HISTORY_STEP_BYTES`] when it reads history.
    pub fn next_bytes(&self) -> usize {
        match (&self.stash, &self.live) {
            (Some(batch), _) => batch.bytes(),
            (None, Some(live)) if !self.lagged => live.queue.front_bytes(),
            _ => HISTORY_STEP_BYTES,
        }
    }

    /// Asks for a progress notification: sent as soon as every event up to the hub's
    /// published revision has been handed out.
    pub fn request_progress(&mut self) {
        self.progress_wanted = true;
    }

    /// The response that ends the watch on the client's request.
    pub fn cancel(&mut self) -> WatchResponse {
        self.done = true;
        self.leave();
        let mut resp = WatchResponse {
            canceled: true,
            cancel_reason: "watch canceled by the client".into(),
            ..Default::default()
        };
        resp.header.revision = self.next - 1;
        resp
    }

    /// The next response, or `Idle`.
    ///
    /// # Errors
    ///
    /// A storage failure while reading history.
    pub fn step(&mut self) -> mvcc::Result<Step> {
        loop {
            if self.done {
                return Ok(Step::Idle);
            }
            if self.lagged {
                self.leave();
                self.lagged = false;
            }
            if let Some(live) = &mut self.live {
                let next = match self.stash.take() {
                    Some(batch) => Pop::Batch(batch),
                    None => live.queue.try_pop(),
                };
                match next {
                    Pop::Batch(batch) => return Ok(Step::Send(self.deliver(batch))),
                    Pop::Closed => {
                        self.leave();
                        continue;
                    }
                    Pop::Empty => {
                        if self.progress_wanted
                            && let Some(rev) = self.hub.synced_at(&live.queue)
                        {
                            self.progress_wanted = false;
                            let mut resp = WatchResponse::default();
                            // A future start revision: nothing below it is wanted anyway.
                            resp.header.revision = rev.max(self.next - 1);
                            return Ok(Step::Send(resp));
                        }
                        if self.progress_wanted {
                            // Batches arrived in between: hand them out first.
                            continue;
                        }
                        return Ok(Step::Idle);
                    }
                }
            }
            if let Some(step) = self.catch_up()? {
                return Ok(step);
            }
        }
    }

    /// Waits until the live queue has something (or was closed by the hub). Cancel-safe.
    pub async fn ready(&mut self) {
        let Some(live) = &self.live else { return };
        if self.stash.is_some() || self.lagged {
            return;
        }
        let queue = live.queue.clone();
        match queue.pop().await {
            Some(batch) => self.stash = Some(batch),
            None => self.lagged = true,
        }
    }

    /// Reads history from `next` to the store's revision; returns the first non-empty
    /// revision for this watcher, a cancellation, or `None` once caught up and registered.
    fn catch_up(&mut self) -> mvcc::Result<Option<Step>> {
        let store = self.hub.store().clone();
        loop {
            let target = store.revision();
            while self.next <= target {
                let rev = self.next;
                // Only the keys in range are read (a watcher of one key catching up past a
                // delete of a million keys reads one).
                let filter = &self.filter;
                match store
                    .view()?
                    .watch_events_where(rev, |k| filter.wants_key(k), usize::MAX)?
                {
                    Ok(changes) => {
                        self.next += 1;
                        let events = self.filter.select(changes.events);
                        if !events.is_empty() {
                            return Ok(Some(Step::Send(self.response(rev, events))));
                        }
                    }
                    Err(ProtoError::Compacted { compact_revision }) => {
                        self.done = true;
                        return Ok(Some(Step::Send(compacted(compact_revision, target))));
                    }
                    Err(e) => {
                        self.done = true;
                        let mut resp = WatchResponse {
                            canceled: true,
                            cancel_reason: e.to_string(),
                            ..Default::default()
                        };
                        resp.header.revision = target;
                        return Ok(Some(Step::Send(resp)));
                    }
                }
            }
            if let Some(registration) = self.hub.register(&self.filter, self.next - 1) {
                self.live = Some(registration);
                return Ok(None);
            }
        }
    }

    fn deliver(&mut self, batch: Batch) -> WatchResponse {
        self.next = batch.revision + 1;
        self.response(batch.revision, self.filter.respond(&batch.events))
    }

    /// Revisions and bytes in this watcher's live queue (`None` while catching up, or once
    /// the hub has dropped it).
    pub fn queued(&self) -> Option<(usize, usize)> {
        self.live.as_ref().and_then(|live| live.queue.usage())
    }

    fn response(&self, revision: Revision, events: Vec<etch_proto::watch::Event>) -> WatchResponse {
        let mut resp = WatchResponse {
            events,
            ..Default::default()
        };
        resp.header.revision = revision;
        resp
    }

    /// Leaves the hub's registry (if registered), dropping anything still queued: the
    /// watcher re-reads it from history.
    fn leave(&mut self) {
        self.stash = None;
        if let Some(live) = self.live.take() {
            self.hub.unregister(live.id);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The cancellation for a start revision (or needed history) below the compaction floor.
fn compacted(floor: Revision, current: Revision) -> WatchResponse {
    let mut resp = WatchResponse {
        canceled: true,
        compact_revision: floor,
        cancel_reason: format!("required revision has been compacted (compact revision {floor})"),
        ..Default::default()
    };
    resp.header.revision = current;
    resp
}

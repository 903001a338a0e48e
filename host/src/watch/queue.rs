//! [`Queue`]: one live watcher's queue, bounded by revisions and by bytes.
//!
//! The hub pushes, the watcher pops. A push that would take the queue past either bound
//! *overflows* it instead: everything queued is dropped at once and the queue is closed, so
//! a watcher that stopped reading (its client does not read its stream) pins nothing while
//! it waits; when it runs again it finds the queue closed and reads the revisions it missed
//! from history. One revision larger than the byte budget is still queued when the queue is
//! empty, so a watcher that keeps up is never sent to history for one large revision.
//!
//! The events in a queue are shared with the hub's other watchers ([`Shared`]): the budget
//! charges each watcher for every event it keeps alive, so the memory held by queues is at
//! most the sum of the budgets, and usually far less. All queues of a node also draw on one
//! [`NodeBytes`] pool: a push that would take the node past it overflows that queue, so
//! however many watchers stall, together they pin at most the pool (plus one revision each
//! in queues that were empty).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use etch_proto::Revision;
use etch_proto::watch::Event;
use tokio::sync::Notify;

/// One revision's events as read from history, each behind its own `Arc` so that watchers
/// selecting a subset share the events themselves, and watchers selecting all of them share
/// the whole slice.
pub type Shared = Arc<[Arc<Event>]>;

/// One revision's events for one watcher, already filtered (`prev_kv` is left out only when
/// the response is built, so the events stay shared).
#[derive(Clone, Debug)]
pub struct Batch {
    pub revision: Revision,
    pub events: Shared,
}

impl Batch {
    /// The bytes this batch keeps alive, as charged against a queue's budget.
    pub fn bytes(&self) -> usize {
        self.events.iter().map(|e| event_bytes(e)).sum::<usize>()
            + self.events.len() * size_of::<Arc<Event>>()
            + size_of::<Batch>()
    }
}

/// Heap and inline bytes of one shared event: both versions of the key, and the `Arc`.
pub fn event_bytes(event: &Event) -> usize {
    let kv = |kv: &etch_proto::KeyValue| kv.key.len() + kv.value.len();
    size_of::<Event>()
        + 2 * size_of::<usize>()
        + kv(&event.kv)
        + event.prev_kv.as_ref().map_or(0, kv)
}

/// How much one watcher may have queued before it goes back to history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Revisions (at least 1).
    pub revisions: usize,
    /// Bytes, as [`Batch::bytes`] counts them (at least 1).
    pub bytes: usize,
    /// Bytes all live watchers of the node may have queued together (at least 1).
    pub node_bytes: usize,
}

/// The bytes queued by all live watchers of a node, against their common ceiling.
#[derive(Debug)]
pub(super) struct NodeBytes {
    used: AtomicUsize,
    cap: usize,
}

impl NodeBytes {
    pub(super) fn new(cap: usize) -> Self {
        NodeBytes {
            used: AtomicUsize::new(0),
            cap: cap.max(1),
        }
    }

    /// Bytes queued now by every live watcher together.
    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn would_pass(&self, bytes: usize) -> bool {
        self.used().saturating_add(bytes) > self.cap
    }

    fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        // Every release matches an earlier charge of the same queue.
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// What became of a batch offered to a queue.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    Queued,
    /// The queue was full: it is now empty and closed.
    Overflowed,
    /// The queue was closed before.
    Closed,
}

/// What the watcher finds in its queue.
#[derive(Debug)]
pub(super) enum Pop {
    Batch(Batch),
    Empty,
    /// Closed by the hub (overflow or compacted history) and empty: catch up from history.
    Closed,
}

pub(super) struct Queue {
    limits: Limits,
    node: Arc<NodeBytes>,
    inner: Mutex<Inner>,
    /// Woken on every push and on close; one permit is kept when nobody waits, so a push
    /// between the watcher's check and its wait is not missed.
    ready: Notify,
}

#[derive(Default)]
struct Inner {
    batches: VecDeque<Batch>,
    bytes: usize,
    closed: bool,
}

impl Queue {
    pub(super) fn new(limits: Limits, node: Arc<NodeBytes>) -> Self {
        Queue {
            limits: Limits {
                revisions: limits.revisions.max(1),
                bytes: limits.bytes.max(1),
                node_bytes: limits.node_bytes.max(1),
            },
            node,
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
        }
    }

    /// Queues `batch`, or overflows the queue if it would pass a bound (its own, or the
    /// node's: the watcher that would take the node past its pool goes back to history).
    pub(super) fn offer(&self, batch: Batch) -> Offer {
        let mut inner = self.lock();
        if inner.closed {
            return Offer::Closed;
        }
        let bytes = batch.bytes();
        let full = inner.batches.len() >= self.limits.revisions
            || (!inner.batches.is_empty()
                && (inner.bytes.saturating_add(bytes) > self.limits.bytes
                    || self.node.would_pass(bytes)));
        if full {
            self.close_locked(&mut inner);
            drop(inner);
            self.ready.notify_one();
            return Offer::Overflowed;
        }
        self.node.charge(bytes);
        inner.bytes += bytes;
        inner.batches.push_back(batch);
        drop(inner);
        self.ready.notify_one();
        Offer::Queued
    }

    /// Drops everything queued and closes the queue: the watcher goes back to history.
    pub(super) fn close(&self) {
        self.close_locked(&mut self.lock());
        self.ready.notify_one();
    }

    pub(super) fn try_pop(&self) -> Pop {
        let mut inner = self.lock();
        match inner.batches.pop_front() {
            Some(batch) => {
                let bytes = batch.bytes();
                inner.bytes -= bytes;
                self.node.release(bytes);
                Pop::Batch(batch)
            }
            None if inner.closed => Pop::Closed,
            None => Pop::Empty,
        }
    }

    /// Waits for a batch; `None` once the queue is closed and empty. Cancel-safe: a batch is
    /// taken only after the wait, without another await point.
    pub(super) async fn pop(&self) -> Option<Batch> {
        loop {
            match self.try_pop() {
                Pop::Batch(batch) => return Some(batch),
                Pop::Closed => return None,
                Pop::Empty => self.ready.notified().await,
            }
        }
    }

    /// The bytes of the batch [`Queue::try_pop`] would take next (0 when empty).
    pub(super) fn front_bytes(&self) -> usize {
        self.lock().batches.front().map_or(0, Batch::bytes)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().batches.is_empty()
    }

    /// Revisions and bytes queued now; `None` once the hub closed the queue.
    pub(super) fn usage(&self) -> Option<(usize, usize)> {
        let inner = self.lock();
        (!inner.closed).then_some((inner.batches.len(), inner.bytes))
    }

    fn close_locked(&self, inner: &mut Inner) {
        inner.batches = VecDeque::new();
        self.node.release(std::mem::take(&mut inner.bytes));
        inner.closed = true;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A queue and two counters, consistent after any panic mid-update (the counters
        // only bound the queue; a wrong count costs an early trip to history at worst).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // A watcher that goes away returns what its queue still held to the node's pool.
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.node.release(std::mem::take(&mut inner.bytes));
    }
}

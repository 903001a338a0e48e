//! [`Hub`]: the fan-out from applied revisions to live watchers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use etch_proto::Revision;

use super::filter::Filter;
use super::queue::{Batch, Limits, NodeBytes, Offer, Queue, Shared};
use crate::mvcc;

/// The watch hub of one node. Cheap to clone; clones share the registry.
#[derive(Clone)]
pub struct Hub {
    store: mvcc::Store,
    limits: Limits,
    /// What all live queues hold together, against `limits.node_bytes`.
    node_bytes: Arc<NodeBytes>,
    state: Arc<Mutex<State>>,
}

struct State {
    /// Every revision up to this one has been offered to every registered watcher.
    published: Revision,
    next_id: u64,
    slots: HashMap<u64, Slot>,
}

/// A live watcher as the hub sees it.
struct Slot {
    filter: Arc<Filter>,
    /// The first revision this watcher wants from the live stream.
    min_rev: Revision,
    queue: Arc<Queue>,
}

/// A live registration: the watcher's id and its bounded queue.
pub(super) struct Registration {
    pub id: u64,
    pub queue: Arc<Queue>,
}

impl Hub {
    /// A hub over `store` whose live watchers each queue at most `limits` (revisions and
    /// bytes, and all of them together at most `limits.node_bytes`) before they are switched
    /// to catching up from history.
    pub fn new(store: mvcc::Store, limits: Limits) -> Hub {
        let published = store.revision();
        Hub {
            store,
            node_bytes: Arc::new(NodeBytes::new(limits.node_bytes)),
            limits,
            state: Arc::new(Mutex::new(State {
                published,
                next_id: 1,
                slots: HashMap::new(),
            })),
        }
    }

    pub fn store(&self) -> &mvcc::Store {
        &self.store
    }

    /// The last revision offered to live watchers.
    pub fn published(&self) -> Revision {
        self.lock().published
    }

    /// Bytes of events queued by all live watchers together.
    pub fn queued_bytes(&self) -> usize {
        self.node_bytes.used()
    }

    /// The number of live (registered) watchers.
    pub fn live_watchers(&self) -> usize {
        self.lock().slots.len()
    }

    /// Offers every revision applied since the last call to the live watchers, in order.
    /// Reads storage: call it from a blocking context. The events of a revision are read
    /// only after the batch that wrote them was committed (the store's revision counter
    /// moves after the commit), so nothing is published that a crash could take back.
    ///
    /// A watcher whose queue is full (by revisions or bytes) is dropped from the registry
    /// and its queue emptied at once: it notices the closed queue and catches up from
    /// history. If a revision's history is already compacted (a compaction raced the
    /// feeder), every live watcher is dropped the same way and finds the compaction when it
    /// reads history.
    ///
    /// Each revision is read once, and its events are shared by every watcher that wants
    /// them (see [`Shared`]), never copied per watcher.
    ///
    /// # Errors
    ///
    /// A storage failure; the revision is offered again on the next call.
    pub fn publish(&self) -> mvcc::Result<()> {
        loop {
            let next = self.published() + 1;
            let current = self.store.revision();
            if next > current {
                return Ok(());
            }
            {
                // Nobody to offer them to: skip the reads. A watcher registering later has
                // caught up to some revision; past it, the hub refuses it and it reads more
                // history first.
                let mut state = self.lock();
                if state.slots.is_empty() {
                    state.published = state.published.max(current);
                    return Ok(());
                }
            }
            let events = self.store.watch_events(next)?;
            let mut state = self.lock();
            match events {
                Ok(events) => {
                    let events: Shared = events.into_iter().map(Arc::new).collect();
                    state.slots.retain(|&id, slot| {
                        if next < slot.min_rev {
                            return true;
                        }
                        let Some(events) = slot.filter.select_shared(&events) else {
                            return true;
                        };
                        let batch = Batch {
                            revision: next,
                            events,
                        };
                        match slot.queue.offer(batch) {
                            Offer::Queued => true,
                            Offer::Overflowed => {
                                tracing::debug!(
                                    watcher = id,
                                    revision = next,
                                    "slow watcher switched to history"
                                );
                                false
                            }
                            Offer::Closed => false,
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(revision = next, error = %e, "history gone before publishing");
                    for slot in state.slots.values() {
                        slot.queue.close();
                    }
                    state.slots.clear();
                }
            }
            state.published = next;
        }
    }

    /// Registers a live watcher that has seen every revision up to `caught_up`; refused
    /// (`None`) while the hub has published past that (the watcher must read more history
    /// first). On success the watcher gets every wanted revision after `caught_up`.
    pub(super) fn register(
        &self,
        filter: &Arc<Filter>,
        caught_up: Revision,
    ) -> Option<Registration> {
        let mut state = self.lock();
        if state.published > caught_up {
            return None;
        }
        Some(self.insert(&mut state, filter, caught_up + 1))
    }

    /// Registers a live watcher from now on: returns the registration and the revision it
    /// starts after. "Now" is the store's applied revision, which the hub's published one
    /// may trail: a client that wrote and then watched from now must not be told of its
    /// own write (seen under load: the feed had not published the put yet).
    pub(super) fn register_now(&self, filter: &Arc<Filter>) -> (Registration, Revision) {
        let applied = self.store().revision();
        let mut state = self.lock();
        let after = state.published.max(applied);
        let registration = self.insert(&mut state, filter, after + 1);
        (registration, after)
    }

    /// The hub's published revision, if the watcher's `queue` is empty at this moment:
    /// then every wanted event up to that revision has reached the watcher.
    pub(super) fn synced_at(&self, queue: &Queue) -> Option<Revision> {
        let state = self.lock();
        queue.is_empty().then_some(state.published)
    }

    pub(super) fn unregister(&self, id: u64) {
        self.lock().slots.remove(&id);
    }

    fn insert(&self, state: &mut State, filter: &Arc<Filter>, min_rev: Revision) -> Registration {
        let queue = Arc::new(Queue::new(self.limits, self.node_bytes.clone()));
        let id = state.next_id;
        state.next_id += 1;
        state.slots.insert(
            id,
            Slot {
                filter: filter.clone(),
                min_rev,
                queue: queue.clone(),
            },
        );
        Registration { id, queue }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a registry and a counter, both valid after any panic mid-update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

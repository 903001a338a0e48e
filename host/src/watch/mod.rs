//! Watch: telling clients about every change, in order, from any revision still in history.
//!
//! # The guarantees (etcd's six)
//!
//! - **Ordered**: events reach a watcher by revision; within a revision in sub-revision order.
//! - **Unique**: no event twice. Each watcher keeps `next`, the first revision it has not
//!   looked at; it only ever moves forward, and every path (live queue or history) delivers
//!   a revision only if it is `>= next`.
//! - **Reliable**: no gap inside retained history. Every revision is either read from
//!   history by the watcher itself, or offered to it by the hub while it is registered, and
//!   the hand-over between the two happens under the hub's lock (below).
//! - **Atomic**: every event of one revision goes in one [`WatchResponse`]: a revision is
//!   the unit of the queue and of history reads.
//! - **Resumable**: a client that saw revision R reconnects with `start_revision = R + 1`
//!   (to any node: all serve the same history).
//! - **Bookmarkable**: a progress notification at R is sent only when the watcher's queue
//!   is empty while the hub's lock is held, i.e. every wanted event up to the hub's last
//!   published revision R has been handed out.
//!
//! # How
//!
//! The [`Hub`] is fed by one task per node: whenever the state machine reports a new
//! revision (after the fjall batch is committed), the hub reads each new revision's events
//! from history ([`crate::mvcc::Store::watch_events`], with each key's previous version) and
//! offers them, filtered, to every registered watcher's **bounded** queue. Reading from
//! storage instead of having apply push events keeps apply untouched and makes a snapshot
//! install (a jump of many revisions) just more history to read. A revision's events are
//! read once and shared (reference-counted) by every watcher that wants them; a watcher
//! makes its own copy only of the one response it is sending.
//!
//! A [`Watcher`] is live (registered, reading its queue) or catching up (reading history
//! itself). A watch from `start_revision` starts catching up; one from "now" registers at
//! once. A watcher that is too slow finds its queue full — by revisions or by bytes
//! ([`Limits`]) — and the hub empties it and drops it from the registry; it goes back to
//! history from its own `next`: memory per watcher stays bounded by its byte budget plus
//! the one response in flight, and no event is lost. Catching up reads history one
//! revision at a time, so it holds one revision's events at most. Catching up ends when the watcher has
//! read up to the store's revision and the hub has published nothing past it: then, under
//! the hub's lock, it registers for everything after that point. If history it needs was
//! compacted meanwhile it gets the one `canceled` response with `compact_revision`.
//!
//! Every node serves watches from its own applied state (followers included): watches are
//! never forwarded. The stream protocol is in `etch_proto::watch`; the stream driver is
//! `crate::server::watch_stream`.
//!
//! [`WatchResponse`]: etch_proto::watch::WatchResponse

mod filter;
mod hub;
mod queue;
mod watcher;

#[cfg(test)]
mod budget_test;
#[cfg(test)]
pub(crate) mod script_test;

pub use filter::Filter;
pub use hub::Hub;
pub use queue::{Batch, Limits, Shared};
pub use watcher::{Step, Watcher};

/// Feeds `hub` after every applied batch until the state machine goes away.
pub async fn feed(hub: Hub, mut applied: tokio::sync::watch::Receiver<i64>) {
    loop {
        let feeder = hub.clone();
        match tokio::task::spawn_blocking(move || feeder.publish()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "watch hub cannot read history"),
            Err(e) => tracing::error!(error = %e, "watch hub publisher failed"),
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

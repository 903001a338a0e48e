//! Recorded client histories, for the linearizability checker in [`crate::checker`].
//!
//! A fault test runs several clients against a cluster while it kills, pauses and
//! partitions nodes. Each client brackets every request with [`History::invoke`] (just
//! before sending) and [`History::complete`] (just after the answer, or the error, came
//! back). Both take their timestamp from one monotonic clock inside the same lock, so the
//! recorded order of events is a real-time order: if `complete(a)` returned before
//! `invoke(b)` was called, `a`'s completion time is below `b`'s invocation time.
//!
//! The outcome says what the client knows: [`Outcome::Ok`] with the answer,
//! [`Outcome::Failed`] when the request certainly did not take effect, and
//! [`Outcome::Unknown`] when it may have (a timeout, a connection lost after sending). An
//! operation never completed — the test ended first — counts as unknown. [`outcome`]
//! maps an SDK answer to an outcome.
//!
//! # Examples
//!
//! ```
//! use etch_tests::history::{History, Op, OpResult, Outcome};
//!
//! let history = History::new();
//! let id = history.invoke(0, Op::Put { key: b"k".to_vec(), value: b"v1".to_vec() });
//! history.complete(id, Outcome::Ok(OpResult::Put { revision: 2 }));
//! assert_eq!(history.entries().len(), 1);
//! ```

mod op;
mod wire;

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

pub(crate) use op::show;
pub use op::{ClientId, Entry, Op, OpId, OpResult, Outcome};
pub use wire::outcome;

/// A thread-safe recorder of invocations and completions; share it with an `Arc`.
#[derive(Debug)]
pub struct History {
    start: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        History {
            start: Instant::now(),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Records that `client` is about to send `op`; returns the id to complete it with.
    pub fn invoke(&self, client: ClientId, op: Op) -> OpId {
        let mut entries = self.lock();
        let id = entries.len();
        let invoked = self.now();
        entries.push(Entry {
            id,
            client,
            op,
            invoked,
            completed: None,
            outcome: Outcome::Unknown,
        });
        id
    }

    /// Records how operation `id` ended. Completing an id twice, or one never invoked, is a
    /// bug in the test and panics.
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let mut entries = self.lock();
        let completed = self.now();
        let entry = entries
            .get_mut(id)
            .unwrap_or_else(|| panic!("complete({id}): no such operation in this history"));
        assert!(
            entry.completed.is_none(),
            "complete({id}): already completed as {:?}",
            entry.outcome
        );
        entry.completed = Some(completed);
        entry.outcome = outcome;
    }

    /// A copy of every entry so far, in invocation order (outstanding ones as unknown).
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// Checks the history so far with [`crate::checker::check`].
    pub fn check(&self, budget: &crate::checker::Budget) -> crate::checker::Verdict {
        crate::checker::check(&self.entries(), budget)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A client that panicked while holding the lock left the vector whole (every
        // mutation is a single push or field write), so the data is still good.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn timestamps_follow_real_time_across_threads() {
        let history = Arc::new(History::new());
        let a = history.invoke(0, Op::Get { key: b"k".to_vec() });
        history.complete(a, Outcome::Failed);
        let h = Arc::clone(&history);
        let b = std::thread::spawn(move || h.invoke(1, Op::Get { key: b"k".to_vec() }))
            .join()
            .expect("thread");
        let entries = history.entries();
        assert!(entries[a].completed.expect("completed") <= entries[b].invoked);
        assert_eq!(entries[b].completed, None);
        assert_eq!(entries[b].outcome, Outcome::Unknown);
    }

    #[test]
    #[should_panic(expected = "already completed")]
    fn completing_twice_is_a_test_bug() {
        let history = History::new();
        let a = history.invoke(0, Op::Get { key: b"k".to_vec() });
        history.complete(a, Outcome::Failed);
        history.complete(a, Outcome::Failed);
    }
}

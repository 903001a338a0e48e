//! A bound on the committed entries read for apply and not applied yet.
//!
//! openraft's core reads every newly committed range from the log and hands it to the
//! state machine's task through an unbounded channel. When apply is slower than the log
//! (a member catching up appends at network speed and applies at apply speed), the entries
//! in that channel piled up: a member added after 350,000 puts reached 220-750 MiB while
//! its peers stayed near 90 MiB. [`ApplyBacklog`] counts the bytes read for apply and not
//! applied yet; the log store's read for apply waits (briefly) while they
//! pass [`LIMIT`], as etcd's raft loop waits on its apply channel. The core then answers
//! its leader later, which slows replication to this member to the pace of its apply.
//!
//! Measured with `etch-bench suite --workloads put100v,grow,catchup` (n4 is the member
//! added; its peak RSS from /proc, the page cache dropped before it joins): without the
//! bound 186-268 MiB warm; with it 117-158 MiB warm, 118-124 MiB cold. A wait cut at 200 ms
//! let cold runs reach 194-392 MiB (the reads went ahead while apply read from disk); the
//! longest wait seen cold was 126 ms, so the cut is now half the election timeout, and
//! after a wait ran out the reads go ahead until apply is under the limit again.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Bytes of committed entries that may wait for apply before a read for apply waits.
pub const LIMIT: usize = 8 * 1024 * 1024;

/// Committed entries read for apply and not applied yet, in bytes.
#[derive(Debug)]
pub struct ApplyBacklog {
    /// Bytes read, by the last index of each read.
    reads: Mutex<BTreeMap<u64, usize>>,
    applied: Notify,
    /// The longest a read for apply waits for room. openraft's core handles nothing else
    /// while it waits (its own ticks included), so this stays well inside the election
    /// timeout; past it the read goes ahead, and apply is left to catch up.
    max_wait: Duration,
    /// A wait ran out: reads go ahead without waiting until the backlog is under the limit
    /// again, so that an apply stuck for long (a plugin compiling, a slow disk) costs the
    /// core one wait, not one per commit (its heartbeats wait with it).
    gave_up: std::sync::atomic::AtomicBool,
}

impl ApplyBacklog {
    /// A backlog whose reads wait at most `max_wait` for room.
    pub fn new(max_wait: Duration) -> Self {
        ApplyBacklog {
            reads: Mutex::default(),
            applied: Notify::new(),
            max_wait,
            gave_up: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Bytes read for apply and not applied yet.
    pub fn bytes(&self) -> usize {
        self.reads().values().sum()
    }

    /// Waits until the backlog is under [`LIMIT`], or `max_wait` has passed; not at all
    /// after a wait ran out, until the backlog is under the limit again.
    pub async fn room(&self) {
        use std::sync::atomic::Ordering;
        let deadline = tokio::time::Instant::now() + self.max_wait;
        loop {
            let applied = self.applied.notified();
            tokio::pin!(applied);
            // Registered before the check, so an apply between the two still wakes us.
            applied.as_mut().enable();
            if self.bytes() < LIMIT {
                self.gave_up.store(false, Ordering::Relaxed);
                return;
            }
            if self.gave_up.load(Ordering::Relaxed) {
                return;
            }
            if tokio::time::timeout_at(deadline, applied).await.is_err() {
                tracing::debug!(bytes = self.bytes(), "apply backlog still full; reading on");
                self.gave_up.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Records a read for apply of `bytes`, up to log index `last`.
    pub fn read(&self, last: u64, bytes: usize) {
        *self.reads().entry(last).or_default() += bytes;
    }

    /// Everything up to log index `index` is applied (or covered by an installed snapshot).
    pub fn applied(&self, index: u64) {
        {
            let mut reads = self.reads();
            let later = reads.split_off(&(index.saturating_add(1)));
            *reads = later;
        }
        self.applied.notify_waiters();
    }

    fn reads(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, usize>> {
        self.reads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MAX_WAIT: Duration = Duration::from_millis(500);

    #[tokio::test]
    async fn a_read_under_the_limit_goes_ahead() {
        let backlog = ApplyBacklog::new(MAX_WAIT);
        backlog.read(10, LIMIT - 1);
        tokio::time::timeout(Duration::from_secs(5), backlog.room())
            .await
            .expect("room under the limit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_over_the_limit_waits_for_apply() {
        let backlog = Arc::new(ApplyBacklog::new(MAX_WAIT));
        backlog.read(10, LIMIT / 2);
        backlog.read(20, LIMIT / 2);
        let waiting = tokio::spawn({
            let backlog = backlog.clone();
            async move {
                let started = tokio::time::Instant::now();
                backlog.room().await;
                started.elapsed()
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a full backlog lets a read through");
        // Applying the first read leaves half the limit: room.
        backlog.applied(10);
        let waited = waiting.await.expect("waiter");
        assert!(
            waited < MAX_WAIT,
            "woken by the apply, not the deadline: {waited:?}"
        );
        assert_eq!(backlog.bytes(), LIMIT / 2);
        backlog.applied(25);
        assert_eq!(backlog.bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_apply_holds_the_reads_one_max_wait_in_all() {
        let backlog = ApplyBacklog::new(MAX_WAIT);
        backlog.read(10, LIMIT);
        let started = tokio::time::Instant::now();
        backlog.room().await;
        assert_eq!(started.elapsed(), MAX_WAIT);
        // The next reads go ahead while the backlog stays full...
        backlog.read(20, LIMIT);
        let again = tokio::time::Instant::now();
        backlog.room().await;
        assert_eq!(again.elapsed(), Duration::ZERO);
        // ...and wait again once apply has caught up below the limit.
        backlog.applied(20);
        backlog.room().await;
        backlog.read(30, LIMIT);
        let third = tokio::time::Instant::now();
        backlog.room().await;
        assert_eq!(third.elapsed(), MAX_WAIT);
    }
}

//! What a connection is doing: how many requests or streams it has open and when the last
//! one ended, so that a connection kept up only by keep-alives (QUIC's, HTTP/2's pings)
//! can be told apart and closed. Both client fronts use it, per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::time::{Duration, Instant};

/// Open requests or streams, and when the last one ended, on one connection. Atomics, not
/// a lock: every request passes here on its way in and out.
#[derive(Debug)]
pub(super) struct Activity {
    open: AtomicUsize,
    /// When the connection was made; `last_ms` counts from it.
    born: Instant,
    last_ms: AtomicU64,
}

/// One open request or stream, open until dropped.
#[derive(Debug)]
pub(super) struct OpenStream {
    activity: Arc<Activity>,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Records a new request or stream, open until the returned guard is dropped. (Only
    /// its end is timed: while it is open the connection is not idle, and it ends after
    /// it began.)
    pub(super) fn open(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::SeqCst);
        OpenStream {
            activity: self.clone(),
        }
    }

    /// When the connection becomes idle for `timeout` if nothing happens before; `None`
    /// while a request or stream is open (a watch may be silent for hours, and is not idle).
    pub(super) fn idle_at(&self, timeout: Duration) -> Option<Instant> {
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::SeqCst));
        // One that opened meanwhile was not timed when it opened: look again.
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.born + last + timeout)
    }

    /// Returns once the connection has been idle for `timeout`.
    pub(super) async fn idle(&self, timeout: Duration) {
        loop {
            // While something is open, look again a timeout later (at least 100 ms: a
            // zero timeout must not spin).
            let wake = self
                .idle_at(timeout)
                .unwrap_or_else(|| Instant::now() + timeout.max(Duration::from_millis(100)));
            tokio::time::sleep_until(wake).await;
            if self.idle_at(timeout).is_some_and(|at| at <= Instant::now()) {
                return;
            }
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let activity = &self.activity;
        let ms = u64::try_from(activity.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_ms.fetch_max(ms, Ordering::SeqCst);
        activity.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_open_streams_and_counted_from_the_last_end() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(60);
        let first = activity.idle_at(timeout).expect("nothing open");
        assert_eq!(first, activity.born + timeout);
        let stream = activity.open();
        assert_eq!(activity.idle_at(timeout), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(stream);
        let after = activity.idle_at(timeout).expect("closed again");
        assert_eq!(after, activity.born + Duration::from_secs(5) + timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_returns_a_timeout_after_the_last_end_and_never_while_open() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(60);
        let stream = activity.open();
        let started = Instant::now();
        let waiting = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle(timeout).await }
        });
        // Open for three timeouts: not idle.
        tokio::time::advance(timeout * 3).await;
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "idle while a stream was open");
        drop(stream);
        waiting.await.expect("the idle wait");
        assert!(
            started.elapsed() >= timeout * 4,
            "idle a timeout after the end"
        );
    }
}

//! What a connection is doing: how many streams it has open and when it last did anything,
//! so that a connection kept up only by QUIC keep-alives can be told apart and closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::{Duration, Instant};

/// Open streams and the time of the last request or stream end on one connection.
#[derive(Debug)]
pub(super) struct Activity {
    open: AtomicUsize,
    last: Mutex<Instant>,
}

/// One open stream; it counts as activity when it starts and when it ends.
#[derive(Debug)]
pub(super) struct OpenStream {
    activity: Arc<Activity>,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    fn touch(&self) {
        // An `Instant` is written whole; a poisoned lock still holds a valid one.
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// Records a new stream, open until the returned guard is dropped.
    pub(super) fn open(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.touch();
        OpenStream {
            activity: self.clone(),
        }
    }

    /// When the connection becomes idle for `timeout` if nothing happens before; `None`
    /// while a stream is open (a watch may be silent for hours, and is not idle).
    pub(super) fn idle_at(&self, timeout: Duration) -> Option<Instant> {
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        Some(last + timeout)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_without_open_streams_and_counted_from_the_last_end() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(60);
        let first = activity.idle_at(timeout).expect("no stream open");
        let stream = activity.open();
        assert_eq!(activity.idle_at(timeout), None);
        drop(stream);
        let after = activity.idle_at(timeout).expect("closed again");
        assert!(after >= first);
    }
}

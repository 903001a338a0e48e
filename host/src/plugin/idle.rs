//! [`Idle`]: instances kept between calls, at most a fixed number, the least recently
//! used dropped first.
//!
//! A call takes an instance out (so no two calls share one) and gives it back when it
//! succeeded; an instance that failed is never given back. What may be kept, and when an
//! instance is the one a call wants, is the caller's business (`validator.rs`).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Instances waiting for their next call, oldest first.
pub(super) struct Idle<T> {
    kept: Mutex<VecDeque<T>>,
    cap: usize,
}

impl<T> Idle<T> {
    /// A pool that keeps at most `cap` instances.
    pub(super) fn new(cap: usize) -> Idle<T> {
        Idle {
            kept: Mutex::new(VecDeque::with_capacity(cap)),
            cap,
        }
    }

    /// Takes out the most recently kept instance that `fits`, if any.
    pub(super) fn take(&self, fits: impl Fn(&T) -> bool) -> Option<T> {
        let mut kept = self.lock();
        let at = kept.iter().rposition(fits)?;
        kept.remove(at)
    }

    /// Keeps `instance` for a later call, dropping the oldest kept one when full. The
    /// dropped instance is freed after the lock is released.
    pub(super) fn keep(&self, instance: T) {
        let dropped = {
            let mut kept = self.lock();
            kept.push_back(instance);
            if kept.len() > self.cap {
                kept.pop_front()
            } else {
                None
            }
        };
        drop(dropped);
    }

    /// Drops every kept instance for which `keep` is false.
    pub(super) fn retain(&self, keep: impl Fn(&T) -> bool) {
        let dropped: VecDeque<T> = {
            let mut kept = self.lock();
            let (stay, go) = kept.drain(..).partition(|t| keep(t));
            *kept = stay;
            go
        };
        drop(dropped);
    }

    /// How many instances are kept.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        // Whole instances go in and out under the lock: valid after a panic elsewhere.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_fitting_instance_is_taken_and_the_oldest_dropped_when_full() {
        let idle = Idle::new(3);
        for i in 1..=4 {
            idle.keep(i);
        }
        assert_eq!(idle.len(), 3, "1 was dropped");
        assert_eq!(idle.take(|&i| i % 2 == 1), Some(3));
        assert_eq!(idle.take(|&i| i == 1), None);
        idle.retain(|&i| i != 4);
        assert_eq!(idle.take(|_| true), Some(2));
        assert_eq!(idle.len(), 0);
    }
}

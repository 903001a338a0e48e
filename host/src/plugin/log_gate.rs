//! [`LogGate`]: what a plugin's `log` import may put in the node's log.
//!
//! A plugin that logs in a loop wrote 560 MB of node log in 3 seconds (issue 12, finding
//! 7), and a huge message is copied into the log whole. So each line is cut to
//! [`MAX_LOG_LINE`] bytes, and each binding has a token bucket: [`LOG_BURST`] lines at once,
//! refilled at [`LOG_LINES_PER_SECOND`]. Lines over it are dropped and counted; the next
//! line let through is preceded by one saying how many were suppressed. The buckets are
//! per binding name and per node (one gate per engine), so one noisy plugin never silences
//! another. A bucket is a few dozen bytes and binding names are bounded, so buckets of
//! removed bindings are simply kept.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Longest plugin log line, in bytes; longer ones are cut (at a character boundary).
pub const MAX_LOG_LINE: usize = 1024;
/// Lines a binding may log per second, on average.
pub const LOG_LINES_PER_SECOND: f64 = 20.0;
/// Lines a binding may log at once before the rate applies.
pub const LOG_BURST: f64 = 50.0;

/// Whether one line may be logged.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Log it, after saying that `suppressed` lines (if any) were dropped before it.
    Yes { suppressed: u64 },
    /// Drop it (counted).
    No,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    suppressed: u64,
}

/// The per-binding token buckets of one node (see the module doc).
#[derive(Debug, Default)]
pub(super) struct LogGate {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl LogGate {
    /// Takes a token from `plugin`'s bucket at `now`.
    pub(super) fn admit(&self, plugin: &str, now: Instant) -> Admit {
        // Plain counters: valid after a panic elsewhere.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(plugin) {
            buckets.insert(
                plugin.to_owned(),
                Bucket {
                    tokens: LOG_BURST,
                    at: now,
                    suppressed: 0,
                },
            );
        }
        let Some(bucket) = buckets.get_mut(plugin) else {
            return Admit::No; // just inserted: unreachable
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * LOG_LINES_PER_SECOND).min(LOG_BURST);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            bucket.suppressed += 1;
            return Admit::No;
        }
        bucket.tokens -= 1.0;
        Admit::Yes {
            suppressed: std::mem::take(&mut bucket.suppressed),
        }
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), ending with a note of its
/// whole length when it was cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let note = format!("... ({} bytes, cut)", s.len());
    let mut end = max.saturating_sub(note.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(&note);
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_then_the_rate_and_reports_what_it_dropped() {
        let gate = LogGate::default();
        let t0 = Instant::now();
        let admitted = (0..1000)
            .filter(|_| gate.admit("noisy", t0) != Admit::No)
            .count();
        assert_eq!(admitted, LOG_BURST as usize);
        // Another binding has its own bucket.
        assert_eq!(gate.admit("quiet", t0), Admit::Yes { suppressed: 0 });
        // One second later: the rate's worth of lines, the first saying what was dropped.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            gate.admit("noisy", t1),
            Admit::Yes {
                suppressed: 1000 - LOG_BURST as u64
            }
        );
        let more = (1..100)
            .filter(|_| gate.admit("noisy", t1) != Admit::No)
            .count();
        assert_eq!(more + 1, LOG_LINES_PER_SECOND as usize);
    }

    #[test]
    fn truncate_cuts_at_a_character_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("é".repeat(20), 24);
        assert_eq!(cut, "éé... (40 bytes, cut)");
        let cut = truncate("x".repeat(100_000), MAX_LOG_LINE);
        assert_eq!(cut.len(), MAX_LOG_LINE);
        assert!(cut.ends_with("... (100000 bytes, cut)"), "{cut}");
    }
}

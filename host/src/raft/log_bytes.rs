//! The Raft log by bytes: what it holds, when to snapshot, how much to keep.
//!
//! openraft 0.9 counts the log in entries (`SnapshotPolicy::LogsSinceLast`,
//! `max_in_snapshot_log_to_keep`), but a batch entry of etch holds up to hundreds of writes:
//! 100,000 entries (etcd's `--snapshot-count`) can be gigabytes of log on disk before the
//! first snapshot, and the 5,000 entries kept behind it hundreds of megabytes. [`LogBytes`]
//! knows the size of every entry in the log, and [`enforce`] asks for a snapshot once the
//! applied entries past the last one hold `limit` bytes (or as much as the snapshot itself,
//! if that is more: a large state is not rewritten for every `limit` of log), and purges
//! behind the snapshot so that at most `limit` bytes of log stay there for followers to
//! catch up from. The entry counts still apply as well.

use std::collections::BTreeMap;
use std::time::Duration;

use super::snapshot::SnapshotDir;
use super::types::TypeConfig;

/// The size of every entry in the log, by index.
#[derive(Debug, Default)]
pub struct LogBytes {
    sizes: BTreeMap<u64, u64>,
}

impl LogBytes {
    /// Entry `index` holds `bytes` (an append, or a replacement after a truncation).
    pub fn appended(&mut self, index: u64, bytes: u64) {
        self.sizes.insert(index, bytes);
    }

    /// The entries from `index` on are gone (a truncation).
    pub fn truncated(&mut self, index: u64) {
        self.sizes.split_off(&index);
    }

    /// The entries up to `index`, included, are gone (a purge).
    pub fn purged(&mut self, index: u64) {
        self.sizes = self.sizes.split_off(&(index.saturating_add(1)));
    }

    /// Bytes of the entries after `after` (every entry if `None`), up to `upto` included.
    pub fn between(&self, after: Option<u64>, upto: u64) -> u64 {
        let from = after.map_or(0, |a| a.saturating_add(1));
        if from > upto {
            return 0;
        }
        self.sizes.range(from..=upto).map(|(_, b)| b).sum()
    }

    /// Where to purge up to so that the entries kept up to `snapshot` hold at most `keep`
    /// bytes: `None` if they already do.
    pub fn purge_point(&self, snapshot: u64, keep: u64) -> Option<u64> {
        let mut kept = 0u64;
        for (&index, &bytes) in self.sizes.range(..=snapshot).rev() {
            kept += bytes;
            if kept > keep {
                return Some(index);
            }
        }
        None
    }
}

/// How often [`enforce`] looks.
const EVERY: Duration = Duration::from_secs(1);
/// How long [`enforce`] waits before asking again for a snapshot that did not come (one
/// skipped for want of disk space: see `StateMachine`'s builder).
const RETRY: Duration = Duration::from_secs(30);

/// Snapshots and purges by bytes for as long as Raft runs (see the module docs).
pub async fn enforce(
    raft: openraft::Raft<TypeConfig>,
    log: super::log_store::LogStore,
    snapshots: SnapshotDir,
    limit: u64,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The last request for a snapshot: when, and the snapshot then current.
    let mut asked: Option<(std::time::Instant, Option<u64>)> = None;
    loop {
        tick.tick().await;
        let applied = raft.metrics().borrow().last_applied.map(|l| l.index);
        let Some(applied) = applied else { continue };
        let snapshot = snapshots.durable_index();
        let (past, purge) = {
            let bytes = log.bytes();
            (
                bytes.between(snapshot, applied),
                snapshot.and_then(|s| bytes.purge_point(s, limit)),
            )
        };
        let snapshot_len = snapshots.current_len();
        let waiting = asked.is_some_and(|(at, then)| then == snapshot && at.elapsed() < RETRY);
        let stopped = if past >= limit.max(snapshot_len) && !waiting {
            tracing::debug!(past, snapshot_len, "snapshot by log bytes");
            asked = Some((std::time::Instant::now(), snapshot));
            raft.trigger().snapshot().await.is_err()
        } else {
            false
        };
        let stopped = stopped
            || match purge {
                Some(upto) => raft.trigger().purge_log(upto).await.is_err(),
                None => false,
            };
        if stopped {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(sizes: &[(u64, u64)]) -> LogBytes {
        let mut log = LogBytes::default();
        for &(index, bytes) in sizes {
            log.appended(index, bytes);
        }
        log
    }

    #[test]
    fn bytes_between_two_points_count_the_entries_after_the_first() {
        let log = log(&[(1, 10), (2, 20), (3, 30), (4, 40)]);
        assert_eq!(log.between(None, 4), 100);
        assert_eq!(log.between(Some(1), 3), 50);
        assert_eq!(log.between(Some(3), 3), 0);
        assert_eq!(log.between(Some(4), 2), 0);
    }

    #[test]
    fn truncations_and_purges_forget_their_entries() {
        let mut log = log(&[(1, 10), (2, 20), (3, 30), (4, 40)]);
        log.truncated(4);
        log.appended(4, 1);
        assert_eq!(log.between(None, 10), 61);
        log.purged(2);
        assert_eq!(log.between(None, 10), 31);
        log.truncated(1);
        assert_eq!(log.between(None, 10), 0);
    }

    #[test]
    fn a_purge_keeps_at_most_the_limit_behind_the_snapshot() {
        let log = log(&[(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]);
        // Up to 4 the log holds 100 bytes; keeping 70 means 3 and 4 stay.
        assert_eq!(log.purge_point(4, 70), Some(2));
        assert_eq!(log.purge_point(4, 100), None);
        assert_eq!(log.purge_point(4, 39), Some(4));
        assert_eq!(log.purge_point(0, 0), None);
    }
}

//! The Raft log by bytes: what it holds, when to snapshot, how much to keep.
//!
//! openraft 0.9 counts the log in entries (`SnapshotPolicy::LogsSinceLast`,
//! `max_in_snapshot_log_to_keep`), but a batch entry of etch holds up to hundreds of writes:
//! 100,000 entries (etcd's `--snapshot-count`) can be gigabytes of log on disk before the
//! first snapshot, and the 5,000 entries kept behind it hundreds of megabytes. [`LogBytes`]
//! knows the size of every entry in the log, and [`enforce`] asks for a snapshot once the
//! applied entries past the last one hold `limit` bytes (a snapshot is an fsync of the
//! database, see `raft::snapshot`), and purges behind the snapshot so that at most `limit`
//! bytes of log stay there for followers to catch up from. The entry counts still apply as
//! well.

use std::collections::VecDeque;
use std::time::Duration;

use super::snapshot::SnapshotDir;
use super::types::TypeConfig;

/// The size of every entry in the log. The log is contiguous, so it is kept as running
/// totals from its first entry: 8 bytes per entry, and a question about bytes between two
/// points costs one subtraction (the log store's appends take the same lock).
#[derive(Debug, Default)]
pub struct LogBytes {
    /// The index of the first total.
    first: u64,
    /// The bytes of the entries purged before `first` (where the totals start from).
    base: u64,
    /// `totals[i]`: the bytes of the entries from `first` to `first + i`, included.
    totals: VecDeque<u64>,
}

impl LogBytes {
    /// Entry `index` holds `bytes` (an append, or a replacement after a truncation, which
    /// forgets every entry from it on). A gap before it counts as empty entries.
    pub fn appended(&mut self, index: u64, bytes: u64) {
        if self.totals.is_empty() || index < self.first {
            *self = LogBytes {
                first: index,
                base: 0,
                totals: VecDeque::new(),
            };
        }
        self.truncated(index);
        let before = self.total(index.checked_sub(1));
        while self.end() < index {
            self.totals.push_back(before);
        }
        self.totals.push_back(before + bytes);
    }

    /// The entries from `index` on are gone (a truncation).
    pub fn truncated(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first);
        self.totals
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
    }

    /// The entries up to `index`, included, are gone (a purge).
    pub fn purged(&mut self, index: u64) {
        while self.first <= index
            && let Some(total) = self.totals.pop_front()
        {
            self.base = total;
            self.first += 1;
        }
    }

    /// Bytes of the entries after `after` (every entry if `None`), up to `upto` included.
    pub fn between(&self, after: Option<u64>, upto: u64) -> u64 {
        self.total(Some(upto)).saturating_sub(self.total(after))
    }

    /// Where to purge up to so that the entries kept up to `snapshot` hold at most `keep`
    /// bytes: `None` if they already do.
    pub fn purge_point(&self, snapshot: u64, keep: u64) -> Option<u64> {
        let floor = self.total(Some(snapshot)).checked_sub(keep)?;
        if floor <= self.base {
            return None;
        }
        // The first entry whose running total reaches the floor: after it, at most `keep`.
        let at = self.totals.partition_point(|&total| total < floor);
        Some(self.first + at as u64)
    }

    /// One past the last entry known.
    fn end(&self) -> u64 {
        self.first + self.totals.len() as u64
    }

    /// The running total up to `index` included (the purged bytes for `None` or an index
    /// before the first; all of them past the last).
    fn total(&self, index: Option<u64>) -> u64 {
        let Some(index) = index.filter(|&i| i >= self.first) else {
            return self.base;
        };
        let at = usize::try_from(index - self.first).unwrap_or(usize::MAX);
        match self.totals.get(at) {
            Some(&total) => total,
            None => self.totals.back().copied().unwrap_or(self.base),
        }
    }
}

/// How often [`enforce`] looks.
const EVERY: Duration = Duration::from_secs(1);
/// How long [`enforce`] waits before asking again for a snapshot that did not come
/// (openraft builds one at a time, and ignores a request while one is being built).
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
    // The last purge asked for: openraft holds one back while replication reads the log,
    // and logs every request, so the same one is not asked again every second.
    let mut purge_asked = None;
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
        let waiting = asked.is_some_and(|(at, then)| then == snapshot && at.elapsed() < RETRY);
        if past >= limit && !waiting {
            tracing::debug!(past, "snapshot by log bytes");
            asked = Some((std::time::Instant::now(), snapshot));
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
        if let Some(upto) = purge.filter(|&upto| purge_asked < Some(upto)) {
            purge_asked = Some(upto);
            if raft.trigger().purge_log(upto).await.is_err() {
                return;
            }
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

    /// 10,000 appends, truncations and purges in a seeded order answer as a plain map of
    /// the entries' sizes does.
    #[test]
    fn running_totals_answer_as_the_sizes_themselves() {
        use std::collections::BTreeMap;
        let (mut log, mut model) = (LogBytes::default(), BTreeMap::<u64, u64>::new());
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut last = 0u64;
        for _ in 0..10_000 {
            match next(10) {
                0 if last > 0 => {
                    let to = last.saturating_sub(next(5));
                    log.truncated(to);
                    model.split_off(&to);
                    last = model
                        .keys()
                        .next_back()
                        .copied()
                        .unwrap_or(to.saturating_sub(1));
                }
                1 => {
                    let upto = last.saturating_sub(next(20));
                    log.purged(upto);
                    model = model.split_off(&(upto + 1));
                }
                _ => {
                    last += 1;
                    let bytes = next(1000);
                    log.appended(last, bytes);
                    model.insert(last, bytes);
                }
            }
            let (after, upto) = (last.checked_sub(next(30)), last.saturating_sub(next(10)));
            let from = after.map_or(0, |a| a + 1);
            let expected: u64 = if from > upto {
                0
            } else {
                model.range(from..=upto).map(|(_, b)| b).sum()
            };
            assert_eq!(
                log.between(after, upto),
                expected,
                "between {after:?} and {upto}"
            );
            let keep = next(5000);
            let mut kept = 0;
            let mut point = None;
            for (&index, &bytes) in model.range(..=upto).rev() {
                kept += bytes;
                if kept > keep {
                    point = Some(index);
                    break;
                }
            }
            assert_eq!(
                log.purge_point(upto, keep),
                point,
                "purge point at {upto}, {keep}"
            );
        }
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

//! Auto-compaction, as etcd's `--auto-compaction-mode` and `--auto-compaction-retention`:
//! the leader proposes a compaction through Raft, like any client's, so every replica drops
//! the same history at the same revision.
//!
//! - **periodic** keeps at least `retention` of wall-clock history: every tenth of the
//!   retention (at least a second, at most an hour) the leader notes the current revision,
//!   and compacts to the newest note at least `retention` old. A new leader starts its
//!   notes afresh, so the first compaction after a leader change comes `retention` later
//!   (history is kept longer, never shorter).
//! - **revision** keeps the last `retention` revisions: every `interval` (etcd's five
//!   minutes by default) the leader compacts to the current revision minus `retention`.
//!
//! A compaction that fails (leadership lost, the revision compacted meanwhile) is logged
//! and tried again at the next turn.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use etch_proto::{CompactRequest, Mutation, Revision};

use super::{Checked, Node, Ticks};

/// What auto-compaction keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// At least this much wall-clock history.
    Periodic(Duration),
    /// The last this many revisions.
    Revision(i64),
}

/// How often revision mode compacts by default (etcd's fixed period).
pub const REVISION_INTERVAL: Duration = Duration::from_secs(300);

/// Runs for the node's lifetime; proposes compactions while this node leads.
pub(super) async fn auto_compact(node: Node, mode: AutoCompaction, interval: Duration) {
    let period = match mode {
        AutoCompaction::Periodic(retention) => (retention / 10)
            .max(Duration::from_secs(1))
            .min(Duration::from_secs(3600)),
        AutoCompaction::Revision(_) => interval,
    };
    let mut ticks = Ticks::new(&node, period);
    // (when, revision then), oldest first; the leader's own notes.
    let mut notes: VecDeque<(Instant, Revision)> = VecDeque::new();
    while let Some(standing) = ticks.next().await {
        if !standing.leading {
            notes.clear();
            continue;
        }
        let store = node.store();
        let (now, revision) = (Instant::now(), store.revision());
        let target = match mode {
            AutoCompaction::Periodic(retention) => {
                notes.push_back((now, revision));
                // Drop the notes an older one already covers: the newest note at least
                // `retention` old is the target, and stays at the front.
                while notes
                    .get(1)
                    .is_some_and(|(at, _)| now.duration_since(*at) >= retention)
                {
                    notes.pop_front();
                }
                match notes.front() {
                    Some((at, rev)) if now.duration_since(*at) >= retention => *rev,
                    _ => continue,
                }
            }
            AutoCompaction::Revision(keep) => revision - keep,
        };
        if target <= store.compact_revision() || target < 1 {
            continue;
        }
        let compact = Mutation::Compact(CompactRequest {
            revision: target,
            physical: false,
        });
        match node.propose(compact, Checked::Unconditionally).await {
            Ok(_) => tracing::info!(
                revision = target,
                ?mode,
                "auto-compaction: compacted history before this revision"
            ),
            Err(e) => tracing::warn!(revision = target, error = %e, "auto-compaction failed"),
        }
    }
}

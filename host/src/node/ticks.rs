//! [`Ticks`]: the clock of the node's periodic tasks (lease expiry, auto-compaction, the
//! corruption check, measuring the database), each of which runs as long as Raft does and
//! most of which act only while this node leads.

use std::time::Duration;

use openraft::ServerState;

use super::Node;
use crate::NodeId;

type Metrics = tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, crate::raft::Member>>;

/// Ticks every `period` (a tick missed while the task was busy is not made up).
pub(crate) struct Ticks {
    tick: tokio::time::Interval,
    metrics: Metrics,
}

/// Where this node stood at a tick.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Standing {
    pub leading: bool,
    pub term: u64,
}

impl Ticks {
    pub(crate) fn new(node: &Node, period: Duration) -> Ticks {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticks {
            tick,
            metrics: node.raft().metrics(),
        }
    }

    /// Waits for the next tick; `None` once Raft has stopped (the task should end).
    pub(crate) async fn next(&mut self) -> Option<Standing> {
        self.tick.tick().await;
        if self.metrics.has_changed().is_err() {
            return None;
        }
        let m = self.metrics.borrow_and_update();
        Some(Standing {
            leading: m.state == ServerState::Leader,
            term: m.current_term,
        })
    }
}

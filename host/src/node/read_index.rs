//! Read-index batching: one leadership confirmation serves many linearizable reads.
//!
//! A linearizable read needs the leader to confirm, with a quorum, that it still leads (a
//! round of heartbeats: `Raft::ensure_linearizable`) *after* the read arrived, then to wait
//! until its state machine has applied up to the read index. Each confirmation costs a
//! round trip to every voter, so reads share them, as etcd batches ReadIndex: a single task
//! runs one confirmation at a time for every read waiting when it starts. A read arriving
//! while a confirmation is in flight waits for the next one, which starts after it arrived,
//! so every read is still linearizable.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use crate::NodeId;
use crate::raft::Raft;

/// The outcome of one confirmation round, shared by every read in it.
#[derive(Clone, Debug)]
pub(crate) enum Confirmation {
    /// Leadership confirmed and applied up to the read index: read locally.
    Confirmed,
    /// Not the leader (any more); the leader if known.
    NotLeader(Option<NodeId>),
    Unavailable(String),
    Timeout,
}

/// The handle reads use; the batching task stops when every handle is dropped.
pub(crate) struct ReadIndex {
    waiting: mpsc::UnboundedSender<oneshot::Sender<Confirmation>>,
}

impl ReadIndex {
    /// Starts the batching task for `raft`; each round may take at most `timeout`.
    pub(crate) fn start(raft: Raft, timeout: Duration) -> Self {
        let (waiting, queue) = mpsc::unbounded_channel();
        tokio::spawn(confirm_rounds(raft, timeout, queue));
        ReadIndex { waiting }
    }

    /// Waits for a confirmation round that started after this call.
    pub(crate) async fn confirm(&self) -> Confirmation {
        let (tx, rx) = oneshot::channel();
        if self.waiting.send(tx).is_err() {
            return Confirmation::Unavailable("node shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| Confirmation::Unavailable("node shutting down".into()))
    }
}

async fn confirm_rounds(
    raft: Raft,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<oneshot::Sender<Confirmation>>,
) {
    while let Some(first) = queue.recv().await {
        // Let the reads already on their way join this round: the tasks that are ready run
        // before this one is polled again (a yield costs microseconds; a round, a heartbeat
        // to every voter and their answers, costs the nodes about a hundred).
        tokio::task::yield_now().await;
        let mut round = vec![first];
        while let Ok(more) = queue.try_recv() {
            round.push(more);
        }
        let outcome = match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
            Err(_) => Confirmation::Timeout,
            Ok(Ok(_)) => Confirmation::Confirmed,
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to)))) => {
                Confirmation::NotLeader(to.leader_id)
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Confirmation::Unavailable(e.to_string())
            }
            Ok(Err(RaftError::Fatal(e))) => Confirmation::Unavailable(format!("raft stopped: {e}")),
        };
        for waiter in round {
            let _ = waiter.send(outcome.clone());
        }
    }
}

//! Read-index batching: one leadership confirmation serves many linearizable reads.
//!
//! A linearizable read needs the leader to confirm, with a quorum, that it still leads (a
//! round of heartbeats: `Raft::ensure_linearizable`) *after* the read arrived, then to wait
//! until its state machine has applied up to the read index. Each confirmation costs a
//! round trip to every voter, so reads share them, as etcd batches ReadIndex: a single task
//! runs one confirmation at a time for every read waiting when it starts. A read arriving
//! while a confirmation is in flight waits for the next one, which starts after it arrived,
//! so every read is still linearizable.
//!
//! A follower batches the same way ([`ReadIndex::with_round`]): its round asks the leader
//! for a read index (`PeerRequest::ReadIndex`: the leader runs one of its own rounds, then
//! answers its applied index) and waits until it has applied as far, so that it can answer
//! a linearizable read from its own state, as etcd's followers do, instead of forwarding
//! the read and carrying its answer back over the peer link.

use std::time::Duration;

use futures::future::BoxFuture;
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
    /// (A follower's round.) The leader gave no read index — it is of a release that does
    /// not know the request, it stepped down, or it could not be reached: the read is
    /// served on the leader, as before.
    Forward,
}

/// One confirmation round: what every read waiting when it starts shares.
pub(crate) type Round = Box<dyn Fn() -> BoxFuture<'static, Confirmation> + Send + Sync>;

/// The handle reads use; the batching task stops when every handle is dropped.
pub(crate) struct ReadIndex {
    waiting: mpsc::UnboundedSender<oneshot::Sender<Confirmation>>,
}

impl ReadIndex {
    /// Starts the batching task for `raft` (the leader's rounds); each round may take at
    /// most `timeout`.
    pub(crate) fn start(raft: Raft, timeout: Duration) -> Self {
        Self::with_round(Box::new(move || {
            Box::pin(confirm_leader(raft.clone(), timeout))
        }))
    }

    /// Starts a batching task whose rounds are `round`.
    pub(crate) fn with_round(round: Round) -> Self {
        let (waiting, queue) = mpsc::unbounded_channel();
        tokio::spawn(confirm_rounds(round, queue));
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
    round: Round,
    mut queue: mpsc::UnboundedReceiver<oneshot::Sender<Confirmation>>,
) {
    while let Some(first) = queue.recv().await {
        // Let the reads already on their way join this round: the tasks that are ready run
        // before this one is polled again (a yield costs microseconds; a round, a heartbeat
        // to every voter and their answers, costs the nodes about a hundred).
        tokio::task::yield_now().await;
        let mut waiting = vec![first];
        while let Ok(more) = queue.try_recv() {
            waiting.push(more);
        }
        let outcome = round().await;
        for waiter in waiting {
            let _ = waiter.send(outcome.clone());
        }
    }
}

/// The leader's round: a quorum confirms it still leads, and its state machine applies up
/// to the read index.
async fn confirm_leader(raft: Raft, timeout: Duration) -> Confirmation {
    match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
        Err(_) => Confirmation::Timeout,
        Ok(Ok(_)) => Confirmation::Confirmed,
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to)))) => {
            Confirmation::NotLeader(to.leader_id)
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
            Confirmation::Unavailable(e.to_string())
        }
        Ok(Err(RaftError::Fatal(e))) => Confirmation::Unavailable(format!("raft stopped: {e}")),
    }
}

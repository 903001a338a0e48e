//! Proposal batching: the writes that arrive together share one Raft entry.
//!
//! Every Raft entry costs the leader a fixed round through openraft's core (append, flush
//! callback, replication, commit, apply: about five messages between tasks), whatever it
//! carries. Sending each client write alone made that round the write path's limit, so, as
//! etcd batches the proposals of one Ready, the [`Proposer`] task packs the state-machine
//! writes waiting when it gets its turn into one [`Command::Batch`].
//!
//! At most [`MAX_IN_FLIGHT`] (two) entries are in flight at once. While they are, new
//! writes queue, and the next entry takes every one waiting (up to [`MAX_BATCH`] commands
//! and about [`MAX_BATCH_BYTES`]). A write that finds an entry slot free and nobody waiting (one
//! client, an idle cluster) is proposed at once, alone, from its own task: batching adds no
//! latency when there is nothing to share.
//!
//! Each command of a batch is applied as if it were its own entry: its own revision, its own
//! guard check, its own answer (see `crate::raft::state_machine`). Only commands that are
//! plain key-space writes are batched ([`Command::batchable`]); the rest go through Raft
//! alone.

use std::sync::Arc;
use std::time::Duration;

use etch_proto::Error;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::NodeId;
use crate::raft::wire::MAX_ENTRY_BYTES;
use crate::raft::{Command, CommandResult, Raft};

/// Entries proposed and not yet applied, at most. Two keep the pipeline busy (one entry in
/// the log writer or on the wire while the next fills up); more make smaller entries and
/// cost more per write. Measured with put100 on the 3-node suite: 1, 2 and 3 gave 18.7-21.0 k
/// req/s, 4 gave 15.4-16.9 k, 8 gave 14.8-15.7 k, 16 gave 12.3-12.5 k.
const MAX_IN_FLIGHT: usize = 2;
/// Commands in one entry, at most.
const MAX_BATCH: usize = 512;
/// A batch stops growing once its commands weigh about this much (a single larger command
/// still goes, alone).
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Why a proposal did not produce an answer.
#[derive(Clone, Debug)]
pub(crate) enum ProposeError {
    /// This node does not lead; the leader if known.
    NotLeader(Option<NodeId>),
    /// A membership change openraft refused.
    Membership(String),
    /// Raft stopped, the node is shutting down, or the deadline passed.
    Failed(Error),
}

type Answer = Result<CommandResult, ProposeError>;

struct Waiting {
    command: Command,
    answer: oneshot::Sender<Answer>,
}

/// The handle writes use; the batching task stops when every handle is dropped.
pub(crate) struct Proposer {
    raft: Raft,
    timeout: Duration,
    waiting: mpsc::UnboundedSender<Waiting>,
    in_flight: Arc<Semaphore>,
}

impl Proposer {
    /// Starts the batching task for `raft`; a proposal may take at most `timeout`.
    pub(crate) fn start(raft: Raft, timeout: Duration) -> Self {
        let (waiting, queue) = mpsc::unbounded_channel();
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tokio::spawn(propose_batches(
            raft.clone(),
            timeout,
            queue,
            in_flight.clone(),
        ));
        Proposer {
            raft,
            timeout,
            waiting,
            in_flight,
        }
    }

    /// Proposes `command` and waits until it is applied; its answer is the state machine's.
    pub(crate) async fn propose(&self, command: Command) -> Answer {
        /// Counts a proposal pending until it is answered or its caller goes away.
        struct Pending;
        impl Drop for Pending {
            fn drop(&mut self) {
                metrics::gauge!(crate::metrics::PROPOSALS_PENDING).decrement(1.0);
            }
        }
        metrics::gauge!(crate::metrics::PROPOSALS_PENDING).increment(1.0);
        let _pending = Pending;
        let answer = self.propose_now(command).await;
        if answer.is_err() {
            metrics::counter!(crate::metrics::PROPOSALS_FAILED).increment(1);
        }
        answer
    }

    async fn propose_now(&self, command: Command) -> Answer {
        // Every entry must fit one peer frame, or no follower could ever receive it (and the
        // leader would re-send it for ever). A batch stops growing near MAX_BATCH_BYTES, so a
        // bound on each command bounds every entry.
        let size = command.approx_size();
        if size > MAX_ENTRY_BYTES {
            return Err(ProposeError::Failed(Error::TooLarge {
                size: size as u64,
                limit: MAX_ENTRY_BYTES as u64,
            }));
        }
        if !command.batchable() {
            return propose_alone(&self.raft, self.timeout, command).await;
        }
        // A free slot means the batching task is not waiting for one, so nothing is queued
        // behind it (the semaphore is fair: a released slot goes to a waiter first).
        if let Ok(slot) = self.in_flight.clone().try_acquire_owned() {
            let answer = propose_alone(&self.raft, self.timeout, command).await;
            drop(slot);
            return answer;
        }
        let (answer, wait) = oneshot::channel();
        let shutting_down = || {
            ProposeError::Failed(Error::Unavailable {
                reason: "node shutting down".into(),
            })
        };
        self.waiting
            .send(Waiting { command, answer })
            .map_err(|_| shutting_down())?;
        // The batch carries its own deadline; this one only guards against a lost answer.
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), wait).await {
            Ok(Ok(answer)) => answer,
            // The batch was taken from the queue, and perhaps proposed, before it was lost.
            Ok(Err(_)) => Err(ProposeError::Failed(Error::OutcomeUnknown {
                reason: "node shutting down".into(),
            })),
            Err(_) => Err(ProposeError::Failed(Error::Timeout)),
        }
    }
}

async fn propose_alone(raft: &Raft, timeout: Duration, command: Command) -> Answer {
    let written = tokio::time::timeout(timeout, raft.client_write(command))
        .await
        .map_err(|_| ProposeError::Failed(Error::Timeout))?;
    match written {
        Ok(reply) => reply.data.into_iter().next().ok_or_else(|| {
            ProposeError::Failed(Error::Internal("a write applied without an answer".into()))
        }),
        Err(e) => Err(propose_error(e)),
    }
}

pub(crate) fn propose_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, crate::raft::Member>>,
) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => {
            ProposeError::NotLeader(to.leader_id)
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ProposeError::Membership(e.to_string())
        }
        // Raft stops on a storage error (a failed fsync or apply) with proposals pending,
        // and a pending proposal may have been replicated and committed by the others:
        // "unavailable" would tell the client it may send the write again.
        RaftError::Fatal(e) => ProposeError::Failed(Error::OutcomeUnknown {
            reason: format!("raft stopped: {e}"),
        }),
    }
}

async fn propose_batches(
    raft: Raft,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Waiting>,
    in_flight: Arc<Semaphore>,
) {
    // A write taken from the queue that did not fit the previous batch.
    let mut carried: Option<Waiting> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Everything that queued while we waited for the permit joins this entry.
        let mut bytes = first.command.approx_size();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let Ok(next) = queue.try_recv() else { break };
            let size = next.command.approx_size();
            if bytes + size > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose_batch(&raft, timeout, batch).await;
            drop(permit);
        });
    }
}

async fn propose_batch(raft: &Raft, timeout: Duration, batch: Vec<Waiting>) {
    let (commands, answers): (Vec<Command>, Vec<oneshot::Sender<Answer>>) =
        batch.into_iter().map(|w| (w.command, w.answer)).unzip();
    let command = if commands.len() == 1 {
        commands.into_iter().next().expect("one command")
    } else {
        Command::Batch(commands)
    };
    let count = answers.len();
    let written = tokio::time::timeout(timeout, raft.client_write(command)).await;
    let results: Vec<Answer> = match written {
        Ok(Ok(reply)) if reply.data.len() == count => reply.data.into_iter().map(Ok).collect(),
        Ok(Ok(reply)) => {
            let e = Error::Internal(format!(
                "a batch of {count} writes applied with {} answers",
                reply.data.len()
            ));
            vec![Err(ProposeError::Failed(e)); count]
        }
        Ok(Err(e)) => vec![Err(propose_error(e)); count],
        Err(_) => vec![Err(ProposeError::Failed(Error::Timeout)); count],
    };
    for (answer, result) in answers.into_iter().zip(results) {
        let _ = answer.send(result);
    }
}

//! The QUIC peer transport, as openraft sees it.
//!
//! [`Peers`] owns the node's peer endpoint (bound for incoming connections, and used to dial
//! out) and one cached connection per target, reconnected lazily after a failure: openraft's
//! `new_client` cannot fail, so nothing is dialled until the first RPC. Every RPC is one
//! bidirectional stream with a deadline; a snapshot is streamed from its file in chunks
//! straight onto the stream, so it never sits whole in memory.

use std::collections::HashMap;
use std::future::Future;
use std::io::SeekFrom;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etch_proto::frame::{self, FrameError};
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{LogId, OptionalSend, Snapshot, Vote};
use tokio::io::AsyncSeekExt;

use super::types::{Member, TypeConfig};
use super::wire::{Envelope, MAX_PEER_FRAME, PeerRequest, PeerResponse};
use crate::NodeId;

/// How long dialling a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on streaming and installing one snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a peer exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot reach peer at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("peer at {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("peer at {addr} refused: {reason}")]
    Refused {
        addr: String,
        reason: String,
        /// The peer does not count this node a member of its cluster.
        not_a_member: bool,
    },
    #[error("peer exchange with {addr} broke: {reason}")]
    Broken { addr: String, reason: String },
    /// The peer certainly never received the request (its receipt was never acknowledged).
    #[error("request to peer at {addr} was not delivered: {reason}")]
    NotDelivered { addr: String, reason: String },
}

/// The node's side of the peer mesh.
pub struct Peers {
    endpoint: quinn::Endpoint,
    /// Replaced when the node reloads its TLS material (`crate::tls`).
    client_config: Mutex<quinn::ClientConfig>,
    me: NodeId,
    cluster_id: AtomicU64,
    connections: Mutex<HashMap<String, quinn::Connection>>,
    /// Whether each peer answered its last exchange, so that a peer lost or found is
    /// logged once per change, not once per attempt.
    reachable: Mutex<HashMap<NodeId, bool>>,
    /// One snapshot is written out and sent at a time: with several followers to catch up,
    /// the disk holds one copy of the state for sends, not one per follower.
    snapshot_sends: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Peers {
    pub fn new(
        endpoint: quinn::Endpoint,
        client_config: quinn::ClientConfig,
        me: NodeId,
        cluster_id: u64,
    ) -> Self {
        Peers {
            endpoint,
            client_config: Mutex::new(client_config),
            me,
            cluster_id: AtomicU64::new(cluster_id),
            connections: Mutex::new(HashMap::new()),
            reachable: Mutex::new(HashMap::new()),
            snapshot_sends: tokio::sync::Semaphore::new(1),
        }
    }

    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// The cluster id; `0` while a joining node has not learned it.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Relaxed)
    }

    /// Adopts the cluster id learned from the cluster (a joining node).
    pub fn set_cluster_id(&self, id: u64) {
        self.cluster_id.store(id, Ordering::Relaxed);
    }

    /// Dials new connections with `config` from now on.
    pub fn set_client_config(&self, config: quinn::ClientConfig) {
        *self.client_config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Closes the cached connections whose peer's certificate chain `check` refuses now
    /// (revoked, or its CA no longer trusted); the next call dials again.
    pub fn close_refused(
        &self,
        check: impl Fn(&[rustls::pki_types::CertificateDer<'static>]) -> Result<(), String>,
    ) {
        self.lock().retain(|addr, conn| {
            let Some(chain) = crate::tls::peer_chain(conn) else {
                return true;
            };
            match check(&chain) {
                Ok(()) => true,
                Err(reason) => {
                    tracing::info!(%addr, %reason, "closing a peer connection: its certificate is refused now");
                    crate::tls::close_revoked(conn, &reason);
                    false
                }
            }
        });
    }

    /// A cached live connection to `addr`, or a new one.
    async fn connection(&self, addr: &str) -> Result<quinn::Connection, PeerError> {
        if let Some(conn) = self.cached(addr) {
            return Ok(conn);
        }
        let unreachable = |reason: String| PeerError::Unreachable {
            addr: addr.to_owned(),
            reason,
        };
        let socket = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("no address".into()))?;
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let config = (self.client_config.lock())
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let connecting = self
            .endpoint
            .connect_with(config, socket, host)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| unreachable(format!("no handshake within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        self.lock().insert(addr.to_owned(), conn.clone());
        Ok(conn)
    }

    /// The name of the node that answers at `addr`, as its certificate says (the handshake
    /// verified it against the CA as a node certificate): how a member added by address
    /// alone (etcd's `MemberAdd` carries no name) gets the name its id derives from.
    pub async fn node_name_at(&self, addr: &str) -> Result<String, PeerError> {
        let conn = self.connection(addr).await?;
        let name = (crate::tls::peer_chain(&conn))
            .and_then(|chain| etch_proto::pki::node_name(chain.first()?).ok().flatten());
        name.ok_or_else(|| PeerError::Refused {
            addr: addr.to_owned(),
            reason: "its certificate names no node".into(),
            not_a_member: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, quinn::Connection>> {
        // A panic while holding this lock cannot leave the map inconsistent: keep going.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, addr: &str) -> Option<quinn::Connection> {
        let mut map = self.lock();
        match map.get(addr) {
            Some(conn) if conn.close_reason().is_none() => Some(conn.clone()),
            Some(_) => {
                map.remove(addr);
                None
            }
            None => None,
        }
    }

    fn forget(&self, addr: &str) {
        self.lock().remove(addr);
    }

    /// Sends `body` to node `to` at `addr` and waits for its answer, for at most `timeout`.
    pub async fn call(
        &self,
        to: NodeId,
        addr: &str,
        body: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let exchange = async {
            let conn = self.connection(addr).await?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| self.broken(addr, e))?;
            let envelope = Envelope {
                cluster_id: self.cluster_id(),
                from: self.me,
                to,
                body,
            };
            frame::write(&mut send, &envelope, MAX_PEER_FRAME)
                .await
                .map_err(|e| self.broken(addr, e))?;
            send.finish().map_err(|e| self.broken(addr, e))?;
            self.answer(addr, &mut recv).await
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| PeerError::Timeout {
                addr: addr.to_owned(),
                timeout,
            })
            .flatten();
        self.note_reachability(to, &answer);
        answer
    }

    /// Logs a peer lost (at warn) or found again (at info) when that changes.
    fn note_reachability(&self, to: NodeId, answer: &Result<PeerResponse, PeerError>) {
        let error = match answer {
            Ok(_) => None,
            Err(
                e @ (PeerError::Unreachable { .. }
                | PeerError::Timeout { .. }
                | PeerError::Broken { .. }),
            ) => Some(e),
            Err(PeerError::Refused { .. } | PeerError::NotDelivered { .. }) => return,
        };
        let before = (self.reachable.lock())
            .unwrap_or_else(|e| e.into_inner())
            .insert(to, error.is_none());
        match (before, error) {
            (Some(true) | None, Some(e)) => {
                tracing::warn!(peer = format_args!("{to:x}"), error = %e, "peer unreachable")
            }
            (Some(false), None) => {
                tracing::info!(peer = format_args!("{to:x}"), "peer reachable again")
            }
            _ => {}
        }
    }

    /// Like [`Peers::call`], for a request that must not take effect twice (a forwarded
    /// write): tells a request the peer certainly never received
    /// ([`PeerError::NotDelivered`]: no connection, or the request frame could not be
    /// written whole — safe to retry elsewhere) from one whose fate is unknown. Once the whole
    /// frame is written the peer may act on it even if it dies before acknowledging it, so
    /// every later failure is of unknown outcome. `give_up` is asked every `poll` whether to
    /// stop waiting early (the peer went silent); that too is an unknown outcome.
    pub async fn call_once(
        &self,
        to: NodeId,
        addr: &str,
        body: PeerRequest,
        timeout: Duration,
        poll: Duration,
        give_up: impl Fn() -> bool,
    ) -> Result<PeerResponse, PeerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let undelivered = |reason: String| {
            self.forget(addr);
            PeerError::NotDelivered {
                addr: addr.to_owned(),
                reason,
            }
        };
        let conn = tokio::time::timeout(timeout, self.connection(addr))
            .await
            .map_err(|_| undelivered("no connection in time".into()))??;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| undelivered(e.to_string()))?;
        let envelope = Envelope {
            cluster_id: self.cluster_id(),
            from: self.me,
            to,
            body,
        };
        frame::write(&mut send, &envelope, MAX_PEER_FRAME)
            .await
            .map_err(|e| undelivered(e.to_string()))?;
        let _ = send.finish();
        let answer = self.answer(addr, &mut recv);
        tokio::pin!(answer);
        loop {
            tokio::select! {
                answer = &mut answer => return answer,
                _ = tokio::time::sleep(poll) => {
                    if give_up() || tokio::time::Instant::now() >= deadline {
                        self.forget(addr);
                        return Err(PeerError::Timeout { addr: addr.to_owned(), timeout });
                    }
                }
            }
        }
    }

    /// Streams a snapshot file to node `to` and waits until it has installed it.
    pub async fn send_snapshot(
        &self,
        to: NodeId,
        addr: &str,
        vote: Vote<NodeId>,
        snapshot: &Snapshot<TypeConfig>,
    ) -> Result<PeerResponse, PeerError> {
        let not_written = |e: String| PeerError::NotDelivered {
            addr: addr.to_owned(),
            reason: format!("the snapshot could not be written out to send: {e}"),
        };
        let turn = snapshot_turn(&self.snapshot_sends).await;
        if turn.is_none() {
            tracing::warn!(
                to,
                "another snapshot send has held the disk's copy for {SNAPSHOT_TURN_WAIT:?}: writing this one out beside it"
            );
        }
        // The peer is reached first: a state written out for a peer that is down would be
        // written out again at every retry.
        let conn = self.connection(addr).await?;
        // Written out before the exchange's timeout starts: the state's size is not the
        // peer's fault.
        let file = (snapshot.snapshot.file_to_send(&snapshot.meta).await)
            .map_err(|e| not_written(e.to_string()))?;
        let exchange = async move {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| self.broken(addr, e))?;
            let mut open = tokio::fs::File::open(&file.path)
                .await
                .map_err(|e| self.broken(addr, e))?;
            let file_len = open
                .metadata()
                .await
                .map_err(|e| self.broken(addr, e))?
                .len();
            // Skip the file's own header (its checksum checked): the receiver writes its
            // own from the envelope.
            let start = file.body_start().map_err(|e| self.broken(addr, e))?;
            open.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| self.broken(addr, e))?;
            let body_len = file_len.saturating_sub(start);
            let body = PeerRequest::Snapshot {
                vote,
                meta: snapshot.meta.clone(),
                body_len,
            };
            let envelope = Envelope {
                cluster_id: self.cluster_id(),
                from: self.me,
                to,
                body,
            };
            frame::write(&mut send, &envelope, MAX_PEER_FRAME)
                .await
                .map_err(|e| self.broken(addr, e))?;
            // In large reads: each read of a `tokio::fs::File` is a trip to a blocking
            // thread, and `copy`'s own buffer is 8 KiB.
            let mut open = tokio::io::BufReader::with_capacity(SNAPSHOT_CHUNK, open);
            tokio::io::copy_buf(&mut open, &mut send)
                .await
                .map_err(|e| self.broken(addr, e))?;
            send.finish().map_err(|e| self.broken(addr, e))?;
            // The copy on disk and the turn go once the body is sent: the peer's install
            // may take long, and the next follower need not wait for it.
            drop((open, file, turn));
            self.answer(addr, &mut recv).await
        };
        tokio::time::timeout(SNAPSHOT_TIMEOUT, exchange)
            .await
            .map_err(|_| PeerError::Timeout {
                addr: addr.to_owned(),
                timeout: SNAPSHOT_TIMEOUT,
            })?
    }

    async fn answer(
        &self,
        addr: &str,
        recv: &mut quinn::RecvStream,
    ) -> Result<PeerResponse, PeerError> {
        match frame::read::<_, PeerResponse>(recv, MAX_PEER_FRAME).await {
            Ok(Some(PeerResponse::Refused(reason))) => Err(PeerError::Refused {
                addr: addr.to_owned(),
                reason,
                not_a_member: false,
            }),
            Ok(Some(PeerResponse::NotAMember(reason))) => Err(PeerError::Refused {
                addr: addr.to_owned(),
                reason,
                not_a_member: true,
            }),
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(self.broken(addr, FrameError::Closed)),
            Err(e) => Err(self.broken(addr, e)),
        }
    }

    fn broken(&self, addr: &str, e: impl std::fmt::Display) -> PeerError {
        self.forget(addr);
        PeerError::Broken {
            addr: addr.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// How much of a snapshot file is read at once to be sent.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// The longest a snapshot send waits for the one before it (see [`snapshot_turn`]).
const SNAPSHOT_TURN_WAIT: Duration = Duration::from_secs(30);

/// Waits for this node's turn to write out and send a snapshot (one copy of the state on
/// the disk for sends at a time), for at most [`SNAPSHOT_TURN_WAIT`]: `None` past it, so a
/// send that a slow or stalled peer holds up does not hold up the snapshots of the others
/// (the free-space check still bounds what two copies take).
async fn snapshot_turn(sends: &tokio::sync::Semaphore) -> Option<tokio::sync::SemaphorePermit<'_>> {
    tokio::time::timeout(SNAPSHOT_TURN_WAIT, sends.acquire())
        .await
        .ok()
        .and_then(Result::ok)
}

/// How long after a failed snapshot send to a peer the next one waits: each writes out the
/// whole state.
const SNAPSHOT_RETRY_WAIT: Duration = Duration::from_secs(5);

/// Makes a [`PeerClient`] per replication target.
#[derive(Clone, Debug)]
pub struct Network {
    pub peers: Arc<Peers>,
}

/// openraft's client for one target.
#[derive(Debug)]
pub struct PeerClient {
    target: NodeId,
    addr: String,
    peers: Arc<Peers>,
    /// Bytes of entries one AppendEntries may carry now (see [`AppendBudget`]).
    budget: AppendBudget,
    /// The AppendEntries exchange now running, kept when openraft stops waiting for it.
    exchange: Option<Exchange>,
    /// The last entry an exchange that openraft stopped waiting for delivered, under the
    /// leader's vote it was sent with.
    delivered: Option<(Vote<NodeId>, LogId<NodeId>)>,
    /// When the last snapshot sent to this peer failed after it was written out.
    snapshot_failed: Option<std::time::Instant>,
}

/// An AppendEntries exchange on its own task (see [`APPEND_GRACE`]).
#[derive(Debug)]
struct Exchange {
    task: tokio::task::JoinHandle<Result<PeerResponse, PeerError>>,
    vote: Vote<NodeId>,
    /// The last entry it carries.
    last: Option<LogId<NodeId>>,
}

/// How long an AppendEntries exchange may go on after openraft stopped waiting for it.
///
/// openraft gives the whole exchange (the frame's transfer, the follower's append and
/// fsync, the answer) one heartbeat interval, and drops it when that runs out. An entry
/// that takes longer than that to deliver (a large value, a debug build, a busy disk) was
/// then sent again and again, each time cut off: a follower behind by such entries never
/// caught up (fault soak: a learner added late, about 160 ms per large entry against a
/// 100 ms heartbeat). So the exchange runs on its own task: when openraft gives up, it goes
/// on until the follower has the entries. The next attempt waits for it first, and when it
/// succeeded, answers openraft at once that the follower holds the entries up to the last
/// one it carried (a `PartialSuccess`: they came from this leader, whose entries only a
/// later leader can overwrite), so openraft moves on to the next ones instead of sending
/// the same slow frame again.
const APPEND_GRACE: Duration = Duration::from_secs(10);

/// Bytes of entries an AppendEntries starts out allowed to carry.
const APPEND_BYTES: usize = 4 * 1024 * 1024;
/// The budget never shrinks below this (one entry is always sent, whatever its size).
const MIN_APPEND_BYTES: usize = 128 * 1024;

/// How many bytes of entries one AppendEntries may carry to one peer.
///
/// openraft bounds a replication message by its number of entries only, and gives the whole
/// exchange (send, the follower's fsync, the answer) one heartbeat interval. After large
/// writes, 64 entries made a frame no peer accepts (re-sent for ever), and a frame too slow
/// to move within the heartbeat times out for ever too. So the network keeps a byte budget
/// per peer: of a request over it, only the entries that fit are sent (at least one), and
/// the answer is a `PartialSuccess` up to the last one sent, after which openraft sends the
/// rest; an exchange that does not finish
/// (openraft's timeout drops it) halves the budget, and one that succeeds doubles it again
/// up to [`APPEND_BYTES`], as a congestion window does.
#[derive(Debug)]
pub struct AppendBudget {
    bytes: std::sync::atomic::AtomicUsize,
}

impl Default for AppendBudget {
    fn default() -> Self {
        AppendBudget {
            bytes: std::sync::atomic::AtomicUsize::new(APPEND_BYTES),
        }
    }
}

impl AppendBudget {
    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn grow(&self) {
        let next = (self.bytes() * 2).min(APPEND_BYTES);
        self.bytes.store(next, Ordering::Relaxed);
    }

    fn shrink(&self) {
        let next = (self.bytes() / 2).max(MIN_APPEND_BYTES);
        self.bytes.store(next, Ordering::Relaxed);
    }

    /// How many of `entries`, from the first, fit the budget (at least one), when they do
    /// not all fit; `None` when they do.
    fn entries_that_fit<T: serde::Serialize>(&self, entries: &[T]) -> Option<u64> {
        let budget = self.bytes();
        let mut total = 0usize;
        for (i, entry) in entries.iter().enumerate() {
            // An entry that cannot be sized is sized by its frame later; count it as empty.
            total += postcard::experimental::serialized_size(entry).unwrap_or(0);
            if total > budget {
                return Some(i.max(1) as u64);
            }
        }
        None
    }
}

/// Halves the budget unless disarmed: dropped armed means the exchange never finished.
struct InFlight<'a> {
    budget: &'a AppendBudget,
    armed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.budget.shrink();
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: node.peer_addr.clone(),
            peers: self.peers.clone(),
            budget: AppendBudget::default(),
            exchange: None,
            delivered: None,
            snapshot_failed: None,
        }
    }
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

impl PeerClient {
    fn rpc_error<E: std::error::Error>(&self, e: PeerError) -> RpcError<E> {
        match e {
            PeerError::Unreachable { .. }
            | PeerError::Refused { .. }
            | PeerError::NotDelivered { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            PeerError::Timeout { .. } | PeerError::Broken { .. } => {
                RPCError::Network(NetworkError::new(&e))
            }
        }
    }

    fn unexpected<E: std::error::Error>(&self, what: &str) -> RpcError<E> {
        let e = std::io::Error::other(format!(
            "peer {:x} answered {what} with the wrong kind of response",
            self.target
        ));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        // Over the byte budget, send the entries that fit and report a partial success
        // (openraft sends the rest next). Answering `PayloadTooLarge` instead made openraft
        // back off half a second each time: a learner behind by large values caught up at a
        // crawl (fault seed 5334462548446459030).
        let mut sent_up_to = None;
        if rpc.entries.len() > 1
            && let Some(fit) = self.budget.entries_that_fit(&rpc.entries)
        {
            tracing::debug!(
                to = self.target,
                entries = rpc.entries.len(),
                fit,
                "append-entries over the byte budget: sending the entries that fit"
            );
            rpc.entries
                .truncate(usize::try_from(fit).unwrap_or(usize::MAX).max(1));
            let last = rpc.entries.last().map(|e| e.log_id);
            // The follower must not commit past what it was sent.
            if rpc.leader_commit > last {
                rpc.leader_commit = last;
            }
            sent_up_to = Some(last);
        }
        // An earlier exchange openraft gave up on finishes first (see [`APPEND_GRACE`]);
        // if openraft gives up on this one while it waits, it stays where it is.
        if let Some(earlier) = self.exchange.as_mut() {
            let answer = (&mut earlier.task).await;
            if let Ok(Ok(PeerResponse::Append(Ok(AppendEntriesResponse::Success)))) = answer
                && let Some(last) = earlier.last
            {
                self.delivered = Some((earlier.vote, last));
            }
            self.exchange = None;
        }
        // What an earlier exchange delivered, openraft need not send again.
        if let Some((vote, last)) = self.delivered.take()
            && vote == rpc.vote
            && rpc.entries.iter().any(|e| e.log_id == last)
        {
            return Ok(AppendEntriesResponse::PartialSuccess(Some(last)));
        }
        let (started, entries) = (std::time::Instant::now(), rpc.entries.len());
        let mut in_flight = InFlight {
            budget: &self.budget,
            armed: entries > 0,
        };
        let (peers, target, addr) = (self.peers.clone(), self.target, self.addr.clone());
        let (vote, last) = (rpc.vote, rpc.entries.last().map(|e| e.log_id));
        let task = tokio::spawn(async move {
            let request = PeerRequest::Append(rpc);
            peers.call(target, &addr, request, APPEND_GRACE).await
        });
        let exchange = self.exchange.insert(Exchange { task, vote, last });
        let answer = (&mut exchange.task).await.unwrap_or_else(|e| {
            Err(PeerError::Broken {
                addr: self.addr.clone(),
                reason: format!("the append-entries task failed: {e}"),
            })
        });
        self.exchange = None;
        match &answer {
            Ok(_) if entries == 0 => {
                let rtt = started.elapsed().as_secs_f64();
                let to = format!("{:x}", self.target);
                metrics::histogram!(crate::metrics::PEER_RTT, "To" => to).record(rtt);
            }
            Ok(_) => {
                in_flight.armed = false;
                self.budget.grow();
            }
            // Timed out: the peer could not take this much within the deadline.
            Err(PeerError::Timeout { .. }) => {}
            Err(_) => in_flight.armed = false,
        }
        drop(in_flight);
        tracing::trace!(
            to = self.target,
            entries,
            took_us = started.elapsed().as_micros() as u64,
            "append-entries"
        );
        match answer.map_err(|e| self.rpc_error(e))? {
            PeerResponse::Append(Ok(AppendEntriesResponse::Success)) if sent_up_to.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(sent_up_to.flatten()))
            }
            PeerResponse::Append(Ok(r)) => Ok(r),
            PeerResponse::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected("append-entries")),
        }
    }

    #[allow(deprecated)]
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        // Snapshots travel whole through `full_snapshot`; openraft never calls this with
        // `generic-snapshot-data`.
        Err(self.unexpected("chunked install-snapshot"))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let answer = self
            .peers
            .call(
                self.target,
                &self.addr,
                PeerRequest::Vote(rpc),
                option.hard_ttl(),
            )
            .await;
        match answer.map_err(|e| self.rpc_error(e))? {
            PeerResponse::Vote(Ok(r)) => Ok(r),
            PeerResponse::Vote(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected("vote")),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        tokio::pin!(cancel);
        if let Some(wait) = self
            .snapshot_failed
            .and_then(|at| SNAPSHOT_RETRY_WAIT.checked_sub(at.elapsed()))
        {
            tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                () = tokio::time::sleep(wait) => {}
            }
        }
        let send = self
            .peers
            .send_snapshot(self.target, &self.addr, vote, &snapshot);
        let answer = tokio::select! {
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            answer = send => answer,
        };
        // A state written out and not installed (refused for want of room, timed out, cut
        // off) is not written out again at once: openraft retries every half second.
        self.snapshot_failed = match &answer {
            Ok(PeerResponse::Snapshot(Ok(_))) | Err(PeerError::Unreachable { .. }) => None,
            _ => Some(std::time::Instant::now()),
        };
        match answer {
            Ok(PeerResponse::Snapshot(Ok(r))) => Ok(r),
            Ok(PeerResponse::Snapshot(Err(e))) => Err(StreamingError::RemoteError(
                RemoteError::new(self.target, e),
            )),
            Ok(_) => Err(StreamingError::Network(NetworkError::new(
                &std::io::Error::other("wrong response to a snapshot"),
            ))),
            Err(
                e @ (PeerError::Unreachable { .. }
                | PeerError::Refused { .. }
                | PeerError::NotDelivered { .. }),
            ) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A send keeps its turn while its peer is slow: the next one waits for it, but no
    /// longer than [`SNAPSHOT_TURN_WAIT`], and takes a free turn at once.
    #[tokio::test(start_paused = true)]
    async fn a_snapshot_send_held_up_by_a_slow_peer_holds_up_the_next_for_a_bounded_time() {
        let sends = tokio::sync::Semaphore::new(1);
        let held = snapshot_turn(&sends).await.expect("the first send's turn");
        let started = tokio::time::Instant::now();
        assert!(snapshot_turn(&sends).await.is_none(), "the turn is taken");
        assert_eq!(started.elapsed(), SNAPSHOT_TURN_WAIT);
        drop(held);
        let started = tokio::time::Instant::now();
        assert!(snapshot_turn(&sends).await.is_some(), "a free turn");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}

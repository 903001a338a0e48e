//! A running etch node: storage, Raft and the client endpoint, and the request decisions.
//!
//! [`Node::handle`] is the heart of the server:
//! - a write (put, delete, txn, compact) becomes a [`Command`] proposed through Raft; the
//!   answer is what the state machine returned when it applied the entry, so a client hears
//!   "OK" only after a majority has the entry on disk and this node has applied it;
//! - a linearizable range first confirms leadership with a read-index round
//!   (`ensure_linearizable`), waits for the local state machine to catch up to the read
//!   index, then reads locally;
//! - a serializable range reads the local applied state at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etch_proto::pki::{Identity, TlsFiles};
use etch_proto::{Error, RangeRequest, Request, Response, ResponseHeader, StatusResponse};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{ServerState, SnapshotPolicy};

use crate::mvcc;
use crate::raft::network::Network;
use crate::raft::snapshot::SnapshotDir;
use crate::raft::{Command, LogStore, Member, Raft, StateMachine};
use crate::server::{ClientEndpoint, serve_clients};
use crate::{NodeId, node_id};

/// Everything a node needs to start; the binary fills it from flags, env and config file.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Human-readable name, unique in the cluster; the node id is derived from it.
    pub name: String,
    /// Where the database and snapshots live.
    pub data_dir: PathBuf,
    /// Client endpoint address to bind.
    pub listen_client: SocketAddr,
    /// Peer endpoint address to bind.
    pub listen_peer: SocketAddr,
    /// Client address told to clients and peers (host:port); defaults to the bound address.
    pub advertise_client: Option<String>,
    /// Peer address told to peers (host:port); defaults to the bound address.
    pub advertise_peer: Option<String>,
    /// This node's TLS material (a node certificate).
    pub tls: TlsFiles,
    /// Largest request frame accepted, in bytes.
    pub max_request_bytes: usize,
    /// How long a request may wait for Raft before failing.
    pub request_timeout: Duration,
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// Time without a heartbeat after which a follower starts an election.
    pub election_timeout: Duration,
    /// Applied entries between two snapshots (the log is purged behind a snapshot).
    pub snapshot_count: u64,
}

impl NodeOptions {
    /// Options with etcd's defaults for everything but identity and addresses.
    pub fn new(
        name: &str,
        data_dir: PathBuf,
        listen_client: SocketAddr,
        listen_peer: SocketAddr,
        tls: TlsFiles,
    ) -> Self {
        NodeOptions {
            name: name.to_owned(),
            data_dir,
            listen_client,
            listen_peer,
            advertise_client: None,
            advertise_peer: None,
            tls,
            max_request_bytes: etch_proto::DEFAULT_MAX_REQUEST_BYTES,
            request_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 100_000,
        }
    }
}

/// A handle to a running node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    cluster_id: u64,
    options: NodeOptions,
    raft: Raft,
    store: mvcc::Store,
    db: fjall::Database,
    client_endpoint: quinn::Endpoint,
    client_addr: SocketAddr,
}

impl Node {
    /// Opens storage, starts Raft (bootstrapping a one-member cluster on first start) and
    /// begins serving clients.
    pub async fn start(options: NodeOptions) -> anyhow::Result<Node> {
        let id = node_id(&options.name);
        let identity = Identity::load(&options.tls).context("loading the node's TLS material")?;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating data dir {}", options.data_dir.display()))?;
        let db = fjall::Database::builder(options.data_dir.join("db"))
            .open()
            .with_context(|| {
                format!(
                    "opening the database in {} (is another etchd using it?)",
                    options.data_dir.display()
                )
            })?;
        let store = mvcc::Store::open(&db).context("opening the key space")?;
        let log = LogStore::open(&db).context("opening the Raft log")?;
        let snapshots =
            SnapshotDir::open(&options.data_dir.join("snapshots")).context("opening snapshots")?;
        let state_machine =
            StateMachine::open(store.clone(), snapshots).context("opening the state machine")?;

        let election = options.election_timeout.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "etch".into(),
            heartbeat_interval: options.heartbeat_interval.as_millis() as u64,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_count),
            max_in_snapshot_log_to_keep: options.snapshot_count.min(5000),
            ..Default::default()
        }
        .validate()
        .context("invalid Raft timing")?;
        let raft = Raft::new(id, Arc::new(config), Network, log, state_machine)
            .await
            .context("starting Raft")?;

        let client = ClientEndpoint::bind(options.listen_client, &identity)
            .with_context(|| format!("binding the client endpoint on {}", options.listen_client))?;
        let client_addr = client.local_addr()?;
        let me = Member {
            name: options.name.clone(),
            peer_addr: options
                .advertise_peer
                .clone()
                .unwrap_or_else(|| options.listen_peer.to_string()),
            client_addr: options
                .advertise_client
                .clone()
                .unwrap_or_else(|| client_addr.to_string()),
        };
        if !raft.is_initialized().await? {
            tracing::info!(member = %me, "bootstrapping a new single-member cluster");
            raft.initialize(BTreeMap::from([(id, me.clone())]))
                .await
                .context("bootstrapping")?;
        }
        let cluster_id = node_id(&format!("etch-cluster/{}={}", me.name, me.peer_addr));

        let node = Node {
            inner: Arc::new(Inner {
                id,
                cluster_id,
                options,
                raft,
                store,
                db,
                client_endpoint: client.endpoint.clone(),
                client_addr,
            }),
        };
        tokio::spawn(log_leader_changes(node.inner.raft.clone()));
        tokio::spawn(serve_clients(client.endpoint, node.clone()));
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn options(&self) -> &NodeOptions {
        &self.inner.options
    }

    /// The bound client address (useful with port 0).
    pub fn client_addr(&self) -> SocketAddr {
        self.inner.client_addr
    }

    /// Stops serving, stops Raft and flushes storage.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        self.inner
            .client_endpoint
            .close(0u32.into(), b"node shutting down");
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| anyhow::anyhow!("stopping Raft: {e}"))?;
        self.inner
            .db
            .persist(fjall::PersistMode::SyncAll)
            .context("flushing the database")?;
        Ok(())
    }

    /// Answers one client request on behalf of `principal`.
    pub async fn handle(&self, principal: &str, request: Request) -> Result<Response, Error> {
        tracing::debug!(principal, ?request, "request");
        let mut response = match request {
            Request::Range(range) => self.range(range).await,
            Request::Status(_) => Ok(Response::Status(self.status())),
            write => self.write(write).await,
        }?;
        self.fill_header(&mut response);
        Ok(response)
    }

    async fn write(&self, request: Request) -> Result<Response, Error> {
        let proposal = self.inner.raft.client_write(Command::Kv(request));
        let written = tokio::time::timeout(self.inner.options.request_timeout, proposal)
            .await
            .map_err(|_| Error::Timeout)?;
        match written {
            Ok(reply) => reply.data.unwrap_or_else(|| {
                Err(Error::Internal(
                    "a write entry applied without an answer".into(),
                ))
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => Err(not_leader(to)),
            Err(RaftError::APIError(e)) => Err(Error::Internal(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(Error::Unavailable {
                reason: format!("raft stopped: {e}"),
            }),
        }
    }

    async fn range(&self, range: RangeRequest) -> Result<Response, Error> {
        if !range.serializable {
            let confirm = self.inner.raft.ensure_linearizable();
            let confirmed = tokio::time::timeout(self.inner.options.request_timeout, confirm)
                .await
                .map_err(|_| Error::Timeout)?;
            match confirmed {
                Ok(_) => {}
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
                    return Err(not_leader(to));
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                    return Err(Error::Unavailable {
                        reason: e.to_string(),
                    });
                }
                Err(RaftError::Fatal(e)) => {
                    return Err(Error::Unavailable {
                        reason: format!("raft stopped: {e}"),
                    });
                }
            }
        }
        let store = self.inner.store.clone();
        let read = tokio::task::spawn_blocking(move || store.range(&range))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        match read {
            Ok(answer) => answer.map(Response::Range),
            Err(e) => Err(Error::Internal(format!("storage: {e}"))),
        }
    }

    fn status(&self) -> StatusResponse {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let mut errors = Vec::new();
        if let Err(e) = &metrics.running_state {
            errors.push(format!("raft stopped: {e}"));
        }
        StatusResponse {
            header: ResponseHeader {
                revision: self.inner.store.revision(),
                ..Default::default()
            },
            name: self.inner.options.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            db_size: self.inner.db.disk_space().unwrap_or(0),
            leader: metrics.current_leader,
            is_learner: membership.learner_ids().any(|id| id == self.inner.id),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            compact_revision: self.inner.store.compact_revision(),
            errors,
        }
    }

    fn fill_header(&self, response: &mut Response) {
        let header = match response {
            Response::Range(r) => &mut r.header,
            Response::Put(r) => &mut r.header,
            Response::DeleteRange(r) => &mut r.header,
            Response::Txn(r) => &mut r.header,
            Response::Compact(r) => &mut r.header,
            Response::Status(r) => &mut r.header,
        };
        header.cluster_id = self.inner.cluster_id;
        header.member_id = self.inner.id;
        header.raft_term = self.inner.raft.metrics().borrow().current_term;
    }
}

fn not_leader(to: ForwardToLeader<NodeId, Member>) -> Error {
    match to.leader_node {
        Some(leader) => Error::NotLeader {
            leader: Some(leader.client_addr),
        },
        None => Error::Unavailable {
            reason: "no leader elected".into(),
        },
    }
}

/// Logs leader changes at info, with the term.
async fn log_leader_changes(raft: Raft) {
    let mut metrics = raft.metrics();
    let mut seen = (None, 0, ServerState::Learner);
    loop {
        let now = {
            let m = metrics.borrow_and_update();
            (m.current_leader, m.current_term, m.state)
        };
        if now != seen {
            if now.0 != seen.0 || now.1 != seen.1 {
                match now.0 {
                    Some(leader) => {
                        tracing::info!(leader = format_args!("{leader:x}"), term = now.1, state = ?now.2, "leader elected")
                    }
                    None => tracing::info!(term = now.1, state = ?now.2, "no leader"),
                }
            }
            seen = now;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

//! A running etch node: storage, Raft, the two QUIC endpoints, and the request decisions.
//!
//! [`Node::start`] opens the fjall database, binds the peer endpoint (node certificates
//! only) and the client endpoint, starts Raft, and on the first start of a new cluster
//! bootstraps the membership from `--initial-cluster`.
//!
//! [`Node::handle`] (in `route.rs`) decides every client request:
//! - a write (put, delete, txn, compact, membership) must run on the leader: a follower
//!   forwards it over the peer connection. On the leader it becomes a [`Command`] proposed
//!   through Raft, and the answer is what the state machine returned when it applied the
//!   entry: a client hears "OK" only after a majority has the entry on disk;
//! - a linearizable range also runs on the leader: a read-index round confirms leadership
//!   with a quorum (`ensure_linearizable`), waits for the local state machine to reach the
//!   read index, then reads locally. A deposed leader cannot confirm and so never answers;
//! - a serializable range reads the local applied state at once, on any node.
//!
//! [`Command`]: crate::raft::Command

mod backup;
mod compaction;
mod corruption;
mod leadership;
mod lease;
mod members;
mod plugin;
mod proposer;
mod quota;
mod reactor;
mod read_index;
mod route;
mod sessions;
mod ticks;

pub use backup::Backup;
pub use compaction::{AutoCompaction, REVISION_INTERVAL};
pub use quota::{DEFAULT_DISK_FREE_RESERVE_BYTES, DEFAULT_QUOTA_BACKEND_BYTES};
pub(crate) use route::Checked;
pub(crate) use ticks::Ticks;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etch_proto::Response;
use etch_proto::pki::TlsFiles;
use openraft::{ServerState, SnapshotPolicy};

use crate::lease::Lessor;
use crate::mvcc;
use crate::raft::network::{Network, Peers};
use crate::raft::snapshot::SnapshotDir;
use crate::raft::{LogStore, Member, Raft, StateMachine};
use crate::server::{ClientEndpoint, ClientLimits, serve_clients, serve_peers};
use crate::tls::{CrlFile, Tls};
use crate::watch::Hub;
use crate::{NodeId, node_id};

/// The largest `max_request_bytes` a node accepts: half of the largest Raft entry, so that a
/// request, its guard and the batch it joins always fit one peer frame.
pub const MAX_REQUEST_BYTES_CEILING: usize = crate::raft::wire::MAX_ENTRY_BYTES / 2;

/// Whether this node founds a new cluster or joins an existing one (etcd's
/// `--initial-cluster-state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

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
    /// Where the etcd v3 gRPC front listens (TCP), if anywhere. `etchd` defaults it to the
    /// client endpoint's address: TCP and UDP ports do not collide, and etcd clients then
    /// find it at the address `member list` gives.
    pub listen_grpc: Option<SocketAddr>,
    /// Client address told to clients and peers (host:port); defaults to the bound address.
    pub advertise_client: Option<String>,
    /// Peer address told to peers (host:port); defaults to this node's entry in
    /// `initial_cluster`, else the bound address.
    pub advertise_peer: Option<String>,
    /// The founding members, `(name, peer host:port)`; empty for a one-node cluster.
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_state: ClusterState,
    /// Distinguishes clusters founded with the same member list.
    pub initial_cluster_token: String,
    /// This node's TLS material (a node certificate).
    pub tls: TlsFiles,
    /// The revocation list checked on both endpoints [default: none]. Reloaded with `tls`.
    pub crl: Option<CrlFile>,
    /// Largest request frame accepted, in bytes (at most [`MAX_REQUEST_BYTES_CEILING`]).
    pub max_request_bytes: usize,
    /// Most compares, and most operations in each branch, of one txn [default: 128].
    pub max_txn_ops: usize,
    /// How long a request may wait for the cluster before failing.
    pub request_timeout: Duration,
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// Time without a heartbeat after which a follower starts an election.
    pub election_timeout: Duration,
    /// Applied entries between two snapshots (the log is purged behind a snapshot).
    pub snapshot_count: u64,
    /// Entries kept in the log behind a snapshot for followers to catch up from [default:
    /// 5000, etcd's]. Fewer means a follower that falls that far behind gets a snapshot.
    pub snapshot_catchup_entries: u64,
    /// Bytes of applied log past the last snapshot that call for the next one, and the
    /// most log kept behind a snapshot (`crate::raft::log_bytes`).
    pub snapshot_log_bytes: u64,
    /// How often a watch created with `progress_notify` gets a progress notification when
    /// nothing else was sent to it [default: 10 minutes, etcd's].
    pub watch_progress_interval: Duration,
    /// Revisions a live watcher may have queued before it is switched to catching up from
    /// history [default: 128].
    pub watch_queue_len: usize,
    /// Bytes of events a live watcher may have queued (its events are shared with other
    /// watchers, but counted in full for each) before it is switched to catching up from
    /// history [default: 16 MiB].
    pub watch_queue_bytes: usize,
    /// Bytes of events all live watchers of the node may have queued together; a watcher
    /// whose next revision would pass it goes back to history [default: 256 MiB].
    pub watch_node_bytes: usize,
    /// How often the leader looks for expired leases [default: 500 ms].
    pub lease_check_interval: Duration,
    /// Bytes the database may take on disk before the leader raises NOSPACE and refuses
    /// writes that add data [default: 2 GiB, etcd's].
    pub quota_backend_bytes: u64,
    /// Free bytes the data dir's filesystem must keep; below it this member raises NOSPACE
    /// before a write could fail for want of space (0: no check) [default: 128 MiB].
    pub disk_free_reserve_bytes: u64,
    /// History the leader compacts away by itself [default: none, as etcd's].
    pub auto_compaction: Option<AutoCompaction>,
    /// How often revision-mode auto-compaction compacts [default: 5 minutes, etcd's].
    pub auto_compaction_interval: Duration,
    /// How often the leader compares the members' key histories (HashKV) and raises
    /// CORRUPT for one that differs [default: never, as etcd's].
    pub corrupt_check: Option<Duration>,
    /// What one client may cost the node: connections, streams, buffered bytes, deadlines
    /// (see [`ClientLimits`] for each bound and its default).
    pub client_limits: ClientLimits,
    /// The ceiling on every plugin binding's fuel, deadline and memory cap [default:
    /// `crate::plugin::Maxima::default()`]: installs above it are refused, and calls of
    /// bindings stored before are clamped to it.
    pub plugin_maxima: crate::plugin::Maxima,
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
            listen_grpc: None,
            advertise_client: None,
            advertise_peer: None,
            initial_cluster: Vec::new(),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etch-cluster".into(),
            tls,
            crl: None,
            max_request_bytes: etch_proto::DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: etch_proto::limits::DEFAULT_MAX_TXN_OPS,
            request_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5000,
            snapshot_log_bytes: 64 * 1024 * 1024,
            watch_progress_interval: Duration::from_secs(600),
            watch_queue_len: 128,
            watch_queue_bytes: 16 << 20,
            watch_node_bytes: 256 << 20,
            lease_check_interval: Duration::from_millis(500),
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
            disk_free_reserve_bytes: quota::DEFAULT_DISK_FREE_RESERVE_BYTES,
            auto_compaction: None,
            auto_compaction_interval: REVISION_INTERVAL,
            corrupt_check: None,
            client_limits: ClientLimits::default(),
            plugin_maxima: crate::plugin::Maxima::default(),
        }
    }

    /// The peer address this node is known by.
    fn peer_addr(&self) -> String {
        if let Some(addr) = &self.advertise_peer {
            return addr.clone();
        }
        self.initial_cluster
            .iter()
            .find(|(name, _)| *name == self.name)
            .map(|(_, addr)| addr.clone())
            .unwrap_or_else(|| self.listen_peer.to_string())
    }

    /// The founding members, `(name, peer host:port)`: `initial_cluster`, or this node
    /// alone.
    fn founders(&self) -> Vec<(String, String)> {
        if self.initial_cluster.is_empty() {
            vec![(self.name.clone(), self.peer_addr())]
        } else {
            self.initial_cluster.clone()
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
    options: NodeOptions,
    raft: Raft,
    store: mvcc::Store,
    hub: Hub,
    lessor: Mutex<Lessor>,
    /// The validator plugins' engine, compiled components and counters.
    plugins: crate::plugin::Plugins,
    db: fjall::Database,
    log: LogStore,
    snapshots: SnapshotDir,
    peers: Arc<Peers>,
    /// The CA bundle, certificate, key and revocation list in force.
    tls: Arc<Tls>,
    client_endpoint: quinn::Endpoint,
    client_addr: SocketAddr,
    /// Client addresses of other members, learned by asking them (`Hello`).
    client_addrs: Mutex<HashMap<NodeId, String>>,
    /// The leader that last sent us AppendEntries, and when: a follower forwards only to a
    /// leader it has heard from within an election timeout.
    leader_contact: Mutex<Option<(NodeId, Instant)>>,
    /// Batches the leadership confirmations of linearizable reads.
    read_index: read_index::ReadIndex,
    /// A follower's read-index rounds: each asks the leader once for every linearizable
    /// read waiting on this node.
    follower_reads: read_index::ReadIndex,
    proposer: proposer::Proposer,
    /// Ranges whose answers are larger than [`route::SMALL_RANGE_BYTES`] are built one
    /// [`route::LARGE_RANGES`] at a time (see [`Node::read`]).
    large_ranges: tokio::sync::Semaphore,
    /// Nodes outside this node's view of the membership that its voters were asked about
    /// (`Node::admits_peer`): whether one vouched for it, and when.
    vouched: Mutex<HashMap<NodeId, (bool, Instant)>>,
    /// The database's size on disk, as last measured (`quota.rs`).
    db_size: std::sync::atomic::AtomicU64,
    /// Backups being streamed (`backup.rs`).
    backups: Arc<tokio::sync::Semaphore>,
    /// Set while this leader hands its leadership over (`leadership.rs`).
    handover: tokio::sync::watch::Sender<bool>,
    /// Set when the node starts shutting down (the gRPC front stops on it).
    stopping: tokio::sync::watch::Sender<bool>,
    /// Until when this node holds its own elections for a handover (`leadership.rs`).
    election_hold: Mutex<Option<tokio::time::Instant>>,
}

impl Node {
    /// Opens storage, starts Raft and both endpoints, and bootstraps a new cluster on its
    /// first start.
    pub async fn start(options: NodeOptions) -> anyhow::Result<Node> {
        let id = node_id(&options.name);
        let tls = Tls::load(options.tls.clone(), options.crl.clone(), peer_transport()?)
            .context("loading the node's TLS material")?;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating data dir {}", options.data_dir.display()))?;
        crate::data_dir::check_or_init(&options.data_dir)?;
        let db_dir = options.data_dir.join("db");
        let db = mvcc::open_database(&db_dir).map_err(|e| {
            if e.is_damage() {
                anyhow::anyhow!(
                    "{} is damaged ({e}): this member's data cannot be trusted; rebuild it from its peers (docs/operations.md, \"Corruption\")",
                    db_dir.display()
                )
            } else {
                anyhow::Error::new(e).context(format!(
                    "opening the database in {} (is another etchd using it?)",
                    options.data_dir.display()
                ))
            }
        })?;
        let store = mvcc::Store::open(&db).context("opening the key space")?;
        let snapshots = SnapshotDir::open(&options.data_dir.join("snapshots"))
            .context("opening snapshots")?
            .keeping_free(options.disk_free_reserve_bytes);
        let log = LogStore::open(&options.data_dir.join("raft"), snapshots.clone())
            .context("opening the Raft log")?;
        verify_storage(&options.data_dir, &db, log.database()).await?;
        // Components of stored bindings are compiled before Raft starts: the binding is in
        // effect from the first request.
        // A judgement waits for a plugin thread at most half the request timeout, so that
        // its client hears "not run" rather than timing out itself.
        let plugins =
            crate::plugin::Plugins::with_maxima(options.plugin_maxima, options.request_timeout / 2)
                .context("starting the plugin engine")?;
        let warming = (plugins.clone(), store.clone());
        tokio::task::spawn_blocking(move || warming.0.warm(&warming.1))
            .await
            .context("compiling plugins")?;
        let backlog = Arc::new(crate::raft::backlog::ApplyBacklog::new(
            options.election_timeout / 2,
        ));
        let mut state_machine = StateMachine::open(store.clone(), snapshots.clone())
            .context("opening the state machine")?
            .compiling_plugins(plugins.clone())
            .reporting_to(backlog.clone());
        state_machine
            .settle(&mut log.clone())
            .await
            .context("readying the state machine")?;
        let (applied, _) = (openraft::storage::RaftStateMachine::applied_state(&mut state_machine)
            .await)
            .context("reading the applied state")?;
        snapshots.remove_older_releases_file(applied)?;
        let hub = Hub::new(
            store.clone(),
            crate::watch::Limits {
                revisions: options.watch_queue_len,
                bytes: options.watch_queue_bytes,
                node_bytes: options.watch_node_bytes,
            },
        );
        tokio::spawn(crate::watch::feed(hub.clone(), state_machine.subscribe()));
        let applied = state_machine.subscribe();

        let cluster_id = match (
            log.cluster_id().context("reading the cluster id")?,
            options.initial_cluster_state,
        ) {
            (Some(id), _) => id,
            (None, ClusterState::New) => {
                crate::backup::check_restored(
                    &options.data_dir,
                    &options.name,
                    &options.founders(),
                    &options.initial_cluster_token,
                )?;
                let id = founding_cluster_id(&options);
                log.save_cluster_id(id)
                    .await
                    .context("recording the cluster id")?;
                id
            }
            // A joining node learns the id from the first peer that reaches it.
            (None, ClusterState::Existing) => 0,
        };

        let reset_key = crate::server::ResetKey::load_or_create(&options.data_dir)?;
        let peer_endpoint = reset_key
            .bind(options.listen_peer, tls.peer_server_config()?)
            .with_context(|| format!("binding the peer endpoint on {}", options.listen_peer))?;
        let peers = Arc::new(Peers::new(
            peer_endpoint.clone(),
            tls.peer_client_config()?,
            id,
            cluster_id,
        ));

        let election = options.election_timeout.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "etch".into(),
            heartbeat_interval: options.heartbeat_interval.as_millis() as u64,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_count),
            max_in_snapshot_log_to_keep: options.snapshot_catchup_entries,
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .context("invalid Raft timing")?;
        let network = Network {
            peers: peers.clone(),
        };
        let raft = Raft::new(
            id,
            Arc::new(config),
            network,
            log.clone().with_apply_backlog(backlog),
            state_machine,
        )
        .await
        .context("starting Raft")?;
        tokio::spawn(crate::raft::log_bytes::enforce(
            raft.clone(),
            log.clone(),
            snapshots.clone(),
            options.snapshot_log_bytes,
        ));
        let read_index = read_index::ReadIndex::start(raft.clone(), options.request_timeout);
        let proposer = proposer::Proposer::start(raft.clone(), options.request_timeout);

        let client = ClientEndpoint::bind(
            options.listen_client,
            &tls,
            &options.client_limits,
            &reset_key,
        )
        .with_context(|| format!("binding the client endpoint on {}", options.listen_client))?;
        let client_addr = client.local_addr()?;
        // The gRPC front on the client address takes the port the client endpoint got
        // (which differs from the one asked for when that was 0).
        let grpc = match options.listen_grpc {
            Some(addr) => {
                let addr = if addr == options.listen_client {
                    client_addr
                } else {
                    addr
                };
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the gRPC front on {addr} (TCP)"))?;
                Some(listener)
            }
            None => None,
        };
        tls.attach(
            client.endpoint.clone(),
            client.transport.clone(),
            peer_endpoint.clone(),
            peers.clone(),
        );

        let node = Node {
            inner: Arc::new_cyclic(|me| Inner {
                follower_reads: read_index::ReadIndex::with_round(route::follower_round(
                    me.clone(),
                )),
                id,
                options,
                raft,
                store,
                hub,
                lessor: Mutex::new(Lessor::default()),
                plugins,
                db,
                log,
                snapshots,
                peers,
                tls: Arc::new(tls),
                client_endpoint: client.endpoint.clone(),
                client_addr,
                client_addrs: Mutex::new(HashMap::new()),
                leader_contact: Mutex::new(None),
                read_index,
                proposer,
                large_ranges: tokio::sync::Semaphore::new(route::LARGE_RANGES),
                vouched: Mutex::new(HashMap::new()),
                db_size: std::sync::atomic::AtomicU64::new(0),
                backups: Arc::new(tokio::sync::Semaphore::new(backup::CONCURRENT_BACKUPS)),
                handover: tokio::sync::watch::Sender::new(false),
                stopping: tokio::sync::watch::Sender::new(false),
                election_hold: Mutex::new(None),
            }),
        };
        if node.inner.options.initial_cluster_state == ClusterState::New
            && !node.inner.raft.is_initialized().await?
        {
            node.bootstrap().await?;
        }
        tokio::spawn(log_leader_changes(node.inner.raft.clone()));
        tokio::spawn(crate::lease::expire_leases(node.clone()));
        tokio::spawn(quota::measure_db_size(node.clone()));
        tokio::spawn(sessions::expire_sessions(node.clone()));
        if let Some(period) = node.options().corrupt_check {
            tokio::spawn(corruption::check_corruption(node.clone(), period));
        }
        if let Some(mode) = node.options().auto_compaction {
            let interval = node.options().auto_compaction_interval;
            tokio::spawn(compaction::auto_compact(node.clone(), mode, interval));
        }
        tokio::spawn(reactor::run_reactors(node.clone(), applied.clone()));
        tokio::spawn(plugin::warm_plugins(node.clone(), applied));
        tokio::spawn(serve_peers(peer_endpoint, node.clone()));
        // One set of connection limits and one byte budget for both client fronts.
        let gate = crate::server::ClientGate::new(&node.options().client_limits);
        tokio::spawn(serve_clients(client.endpoint, node.clone(), gate.clone()));
        if let Some(listener) = grpc {
            tracing::info!(addr = %listener.local_addr()?, "serving etcd's v3 API over gRPC");
            tokio::spawn(crate::server::serve_grpc(listener, node.clone(), gate));
        }
        Ok(node)
    }

    /// Founds the cluster with the members of `--initial-cluster` (or just this node).
    async fn bootstrap(&self) -> anyhow::Result<()> {
        let opts = &self.inner.options;
        let mut founders = BTreeMap::new();
        if opts.initial_cluster.is_empty() {
            founders.insert(self.inner.id, self.me());
        }
        for (name, peer_addr) in &opts.initial_cluster {
            let member = if *name == opts.name {
                self.me()
            } else {
                Member {
                    name: name.clone(),
                    peer_addr: peer_addr.clone(),
                    client_addr: String::new(),
                }
            };
            if founders.insert(node_id(name), member).is_some() {
                bail!("--initial-cluster names {name} twice");
            }
        }
        if !founders.contains_key(&self.inner.id) {
            bail!("--initial-cluster does not name this node ({})", opts.name);
        }
        tracing::info!(members = founders.len(), "bootstrapping a new cluster");
        // Every founder initializes with the same membership; openraft accepts that.
        self.inner
            .raft
            .initialize(founders)
            .await
            .context("bootstrapping the cluster")?;
        Ok(())
    }

    /// This node as a membership entry.
    fn me(&self) -> Member {
        let opts = &self.inner.options;
        Member {
            name: opts.name.clone(),
            peer_addr: opts.peer_addr(),
            client_addr: opts
                .advertise_client
                .clone()
                .unwrap_or_else(|| self.inner.client_addr.to_string()),
        }
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn options(&self) -> &NodeOptions {
        &self.inner.options
    }

    /// The size limits requests entering this node are checked against.
    pub fn limits(&self) -> etch_proto::limits::Limits {
        etch_proto::limits::Limits {
            max_request_bytes: self.inner.options.max_request_bytes,
            max_txn_ops: self.inner.options.max_txn_ops,
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The watch hub of this node.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub(crate) fn store(&self) -> &mvcc::Store {
        &self.inner.store
    }

    /// The leader-side lease deadlines (meaningful while this node leads).
    pub(crate) fn lessor(&self) -> std::sync::MutexGuard<'_, Lessor> {
        // Deadlines are plain data, valid after any panic mid-update.
        self.inner
            .lessor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn snapshots(&self) -> &SnapshotDir {
        &self.inner.snapshots
    }

    pub(crate) fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// Resolves, with the reason, once Raft stops on its own: a storage failure (writing or
    /// syncing the log, applying a command) is fatal to it. Never resolves while the node
    /// runs, nor after [`Node::shutdown`] stopped Raft.
    pub async fn failed(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        loop {
            match &metrics.borrow_and_update().running_state {
                Err(openraft::error::Fatal::Stopped) | Ok(()) => {}
                Err(e) => return e.to_string(),
            }
            if metrics.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The TLS material in force, and its reload (see [`crate::tls`]).
    pub fn tls(&self) -> &Arc<Tls> {
        &self.inner.tls
    }

    /// The address this node tells others to reach its client endpoint at.
    pub fn advertised_client_addr(&self) -> String {
        self.me().client_addr
    }

    /// The bound client address (useful with port 0).
    pub fn client_addr(&self) -> SocketAddr {
        self.inner.client_addr
    }

    /// Records that `leader` just sent us AppendEntries.
    pub(crate) fn note_leader_contact(&self, leader: NodeId) {
        self.note_leader_contact_until(leader, Instant::now());
    }

    /// Counts `leader` as heard from until `at` (a leader handing over says how long it
    /// will be silent: requests forwarded meanwhile wait for it rather than give up). The
    /// same leader's later word never shortens what it announced.
    pub(crate) fn note_leader_contact_until(&self, leader: NodeId, at: Instant) {
        if let Ok(mut contact) = self.inner.leader_contact.lock() {
            let at = match *contact {
                Some((id, before)) if id == leader => before.max(at),
                _ => at,
            };
            *contact = Some((leader, at));
        }
    }

    /// Whether `leader` has been heard from lately.
    /// Heartbeats come every `heartbeat_interval`; half an election timeout of silence
    /// (5 heartbeats by default) already makes the leader suspect, so that few requests are
    /// forwarded into a dead leader, where their outcome would be unknown.
    fn leader_is_live(&self, leader: NodeId) -> bool {
        let opts = &self.inner.options;
        let timeout = (opts.election_timeout / 2).max(opts.heartbeat_interval * 3);
        match self.inner.leader_contact.lock().ok().and_then(|c| *c) {
            Some((id, at)) => id == leader && at.elapsed() <= timeout,
            None => false,
        }
    }

    /// Follows whether the node is shutting down.
    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }

    /// Adopts the cluster id a peer told us (a node that joined with `existing`).
    pub(crate) async fn adopt_cluster_id(&self, cluster_id: u64) -> anyhow::Result<()> {
        tracing::info!(cluster = format_args!("{cluster_id:x}"), "joined cluster");
        self.inner.log.save_cluster_id(cluster_id).await?;
        self.inner.peers.set_cluster_id(cluster_id);
        Ok(())
    }

    /// Stops serving, interrupts running plugin calls, stops Raft and flushes storage.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        // First: a call spinning in a plugin would otherwise hold its thread (and the
        // snapshot it reads) for up to its deadline.
        self.inner.plugins.stop();
        self.inner.stopping.send_replace(true);
        self.inner
            .client_endpoint
            .close(0u32.into(), b"node shutting down");
        self.inner
            .peers
            .endpoint()
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

    pub(crate) fn fill_header(&self, response: &mut Response) {
        let header = response.header_mut();
        // A forwarded answer already carries the leader's header.
        if header.member_id == 0 {
            header.cluster_id = self.inner.peers.cluster_id();
            header.member_id = self.inner.id;
            header.raft_term = self.inner.raft.metrics().borrow().current_term;
        }
    }
}

/// A peer address as `host:port`, without the `https://` etcd users are used to write.
pub fn strip_scheme(addr: &str) -> String {
    addr.split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .trim_end_matches('/')
        .to_owned()
}

/// Parses `--initial-cluster`: `n1=host:port,n2=host:port` (a scheme is dropped); empty
/// text is no members.
///
/// # Errors
///
/// An entry that is not `NAME=HOST:PORT`, or a name given twice.
pub fn parse_initial_cluster(text: Option<&str>) -> anyhow::Result<Vec<(String, String)>> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let mut members = Vec::new();
    for item in text.split(',') {
        let Some((name, addr)) = item.trim().split_once('=') else {
            bail!("--initial-cluster entries are NAME=HOST:PORT, not {item:?}");
        };
        if name.is_empty() || addr.is_empty() {
            bail!("--initial-cluster entries are NAME=HOST:PORT, not {item:?}");
        }
        if members.iter().any(|(n, _): &(String, String)| n == name) {
            bail!("--initial-cluster names {name} twice");
        }
        members.push((name.to_owned(), strip_scheme(addr)));
    }
    Ok(members)
}

/// The cluster id of a cluster founded with these options: the token and the sorted
/// founding members, as etcd derives it.
fn founding_cluster_id(options: &NodeOptions) -> u64 {
    let mut members: Vec<String> = options
        .founders()
        .iter()
        .map(|(n, a)| format!("{n}={a}"))
        .collect();
    members.sort();
    node_id(&format!(
        "{}/{}",
        options.initial_cluster_token,
        members.join(",")
    ))
}

/// The round trip a peer handshake assumes before it has measured one: a cluster's members
/// are a few milliseconds apart at most; a longer path costs a handshake packet sent twice.
const PEER_INITIAL_RTT: Duration = Duration::from_millis(50);

/// Peer connections notice a dead peer within seconds: keep-alives every 500 ms, and a
/// connection silent for 3 s is closed (a request on it fails instead of hanging).
///
/// A handshake assumes a round trip of [`PEER_INITIAL_RTT`] until it has measured one,
/// not QUIC's 333 ms: a handshake whose first packet found no one listening (a member
/// added and not started yet, or restarting) is tried again after three times that, and
/// the leader's appends to the member wait on it. At 333 ms a new member sat a second
/// idle after it started before the leader reached it.
fn peer_transport() -> anyhow::Result<Arc<quinn::TransportConfig>> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .initial_rtt(PEER_INITIAL_RTT)
        .max_concurrent_bidi_streams(4096u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .max_idle_timeout(Some(Duration::from_secs(3).try_into()?))
        .keep_alive_interval(Some(Duration::from_millis(500)));
    Ok(Arc::new(transport))
}

/// Reads every table and manifest of both databases (`crate::verify`) before the node
/// serves; a damaged file stops the start with its path and what to do.
async fn verify_storage(
    data_dir: &std::path::Path,
    db: &fjall::Database,
    log: &fjall::Database,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let work = [
        (db.clone(), data_dir.join("db")),
        (log.clone(), data_dir.join("raft")),
    ];
    let verified = tokio::task::spawn_blocking(move || {
        work.iter().try_fold(crate::verify::Verified::default(), |sum, (db, dir)| {
            let v = crate::verify::database(db, dir)?;
            Ok::<_, crate::verify::Damaged>(crate::verify::Verified {
                tables: sum.tables + v.tables,
                bytes: sum.bytes + v.bytes,
            })
        })
    })
    .await
    .context("verifying storage")?
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: this member's data cannot be trusted; rebuild it from its peers (docs/operations.md, \"Corruption\")"
        )
    })?;
    tracing::info!(
        tables = verified.tables,
        mib = verified.bytes >> 20,
        ms = started.elapsed().as_millis() as u64,
        "storage verified"
    );
    Ok(())
}

/// Logs leader changes at info, with the term, and keeps the leader and applied-index
/// metrics current.
async fn log_leader_changes(raft: Raft) {
    use crate::metrics::{HAS_LEADER, IS_LEADER, LEADER_CHANGES, PROPOSALS_APPLIED};
    let mut metrics = raft.metrics();
    let mut seen = (None, 0, ServerState::Learner);
    loop {
        let (now, me, applied) = {
            let m = metrics.borrow_and_update();
            let applied = m.last_applied.map_or(0, |l| l.index);
            ((m.current_leader, m.current_term, m.state), m.id, applied)
        };
        if let Err(e) = &metrics.borrow().running_state {
            match e {
                // The node is shutting down and stopped Raft itself.
                openraft::error::Fatal::Stopped => tracing::info!("Raft stopped"),
                e => {
                    tracing::error!(error = %e, "Raft stopped; this node no longer takes part in the cluster")
                }
            }
            metrics::gauge!(HAS_LEADER).set(0.0);
            metrics::gauge!(IS_LEADER).set(0.0);
            return;
        }
        metrics::gauge!(PROPOSALS_APPLIED).set(applied as f64);
        if (now.0, now.1) != (seen.0, seen.1) {
            match now.0 {
                Some(leader) => {
                    tracing::info!(leader = format_args!("{leader:x}"), term = now.1, state = ?now.2, "leader elected")
                }
                None => tracing::info!(term = now.1, state = ?now.2, "no leader"),
            }
            if now.0.is_some() && now.0 != seen.0 {
                metrics::counter!(LEADER_CHANGES).increment(1);
            }
            metrics::gauge!(HAS_LEADER).set(if now.0.is_some() { 1.0 } else { 0.0 });
            metrics::gauge!(IS_LEADER).set(if now.0 == Some(me) { 1.0 } else { 0.0 });
        }
        seen = now;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Runs a storage read on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> mvcc::Result<T> + Send + 'static,
) -> Result<T, etch_proto::Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| etch_proto::Error::Internal(e.to_string()))?
        .map_err(storage)
}

/// A storage failure, as a client sees it.
pub(super) fn storage(e: mvcc::Error) -> etch_proto::Error {
    etch_proto::Error::Internal(format!("storage: {e}"))
}

//! etchd's configuration: defaults < `--config` TOML file < `ETCH_*` environment < flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use etch_host::node::{
    AutoCompaction, ClusterState, DEFAULT_DISK_FREE_RESERVE_BYTES, DEFAULT_QUOTA_BACKEND_BYTES,
    MAX_REQUEST_BYTES_CEILING, REVISION_INTERVAL, parse_initial_cluster, strip_scheme,
};
use etch_host::plugin::{MAX_MEMORY_MB, Maxima};
use etch_host::server::ClientLimits;
use serde::Deserialize;

/// etchd: a node of etch, a replicated, strongly consistent key-value store.
///
/// With no flags, etchd serves a single-node cluster on 127.0.0.1:7379 with its data in
/// ./etch-data, and on first start creates a development CA, a node certificate and a `root`
/// client certificate under ./etch-data/certs, which `etchctl` finds by itself.
/// Every flag can also be set as an ETCH_* environment variable or in a --config TOML file
/// (keys are the flag names with '-' replaced by '_').
#[derive(Debug, Parser)]
#[command(name = "etchd", version, about, long_about)]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, env = "ETCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Human-readable name of this member [default: default].
    #[arg(long, env = "ETCH_NAME")]
    pub name: Option<String>,
    /// Directory for the database, the Raft log, snapshots being sent or received and (embedded
    /// default) certificates [default: ./etch-data].
    #[arg(long, env = "ETCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the client endpoint (QUIC, UDP) [default: 127.0.0.1:7379].
    #[arg(long, env = "ETCH_LISTEN_CLIENT")]
    pub listen_client: Option<SocketAddr>,
    /// Address of the peer endpoint (QUIC, UDP) [default: 127.0.0.1:7380].
    #[arg(long, env = "ETCH_LISTEN_PEER")]
    pub listen_peer: Option<SocketAddr>,
    /// Address of the etcd v3 gRPC front (TCP, the same mutual TLS), for etcdctl and etcd's
    /// client libraries, or `off` [default: the client endpoint's address, over TCP].
    #[arg(long, env = "ETCH_LISTEN_GRPC", value_name = "ADDR|off")]
    pub listen_grpc: Option<String>,
    /// Client address told to clients and peers (host:port) [default: the listen address].
    #[arg(long, env = "ETCH_ADVERTISE_CLIENT")]
    pub advertise_client: Option<String>,
    /// Peer address told to other members (host:port) [default: this node's --initial-cluster
    /// entry, else --listen-peer]. etcd calls it --initial-advertise-peer-urls.
    #[arg(
        long,
        env = "ETCH_ADVERTISE_PEER",
        alias = "initial-advertise-peer-urls"
    )]
    pub advertise_peer: Option<String>,
    /// The founding members, as NAME=HOST:PORT of their peer endpoints, comma-separated
    /// (e.g. n1=127.0.0.1:7380,n2=127.0.0.1:7382) [default: just this node].
    #[arg(long, env = "ETCH_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// `new` to found a cluster, `existing` to join one after `etchctl member add` [default: new].
    #[arg(long, env = "ETCH_INITIAL_CLUSTER_STATE")]
    pub initial_cluster_state: Option<String>,
    /// A token that keeps clusters founded with the same members apart [default: etch-cluster].
    #[arg(long, env = "ETCH_INITIAL_CLUSTER_TOKEN")]
    pub initial_cluster_token: Option<String>,
    /// Cluster CA certificate (PEM). Give --ca, --cert and --key together, or none of them
    /// for the embedded development CA.
    #[arg(long, env = "ETCH_CA")]
    pub ca: Option<PathBuf>,
    /// This node's certificate (PEM), issued by `etchctl certs init --nodes NAME`.
    #[arg(long, env = "ETCH_CERT")]
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "ETCH_KEY")]
    pub key: Option<PathBuf>,
    /// Certificate revocation list (PEM, signed by a CA of --ca), as `etchctl certs revoke`
    /// writes it: certificates it lists are refused on the client and peer ports. Re-read,
    /// with --ca, --cert and --key, on SIGHUP and when the files change [default: none; with
    /// the embedded CA, <data-dir>/certs/crl.pem once it exists].
    #[arg(long, env = "ETCH_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// Largest request accepted, in bytes [default: 1572864, etcd's; at most 8388608, so that
    /// every Raft entry fits a peer frame].
    #[arg(long, env = "ETCH_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Most compares, and most operations in each branch, of one txn [default: 128, etcd's].
    #[arg(long, env = "ETCH_MAX_TXN_OPS")]
    pub max_txn_ops: Option<usize>,
    /// How long a request may wait for the cluster, in milliseconds [default: 5000].
    #[arg(long, env = "ETCH_REQUEST_TIMEOUT")]
    pub request_timeout: Option<u64>,
    /// Leader heartbeat interval, in milliseconds [default: 100].
    #[arg(long, env = "ETCH_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<u64>,
    /// Election timeout, in milliseconds [default: 1000].
    #[arg(long, env = "ETCH_ELECTION_TIMEOUT")]
    pub election_timeout: Option<u64>,
    /// Applied entries between snapshots; the log is purged behind each [default: 100000].
    #[arg(long, env = "ETCH_SNAPSHOT_COUNT")]
    pub snapshot_count: Option<u64>,
    /// Entries kept in the log behind a snapshot, so that a slow follower can catch up
    /// from the log instead of a whole snapshot [default: 5000]. etcd calls it
    /// --experimental-snapshot-catchup-entries.
    #[arg(long, env = "ETCH_SNAPSHOT_CATCHUP_ENTRIES")]
    pub snapshot_catchup_entries: Option<u64>,
    /// Bytes of log that also call for a snapshot, and the most log kept behind one
    /// [default: 67108864, 64 MiB]. etch batches many writes into one entry, so entries
    /// alone do not bound the log on disk: a snapshot (the database made durable) is taken
    /// once the entries applied since the last one hold this much, and the log behind a
    /// snapshot is purged down to this much.
    #[arg(long, env = "ETCH_SNAPSHOT_LOG_BYTES")]
    pub snapshot_log_bytes: Option<u64>,
    /// Period of progress notifications on idle watches that ask for them, in milliseconds
    /// [default: 600000, etcd's ten minutes].
    #[arg(long, env = "ETCH_WATCH_PROGRESS_NOTIFY_INTERVAL")]
    pub watch_progress_notify_interval: Option<u64>,
    /// Bytes of events one watcher may have queued before it is sent back to read history
    /// itself (events are shared between watchers, but counted in full for each); bounds
    /// what a watcher that does not read its stream costs the node [default: 16777216].
    #[arg(long, env = "ETCH_WATCH_QUEUE_BYTES")]
    pub watch_queue_bytes: Option<usize>,
    /// Bytes of events all watchers of this node may have queued together; a watcher whose
    /// next revision would pass it is sent back to read history itself. Bounds what many
    /// watchers that stall on different keys cost the node [default: 268435456].
    #[arg(long, env = "ETCH_WATCH_NODE_BYTES")]
    pub watch_node_bytes: Option<usize>,
    /// Time a client has to send a whole request frame (on a watch or keep-alive stream:
    /// each control frame, from its first byte), in milliseconds [default: 10000].
    #[arg(long, env = "ETCH_CLIENT_READ_TIMEOUT")]
    pub client_read_timeout: Option<u64>,
    /// Time a client has to read an answer before its stream is reset, in milliseconds
    /// [default: 10000].
    #[arg(long, env = "ETCH_CLIENT_WRITE_TIMEOUT")]
    pub client_write_timeout: Option<u64>,
    /// A client connection with no open stream and no request for this long is closed,
    /// in milliseconds [default: 300000].
    #[arg(long, env = "ETCH_CLIENT_IDLE_TIMEOUT")]
    pub client_idle_timeout: Option<u64>,
    /// Client connections served at once [default: 1024].
    #[arg(long, env = "ETCH_MAX_CLIENT_CONNECTIONS")]
    pub max_client_connections: Option<usize>,
    /// Client connections one principal (certificate CN) may hold at once [default: 256].
    #[arg(long, env = "ETCH_MAX_CLIENT_CONNECTIONS_PER_PRINCIPAL")]
    pub max_client_connections_per_principal: Option<usize>,
    /// Streams (requests, watches, keep-alives) open at once on one client connection
    /// [default: 256].
    #[arg(long, env = "ETCH_MAX_CLIENT_STREAMS")]
    pub max_client_streams: Option<u32>,
    /// Bytes one client connection may have buffered in the node (requests being received,
    /// answers not yet read); an answer over it resets its stream [default: 67108864].
    #[arg(long, env = "ETCH_MAX_CONNECTION_BUFFER_BYTES")]
    pub max_connection_buffer_bytes: Option<usize>,
    /// The same for all client connections together; answers of 64 KiB or less are
    /// exempt [default: 1073741824].
    #[arg(long, env = "ETCH_MAX_CLIENT_BUFFER_BYTES")]
    pub max_client_buffer_bytes: Option<usize>,
    /// Most fuel a plugin binding may have per call (about one unit per WebAssembly
    /// instruction); installs above it are refused, stored bindings are clamped to it
    /// [default: 1000000000].
    #[arg(long, env = "ETCH_PLUGIN_MAX_FUEL")]
    pub plugin_max_fuel: Option<u64>,
    /// Longest deadline a plugin binding may have per call, in milliseconds [default: 5000].
    #[arg(long, env = "ETCH_PLUGIN_MAX_TIMEOUT_MS")]
    pub plugin_max_timeout_ms: Option<u64>,
    /// Largest memory cap a plugin binding may have, in MiB, at most 256 [default: 256].
    #[arg(long, env = "ETCH_PLUGIN_MAX_MEMORY_MB")]
    pub plugin_max_memory_mb: Option<u32>,
    /// Bytes the database may take on disk before the NOSPACE alarm is raised and writes
    /// that add data are refused (reads, deletes, compaction and lease revokes go on); 0
    /// means the default [default: 2147483648, etcd's 2 GiB].
    #[arg(long, env = "ETCH_QUOTA_BACKEND_BYTES")]
    pub quota_backend_bytes: Option<u64>,
    /// Free space the data dir's filesystem must keep: below it the member raises the
    /// NOSPACE alarm (as past the quota) before the disk fills and a write fails; 0 turns
    /// the check off [default: 134217728, 128 MiB].
    #[arg(long, env = "ETCH_DISK_FREE_RESERVE_BYTES")]
    pub disk_free_reserve_bytes: Option<u64>,
    /// Auto-compaction mode: periodic (keep --auto-compaction-retention of time) or revision
    /// (keep that many revisions) [default: periodic].
    #[arg(long, env = "ETCH_AUTO_COMPACTION_MODE")]
    pub auto_compaction_mode: Option<String>,
    /// History the leader keeps when it compacts by itself: for periodic, a duration (72h,
    /// 30m, 10s; a bare number is hours, as etcd reads it); for revision, a number of
    /// revisions. 0 turns auto-compaction off [default: 0].
    #[arg(long, env = "ETCH_AUTO_COMPACTION_RETENTION")]
    pub auto_compaction_retention: Option<String>,
    /// How often revision-mode auto-compaction compacts, in milliseconds [default: 300000,
    /// etcd's fixed five minutes].
    #[arg(long, env = "ETCH_AUTO_COMPACTION_INTERVAL")]
    pub auto_compaction_interval: Option<u64>,
    /// How often the leader compares every member's key history with its own (HashKV at
    /// its revision) and raises the CORRUPT alarm for a member that differs: a duration
    /// such as 5m, 30s or 500ms; 0 turns the check off [default: 0]. etcd calls it
    /// --experimental-corrupt-check-time.
    #[arg(
        long,
        env = "ETCH_CORRUPT_CHECK_TIME",
        alias = "experimental-corrupt-check-time"
    )]
    pub corrupt_check_time: Option<String>,
    /// Address of the metrics and health listener (TCP): Prometheus /metrics, and /health,
    /// /livez and /readyz for probes. Plain HTTP (e.g. 127.0.0.1:7381; keep it on loopback
    /// or a monitoring network), or https://IP:PORT for TLS with this node's certificate (no
    /// client certificate asked) [default: none, not served]. etcd calls it
    /// --listen-metrics-urls.
    #[arg(long, env = "ETCH_LISTEN_METRICS", alias = "listen-metrics-urls")]
    pub listen_metrics: Option<String>,
    /// Least severe log lines written: error, warn, info, debug or trace [default: info].
    /// Libraries (openraft, fjall, quinn, wasmtime) stay quiet below warn; RUST_LOG, when
    /// set, replaces this whole filter (e.g. RUST_LOG=info,openraft=debug).
    #[arg(long, env = "ETCH_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log line format: text, or json (one object per line) [default: text]. Colours only
    /// when stderr is a terminal.
    #[arg(long, env = "ETCH_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// The same settings, as read from a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    listen_client: Option<SocketAddr>,
    listen_peer: Option<SocketAddr>,
    listen_grpc: Option<String>,
    advertise_client: Option<String>,
    advertise_peer: Option<String>,
    initial_cluster: Option<String>,
    initial_cluster_state: Option<String>,
    initial_cluster_token: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_crl_file: Option<PathBuf>,
    max_request_bytes: Option<usize>,
    max_txn_ops: Option<usize>,
    request_timeout: Option<u64>,
    heartbeat_interval: Option<u64>,
    election_timeout: Option<u64>,
    snapshot_count: Option<u64>,
    snapshot_catchup_entries: Option<u64>,
    snapshot_log_bytes: Option<u64>,
    watch_progress_notify_interval: Option<u64>,
    watch_queue_bytes: Option<usize>,
    watch_node_bytes: Option<usize>,
    client_read_timeout: Option<u64>,
    client_write_timeout: Option<u64>,
    client_idle_timeout: Option<u64>,
    max_client_connections: Option<usize>,
    max_client_connections_per_principal: Option<usize>,
    max_client_streams: Option<u32>,
    max_connection_buffer_bytes: Option<usize>,
    max_client_buffer_bytes: Option<usize>,
    plugin_max_fuel: Option<u64>,
    plugin_max_timeout_ms: Option<u64>,
    plugin_max_memory_mb: Option<u32>,
    quota_backend_bytes: Option<u64>,
    disk_free_reserve_bytes: Option<u64>,
    auto_compaction_mode: Option<String>,
    auto_compaction_retention: Option<String>,
    auto_compaction_interval: Option<u64>,
    corrupt_check_time: Option<String>,
    listen_metrics: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings.
#[derive(Debug)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client: SocketAddr,
    pub listen_peer: SocketAddr,
    /// The gRPC front's address; `None` when it is off.
    pub listen_grpc: Option<SocketAddr>,
    pub advertise_client: Option<String>,
    pub advertise_peer: Option<String>,
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    /// `None`: the embedded development CA under `<data-dir>/certs`.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// `--client-crl-file`; `None`: none, or `crl.pem` of the embedded CA once it exists.
    pub client_crl_file: Option<PathBuf>,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub request_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    pub snapshot_log_bytes: u64,
    pub watch_progress_notify_interval: Duration,
    pub watch_queue_bytes: usize,
    pub watch_node_bytes: usize,
    pub client_limits: ClientLimits,
    pub plugin_maxima: Maxima,
    pub quota_backend_bytes: u64,
    pub disk_free_reserve_bytes: u64,
    pub auto_compaction: Option<AutoCompaction>,
    pub auto_compaction_interval: Duration,
    pub corrupt_check: Option<Duration>,
    /// The metrics listener's address, and whether it speaks HTTPS.
    pub listen_metrics: Option<(SocketAddr, bool)>,
    /// `--log-level`, validated: error, warn, info, debug or trace.
    pub log_level: String,
    pub log_format: LogFormat,
}

impl Config {
    pub fn load(args: Args) -> anyhow::Result<Self> {
        let args_limits = LimitArgs::from(&args);
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let file_limits = LimitArgs::from(&file);
        let tls = match (
            args.ca.or(file.ca),
            args.cert.or(file.cert),
            args.key.or(file.key),
        ) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => Some((ca, cert, key)),
            _ => bail!(
                "--ca, --cert and --key go together: give all three, or none for the embedded development CA"
            ),
        };
        let ms = Duration::from_millis;
        let maxima = Maxima::default();
        let listen_client = args
            .listen_client
            .or(file.listen_client)
            .unwrap_or(([127, 0, 0, 1], 7379).into());
        let listen_grpc = match args.listen_grpc.or(file.listen_grpc).as_deref() {
            None => Some(listen_client),
            Some("off") => None,
            Some(addr) => Some(addr.parse().with_context(|| {
                format!("--listen-grpc takes an address (host:port) or off, not {addr:?}")
            })?),
        };
        let config = Config {
            name: args.name.or(file.name).unwrap_or_else(|| "default".into()),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| "etch-data".into()),
            listen_client,
            listen_grpc,
            listen_peer: args
                .listen_peer
                .or(file.listen_peer)
                .unwrap_or(([127, 0, 0, 1], 7380).into()),
            advertise_client: args
                .advertise_client
                .or(file.advertise_client)
                .map(|a| strip_scheme(&a)),
            advertise_peer: args
                .advertise_peer
                .or(file.advertise_peer)
                .map(|a| strip_scheme(&a)),
            initial_cluster: parse_initial_cluster(
                args.initial_cluster.or(file.initial_cluster).as_deref(),
            )?,
            initial_cluster_state: match args
                .initial_cluster_state
                .or(file.initial_cluster_state)
                .as_deref()
            {
                None | Some("new") => ClusterState::New,
                Some("existing") => ClusterState::Existing,
                Some(other) => {
                    bail!("--initial-cluster-state must be new or existing, not {other:?}")
                }
            },
            initial_cluster_token: args
                .initial_cluster_token
                .or(file.initial_cluster_token)
                .unwrap_or_else(|| "etch-cluster".into()),
            tls,
            client_crl_file: args.client_crl_file.or(file.client_crl_file),
            max_request_bytes: args
                .max_request_bytes
                .or(file.max_request_bytes)
                .unwrap_or(etch_proto::DEFAULT_MAX_REQUEST_BYTES),
            max_txn_ops: args
                .max_txn_ops
                .or(file.max_txn_ops)
                .unwrap_or(etch_proto::limits::DEFAULT_MAX_TXN_OPS),
            request_timeout: ms(args
                .request_timeout
                .or(file.request_timeout)
                .unwrap_or(5000)),
            heartbeat_interval: ms(args
                .heartbeat_interval
                .or(file.heartbeat_interval)
                .unwrap_or(100)),
            election_timeout: ms(args
                .election_timeout
                .or(file.election_timeout)
                .unwrap_or(1000)),
            snapshot_count: args
                .snapshot_count
                .or(file.snapshot_count)
                .unwrap_or(100_000),
            snapshot_catchup_entries: args
                .snapshot_catchup_entries
                .or(file.snapshot_catchup_entries)
                .unwrap_or(5000),
            snapshot_log_bytes: args
                .snapshot_log_bytes
                .or(file.snapshot_log_bytes)
                .unwrap_or(64 * 1024 * 1024),
            watch_progress_notify_interval: ms(args
                .watch_progress_notify_interval
                .or(file.watch_progress_notify_interval)
                .unwrap_or(600_000)),
            watch_queue_bytes: args
                .watch_queue_bytes
                .or(file.watch_queue_bytes)
                .unwrap_or(16 << 20),
            watch_node_bytes: args
                .watch_node_bytes
                .or(file.watch_node_bytes)
                .unwrap_or(256 << 20),
            client_limits: client_limits(&args_limits, file_limits),
            plugin_maxima: Maxima {
                fuel: (args.plugin_max_fuel)
                    .or(file.plugin_max_fuel)
                    .unwrap_or(maxima.fuel),
                timeout: (args.plugin_max_timeout_ms)
                    .or(file.plugin_max_timeout_ms)
                    .map_or(maxima.timeout, ms),
                memory_mb: (args.plugin_max_memory_mb)
                    .or(file.plugin_max_memory_mb)
                    .unwrap_or(maxima.memory_mb),
            },
            quota_backend_bytes: match args.quota_backend_bytes.or(file.quota_backend_bytes) {
                None | Some(0) => DEFAULT_QUOTA_BACKEND_BYTES,
                Some(bytes) => bytes,
            },
            disk_free_reserve_bytes: (args.disk_free_reserve_bytes)
                .or(file.disk_free_reserve_bytes)
                .unwrap_or(DEFAULT_DISK_FREE_RESERVE_BYTES),
            auto_compaction: auto_compaction(
                args.auto_compaction_mode
                    .or(file.auto_compaction_mode)
                    .as_deref(),
                args.auto_compaction_retention
                    .or(file.auto_compaction_retention)
                    .as_deref(),
            )?,
            auto_compaction_interval: args
                .auto_compaction_interval
                .or(file.auto_compaction_interval)
                .map_or(REVISION_INTERVAL, ms),
            corrupt_check: match args.corrupt_check_time.or(file.corrupt_check_time) {
                None => None,
                Some(text) => {
                    let period = duration(&text).with_context(|| {
                        format!("--corrupt-check-time must be a duration such as 5m, 30s or 500ms, not {text:?}")
                    })?;
                    (!period.is_zero()).then_some(period)
                }
            },
            listen_metrics: match args.listen_metrics.or(file.listen_metrics) {
                None => None,
                Some(addr) => {
                    let https = addr.starts_with("https://");
                    if addr.contains("://") && !https && !addr.starts_with("http://") {
                        bail!("--listen-metrics takes http:// or https://, not {addr:?}");
                    }
                    let socket = strip_scheme(&addr).parse().with_context(|| {
                        format!("--listen-metrics must be [http[s]://]IP:PORT, not {addr:?}")
                    })?;
                    Some((socket, https))
                }
            },
            log_level: match args.log_level.or(file.log_level).as_deref() {
                None => "info".into(),
                Some(l @ ("error" | "warn" | "info" | "debug" | "trace")) => l.into(),
                Some(other) => {
                    bail!("--log-level must be error, warn, info, debug or trace, not {other:?}")
                }
            },
            log_format: match args.log_format.or(file.log_format).as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => bail!("--log-format must be text or json, not {other:?}"),
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.name.is_empty() {
            bail!("--name must not be empty");
        }
        if self.heartbeat_interval.is_zero() || self.election_timeout <= self.heartbeat_interval * 2
        {
            bail!(
                "--election-timeout must be more than twice --heartbeat-interval (etcd suggests 10x)"
            );
        }
        if self.max_request_bytes < 1024 {
            bail!("--max-request-bytes must be at least 1024");
        }
        if self.max_request_bytes > MAX_REQUEST_BYTES_CEILING {
            bail!(
                "--max-request-bytes must be at most {MAX_REQUEST_BYTES_CEILING} (a Raft entry must fit a peer frame)"
            );
        }
        if self.max_txn_ops == 0 {
            bail!("--max-txn-ops must be at least 1");
        }
        if !self.initial_cluster.is_empty()
            && !self.initial_cluster.iter().any(|(n, _)| *n == self.name)
        {
            bail!(
                "--initial-cluster does not name this member ({})",
                self.name
            );
        }
        if self.watch_progress_notify_interval < Duration::from_millis(100) {
            bail!("--watch-progress-notify-interval must be at least 100 ms");
        }
        if self.watch_queue_bytes < 1024 {
            bail!("--watch-queue-bytes must be at least 1024");
        }
        if self.watch_node_bytes < self.watch_queue_bytes {
            bail!("--watch-node-bytes must be at least --watch-queue-bytes");
        }
        if self.auto_compaction_interval < Duration::from_secs(1) {
            bail!("--auto-compaction-interval must be at least 1000 ms");
        }
        if self.snapshot_count == 0 {
            bail!("--snapshot-count must be at least 1");
        }
        if self.snapshot_log_bytes < 1024 * 1024 {
            bail!("--snapshot-log-bytes must be at least 1048576 (1 MiB)");
        }
        let limits = &self.client_limits;
        if limits.read_timeout < Duration::from_millis(100)
            || limits.write_timeout < Duration::from_millis(100)
            || limits.idle_timeout < Duration::from_millis(100)
        {
            bail!(
                "--client-read-timeout, --client-write-timeout and --client-idle-timeout must be at least 100 ms"
            );
        }
        if limits.max_connections == 0
            || limits.max_connections_per_principal == 0
            || limits.max_streams == 0
        {
            bail!(
                "--max-client-connections, --max-client-connections-per-principal and --max-client-streams must be at least 1"
            );
        }
        if limits.connection_buffer_bytes < self.max_request_bytes
            || limits.buffer_bytes < limits.connection_buffer_bytes
        {
            bail!(
                "--max-connection-buffer-bytes must be at least --max-request-bytes, and --max-client-buffer-bytes at least --max-connection-buffer-bytes"
            );
        }
        let maxima = &self.plugin_maxima;
        if maxima.fuel == 0 || maxima.timeout.is_zero() {
            bail!("--plugin-max-fuel and --plugin-max-timeout-ms must be above 0");
        }
        if maxima.memory_mb == 0 || maxima.memory_mb > MAX_MEMORY_MB {
            bail!(
                "--plugin-max-memory-mb must be 1 to {MAX_MEMORY_MB} (the plugin pool's slot size)"
            );
        }
        Ok(())
    }
}

/// The client limit settings of one source (flags or file), to merge field by field.
struct LimitArgs {
    read_timeout: Option<u64>,
    write_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    connections: Option<usize>,
    per_principal: Option<usize>,
    streams: Option<u32>,
    connection_bytes: Option<usize>,
    bytes: Option<usize>,
}

macro_rules! limit_args {
    ($source:ty) => {
        impl From<&$source> for LimitArgs {
            fn from(s: &$source) -> Self {
                LimitArgs {
                    read_timeout: s.client_read_timeout,
                    write_timeout: s.client_write_timeout,
                    idle_timeout: s.client_idle_timeout,
                    connections: s.max_client_connections,
                    per_principal: s.max_client_connections_per_principal,
                    streams: s.max_client_streams,
                    connection_bytes: s.max_connection_buffer_bytes,
                    bytes: s.max_client_buffer_bytes,
                }
            }
        }
    };
}
limit_args!(Args);
limit_args!(FileConfig);

/// Flags over the file over [`ClientLimits::default`].
fn client_limits(args: &LimitArgs, file: LimitArgs) -> ClientLimits {
    let d = ClientLimits::default();
    let ms = Duration::from_millis;
    ClientLimits {
        read_timeout: args
            .read_timeout
            .or(file.read_timeout)
            .map_or(d.read_timeout, ms),
        write_timeout: (args.write_timeout.or(file.write_timeout)).map_or(d.write_timeout, ms),
        idle_timeout: args
            .idle_timeout
            .or(file.idle_timeout)
            .map_or(d.idle_timeout, ms),
        max_connections: args
            .connections
            .or(file.connections)
            .unwrap_or(d.max_connections),
        max_connections_per_principal: (args.per_principal.or(file.per_principal))
            .unwrap_or(d.max_connections_per_principal),
        max_streams: args.streams.or(file.streams).unwrap_or(d.max_streams),
        connection_buffer_bytes: (args.connection_bytes.or(file.connection_bytes))
            .unwrap_or(d.connection_buffer_bytes),
        buffer_bytes: args.bytes.or(file.bytes).unwrap_or(d.buffer_bytes),
    }
}

/// `https://host:port` → `host:port`: etcd's flags take URLs, etch's endpoints are QUIC.
/// `--auto-compaction-mode` and `--auto-compaction-retention`, as etcd reads them; `None`
/// when the retention is 0 (off).
fn auto_compaction(
    mode: Option<&str>,
    retention: Option<&str>,
) -> anyhow::Result<Option<AutoCompaction>> {
    let retention = retention.unwrap_or("0").trim();
    match mode.unwrap_or("periodic") {
        "periodic" => {
            let hours = |n: &str| n.parse::<u64>().map(|h| Duration::from_secs(h * 3600));
            let with_unit = |unit: char, secs: u64| {
                (retention.strip_suffix(unit))
                    .and_then(|n| n.parse::<u64>().ok())
                    .map(|n| Duration::from_secs(n * secs))
            };
            let duration = hours(retention)
                .ok()
                .or_else(|| with_unit('h', 3600))
                .or_else(|| with_unit('m', 60))
                .or_else(|| with_unit('s', 1))
                .with_context(|| {
                    format!(
                        "--auto-compaction-retention must be a duration such as 72h, 30m or 10s (or hours), not {retention:?}"
                    )
                })?;
            Ok((!duration.is_zero()).then_some(AutoCompaction::Periodic(duration)))
        }
        "revision" => {
            let keep: i64 = retention.parse().ok().filter(|&n| n >= 0).with_context(|| {
                format!("--auto-compaction-retention must be a number of revisions in revision mode, not {retention:?}")
            })?;
            Ok((keep > 0).then_some(AutoCompaction::Revision(keep)))
        }
        other => bail!("--auto-compaction-mode must be periodic or revision, not {other:?}"),
    }
}

/// A duration written as etcd's flags take one: a number with a unit (`ms`, `s`, `m`, `h`),
/// or `0`.
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        let mut argv = vec!["etchd"];
        argv.extend_from_slice(args);
        Config::load(Args::try_parse_from(argv)?)
    }

    #[test]
    fn auto_compaction_reads_etcds_retentions() {
        let mode = |args: &[&str]| parse(args).map(|c| c.auto_compaction);
        assert_eq!(mode(&[]).expect("parses"), None);
        let h = |n| Some(AutoCompaction::Periodic(Duration::from_secs(n)));
        assert_eq!(
            mode(&["--auto-compaction-retention", "72"]).expect("parses"),
            h(72 * 3600)
        );
        assert_eq!(
            mode(&["--auto-compaction-retention", "30m"]).expect("parses"),
            h(1800)
        );
        assert_eq!(
            mode(&["--auto-compaction-retention", "10s"]).expect("parses"),
            h(10)
        );
        assert_eq!(
            mode(&["--auto-compaction-retention", "0"]).expect("parses"),
            None
        );
        let revision = [
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
        ];
        assert_eq!(
            mode(&[&revision[..], &["1000"]].concat()).expect("parses"),
            Some(AutoCompaction::Revision(1000))
        );
        assert!(mode(&[&revision[..], &["1h"]].concat()).is_err());
        assert!(mode(&["--auto-compaction-retention", "soon"]).is_err());
        assert!(mode(&["--auto-compaction-mode", "weekly"]).is_err());
        assert!(parse(&["--auto-compaction-interval", "10"]).is_err());
    }

    #[test]
    fn corrupt_check_time_is_a_duration() {
        let period = |t: &str| parse(&["--corrupt-check-time", t]).map(|c| c.corrupt_check);
        assert_eq!(parse(&[]).expect("defaults").corrupt_check, None);
        assert_eq!(period("5m").expect("5m"), Some(Duration::from_secs(300)));
        assert_eq!(
            period("500ms").expect("ms"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(period("0").expect("off"), None);
        assert!(period("5").is_err(), "a bare number has no unit");
        assert!(period("soon").is_err());
    }

    #[test]
    fn defaults_are_the_embedded_ones() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.listen_client.to_string(), "127.0.0.1:7379");
        assert_eq!(
            c.listen_grpc,
            Some(c.listen_client),
            "gRPC on the same port, TCP"
        );
        let off = parse(&["--listen-grpc", "off"]).expect("off");
        assert_eq!(off.listen_grpc, None);
        let Err(bad) = parse(&["--listen-grpc", "nowhere"]) else {
            panic!("an address or off");
        };
        assert!(
            format!("{bad:#}").contains("--listen-grpc takes an address"),
            "{bad:#}"
        );
        assert_eq!(c.data_dir, PathBuf::from("etch-data"));
        assert!(c.tls.is_none());
    }

    #[test]
    fn file_is_overridden_by_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etch.toml");
        std::fs::write(&path, "name = \"from-file\"\nsnapshot_count = 7\n").expect("write");
        let c = parse(&["--config", path.to_str().expect("utf8"), "--name", "flag"]).expect("load");
        assert_eq!(c.name, "flag");
        assert_eq!(c.snapshot_count, 7);
    }

    #[test]
    fn initial_cluster_takes_etcd_forms() {
        let c = parse(&[
            "--name",
            "n2",
            "--initial-cluster",
            "n1=https://10.0.0.1:7380,n2=10.0.0.2:7380",
        ])
        .expect("load");
        assert_eq!(
            c.initial_cluster[0],
            ("n1".to_owned(), "10.0.0.1:7380".to_owned())
        );
        assert!(parse(&["--name", "n3", "--initial-cluster", "n1=a:1,n2=b:2"]).is_err());
        assert!(parse(&["--name", "n1", "--initial-cluster", "n1=a:1,n1=b:2"]).is_err());
        assert!(parse(&["--initial-cluster-state", "maybe"]).is_err());
    }

    #[test]
    fn client_limits_come_from_flags_then_file_then_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etch.toml");
        std::fs::write(
            &path,
            "max_client_streams = 9\nclient_idle_timeout = 2000\n",
        )
        .expect("write");
        let file = path.to_str().expect("utf8");
        let c = parse(&["--config", file, "--client-idle-timeout", "1500"]).expect("load");
        assert_eq!(c.client_limits.max_streams, 9);
        assert_eq!(c.client_limits.idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.client_limits.read_timeout, Duration::from_secs(10));
        assert!(parse(&["--max-client-connections", "0"]).is_err());
        assert!(parse(&["--max-connection-buffer-bytes", "1000"]).is_err());
    }

    #[test]
    fn plugin_maxima_have_defaults_and_bounds() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.plugin_maxima, Maxima::default());
        let c = parse(&["--plugin-max-timeout-ms", "500", "--plugin-max-fuel", "7"]).expect("load");
        assert_eq!(c.plugin_maxima.timeout, Duration::from_millis(500));
        assert_eq!(c.plugin_maxima.fuel, 7);
        assert!(parse(&["--plugin-max-memory-mb", "257"]).is_err());
        assert!(parse(&["--plugin-max-fuel", "0"]).is_err());
    }

    #[test]
    fn crl_file_comes_from_flag_or_file() {
        assert_eq!(parse(&[]).expect("defaults").client_crl_file, None);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etch.toml");
        std::fs::write(&path, "client_crl_file = \"file.pem\"\n").expect("write");
        let file = path.to_str().expect("utf8");
        let c = parse(&["--config", file]).expect("load");
        assert_eq!(c.client_crl_file, Some(PathBuf::from("file.pem")));
        let c = parse(&["--config", file, "--client-crl-file", "flag.pem"]).expect("load");
        assert_eq!(c.client_crl_file, Some(PathBuf::from("flag.pem")));
    }

    #[test]
    fn partial_tls_and_bad_timing_are_refused() {
        assert!(parse(&["--ca", "ca.crt"]).is_err());
        assert!(parse(&["--heartbeat-interval", "500", "--election-timeout", "600"]).is_err());
        assert!(parse(&["--max-request-bytes", "8388608"]).is_ok());
        assert!(parse(&["--max-request-bytes", "8388609"]).is_err());
        assert!(parse(&["--max-txn-ops", "0"]).is_err());
    }

    #[test]
    fn watch_queue_bytes_has_a_default_and_a_floor() {
        assert_eq!(parse(&[]).expect("defaults").watch_queue_bytes, 16 << 20);
        let c = parse(&["--watch-queue-bytes", "1048576"]).expect("load");
        assert_eq!(c.watch_queue_bytes, 1 << 20);
        assert!(parse(&["--watch-queue-bytes", "100"]).is_err());
        assert_eq!(parse(&[]).expect("defaults").watch_node_bytes, 256 << 20);
        assert!(
            parse(&[
                "--watch-node-bytes",
                "1048575",
                "--watch-queue-bytes",
                "1048576"
            ])
            .is_err()
        );
    }
}

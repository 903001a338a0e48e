//! etchd: flags, logging and the embedded default around [`etch_host::Node`].

mod config;
mod http;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use etch_host::tls::{CrlFile, Tls, Trigger};
use etch_host::{Node, NodeOptions};
use etch_proto::crl::CRL_FILE;
use etch_proto::pki::{self, InitOptions, TlsFiles};
use tracing_subscriber::EnvFilter;

use config::{Args, Config, LogFormat};

/// How long stopping waits for blocking tasks still running (a storage scan) before the
/// process exits anyway: a stop must never hang on one.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// jemalloc rather than the system's malloc: a node's work is many small, short-lived
/// allocations on a few threads (request and answer frames, HTTP/2 and QUIC state,
/// fjall's bookkeeping), where glibc's malloc and free took about 12 % of a node's CPU.
/// Measured in BENCHMARKS.md ("Round five: the allocator"): put100 11–41 % faster in the
/// suite, the nodes' CPU per request 5–20 % lower on both fronts, the same or less memory.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    set_allocator_options();
    // Storage reads run on blocking threads (plugin calls have their own); a few suffice
    // on the machines etch targets, and every extra thread is one more allocator heap
    // holding memory.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(run());
    // Dropping the runtime would wait for every blocking task, however long it runs.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

/// The environment variable jemalloc reads its options from (the crate's symbols are
/// prefixed, and so is the variable).
const MALLOC_CONF_VAR: &str = "_RJEM_MALLOC_CONF";

/// jemalloc's options etchd runs with unless the caller set [`MALLOC_CONF_VAR`]: a
/// background thread returns freed memory to the system a quarter of a second after a
/// burst, even while the node is idle (at jemalloc's defaults, 10 s and only when the
/// allocating threads run again). Against a client that never reads 200 range answers of
/// 4 MB (`hostile_client`), a node peaks at 165–169 MiB and holds 77 MiB after it (glibc's
/// malloc with a fixed mmap threshold: 124 and 57 MiB); mimalloc, as fast, held 160–170 MiB
/// after it.
const MALLOC_CONF: &str = "background_thread:true,dirty_decay_ms:250,muzzy_decay_ms:0";

/// Re-executes etchd (same pid, same arguments) with [`MALLOC_CONF`] in its environment,
/// unless [`MALLOC_CONF_VAR`] is set already (so the new process never re-executes).
/// jemalloc reads its options from the environment when it starts, and setting them
/// in-process would need `unsafe`, hence the exec. Where exec is refused etchd carries on
/// with jemalloc's defaults.
fn set_allocator_options() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(MALLOC_CONF_VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(MALLOC_CONF_VAR, MALLOC_CONF)
        .exec();
    // `exec` returns only when it failed; the node still runs, with more memory kept.
    eprintln!("etchd: cannot re-execute with jemalloc's options set: {err}");
}

/// Libraries whose lines at the node's level are internal detail (openraft's state dumps
/// and a line per failed replication attempt, fjall's and lsm-tree's journal and
/// compaction notes): kept to warnings, openraft to none (the node logs what matters of
/// Raft itself: leader changes, a peer lost and found, Raft stopping). RUST_LOG, when set,
/// replaces the whole filter.
const QUIET_LIBRARIES: &str = "openraft=off,fjall=warn,lsm_tree=warn,quinn=warn,quinn_proto=warn,\
                               rustls=warn,wasmtime=warn,cranelift_codegen=warn";

fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},{QUIET_LIBRARIES}", config.log_level)));
    let lines = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => lines.init(),
        LogFormat::Json => lines.json().init(),
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::load(Args::parse())?;
    init_logging(&config);
    if let Ok(spec) = std::env::var("ETCH_FAILPOINTS") {
        etch_host::failpoint::arm(&spec)
            .map_err(anyhow::Error::msg)
            .context("ETCH_FAILPOINTS")?;
        tracing::warn!(%spec, "failpoints armed: this node fails its disk on purpose");
    }
    // Before the node serves: a SIGHUP must never find the default action (exit) in place.
    let reloads = ReloadSignal::install()?;
    let tls = match &config.tls {
        Some((ca, cert, key)) => TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        },
        None => embedded_certs(&config)?,
    };
    let crl = match (&config.client_crl_file, &config.tls) {
        (Some(path), _) => Some(CrlFile {
            path: path.clone(),
            required: true,
        }),
        // The embedded CA's list, once `etchctl certs revoke --dir <data-dir>/certs` makes it.
        (None, None) => Some(CrlFile {
            path: tls.ca.with_file_name(CRL_FILE),
            required: false,
        }),
        (None, Some(_)) => None,
    };
    let mut options = NodeOptions::new(
        &config.name,
        config.data_dir.clone(),
        config.listen_client,
        config.listen_peer,
        tls,
    );
    options.crl = crl;
    options.listen_grpc = config.listen_grpc;
    options.advertise_client = config.advertise_client.clone();
    options.advertise_peer = config.advertise_peer.clone();
    options.initial_cluster = config.initial_cluster.clone();
    options.initial_cluster_state = config.initial_cluster_state;
    options.initial_cluster_token = config.initial_cluster_token.clone();
    options.max_request_bytes = config.max_request_bytes;
    options.max_txn_ops = config.max_txn_ops;
    options.request_timeout = config.request_timeout;
    options.heartbeat_interval = config.heartbeat_interval;
    options.election_timeout = config.election_timeout;
    options.snapshot_count = config.snapshot_count;
    options.snapshot_catchup_entries = config.snapshot_catchup_entries;
    options.snapshot_log_bytes = config.snapshot_log_bytes;
    options.watch_progress_interval = config.watch_progress_notify_interval;
    options.watch_queue_bytes = config.watch_queue_bytes;
    options.watch_node_bytes = config.watch_node_bytes;
    options.client_limits = config.client_limits.clone();
    options.plugin_maxima = config.plugin_maxima;
    options.quota_backend_bytes = config.quota_backend_bytes;
    options.disk_free_reserve_bytes = config.disk_free_reserve_bytes;
    options.auto_compaction = config.auto_compaction;
    options.corrupt_check = config.corrupt_check;
    options.auto_compaction_interval = config.auto_compaction_interval;

    let metrics = match config.listen_metrics {
        Some((addr, https)) => Some((http::install_recorder()?, http::bind(addr).await?, https)),
        None => None,
    };
    let node = Node::start(options).await?;
    if let Some((handle, listener, https)) = metrics {
        let addr = listener.local_addr()?;
        let scheme = if https { "HTTPS" } else { "HTTP" };
        tokio::spawn(http::serve(listener, node.clone(), handle, https));
        tracing::info!(%addr, "serving metrics and health over {scheme}");
    }
    tracing::info!(name = %config.name, id = format_args!("{:x}", node.id()), client = %node.client_addr(), "etchd is serving");
    if config.tls.is_none() {
        let certs = config.data_dir.join("certs");
        eprintln!(
            "etch is serving clients on {} (embedded development CA in {}).\n\
             Try:  etchctl put greeting hello && etchctl get greeting\n\
             From another directory:  etchctl --endpoints {} --cacert {} --cert {} --key {} get greeting",
            node.client_addr(),
            certs.display(),
            node.client_addr(),
            certs.join("ca.crt").display(),
            certs.join("root.crt").display(),
            certs.join("root.key").display(),
        );
    }
    tokio::spawn(reload_tls(node.tls().clone(), reloads));
    tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            node.shutdown().await
        }
        reason = node.removed() => {
            // As etcd: a removed member stops, and exits 0 (a supervisor that restarts
            // failures leaves it stopped). Its data directory holds a membership without
            // it, so started again on it, it stops again.
            tracing::warn!(%reason, "this member was removed from the cluster: stopping; to bring it back, `etchctl member add` it and start it on an empty data directory");
            node.shutdown().await
        }
        reason = node.failed() => {
            // Fail-stop, as etcd does on a failed fsync: whatever the disk did to the write
            // in flight, this process acknowledges nothing more. On restart the node
            // recovers what was durable and catches up from its peers.
            tracing::error!(%reason, "storage failed: stopping without acknowledging anything more; check the disk, then restart etchd");
            if let Err(e) = node.shutdown().await {
                tracing::debug!(error = %e, "stopping after the storage failure");
            }
            Err(anyhow::anyhow!("storage failed: {reason}"))
        }
    }
}

/// The embedded default: a development CA, this node's certificate and a `root` client
/// certificate under `<data-dir>/certs`, made on first start and reused afterwards.
fn embedded_certs(config: &Config) -> anyhow::Result<TlsFiles> {
    let dir = config.data_dir.join("certs");
    let files = TlsFiles::in_dir(&dir, &config.name);
    let mut wanted = InitOptions {
        nodes: vec![],
        clients: vec![],
        hosts: hosts(config),
    };
    if !files.cert.exists() || !files.key.exists() {
        wanted.nodes.push(config.name.clone());
    }
    if !dir.join("root.crt").exists() {
        wanted.clients.push("root".into());
    }
    if !wanted.nodes.is_empty() || !wanted.clients.is_empty() {
        let written = pki::init_dir(&dir, &wanted)
            .with_context(|| format!("creating certificates in {}", dir.display()))?;
        for path in written {
            tracing::info!(path = %path.display(), "created development certificate material");
        }
    }
    Ok(files)
}

fn hosts(config: &Config) -> Vec<String> {
    let mut hosts = vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "::1".to_owned(),
    ];
    let grpc = config.listen_grpc.map(|a| a.ip());
    for ip in [config.listen_client.ip(), config.listen_peer.ip()]
        .into_iter()
        .chain(grpc)
    {
        if !ip.is_unspecified() && !hosts.contains(&ip.to_string()) {
            hosts.push(ip.to_string());
        }
    }
    if let Some(adv) = &config.advertise_client {
        let host = adv.rsplit_once(':').map_or(adv.as_str(), |(h, _)| h);
        if !hosts.iter().any(|h| h == host) && !Path::new(host).as_os_str().is_empty() {
            hosts.push(host.to_owned());
        }
    }
    hosts
}

/// How often the TLS files are looked at for changes. A change is put in force once two
/// looks in a row see the same contents, so within two periods of the last write.
const TLS_POLL: Duration = Duration::from_secs(1);

/// SIGHUP, where there is one.
struct ReloadSignal {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl ReloadSignal {
    fn install() -> anyhow::Result<Self> {
        Ok(ReloadSignal {
            #[cfg(unix)]
            hup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("installing the SIGHUP handler")?,
        })
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if self.hup.recv().await.is_some() {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// Reloads the CA bundle, certificate, key and revocation list on SIGHUP, and when the
/// files change. `Tls::reload` logs what happened; a refused reload keeps the old material.
async fn reload_tls(tls: std::sync::Arc<Tls>, mut reloads: ReloadSignal) {
    let mut poll = tokio::time::interval(TLS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            () = reloads.recv() => Trigger::Signal,
            _ = poll.tick() => Trigger::Poll,
        };
        // A few small files and a few signature checks: quick, but file I/O all the same.
        let tls = tls.clone();
        let _ = tokio::task::spawn_blocking(move || tls.reload(trigger)).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

//! etch-bench: the load generator for etch, with the workload shapes and the output of
//! etcd's `benchmark` tool, so that figures can be put beside etcd's measured the same way.
//!
//! Start reading at [`Command`]: each subcommand builds a [`workload::Op`] and hands it to
//! [`load::run`], which spreads `--clients` tasks over `--conns` SDK clients (one QUIC
//! connection each), times every request into an HDR histogram and returns a
//! [`report::Report`], printed as etcd prints its summary or as one JSON object.
//! `watch-latency` (`watch.rs`) times events instead of requests. `hostile` (`hostile.rs`)
//! measures a normal workload beside writers hammering a looping validator. `suite`
//! (`suite.rs`, `cluster.rs`) starts a local three-node cluster and runs the standard set.

mod cluster;
mod hostile;
mod load;
mod plot;
mod report;
mod suite;
mod validator;
mod watch;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use etch_client::{Client, ClientOptions, TlsFiles};

use crate::load::Load;
use crate::watch::WatchLatencyArgs;
use crate::workload::{PutArgs, RangeArgs, TxnPutArgs};

/// A benchmark tool for etch, after etcd's `benchmark`.
#[derive(Parser, Debug)]
#[command(name = "etch-bench", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Connection flags, as etchctl's (and read from the same `ETCHCTL_*` variables).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Comma-separated node client addresses (host:port).
    #[arg(
        long,
        global = true,
        env = "ETCHCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7379"
    )]
    pub endpoints: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "ETCHCTL_CACERT",
        default_value = "./etch-data/certs/ca.crt"
    )]
    pub cacert: PathBuf,
    /// This client's certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "ETCHCTL_CERT",
        default_value = "./etch-data/certs/root.crt"
    )]
    pub cert: PathBuf,
    /// This client's private key (PEM).
    #[arg(
        long = "key",
        id = "key_file",
        value_name = "KEY",
        global = true,
        env = "ETCHCTL_KEY",
        default_value = "./etch-data/certs/root.key"
    )]
    pub key_file: PathBuf,
    /// Time allowed for one request, retries included, in milliseconds.
    #[arg(long, global = true, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Print one JSON object instead of the summary.
    #[arg(long, global = true)]
    pub json: bool,
}

impl GlobalArgs {
    /// SDK options for these endpoints and TLS files.
    pub fn options(&self) -> ClientOptions {
        let tls = TlsFiles {
            ca: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key_file.clone(),
        };
        ClientOptions::new(self.endpoints.iter().cloned(), tls)
            .request_timeout(Duration::from_millis(self.request_timeout_ms))
    }

    /// `n` clients, each with its own QUIC connection (and UDP socket).
    pub async fn connect(&self, n: usize) -> Result<Vec<Client>> {
        connect(&self.options(), n).await
    }
}

/// `n` clients with `options`, each with its own QUIC connection (and UDP socket).
pub async fn connect(options: &ClientOptions, n: usize) -> Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let client = Client::connect(options.clone())
            .await
            .with_context(|| format!("connecting client {} of {n}", i + 1))?;
        clients.push(client);
    }
    Ok(clients)
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmark puts.
    Put(PutArgs),
    /// Benchmark ranges of KEY (to END, exclusive, when given).
    Range(RangeArgs),
    /// Benchmark transactions of puts.
    TxnPut(TxnPutArgs),
    /// Benchmark the latency of watch events.
    WatchLatency(WatchLatencyArgs),
    /// Start a local 3-node cluster, run the standard workloads, print one table.
    Suite(suite::SuiteArgs),
    /// Fairness: puts and gets outside a looping validator's prefix, before and while
    /// --hostile-clients writers hammer it; prints both p99s and their ratio.
    Hostile(hostile::HostileArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    let (workload, load, validator) = match cli.command {
        Command::Put(args) => args.workload()?,
        Command::Range(args) => {
            let (workload, load) = args.workload();
            (workload, load, None)
        }
        Command::TxnPut(args) => {
            let (workload, load) = args.workload()?;
            (workload, load, None)
        }
        Command::WatchLatency(args) => {
            return args.run(&global.options()).await?.print(global.json);
        }
        Command::Suite(args) => return suite::run(args, global.json).await,
        Command::Hostile(args) => return hostile::run(&args, &global.options(), global.json).await,
    };
    let clients = global.connect(load.conns).await?;
    let Some(validator) = validator else {
        return load::run(&clients, &load, workload, "")
            .await?
            .print(global.json);
    };
    let prefix = match &workload.op {
        workload::Op::Put { keys, .. } => keys.shared_prefix(),
        _ => Vec::new(),
    };
    validator.install(&clients[0], &prefix).await?;
    let report = load::run(&clients, &load, workload, "").await;
    let removed = validator::Validator::remove(&clients[0]).await;
    report?.print(global.json)?;
    removed
}

/// The load shape shared by every workload.
#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Number of SDK clients (one QUIC connection each); the clients are spread over them.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Number of concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Total number of requests.
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Requests per second over all clients (0 for as fast as they go).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

impl LoadArgs {
    pub fn load(&self) -> Load {
        Load {
            conns: self.conns.max(1),
            clients: self.clients.max(1),
            total: self.total,
            rate: self.rate,
        }
    }
}

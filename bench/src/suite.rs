//! `etch-bench suite`: the standard workloads against a local three-node cluster, in one
//! table. The set mirrors `../shared/tools/etcd-baseline/run.sh` (same names, shapes and
//! keys), so the two tables can be put side by side:
//!
//! | name | what |
//! |---|---|
//! | put1 | put, 1 connection, 1 client, 2000 requests |
//! | put100 | put, 10 connections, 100 clients, 50000 requests |
//! | getl | linearizable get of one key, 10 connections, 100 clients, 50000 requests |
//! | gets | serializable get of one key, 10 connections, 100 clients, 50000 requests |
//! | put100v | put100 with the json-schema validator bound to the written keys |
//! | watch1000 | 1000 watchers of one key over 10 connections; 500 puts at 100/s; the time from each put to each watcher's event |
//! | grow | 300000 sequential puts of new keys with 1 KiB values, 10 connections, 100 clients, in three chunks of 100000 (rows grow1, grow2, grow3): how throughput holds as the data grows; the nodes' disk use after it |
//!
//! Puts write 8-byte sequential keys over a key space of 10000 with 256-byte values; the
//! gets read key `00000000`. The resident set size of every node is read from /proc after
//! the plain puts (before put100v loads a plugin) and again at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use etch_client::{Client, ClientOptions};
use serde_json::{Value, json};

use crate::cluster::LocalCluster;
use crate::load::{self, Load};
use crate::plot::{self, Series};
use crate::report::Report;
use crate::validator::{Validator, json_value};
use crate::watch::WatchLatencyArgs;
use crate::workload::{Keys, Op, Workload, fixed_width};

const KEY_SIZE: usize = 8;
const VAL_SIZE: usize = 256;
const KEY_SPACE: u64 = 10_000;

#[derive(Args, Debug)]
pub struct SuiteArgs {
    /// The etchd binary [default: the etchd beside etch-bench].
    #[arg(long)]
    pub etchd: Option<PathBuf>,
    /// Directory for the nodes' data, certificates and logs, kept afterwards
    /// [default: a temporary directory, removed afterwards].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Workloads to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "put1,put100,put100v,getl,gets,range,watch1000,grow,catchup"
    )]
    pub workloads: Vec<String>,
    /// The json-schema plugin put100v binds [default: target/plugins/json-schema.wasm, next
    /// to etch-bench's target directory, as scripts/build-plugins makes it].
    #[arg(long, value_name = "FILE.wasm")]
    pub json_schema: Option<PathBuf>,
    /// Multiplies every workload's request count (e.g. 0.01 for a smoke run).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Draws each workload's throughput over the run and its latency percentiles into
    /// this SVG file, beside the etcd baseline's when `--baseline` is given.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// The etcd baseline to draw beside etch: the JSON lines of
    /// `OUT=FILE bench/etcd-baseline/run.sh` (scripts/bench-suite with ETCD=1 writes them).
    #[arg(long, value_name = "FILE", requires = "plot")]
    pub baseline: Option<PathBuf>,
}

/// The schema put100v's validator checks every value against (the values are
/// [`json_value`]s).
const SCHEMA: &str =
    r#"{"type":"object","required":["v"],"properties":{"v":{"type":"string","maxLength":1024}}}"#;

/// The watch workload: 1000 watchers of one key over 10 connections, 100 puts/s.
const WATCH: &str = "watch1000";

/// The growth workload: [`GROW_CHUNKS`] chunks of [`GROW_CHUNK`] puts of new keys.
const GROW: &str = "grow";
const GROW_CHUNKS: u64 = 3;
const GROW_CHUNK: u64 = 100_000;
const GROW_VAL_SIZE: usize = 1024;

/// The range workload: linearizable ranges of [`RANGE_KEYS`] keys (with that limit) over
/// keys of its own, numbered from [`RANGE_FIRST`] and written before it starts.
const RANGE: &str = "range";
const RANGE_KEYS: u64 = 10_000;
const RANGE_FIRST: u64 = 90_000_000;

/// The catch-up workload: a member added to the cluster as it stands (after [`GROW`], its
/// data set), timed from `member add` until it is a voter that has applied the revision
/// the cluster had when it was added.
const CATCHUP: &str = "catchup";
/// How long a new member may take to catch up before the workload gives up.
const CATCHUP_LIMIT: Duration = Duration::from_secs(600);

/// Bytes in each node's data directory, by node name.
type Disk = BTreeMap<String, u64>;

/// What the workloads leave: each report, the nodes' RSS after the plain puts, and their
/// disk use after `grow`.
struct Runs {
    reports: Vec<(String, Report)>,
    rss_after_put: Rss,
    disk_after_grow: Option<Disk>,
    /// How long [`CATCHUP`]'s new member took, and the revision it caught up to.
    catch_up: Option<(Duration, i64)>,
}

/// Runs [`WATCH`] (500 puts at scale 1); its table row counts watchers as clients and
/// delivered events as requests.
async fn watch(args: &SuiteArgs, options: &ClientOptions) -> Result<Report> {
    let put_total = ((500.0 * args.scale).round() as u64).max(1);
    let watch = WatchLatencyArgs {
        watchers: 1000,
        conns: 10,
        put_rate: 100,
        put_total,
        val_size: VAL_SIZE,
    };
    let mut report = watch.run(options).await?;
    report.params["clients"] = watch.watchers.into();
    report.params["total"] = (put_total * watch.watchers as u64).into();
    eprintln!(
        "{WATCH}: p50 {:.2} ms, p99 {:.2} ms, {} errors",
        report.ms_at(50.0),
        report.ms_at(99.0),
        report.errors.values().sum::<u64>()
    );
    Ok(report)
}

/// The keys [`RANGE`] reads (and writes first), numbered from [`RANGE_FIRST`], and how many:
/// [`RANGE_KEYS`] at scale 1.
fn range_keys(scale: f64) -> (Keys, u64) {
    let keys = Keys {
        size: KEY_SIZE,
        // Key number i is RANGE_FIRST + i (Keys::number is (offset + i) % space).
        space: u64::MAX,
        sequential: true,
        offset: RANGE_FIRST,
    };
    (keys, ((RANGE_KEYS as f64 * scale).round() as u64).max(1))
}

/// Writes what workload `name` reads: the one key of a get, every key of [`RANGE`].
async fn seed(clients: &[Client], name: &str, op: &Op, scale: f64) -> Result<()> {
    if let Op::Range { key, end, .. } = op
        && end.is_empty()
    {
        clients[0]
            .put(key.clone(), vec![b'v'; VAL_SIZE])
            .await
            .context("writing the key the gets read")?;
    }
    if name != RANGE {
        return Ok(());
    }
    let (keys, count) = range_keys(scale);
    let load = Load {
        conns: clients.len(),
        clients: 100,
        total: count,
        rate: 0.0,
    };
    let workload = Workload {
        name: "seed".into(),
        op: Op::Put {
            keys,
            value: vec![b'v'; VAL_SIZE],
        },
        params: json!({}),
    };
    let report = load::run(clients, &load, workload, "seed").await?;
    let errors: u64 = report.errors.values().sum();
    if errors > 0 {
        bail!("{errors} of the puts that write the range's keys failed");
    }
    Ok(())
}

/// One standard workload: (conns, clients, total, op, whether the json-schema validator is
/// bound).
fn standard(name: &str, scale: f64) -> Result<(usize, usize, u64, Op, bool)> {
    let keys = Keys {
        size: KEY_SIZE,
        space: KEY_SPACE,
        sequential: true,
        offset: 0,
    };
    let put = Op::Put {
        keys: keys.clone(),
        value: vec![b'v'; VAL_SIZE],
    };
    let get = |serializable| Op::Range {
        key: fixed_width(0, KEY_SIZE),
        end: Vec::new(),
        limit: 0,
        serializable,
    };
    let put_json = Op::Put {
        keys,
        value: json_value(VAL_SIZE),
    };
    Ok(match name {
        "put1" => (1, 1, 2000, put, false),
        "put100" => (10, 100, 50_000, put, false),
        "put100v" => (10, 100, 50_000, put_json, true),
        "getl" => (10, 100, 50_000, get(false), false),
        "gets" => (10, 100, 50_000, get(true), false),
        RANGE => {
            let (keys, count) = range_keys(scale);
            let range = Op::Range {
                key: keys.key(0),
                end: keys.key(count),
                limit: count as i64,
                serializable: false,
            };
            (10, 10, 500, range, false)
        }
        other => {
            bail!(
                "unknown workload {other:?} (known: put1, put100, put100v, getl, gets, {RANGE}, {WATCH}, {GROW})"
            )
        }
    })
}

pub async fn run(args: SuiteArgs, json: bool) -> Result<()> {
    let etchd = match &args.etchd {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating etch-bench")?
            .with_file_name("etchd"),
    };
    if !etchd.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p etch-host) or pass --etchd",
            etchd.display()
        );
    }
    // Unknown names and a missing plugin fail before a cluster is started.
    let mut validator = None;
    for name in (args.workloads.iter()).filter(|n| ![WATCH, GROW, CATCHUP].contains(&n.as_str())) {
        if standard(name, args.scale)?.4 && validator.is_none() {
            validator = Some(json_schema(&args)?);
        }
    }
    // A bad baseline fails before the runs, not after them.
    let baseline = match &args.baseline {
        Some(file) => plot::read_baseline(file)?,
        None => Vec::new(),
    };
    let mut cluster = LocalCluster::start(&etchd, args.nodes.max(1), args.dir.clone()).await?;
    let options = ClientOptions::new(cluster.endpoints(), cluster.tls());
    let result = run_workloads(&args, &mut cluster, &options, validator.as_ref()).await;
    let rss_end = rss(&cluster);
    cluster.stop();
    let runs = result?;
    if let Some(path) = &args.plot {
        let etch: Vec<Series> = (runs.reports.iter())
            .map(|(n, r)| Series::of(n, r))
            .collect();
        plot::draw(path, &etch, &baseline)?;
        eprintln!("plot: {}", path.display());
    }
    if json {
        let out = json!({
            "etchd": etchd,
            "nodes": args.nodes,
            "workloads": runs.reports.iter().map(|(n, r)| {
                let mut v = serde_json::to_value(r.json()).unwrap_or(Value::Null);
                v["name"] = n.clone().into();
                v
            }).collect::<Vec<_>>(),
            "rss_kib_after_put": runs.rss_after_put,
            "rss_kib_end": rss_end,
            "disk_bytes_after_grow": runs.disk_after_grow,
            "catch_up": runs.catch_up.map(|(took, revision)| json!({
                "secs": took.as_secs_f64(), "revision": revision})),
        });
        println!("{out}");
    } else {
        print!("{}", table(&runs, &rss_end));
    }
    Ok(())
}

/// Resident set size per node name, in KiB (`None` for a node that is gone).
type Rss = BTreeMap<String, Option<u64>>;

fn rss(cluster: &LocalCluster) -> Rss {
    cluster
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.rss_kib()))
        .collect()
}

/// The json-schema validator put100v binds, with [`SCHEMA`].
fn json_schema(args: &SuiteArgs) -> Result<Validator> {
    let file = match &args.json_schema {
        Some(file) => file.clone(),
        None => {
            let exe = std::env::current_exe().context("locating etch-bench")?;
            // target/<profile>/etch-bench → target/plugins/json-schema.wasm
            let target = exe
                .ancestors()
                .nth(2)
                .context("etch-bench's target directory")?;
            target.join("plugins").join("json-schema.wasm")
        }
    };
    if !file.exists() {
        bail!(
            "{} not found: put100v binds the json-schema plugin; build it with \
             scripts/build-plugins, pass --json-schema FILE.wasm, or leave put100v out of \
             --workloads",
            file.display()
        );
    }
    Validator::new(&file, &[format!("schema={SCHEMA}")])
}

/// Runs [`CATCHUP`] on `cluster`: adds a member and waits until it has applied the
/// revision the cluster had (read linearizably) before the add.
async fn catch_up(cluster: &mut LocalCluster, options: &ClientOptions) -> Result<(Duration, i64)> {
    let client = Client::connect(options.clone()).await?;
    let target = client.get("probe").await?.header.revision;
    let started = Instant::now();
    let new = cluster.add_node(&client).await?;
    let alone = ClientOptions::new(vec![cluster.nodes[new].client_addr.clone()], cluster.tls())
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2));
    let probe = Client::new(alone).context("a client of the new member")?;
    loop {
        cluster.nodes[new].check_running()?;
        if let Ok(got) = probe.get("probe").serializable().await
            && got.header.revision >= target
        {
            break;
        }
        if started.elapsed() > CATCHUP_LIMIT {
            bail!("the new member did not reach revision {target} in {CATCHUP_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    eprintln!(
        "{CATCHUP}: {} caught up to revision {target} in {:.2} s",
        cluster.nodes[new].name,
        took.as_secs_f64()
    );
    Ok((took, target))
}

/// Runs [`GROW`]: each chunk writes the keys after the last one's, as its own report.
async fn grow(args: &SuiteArgs, options: &ClientOptions) -> Result<Vec<(String, Report)>> {
    let chunk = ((GROW_CHUNK as f64 * args.scale).round() as u64).max(1);
    let load = Load {
        conns: 10,
        clients: 100,
        total: chunk,
        rate: 0.0,
    };
    let mut clients = Vec::new();
    for _ in 0..load.conns {
        clients.push(Client::connect(options.clone()).await?);
    }
    let mut reports = Vec::new();
    for i in 0..GROW_CHUNKS {
        let name = format!("{GROW}{}", i + 1);
        let keys = Keys {
            size: KEY_SIZE,
            space: chunk * GROW_CHUNKS,
            sequential: true,
            offset: i * chunk,
        };
        let op = Op::Put {
            keys,
            value: vec![b'v'; GROW_VAL_SIZE],
        };
        let params = json!({"conns": load.conns, "clients": load.clients, "total": chunk,
            "key_size": KEY_SIZE, "val_size": GROW_VAL_SIZE, "key_space_size": chunk * GROW_CHUNKS,
            "chunk": i + 1});
        let workload = Workload {
            name: name.clone(),
            op,
            params,
        };
        let report = load::run(&clients, &load, workload, &name).await?;
        eprintln!(
            "{name}: {:.0} req/s, p50 {:.2} ms, {} errors",
            report.rps(),
            report.ms_at(50.0),
            report.errors.values().sum::<u64>()
        );
        reports.push((name, report));
    }
    Ok(reports)
}

async fn run_workloads(
    args: &SuiteArgs,
    cluster: &mut LocalCluster,
    options: &ClientOptions,
    validator: Option<&Validator>,
) -> Result<Runs> {
    let mut reports = Vec::new();
    let mut rss_after_put = Rss::new();
    let mut disk_after_grow = None;
    let mut catch_up_took = None;
    for name in &args.workloads {
        if name == CATCHUP {
            catch_up_took = Some(catch_up(cluster, options).await?);
            continue;
        }
        if name == WATCH {
            reports.push((name.clone(), watch(args, options).await?));
            continue;
        }
        if name == GROW {
            reports.extend(grow(args, options).await?);
            disk_after_grow = Some(
                (cluster.nodes.iter())
                    .map(|n| (n.name.clone(), n.disk_bytes()))
                    .collect(),
            );
            continue;
        }
        let (conns, clients, total, op, validated) = standard(name, args.scale)?;
        let total = ((total as f64 * args.scale).round() as u64).max(1);
        let load = Load {
            conns,
            clients,
            total,
            rate: 0.0,
        };
        let mut clients = Vec::new();
        for _ in 0..conns {
            clients.push(Client::connect(options.clone()).await?);
        }
        seed(&clients, name, &op, args.scale).await?;
        let params = json!({"conns": conns, "clients": load.clients, "total": total,
            "key_size": KEY_SIZE, "val_size": VAL_SIZE, "key_space_size": KEY_SPACE});
        let workload = Workload {
            name: name.clone(),
            op: op.clone(),
            params,
        };
        let bound = validator.filter(|_| validated);
        if let (Some(v), Op::Put { keys, .. }) = (bound, &op) {
            v.install(&clients[0], &keys.shared_prefix()).await?;
        }
        let report = load::run(&clients, &load, workload, name).await;
        if bound.is_some() {
            Validator::remove(&clients[0]).await?;
        }
        let report = report?;
        eprintln!(
            "{name}: {:.0} req/s, p50 {:.2} ms, {} errors",
            report.rps(),
            report.ms_at(50.0),
            report.errors.values().sum::<u64>()
        );
        // After the plain puts: put100v adds the plugin engine's memory.
        if matches!(op, Op::Put { .. }) && !validated {
            rss_after_put = rss(cluster);
        }
        reports.push((name.clone(), report));
    }
    Ok(Runs {
        reports,
        rss_after_put,
        disk_after_grow,
        catch_up: catch_up_took,
    })
}

fn table(runs: &Runs, rss_end: &Rss) -> String {
    let (reports, rss_after_put) = (&runs.reports, &runs.rss_after_put);
    let mut out = format!(
        "{:<9} {:>5} {:>7} {:>7} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8}\n",
        "workload",
        "conns",
        "clients",
        "total",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms"
    );
    for (name, r) in reports {
        let p = &r.params;
        out.push_str(&format!(
            "{:<9} {:>5} {:>7} {:>7} {:>6} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
            name,
            p["conns"].as_u64().unwrap_or(0),
            p["clients"].as_u64().unwrap_or(0),
            p["total"].as_u64().unwrap_or(0),
            r.errors.values().sum::<u64>(),
            r.rps(),
            r.ms_at(50.0),
            r.ms_at(90.0),
            r.ms_at(99.0),
            r.latencies.max() as f64 / 1000.0,
        ));
    }
    for (when, rss) in [("after puts", rss_after_put), ("at the end", rss_end)] {
        if rss.is_empty() {
            continue;
        }
        let list: Vec<String> = rss
            .iter()
            .map(|(n, kib)| match kib {
                Some(kib) => format!("{n} {:.1} MiB", *kib as f64 / 1024.0),
                None => format!("{n} gone"),
            })
            .collect();
        out.push_str(&format!("etchd RSS {when}: {}\n", list.join(", ")));
    }
    if let Some(disk) = &runs.disk_after_grow {
        let list: Vec<String> = (disk.iter())
            .map(|(n, bytes)| format!("{n} {:.1} MiB", *bytes as f64 / (1024.0 * 1024.0)))
            .collect();
        out.push_str(&format!("etchd disk after {GROW}: {}\n", list.join(", ")));
    }
    if let Some((took, revision)) = runs.catch_up {
        out.push_str(&format!(
            "{CATCHUP}: a new member caught up to revision {revision} in {:.2} s\n",
            took.as_secs_f64()
        ));
    }
    out
}

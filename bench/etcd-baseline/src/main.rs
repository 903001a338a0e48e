//! A load generator speaking etcd's v3 gRPC API through `etcd-client`, with the workload
//! shapes of etcd's own `benchmark` tool. It measures etcd and etch's gRPC front with the
//! same client (`run.sh` starts either), so that the two are compared on equal terms.
//! Prints one line: the op, the load, the throughput and latency percentiles.

use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

#[derive(Clone, Copy, ValueEnum, Debug)]
enum Op {
    Put,
    GetLin,
    GetSer,
    /// A linearizable range of `--limit` keys from key number `--key-offset` (written
    /// before, by a put run with the same offset).
    Range,
}

#[derive(Parser, Debug)]
struct Args {
    /// Client endpoints, comma-separated (host:port, or https://host:port with TLS).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:12379")]
    endpoints: Vec<String>,
    #[arg(long, value_enum, default_value = "put")]
    op: Op,
    /// gRPC connections the clients share.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Concurrent clients, each issuing its requests one after the other.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 1000)]
    total: usize,
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Puts write keys (offset + i) % key_space, sequentially.
    #[arg(long, default_value_t = 10000)]
    key_space: usize,
    /// The first key number (the grow workload's later chunks write new keys).
    #[arg(long, default_value_t = 0)]
    key_offset: usize,
    /// The keys a range reads (its limit).
    #[arg(long, default_value_t = 10000)]
    limit: usize,
    /// The CA that signed the servers' certificates (turns TLS on).
    #[arg(long, requires_all = ["cert", "key"])]
    cacert: Option<std::path::PathBuf>,
    /// This client's certificate (etch: its common name is the user).
    #[arg(long)]
    cert: Option<std::path::PathBuf>,
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// Also append the result as one JSON line to this file, named `--name`: the
    /// throughput in each 100 ms and the latency percentiles (what `etch-bench suite
    /// --baseline` reads to draw etcd beside etch).
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// The workload's name in the JSON line.
    #[arg(long, default_value = "run")]
    name: String,
}

/// The width of the throughput buckets, in milliseconds.
const BUCKET_MS: u128 = 100;

fn options(a: &Args) -> Option<ConnectOptions> {
    let (ca, cert, key) = (a.cacert.as_ref()?, a.cert.as_ref()?, a.key.as_ref()?);
    let read = |p: &std::path::PathBuf| {
        std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    };
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(ca)))
        .identity(Identity::from_pem(read(cert), read(key)));
    Some(ConnectOptions::new().with_tls(tls))
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let mut conns = Vec::new();
    for _ in 0..a.conns {
        let client = Client::connect(a.endpoints.clone(), options(&a))
            .await
            .expect("connect");
        conns.push(client);
    }
    if matches!(a.op, Op::GetLin | Op::GetSer) {
        let mut c = conns[0].clone();
        c.put(key(0, a.key_size), vec![b'v'; a.val_size], None)
            .await
            .expect("the key the gets read");
    }
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let per = a.total / a.clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let mut cl = conns[c % a.conns].clone();
        let hist = hist.clone();
        let (op, ks, vs, space, offset) = (a.op, a.key_size, a.val_size, a.key_space, a.key_offset);
        let limit = a.limit;
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3).expect("histogram");
            let mut timeline: Vec<u64> = Vec::new();
            let val = vec![b'v'; vs];
            for i in 0..per {
                let t = Instant::now();
                match op {
                    Op::Put => {
                        let k = key((offset + c * per + i) % space, ks);
                        cl.put(k, val.clone(), None).await.expect("put");
                    }
                    Op::GetLin => {
                        cl.get(key(0, ks), None).await.expect("get");
                    }
                    Op::GetSer => {
                        let opts = GetOptions::new().with_serializable();
                        cl.get(key(0, ks), Some(opts)).await.expect("get");
                    }
                    Op::Range => {
                        let opts = GetOptions::new()
                            .with_range(key(offset + limit, ks))
                            .with_limit(limit as i64);
                        let got = cl.get(key(offset, ks), Some(opts)).await.expect("range");
                        assert_eq!(got.kvs().len(), limit, "the range's keys are written");
                    }
                }
                local
                    .record(t.elapsed().as_micros() as u64)
                    .expect("record");
                let bucket = (start.elapsed().as_millis() / BUCKET_MS) as usize;
                if timeline.len() <= bucket {
                    timeline.resize(bucket + 1, 0);
                }
                timeline[bucket] += 1;
            }
            hist.lock().await.add(local).expect("merge");
            timeline
        }));
    }
    let mut timeline: Vec<u64> = Vec::new();
    for t in tasks {
        let part = t.await.expect("client task");
        if timeline.len() < part.len() {
            timeline.resize(part.len(), 0);
        }
        for (total, n) in timeline.iter_mut().zip(part) {
            *total += n;
        }
    }
    let el = start.elapsed();
    let h = hist.lock().await;
    let n = per * a.clients;
    println!(
        "op={:?} conns={} clients={} total={} elapsed={:.2}s qps={:.0} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        a.op,
        a.conns,
        a.clients,
        n,
        el.as_secs_f64(),
        n as f64 / el.as_secs_f64(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    if let Some(path) = &a.json_out {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let line = serde_json::json!({
            "name": a.name,
            "requests": n,
            "rps": n as f64 / el.as_secs_f64(),
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99_9": ms(0.999)},
            "bucket_s": BUCKET_MS as f64 / 1000.0,
            "timeline_rps": timeline.iter().map(|n| *n as f64 * 1000.0 / BUCKET_MS as f64).collect::<Vec<_>>(),
        });
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        writeln!(file, "{line}").expect("writing the JSON line");
    }
}

fn key(i: usize, size: usize) -> Vec<u8> {
    format!("{i:0size$}").into_bytes()
}

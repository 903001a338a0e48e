//! `hostile`: the fairness benchmark of issue 12. A validator that burns its whole budget
//! on every call (an endless loop, written in WAT here) is bound to `/hostile/`, and
//! `--hostile-clients` writers hammer that prefix; beside them, a normal workload (puts,
//! then linearizable gets, of keys outside the prefix) runs once before the hostile load
//! starts (the baseline) and once under it. The report is the normal workload's p50 and
//! p99 in both runs and their ratio: the hostile prefix's cost must stay its own.
//!
//! Plugin calls run on the node's plugin threads, a lane per binding holding at most half
//! of them (`host/src/plugin/executor.rs`); reads, leases and watches use tokio's blocking
//! pool, which plugin calls no longer touch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use etch_client::Client;
use serde_json::json;

use crate::load::{self, Load};
use crate::report::Report;
use crate::workload::{Keys, Op, Workload};

/// The hostile binding's name and prefix.
const BINDING: &str = "etch-bench-hostile";
const PREFIX: &str = "/hostile/";

#[derive(Args, Debug)]
pub struct HostileArgs {
    /// Writers hammering the hostile validator's prefix.
    #[arg(long, default_value_t = 100)]
    pub hostile_clients: usize,
    /// The hostile binding's deadline per call, in milliseconds (the plugin loops until
    /// its fuel or this runs out).
    #[arg(long, default_value_t = 200)]
    pub hostile_timeout_ms: u64,
    /// The hostile binding's fuel per call.
    #[arg(long, default_value_t = 50_000_000)]
    pub hostile_fuel: u64,
    /// Concurrent clients of the normal workload.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Requests of each normal workload (puts, then gets) per run.
    #[arg(long, default_value_t = 2000)]
    pub total: u64,
    /// Requests per second of the normal workload, sent on a fixed schedule by at most
    /// `--clients` at once; 0 sends as fast as the clients can. A rate the node keeps up
    /// with measures interference rather than queueing behind the workload's own requests.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

/// Runs the benchmark and prints the comparison (or one JSON object).
pub async fn run(
    args: &HostileArgs,
    options: &etch_client::ClientOptions,
    json: bool,
) -> Result<()> {
    let conns = crate::connect(options, args.clients.clamp(1, 10)).await?;
    let load = Load {
        conns: conns.len(),
        clients: args.clients.max(1),
        total: args.total,
        rate: args.rate,
    };
    let baseline = normal(&conns, &load, "baseline").await?;

    let wasm = looping_validator().context("encoding the looping validator")?;
    conns[0]
        .plugin_install(BINDING, wasm, PREFIX)
        .fuel(args.hostile_fuel)
        .timeout(Duration::from_millis(args.hostile_timeout_ms))
        .await
        .context("installing the looping validator")?;
    let hostile = Hostile::start(options, args.hostile_clients).await?;
    let loaded = normal(&conns, &load, "under hostile load").await;
    let (failed, other) = hostile.stop().await;
    let removed = conns[0].plugin_remove(BINDING).await;
    let loaded = loaded?;
    removed.context("removing the looping validator")?;

    let rows: Vec<_> = baseline
        .iter()
        .zip(&loaded)
        .map(|(b, l)| {
            let ratio = l.ms_at(99.0) / b.ms_at(99.0).max(0.001);
            (b, l, ratio)
        })
        .collect();
    if json {
        let runs: Vec<_> = rows
            .iter()
            .map(|(b, l, ratio)| {
                json!({
                    "workload": b.workload,
                    "baseline": b.json(),
                    "hostile": l.json(),
                    "p99_ratio": ratio,
                })
            })
            .collect();
        let out = json!({
            "hostile_clients": args.hostile_clients,
            "hostile_failures": failed,
            "hostile_other_errors": other,
            "runs": runs,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} writers into a looping validator on {PREFIX} (fuel {}, {} ms): {failed} typed plugin failures, {other} other errors",
        args.hostile_clients, args.hostile_fuel, args.hostile_timeout_ms
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "workload", "base p50 ms", "base p99 ms", "load p50 ms", "load p99 ms", "p99 ratio"
    );
    for (b, l, ratio) in rows {
        println!(
            "{:<10} {:>12.2} {:>12.2} {:>12.2} {:>12.2} {:>10.2}",
            b.workload,
            b.ms_at(50.0),
            b.ms_at(99.0),
            l.ms_at(50.0),
            l.ms_at(99.0),
            ratio
        );
        for (what, report) in [("baseline", b), ("under load", l)] {
            for (message, n) in &report.errors {
                println!("  {} {what}: [{n}] {message}", b.workload);
            }
        }
    }
    Ok(())
}

/// The normal workload: puts of 256 bytes over 1000 keys outside the hostile prefix, then
/// linearizable gets of one of them.
async fn normal(conns: &[Client], load: &Load, label: &str) -> Result<Vec<Report>> {
    let keys = Keys {
        size: 8,
        space: 1000,
        sequential: false,
        offset: 0,
    };
    let put = Workload {
        name: "put".into(),
        op: Op::Put {
            keys,
            value: vec![b'v'; 256],
        },
        params: json!({"clients": load.clients, "total": load.total}),
    };
    let get = Workload {
        name: "get".into(),
        op: Op::Range {
            key: b"00000000".to_vec(),
            end: Vec::new(),
            limit: 0,
            serializable: false,
        },
        params: json!({"clients": load.clients, "total": load.total}),
    };
    Ok(vec![
        load::run(conns, load, put, &format!("put {label}")).await?,
        load::run(conns, load, get, &format!("get {label}")).await?,
    ])
}

/// The writers into the hostile prefix.
struct Hostile {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<()>,
}

impl Hostile {
    /// Starts `n` writers (ten per connection) and waits until calls have failed, so the
    /// plugin threads are busy before the measured run begins.
    async fn start(options: &etch_client::ClientOptions, n: usize) -> Result<Hostile> {
        let conns = crate::connect(options, n.div_ceil(10).max(1)).await?;
        let (stop, failed, other) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let client = conns[i % conns.len()].clone();
            let (stop, failed, other) = (stop.clone(), failed.clone(), other.clone());
            tasks.spawn(async move {
                let key = format!("{PREFIX}{i}");
                while !stop.load(Ordering::Relaxed) {
                    match client.put(key.as_str(), "x").await {
                        Err(etch_client::Error::Server(
                            etch_client::proto::Error::PluginFailed { .. },
                        )) => failed.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => other.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(error = %e, "a hostile write failed otherwise");
                            other.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while failed.load(Ordering::Relaxed) < n.min(16) as u64 {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the hostile writers saw no plugin failures within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Hostile {
            stop,
            failed,
            other,
            tasks,
        })
    }

    /// Stops the writers; returns (typed plugin failures, other outcomes).
    async fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        (
            self.failed.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        )
    }
}

/// A validator component whose `validate` loops for ever.
fn looping_validator() -> Result<Vec<u8>> {
    etch_plugin_encode::wat::component(
        etch_plugin_encode::wat::SPINNING_VALIDATOR,
        "validator@0.1.0",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_looping_validator_encodes() {
        let wasm = super::looping_validator().expect("component");
        assert!(wasm.starts_with(b"\0asm"));
    }
}

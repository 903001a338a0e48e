//! `watch-latency`, as etcd's: `--watchers` watch one key, spread over `--conns`
//! connections; one client puts to that key `--put-total` times at `--put-rate` per second,
//! and every watcher records, for each event, the time since that put was sent. Events on
//! one key arrive in put order, so the n-th event a watcher sees is put n.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use etch_client::ClientOptions;

use crate::connect;
use crate::load::histogram;
use crate::report::Report;

/// The key watched and written.
const KEY: &str = "watch-latency";

#[derive(Args, Debug)]
pub struct WatchLatencyArgs {
    /// Number of watchers.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Connections the watchers are spread over.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Puts per second.
    #[arg(long, default_value_t = 100)]
    pub put_rate: u64,
    /// Number of puts.
    #[arg(long, default_value_t = 1000)]
    pub put_total: u64,
    /// Size of each value, in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
}

impl WatchLatencyArgs {
    pub async fn run(&self, options: &ClientOptions) -> Result<Report> {
        if self.put_rate == 0 {
            bail!("--put-rate must be above 0");
        }
        let conns = connect(options, self.conns.max(1)).await?;
        let writer = connect(options, 1).await?.remove(0);
        let sent: Arc<Vec<OnceLock<Instant>>> =
            Arc::new((0..self.put_total).map(|_| OnceLock::new()).collect());
        let mut watchers = tokio::task::JoinSet::new();
        for w in 0..self.watchers {
            let client = &conns[w % conns.len()];
            let mut watcher = client
                .watch(KEY)
                .await
                .with_context(|| format!("creating watcher {w}"))?;
            let (sent, total) = (sent.clone(), self.put_total);
            watchers.spawn(async move {
                let mut latencies = histogram()?;
                let mut seen = 0u64;
                while seen < total {
                    let Some(response) = watcher.next().await else {
                        bail!("watch ended after {seen} events");
                    };
                    let response = response.context("watching")?;
                    for _ in &response.events {
                        if let Some(at) = sent.get(seen as usize).and_then(OnceLock::get) {
                            let micros = u64::try_from(at.elapsed().as_micros()).unwrap_or(0);
                            latencies.saturating_record(micros.max(1));
                        }
                        seen += 1;
                    }
                }
                anyhow::Ok(latencies)
            });
        }
        let start = Instant::now();
        let value = vec![b'v'; self.val_size];
        let mut errors = BTreeMap::new();
        for i in 0..self.put_total {
            let at = start + Duration::from_secs_f64(i as f64 / self.put_rate as f64);
            tokio::time::sleep_until(at.into()).await;
            let _ = sent[i as usize].set(Instant::now());
            if let Err(e) = writer.put(KEY, value.clone()).await {
                *errors.entry(e.to_string()).or_default() += 1;
            }
        }
        let mut latencies = histogram()?;
        if errors.is_empty() {
            let deadline = Duration::from_secs(30);
            while let Some(joined) = tokio::time::timeout(deadline, watchers.join_next())
                .await
                .context("watchers still missing events 30 s after the last put")?
            {
                latencies.add(joined.context("a watcher task panicked")??)?;
            }
        }
        Ok(Report {
            workload: "watch-latency".into(),
            params: json!({
                "watchers": self.watchers,
                "conns": self.conns,
                "put_rate": self.put_rate,
                "put_total": self.put_total,
                "val_size": self.val_size,
            }),
            latencies,
            errors,
            duration: start.elapsed(),
            // Deliveries are not counted over time: the puts run at a fixed rate.
            timeline: Default::default(),
        })
    }
}

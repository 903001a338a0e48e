//! The load loop: `clients` tasks share `conns` SDK clients and draw request numbers from
//! one counter until `total` are taken, so every run sends exactly `total` requests however
//! uneven the clients are (etcd's benchmark feeds its clients from one channel the same way).
//!
//! With a `rate`, request `i` is not sent before `start + i / rate`: an open-loop schedule
//! shared by all clients. Each task keeps its own histogram; they are merged at the end so
//! that recording never contends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etch_client::Client;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::report::Report;
use crate::workload::Workload;

/// The shape of a run.
#[derive(Clone, Debug)]
pub struct Load {
    /// SDK clients (QUIC connections) to spread the clients over.
    pub conns: usize,
    /// Concurrent request loops.
    pub clients: usize,
    /// Requests in all.
    pub total: u64,
    /// Requests per second over all clients; 0 for no limit.
    pub rate: f64,
}

/// What one client task measured.
struct Measured {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    timeline: Timeline,
}

/// The width of a [`Timeline`]'s buckets.
pub const BUCKET: Duration = Duration::from_millis(100);

/// Requests answered (successfully) in each [`BUCKET`] since the start of a run.
#[derive(Clone, Debug, Default)]
pub struct Timeline(pub Vec<u64>);

impl Timeline {
    fn record(&mut self, since_start: Duration) {
        let i = usize::try_from(since_start.as_millis() / BUCKET.as_millis()).unwrap_or(usize::MAX);
        // A run of hours at most: the buckets of an hour are 36,000.
        if i < 36_000 {
            if self.0.len() <= i {
                self.0.resize(i + 1, 0);
            }
            self.0[i] += 1;
        }
    }

    fn add(&mut self, other: &Timeline) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine += theirs;
        }
    }

    /// Requests per second in each bucket.
    pub fn rates(&self) -> Vec<f64> {
        let per = 1.0 / BUCKET.as_secs_f64();
        self.0.iter().map(|n| *n as f64 * per).collect()
    }
}

/// Latencies are recorded in microseconds, up to an hour, to 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("creating a latency histogram")
}

/// Runs `workload` with the shape `load` over `conns` (at least one) and reports.
/// `label` prefixes the progress bar.
pub async fn run(conns: &[Client], load: &Load, workload: Workload, label: &str) -> Result<Report> {
    anyhow::ensure!(!conns.is_empty(), "no connections to run on");
    let progress = progress_bar(load.total, label);
    let next = Arc::new(AtomicU64::new(0));
    let op = Arc::new(workload.op.clone());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..load.clients {
        let client = conns[c % conns.len()].clone();
        let (next, op, progress) = (next.clone(), op.clone(), progress.clone());
        let (total, rate) = (load.total, load.rate);
        tasks.spawn(async move {
            let mut measured = Measured {
                latencies: histogram()?,
                errors: BTreeMap::new(),
                timeline: Timeline::default(),
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if rate > 0.0 {
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                }
                let sent = Instant::now();
                match op.issue(&client, i).await {
                    Ok(()) => {
                        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        measured.latencies.saturating_record(micros.max(1));
                        measured.timeline.record(start.elapsed());
                    }
                    Err(e) => *measured.errors.entry(e.to_string()).or_default() += 1,
                }
                progress.inc(1);
            }
            anyhow::Ok(measured)
        });
    }
    let mut latencies = histogram()?;
    let mut errors = BTreeMap::new();
    let mut timeline = Timeline::default();
    while let Some(joined) = tasks.join_next().await {
        let measured = joined.context("a client task panicked")??;
        latencies
            .add(&measured.latencies)
            .context("merging latency histograms")?;
        timeline.add(&measured.timeline);
        for (message, n) in measured.errors {
            *errors.entry(message).or_default() += n;
        }
    }
    let duration = start.elapsed();
    progress.finish_and_clear();
    Ok(Report {
        workload: workload.name,
        params: workload.params,
        latencies,
        errors,
        duration,
        timeline,
    })
}

/// A bar on stderr; indicatif hides it when stderr is not a terminal.
fn progress_bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!(
        "{label}{}[{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}",
        if label.is_empty() { "" } else { " " }
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

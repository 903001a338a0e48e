//! The result of a run, printed as etcd's benchmark prints it (`Summary:`, a response time
//! histogram of ten buckets between the fastest and the slowest request, the latency
//! distribution, the error distribution) or as one JSON object with `--json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

/// The percentiles etcd's benchmark prints.
const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

/// A finished run: latencies of the successful requests (microseconds) and the failures.
#[derive(Debug)]
pub struct Report {
    pub workload: String,
    pub params: Value,
    pub latencies: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    pub duration: Duration,
    /// Requests answered per [`crate::load::BUCKET`] of the run.
    pub timeline: crate::load::Timeline,
}

/// The machine-readable form (`--json`).
#[derive(Debug, Serialize)]
pub struct Json {
    pub workload: String,
    pub params: Value,
    pub requests: u64,
    pub errors: u64,
    pub duration_s: f64,
    pub rps: f64,
    pub latency_ms: BTreeMap<String, f64>,
    pub error_messages: BTreeMap<String, u64>,
    /// Requests per second in each `bucket_s` of the run.
    pub timeline_rps: Vec<f64>,
    pub bucket_s: f64,
}

impl Report {
    /// Successful requests.
    pub fn requests(&self) -> u64 {
        self.latencies.len()
    }

    /// Successful requests per second of the whole run.
    pub fn rps(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.requests() as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency at `percentile` (0–100), in milliseconds.
    pub fn ms_at(&self, percentile: f64) -> f64 {
        self.latencies.value_at_percentile(percentile) as f64 / 1000.0
    }

    pub fn json(&self) -> Json {
        let h = &self.latencies;
        let mut latency_ms = BTreeMap::new();
        for (name, micros) in [
            ("min", h.min() as f64),
            ("mean", h.mean()),
            ("stddev", h.stdev()),
            ("max", h.max() as f64),
        ] {
            latency_ms.insert(name.to_owned(), micros / 1000.0);
        }
        for p in PERCENTILES {
            let name = format!("p{}", p.to_string().replace('.', "_"));
            latency_ms.insert(name, self.ms_at(p));
        }
        Json {
            workload: self.workload.clone(),
            params: self.params.clone(),
            requests: self.requests(),
            errors: self.errors.values().sum(),
            duration_s: self.duration.as_secs_f64(),
            rps: self.rps(),
            latency_ms,
            error_messages: self.errors.clone(),
            timeline_rps: self.timeline.rates(),
            bucket_s: crate::load::BUCKET.as_secs_f64(),
        }
    }

    /// Prints the summary, or the JSON object, on stdout.
    pub fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string(&self.json())?);
        } else {
            print!("{}", self.summary());
        }
        Ok(())
    }

    /// etcd benchmark's text report.
    pub fn summary(&self) -> String {
        let h = &self.latencies;
        let secs = |micros: f64| micros / 1e6;
        let mut out = String::new();
        let _ = writeln!(out, "\nSummary:");
        let _ = writeln!(out, "  Total:\t{:.4} secs.", self.duration.as_secs_f64());
        if h.is_empty() {
            let _ = writeln!(out, "  (no request succeeded)");
        } else {
            let _ = writeln!(out, "  Slowest:\t{:.4} secs.", secs(h.max() as f64));
            let _ = writeln!(out, "  Fastest:\t{:.4} secs.", secs(h.min() as f64));
            let _ = writeln!(out, "  Average:\t{:.4} secs.", secs(h.mean()));
            let _ = writeln!(out, "  Stddev:\t{:.4} secs.", secs(h.stdev()));
        }
        let _ = writeln!(out, "  Requests/sec:\t{:.4}", self.rps());
        if !h.is_empty() {
            out.push_str(&self.histogram_text());
            let _ = writeln!(out, "\nLatency distribution:");
            for p in PERCENTILES {
                let at = secs(h.value_at_percentile(p) as f64);
                let _ = writeln!(out, "  {p}% in {at:.4} secs.");
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\nError distribution:");
            for (message, n) in &self.errors {
                let _ = writeln!(out, "  [{n}]\t{message}");
            }
        }
        out
    }

    /// Ten equal buckets from the fastest to the slowest request, bars of up to 40 marks.
    fn histogram_text(&self) -> String {
        const BUCKETS: usize = 10;
        const BAR: u64 = 40;
        let h = &self.latencies;
        let (fastest, slowest) = (h.min() as f64, h.max() as f64);
        let step = (slowest - fastest) / BUCKETS as f64;
        let mut bounds: Vec<f64> = (0..BUCKETS).map(|i| fastest + step * i as f64).collect();
        bounds.push(slowest);
        let mut counts = vec![0u64; bounds.len()];
        for v in h.iter_recorded() {
            let at = h.highest_equivalent(v.value_iterated_to()) as f64;
            let i = bounds.iter().position(|b| at <= *b).unwrap_or(BUCKETS);
            counts[i] += v.count_at_value();
        }
        let max = counts.iter().copied().max().unwrap_or(0).max(1);
        let mut out = String::from("\nResponse time histogram:\n");
        for (bound, count) in bounds.iter().zip(&counts) {
            let bar = "∎".repeat(usize::try_from(count * BAR / max).unwrap_or(0));
            let _ = writeln!(out, "  {:.4} [{count}]\t|{bar}", bound / 1e6);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_json_have_etcds_fields() {
        let mut latencies = crate::load::histogram().expect("histogram");
        for micros in 1000..2000 {
            latencies.record(micros).expect("record");
        }
        let report = Report {
            workload: "put".into(),
            params: serde_json::json!({"clients": 1}),
            latencies,
            errors: BTreeMap::from([("timed out".to_owned(), 2)]),
            duration: Duration::from_secs(2),
            timeline: crate::load::Timeline(vec![5, 0, 3]),
        };
        let text = report.summary();
        for needle in [
            "Summary:",
            "Slowest:",
            "Fastest:",
            "Average:",
            "Stddev:",
            "Requests/sec:\t500.0000",
            "Response time histogram:",
            "99.9% in 0.0020 secs.",
            "[2]\ttimed out",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        let json = serde_json::to_value(report.json()).expect("json");
        assert_eq!(json["requests"], 1000);
        assert_eq!(json["errors"], 2);
        assert!(json["latency_ms"]["p99_9"].as_f64().is_some(), "{json}");
        // Requests per second in each 100 ms bucket.
        assert_eq!(json["timeline_rps"], serde_json::json!([50.0, 0.0, 30.0]));
        assert_eq!(json["bucket_s"], 0.1);
    }
}

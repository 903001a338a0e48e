//! `etch-bench suite --plot FILE.svg`: per workload, the throughput over the run and the
//! latency percentiles, etch's beside the etcd baseline's when one is given
//! (`--baseline`, the JSON lines `bench/etcd-baseline/run.sh` writes with `OUT=FILE`).

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde_json::Value;

use crate::report::Report;

/// The percentiles drawn, by name.
const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

/// One workload's run, as drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    /// The width of each throughput bucket, in seconds.
    pub bucket_s: f64,
    /// Requests per second in each bucket.
    pub rates: Vec<f64>,
    /// Latency at each of [`PERCENTILES`], in milliseconds.
    pub latency_ms: [f64; 4],
}

impl Series {
    pub fn of(name: &str, report: &Report) -> Series {
        Series {
            name: name.to_owned(),
            bucket_s: crate::load::BUCKET.as_secs_f64(),
            rates: report.timeline.rates(),
            latency_ms: PERCENTILES.map(|(_, p)| report.ms_at(p)),
        }
    }

    /// One JSON line of the etcd baseline (`etcdbench --json-out`).
    fn from_json(line: &Value) -> Result<Series> {
        let name = line["name"].as_str().context("no name")?.to_owned();
        let number = |v: &Value, what: &str| v.as_f64().with_context(|| format!("no {what}"));
        let rates = (line["timeline_rps"]
            .as_array()
            .context("no timeline_rps")?
            .iter())
        .map(|v| number(v, "rate"))
        .collect::<Result<Vec<f64>>>()?;
        let latency = &line["latency_ms"];
        Ok(Series {
            name,
            bucket_s: number(&line["bucket_s"], "bucket_s")?,
            rates,
            latency_ms: [
                number(&latency["p50"], "p50")?,
                number(&latency["p90"], "p90")?,
                number(&latency["p99"], "p99")?,
                number(&latency["p99_9"], "p99_9")?,
            ],
        })
    }
}

/// Reads the etcd baseline's JSON lines.
pub fn read_baseline(path: &Path) -> Result<Vec<Series>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the baseline {}", path.display()))?;
    (text.lines().filter(|l| !l.trim().is_empty()).enumerate())
        .map(|(i, line)| {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
            Series::from_json(&value).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

/// Draws one row per workload (etch's in its order, then any only the baseline ran): the
/// throughput over time on the left, the latency percentiles on the right.
pub fn draw(path: &Path, etch: &[Series], etcd: &[Series]) -> Result<()> {
    let mut names: Vec<&str> = etch.iter().map(|s| s.name.as_str()).collect();
    for s in etcd {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    if names.is_empty() {
        return Err(anyhow!("nothing to plot: no workload ran"));
    }
    let rows = names.len();
    let height = u32::try_from(240 * rows).unwrap_or(u32::MAX);
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plotting)?;
    let panels = root.split_evenly((rows, 2));
    for (row, name) in names.iter().enumerate() {
        let find = |all: &[Series]| all.iter().find(|s| s.name == *name).cloned();
        let runs = [("etch", find(etch), BLUE), ("etcd", find(etcd), RED)];
        throughput(&panels[2 * row], name, &runs)?;
        latency(&panels[2 * row + 1], name, &runs)?;
    }
    root.present()
        .map_err(plotting)
        .with_context(|| format!("writing {}", path.display()))
}

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Run = (&'static str, Option<Series>, RGBColor);

/// At most this many points per throughput line: longer runs are drawn with buckets merged
/// (averaged), so that a run of a minute reads as a line rather than as noise.
const MAX_POINTS: usize = 120;

/// `s`'s throughput as (seconds, requests/s) points, adjacent buckets averaged down to at
/// most [`MAX_POINTS`].
fn points(s: &Series) -> Vec<(f64, f64)> {
    let merge = s.rates.len().div_ceil(MAX_POINTS).max(1);
    (s.rates.chunks(merge).enumerate())
        .map(|(i, chunk)| {
            let width = chunk.len() as f64 * s.bucket_s;
            let at = (i * merge) as f64 * s.bucket_s + width / 2.0;
            (at, chunk.iter().sum::<f64>() / chunk.len() as f64)
        })
        .collect()
}

fn throughput(panel: &Panel<'_>, name: &str, runs: &[Run]) -> Result<()> {
    let drawn = runs.iter().filter_map(|(_, s, _)| s.as_ref());
    if drawn.clone().all(|s| s.rates.is_empty()) {
        // watch1000: its puts are paced; what it measures is the latency.
        panel
            .titled(
                &format!("{name}: paced load, no throughput series"),
                ("sans-serif", 15),
            )
            .map_err(plotting)?;
        return Ok(());
    }
    let (mut secs, mut top) = (0.1f64, 1.0f64);
    for s in drawn {
        secs = secs.max(s.rates.len() as f64 * s.bucket_s);
        top = top.max(s.rates.iter().copied().fold(0.0, f64::max));
    }
    let mut chart = ChartBuilder::on(panel)
        .caption(
            format!("{name}: requests/s over the run"),
            ("sans-serif", 15),
        )
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..secs, 0f64..top * 1.1)
        .map_err(plotting)?;
    chart
        .configure_mesh()
        .x_desc("s")
        .light_line_style(WHITE)
        .draw()
        .map_err(plotting)?;
    for (label, series, color) in runs {
        let Some(s) = series else { continue };
        chart
            .draw_series(LineSeries::new(points(s), color))
            .map_err(plotting)?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    legend(&mut chart)
}

fn latency(panel: &Panel<'_>, name: &str, runs: &[Run]) -> Result<()> {
    let top = (runs.iter().filter_map(|(_, s, _)| s.as_ref()))
        .flat_map(|s| s.latency_ms)
        .fold(0.1f64, f64::max);
    let mut chart = ChartBuilder::on(panel)
        .caption(format!("{name}: latency (ms)"), ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(55)
        .build_cartesian_2d(
            (0usize..PERCENTILES.len()).into_segmented(),
            0f64..top * 1.1,
        )
        .map_err(plotting)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                PERCENTILES.get(*i).map_or("", |(n, _)| n).to_owned()
            }
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(plotting)?;
    for (label, series, color) in runs {
        let Some(s) = series else { continue };
        let points: Vec<(SegmentValue<usize>, f64)> = (s.latency_ms.iter().enumerate())
            .map(|(i, ms)| (SegmentValue::CenterOf(i), *ms))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color))
            .map_err(plotting)?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(plotting)?;
    }
    legend(&mut chart)
}

/// Draws the legend of `chart`'s labelled series.
fn legend<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
) -> Result<()>
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(plotting)
}

fn plotting<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, scale: f64) -> Series {
        Series {
            name: name.into(),
            bucket_s: 0.1,
            rates: vec![100.0 * scale, 250.0 * scale, 180.0 * scale],
            latency_ms: [1.0 * scale, 2.0 * scale, 4.0 * scale, 9.0 * scale],
        }
    }

    #[test]
    fn long_runs_are_drawn_with_merged_buckets() {
        let mut long = series("grow1", 1.0);
        long.rates = vec![10.0; 2 * MAX_POINTS + 1];
        long.rates[0] = 40.0;
        let drawn = points(&long);
        assert!(drawn.len() <= MAX_POINTS, "{} points", drawn.len());
        // Three buckets a point: the first averages 40, 10 and 10, centred on 0.15 s.
        assert!((drawn[0].0 - 0.15).abs() < 1e-9, "{:?}", drawn[0]);
        assert_eq!(drawn[0].1, 20.0);
        assert_eq!(points(&series("put1", 1.0)).len(), 3);
    }

    #[test]
    fn baseline_lines_read_back_as_series() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etcd.jsonl");
        let line = r#"{"bucket_s":0.1,"latency_ms":{"p50":1.0,"p90":2.0,"p99":4.0,"p99_9":9.0},"name":"put1","requests":3,"rps":176.0,"timeline_rps":[100.0,250.0,180.0]}"#;
        std::fs::write(&path, format!("{line}\n\n")).expect("write");
        assert_eq!(
            read_baseline(&path).expect("read"),
            vec![series("put1", 1.0)]
        );
        std::fs::write(&path, "{\"name\": \"put1\"}\n").expect("write");
        let err = read_baseline(&path).expect_err("a line without figures");
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    }

    #[test]
    fn every_workload_gets_a_row_with_both_systems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("suite.svg");
        let etch = [series("put100", 2.0), series("watch1000", 1.0)];
        let etcd = [series("put100", 1.0), series("grow1", 1.0)];
        draw(&path, &etch, &etcd).expect("draw");
        let svg = std::fs::read_to_string(&path).expect("svg");
        for caption in [
            "put100: requests/s over the run",
            "watch1000: latency (ms)",
            "grow1: requests/s over the run",
        ] {
            assert!(svg.contains(caption), "{caption} missing");
        }
        // Each legend entry is a text element of its own line.
        assert_eq!(
            svg.matches("\netch\n</text>").count(),
            4,
            "etch in 4 legends"
        );
        assert_eq!(
            svg.matches("\netcd\n</text>").count(),
            4,
            "etcd in 4 legends"
        );
        assert!(draw(&path, &[], &[]).is_err());
    }
}

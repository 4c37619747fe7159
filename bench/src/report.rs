//! Results: the JSON result file, the final table, `compare`, SVG plots (drawn by `plot`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::plot::{line_chart, Series, XAxis};
use crate::scenario::Workload;
use crate::stats::{IntervalPoint, LatencySummary};

/// Throughput of one direction over the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Records in the window.
    pub records: u64,
    /// Key + value bytes in the window.
    pub bytes: u64,
    /// Records/s.
    pub records_per_s: f64,
    /// MB/s (10^6 bytes).
    pub mb_per_s: f64,
}

/// What the broker holds at the end, checked against what was acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerCheck {
    /// Per partition: `topic`, `partition`, log start, high watermark, records acknowledged,
    /// highest acknowledged offset + 1 (-1 when unknown, e.g. acks=0).
    pub partitions: Vec<PartitionCheck>,
    /// Sum over partitions of the high watermark: the offsets the broker assigned in the run's
    /// new topics (retention may have moved the log start since, so not high watermark − log
    /// start).
    pub broker_records: u64,
    /// Records acknowledged over the whole run (preload, warm-up, measure, drain).
    pub acked_records: u64,
    /// Whether every partition's high watermark equals its acknowledged end and the record
    /// counts match.
    pub consistent: bool,
    /// Seconds the high watermarks took, after the producers stopped, to hold everything
    /// produced (or to stop moving): replicas catching up with acks=1, acks=0 appends landing.
    #[serde(default)]
    pub settle_s: f64,
}

/// One partition of [`BrokerCheck`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionCheck {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Log start offset.
    pub log_start: i64,
    /// High watermark.
    pub high_watermark: i64,
    /// Records acknowledged to the bench.
    pub acked: u64,
    /// Highest acknowledged offset + 1.
    pub acked_end: i64,
}

/// The result of one run (one scenario variant).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Format version.
    pub format: u32,
    /// Scenario name.
    pub scenario: String,
    /// Variant name.
    pub variant: String,
    /// Bootstrap address.
    pub bootstrap: String,
    /// The command line.
    pub command: String,
    /// Start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// When the timeline's (and the HdrHistogram log's) clock starts, ms since the Unix epoch:
    /// after topic creation and client set-up, so later than `started_unix_ms`. A point at
    /// `t_s` covers the `dt_s` before this plus `t_s`.
    #[serde(default)]
    pub timeline_start_unix_ms: u64,
    /// The workload as run.
    pub workload: Option<Workload>,
    /// Topics used.
    pub topics: Vec<String>,
    /// Open loop target in records/s (None: closed loop).
    pub target_records_per_s: Option<f64>,
    /// Length of the measured window in seconds (actual).
    pub measured_s: f64,
    /// Produce throughput (acknowledged) in the window.
    pub produce: Throughput,
    /// Consume throughput in the window.
    pub consume: Throughput,
    /// Publish latency (send → ack), from the due time in open loop (corrected).
    pub publish_latency: LatencySummary,
    /// Publish latency from the actual send call (uncorrected).
    pub publish_latency_uncorrected: LatencySummary,
    /// The queueing part of publish latency: from the due time to the record's Produce request
    /// being queued on the connection (linger, the sender, an in-flight slot).
    #[serde(default)]
    pub publish_queue_latency: LatencySummary,
    /// Produce requests, one sample per batch: from being queued on the connection to the
    /// outcome (socket, broker, response).
    #[serde(default)]
    pub produce_request_latency: LatencySummary,
    /// End-to-end latency (timestamp in the record → consumed).
    pub e2e_latency: LatencySummary,
    /// Percentile spectrum of publish latency `(percentile, ms)`.
    pub publish_spectrum: Vec<(f64, f64)>,
    /// Percentile spectrum of end-to-end latency.
    pub e2e_spectrum: Vec<(f64, f64)>,
    /// Records acknowledged over the whole run.
    pub produced_total: u64,
    /// Records consumed over the whole run.
    pub consumed_total: u64,
    /// Records in failed batches over the whole run.
    pub failed_total: u64,
    /// Error counts by Kafka error name (batches / fetches).
    pub errors: BTreeMap<String, u64>,
    /// Time series (one point per interval).
    pub timeline: Vec<IntervalPoint>,
    /// End-of-run check against the broker.
    pub broker_check: BrokerCheck,
    /// Files written beside the JSON (HdrHistogram log, plots).
    pub files: Vec<String>,
}

fn row(out: &mut String, label: &str, s: &LatencySummary) {
    let _ = writeln!(
        out,
        "{label:<22} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.p9999_ms, s.max_ms
    );
}

/// The final table.
pub fn table(r: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== {} / {}  ({} s measured{})",
        r.scenario,
        r.variant,
        fmt2(r.measured_s),
        match r.target_records_per_s {
            Some(t) => format!(", open loop {t:.0} rec/s"),
            None => ", closed loop".into(),
        }
    );
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    row(&mut out, "publish", &r.publish_latency);
    if r.target_records_per_s.is_some() {
        row(
            &mut out,
            "publish (uncorrected)",
            &r.publish_latency_uncorrected,
        );
    }
    if r.publish_queue_latency.count > 0 {
        row(&mut out, " of which queued", &r.publish_queue_latency);
    }
    if r.produce_request_latency.count > 0 {
        row(&mut out, "produce request", &r.produce_request_latency);
    }
    if r.e2e_latency.count > 0 {
        row(&mut out, "end-to-end", &r.e2e_latency);
    }
    let _ = writeln!(
        out,
        "{:<22} {:>12} {:>12} {:>14}",
        "throughput", "records/s", "MB/s", "records"
    );
    for (label, t) in [("produce", &r.produce), ("consume", &r.consume)] {
        if t.records > 0 || label == "produce" {
            let _ = writeln!(
                out,
                "{label:<22} {:>12.0} {:>12.2} {:>14}",
                t.records_per_s, t.mb_per_s, t.records
            );
        }
    }
    if r.errors.is_empty() {
        let _ = writeln!(out, "errors: none");
    } else {
        let e: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "errors: {}", e.join(", "));
    }
    let c = &r.broker_check;
    let _ = writeln!(
        out,
        "broker check: acked {} records, broker holds {} ({})",
        c.acked_records,
        c.broker_records,
        if c.consistent {
            "consistent"
        } else {
            "MISMATCH"
        }
    );
    out
}

fn fmt2(v: f64) -> String {
    format!("{v:.2}")
}

fn ratio(a: f64, b: f64) -> String {
    if a == 0.0 {
        "-".into()
    } else {
        format!("{:.3}", b / a)
    }
}

/// Side-by-side comparison of two results with ratios (b / a).
pub fn compare(a: &RunResult, b: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "a: {} / {} ({})", a.scenario, a.variant, a.bootstrap);
    let _ = writeln!(out, "b: {} / {} ({})", b.scenario, b.variant, b.bootstrap);
    let _ = writeln!(out, "{:<28} {:>14} {:>14} {:>9}", "metric", "a", "b", "b/a");
    let mut line = |name: &str, x: f64, y: f64| {
        let _ = writeln!(out, "{name:<28} {x:>14.3} {y:>14.3} {:>9}", ratio(x, y));
    };
    line(
        "produce records/s",
        a.produce.records_per_s,
        b.produce.records_per_s,
    );
    line("produce MB/s", a.produce.mb_per_s, b.produce.mb_per_s);
    line(
        "consume records/s",
        a.consume.records_per_s,
        b.consume.records_per_s,
    );
    line("consume MB/s", a.consume.mb_per_s, b.consume.mb_per_s);
    for (label, x, y) in [
        ("publish", &a.publish_latency, &b.publish_latency),
        (
            "publish queued",
            &a.publish_queue_latency,
            &b.publish_queue_latency,
        ),
        (
            "produce request",
            &a.produce_request_latency,
            &b.produce_request_latency,
        ),
        ("e2e", &a.e2e_latency, &b.e2e_latency),
    ] {
        line(&format!("{label} p50 ms"), x.p50_ms, y.p50_ms);
        line(&format!("{label} p90 ms"), x.p90_ms, y.p90_ms);
        line(&format!("{label} p99 ms"), x.p99_ms, y.p99_ms);
        line(&format!("{label} p99.9 ms"), x.p999_ms, y.p999_ms);
        line(&format!("{label} p99.99 ms"), x.p9999_ms, y.p9999_ms);
        line(&format!("{label} max ms"), x.max_ms, y.max_ms);
    }
    let ea: u64 = a.errors.values().sum();
    let eb: u64 = b.errors.values().sum();
    line("errors", ea as f64, eb as f64);
    out
}

/// The three plots of a result: (file suffix, svg).
pub fn plots(r: &RunResult) -> anyhow::Result<Vec<(&'static str, String)>> {
    let label = format!("{} / {}", r.scenario, r.variant);
    let mut out = Vec::new();
    let mut spec = Vec::new();
    if !r.publish_spectrum.is_empty() {
        spec.push(Series {
            name: "publish",
            color: "#1f77b4",
            points: r.publish_spectrum.clone(),
        });
    }
    if !r.e2e_spectrum.is_empty() {
        spec.push(Series {
            name: "end-to-end",
            color: "#d62728",
            points: r.e2e_spectrum.clone(),
        });
    }
    out.push((
        "spectrum.svg",
        line_chart(
            &format!("latency by percentile: {label}"),
            "percentile",
            "latency (ms)",
            &spec,
            XAxis::Spectrum,
        )?,
    ));
    let pts = |f: &dyn Fn(&IntervalPoint) -> f64| -> Vec<(f64, f64)> {
        r.timeline.iter().map(|p| (p.t_s, f(p))).collect()
    };
    out.push((
        "throughput.svg",
        line_chart(
            &format!("throughput over time: {label}"),
            "seconds",
            "MB/s",
            &[
                Series {
                    name: "produce",
                    color: "#1f77b4",
                    points: pts(&|p| p.produce_mbps),
                },
                Series {
                    name: "consume",
                    color: "#2ca02c",
                    points: pts(&|p| p.consume_mbps),
                },
            ],
            XAxis::Linear,
        )?,
    ));
    out.push((
        "latency.svg",
        line_chart(
            &format!("latency over time: {label}"),
            "seconds",
            "ms",
            &[
                Series {
                    name: "publish p50",
                    color: "#9ecae1",
                    points: pts(&|p| p.publish.p50_ms),
                },
                Series {
                    name: "publish p99",
                    color: "#1f77b4",
                    points: pts(&|p| p.publish.p99_ms),
                },
                Series {
                    name: "publish max",
                    color: "#08306b",
                    points: pts(&|p| p.publish.max_ms),
                },
                Series {
                    name: "e2e p99",
                    color: "#d62728",
                    points: pts(&|p| p.e2e.p99_ms),
                },
            ],
            XAxis::Linear,
        )?,
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_prints_ratios() {
        let mut a = RunResult::default();
        a.produce.mb_per_s = 100.0;
        a.publish_latency.p99_ms = 2.0;
        let mut b = a.clone();
        b.produce.mb_per_s = 150.0;
        b.publish_latency.p99_ms = 1.0;
        let s = compare(&a, &b);
        let line = s
            .lines()
            .find(|l| l.starts_with("produce MB/s"))
            .expect("line");
        assert!(line.trim_end().ends_with("1.500"), "{line}");
        let line = s
            .lines()
            .find(|l| l.starts_with("publish p99 ms"))
            .expect("line");
        assert!(line.trim_end().ends_with("0.500"), "{line}");
        let line = s
            .lines()
            .find(|l| l.starts_with("consume MB/s"))
            .expect("line");
        assert!(line.trim_end().ends_with('-'), "{line}");
    }

    #[test]
    fn plots_have_their_series() {
        let mut r = RunResult {
            scenario: "s".into(),
            variant: "v".into(),
            ..Default::default()
        };
        r.publish_spectrum = vec![(0.0, 1.0), (50.0, 2.0), (99.9, 8.0)];
        r.e2e_spectrum = vec![(0.0, 1.5), (50.0, 2.5), (99.9, 9.0)];
        r.timeline = (1..=3)
            .map(|i| IntervalPoint {
                t_s: i as f64,
                dt_s: 1.0,
                phase: crate::stats::Phase::Measure,
                produce_rps: 0.0,
                produce_mbps: 10.0 * i as f64,
                consume_rps: 0.0,
                consume_mbps: 0.0,
                publish: LatencySummary::default(),
                e2e: LatencySummary::default(),
                errors: 0,
            })
            .collect();
        let plots = plots(&r).expect("plots");
        let names: Vec<&str> = plots.iter().map(|p| p.0).collect();
        assert_eq!(names, ["spectrum.svg", "throughput.svg", "latency.svg"]);
        for (name, svg) in &plots {
            let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
            let lines = doc
                .descendants()
                .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
                .count();
            let want = match *name {
                "spectrum.svg" => 2,
                "throughput.svg" => 2,
                _ => 4,
            };
            assert_eq!(lines, want, "{name}");
        }
        assert!(plots[0].1.contains("end-to-end"));
    }

    #[test]
    fn result_json_round_trip() {
        let mut r = RunResult {
            scenario: "s".into(),
            ..Default::default()
        };
        r.errors.insert("NotLeaderOrFollower".into(), 3);
        r.publish_spectrum = vec![(50.0, 1.0)];
        let j = serde_json::to_string(&r).expect("json");
        let back: RunResult = serde_json::from_str(&j).expect("parse");
        assert_eq!(back, r);
        assert!(table(&r).contains("NotLeaderOrFollower=3"));
    }
}

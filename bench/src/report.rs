//! Results: the JSON result file, the final table, `compare`, SVG plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

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

/// A series of a line chart.
pub struct Series<'a> {
    /// Legend.
    pub name: &'a str,
    /// Stroke color.
    pub color: &'a str,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

/// X axis of the percentile spectrum: percentile p is drawn at log10(1 / (1 - p/100)).
fn spectrum_x(p: f64) -> f64 {
    let q = (1.0 - p / 100.0).max(1e-7);
    (1.0 / q).log10()
}

/// A small hand-written SVG line chart. With `spectrum_axis`, x values are percentiles drawn
/// on the usual "1/(1-p)" log scale.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    spectrum_axis: bool,
) -> String {
    let (w, h) = (800.0, 420.0);
    let (l, r, t, b) = (70.0, 150.0, 40.0, 50.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let xf = |x: f64| if spectrum_axis { spectrum_x(x) } else { x };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(x, y)| (xf(x), y)))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let xmin = if spectrum_axis {
        0.0
    } else {
        all.iter()
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min)
            .min(0.0)
    };
    let xmax = all
        .iter()
        .map(|p| p.0)
        .fold(0.0f64, f64::max)
        .max(xmin + 1e-9);
    let ymax = nice_max(all.iter().map(|p| p.1).fold(0.0f64, f64::max));
    let sx = |x: f64| l + (x - xmin) / (xmax - xmin) * pw;
    let sy = |y: f64| t + ph - (y / ymax) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        esc(title)
    );
    // Grid and y ticks.
    for i in 0..=5 {
        let yv = ymax * i as f64 / 5.0;
        let y = sy(yv);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            l + pw,
            l - 6.0,
            y + 4.0,
            short(yv)
        );
    }
    // X ticks.
    if spectrum_axis {
        for (p, label) in [
            (0.0, "0%"),
            (90.0, "90%"),
            (99.0, "99%"),
            (99.9, "99.9%"),
            (99.99, "99.99%"),
            (99.999, "99.999%"),
        ] {
            let x = sx(spectrum_x(p));
            if spectrum_x(p) <= xmax + 1e-9 {
                let _ = writeln!(
                    s,
                    r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                    t + ph,
                    t + ph + 16.0
                );
            }
        }
    } else {
        for i in 0..=5 {
            let xv = xmin + (xmax - xmin) * i as f64 / 5.0;
            let x = sx(xv);
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                t + ph + 16.0,
                short(xv)
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        h - 12.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        t + ph / 2.0,
        t + ph / 2.0,
        esc(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| (xf(x), y))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        if !pts.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                se.color,
                pts.join(" ")
            );
        }
        let ly = t + 14.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            l + pw + 10.0,
            l + pw + 30.0,
            se.color,
            l + pw + 35.0,
            ly + 4.0,
            esc(se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The three plots of a result: (file suffix, svg).
pub fn plots(r: &RunResult) -> Vec<(&'static str, String)> {
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
            true,
        ),
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
            false,
        ),
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
            false,
        ),
    ));
    out
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
    fn svg_is_well_formed_enough() {
        let svg = line_chart(
            "t <1>",
            "x",
            "y",
            &[Series {
                name: "a",
                color: "red",
                points: vec![(0.0, 1.0), (99.0, 5.0), (99.99, 9.0)],
            }],
            true,
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains("<polyline"));
        assert!((spectrum_x(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(0.0), 1.0);
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

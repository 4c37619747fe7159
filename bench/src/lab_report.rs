//! The tuning lab's report (`shardlog-bench report DIR`, also the last step of `tune`): reads a
//! results folder ([`crate::lab`]) and writes `summary.json`, `REPORT.md` and the plots.
//!
//! Everything is computed from the files in the folder (no clock, no host lookups), so the same
//! folder always gives the same report: the golden tests in `bench/tests/lab_report.rs` rely
//! on it.
//!
//! Figures per cell are the median over its repetitions (mean of the middle two for an even
//! count) with the spread min–max; the recommended profiles come from those medians by the rule
//! in [`PROFILE_RULE`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::experiment::{parse_experiment, Acks, Cell, Experiment, Flush, Target};
use crate::guarantees::{survives, Guarantee};
use crate::lab_files::{rep_path, Limits, Session};
use crate::plot::{heatmap, line_chart, scatter_log_x, ScatterGroup, Series, XAxis, PALETTE};
use crate::report::RunResult;

/// The rule the profiles are chosen by (printed in the report).
pub const PROFILE_RULE: &str = "Each profile is the measured configuration with the highest median produce \
throughput among those that survive its failures; configurations within 5% of that throughput count as \
equal, and among them the lowest median publish p99 wins (then the first in matrix order). \
*durable*: survives the loss of one machine for good and power loss of every machine at once; \
*balanced*: survives the loss of one machine for good and a kill -9 of every broker (power loss of every \
machine may lose the unsynced tail); *fast*: anything, acks=0 included.";

/// Throughputs within this fraction of the best count as equal when choosing a profile.
const TIE: f64 = 0.05;

/// The figures of one run, or the median / min / max over runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Produce MB/s (acknowledged; for acks=0, sent).
    pub produce_mb_per_s: f64,
    /// Consume MB/s.
    pub consume_mb_per_s: f64,
    /// Publish latency p50, ms.
    pub publish_p50_ms: f64,
    /// p99.
    pub publish_p99_ms: f64,
    /// p99.9.
    pub publish_p999_ms: f64,
    /// End-to-end latency p50, ms.
    pub e2e_p50_ms: f64,
    /// p99.
    pub e2e_p99_ms: f64,
    /// p99.9.
    pub e2e_p999_ms: f64,
}

impl Figures {
    /// A figure by its `summary.json` name ([`crate::experiment::TARGET_METRICS`]).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "produce_mb_per_s" => self.produce_mb_per_s,
            "consume_mb_per_s" => self.consume_mb_per_s,
            "publish_p50_ms" => self.publish_p50_ms,
            "publish_p99_ms" => self.publish_p99_ms,
            "publish_p999_ms" => self.publish_p999_ms,
            "e2e_p50_ms" => self.e2e_p50_ms,
            "e2e_p99_ms" => self.e2e_p99_ms,
            "e2e_p999_ms" => self.e2e_p999_ms,
            _ => return None,
        })
    }

    fn of(r: &RunResult) -> Figures {
        Figures {
            produce_mb_per_s: r.produce.mb_per_s,
            consume_mb_per_s: r.consume.mb_per_s,
            publish_p50_ms: r.publish_latency.p50_ms,
            publish_p99_ms: r.publish_latency.p99_ms,
            publish_p999_ms: r.publish_latency.p999_ms,
            e2e_p50_ms: r.e2e_latency.p50_ms,
            e2e_p99_ms: r.e2e_latency.p99_ms,
            e2e_p999_ms: r.e2e_latency.p999_ms,
        }
    }
}

/// A metric of the report: name, unit, getter, whether higher is better.
struct Metric {
    title: &'static str,
    unit: &'static str,
    get: fn(&Figures) -> f64,
    higher_is_better: bool,
}

const METRICS: [Metric; 8] = [
    Metric {
        title: "Produce throughput",
        unit: "MB/s",
        get: |f| f.produce_mb_per_s,
        higher_is_better: true,
    },
    Metric {
        title: "Consume throughput",
        unit: "MB/s",
        get: |f| f.consume_mb_per_s,
        higher_is_better: true,
    },
    Metric {
        title: "Publish latency p50",
        unit: "ms",
        get: |f| f.publish_p50_ms,
        higher_is_better: false,
    },
    Metric {
        title: "Publish latency p99",
        unit: "ms",
        get: |f| f.publish_p99_ms,
        higher_is_better: false,
    },
    Metric {
        title: "Publish latency p99.9",
        unit: "ms",
        get: |f| f.publish_p999_ms,
        higher_is_better: false,
    },
    Metric {
        title: "End-to-end latency p50",
        unit: "ms",
        get: |f| f.e2e_p50_ms,
        higher_is_better: false,
    },
    Metric {
        title: "End-to-end latency p99",
        unit: "ms",
        get: |f| f.e2e_p99_ms,
        higher_is_better: false,
    },
    Metric {
        title: "End-to-end latency p99.9",
        unit: "ms",
        get: |f| f.e2e_p999_ms,
        higher_is_better: false,
    },
];

/// One cell's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    /// Cell id (its folder under `raw/`).
    pub id: String,
    /// Human label.
    pub label: String,
    /// acks.
    pub acks: Acks,
    /// Replication factor.
    pub replication_factor: i16,
    /// Flush policy.
    pub flush: Flush,
    /// min.insync.replicas (None: topic default, acks 0/1).
    pub min_insync: Option<i16>,
    /// Optional axes as `key=value`.
    pub axes: Vec<String>,
    /// Per finished repetition (index = repetition - 1 of the finished ones, in order).
    pub reps: Vec<Figures>,
    /// Why repetitions failed (`rep-<n>: message`).
    pub failed: Vec<String>,
    /// Why the cell was skipped ("" when not).
    pub skipped: String,
    /// Median over `reps` (None without any).
    pub median: Option<Figures>,
    /// Smallest value of each figure over `reps`.
    pub min: Option<Figures>,
    /// Largest.
    pub max: Option<Figures>,
    /// Errors over all repetitions.
    pub errors: u64,
    /// Whether the broker held exactly what was acknowledged in every repetition.
    pub broker_consistent: bool,
    /// Records acknowledged (acks=0: sent) but not held by the broker, over all repetitions.
    pub broker_missing: u64,
    /// Longest wait, over the repetitions, for the high watermark to hold everything produced
    /// after the producers stopped (seconds; replicas behind the leader with acks=1).
    #[serde(default)]
    pub settle_max_s: f64,
    /// One broker killed / all brokers killed / power loss of one machine / of all / one
    /// machine lost for good.
    pub survives: [String; 5],
    /// Where the survival row comes from.
    pub survives_source: String,
}

/// A recommended profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// durable, balanced, fast.
    pub name: String,
    /// The chosen cell's id (None: no eligible cell was measured).
    pub cell: Option<String>,
    /// The config snippet.
    pub snippet: String,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Experiment name.
    pub experiment: String,
    /// Cells.
    pub cells: Vec<CellSummary>,
    /// Profiles.
    pub profiles: Vec<Profile>,
}

/// Median (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn combine(reps: &[Figures], f: fn(&[f64]) -> f64) -> Figures {
    let col = |g: fn(&Figures) -> f64| f(&reps.iter().map(g).collect::<Vec<_>>());
    Figures {
        produce_mb_per_s: col(|x| x.produce_mb_per_s),
        consume_mb_per_s: col(|x| x.consume_mb_per_s),
        publish_p50_ms: col(|x| x.publish_p50_ms),
        publish_p99_ms: col(|x| x.publish_p99_ms),
        publish_p999_ms: col(|x| x.publish_p999_ms),
        e2e_p50_ms: col(|x| x.e2e_p50_ms),
        e2e_p99_ms: col(|x| x.e2e_p99_ms),
        e2e_p999_ms: col(|x| x.e2e_p999_ms),
    }
}

/// A results folder read back: the experiment and each cell's runs.
pub struct Results {
    /// The experiment as run.
    pub experiment: Experiment,
    /// Per cell (matrix order): finished runs (repetition, result).
    pub runs: Vec<Vec<(u32, RunResult)>>,
    /// Summaries.
    pub summary: Summary,
    /// limits.json.
    pub limits: Option<Limits>,
    /// sessions.json.
    pub sessions: Vec<Session>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(
            serde_json::from_str(&t).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads a results folder.
pub fn read_results(dir: &Path) -> anyhow::Result<Results> {
    let exp_path = dir.join("experiment.toml");
    let text = std::fs::read_to_string(&exp_path).with_context(|| {
        format!(
            "reading {} (not a tuning-lab results folder?)",
            exp_path.display()
        )
    })?;
    let experiment = parse_experiment(&text, "experiment")
        .with_context(|| format!("experiment {}", exp_path.display()))?;
    let skipped: BTreeMap<String, String> =
        read_json(&dir.join("skipped.json"))?.unwrap_or_default();
    let limits: Option<Limits> = read_json(&dir.join("limits.json"))?;
    let sessions: Vec<Session> = read_json(&dir.join("sessions.json"))?.unwrap_or_default();
    let mut runs = Vec::new();
    let mut cells = Vec::new();
    for cell in &experiment.cells {
        let id = cell.key.id();
        let mut rs = Vec::new();
        let mut failed = Vec::new();
        for rep in 1..=experiment.run.repetitions {
            let p = rep_path(dir, &id, rep);
            if let Some(r) = read_json::<RunResult>(&p)? {
                rs.push((rep, r));
            } else if let Ok(e) = std::fs::read_to_string(p.with_extension("error")) {
                failed.push(format!("rep-{rep}: {}", e.trim()));
            }
        }
        cells.push(summarize(&experiment, cell, &rs, failed, skipped.get(&id)));
        runs.push(rs);
    }
    let profiles = choose_profiles(&experiment, &cells);
    Ok(Results {
        summary: Summary {
            experiment: experiment.name.clone(),
            cells,
            profiles,
        },
        experiment,
        runs,
        limits,
        sessions,
    })
}

fn summarize(
    exp: &Experiment,
    cell: &Cell,
    runs: &[(u32, RunResult)],
    failed: Vec<String>,
    skipped: Option<&String>,
) -> CellSummary {
    let reps: Vec<Figures> = runs.iter().map(|(_, r)| Figures::of(r)).collect();
    let k = &cell.key;
    let g: Guarantee = survives(
        k.acks,
        k.replication_factor,
        k.flush,
        k.min_insync,
        exp.flush_interval_ms,
    );
    let any = !reps.is_empty();
    CellSummary {
        id: k.id(),
        label: k.label(),
        acks: k.acks,
        replication_factor: k.replication_factor,
        flush: k.flush,
        min_insync: k.min_insync,
        axes: k.axes.iter().map(|a| a.label()).collect(),
        median: any.then(|| combine(&reps, median)),
        min: any.then(|| combine(&reps, |v| v.iter().copied().fold(f64::MAX, f64::min))),
        max: any.then(|| combine(&reps, |v| v.iter().copied().fold(f64::MIN, f64::max))),
        reps,
        failed,
        // A cell finished in an earlier session is not skipped, whatever happened since.
        skipped: if any {
            String::new()
        } else {
            skipped.cloned().unwrap_or_default()
        },
        errors: runs
            .iter()
            .map(|(_, r)| r.errors.values().sum::<u64>())
            .sum(),
        broker_consistent: runs.iter().all(|(_, r)| r.broker_check.consistent),
        settle_max_s: runs
            .iter()
            .map(|(_, r)| r.broker_check.settle_s)
            .fold(0.0, f64::max),
        broker_missing: runs
            .iter()
            .map(|(_, r)| {
                r.broker_check
                    .acked_records
                    .saturating_sub(r.broker_check.broker_records)
            })
            .sum(),
        survives: [
            g.one_broker_killed.text(),
            g.all_brokers_killed.text(),
            g.power_loss_one.text(),
            g.power_loss.text(),
            g.machine_lost.text(),
        ],
        survives_source: g.source.to_string(),
    }
}

/// The config snippet of a cell: producer and topic settings (Kafka names).
pub fn snippet(exp: &Experiment, c: &CellSummary) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# producer");
    let _ = writeln!(s, "acks={}", c.acks);
    let cell = exp.cells.iter().find(|x| x.key.id() == c.id);
    let mut bench = Vec::new();
    if let Some(cell) = cell {
        let w = &cell.workload;
        let _ = writeln!(s, "batch.size={}", w.batch_size);
        let _ = writeln!(s, "linger.ms={}", w.linger_ms);
        if w.compression != "none" {
            let _ = writeln!(s, "compression.type={}", w.compression);
        }
        if w.idempotent {
            let _ = writeln!(s, "enable.idempotence=true");
        }
        for a in &cell.key.axes {
            if !["batch_size", "linger_ms", "compression"].contains(&a.key.as_str()) {
                bench.push(a.label());
            }
        }
    }
    let _ = writeln!(s, "# topic (CreateTopics / shardlog topic create --config)");
    let _ = writeln!(s, "replication.factor={}", c.replication_factor);
    if let Some(m) = c.min_insync {
        let _ = writeln!(s, "min.insync.replicas={m}");
    }
    for (k, v) in c.flush.topic_configs(exp.flush_interval_ms) {
        let _ = writeln!(s, "{k}={v}");
    }
    if !bench.is_empty() {
        let _ = writeln!(s, "# workload as measured: {}", bench.join(", "));
    }
    s
}

fn choose_profiles(exp: &Experiment, cells: &[CellSummary]) -> Vec<Profile> {
    let eligible = |name: &str, c: &CellSummary| -> bool {
        let g = survives(
            c.acks,
            c.replication_factor,
            c.flush,
            c.min_insync,
            exp.flush_interval_ms,
        );
        match name {
            "durable" => {
                g.power_loss.is_yes()
                    && g.machine_lost.is_yes()
                    && g.all_brokers_killed.is_yes()
                    && g.one_broker_killed.is_yes()
            }
            "balanced" => {
                g.machine_lost.is_yes()
                    && g.all_brokers_killed.is_yes()
                    && g.one_broker_killed.is_yes()
            }
            _ => true,
        }
    };
    ["durable", "balanced", "fast"]
        .iter()
        .map(|&name| {
            let cands: Vec<(&CellSummary, Figures)> = cells
                .iter()
                .filter(|c| eligible(name, c))
                .filter_map(|c| c.median.map(|m| (c, m)))
                .collect();
            let best = cands
                .iter()
                .map(|(_, m)| m.produce_mb_per_s)
                .fold(f64::MIN, f64::max);
            let pick = cands
                .iter()
                .filter(|(_, m)| m.produce_mb_per_s >= best * (1.0 - TIE))
                .min_by(|a, b| a.1.publish_p99_ms.total_cmp(&b.1.publish_p99_ms))
                .map(|(c, _)| *c);
            Profile {
                name: name.to_string(),
                cell: pick.map(|c| c.id.clone()),
                snippet: pick.map(|c| snippet(exp, c)).unwrap_or_default(),
            }
        })
        .collect()
}

fn f2(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn date_of(ms: u64) -> String {
    let (y, m, d) = crate::lab_files::civil_from_days((ms / 86_400_000) as i64);
    let s = ms / 1000 % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60
    )
}

fn status(c: &CellSummary, reps: u32, reasons: &[&str]) -> String {
    if !c.skipped.is_empty() {
        let n = reasons.iter().position(|r| *r == c.skipped).unwrap_or(0) + 1;
        format!("skipped ({n})")
    } else if c.reps.len() as u32 == reps {
        format!("{reps} of {reps}")
    } else if c.failed.is_empty() {
        format!("{} of {reps} (not run yet)", c.reps.len())
    } else {
        format!("{} of {reps}; failed {}", c.reps.len(), c.failed.join("; "))
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The rep whose publish p99 is the median (lower middle), for the CDF plots.
fn median_run(runs: &[(u32, RunResult)]) -> Option<&RunResult> {
    let mut v: Vec<&RunResult> = runs.iter().map(|(_, r)| r).collect();
    v.sort_by(|a, b| {
        a.publish_latency
            .p99_ms
            .total_cmp(&b.publish_latency.p99_ms)
    });
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// Writes the plots; returns (file, caption) in order.
pub fn plots(res: &Results) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let cells = &res.summary.cells;
    let acks_levels: Vec<Acks> = {
        let mut v: Vec<Acks> = res.experiment.cells.iter().map(|c| c.key.acks).collect();
        v.sort();
        v.dedup();
        v
    };
    let short = |c: &CellSummary| {
        let mut s = format!("rf{} {}", c.replication_factor, c.flush);
        if let Some(m) = c.min_insync {
            s.push_str(&format!(" isr{m}"));
        }
        for a in &c.axes {
            s.push(' ');
            s.push_str(a);
        }
        s
    };
    // Throughput against publish p99.
    let groups: Vec<ScatterGroup> = acks_levels
        .iter()
        .enumerate()
        .map(|(i, a)| ScatterGroup {
            name: format!("acks={a}"),
            color: PALETTE[i % PALETTE.len()].to_string(),
            points: cells
                .iter()
                .filter(|c| c.acks == *a)
                .filter_map(|c| {
                    c.median
                        .map(|m| (m.publish_p99_ms, m.produce_mb_per_s, short(c)))
                })
                .collect(),
        })
        .collect();
    out.push((
        "throughput-vs-p99.svg".to_string(),
        "Produce throughput against publish p99 (medians), one point per configuration".to_string(),
        scatter_log_x(
            &format!("{}: throughput against publish p99", res.experiment.name),
            "publish p99 (ms, log scale)",
            "produce MB/s",
            &groups,
        )?,
    ));
    // Latency CDFs per acks level.
    for a in &acks_levels {
        let mut names = Vec::new();
        let mut pts = Vec::new();
        for (c, runs) in cells.iter().zip(&res.runs) {
            if c.acks != *a {
                continue;
            }
            if let Some(r) = median_run(runs) {
                if r.publish_spectrum.is_empty() {
                    continue;
                }
                names.push(short(c));
                pts.push(
                    r.publish_spectrum
                        .iter()
                        .map(|&(p, ms)| (ms, p))
                        .collect::<Vec<_>>(),
                );
            }
        }
        let series: Vec<Series> = names
            .iter()
            .zip(pts)
            .enumerate()
            .map(|(i, (n, p))| Series {
                name: n,
                color: PALETTE[i % PALETTE.len()],
                points: p,
            })
            .collect();
        out.push((
            format!("cdf-acks-{a}.svg"),
            format!("Publish latency CDF, acks={a} (the repetition with the median p99 of each configuration)"),
            line_chart(
                &format!("{}: publish latency CDF, acks={a}", res.experiment.name),
                "publish latency (ms, log scale)",
                "percentile",
                &series,
                XAxis::Log,
            )?,
        ));
    }
    // Heat maps: rows acks (+ min.insync + axes), columns rf × flush.
    let mut rows: Vec<String> = Vec::new();
    let mut cols: Vec<String> = Vec::new();
    let row_of = |c: &CellSummary| {
        let mut s = format!("acks={}", c.acks);
        if let Some(m) = c.min_insync {
            s.push_str(&format!(" min.isr={m}"));
        }
        for a in &c.axes {
            s.push(' ');
            s.push_str(a);
        }
        s
    };
    let col_of = |c: &CellSummary| format!("rf={} {}", c.replication_factor, c.flush);
    for c in cells {
        let (r, k) = (row_of(c), col_of(c));
        if !rows.contains(&r) {
            rows.push(r);
        }
        if !cols.contains(&k) {
            cols.push(k);
        }
    }
    for (file, title, get, lower) in [
        (
            "heatmap-throughput.svg",
            "median produce MB/s (darker is better)",
            (|m: &Figures| m.produce_mb_per_s) as fn(&Figures) -> f64,
            false,
        ),
        (
            "heatmap-p99.svg",
            "median publish p99 in ms (darker is better)",
            (|m: &Figures| m.publish_p99_ms) as fn(&Figures) -> f64,
            true,
        ),
    ] {
        let mut values = vec![vec![None; cols.len()]; rows.len()];
        for c in cells {
            let r = rows.iter().position(|x| *x == row_of(c));
            let k = cols.iter().position(|x| *x == col_of(c));
            if let (Some(r), Some(k)) = (r, k) {
                values[r][k] = c.median.as_ref().map(get);
            }
        }
        out.push((
            file.to_string(),
            format!("The matrix: {title} (grey: not measured)"),
            heatmap(
                &format!("{}: {title}", res.experiment.name),
                &rows,
                &cols,
                &values,
                lower,
            )?,
        ));
    }
    Ok(out)
}

/// The report's Markdown.
pub fn report_markdown(
    dir_name: &str,
    res: &Results,
    plots: &[(String, String, String)],
) -> String {
    let e = &res.experiment;
    let mut s = String::new();
    let _ = writeln!(s, "# Tuning lab: {} ({dir_name})\n", e.name);
    if !e.description.is_empty() {
        let _ = writeln!(s, "{}\n", e.description);
    }
    let _ = writeln!(
        s,
        "Written by `shardlog-bench report` from the files of this folder (`experiment.toml` is the experiment as run). \
{} cells x {} repetitions, {}; throughput in MB/s (10^6 bytes of keys and values), \
latencies in ms; open-loop publish latency counts from each record's due time. Medians over the repetitions, spread min-max.\n",
        e.cells.len(),
        e.run.repetitions,
        if e.uniform_timing() {
            format!(
                "{} s warm-up and {} s measured each",
                e.run.warmup_s, e.run.duration_s
            )
        } else {
            "warm-up and measured seconds per part (see `experiment.toml`)".to_string()
        }
    );
    if !res.sessions.is_empty() {
        let _ = writeln!(
            s,
            "| session | commit | brokers | runs | finished |\n|---|---|---|---|---|"
        );
        for x in &res.sessions {
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} | {} |",
                date_of(x.started_unix_ms),
                if x.commit.is_empty() { "?" } else { &x.commit },
                md_escape(&x.target),
                x.runs,
                if x.finished_unix_ms > 0 {
                    date_of(x.finished_unix_ms)
                } else {
                    "interrupted".into()
                }
            );
        }
        s.push('\n');
    }
    let _ = writeln!(s, "## Machine limits\n");
    match &res.limits {
        None => {
            let _ = writeln!(s, "Not measured (no `limits.json`).\n");
        }
        Some(l) => {
            let _ = writeln!(s, "| limit | value | how |\n|---|---|---|");
            let _ = writeln!(s, "| CPUs | {} | available to the run |", l.cpus);
            if let Some(m) = l.memory_gib {
                let _ = writeln!(s, "| memory | {m:.1} GiB | MemTotal |");
            }
            let _ = writeln!(s, "| kernel | {} | |", md_escape(&l.kernel));
            let _ = writeln!(
                s,
                "| loopback, 1 TCP stream | {} | {} |",
                l.iperf3_mb_per_s
                    .map(|v| format!("{v:.0} MB/s"))
                    .unwrap_or_else(|| "not measured".into()),
                md_escape(&l.iperf3_note)
            );
            let _ = writeln!(
                s,
                "| data disk, 1 MiB O_DIRECT writes + fdatasync | {} | {} |",
                match (l.fio_mb_per_s, l.fio_fdatasync_p99_ms) {
                    (Some(v), Some(p)) => format!("{v:.0} MB/s (fdatasync p99 {p:.2} ms)"),
                    (Some(v), None) => format!("{v:.0} MB/s"),
                    _ => "not measured".into(),
                },
                md_escape(&l.fio_note)
            );
            s.push('\n');
        }
    }

    if !e.targets.is_empty() {
        let _ = writeln!(s, "## Targets\n");
        let _ = writeln!(
            s,
            "From the medians below (a ratio divides two cells of this folder, measured in the same run).\n"
        );
        let _ = writeln!(s, "| target | measured | met |\n|---|---|---|");
        for t in &e.targets {
            let (text, met) = target_result(res, t);
            let _ = writeln!(s, "| {} | {} | {} |", md_escape(&t.name), text, met);
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Configurations and what they survive\n");
    let _ = writeln!(
        s,
        "What acknowledged records survive, from the table in `bench/src/guarantees.rs`, which mirrors \
the guarantee table of `docs/RELIABILITY.md` (RF 3 rows assume min.insync.replicas=2; with 1 acks=all promises what acks=1 does). \
*one broker killed*: kill -9 of one broker; *all brokers killed*: kill -9 of every broker at once; *power loss*: of one machine, \
of every machine at once; *one machine lost*: its disk gone for good, the broker replaced by an empty one. Flush interval: {} ms.\n",
        e.flush_interval_ms
    );
    let _ = writeln!(
        s,
        "| configuration | runs | errors | broker check | one broker killed | all brokers killed | power loss of one | power loss of all | one machine lost |\n|---|---|---|---|---|---|---|---|---|"
    );
    let mut reasons: Vec<&str> = Vec::new();
    for c in &res.summary.cells {
        if !c.skipped.is_empty() && !reasons.contains(&c.skipped.as_str()) {
            reasons.push(&c.skipped);
        }
    }
    for c in &res.summary.cells {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.label,
            md_escape(&status(c, e.run.repetitions, &reasons)),
            c.errors,
            if c.reps.is_empty() {
                "-".to_string()
            } else if c.broker_consistent && c.settle_max_s >= 1.0 {
                format!(
                    "ok, after the high watermark caught up ({:.0} s at most)",
                    c.settle_max_s
                )
            } else if c.broker_consistent {
                "ok".to_string()
            } else if c.acks == Acks::None {
                // acks=0 counts a record when it is sent: the broker may not have it yet, or at all.
                format!("{} sent records not stored (acks=0)", c.broker_missing)
            } else {
                format!(
                    "MISMATCH ({} acknowledged records missing)",
                    c.broker_missing
                )
            },
            c.survives[0],
            c.survives[1],
            c.survives[2],
            c.survives[3],
            c.survives[4]
        );
    }
    let mut sources: Vec<&str> = res
        .summary
        .cells
        .iter()
        .map(|c| c.survives_source.as_str())
        .collect();
    sources.dedup();
    sources.sort();
    sources.dedup();
    if !reasons.is_empty() {
        let _ = writeln!(s, "\nSkipped in the last session, not faked:\n");
        for (i, r) in reasons.iter().enumerate() {
            let _ = writeln!(s, "{}. {}", i + 1, md_escape(r));
        }
    }
    let _ = writeln!(
        s,
        "\nSources of the survival columns: {}.",
        sources.join("; ")
    );
    if !e.not_applicable.is_empty() {
        let _ = writeln!(s, "\nNot run (not applicable):\n");
        for n in &e.not_applicable {
            let _ = writeln!(s, "- {}: {}", n.label, n.reason);
        }
    }

    let _ = writeln!(s, "\n## Recommended profiles\n\n{PROFILE_RULE}\n");
    for p in &res.summary.profiles {
        match p
            .cell
            .as_ref()
            .and_then(|id| res.summary.cells.iter().find(|c| &c.id == id))
        {
            None => {
                let _ = writeln!(
                    s,
                    "### {}\n\nNo configuration that qualifies was measured.\n",
                    p.name
                );
            }
            Some(c) => {
                let m = c.median.unwrap_or_default();
                let _ = writeln!(
                    s,
                    "### {}: {}\n\n{} MB/s, publish p99 {} ms, end-to-end p99 {} ms (medians). Survives: one broker killed: {}; all brokers killed: {}; power loss of one: {}; of all: {}; one machine lost: {}.\n\n```properties\n{}```\n",
                    p.name,
                    c.label,
                    f2(m.produce_mb_per_s),
                    f2(m.publish_p99_ms),
                    f2(m.e2e_p99_ms),
                    c.survives[0],
                    c.survives[1],
                    c.survives[2],
                    c.survives[3],
                    c.survives[4],
                    p.snippet
                );
            }
        }
    }

    for m in &METRICS {
        let _ = writeln!(
            s,
            "## {} ({}{})\n",
            m.title,
            m.unit,
            if m.higher_is_better {
                ", higher is better"
            } else {
                ", lower is better"
            }
        );
        let _ = writeln!(
            s,
            "| configuration | median | min | max | spread |\n|---|---|---|---|---|"
        );
        for c in &res.summary.cells {
            match (c.median, c.min, c.max) {
                (Some(md), Some(lo), Some(hi)) => {
                    let (v, a, b) = ((m.get)(&md), (m.get)(&lo), (m.get)(&hi));
                    let spread = if v > 0.0 {
                        format!("{:.0}%", (b - a) / v * 100.0)
                    } else {
                        "-".into()
                    };
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} |",
                        c.label,
                        f2(v),
                        f2(a),
                        f2(b),
                        spread
                    );
                }
                _ => {
                    let _ = writeln!(s, "| {} | - | - | - | - |", c.label);
                }
            }
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Plots\n");
    for (file, caption, _) in plots {
        let _ = writeln!(s, "{caption}:\n\n![{caption}]({file})\n");
    }
    let _ = writeln!(
        s,
        "Raw results: `raw/<configuration>/rep-<n>.json` (the `shardlog-bench run` result of each repetition) and \
`.hlog` (HdrHistogram logs, µs); not kept in git. `summary.json` holds the figures of this report."
    );
    s
}

/// A target's measured value in words and whether it is met (`yes`, `no`, `not measured`).
pub fn target_result(res: &Results, t: &Target) -> (String, &'static str) {
    let cells = &res.summary.cells;
    let med = |i: usize| {
        cells
            .get(i)
            .and_then(|c| c.median)
            .and_then(|m| m.get(&t.metric))
    };
    let label = |i: usize| cells.get(i).map(|c| c.label.as_str()).unwrap_or("?");
    let rate = |i: usize| {
        res.runs
            .get(i)
            .map(|rs| {
                let v: Vec<f64> = rs
                    .iter()
                    .filter_map(|(_, r)| r.target_records_per_s)
                    .collect();
                if v.is_empty() {
                    String::new()
                } else {
                    format!(" at {:.0} rec/s", median(&v))
                }
            })
            .unwrap_or_default()
    };
    let limit = t.of_limit.as_deref().map(|l| {
        let v = res.limits.as_ref().and_then(|x| match l {
            "iperf3" => x.iperf3_mb_per_s,
            _ => x.fio_mb_per_s,
        });
        (l, v)
    });
    let (value, text) = match (t.of, limit) {
        (None, Some((l, lim))) => match (med(t.cell), lim) {
            (Some(a), Some(b)) if b > 0.0 => (
                Some(a / b),
                format!("{:.1}% ({} / {l} {b:.0} MB/s)", a / b * 100.0, f2(a)),
            ),
            _ => (None, format!("not measured ({} / {l})", label(t.cell))),
        },
        (None, None) => match med(t.cell) {
            Some(v) => (
                Some(v),
                format!("{} ({}{})", f2(v), label(t.cell), rate(t.cell)),
            ),
            None => (None, format!("not measured ({})", label(t.cell))),
        },
        (Some(o), _) => match (med(t.cell), med(o)) {
            (Some(a), Some(b)) if b > 0.0 => (
                Some(a / b),
                format!("{:.1}% ({} / {} {})", a / b * 100.0, f2(a), f2(b), t.metric),
            ),
            _ => (
                None,
                format!("not measured ({} / {})", label(t.cell), label(o)),
            ),
        },
    };
    let met = match value {
        None => "not measured",
        Some(_) if t.min.is_none() && t.max.is_none() => "-",
        Some(v) => {
            if t.min.is_none_or(|m| v >= m) && t.max.is_none_or(|m| v <= m) {
                "yes"
            } else {
                "no"
            }
        }
    };
    (text, met)
}

/// Writes `summary.json`, the plots and `REPORT.md` into `dir`; returns the report's path.
pub fn write_report(dir: &Path) -> anyhow::Result<PathBuf> {
    let res = read_results(dir)?;
    let plots = plots(&res)?;
    for (file, _, svg) in &plots {
        std::fs::write(dir.join(file), svg).with_context(|| format!("writing {file}"))?;
    }
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&res.summary)? + "\n",
    )?;
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let path = dir.join("REPORT.md");
    std::fs::write(&path, report_markdown(&name, &res, &plots))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    fn cell(acks: Acks, rf: i16, flush: Flush, isr: Option<i16>, mb: f64, p99: f64) -> CellSummary {
        let m = Figures {
            produce_mb_per_s: mb,
            publish_p99_ms: p99,
            ..Figures::default()
        };
        CellSummary {
            id: format!("{}-{rf}-{}-{isr:?}", acks.name(), flush.name()),
            label: String::new(),
            acks,
            replication_factor: rf,
            flush,
            min_insync: isr,
            axes: Vec::new(),
            reps: vec![m],
            failed: Vec::new(),
            skipped: String::new(),
            median: Some(m),
            min: Some(m),
            max: Some(m),
            errors: 0,
            broker_consistent: true,
            broker_missing: 0,
            settle_max_s: 0.0,
            survives: Default::default(),
            survives_source: String::new(),
        }
    }

    #[test]
    fn durable_and_balanced_profiles_need_a_second_in_sync_copy() {
        let exp = parse_experiment(
            "[matrix]\nacks = [\"1\", \"all\"]\nreplication_factor = [1, 3]\nflush = [\"never\", \"every-batch\"]\n",
            "t",
        )
        .expect("experiment");
        // The one-copy cells are the fastest; they still may not be durable or balanced: the
        // loss of their machine loses everything they acknowledged.
        let cells = vec![
            cell(Acks::All, 1, Flush::EveryBatch, Some(1), 700.0, 50.0),
            cell(Acks::All, 1, Flush::Never, Some(1), 850.0, 40.0),
            cell(Acks::Leader, 3, Flush::Never, None, 400.0, 30.0),
            cell(Acks::All, 3, Flush::Never, Some(1), 390.0, 30.0),
            cell(Acks::All, 3, Flush::EveryBatch, Some(2), 310.0, 60.0),
            cell(Acks::All, 3, Flush::Never, Some(2), 380.0, 45.0),
        ];
        let got: Vec<(String, Option<String>)> = choose_profiles(&exp, &cells)
            .into_iter()
            .map(|p| (p.name, p.cell))
            .collect();
        let id = |i: usize| Some(cells[i].id.clone());
        assert_eq!(
            got,
            vec![
                ("durable".to_string(), id(4)),
                ("balanced".to_string(), id(5)),
                ("fast".to_string(), id(1)),
            ]
        );
        // Without a replicated acks=all cell there is no durable or balanced profile at all.
        let one_copy = choose_profiles(&exp, &cells[..2]);
        assert!(one_copy[0].cell.is_none() && one_copy[1].cell.is_none());
        assert_eq!(one_copy[2].cell, id(1));
    }
}

//! Tuning-lab experiment files (`tuning/experiments/*.toml`): a matrix of durability settings
//! (acks × replication factor × flush policy × min.insync.replicas) and optional workload axes,
//! expanded into cells. Each cell is one `shardlog-bench` workload ([`Workload`]), so the lab
//! measures exactly what `shardlog-bench run` measures; the matrix only decides which keys
//! differ between cells.
//!
//! ```toml
//! name = "smoke"
//! description = "..."
//! [run]
//! warmup_s = 1
//! duration_s = 3
//! repetitions = 2
//! [matrix]
//! acks = ["0", "1", "all"]
//! replication_factor = [1, 3]
//! flush = ["never", "interval", "every-batch"]
//! min_insync_replicas = [1, 2]
//! flush_interval_ms = 1000          # flush.ms of the interval policy
//! message_size = [1024, 16384]      # optional axes: any [workload] key, a list of values
//! rate_mb_per_s = ["max", 50]       # "max": closed loop (no rate)
//! [workload]                        # the base workload (bench/scenarios' [workload] keys)
//! consumers = 1
//! [broker]                          # how the runner starts local brokers
//! cores = 1
//! ```
//!
//! Rules (why): min.insync.replicas only changes what acks=all waits for, so acks 0 and 1 get
//! one cell with the topic default instead of one per value; a min.insync.replicas above the
//! replication factor makes every acks=all produce fail, so such combinations are listed as
//! not applicable rather than run. Flush policies and min.insync.replicas are topic configs set
//! at CreateTopics; only the replication factor needs a different cluster (one broker per
//! replica).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

use crate::scenario::{merge_tables, workload_from_table, Workload};

/// Kafka's "never" for flush.messages / flush.ms (Long.MAX_VALUE).
pub const FLUSH_NEVER: &str = "9223372036854775807";

/// A flush policy, as topic configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flush {
    /// fsync only on segment roll / close (`flush.messages` = `flush.ms` = Long.MAX_VALUE).
    Never,
    /// fsync every `flush_interval_ms` (`flush.ms`).
    Interval,
    /// fsync every batch with group commit before acknowledging (`flush.messages=1`).
    EveryBatch,
}

impl Flush {
    /// Its name in experiment files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Flush::Never => "never",
            Flush::Interval => "interval",
            Flush::EveryBatch => "every-batch",
        }
    }

    /// The topic configs that select it.
    pub fn topic_configs(self, interval_ms: u64) -> Vec<(&'static str, String)> {
        match self {
            Flush::Never => vec![
                ("flush.messages", FLUSH_NEVER.into()),
                ("flush.ms", FLUSH_NEVER.into()),
            ],
            Flush::Interval => vec![
                ("flush.messages", FLUSH_NEVER.into()),
                ("flush.ms", interval_ms.to_string()),
            ],
            Flush::EveryBatch => vec![("flush.messages", "1".into())],
        }
    }
}

impl fmt::Display for Flush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// acks as the lab names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Acks {
    /// acks=0.
    #[serde(rename = "0")]
    None,
    /// acks=1.
    #[serde(rename = "1")]
    Leader,
    /// acks=all.
    #[serde(rename = "all")]
    All,
}

impl Acks {
    /// Parses `0`, `1`, `all` (or `-1`).
    pub fn parse(s: &str) -> anyhow::Result<Acks> {
        match s.trim().to_ascii_lowercase().as_str() {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => bail!("acks {other:?}: use \"0\", \"1\" or \"all\""),
        }
    }

    /// Its name in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[run]`: timing of every cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSpec {
    /// Seconds before measuring.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Runs of every cell.
    pub repetitions: u32,
    /// A run taking longer than this (set-up and drain included) fails.
    pub cell_timeout_s: f64,
    /// Threads of the load generator's runtime (default: one per CPU).
    pub bench_threads: Option<usize>,
    /// CPUs the load generator runs on (a `taskset -c` list, or `"lower-half"` /
    /// `"upper-half"` of the CPUs `tune` may use); all by default. See [`BrokerSpec::cpus`].
    pub bench_cpus: Option<String>,
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            warmup_s: 2.0,
            duration_s: 10.0,
            repetitions: 3,
            cell_timeout_s: 300.0,
            bench_threads: None,
            bench_cpus: None,
        }
    }
}

/// `[broker]`: how local brokers are started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSpec {
    /// Shards per broker (`--cores`).
    pub cores: usize,
    /// Brokers of every cell's cluster (None: one broker per replica, so each replication
    /// factor gets its own cluster). Set, every cell runs on one cluster of this size, which must
    /// hold the largest replication factor: RF=1 and RF=3 then share the same brokers.
    pub brokers: Option<u16>,
    /// First port: broker i listens on `base_port + 10*(i-1)` (Kafka), `+1` (controller),
    /// `+2` (admin HTTP), as `shardlog dev cluster` does.
    pub base_port: u16,
    /// CPUs the brokers are pinned to (`taskset -c` list, or `"upper-half"` / `"lower-half"`
    /// of the CPUs `tune` may use: with `[run] bench_cpus` the other half, broker and load
    /// generator never share a core; on one CPU both halves are that CPU), none by default.
    pub cpus: Option<String>,
    /// Environment of every broker (`SHARDLOG_<KEY>` settings).
    pub env: BTreeMap<String, String>,
}

impl Default for BrokerSpec {
    fn default() -> Self {
        BrokerSpec {
            cores: 1,
            brokers: None,
            base_port: 29300,
            cpus: None,
            env: BTreeMap::new(),
        }
    }
}

/// `[limits]`: how the machine's limits are measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSpec {
    /// iperf3 seconds over loopback (0: not measured).
    pub iperf3_s: u32,
    /// fio file size in MiB (1 MiB O_DIRECT writes, fdatasync after each; 0: not measured).
    pub fio_mb: u32,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            iperf3_s: 10,
            fio_mb: 1024,
        }
    }
}

/// One value of an optional axis: the key and its TOML value.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisValue {
    /// The workload key.
    pub key: String,
    /// Its value.
    pub value: toml::Value,
}

impl AxisValue {
    /// `key=value` without quotes, for labels.
    pub fn label(&self) -> String {
        let v = match &self.value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        format!("{}={v}", self.key)
    }
}

/// The settings that tell one cell from another.
#[derive(Debug, Clone, PartialEq)]
pub struct CellKey {
    /// The `[[part]]` it belongs to (None: the experiment has no parts).
    pub part: Option<String>,
    /// acks.
    pub acks: Acks,
    /// Replication factor.
    pub replication_factor: i16,
    /// Flush policy.
    pub flush: Flush,
    /// min.insync.replicas (None: acks 0/1, the topic default).
    pub min_insync: Option<i16>,
    /// Optional axes, in the file's order.
    pub axes: Vec<AxisValue>,
}

impl CellKey {
    /// A file-name-safe id, stable across runs of the same experiment.
    pub fn id(&self) -> String {
        let mut s = match &self.part {
            Some(p) => format!("{}_", sanitize(p)),
            None => String::new(),
        };
        s.push_str(&format!(
            "acks-{}_rf-{}_flush-{}",
            self.acks, self.replication_factor, self.flush
        ));
        if let Some(m) = self.min_insync {
            s.push_str(&format!("_isr-{m}"));
        }
        for a in &self.axes {
            s.push('_');
            s.push_str(&sanitize(&a.label()));
        }
        s
    }

    /// A short human label.
    pub fn label(&self) -> String {
        let mut s = match &self.part {
            Some(p) => format!("{p}: "),
            None => String::new(),
        };
        s.push_str(&format!(
            "acks={} rf={} flush={}",
            self.acks, self.replication_factor, self.flush
        ));
        if let Some(m) = self.min_insync {
            s.push_str(&format!(" min.isr={m}"));
        }
        for a in &self.axes {
            s.push(' ');
            s.push_str(&a.label());
        }
        s
    }

    /// Brokers the cell's cluster needs: one per replica.
    pub fn brokers(&self) -> u16 {
        self.replication_factor.max(1) as u16
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A rate axis value given as a share of a closed-loop cell's throughput (`"50%"`): the rate is
/// only known once that cell has run, so the runner sets it (see `crate::lab`).
#[derive(Debug, Clone, PartialEq)]
pub struct RelativeRate {
    /// The workload key (`rate_mb_per_s` or `rate_records_per_s`).
    pub key: String,
    /// Share of the reference's median produce throughput (0.5 for `"50%"`).
    pub fraction: f64,
    /// Index in [`Experiment::cells`] of the closed-loop cell (the same settings with this
    /// axis at `"max"`); always an earlier cell, so it has run first.
    pub reference: usize,
}

/// One cell: its settings and the workload it runs.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Its settings.
    pub key: CellKey,
    /// The workload (warm-up and duration from `[run]`; closed loop until the runner sets a
    /// relative rate).
    pub workload: Workload,
    /// Set when the rate is a share of another cell's measured maximum.
    pub relative_rate: Option<RelativeRate>,
}

/// A figure of the report (`summary.json` names) that an experiment can set a target on.
pub const TARGET_METRICS: [&str; 8] = [
    "produce_mb_per_s",
    "consume_mb_per_s",
    "publish_p50_ms",
    "publish_p99_ms",
    "publish_p999_ms",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "e2e_p999_ms",
];

/// `[[target]]`: a goal the report checks, on one cell's median figure or on the ratio of two
/// cells' medians (both from the same results folder, i.e. measured on the same machine in the
/// same run).
///
/// ```toml
/// [[target]]
/// name = "RF=3 acks=all >= 30% of RF=1 acks=all"
/// metric = "produce_mb_per_s"
/// cell = { acks = "all", replication_factor = 3, rate_mb_per_s = "max" }
/// of = { acks = "all", replication_factor = 1, rate_mb_per_s = "max" }
/// min = 0.30
/// ```
///
/// `of = "iperf3"` or `of = "fio"` divides by a machine limit of the same folder instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// What it checks, in words.
    pub name: String,
    /// One of [`TARGET_METRICS`].
    pub metric: String,
    /// The cell measured (index in [`Experiment::cells`]).
    pub cell: usize,
    /// The cell it is divided by, for a ratio target.
    pub of: Option<usize>,
    /// Or the machine limit it is divided by: `"iperf3"` (loopback MB/s) or `"fio"` (the data
    /// disk's MB/s), from the same folder's `limits.json`.
    pub of_limit: Option<String>,
    /// Met when the value (or ratio) is at least this.
    pub min: Option<f64>,
    /// Met when the value (or ratio) is at most this. Neither bound: shown, not checked.
    pub max: Option<f64>,
}

/// A combination of the matrix that is not run, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct NotApplicable {
    /// The combination.
    pub label: String,
    /// Why.
    pub reason: String,
}

/// A parsed experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Name (default: the file stem).
    pub name: String,
    /// Description.
    pub description: String,
    /// `[run]`.
    pub run: RunSpec,
    /// `[broker]`.
    pub broker: BrokerSpec,
    /// `[limits]`.
    pub limits: LimitsSpec,
    /// flush.ms of the interval policy.
    pub flush_interval_ms: u64,
    /// The cells, in matrix order (acks, rf, flush, min.insync, then the axes).
    pub cells: Vec<Cell>,
    /// Combinations not run.
    pub not_applicable: Vec<NotApplicable>,
    /// `[[target]]`s, checked by the report.
    pub targets: Vec<Target>,
}

impl Experiment {
    /// Brokers of the cluster a cell runs on: `[broker] brokers`, else one per replica.
    pub fn brokers_for(&self, cell: &Cell) -> u16 {
        self.broker.brokers.unwrap_or_else(|| cell.key.brokers())
    }

    /// Seconds the runs take at least (warm-up + duration per run), before set-up overheads.
    pub fn measured_seconds(&self) -> f64 {
        self.cells
            .iter()
            .map(|c| c.workload.warmup_s + c.workload.duration_s)
            .sum::<f64>()
            * self.run.repetitions as f64
    }

    /// Whether every cell has `[run]`'s warm-up and duration (no `[[part]]` sets its own).
    pub fn uniform_timing(&self) -> bool {
        self.cells.iter().all(|c| {
            c.workload.warmup_s == self.run.warmup_s && c.workload.duration_s == self.run.duration_s
        })
    }
}

/// Keys of `[matrix]` that are not optional axes.
const MATRIX_KEYS: [&str; 5] = [
    "acks",
    "replication_factor",
    "flush",
    "min_insync_replicas",
    "flush_interval_ms",
];
/// Workload keys the lab sets itself.
const RESERVED_WORKLOAD_KEYS: [&str; 4] = ["acks", "replication_factor", "warmup_s", "duration_s"];
/// Topic configs the lab sets itself.
const RESERVED_TOPIC_CONFIGS: [&str; 3] = ["flush.messages", "flush.ms", "min.insync.replicas"];

fn list<'a>(m: &'a toml::Table, key: &str) -> anyhow::Result<&'a Vec<toml::Value>> {
    match m.get(key) {
        Some(toml::Value::Array(a)) if !a.is_empty() => Ok(a),
        Some(toml::Value::Array(_)) => bail!("[matrix] {key} is empty: give at least one value"),
        Some(_) => bail!("[matrix] {key} must be a list, e.g. {key} = [...]"),
        None => bail!("[matrix] needs {key}"),
    }
}

fn table(doc: &mut toml::Table, key: &str) -> anyhow::Result<toml::Table> {
    match doc.remove(key) {
        Some(toml::Value::Table(t)) => Ok(t),
        Some(_) => bail!("[{key}] must be a table"),
        None => Ok(toml::Table::new()),
    }
}

/// Parses an experiment file's text; `fallback_name` names it when it has no `name`.
pub fn parse_experiment(text: &str, fallback_name: &str) -> anyhow::Result<Experiment> {
    let mut doc: toml::Table = toml::from_str(text).context("experiment TOML")?;
    let name = match doc.remove("name") {
        Some(toml::Value::String(s)) if !s.is_empty() => s,
        Some(_) => bail!("name must be a non-empty string"),
        None => fallback_name.to_string(),
    };
    ensure!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "name {name:?}: use letters, digits, '-' and '_' (it names the results folder)"
    );
    let description = match doc.remove("description") {
        Some(toml::Value::String(s)) => s,
        Some(_) => bail!("description must be a string"),
        None => String::new(),
    };
    let run: RunSpec = toml::Value::Table(table(&mut doc, "run")?)
        .try_into()
        .context("[run]")?;
    let broker: BrokerSpec = toml::Value::Table(table(&mut doc, "broker")?)
        .try_into()
        .context("[broker]")?;
    let limits: LimitsSpec = toml::Value::Table(table(&mut doc, "limits")?)
        .try_into()
        .context("[limits]")?;
    let matrix = match doc.remove("matrix") {
        Some(toml::Value::Table(t)) => Some(t),
        Some(_) => bail!("[matrix] must be a table"),
        None => None,
    };
    let base = table(&mut doc, "workload")?;
    let part_specs = match doc.remove("part") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a,
        Some(_) => bail!("part must be an array of tables ([[part]])"),
    };
    let target_specs = match doc.remove("target") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a,
        Some(_) => bail!("target must be an array of tables ([[target]])"),
    };
    if let Some(k) = doc.keys().next() {
        bail!(
            "unknown top-level key {k:?} (expected name, description, [run], [matrix], [workload], [broker], [limits], [[part]], [[target]])"
        );
    }
    ensure!(run.repetitions >= 1, "[run] repetitions must be >= 1");
    ensure!(
        run.duration_s > 0.0 && run.duration_s.is_finite(),
        "[run] duration_s must be > 0"
    );
    ensure!(
        run.warmup_s >= 0.0 && run.warmup_s.is_finite(),
        "[run] warmup_s must be >= 0"
    );
    ensure!(
        run.cell_timeout_s > run.warmup_s + run.duration_s,
        "[run] cell_timeout_s must exceed warmup_s + duration_s"
    );
    for (what, v) in [
        ("[run] bench_cpus", &run.bench_cpus),
        ("[broker] cpus", &broker.cpus),
    ] {
        if let Some(c) = v {
            resolve_cpus(c, &[0, 1]).with_context(|| what.to_string())?;
        }
    }
    if let Some(t) = run.bench_threads {
        ensure!(t >= 1, "[run] bench_threads must be >= 1");
    }
    ensure!(broker.cores >= 1, "[broker] cores must be >= 1");
    if let Some(n) = broker.brokers {
        ensure!((1..=16).contains(&n), "[broker] brokers must be 1..=16");
    }
    ensure!(
        broker.base_port >= 1024,
        "[broker] base_port must be >= 1024"
    );
    check_workload_keys(&base, "[workload]")?;

    let flush_interval_ms = match matrix.as_ref().and_then(|m| m.get("flush_interval_ms")) {
        None => 1000,
        Some(v) => match v.as_integer() {
            Some(i) if i >= 1 => i as u64,
            _ => bail!("[matrix] flush_interval_ms must be an integer >= 1"),
        },
    };
    let mut cells = Vec::new();
    let mut not_applicable = Vec::new();
    if part_specs.is_empty() {
        let Some(matrix) = &matrix else {
            bail!("an experiment needs a [matrix] table (or [[part]]s with their own)");
        };
        expand(
            matrix,
            &base,
            (run.warmup_s, run.duration_s),
            None,
            broker.brokers,
            flush_interval_ms,
            &mut cells,
            &mut not_applicable,
        )?;
    }
    let mut part_names: Vec<String> = Vec::new();
    for (i, p) in part_specs.iter().enumerate() {
        let Some(p) = p.as_table() else {
            bail!("[[part]] {} must be a table", i + 1);
        };
        let pname = match p.get("name").and_then(|v| v.as_str()) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => bail!("[[part]] {} needs name = \"...\"", i + 1),
        };
        let what = format!("[[part]] {pname:?}");
        ensure!(
            !part_names.contains(&pname),
            "{what}: a part of that name is listed twice"
        );
        for k in p.keys() {
            ensure!(
                ["name", "description", "warmup_s", "duration_s", "matrix", "workload"]
                    .contains(&k.as_str()),
                "{what}: unknown key {k:?} (expected name, description, warmup_s, duration_s, matrix, workload)"
            );
        }
        let secs = |k: &str, default: f64| -> anyhow::Result<f64> {
            match p.get(k) {
                None => Ok(default),
                Some(toml::Value::Float(f)) => Ok(*f),
                Some(toml::Value::Integer(i)) => Ok(*i as f64),
                Some(other) => bail!("{what}: {k} = {other} is not a number"),
            }
        };
        let timing = (
            secs("warmup_s", run.warmup_s)?,
            secs("duration_s", run.duration_s)?,
        );
        ensure!(
            timing.0 >= 0.0 && timing.0.is_finite() && timing.1 > 0.0 && timing.1.is_finite(),
            "{what}: warmup_s must be >= 0 and duration_s > 0"
        );
        ensure!(
            run.cell_timeout_s > timing.0 + timing.1,
            "{what}: [run] cell_timeout_s must exceed its warmup_s + duration_s"
        );
        let pmatrix = match p.get("matrix") {
            Some(toml::Value::Table(t)) => t.clone(),
            Some(_) => bail!("{what}: matrix must be a table"),
            None => match &matrix {
                Some(m) => m.clone(),
                None => bail!("{what} needs a matrix (there is no top-level [matrix])"),
            },
        };
        ensure!(
            p.get("matrix").is_none() || !pmatrix.contains_key("flush_interval_ms"),
            "{what}: flush_interval_ms is set once, in the top-level [matrix]"
        );
        let mut pbase = base.clone();
        match p.get("workload") {
            None => {}
            Some(toml::Value::Table(t)) => {
                check_workload_keys(t, &format!("{what} workload"))?;
                merge_tables(&mut pbase, t.clone());
            }
            Some(_) => bail!("{what}: workload must be a table"),
        }
        expand(
            &pmatrix,
            &pbase,
            timing,
            Some(&pname),
            broker.brokers,
            flush_interval_ms,
            &mut cells,
            &mut not_applicable,
        )
        .with_context(|| what.clone())?;
        part_names.push(pname);
    }
    ensure!(
        !cells.is_empty(),
        "the matrix has no applicable cell (every min_insync_replicas exceeds every replication_factor)"
    );
    let targets = target_specs
        .iter()
        .enumerate()
        .map(|(i, t)| parse_target(t, &cells).with_context(|| format!("[[target]] {}", i + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Experiment {
        name,
        description,
        run,
        broker,
        limits,
        flush_interval_ms,
        cells,
        not_applicable,
        targets,
    })
}

/// Refuses workload keys the lab sets itself.
fn check_workload_keys(w: &toml::Table, what: &str) -> anyhow::Result<()> {
    for k in RESERVED_WORKLOAD_KEYS {
        ensure!(
            !w.contains_key(k),
            "{what} {k}: set by the lab ([matrix] / [run] / a part's warmup_s, duration_s), remove it here"
        );
    }
    if let Some(toml::Value::Table(tc)) = w.get("topic_configs") {
        for k in RESERVED_TOPIC_CONFIGS {
            ensure!(
                !tc.contains_key(k),
                "{what} topic_configs {k:?}: set by the matrix (flush, min_insync_replicas), remove it here"
            );
        }
    }
    Ok(())
}

/// A CPU list (`"0,2-3"`, or `"lower-half"` / `"upper-half"` of `available`, the CPUs this
/// process may use, sorted) as CPU numbers.
pub fn resolve_cpus(spec: &str, available: &[usize]) -> anyhow::Result<Vec<usize>> {
    let half = available.len() / 2;
    match spec.trim() {
        "lower-half" if half > 0 => return Ok(available[..half].to_vec()),
        "upper-half" if half > 0 => return Ok(available[half..].to_vec()),
        "lower-half" | "upper-half" => return Ok(available.to_vec()),
        _ => {}
    }
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let bad =
            || format!("CPU list {spec:?}: use e.g. \"0,2-3\", \"lower-half\" or \"upper-half\"");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: usize = a.parse().with_context(bad)?;
        let b: usize = b.parse().with_context(bad)?;
        ensure!(a <= b && b < 4096, "{}", bad());
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    ensure!(!out.is_empty(), "CPU list {spec:?} is empty");
    Ok(out)
}

/// `"50%"` as 0.5 (a share in (0, 10]).
fn percent(t: &str) -> anyhow::Result<f64> {
    let p: f64 = t
        .trim_end_matches('%')
        .trim()
        .parse()
        .with_context(|| format!("{t:?} is not a percentage like \"50%\""))?;
    ensure!(
        p > 0.0 && p <= 1000.0,
        "{t:?}: a percentage must be in (0, 1000]"
    );
    Ok(p / 100.0)
}

/// Whether a cell has the settings of a `[[target]]` selector (`{ acks = "all", rate_mb_per_s =
/// "max" }`): every key given must match; keys not given match anything.
fn selects(sel: &toml::Table, key: &CellKey) -> anyhow::Result<bool> {
    for (k, v) in sel {
        let text = match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let ok = match k.as_str() {
            "part" => key.part.as_deref() == Some(text.as_str()),
            "acks" => Acks::parse(&text)? == key.acks,
            "replication_factor" => text == key.replication_factor.to_string(),
            "flush" => text.replace('_', "-") == key.flush.name(),
            "min_insync_replicas" => key.min_insync.map(|m| m.to_string()) == Some(text),
            other => match key.axes.iter().find(|a| a.key == other) {
                Some(a) => a.value == *v,
                None => bail!(
                    "{other:?} is neither part, acks, replication_factor, flush, min_insync_replicas nor a [matrix] axis"
                ),
            },
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn select_one(sel: &toml::Value, cells: &[Cell], what: &str) -> anyhow::Result<usize> {
    let Some(sel) = sel.as_table() else {
        bail!(
            "{what} must be a table of settings, e.g. {{ acks = \"all\", replication_factor = 3 }}"
        );
    };
    let mut found = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        if selects(sel, &c.key)? {
            found.push(i);
        }
    }
    match found.as_slice() {
        [i] => Ok(*i),
        [] => bail!("{what} {sel} selects no cell"),
        many => bail!(
            "{what} {sel} selects {} cells ({}): give more settings",
            many.len(),
            many.iter()
                .map(|&i| cells[i].key.label())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

fn parse_target(v: &toml::Value, cells: &[Cell]) -> anyhow::Result<Target> {
    let Some(t) = v.as_table() else {
        bail!("must be a table");
    };
    for k in t.keys() {
        ensure!(
            ["name", "metric", "cell", "of", "min", "max"].contains(&k.as_str()),
            "unknown key {k:?} (expected name, metric, cell, of, min, max)"
        );
    }
    let name = t
        .get("name")
        .and_then(|v| v.as_str())
        .context("needs name = \"...\"")?
        .to_string();
    let metric = t
        .get("metric")
        .and_then(|v| v.as_str())
        .context("needs metric = \"...\"")?
        .to_string();
    ensure!(
        TARGET_METRICS.contains(&metric.as_str()),
        "metric {metric:?}: use one of {}",
        TARGET_METRICS.join(", ")
    );
    let cell = select_one(
        t.get("cell").context("needs cell = { ... }")?,
        cells,
        "cell",
    )?;
    let (of, of_limit) = match t.get("of") {
        None => (None, None),
        Some(toml::Value::String(l)) => {
            ensure!(
                l == "iperf3" || l == "fio",
                "of = {l:?}: a machine limit is \"iperf3\" or \"fio\" (or give a cell as a table)"
            );
            (None, Some(l.clone()))
        }
        Some(sel) => (Some(select_one(sel, cells, "of")?), None),
    };
    let num = |k: &str| -> anyhow::Result<Option<f64>> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::Float(f)) => Ok(Some(*f)),
            Some(toml::Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(other) => bail!("{k} = {other} is not a number"),
        }
    };
    // Neither bound: shown for reading, not checked.
    let (min, max) = (num("min")?, num("max")?);
    Ok(Target {
        name,
        metric,
        cell,
        of,
        of_limit,
        min,
        max,
    })
}

/// Expands one matrix (the experiment's, or a `[[part]]`'s) over its base workload into
/// `cells`, in matrix order.
#[allow(clippy::too_many_arguments)]
fn expand(
    matrix: &toml::Table,
    base: &toml::Table,
    timing: (f64, f64),
    part: Option<&str>,
    brokers: Option<u16>,
    flush_interval_ms: u64,
    cells: &mut Vec<Cell>,
    not_applicable: &mut Vec<NotApplicable>,
) -> anyhow::Result<()> {
    let acks = list(matrix, "acks")?
        .iter()
        .map(|v| match v {
            toml::Value::String(s) => Acks::parse(s),
            toml::Value::Integer(i) => Acks::parse(&i.to_string()),
            other => bail!("[matrix] acks: {other} is not 0, 1 or \"all\""),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rfs = list(matrix, "replication_factor")?
        .iter()
        .map(|v| match v.as_integer() {
            Some(i) if (1..=16).contains(&i) => Ok(i as i16),
            _ => bail!("[matrix] replication_factor: {v} is not an integer 1..=16"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let flushes = list(matrix, "flush")?
        .iter()
        .map(|v| match v.as_str() {
            Some("never") => Ok(Flush::Never),
            Some("interval") => Ok(Flush::Interval),
            Some("every-batch") | Some("every_batch") => Ok(Flush::EveryBatch),
            _ => bail!("[matrix] flush: {v} is not \"never\", \"interval\" or \"every-batch\""),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let min_isrs = match matrix.get("min_insync_replicas") {
        None => vec![1],
        Some(_) => list(matrix, "min_insync_replicas")?
            .iter()
            .map(|v| match v.as_integer() {
                Some(i) if (1..=16).contains(&i) => Ok(i as i16),
                _ => bail!("[matrix] min_insync_replicas: {v} is not an integer 1..=16"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    for (what, dup) in [
        ("acks", has_dup(&acks)),
        ("replication_factor", has_dup(&rfs)),
        ("flush", has_dup(&flushes)),
        ("min_insync_replicas", has_dup(&min_isrs)),
    ] {
        ensure!(!dup, "[matrix] {what} lists a value twice");
    }
    if let Some(n) = brokers {
        let top = rfs.iter().copied().max().unwrap_or(1);
        ensure!(
            i32::from(n) >= i32::from(top),
            "[broker] brokers = {n} cannot hold replication factor {top}"
        );
    }
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for key in matrix.keys().filter(|k| !MATRIX_KEYS.contains(&k.as_str())) {
        ensure!(
            !RESERVED_WORKLOAD_KEYS.contains(&key.as_str()) && key != "topic_configs",
            "[matrix] {key}: not an optional axis (set by the lab)"
        );
        let values = list(matrix, key)?.clone();
        ensure!(
            !has_dup(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>()),
            "[matrix] {key} lists a value twice"
        );
        // "N%" is a share of the "max" cell, which must run first: listed before it.
        let mut seen_max = false;
        for v in &values {
            match v.as_str() {
                Some("max") => {
                    ensure!(
                        key.starts_with("rate_"),
                        "[matrix] {key}: \"max\" is only a rate value"
                    );
                    seen_max = true;
                }
                Some(t) if t.ends_with('%') => {
                    ensure!(
                        key.starts_with("rate_"),
                        "[matrix] {key}: {t:?}: a percentage is only a rate value"
                    );
                    percent(t).with_context(|| format!("[matrix] {key}"))?;
                    ensure!(
                        seen_max,
                        "[matrix] {key}: {t:?} is a share of the \"max\" cell: list \"max\" before it"
                    );
                }
                _ => {}
            }
        }
        axes.push((key.clone(), values));
    }

    for &a in &acks {
        for &rf in &rfs {
            for &flush in &flushes {
                let isrs: Vec<Option<i16>> = if a == Acks::All {
                    min_isrs.iter().map(|&m| Some(m)).collect()
                } else {
                    vec![None]
                };
                for min_insync in isrs {
                    for combo in product(&axes) {
                        let key = CellKey {
                            part: part.map(str::to_string),
                            acks: a,
                            replication_factor: rf,
                            flush,
                            min_insync,
                            axes: combo,
                        };
                        if let Some(m) = min_insync {
                            if m > rf {
                                not_applicable.push(NotApplicable {
                                    label: key.label(),
                                    reason: format!(
                                        "min.insync.replicas {m} > replication factor {rf}: every acks=all produce would fail"
                                    ),
                                });
                                continue;
                            }
                        }
                        let (workload, relative) =
                            cell_workload(base, timing, &key, flush_interval_ms)
                                .with_context(|| format!("cell {}", key.label()))?;
                        let relative_rate = match relative {
                            None => None,
                            Some((axis, rate_key, fraction)) => {
                                let mut rkey = key.clone();
                                rkey.axes[axis].value = toml::Value::String("max".into());
                                let rid = rkey.id();
                                let reference = cells
                                    .iter()
                                    .position(|c: &Cell| c.key.id() == rid)
                                    .with_context(|| {
                                        format!(
                                            "cell {}: no closed-loop cell {} to take a share of",
                                            key.label(),
                                            rkey.label()
                                        )
                                    })?;
                                Some(RelativeRate {
                                    key: rate_key,
                                    fraction,
                                    reference,
                                })
                            }
                        };
                        cells.push(Cell {
                            key,
                            workload,
                            relative_rate,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

fn has_dup<T: PartialEq>(v: &[T]) -> bool {
    v.iter()
        .enumerate()
        .any(|(i, x)| v[..i].iter().any(|y| y == x))
}

/// Every combination of the axes' values (one empty combination without axes).
fn product(axes: &[(String, Vec<toml::Value>)]) -> Vec<Vec<AxisValue>> {
    let mut out: Vec<Vec<AxisValue>> = vec![Vec::new()];
    for (key, values) in axes {
        let mut next = Vec::with_capacity(out.len() * values.len());
        for prefix in &out {
            for v in values {
                let mut c = prefix.clone();
                c.push(AxisValue {
                    key: key.clone(),
                    value: v.clone(),
                });
                next.push(c);
            }
        }
        out = next;
    }
    out
}

/// A cell's workload, and for a rate given as a percentage: (axis index, rate key, share).
type RelativeAxis = Option<(usize, String, f64)>;

fn cell_workload(
    base: &toml::Table,
    (warmup_s, duration_s): (f64, f64),
    key: &CellKey,
    flush_interval_ms: u64,
) -> anyhow::Result<(Workload, RelativeAxis)> {
    let mut t = base.clone();
    let mut over = toml::Table::new();
    over.insert("acks".into(), toml::Value::String(key.acks.name().into()));
    over.insert(
        "replication_factor".into(),
        toml::Value::Integer(key.replication_factor.into()),
    );
    over.insert("warmup_s".into(), toml::Value::Float(warmup_s));
    over.insert("duration_s".into(), toml::Value::Float(duration_s));
    let mut tc = toml::Table::new();
    for (k, v) in key.flush.topic_configs(flush_interval_ms) {
        tc.insert(k.into(), toml::Value::String(v));
    }
    if let Some(m) = key.min_insync {
        tc.insert(
            "min.insync.replicas".into(),
            toml::Value::String(m.to_string()),
        );
    }
    over.insert("topic_configs".into(), toml::Value::Table(tc));
    let mut closed_loop = false;
    let mut relative = None;
    for (i, a) in key.axes.iter().enumerate() {
        // `rate_mb_per_s = ["max", 50, "50%"]`: "max" is the closed loop (no rate); "50%" half
        // of what the "max" cell measured, set by the runner (closed loop until then).
        if a.key.starts_with("rate_") {
            match a.value.as_str() {
                Some("max") => {
                    closed_loop = true;
                    continue;
                }
                Some(p) if p.ends_with('%') => {
                    closed_loop = true;
                    relative = Some((i, a.key.clone(), percent(p)?));
                    continue;
                }
                _ => {}
            }
        }
        over.insert(a.key.clone(), a.value.clone());
    }
    merge_tables(&mut t, over);
    if closed_loop {
        t.remove("rate_mb_per_s");
        t.remove("rate_records_per_s");
    }
    Ok((workload_from_table(t)?, relative))
}

/// Reads and parses an experiment file.
pub fn load_experiment(path: &Path) -> anyhow::Result<Experiment> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "experiment".into());
    parse_experiment(&text, &stem).with_context(|| format!("experiment {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        name = "t"
        [run]
        warmup_s = 1
        duration_s = 2
        repetitions = 2
        [matrix]
        acks = ["0", "1", "all"]
        replication_factor = [1, 3]
        flush = ["never", "interval", "every-batch"]
        min_insync_replicas = [1, 2]
        flush_interval_ms = 500
        [workload]
        consumers = 1
        message_size = 512
    "#;

    #[test]
    fn matrix_expands_with_the_min_insync_rules() {
        let e = parse_experiment(FULL, "x").expect("parse");
        assert_eq!(e.name, "t");
        // acks 0/1: 2 rf × 3 flush each; acks=all: rf=1 × isr 1 only, rf=3 × isr {1,2}.
        assert_eq!(e.cells.len(), 2 * 6 + 3 + 3 * 2);
        assert_eq!(e.not_applicable.len(), 3);
        assert!(e.not_applicable[0]
            .reason
            .contains("min.insync.replicas 2 > replication factor 1"));
        let ids: Vec<String> = e.cells.iter().map(|c| c.key.id()).collect();
        assert_eq!(ids[0], "acks-0_rf-1_flush-never");
        assert!(ids.contains(&"acks-all_rf-3_flush-every-batch_isr-2".to_string()));
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "ids are unique");
        let c = e
            .cells
            .iter()
            .find(|c| c.key.id() == "acks-all_rf-3_flush-interval_isr-2")
            .expect("cell");
        let w = &c.workload;
        assert_eq!(w.acks_value().expect("acks"), -1);
        assert_eq!(w.replication_factor, 3);
        assert_eq!(w.topic_configs["flush.ms"], "500");
        assert_eq!(w.topic_configs["flush.messages"], FLUSH_NEVER);
        assert_eq!(w.topic_configs["min.insync.replicas"], "2");
        assert_eq!((w.warmup_s, w.duration_s, w.consumers), (1.0, 2.0, 1));
        assert_eq!(c.key.brokers(), 3);
        let c0 = &e.cells[0];
        assert!(!c0
            .workload
            .topic_configs
            .contains_key("min.insync.replicas"));
        assert_eq!(c0.workload.acks_value().expect("acks"), 0);
        let eb = e
            .cells
            .iter()
            .find(|c| c.key.flush == Flush::EveryBatch)
            .expect("cell");
        assert_eq!(eb.workload.topic_configs["flush.messages"], "1");
        assert!(!eb.workload.topic_configs.contains_key("flush.ms"));
        assert!((e.measured_seconds() - 21.0 * 2.0 * 3.0).abs() < 1e-9);
    }

    #[test]
    fn optional_axes_multiply_cells() {
        let text = r#"
            [matrix]
            acks = ["1"]
            replication_factor = [1]
            flush = ["never"]
            message_size = [100, 1000]
            producers = [1, 2, 4]
        "#;
        let e = parse_experiment(text, "axes").expect("parse");
        assert_eq!(e.name, "axes");
        assert_eq!(e.cells.len(), 6);
        assert_eq!(
            e.cells[1].key.id(),
            "acks-1_rf-1_flush-never_message-size-100_producers-2"
        );
        assert_eq!(e.cells[5].workload.producers, 4);
        assert_eq!(
            e.cells[5].workload.message_size,
            crate::dist::SizeDist::Fixed(1000)
        );
        assert_eq!(
            e.cells[1].key.label(),
            "acks=1 rf=1 flush=never message_size=100 producers=2"
        );
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse_experiment(text, "e").expect_err("must fail"))
    }

    #[test]
    fn errors_name_the_problem() {
        let m = "[matrix]\nacks=[\"1\"]\nreplication_factor=[1]\nflush=[\"never\"]\n";
        assert!(
            err("[matrix]\nacks=[\"2\"]\nreplication_factor=[1]\nflush=[\"never\"]\n")
                .contains("acks \"2\"")
        );
        assert!(
            err("[matrix]\nacks=[\"1\"]\nflush=[\"never\"]\n").contains("needs replication_factor")
        );
        assert!(
            err("[matrix]\nacks=[]\nreplication_factor=[1]\nflush=[\"never\"]\n")
                .contains("acks is empty")
        );
        assert!(
            err("[matrix]\nacks=[\"1\"]\nreplication_factor=[1]\nflush=[\"sometimes\"]\n")
                .contains("flush")
        );
        assert!(
            err("[matrix]\nacks=\"1\"\nreplication_factor=[1]\nflush=[\"never\"]\n")
                .contains("must be a list")
        );
        assert!(err(&format!("{m}bogus_axis=[1]\n")).contains("bogus_axis"));
        assert!(err(&format!("{m}[workload]\nacks=\"all\"\n")).contains("set by the lab"));
        assert!(err(&format!(
            "{m}[workload.topic_configs]\n\"flush.messages\"=\"1\"\n"
        ))
        .contains("set by the matrix"));
        assert!(err(&format!("{m}[run]\nrepetitions=0\n")).contains("repetitions"));
        assert!(err(&format!("{m}[run]\nwarm_up=1\n")).contains("warm_up"));
        assert!(err(&format!("{m}[workload]\nmessage_size=8\n")).contains("message_size"));
        assert!(err(&format!("extra=1\n{m}")).contains("unknown top-level key"));
        assert!(
            err("[matrix]\nacks=[\"1\"]\nreplication_factor=[1,1]\nflush=[\"never\"]\n")
                .contains("twice")
        );
        assert!(err("[matrix]\nacks=[\"all\"]\nreplication_factor=[1]\nflush=[\"never\"]\nmin_insync_replicas=[2]\n")
            .contains("no applicable cell"));
        assert!(err("name = \"a/b\"\n").contains("name"));
        assert!(err("x = [").contains("experiment TOML"));
    }

    #[test]
    fn relative_rates_brokers_and_targets() {
        let text = r#"
            [matrix]
            acks = ["1", "all"]
            replication_factor = [1, 3]
            flush = ["never"]
            rate_mb_per_s = ["max", 20, "50%"]
            [broker]
            brokers = 3
            [[target]]
            name = "ratio"
            metric = "produce_mb_per_s"
            cell = { acks = "all", replication_factor = 3, rate_mb_per_s = "max" }
            of = { acks = "all", replication_factor = 1, rate_mb_per_s = "max" }
            min = 0.3
            [[target]]
            name = "tail"
            metric = "publish_p999_ms"
            cell = { acks = "all", replication_factor = 3, rate_mb_per_s = "50%" }
            max = 10
            [[target]]
            name = "loopback share"
            metric = "produce_mb_per_s"
            cell = { acks = "1", replication_factor = 1, rate_mb_per_s = "max" }
            of = "iperf3"
        "#;
        let e = parse_experiment(text, "rel").expect("parse");
        assert_eq!(e.cells.len(), 12);
        // Every cell runs on the 3-broker cluster, RF=1 included.
        assert!(e.cells.iter().all(|c| e.brokers_for(c) == 3));
        let half = e
            .cells
            .iter()
            .find(|c| c.key.id() == "acks-all_rf-3_flush-never_isr-1_rate-mb-per-s-50-")
            .expect("50% cell");
        let rel = half.relative_rate.as_ref().expect("relative");
        assert_eq!(rel.key, "rate_mb_per_s");
        assert!((rel.fraction - 0.5).abs() < 1e-12);
        let reference = &e.cells[rel.reference];
        assert_eq!(
            reference.key.label(),
            "acks=all rf=3 flush=never min.isr=1 rate_mb_per_s=max"
        );
        // Closed loop until the runner sets the rate; fixed-rate cells keep theirs.
        assert_eq!(half.workload.target_records_per_s(), None);
        assert!(e
            .cells
            .iter()
            .any(|c| c.workload.rate_mb_per_s == Some(20.0) && c.relative_rate.is_none()));
        assert_eq!(e.targets.len(), 3);
        let t = &e.targets[0];
        assert_eq!(
            e.cells[t.cell].key.id(),
            "acks-all_rf-3_flush-never_isr-1_rate-mb-per-s-max"
        );
        assert_eq!(
            e.cells[t.of.expect("of")].key.id(),
            "acks-all_rf-1_flush-never_isr-1_rate-mb-per-s-max"
        );
        assert_eq!((t.min, t.max), (Some(0.3), None));
        assert_eq!(e.targets[1].max, Some(10.0));
        assert_eq!(e.targets[2].of_limit.as_deref(), Some("iperf3"));
        assert_eq!((e.targets[2].min, e.targets[2].max), (None, None));
    }

    #[test]
    fn parts_have_their_own_matrix_workload_and_timing() {
        let text = r#"
            [run]
            warmup_s = 1
            duration_s = 5
            [workload]
            message_size = 512
            [workload.topic_configs]
            "segment.bytes" = "1048576"
            [[part]]
            name = "produce"
            matrix = { acks = ["1"], replication_factor = [1], flush = ["never"], producers = [1, 2] }
            workload = { partitions = 4 }
            [[part]]
            name = "consume"
            warmup_s = 0
            duration_s = 30
            matrix = { acks = ["1"], replication_factor = [1], flush = ["never"] }
            [part.workload]
            producers = 0
            consumers = 2
            preload_mb = 8
            [part.workload.topic_configs]
            "retention.bytes" = "1000000"
            [[target]]
            name = "t"
            metric = "consume_mb_per_s"
            cell = { part = "consume" }
            of = { part = "produce", producers = 2 }
        "#;
        let e = parse_experiment(text, "parts").expect("parse");
        let ids: Vec<String> = e.cells.iter().map(|c| c.key.id()).collect();
        assert_eq!(
            ids,
            [
                "produce_acks-1_rf-1_flush-never_producers-1",
                "produce_acks-1_rf-1_flush-never_producers-2",
                "consume_acks-1_rf-1_flush-never"
            ]
        );
        assert_eq!(e.cells[2].key.label(), "consume: acks=1 rf=1 flush=never");
        let (p, c) = (&e.cells[1].workload, &e.cells[2].workload);
        assert_eq!(
            (p.partitions, p.producers, p.warmup_s, p.duration_s),
            (4, 2, 1.0, 5.0)
        );
        assert_eq!(
            (c.consumers, c.producers, c.warmup_s, c.duration_s),
            (2, 0, 0.0, 30.0)
        );
        // Part workloads merge into [workload], nested tables key by key.
        assert_eq!(c.topic_configs["segment.bytes"], "1048576");
        assert_eq!(c.topic_configs["retention.bytes"], "1000000");
        assert_eq!(c.message_size, crate::dist::SizeDist::Fixed(512));
        assert!(!p.topic_configs.contains_key("retention.bytes"));
        assert!(!e.uniform_timing());
        assert!((e.measured_seconds() - (6.0 + 6.0 + 30.0) * 3.0).abs() < 1e-9);
        assert_eq!((e.targets[0].cell, e.targets[0].of), (2, Some(1)));
    }

    #[test]
    fn part_target_and_rate_errors() {
        let m = "[matrix]\nacks=[\"1\"]\nreplication_factor=[1]\nflush=[\"never\"]\n";
        assert!(err(&format!("{m}rate_mb_per_s=[\"50%\", \"max\"]\n")).contains("before it"));
        assert!(err(&format!("{m}rate_mb_per_s=[\"max\", \"x%\"]\n")).contains("percentage"));
        assert!(err(&format!("{m}producers=[\"max\"]\n")).contains("only a rate"));
        assert!(err(&format!("{m}[broker]\nbrokers=0\n")).contains("brokers"));
        assert!(err("[matrix]\nacks=[\"1\"]\nreplication_factor=[3]\nflush=[\"never\"]\n[broker]\nbrokers=2\n")
            .contains("cannot hold replication factor 3"));
        assert!(err(&format!("{m}[broker]\ncpus=\"a-b\"\n")).contains("CPU list"));
        let t = |body: &str| err(&format!("{m}producers=[1,2]\n[[target]]\n{body}\n"));
        assert!(
            t("name=\"x\"\nmetric=\"produce_mb_per_s\"\ncell={acks=\"1\"}")
                .contains("selects 2 cells")
        );
        assert!(
            t("name=\"x\"\nmetric=\"produce_mb_per_s\"\ncell={acks=\"all\"}")
                .contains("selects no cell")
        );
        assert!(t("name=\"x\"\nmetric=\"speed\"\ncell={producers=1}").contains("metric"));
        assert!(
            t("name=\"x\"\nmetric=\"produce_mb_per_s\"\ncell={producers=1}\nof=\"disk\"")
                .contains("machine limit")
        );
        assert!(t("name=\"x\"\nmetric=\"produce_mb_per_s\"\ncell={colour=1}").contains("colour"));
        assert!(err("[[part]]\nname=\"a\"\n").contains("needs a matrix"));
        assert!(err(&format!("{m}[[part]]\nname=\"a\"\n[[part]]\nname=\"a\"\n")).contains("twice"));
        assert!(err(&format!(
            "{m}[[part]]\nname=\"a\"\nworkload={{acks=\"0\"}}\n"
        ))
        .contains("set by the lab"));
        assert!(err(&format!("{m}[[part]]\nname=\"a\"\nrepetitions=2\n")).contains("unknown key"));
    }

    #[test]
    fn cpu_lists() {
        let all = [0, 1, 2, 3];
        assert_eq!(resolve_cpus("lower-half", &all).expect("l"), [0, 1]);
        assert_eq!(resolve_cpus("upper-half", &all).expect("u"), [2, 3]);
        assert_eq!(resolve_cpus("upper-half", &[5]).expect("one"), [5]);
        assert_eq!(resolve_cpus("3, 0-1,1", &all).expect("list"), [0, 1, 3]);
        assert!(resolve_cpus("2-1", &all).is_err());
        assert!(resolve_cpus("", &all).is_err());
    }

    #[test]
    fn committed_experiments_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/experiments");
        let mut names = Vec::new();
        for e in std::fs::read_dir(&dir).expect("tuning/experiments") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "toml") {
                let ex = load_experiment(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                names.push(ex.name.clone());
                if ex.name == "smoke" {
                    // Under five minutes of measured time on one broker (RF=1 cells).
                    let rf1 = ex
                        .cells
                        .iter()
                        .filter(|c| c.key.replication_factor == 1)
                        .count() as f64;
                    let secs =
                        rf1 * ex.run.repetitions as f64 * (ex.run.warmup_s + ex.run.duration_s);
                    assert!(secs < 150.0, "smoke measures {secs} s");
                }
            }
        }
        names.sort();
        for n in ["smoke", "default", "cluster", "standard"] {
            assert!(names.contains(&n.to_string()), "{names:?}");
        }
        // The standard experiment is bench/scenarios/1..5 with their workloads.
        let std = load_experiment(&dir.join("standard.toml")).expect("standard");
        let ids: Vec<String> = std.cells.iter().map(|c| c.key.id()).collect();
        assert_eq!(ids.len(), 2 + 2 + 4 + 3 + 3 + 2, "{ids:?}");
        let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let same = |cell: &str, file: &str, variant: &str| {
            let c = std
                .cells
                .iter()
                .find(|c| c.key.id() == cell)
                .unwrap_or_else(|| panic!("{cell} in {ids:?}"));
            let v = crate::scenario::load_scenario(&scenarios.join(file), &[])
                .expect("scenario")
                .into_iter()
                .find(|v| v.name == variant)
                .expect("variant");
            let (mut a, mut b) = (c.workload.clone(), v.workload);
            // The lab sets the rate of "80%" itself, from the "max" runs.
            if c.relative_rate.is_some() {
                a.rate_mb_per_s = b.rate_mb_per_s;
            }
            a.topic_prefix = b.topic_prefix.clone();
            // acks=all cells name min.insync.replicas=1, the default the scenarios leave.
            a.topic_configs.remove("min.insync.replicas");
            b.replication_factor = a.replication_factor;
            assert_eq!(
                format!("{a:?}"),
                format!("{b:?}"),
                "{cell} vs {file} {variant}"
            );
        };
        same(
            "1-max-produce-acks1_acks-1_rf-1_flush-never_producers-2",
            "1-max-produce-acks1.toml",
            "p2",
        );
        same(
            "2-max-produce-acks-all-fsync_acks-all_rf-1_flush-every-batch_isr-1_producers-1",
            "2-max-produce-acks-all-fsync.toml",
            "p1",
        );
        same(
            "3-max-consume_acks-1_rf-1_flush-never_consumers-2_preload-mb-2000",
            "3-max-consume.toml",
            "disk-c2",
        );
        same(
            "4-fixed-rate-latency_acks-all_rf-1_flush-every-batch_isr-1_rate-mb-per-s-50.0",
            "4-fixed-rate-latency.toml",
            "50mbps",
        );
        same(
            "4-fixed-rate-latency_acks-all_rf-1_flush-every-batch_isr-1_rate-mb-per-s-80-",
            "4-fixed-rate-latency.toml",
            "80pct",
        );
        same(
            "5-partitions-conn1_acks-1_rf-1_flush-never_partitions-1000",
            "5-partitions-connections.toml",
            "part1000-conn1",
        );
        same(
            "5-partitions-conn100_acks-1_rf-1_flush-never_partitions-100",
            "5-partitions-connections.toml",
            "part100-conn100",
        );
        assert_eq!(std.targets.len(), 4);
    }
}

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
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            warmup_s: 2.0,
            duration_s: 10.0,
            repetitions: 3,
            cell_timeout_s: 300.0,
            bench_threads: None,
        }
    }
}

/// `[broker]`: how local brokers are started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSpec {
    /// Shards per broker (`--cores`).
    pub cores: usize,
    /// First port: broker i listens on `base_port + 10*(i-1)` (Kafka), `+1` (controller),
    /// `+2` (admin HTTP), as `shardlog dev cluster` does.
    pub base_port: u16,
    /// CPUs the brokers are pinned to (`taskset -c` list), none by default.
    pub cpus: Option<String>,
    /// Environment of every broker (`SHARDLOG_<KEY>` settings).
    pub env: BTreeMap<String, String>,
}

impl Default for BrokerSpec {
    fn default() -> Self {
        BrokerSpec {
            cores: 1,
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
        let mut s = format!(
            "acks-{}_rf-{}_flush-{}",
            self.acks, self.replication_factor, self.flush
        );
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
        let mut s = format!(
            "acks={} rf={} flush={}",
            self.acks, self.replication_factor, self.flush
        );
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

/// One cell: its settings and the workload it runs.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Its settings.
    pub key: CellKey,
    /// The workload (warm-up and duration from `[run]`).
    pub workload: Workload,
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
}

impl Experiment {
    /// Seconds the runs take at least (warm-up + duration per run), before set-up overheads.
    pub fn measured_seconds(&self) -> f64 {
        self.cells.len() as f64
            * self.run.repetitions as f64
            * (self.run.warmup_s + self.run.duration_s)
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
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("[matrix] must be a table"),
        None => bail!("an experiment needs a [matrix] table"),
    };
    let base = table(&mut doc, "workload")?;
    if let Some(k) = doc.keys().next() {
        bail!(
            "unknown top-level key {k:?} (expected name, description, [run], [matrix], [workload], [broker], [limits])"
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
    if let Some(t) = run.bench_threads {
        ensure!(t >= 1, "[run] bench_threads must be >= 1");
    }
    ensure!(broker.cores >= 1, "[broker] cores must be >= 1");
    ensure!(
        broker.base_port >= 1024,
        "[broker] base_port must be >= 1024"
    );
    for k in RESERVED_WORKLOAD_KEYS {
        ensure!(
            !base.contains_key(k),
            "[workload] {k}: set by the lab ([matrix] / [run]), remove it here"
        );
    }
    if let Some(toml::Value::Table(tc)) = base.get("topic_configs") {
        for k in RESERVED_TOPIC_CONFIGS {
            ensure!(
                !tc.contains_key(k),
                "[workload.topic_configs] {k:?}: set by the matrix (flush, min_insync_replicas), remove it here"
            );
        }
    }

    let acks = list(&matrix, "acks")?
        .iter()
        .map(|v| match v {
            toml::Value::String(s) => Acks::parse(s),
            toml::Value::Integer(i) => Acks::parse(&i.to_string()),
            other => bail!("[matrix] acks: {other} is not 0, 1 or \"all\""),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rfs = list(&matrix, "replication_factor")?
        .iter()
        .map(|v| match v.as_integer() {
            Some(i) if (1..=16).contains(&i) => Ok(i as i16),
            _ => bail!("[matrix] replication_factor: {v} is not an integer 1..=16"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let flushes = list(&matrix, "flush")?
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
        Some(_) => list(&matrix, "min_insync_replicas")?
            .iter()
            .map(|v| match v.as_integer() {
                Some(i) if (1..=16).contains(&i) => Ok(i as i16),
                _ => bail!("[matrix] min_insync_replicas: {v} is not an integer 1..=16"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    let flush_interval_ms = match matrix.get("flush_interval_ms") {
        None => 1000,
        Some(v) => match v.as_integer() {
            Some(i) if i >= 1 => i as u64,
            _ => bail!("[matrix] flush_interval_ms must be an integer >= 1"),
        },
    };
    for (what, dup) in [
        ("acks", has_dup(&acks)),
        ("replication_factor", has_dup(&rfs)),
        ("flush", has_dup(&flushes)),
        ("min_insync_replicas", has_dup(&min_isrs)),
    ] {
        ensure!(!dup, "[matrix] {what} lists a value twice");
    }
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for key in matrix.keys().filter(|k| !MATRIX_KEYS.contains(&k.as_str())) {
        ensure!(
            !RESERVED_WORKLOAD_KEYS.contains(&key.as_str()) && key != "topic_configs",
            "[matrix] {key}: not an optional axis (set by the lab)"
        );
        let values = list(&matrix, key)?.clone();
        ensure!(
            !has_dup(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>()),
            "[matrix] {key} lists a value twice"
        );
        axes.push((key.clone(), values));
    }

    let mut cells = Vec::new();
    let mut not_applicable = Vec::new();
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
                        let workload = cell_workload(&base, &run, &key, flush_interval_ms)
                            .with_context(|| format!("cell {}", key.label()))?;
                        cells.push(Cell { key, workload });
                    }
                }
            }
        }
    }
    ensure!(
        !cells.is_empty(),
        "the matrix has no applicable cell (every min_insync_replicas exceeds every replication_factor)"
    );
    Ok(Experiment {
        name,
        description,
        run,
        broker,
        limits,
        flush_interval_ms,
        cells,
        not_applicable,
    })
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

fn cell_workload(
    base: &toml::Table,
    run: &RunSpec,
    key: &CellKey,
    flush_interval_ms: u64,
) -> anyhow::Result<Workload> {
    let mut t = base.clone();
    let mut over = toml::Table::new();
    over.insert("acks".into(), toml::Value::String(key.acks.name().into()));
    over.insert(
        "replication_factor".into(),
        toml::Value::Integer(key.replication_factor.into()),
    );
    over.insert("warmup_s".into(), toml::Value::Float(run.warmup_s));
    over.insert("duration_s".into(), toml::Value::Float(run.duration_s));
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
    for a in &key.axes {
        // `rate_mb_per_s = ["max", 50]`: "max" is the closed loop (no rate).
        if a.key.starts_with("rate_") && a.value.as_str() == Some("max") {
            closed_loop = true;
            continue;
        }
        over.insert(a.key.clone(), a.value.clone());
    }
    merge_tables(&mut t, over);
    if closed_loop {
        t.remove("rate_mb_per_s");
        t.remove("rate_records_per_s");
    }
    workload_from_table(t)
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
        assert!(
            names.contains(&"smoke".to_string()) && names.contains(&"default".to_string()),
            "{names:?}"
        );
    }
}

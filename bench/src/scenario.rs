//! Scenario files (TOML): a `[workload]` table and optional `[[variant]]` tables, each variant
//! overriding keys of the workload (a variant has a `name`). Command-line `--set key=value`
//! overrides apply on top.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::dist::{KeyDist, SizeDist};

/// How consumers get partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerMode {
    /// Partitions split among consumers by the bench.
    Assigned,
    /// A classic consumer group (range assignment) per topic.
    Group,
}

/// Where consumers start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The log end when the run starts (tail the producers).
    Latest,
    /// The log start (read preloaded data).
    Earliest,
}

/// Everything a run does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// Number of topics.
    pub topics: u32,
    /// Partitions per topic.
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication_factor: i16,
    /// Topic names are `<prefix>-<run id>-<i>`; fresh topics for every run.
    pub topic_prefix: String,
    /// Topic configs at creation (e.g. `flush.messages = "1"`).
    pub topic_configs: BTreeMap<String, String>,
    /// Producer connections (each its own client and TCP connection).
    pub producers: u32,
    /// Consumers.
    pub consumers: u32,
    /// Consumers in a group or on assigned partitions.
    pub consumer_mode: ConsumerMode,
    /// Where consumers start.
    pub consume_from: StartFrom,
    /// Value size in bytes (at least 16: the value starts with the send timestamp).
    pub message_size: SizeDist,
    /// Keys.
    pub keys: KeyDist,
    /// Batch size in bytes.
    pub batch_size: usize,
    /// Linger in ms.
    pub linger_ms: u64,
    /// `all`/`-1`, `1` or `0`.
    pub acks: String,
    /// `none`, `gzip`, `snappy`, `lz4`, `zstd`.
    pub compression: String,
    /// Idempotent producers.
    pub idempotent: bool,
    /// Open loop: total records/s over all producers.
    pub rate_records_per_s: Option<f64>,
    /// Open loop: total MB/s (10^6 bytes of values) over all producers.
    pub rate_mb_per_s: Option<f64>,
    /// Seconds before measuring.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// MB (10^6) of values produced before the run, not measured (for consume scenarios).
    pub preload_mb: f64,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// Producer buffer in MiB.
    pub buffer_mb: usize,
    /// Fetch long-poll wait.
    pub fetch_max_wait_ms: u64,
    /// Fetch min bytes.
    pub fetch_min_bytes: i32,
    /// Fetch response max bytes.
    pub fetch_max_bytes: i32,
    /// Fetch per-partition max bytes.
    pub partition_max_bytes: i32,
    /// Seconds to wait after the measured window for consumers to read what was produced.
    pub drain_s: f64,
    /// Delete the topics at the end.
    pub delete_topics: bool,
    /// Fraction of produced payload bytes that are random (the rest repeats, so compression
    /// has something to do): 1.0 incompressible, 0.0 a repeated pattern.
    pub payload_entropy: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            topics: 1,
            partitions: 1,
            replication_factor: 1,
            topic_prefix: "bench".into(),
            topic_configs: BTreeMap::new(),
            producers: 1,
            consumers: 0,
            consumer_mode: ConsumerMode::Assigned,
            consume_from: StartFrom::Latest,
            message_size: SizeDist::Fixed(1024),
            keys: KeyDist::None,
            batch_size: 1_000_000,
            linger_ms: 5,
            acks: "1".into(),
            compression: "none".into(),
            idempotent: false,
            rate_records_per_s: None,
            rate_mb_per_s: None,
            warmup_s: 2.0,
            duration_s: 10.0,
            preload_mb: 0.0,
            max_in_flight: 5,
            buffer_mb: 64,
            fetch_max_wait_ms: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 52_428_800,
            partition_max_bytes: 8_388_608,
            drain_s: 5.0,
            delete_topics: false,
            payload_entropy: 0.5,
        }
    }
}

impl Workload {
    /// The acks value as the protocol number.
    pub fn acks_value(&self) -> anyhow::Result<i16> {
        match self.acks.trim().to_ascii_lowercase().as_str() {
            "all" | "-1" => Ok(-1),
            "1" | "leader" => Ok(1),
            "0" | "none" => Ok(0),
            other => bail!("acks {other:?}: use all, 1 or 0"),
        }
    }

    /// Total target rate in records/s (open loop), None for closed loop.
    pub fn target_records_per_s(&self) -> Option<f64> {
        match (self.rate_records_per_s, self.rate_mb_per_s) {
            (Some(r), _) => Some(r),
            (None, Some(mb)) => Some(mb * 1e6 / self.message_size.mean().max(1.0)),
            (None, None) => None,
        }
    }

    /// Checks values that would make a run meaningless.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.acks_value()?;
        shardlog_client::records::parse_compression(&self.compression)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(self.topics >= 1, "topics must be >= 1");
        anyhow::ensure!(self.partitions >= 1, "partitions must be >= 1");
        anyhow::ensure!(
            self.producers >= 1 || self.consumers >= 1,
            "need producers or consumers"
        );
        anyhow::ensure!(
            self.message_size.min() >= 16,
            "message_size must be >= 16 (values carry a timestamp)"
        );
        anyhow::ensure!(self.duration_s > 0.0, "duration_s must be > 0");
        anyhow::ensure!(self.warmup_s >= 0.0, "warmup_s must be >= 0");
        anyhow::ensure!(self.batch_size >= 1, "batch_size must be >= 1");
        anyhow::ensure!(self.max_in_flight >= 1, "max_in_flight must be >= 1");
        anyhow::ensure!(
            self.buffer_mb * 1024 * 1024 >= self.batch_size,
            "buffer_mb must hold at least one batch"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.payload_entropy),
            "payload_entropy must be in [0, 1]"
        );
        if self.idempotent {
            anyhow::ensure!(self.acks_value()? == -1, "idempotent needs acks = all");
        }
        if let Some(r) = self.target_records_per_s() {
            anyhow::ensure!(r > 0.0, "rate must be > 0");
        }
        crate::dist::KeyGen::new(&self.keys)?;
        Ok(())
    }
}

/// One runnable variant of a scenario.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Scenario name.
    pub scenario: String,
    /// Variant name (`default` when the file has none).
    pub name: String,
    /// The merged workload.
    pub workload: Workload,
}

/// Parses a scenario file's text into its variants, applying `overrides` (`key=value`, value
/// parsed as TOML, else taken as a string) to each.
pub fn parse_scenario(
    text: &str,
    fallback_name: &str,
    overrides: &[String],
) -> anyhow::Result<Vec<Variant>> {
    let mut doc: toml::Table = toml::from_str(text).context("scenario TOML")?;
    let name = match doc.remove("name") {
        Some(toml::Value::String(s)) => s,
        Some(_) => bail!("name must be a string"),
        None => fallback_name.to_string(),
    };
    doc.remove("description");
    let base = match doc.remove("workload") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("[workload] must be a table"),
        None => toml::Table::new(),
    };
    let variants = match doc.remove("variant") {
        Some(toml::Value::Array(a)) => a,
        Some(_) => bail!("variant must be an array of tables ([[variant]])"),
        None => Vec::new(),
    };
    if let Some(k) = doc.keys().next() {
        bail!("unknown top-level key {k:?} (expected name, description, [workload], [[variant]])");
    }
    let over = parse_overrides(overrides)?;
    let build = |vname: String, extra: toml::Table| -> anyhow::Result<Variant> {
        let mut t = base.clone();
        merge(&mut t, extra);
        merge(&mut t, over.clone());
        let workload: Workload = toml::Value::Table(t)
            .try_into()
            .with_context(|| format!("scenario {name} variant {vname}"))?;
        workload
            .validate()
            .with_context(|| format!("scenario {name} variant {vname}"))?;
        Ok(Variant {
            scenario: name.clone(),
            name: vname,
            workload,
        })
    };
    if variants.is_empty() {
        return Ok(vec![build("default".into(), toml::Table::new())?]);
    }
    let mut out = Vec::new();
    for (i, v) in variants.into_iter().enumerate() {
        let toml::Value::Table(mut t) = v else {
            bail!("variant {i} must be a table");
        };
        let vname = match t.remove("name") {
            Some(toml::Value::String(s)) => s,
            _ => format!("v{i}"),
        };
        out.push(build(vname, t)?);
    }
    Ok(out)
}

/// Builds a workload from a `[workload]`-shaped table (unknown keys refused) and validates it.
pub fn workload_from_table(t: toml::Table) -> anyhow::Result<Workload> {
    let workload: Workload = toml::Value::Table(t).try_into()?;
    workload.validate()?;
    Ok(workload)
}

/// Merges `from` into `into`: tables key by key, anything else replaced.
pub fn merge_tables(into: &mut toml::Table, from: toml::Table) {
    merge(into, from)
}

/// Reads and parses a scenario file.
pub fn load_scenario(path: &Path, overrides: &[String]) -> anyhow::Result<Vec<Variant>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    parse_scenario(&text, &stem, overrides)
}

/// Parses `key=value` overrides; dotted keys address nested tables (`topic_configs.x=1`).
pub fn parse_overrides(items: &[String]) -> anyhow::Result<toml::Table> {
    let mut t = toml::Table::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("override {item:?} is not key=value"))?;
        let value: toml::Value = match toml::from_str::<toml::Table>(&format!("x = {v}")) {
            Ok(mut tt) => tt.remove("x").unwrap_or(toml::Value::String(v.to_string())),
            Err(_) => toml::Value::String(v.to_string()),
        };
        // `table.key` addresses a nested table; the key itself may contain dots
        // (`topic_configs.flush.ms=0`), and topic config values are always strings.
        let k = k.trim();
        match k.split_once('.') {
            Some((table, key)) => {
                let entry = t
                    .entry(table.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let inner = entry
                    .as_table_mut()
                    .with_context(|| format!("override {k}: {table} is not a table"))?;
                let value = if table == "topic_configs" {
                    toml::Value::String(v.trim().trim_matches('"').to_string())
                } else {
                    value
                };
                inner.insert(key.to_string(), value);
            }
            None => {
                t.insert(k.to_string(), value);
            }
        }
    }
    Ok(t)
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::SizeSpec;

    #[test]
    fn variants_override_workload() {
        let text = r#"
            name = "max-produce"
            description = "d"
            [workload]
            partitions = 4
            acks = "1"
            message_size = 1024
            [workload.topic_configs]
            "flush.messages" = "1"
            [[variant]]
            name = "p1"
            producers = 1
            [[variant]]
            name = "p2"
            producers = 2
            keys = { dist = "zipf", count = 1000, exponent = 1.1 }
            message_size = { dist = "uniform", min = 100, max = 2000 }
        "#;
        let v = parse_scenario(text, "x", &[]).expect("parse");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].scenario, "max-produce");
        assert_eq!(v[0].name, "p1");
        assert_eq!(v[0].workload.producers, 1);
        assert_eq!(v[1].workload.producers, 2);
        assert_eq!(v[1].workload.partitions, 4);
        assert_eq!(v[0].workload.keys, KeyDist::None);
        assert_eq!(
            v[1].workload.keys,
            KeyDist::Zipf {
                count: 1000,
                exponent: 1.1
            }
        );
        assert_eq!(
            v[1].workload.message_size,
            SizeDist::Dist(SizeSpec::Uniform {
                min: 100,
                max: 2000
            })
        );
        assert_eq!(v[0].workload.topic_configs["flush.messages"], "1");
        assert_eq!(v[0].workload.acks_value().expect("acks"), 1);
    }

    #[test]
    fn overrides_and_errors() {
        let text = "[workload]\nacks = \"all\"\n";
        let v = parse_scenario(
            text,
            "file",
            &[
                "rate_mb_per_s=50".into(),
                "topic_configs.flush.ms=0".into(),
                "compression=zstd".into(),
            ],
        )
        .expect("parse");
        assert_eq!(v[0].scenario, "file");
        assert_eq!(v[0].name, "default");
        assert_eq!(v[0].workload.rate_mb_per_s, Some(50.0));
        assert_eq!(v[0].workload.compression, "zstd");
        assert_eq!(v[0].workload.topic_configs["flush.ms"], "0");
        let r = v[0].workload.target_records_per_s().expect("rate");
        assert!((r - 50e6 / 1024.0).abs() < 1e-6);
        // Unknown keys, bad acks, too-small messages are refused.
        assert!(parse_scenario("[workload]\nbogus = 1\n", "f", &[]).is_err());
        assert!(parse_scenario("[workload]\nacks = \"2\"\n", "f", &[]).is_err());
        assert!(parse_scenario("[workload]\nmessage_size = 8\n", "f", &[]).is_err());
        assert!(parse_scenario("whatever = 1\n", "f", &[]).is_err());
        assert!(parse_scenario("[workload]\nidempotent = true\nacks = \"1\"\n", "f", &[]).is_err());
    }

    #[test]
    fn standard_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("scenarios dir") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "toml") {
                let v = load_scenario(&p, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                assert!(!v.is_empty());
                n += 1;
            }
        }
        assert!(n >= 5, "expected the 5 standard scenarios, found {n}");
    }
}

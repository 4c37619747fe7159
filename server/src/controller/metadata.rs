//! Cluster metadata: the image (topics, partition counts, leader epochs, topic configs, the
//! producer-id block), the rules for topic names and configs, and how topic configs map to
//! the engine's log settings.
//!
//! The image changes only by applying committed metadata-log records
//! ([`crate::controller::records`]); the log that commits them is behind the
//! [`MetadataLog`](crate::controller::log::MetadataLog) trait, and the one place that proposes
//! changes is the metadata authority on shard 0 ([`crate::controller::authority`]). Every
//! shard applies the same records to its own copy, so readers (Metadata, routing) never lock.
//!
//! Producer ids are handed out from blocks of [`PRODUCER_ID_BLOCK`]: the committed value is the
//! end of the current block, so a restart never reuses an id and InitProducerId costs a commit
//! only once per block.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shardlog_engine::{FlushPolicy, LogConfig, TimestampType};

use crate::config::{BrokerConfig, DefaultFlush};
use crate::partition::compression::{CompressionPolicy, CompressionType};
use crate::wire::errors;

pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// The `leader` of a partition that has none (offline).
pub const NO_LEADER: i32 = -1;

/// One partition's replication state, as the controller last committed it.
///
/// Images written before replication existed hold only `leader_epoch`; they load with the
/// other fields empty and [`ClusterMeta::upgrade_single_node`] fills them in (every replica
/// on the one node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub leader_epoch: i32,
    /// Bumped by every change of leader, ISR or ELR (KIP-497's partition epoch): an
    /// AlterPartition based on an older one is refused.
    #[serde(default)]
    pub partition_epoch: i32,
    /// The leader's broker id, [`NO_LEADER`] when the partition is offline.
    #[serde(default = "no_leader")]
    pub leader: i32,
    /// The assigned replicas, preferred leader first.
    #[serde(default)]
    pub replicas: Vec<i32>,
    /// The in-sync replicas (the leader among them while there is one).
    #[serde(default)]
    pub isr: Vec<i32>,
    /// KIP-966 eligible leader replicas: replicas that left the ISR while it was below
    /// min.insync.replicas and still hold every committed record.
    #[serde(default)]
    pub elr: Vec<i32>,
}

fn no_leader() -> i32 {
    NO_LEADER
}

impl PartitionMeta {
    /// A new partition on `replicas`: the first leads, all are in sync, epochs 0.
    pub fn new(replicas: Vec<i32>) -> Self {
        Self {
            leader_epoch: 0,
            partition_epoch: 0,
            leader: replicas.first().copied().unwrap_or(NO_LEADER),
            isr: replicas.clone(),
            replicas,
            elr: Vec::new(),
        }
    }
}

/// A registered broker (KIP-631), as the controller last committed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    pub id: i32,
    /// The broker epoch (KIP-903) the controller gave its latest registration: requests
    /// carrying an older one come from a previous incarnation and are refused.
    pub epoch: i64,
    /// Random id of the registering process (KIP-631 incarnation id).
    pub incarnation: u128,
    /// The advertised Kafka address.
    pub host: String,
    pub port: u16,
    /// A fenced broker leads nothing and is in no ISR; registered brokers start fenced.
    pub fenced: bool,
    /// Controlled shutdown in progress: leaderships are being moved away.
    pub shutting_down: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// Kafka topic id (UUID) as 128 bits.
    pub id: u128,
    pub partitions: Vec<PartitionMeta>,
    /// Only the configs set explicitly on the topic; defaults come from the broker config.
    pub configs: BTreeMap<String, String>,
}

/// The metadata image: what applying the committed [`MetadataRecord`]s in order gives
/// ([`ClusterMeta::apply`], in [`crate::controller::records`]).
///
/// [`MetadataRecord`]: crate::controller::records::MetadataRecord
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub topics: BTreeMap<String, TopicMeta>,
    /// End of the producer-id block handed out last (exclusive).
    pub producer_id_block_end: i64,
    /// Registered brokers by id.
    #[serde(default)]
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// Index of the last metadata-log record applied (0: none, or a file written before the
    /// metadata log existed, which lacks the field). Set by the log, not by `apply`.
    #[serde(default)]
    pub applied_index: u64,
}

impl ClusterMeta {
    /// One partition's state.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionMeta> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    /// Brokers registered and not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Fills in the replication fields of partitions from an image written before
    /// replication existed (they have no replicas): every such partition is on `node_id`
    /// alone, which leads it and is its ISR. Returns whether anything changed.
    pub fn upgrade_single_node(&mut self, node_id: i32) -> bool {
        let mut changed = false;
        for t in self.topics.values_mut() {
            for p in t.partitions.iter_mut().filter(|p| p.replicas.is_empty()) {
                p.replicas = vec![node_id];
                p.isr = vec![node_id];
                p.leader = node_id;
                changed = true;
            }
        }
        changed
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt metadata file {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// Kafka's topic name rules: 1..=249 chars of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > 249 {
        return Err(format!("topic name is {} chars, max 249", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("topic name contains illegal character {c:?}"));
    }
    Ok(())
}

/// Topic configs this broker understands, with their Kafka defaults where the broker config
/// does not decide them.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "flush.messages",
    "flush.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "compression.type",
    "min.insync.replicas",
];

/// A request's string for an error message: Debug-quoted and cut after [`ECHO_CHARS`]
/// characters. Error messages go back in responses, whose strings hold at most 32767 bytes in
/// the non-flexible versions; a message quoting a whole 32 KiB config value (or growing it with
/// escapes) could not be encoded, and the client would get no answer at all.
pub fn quoted(s: &str) -> String {
    match s.char_indices().nth(ECHO_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
    }
}

/// How much of a request's string an error message repeats.
pub const ECHO_CHARS: usize = 64;

/// Checks one topic config value; returns a message for INVALID_CONFIG / POLICY_VIOLATION.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), (i16, String)> {
    let int = |min: i64| -> Result<(), (i16, String)> {
        match value.parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            _ => Err((
                errors::INVALID_CONFIG,
                format!("{key} must be an integer >= {min}, got {}", quoted(value)),
            )),
        }
    };
    match key {
        "cleanup.policy" => {
            if value == "delete" {
                Ok(())
            } else {
                Err((
                    errors::POLICY_VIOLATION,
                    format!(
                        "cleanup.policy={} is not supported (only delete)",
                        quoted(value)
                    ),
                ))
            }
        }
        "retention.ms" | "retention.bytes" => int(-1),
        "segment.bytes" => int(14),
        "segment.ms" => int(1),
        "flush.messages" => int(1),
        "flush.ms" => int(0),
        "max.message.bytes" => int(0),
        "min.insync.replicas" => int(1),
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err((
                errors::INVALID_CONFIG,
                format!(
                    "message.timestamp.type must be CreateTime or LogAppendTime, got {}",
                    quoted(value)
                ),
            )),
        },
        "compression.type" => match CompressionType::parse(value) {
            Some(_) => Ok(()),
            None => Err((
                errors::INVALID_CONFIG,
                format!(
                    "compression.type must be one of {}, got {}",
                    CompressionType::NAMES.join(", "),
                    quoted(value)
                ),
            )),
        },
        _ => Err((
            errors::INVALID_CONFIG,
            format!("unknown or unsupported topic config {}", quoted(key)),
        )),
    }
}

/// Applies one AlterConfigs / IncrementalAlterConfigs operation on `key` to a topic's
/// explicit configs: 0 sets (a null value deletes), 1 deletes; APPEND/SUBTRACT (2, 3) are for
/// list configs, which no supported topic config is. A refused operation leaves `configs`
/// unchanged and returns the code and message for the response.
pub fn apply_config_op(
    configs: &mut BTreeMap<String, String>,
    key: String,
    op: i8,
    value: Option<String>,
) -> Result<(), (i16, String)> {
    match (op, value) {
        (0, Some(v)) => {
            validate_topic_config(&key, &v)?;
            configs.insert(key, v);
        }
        (1, _) | (0, None) => {
            configs.remove(&key);
        }
        (op, _) => {
            return Err((
                errors::INVALID_CONFIG,
                format!("config operation {op} on {} is not supported", quoted(&key)),
            ))
        }
    }
    Ok(())
}

/// The effective value of every known topic config, and whether it is the default.
pub fn effective_configs(topic: &TopicMeta, broker: &BrokerConfig) -> Vec<(String, String, bool)> {
    let defaults: BTreeMap<&str, String> = [
        ("cleanup.policy", "delete".to_string()),
        ("retention.ms", broker.default_retention_ms.to_string()),
        ("retention.bytes", "-1".to_string()),
        ("segment.bytes", broker.default_segment_bytes.to_string()),
        ("segment.ms", (7 * 24 * 3600 * 1000i64).to_string()),
        (
            "flush.messages",
            match broker.default_flush {
                DefaultFlush::EveryBatch => "1".to_string(),
                _ => i64::MAX.to_string(),
            },
        ),
        (
            "flush.ms",
            match broker.default_flush {
                DefaultFlush::Interval => broker.flush_interval_ms.to_string(),
                DefaultFlush::EveryBatch => "0".to_string(),
                DefaultFlush::Never => i64::MAX.to_string(),
            },
        ),
        (
            "max.message.bytes",
            broker.default_max_message_bytes.to_string(),
        ),
        ("message.timestamp.type", "CreateTime".to_string()),
        ("compression.type", broker.compression_type.clone()),
        ("min.insync.replicas", "1".to_string()),
    ]
    .into_iter()
    .collect();
    TOPIC_CONFIG_KEYS
        .iter()
        .map(|k| match topic.configs.get(*k) {
            Some(v) => (k.to_string(), v.clone(), false),
            None => (
                k.to_string(),
                defaults.get(k).cloned().unwrap_or_default(),
                true,
            ),
        })
        .collect()
}

/// Maps topic configs (over broker defaults) to the engine's [`LogConfig`].
///
/// Flush: `flush.messages=1` (or `flush.ms=0`) is "fsync every batch" (acks=all acknowledged
/// after fsync, with group commit); a larger `flush.ms` is an interval flush; a larger
/// `flush.messages` alone means interval flush at the broker's `flush_interval_ms` (the engine
/// counts bytes and time, not messages); neither set takes the broker's `default_flush`.
pub fn log_config(topic: &TopicMeta, broker: &BrokerConfig) -> LogConfig {
    let mut c = LogConfig {
        segment_bytes: broker.default_segment_bytes,
        retention_ms: (broker.default_retention_ms >= 0).then_some(broker.default_retention_ms),
        max_batch_bytes: broker.default_max_message_bytes,
        cache_bytes: broker.log_cache_bytes,
        preallocate_bytes: broker.log_preallocate_bytes,
        recycle_segments: broker.log_recycle_segments,
        ..LogConfig::default()
    };
    let get = |k: &str| topic.configs.get(k).and_then(|v| v.parse::<i64>().ok());
    if let Some(v) = get("retention.ms") {
        c.retention_ms = (v >= 0).then_some(v);
    }
    if let Some(v) = get("retention.bytes") {
        c.retention_bytes = (v >= 0).then_some(v as u64);
    }
    if let Some(v) = get("segment.bytes") {
        c.segment_bytes = v.max(4096) as u64;
    }
    if let Some(v) = get("segment.ms") {
        c.segment_ms = v.max(1);
    }
    if let Some(v) = get("max.message.bytes") {
        c.max_batch_bytes = v.clamp(0, i64::from(i32::MAX)) as usize;
    }
    if topic
        .configs
        .get("message.timestamp.type")
        .map(String::as_str)
        == Some("LogAppendTime")
    {
        c.timestamp_type = TimestampType::LogAppendTime;
    }
    let default_flush = match broker.default_flush {
        DefaultFlush::EveryBatch => FlushPolicy::EveryBatch,
        DefaultFlush::Interval => FlushPolicy::Interval {
            bytes: 0,
            ms: broker.flush_interval_ms,
        },
        DefaultFlush::Never => FlushPolicy::Never,
    };
    let huge = i64::MAX / 2;
    c.flush = match (get("flush.messages"), get("flush.ms")) {
        (Some(1), _) | (_, Some(0)) => FlushPolicy::EveryBatch,
        (_, Some(ms)) if ms < huge => FlushPolicy::Interval {
            bytes: 0,
            ms: ms as u64,
        },
        (Some(n), _) if n < huge => FlushPolicy::Interval {
            bytes: 0,
            ms: broker.flush_interval_ms,
        },
        (Some(_), _) | (_, Some(_)) => FlushPolicy::Never,
        (None, None) => default_flush,
    };
    c
}

/// How a topic's partitions treat produced batches: its `compression.type` (else the
/// broker's) and the broker's validation settings.
pub fn compression_policy(topic: &TopicMeta, broker: &BrokerConfig) -> CompressionPolicy {
    let target = topic
        .configs
        .get("compression.type")
        .and_then(|v| CompressionType::parse(v))
        .or_else(|| CompressionType::parse(&broker.compression_type))
        .unwrap_or(CompressionType::Producer);
    CompressionPolicy {
        target,
        validate: broker.validate_compressed_batches,
        max_decompressed_bytes: broker.max_decompressed_batch_bytes,
    }
}

/// A fresh topic id: random bits from the OS, never the all-zero id.
pub fn new_topic_id() -> u128 {
    let mut b = [0u8; 16];
    // SAFETY: `b` is a valid, writable 16-byte buffer for the duration of the call.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 16 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t ^ 0x5eed_5eed_5eed_5eed_5eed_5eed_5eed_5eed).to_be_bytes();
    }
    u128::from_be_bytes(b).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(configs: &[(&str, &str)]) -> TopicMeta {
        TopicMeta {
            name: "t".into(),
            id: 1,
            partitions: vec![PartitionMeta::new(vec![1])],
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("a.b_c-1").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn flush_configs_map_to_policies() {
        let b = BrokerConfig::default();
        assert_eq!(log_config(&topic(&[]), &b).flush, FlushPolicy::EveryBatch);
        assert_eq!(
            log_config(&topic(&[("flush.messages", "1")]), &b).flush,
            FlushPolicy::EveryBatch
        );
        assert_eq!(
            log_config(&topic(&[("flush.ms", "200")]), &b).flush,
            FlushPolicy::Interval { bytes: 0, ms: 200 }
        );
        assert_eq!(
            log_config(&topic(&[("flush.messages", "9223372036854775807")]), &b).flush,
            FlushPolicy::Never
        );
        let never = BrokerConfig {
            default_flush: DefaultFlush::Never,
            ..BrokerConfig::default()
        };
        assert_eq!(log_config(&topic(&[]), &never).flush, FlushPolicy::Never);
        let c = log_config(
            &topic(&[
                ("retention.ms", "-1"),
                ("message.timestamp.type", "LogAppendTime"),
                ("max.message.bytes", "5000"),
            ]),
            &b,
        );
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(c.max_batch_bytes, 5000);
    }

    #[test]
    fn config_validation() {
        assert!(validate_topic_config("retention.ms", "1000").is_ok());
        assert_eq!(
            validate_topic_config("cleanup.policy", "compact").map_err(|e| e.0),
            Err(errors::POLICY_VIOLATION)
        );
        assert_eq!(
            validate_topic_config("retention.ms", "abc").map_err(|e| e.0),
            Err(errors::INVALID_CONFIG)
        );
        assert_eq!(
            validate_topic_config("bogus", "1").map_err(|e| e.0),
            Err(errors::INVALID_CONFIG)
        );
        for v in ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"] {
            assert!(validate_topic_config("compression.type", v).is_ok(), "{v}");
        }
        assert_eq!(
            validate_topic_config("compression.type", "brotli").map_err(|e| e.0),
            Err(errors::INVALID_CONFIG)
        );
    }

    /// A config key or value of 32767 bytes (the most a non-flexible request string holds),
    /// with characters that Debug-escape to several bytes: the refusal still fits in the
    /// response's error message (found by review; the `request_body` fuzz target encodes these
    /// messages into the API's response for every decoded admin request).
    #[test]
    fn refusals_repeat_at_most_a_prefix_of_the_request() {
        use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
        use kafka_protocol::messages::{ApiKey, CreateTopicsResponse};
        use kafka_protocol::protocol::StrBytes;
        let long = "\u{1}".repeat(i16::MAX as usize);
        let mut configs = BTreeMap::new();
        let refusals = [
            validate_topic_config("retention.ms", &long),
            validate_topic_config("cleanup.policy", &long),
            validate_topic_config("message.timestamp.type", &long),
            validate_topic_config("compression.type", &long),
            validate_topic_config(&long, "1"),
            apply_config_op(&mut configs, long.clone(), 2, None),
            apply_config_op(&mut configs, "retention.ms".into(), 0, Some(long.clone())),
        ];
        for r in refusals {
            let (code, msg) = r.expect_err("refused");
            assert!(msg.len() < 600, "{} bytes: {msg}", msg.len());
            assert!(msg.contains("(32767 bytes)"), "{msg}");
            let mut t = CreatableTopicResult::default();
            t.error_code = code;
            t.error_message = Some(StrBytes::from_string(msg));
            let mut resp = CreateTopicsResponse::default();
            resp.topics.push(t);
            crate::wire::protocol::encode_response(ApiKey::CreateTopics, 4, 1, &resp)
                .expect("the refusal fits a non-flexible response");
        }
        assert!(configs.is_empty(), "refused operations change nothing");
        assert_eq!(quoted("compact"), "\"compact\"");
    }
}

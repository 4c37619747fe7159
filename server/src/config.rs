//! Broker configuration: embedded defaults, then a TOML file, then `SHARDLOG_*` environment
//! variables, then command-line flags (each layer overrides the one before).
//!
//! Every field has a default so `shardlog start` works with no file at all. Values are checked
//! once, at start-up, by [`BrokerConfig::validate`]; a bad value stops the broker with a message
//! naming the key and the accepted range instead of surfacing later as a strange runtime error.
//! Names carry their units (`_ms`, `_bytes`) so related keys sort together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The operator CLI's broker list, when no flag gives it.
pub const ENV_BROKERS: &str = "SHARDLOG_BROKERS";
/// The operator CLI's profile, when no flag selects one.
pub const ENV_PROFILE: &str = "SHARDLOG_PROFILE";
/// The operator CLI's profile file, instead of the default path.
pub const ENV_CONFIG: &str = "SHARDLOG_CLI_CONFIG";
/// The operator CLI's own variables (crate `shardlog-cli`): `shardlog start` leaves them
/// alone (its configuration is `SHARDLOG_<KEY>` too, and these name no broker setting).
pub const CLI_ENV_VARS: [&str; 3] = [ENV_BROKERS, ENV_PROFILE, ENV_CONFIG];

/// Keys whose default is "unset": absent from [`BrokerConfig::as_table`] until set, but
/// still configuration keys for `SHARDLOG_<KEY>`.
const OPTIONAL_STRING_KEYS: [&str; 3] = ["advertised", "controller_listen", "voters"];

/// What `flush.messages` / `flush.ms` a topic gets when it sets neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultFlush {
    /// fsync (group commit) before acks=all is acknowledged (Redpanda's default).
    EveryBatch,
    /// fsync every `flush_interval_ms`; acks=all is acknowledged once written.
    Interval,
    /// Never fsync except on roll/close; acks=all is acknowledged once written.
    Never,
}

/// Format of the log lines written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// The whole broker configuration. Field names are the TOML keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address the Kafka listener binds.
    pub listen: String,
    /// Address advertised to clients in Metadata (defaults to `listen`).
    pub advertised: Option<String>,
    pub data_dir: PathBuf,
    /// Number of shards (pinned executors). 0 = one per available core.
    pub cores: usize,
    /// This broker's id (>= 1: the controller quorum's ids start at 1).
    pub node_id: i32,
    /// Address of the controller listener (raft and controller RPC between brokers). Needed
    /// with `voters`; a single node without `voters` needs none.
    pub controller_listen: Option<String>,
    /// The controller quorum's voters, Kafka's `controller.quorum.voters` form
    /// `1@host:port,2@host:port,3@host:port` (each port a voter's `controller_listen`).
    /// Absent: this node is its own sole voter (the single-node broker). A broker not in
    /// the list follows the metadata log as a learner.
    pub voters: Option<String>,
    pub cluster_id: String,
    /// `tracing` filter used when RUST_LOG is unset.
    pub log_level: String,
    /// Log line format on stderr: `text` or `json` (one JSON object per line).
    pub log_format: LogFormat,
    /// Address of the admin HTTP listener (`/metrics`, `/health`); empty disables it.
    pub admin_listen: String,

    pub auto_create_topics: bool,
    pub default_partitions: i32,
    /// Replicas of topics created with replication factor -1 (Kafka's
    /// `default.replication.factor`).
    pub default_replication_factor: i16,
    pub default_flush: DefaultFlush,
    pub flush_interval_ms: u64,
    pub default_retention_ms: i64,
    pub default_segment_bytes: u64,
    pub default_max_message_bytes: usize,
    /// Kafka `compression.type` for topics that do not set it: `producer` (store batches as
    /// sent) or a codec (`uncompressed`, `gzip`, `snappy`, `lz4`, `zstd`) to recompress to.
    pub compression_type: String,
    /// Decompress every compressed produced batch and check its records before storing it
    /// (Kafka always does): a batch no consumer could decompress is refused instead of
    /// stalling every consumer at its offset.
    pub validate_compressed_batches: bool,
    /// The most bytes one produced batch's records may decompress to (bounds the memory and
    /// work a decompression bomb costs); larger batches are refused with MESSAGE_TOO_LARGE.
    pub max_decompressed_batch_bytes: usize,

    /// Kafka `socket.request.max.bytes`: larger frames close the connection.
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    /// Kafka `max.connections.per.ip`: connections from one client address; 0 = no limit of its
    /// own (only `max_connections`).
    pub max_connections_per_ip: usize,
    pub max_inflight_requests: usize,
    /// Kafka `queued.max.request.bytes`: request bytes read and not yet answered, broker-wide
    /// (split evenly over shards). A connection whose next request does not fit waits before
    /// reading it (back-pressure), so buffered produce data cannot grow without bound.
    pub max_request_memory_bytes: usize,
    /// Kafka `connections.max.idle.ms`: a connection with nothing in flight that sends no
    /// request for this long is closed.
    pub connection_idle_timeout_ms: u64,
    /// Once the first byte of a request has arrived, the whole frame must arrive within this
    /// (a client that sends half a frame and stalls is disconnected).
    pub request_read_timeout_ms: u64,
    pub fetch_session_cache_slots: usize,
    pub fetch_max_wait_ms_cap: u64,
    /// Kafka `fetch.max.bytes`: the most record bytes one Fetch response carries, whatever the
    /// request asks (its `max_bytes` is clamped to this; <= 0 means this). As in Kafka, the
    /// first record batch is returned even when it alone is larger, so consumers progress.
    pub fetch_max_bytes: usize,
    /// Answer bytes one connection may have reserved (answers being prepared: a Fetch reserves
    /// its limit) or queued unsent (waiting for the client to read). A request that does not
    /// fit waits before it is handled, and the connection reads no further requests meanwhile
    /// (back-pressure); one answer always proceeds, however large.
    pub max_response_queue_bytes: usize,

    pub tick_interval_ms: u64,
    pub retention_check_interval_ms: u64,
    /// glommio io_memory per executor (registered with io_uring; counts against MEMLOCK).
    pub io_memory_bytes: usize,
    pub shutdown_grace_ms: u64,
    /// How often a broker heartbeats to the controller leader (KIP-631's
    /// `broker.heartbeat.interval.ms`).
    pub broker_heartbeat_interval_ms: u64,
    /// A broker the controller has not heard from for this long is fenced and its
    /// leaderships move (`broker.session.timeout.ms`); must be above the heartbeat interval.
    pub broker_session_timeout_ms: u64,
    /// Batch cache per partition log.
    pub log_cache_bytes: usize,
    /// Batch caches of all partition logs together, broker-wide (split evenly over shards):
    /// past it the oldest cached batches of the shard are evicted, whichever partition holds
    /// them. Bounds memory however many partitions there are.
    pub log_cache_total_bytes: usize,
    /// Space preallocated ahead of the write position per segment.
    pub log_preallocate_bytes: u64,
    /// Reuse the file of a segment retention deletes as the next segment (one per partition).
    pub log_recycle_segments: bool,
    /// Segments deleted by retention are freed in the background this many bytes at a time
    /// (0: in one step), with `segment_delete_interval_ms` between steps, after a grace period
    /// of `segment_delete_delay_ms` (Kafka `file.delete.delay.ms`).
    pub segment_delete_chunk_bytes: u64,
    pub segment_delete_interval_ms: u64,
    pub segment_delete_delay_ms: u64,
    /// A partition log's write or fdatasync slower than this is logged as a warning (at most
    /// one line per second per shard); 0 logs none. Every one is timed in `/metrics`
    /// (`shardlog_disk_op_duration_seconds`) either way.
    pub slow_disk_op_ms: u64,
    /// Sealed-segment files kept open, broker-wide (split evenly over shards). A sealed
    /// segment is opened when it is read and closed when it is the least recently used one
    /// past this bound, so descriptors do not grow with the retained data (each partition
    /// still holds its active segment open).
    pub max_open_segment_files: usize,
    /// A partition whose log could not be opened (it is offline: leader -1 in Metadata,
    /// KAFKA_STORAGE_ERROR to requests) is tried again this often.
    pub partition_open_retry_ms: u64,

    /// Kafka `group.initial.rebalance.delay.ms` (0 disables; tests use 0).
    pub group_initial_rebalance_delay_ms: u64,
    /// Kafka `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// Kafka `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// Partitions of the internal `__consumer_offsets` log; 0 = 2 × cores. Fixed by the first
    /// start (remembered in `<data_dir>/__consumer_offsets/partitions`).
    pub offsets_topic_partitions: usize,
    /// Kafka `offsets.retention.minutes`, in ms: offsets of an empty group expire after this.
    pub offsets_retention_ms: u64,
    /// An internal partition holding more records than this (and twice its last snapshot) is
    /// snapshotted and its log start moved (bounds replay at start-up).
    pub offsets_snapshot_records: u64,

    /// Kafka `producer.id.expiration.ms`: an idempotent producer that has not appended to a
    /// partition for this long is forgotten there (its next batch starts afresh).
    pub producer_id_expiration_ms: u64,
    /// Kafka `producer.id.expiration.check.interval.ms`: how often expiry runs.
    pub producer_id_expiration_check_interval_ms: u64,
    /// Producer ids one partition remembers at most; past it the least recently used are
    /// forgotten. Bounds the memory of idempotent-producer state (roughly 200-260 bytes per
    /// id by struct sizes).
    pub max_producer_ids_per_partition: usize,

    /// Kafka `replica.lag.time.max.ms`: a follower that has not caught up with the leader's
    /// log end for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// Kafka `replica.fetch.max.bytes`: record bytes a follower asks for per partition and
    /// fetch (the first batch comes whatever its size).
    pub replica_fetch_max_bytes: usize,
    /// Kafka `replica.fetch.response.max.bytes`: record bytes a follower asks for per fetch.
    pub replica_fetch_response_max_bytes: usize,
    /// Kafka `replica.fetch.wait.max.ms`: how long a caught-up follower's fetch waits at the
    /// leader for new data.
    pub replica_fetch_wait_max_ms: u64,
    /// Kafka `replica.fetch.backoff.ms`: the longest pause after a failed fetch or connection
    /// (pauses start at a tenth of it and double).
    pub replica_fetch_backoff_ms: u64,
    /// Kafka `replica.socket.timeout.ms`: a fetch answered after its wait plus this is given
    /// up and its connection closed; also the connect timeout.
    pub replica_socket_timeout_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9092".into(),
            advertised: None,
            data_dir: PathBuf::from("./data"),
            cores: 0,
            node_id: 1,
            controller_listen: None,
            voters: None,
            cluster_id: "shardlog-cluster".into(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            admin_listen: "127.0.0.1:9644".into(),
            auto_create_topics: true,
            default_partitions: 1,
            default_replication_factor: 1,
            default_flush: DefaultFlush::EveryBatch,
            flush_interval_ms: 1000,
            default_retention_ms: 7 * 24 * 3600 * 1000,
            default_segment_bytes: 1 << 30,
            default_max_message_bytes: 1_048_588,
            compression_type: "producer".into(),
            validate_compressed_batches: true,
            max_decompressed_batch_bytes: 32 << 20,
            max_frame_bytes: 100 << 20,
            max_connections: 10_000,
            max_connections_per_ip: 0,
            max_inflight_requests: 64,
            max_request_memory_bytes: 256 << 20,
            connection_idle_timeout_ms: 600_000,
            request_read_timeout_ms: 30_000,
            fetch_session_cache_slots: 1000,
            fetch_max_wait_ms_cap: 30_000,
            fetch_max_bytes: 55 << 20,
            max_response_queue_bytes: 64 << 20,
            tick_interval_ms: 5,
            retention_check_interval_ms: 30_000,
            io_memory_bytes: 32 << 20,
            shutdown_grace_ms: 10_000,
            broker_heartbeat_interval_ms: 250,
            broker_session_timeout_ms: 1800,
            log_cache_bytes: 16 << 20,
            log_cache_total_bytes: 1 << 30,
            log_preallocate_bytes: 32 << 20,
            log_recycle_segments: true,
            segment_delete_chunk_bytes: 4 << 20,
            segment_delete_interval_ms: 4,
            segment_delete_delay_ms: 1000,
            slow_disk_op_ms: 100,
            max_open_segment_files: 1024,
            partition_open_retry_ms: 5000,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_topic_partitions: 0,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_snapshot_records: 100_000,
            producer_id_expiration_ms: 86_400_000,
            producer_id_expiration_check_interval_ms: 600_000,
            max_producer_ids_per_partition: 100_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_response_max_bytes: 10 << 20,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff_ms: 1000,
            replica_socket_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    #[error("invalid {key} = {value:?}: {message}")]
    Invalid {
        key: &'static str,
        value: String,
        message: String,
    },
}

/// What validation needs to know about the machine: how many cores are usable and how a
/// `HOST:PORT` resolves. [`Host::system`] asks the operating system; tests and the fuzzer pass
/// fixed answers (no DNS, no cgroup files).
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub available_cores: usize,
    pub resolve: fn(&str) -> Result<SocketAddr, String>,
}

impl Host {
    /// This machine: `available_parallelism` and the system resolver.
    pub fn system() -> Self {
        Self {
            available_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            resolve: parse_addr,
        }
    }
}

/// Flags that override the file and the environment (all optional).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub advertised: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub cores: Option<usize>,
    pub node_id: Option<i32>,
    pub admin_listen: Option<String>,
    pub controller_listen: Option<String>,
    pub voters: Option<String>,
}

impl BrokerConfig {
    /// Defaults, then `file`, then `env` (name, value pairs; pass `std::env::vars()`), then
    /// `flags`; validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let text = match file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.to_path_buf(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let file = file.zip(text.as_deref());
        Self::from_sources(file, env, flags, &Host::system())
    }

    /// [`load`](Self::load) without the file system: `file` is the file's name (for messages)
    /// and its TOML text, and `host` answers what validation asks about the machine.
    pub fn from_sources(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
        host: &Host,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some((path, text)) => {
                toml::from_str::<BrokerConfig>(text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => BrokerConfig::default(),
        };
        let known = cfg.as_table();
        for (var, value) in env {
            if let Some(key) = var.strip_prefix("SHARDLOG_") {
                if CLI_ENV_VARS.contains(&var.as_str()) {
                    // The operator CLI's own variables (SHARDLOG_BROKERS, ...).
                    continue;
                }
                let key = key.to_ascii_lowercase();
                if !known.contains_key(&key) && !OPTIONAL_STRING_KEYS.contains(&key.as_str()) {
                    // The environment is shared with other tools (`SHARDLOG_BIN` in test
                    // harnesses, ...): only variables that name a config key configure the
                    // broker; the rest are reported and left alone.
                    eprintln!(
                        "shardlog: ignoring environment variable {var}: not a configuration key"
                    );
                    continue;
                }
                cfg.set_env(&var, &key, &value)?;
            }
        }
        if let Some(v) = &flags.listen {
            cfg.listen = v.clone();
        }
        if let Some(v) = &flags.advertised {
            cfg.advertised = Some(v.clone());
        }
        if let Some(v) = &flags.data_dir {
            cfg.data_dir = v.clone();
        }
        if let Some(v) = flags.cores {
            cfg.cores = v;
        }
        if let Some(v) = flags.node_id {
            cfg.node_id = v;
        }
        if let Some(v) = &flags.admin_listen {
            cfg.admin_listen = v.clone();
        }
        if let Some(v) = &flags.controller_listen {
            cfg.controller_listen = Some(v.clone());
        }
        if let Some(v) = &flags.voters {
            cfg.voters = Some(v.clone());
        }
        cfg.validate_with(host)?;
        Ok(cfg)
    }

    /// Applies one `SHARDLOG_<KEY>` variable by re-parsing it as a TOML value of the key.
    fn set_env(&mut self, var: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        let env_err = |message: String| ConfigError::Env {
            var: var.to_string(),
            value: value.to_string(),
            message,
        };
        // Strings are accepted bare; everything else is parsed as a TOML literal.
        let string_keys = [
            "listen",
            "advertised",
            "data_dir",
            "cluster_id",
            "log_level",
            "default_flush",
            "log_format",
            "admin_listen",
            "compression_type",
            "controller_listen",
            "voters",
        ];
        let literal = if string_keys.contains(&key) {
            toml::Value::String(value.to_string()).to_string()
        } else {
            value.to_string()
        };
        let doc = format!("{key} = {literal}");
        let partial: toml::Table = toml::from_str(&doc).map_err(|e| env_err(e.to_string()))?;
        // The value is pasted into a TOML line: one holding a newline and `other = ...` must
        // not set another key.
        if partial.len() != 1 || !partial.contains_key(key) {
            return Err(env_err(format!("not a single value for {key}")));
        }
        // Merge through serde: serialize the current config is not needed; apply by field.
        let merged: BrokerConfig = {
            let mut base =
                toml::Table::try_from(self.as_table()).map_err(|e| env_err(e.to_string()))?;
            base.extend(partial);
            toml::Value::Table(base)
                .try_into()
                .map_err(|e: toml::de::Error| env_err(e.message().to_string()))?
        };
        *self = merged;
        Ok(())
    }

    /// The configuration as a TOML table with the file's key names (what a config file
    /// holding exactly these values would contain).
    pub fn as_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let mut put = |k: &str, v: toml::Value| {
            t.insert(k.to_string(), v);
        };
        put("listen", self.listen.clone().into());
        if let Some(a) = &self.advertised {
            put("advertised", a.clone().into());
        }
        put("data_dir", self.data_dir.display().to_string().into());
        put("cores", (self.cores as i64).into());
        put("node_id", i64::from(self.node_id).into());
        if let Some(a) = &self.controller_listen {
            put("controller_listen", a.clone().into());
        }
        if let Some(v) = &self.voters {
            put("voters", v.clone().into());
        }
        put("cluster_id", self.cluster_id.clone().into());
        put("log_level", self.log_level.clone().into());
        let log_format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        put("log_format", log_format.into());
        put("admin_listen", self.admin_listen.clone().into());
        put("auto_create_topics", self.auto_create_topics.into());
        put(
            "default_partitions",
            i64::from(self.default_partitions).into(),
        );
        put(
            "default_replication_factor",
            i64::from(self.default_replication_factor).into(),
        );
        let flush = match self.default_flush {
            DefaultFlush::EveryBatch => "every-batch",
            DefaultFlush::Interval => "interval",
            DefaultFlush::Never => "never",
        };
        put("default_flush", flush.into());
        put("flush_interval_ms", (self.flush_interval_ms as i64).into());
        put("default_retention_ms", self.default_retention_ms.into());
        put(
            "default_segment_bytes",
            (self.default_segment_bytes as i64).into(),
        );
        put(
            "default_max_message_bytes",
            (self.default_max_message_bytes as i64).into(),
        );
        put("compression_type", self.compression_type.clone().into());
        put(
            "validate_compressed_batches",
            self.validate_compressed_batches.into(),
        );
        put(
            "max_decompressed_batch_bytes",
            (self.max_decompressed_batch_bytes as i64).into(),
        );
        put("max_frame_bytes", (self.max_frame_bytes as i64).into());
        put("max_connections", (self.max_connections as i64).into());
        put(
            "max_connections_per_ip",
            (self.max_connections_per_ip as i64).into(),
        );
        put(
            "max_request_memory_bytes",
            (self.max_request_memory_bytes as i64).into(),
        );
        put(
            "max_inflight_requests",
            (self.max_inflight_requests as i64).into(),
        );
        put(
            "connection_idle_timeout_ms",
            (self.connection_idle_timeout_ms as i64).into(),
        );
        put(
            "request_read_timeout_ms",
            (self.request_read_timeout_ms as i64).into(),
        );
        put(
            "fetch_session_cache_slots",
            (self.fetch_session_cache_slots as i64).into(),
        );
        put(
            "fetch_max_wait_ms_cap",
            (self.fetch_max_wait_ms_cap as i64).into(),
        );
        put("fetch_max_bytes", (self.fetch_max_bytes as i64).into());
        put(
            "max_response_queue_bytes",
            (self.max_response_queue_bytes as i64).into(),
        );
        put("tick_interval_ms", (self.tick_interval_ms as i64).into());
        put(
            "retention_check_interval_ms",
            (self.retention_check_interval_ms as i64).into(),
        );
        put("io_memory_bytes", (self.io_memory_bytes as i64).into());
        put("shutdown_grace_ms", (self.shutdown_grace_ms as i64).into());
        put(
            "broker_heartbeat_interval_ms",
            (self.broker_heartbeat_interval_ms as i64).into(),
        );
        put(
            "broker_session_timeout_ms",
            (self.broker_session_timeout_ms as i64).into(),
        );
        put("log_cache_bytes", (self.log_cache_bytes as i64).into());
        put(
            "log_cache_total_bytes",
            (self.log_cache_total_bytes as i64).into(),
        );
        put(
            "log_preallocate_bytes",
            (self.log_preallocate_bytes as i64).into(),
        );
        put("log_recycle_segments", self.log_recycle_segments.into());
        put(
            "segment_delete_chunk_bytes",
            (self.segment_delete_chunk_bytes as i64).into(),
        );
        put(
            "segment_delete_interval_ms",
            (self.segment_delete_interval_ms as i64).into(),
        );
        put(
            "segment_delete_delay_ms",
            (self.segment_delete_delay_ms as i64).into(),
        );
        put("slow_disk_op_ms", (self.slow_disk_op_ms as i64).into());
        put(
            "max_open_segment_files",
            (self.max_open_segment_files as i64).into(),
        );
        put(
            "partition_open_retry_ms",
            (self.partition_open_retry_ms as i64).into(),
        );
        put(
            "group_initial_rebalance_delay_ms",
            (self.group_initial_rebalance_delay_ms as i64).into(),
        );
        put(
            "group_min_session_timeout_ms",
            i64::from(self.group_min_session_timeout_ms).into(),
        );
        put(
            "group_max_session_timeout_ms",
            i64::from(self.group_max_session_timeout_ms).into(),
        );
        put(
            "offsets_topic_partitions",
            (self.offsets_topic_partitions as i64).into(),
        );
        put(
            "offsets_retention_ms",
            (self.offsets_retention_ms as i64).into(),
        );
        put(
            "offsets_snapshot_records",
            (self.offsets_snapshot_records as i64).into(),
        );
        put(
            "producer_id_expiration_ms",
            (self.producer_id_expiration_ms as i64).into(),
        );
        put(
            "producer_id_expiration_check_interval_ms",
            (self.producer_id_expiration_check_interval_ms as i64).into(),
        );
        put(
            "max_producer_ids_per_partition",
            (self.max_producer_ids_per_partition as i64).into(),
        );
        put(
            "replica_lag_time_max_ms",
            (self.replica_lag_time_max_ms as i64).into(),
        );
        put(
            "replica_fetch_max_bytes",
            (self.replica_fetch_max_bytes as i64).into(),
        );
        put(
            "replica_fetch_response_max_bytes",
            (self.replica_fetch_response_max_bytes as i64).into(),
        );
        put(
            "replica_fetch_wait_max_ms",
            (self.replica_fetch_wait_max_ms as i64).into(),
        );
        put(
            "replica_fetch_backoff_ms",
            (self.replica_fetch_backoff_ms as i64).into(),
        );
        put(
            "replica_socket_timeout_ms",
            (self.replica_socket_timeout_ms as i64).into(),
        );
        t
    }

    /// Checks every value once; the error names the key.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.validate_with(&Host::system())
    }

    /// [`validate`](Self::validate) against the given machine.
    pub fn validate_with(&mut self, host: &Host) -> Result<(), ConfigError> {
        fn bad(key: &'static str, value: impl ToString, message: &str) -> ConfigError {
            ConfigError::Invalid {
                key,
                value: value.to_string(),
                message: message.to_string(),
            }
        }
        (host.resolve)(&self.listen).map_err(|m| bad("listen", &self.listen, &m))?;
        if !(10..=60_000).contains(&self.broker_heartbeat_interval_ms) {
            return Err(bad(
                "broker_heartbeat_interval_ms",
                self.broker_heartbeat_interval_ms,
                "must be 10..=60000",
            ));
        }
        if self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
            || self.broker_session_timeout_ms > 600_000
        {
            return Err(bad(
                "broker_session_timeout_ms",
                self.broker_session_timeout_ms,
                "must be above broker_heartbeat_interval_ms and at most 600000",
            ));
        }
        if let Some(a) = &self.advertised {
            parse_host_port(a).map_err(|m| bad("advertised", a, &m))?;
        }
        if !self.admin_listen.is_empty() {
            (host.resolve)(&self.admin_listen)
                .map_err(|m| bad("admin_listen", &self.admin_listen, &m))?;
        }
        let available = host.available_cores;
        if self.cores == 0 {
            self.cores = available;
        }
        if self.cores > available {
            return Err(bad(
                "cores",
                self.cores,
                &format!("this machine has {available} usable cores"),
            ));
        }
        if self.cores > 256 {
            return Err(bad("cores", self.cores, "at most 256 shards"));
        }
        if self.node_id < 1 {
            return Err(bad(
                "node_id",
                self.node_id,
                "must be >= 1 (controller quorum ids start at 1)",
            ));
        }
        if let Some(c) = &self.controller_listen {
            (host.resolve)(c).map_err(|m| bad("controller_listen", c, &m))?;
        }
        if let Some(v) = &self.voters {
            shardlog_quorum::parse_voters(v).map_err(|e| bad("voters", v, &e.to_string()))?;
            if self.controller_listen.is_none() {
                return Err(bad(
                    "voters",
                    v,
                    "needs controller_listen (--controller-listen): brokers reach each other's controllers there",
                ));
            }
        }
        if self.default_replication_factor < 1 {
            return Err(bad(
                "default_replication_factor",
                self.default_replication_factor,
                "must be at least 1",
            ));
        }
        if !(1..=10_000).contains(&self.default_partitions) {
            return Err(bad(
                "default_partitions",
                self.default_partitions,
                "must be in 1..=10000",
            ));
        }
        if !(1024..=(1 << 30)).contains(&self.max_frame_bytes) {
            return Err(bad(
                "max_frame_bytes",
                self.max_frame_bytes,
                "must be in 1 KiB..=1 GiB",
            ));
        }
        if self.group_min_session_timeout_ms < 1
            || self.group_max_session_timeout_ms < self.group_min_session_timeout_ms
        {
            return Err(bad(
                "group_max_session_timeout_ms",
                self.group_max_session_timeout_ms,
                "group session timeouts must satisfy 1 <= min <= max",
            ));
        }
        if self.offsets_topic_partitions > 10_000 {
            return Err(bad(
                "offsets_topic_partitions",
                self.offsets_topic_partitions,
                "must be in 0..=10000 (0 = 2 x cores)",
            ));
        }
        if self.offsets_snapshot_records < 100 {
            return Err(bad(
                "offsets_snapshot_records",
                self.offsets_snapshot_records,
                "must be >= 100",
            ));
        }
        if self.max_connections == 0 {
            return Err(bad("max_connections", 0, "must be >= 1"));
        }
        if !(1..=i64::MAX as u64).contains(&self.producer_id_expiration_ms) {
            return Err(bad(
                "producer_id_expiration_ms",
                self.producer_id_expiration_ms,
                "must be >= 1",
            ));
        }
        if self.producer_id_expiration_check_interval_ms < 10 {
            return Err(bad(
                "producer_id_expiration_check_interval_ms",
                self.producer_id_expiration_check_interval_ms,
                "must be >= 10",
            ));
        }
        if self.max_producer_ids_per_partition == 0 {
            return Err(bad("max_producer_ids_per_partition", 0, "must be >= 1"));
        }
        if self.replica_lag_time_max_ms < 100 {
            return Err(bad(
                "replica_lag_time_max_ms",
                self.replica_lag_time_max_ms,
                "must be >= 100",
            ));
        }
        if !(1024..=(1 << 30)).contains(&self.replica_fetch_max_bytes) {
            return Err(bad(
                "replica_fetch_max_bytes",
                self.replica_fetch_max_bytes,
                "must be 1 KiB..=1 GiB",
            ));
        }
        if self.replica_fetch_response_max_bytes < self.replica_fetch_max_bytes
            || self.replica_fetch_response_max_bytes > (1 << 30)
        {
            return Err(bad(
                "replica_fetch_response_max_bytes",
                self.replica_fetch_response_max_bytes,
                "must be replica_fetch_max_bytes..=1 GiB",
            ));
        }
        if !(1..=30_000).contains(&self.replica_fetch_wait_max_ms) {
            return Err(bad(
                "replica_fetch_wait_max_ms",
                self.replica_fetch_wait_max_ms,
                "must be 1..=30000",
            ));
        }
        if !(10..=60_000).contains(&self.replica_fetch_backoff_ms) {
            return Err(bad(
                "replica_fetch_backoff_ms",
                self.replica_fetch_backoff_ms,
                "must be 10..=60000",
            ));
        }
        if self.replica_socket_timeout_ms < 100 {
            return Err(bad(
                "replica_socket_timeout_ms",
                self.replica_socket_timeout_ms,
                "must be >= 100",
            ));
        }
        if self.max_connections_per_ip > self.max_connections {
            return Err(bad(
                "max_connections_per_ip",
                self.max_connections_per_ip,
                "must be <= max_connections (0 = no per-address limit)",
            ));
        }
        if !((1 << 20)..=(1 << 40)).contains(&self.max_request_memory_bytes) {
            return Err(bad(
                "max_request_memory_bytes",
                self.max_request_memory_bytes,
                "must be in 1 MiB..=1 TiB",
            ));
        }
        // A response's size is an i32: the limit plus one oversized first batch (at most a
        // frame) must stay below 2 GiB.
        if !(1024..=(1 << 30)).contains(&self.fetch_max_bytes) {
            return Err(bad(
                "fetch_max_bytes",
                self.fetch_max_bytes,
                "must be in 1 KiB..=1 GiB",
            ));
        }
        if !((1 << 20)..=(1 << 40)).contains(&self.max_response_queue_bytes) {
            return Err(bad(
                "max_response_queue_bytes",
                self.max_response_queue_bytes,
                "must be in 1 MiB..=1 TiB",
            ));
        }
        if !(1..=10_000).contains(&self.max_inflight_requests) {
            return Err(bad(
                "max_inflight_requests",
                self.max_inflight_requests,
                "must be in 1..=10000",
            ));
        }
        if !(10..=(7 * 24 * 3_600_000)).contains(&self.connection_idle_timeout_ms) {
            return Err(bad(
                "connection_idle_timeout_ms",
                self.connection_idle_timeout_ms,
                "must be in 10..=604800000 (7 days)",
            ));
        }
        if !(10..=3_600_000).contains(&self.request_read_timeout_ms) {
            return Err(bad(
                "request_read_timeout_ms",
                self.request_read_timeout_ms,
                "must be in 10..=3600000 (1 hour)",
            ));
        }
        if !(1..=1000).contains(&self.tick_interval_ms) {
            return Err(bad(
                "tick_interval_ms",
                self.tick_interval_ms,
                "must be in 1..=1000",
            ));
        }
        if !(1..=(1 << 24)).contains(&self.max_open_segment_files) {
            return Err(bad(
                "max_open_segment_files",
                self.max_open_segment_files,
                "must be in 1..=16777216",
            ));
        }
        if !(100..=3_600_000).contains(&self.partition_open_retry_ms) {
            return Err(bad(
                "partition_open_retry_ms",
                self.partition_open_retry_ms,
                "must be in 100..=3600000 (1 hour)",
            ));
        }
        if self.segment_delete_interval_ms > 1000 {
            return Err(bad(
                "segment_delete_interval_ms",
                self.segment_delete_interval_ms,
                "must be <= 1000",
            ));
        }
        if self.retention_check_interval_ms < 100 {
            return Err(bad(
                "retention_check_interval_ms",
                self.retention_check_interval_ms,
                "must be >= 100",
            ));
        }
        if self.default_max_message_bytes < 1024
            || self.default_max_message_bytes > self.max_frame_bytes
        {
            return Err(bad(
                "default_max_message_bytes",
                self.default_max_message_bytes,
                "must be in 1 KiB..=max_frame_bytes",
            ));
        }
        if crate::partition::compression::CompressionType::parse(&self.compression_type).is_none() {
            return Err(bad(
                "compression_type",
                &self.compression_type,
                "must be one of producer, uncompressed, gzip, snappy, lz4, zstd",
            ));
        }
        if !(1024..=(1 << 30)).contains(&self.max_decompressed_batch_bytes) {
            return Err(bad(
                "max_decompressed_batch_bytes",
                self.max_decompressed_batch_bytes,
                "must be in 1 KiB..=1 GiB",
            ));
        }
        if self.default_segment_bytes < (1 << 20) {
            return Err(bad(
                "default_segment_bytes",
                self.default_segment_bytes,
                "must be >= 1 MiB",
            ));
        }
        if self.default_retention_ms < -1 || self.default_retention_ms == 0 {
            return Err(bad(
                "default_retention_ms",
                self.default_retention_ms,
                "must be -1 (forever) or > 0",
            ));
        }
        if self.io_memory_bytes < (64 << 10) {
            return Err(bad(
                "io_memory_bytes",
                self.io_memory_bytes,
                "must be >= 64 KiB",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("data_dir", "", "must not be empty"));
        }
        if self.cluster_id.is_empty() {
            return Err(bad("cluster_id", "", "must not be empty"));
        }
        Ok(())
    }

    /// The admin HTTP address, `None` when disabled (`admin_listen = ""`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        if self.admin_listen.is_empty() {
            return None;
        }
        parse_addr(&self.admin_listen).ok()
    }

    pub fn listen_addr(&self) -> SocketAddr {
        // validated in `validate`
        parse_addr(&self.listen).unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9092)))
    }

    /// (host, port) advertised to clients.
    pub fn advertised_host_port(&self) -> (String, i32) {
        let src = self.advertised.as_deref().unwrap_or(&self.listen);
        parse_host_port(src).unwrap_or_else(|_| ("127.0.0.1".into(), 9092))
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| "expected HOST:PORT (resolves to nothing)".to_string())
}

fn parse_host_port(s: &str) -> Result<(String, i32), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number in 0..=65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("empty host".into());
    }
    Ok((host.to_string(), i32::from(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("b.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1000\"\ndefault_partitions = 3\nmax_inflight_requests = 7\ncores = 1\n",
        )
        .expect("write");
        let flags = Overrides {
            listen: Some("127.0.0.1:3000".into()),
            ..Default::default()
        };
        let cfg = BrokerConfig::load(
            Some(&file),
            env(&[
                ("SHARDLOG_LISTEN", "127.0.0.1:2000"),
                ("SHARDLOG_DEFAULT_PARTITIONS", "5"),
                ("SHARDLOG_DEFAULT_FLUSH", "never"),
                ("OTHER", "x"),
            ]),
            &flags,
        )
        .expect("valid");
        assert_eq!(cfg.listen, "127.0.0.1:3000");
        assert_eq!(cfg.default_partitions, 5);
        assert_eq!(cfg.max_inflight_requests, 7);
        assert_eq!(cfg.default_flush, DefaultFlush::Never);
        assert_eq!(cfg.advertised_host_port(), ("127.0.0.1".to_string(), 3000));
    }

    #[test]
    fn compression_keys_from_env_and_checked() {
        let cfg = BrokerConfig::load(
            None,
            env(&[
                ("SHARDLOG_COMPRESSION_TYPE", "zstd"),
                ("SHARDLOG_VALIDATE_COMPRESSED_BATCHES", "false"),
            ]),
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(cfg.compression_type, "zstd");
        assert!(!cfg.validate_compressed_batches);
        for (var, value) in [
            ("SHARDLOG_COMPRESSION_TYPE", "brotli"),
            ("SHARDLOG_MAX_DECOMPRESSED_BATCH_BYTES", "10"),
        ] {
            let e = BrokerConfig::load(None, env(&[(var, value)]), &Overrides::default())
                .expect_err("refused");
            assert!(e.to_string().contains(&var[9..].to_lowercase()), "{e}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let flags = Overrides {
            listen: Some("nonsense".into()),
            cores: Some(1),
            ..Default::default()
        };
        let e = BrokerConfig::load(None, env(&[]), &flags).expect_err("bad listen");
        assert!(e.to_string().contains("listen"), "{e}");

        let flags = Overrides {
            cores: Some(100_000),
            ..Default::default()
        };
        let e = BrokerConfig::load(None, env(&[]), &flags).expect_err("too many cores");
        assert!(e.to_string().contains("cores"), "{e}");

        let e = BrokerConfig::load(
            None,
            env(&[("SHARDLOG_DEFAULT_PARTITIONS", "abc")]),
            &Overrides::default(),
        )
        .expect_err("bad env");
        assert!(e.to_string().contains("SHARDLOG_DEFAULT_PARTITIONS"), "{e}");

        let cfg = BrokerConfig::load(
            None,
            env(&[("SHARDLOG_NO_SUCH_KEY", "1"), ("SHARDLOG_BIN", "/x/y")]),
            &Overrides::default(),
        )
        .expect("variables that are not config keys are ignored");
        assert_eq!(cfg.listen, BrokerConfig::default().listen);
    }

    #[test]
    fn connection_timeouts_load_and_are_checked() {
        let d = BrokerConfig::default();
        assert_eq!(
            (d.connection_idle_timeout_ms, d.request_read_timeout_ms),
            (600_000, 30_000)
        );
        let cfg = BrokerConfig::load(
            None,
            env(&[
                ("SHARDLOG_CONNECTION_IDLE_TIMEOUT_MS", "2500"),
                ("SHARDLOG_REQUEST_READ_TIMEOUT_MS", "1000"),
            ]),
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(
            (cfg.connection_idle_timeout_ms, cfg.request_read_timeout_ms),
            (2500, 1000)
        );
        for (var, key) in [
            (
                "SHARDLOG_CONNECTION_IDLE_TIMEOUT_MS",
                "connection_idle_timeout_ms",
            ),
            (
                "SHARDLOG_REQUEST_READ_TIMEOUT_MS",
                "request_read_timeout_ms",
            ),
        ] {
            let e = BrokerConfig::load(None, env(&[(var, "0")]), &Overrides::default())
                .expect_err("0 disables nothing: rejected");
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    /// The `config_parse` fuzz target checks that a variable changes only the key it names;
    /// this input (written by hand while writing that check) broke it.
    #[test]
    fn a_variable_cannot_set_another_key() {
        for value in ["1\nlisten = \"127.0.0.1:1\"", "1\n[extra]\nx = 1"] {
            let e = BrokerConfig::load(
                None,
                env(&[("SHARDLOG_CORES", value)]),
                &Overrides::default(),
            )
            .expect_err("a second key in the value");
            assert!(
                matches!(&e, ConfigError::Env { var, .. } if var == "SHARDLOG_CORES"),
                "{e}"
            );
        }
    }

    #[test]
    fn from_sources_uses_the_given_host() {
        fn no_dns(s: &str) -> Result<SocketAddr, String> {
            s.parse()
                .map_err(|_| format!("{s} is not a literal address"))
        }
        let host = Host {
            available_cores: 3,
            resolve: no_dns,
        };
        let file = Some((Path::new("b.toml"), "listen = \"127.0.0.1:9092\"\n"));
        let cfg = BrokerConfig::from_sources(file, env(&[]), &Overrides::default(), &host)
            .expect("valid");
        assert_eq!(cfg.cores, 3, "cores = 0 means every available core");
        let file = Some((Path::new("b.toml"), "listen = \"localhost:9092\"\n"));
        let e = BrokerConfig::from_sources(file, env(&[]), &Overrides::default(), &host)
            .expect_err("the resolver refuses names");
        assert!(e.to_string().contains("listen"), "{e}");
        let file = Some((Path::new("b.toml"), "cores = 4\n"));
        let e = BrokerConfig::from_sources(file, env(&[]), &Overrides::default(), &host)
            .expect_err("more cores than the host has");
        assert!(e.to_string().contains("3 usable cores"), "{e}");
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("b.toml");
        std::fs::write(&file, "lisen = \"x\"\n").expect("write");
        let e = BrokerConfig::load(Some(&file), env(&[]), &Overrides::default()).expect_err("typo");
        assert!(e.to_string().contains("lisen"), "{e}");
    }
}

//! Broker metrics: per-shard plain counters and histograms, gathered at scrape time.
//!
//! Every shard (one thread) records into its own thread-local [`ShardMetrics`] made of `Cell`s:
//! no locks and no atomics on the produce/fetch path. Per-partition counters live in the
//! partition itself ([`PartitionStats`]). A scrape of `/metrics` (served on shard 0, see
//! `crate::admin::http`) asks every shard over the mesh for a [`ShardSnapshot`] (a plain, `Send`
//! copy taken on the owning shard), merges them and renders the Prometheus text format
//! ([`render`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use shardlog_engine::DiskOp;

/// Upper bounds (seconds) of the latency histogram buckets; `+Inf` is implicit.
pub const BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];
const NB: usize = BUCKETS.len() + 1;

/// A latency histogram owned by one shard.
#[derive(Default)]
pub struct Histogram {
    counts: [Cell<u64>; NB],
    sum_ns: Cell<u64>,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].set(self.counts[i].get() + 1);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.set(self.sum_ns.get().saturating_add(ns));
    }

    pub fn snapshot(&self) -> HistSnapshot {
        HistSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].get()),
            sum_ns: self.sum_ns.get(),
        }
    }
}

/// A copy of a histogram (non-cumulative bucket counts; the last is `+Inf`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistSnapshot {
    pub counts: [u64; NB],
    pub sum_ns: u64,
}

impl HistSnapshot {
    pub fn merge(&mut self, o: &HistSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Stages of the produce and fetch paths that are timed separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Produce: a batch waiting in its partition's append queue.
    ProduceQueue,
    /// Produce: validating and copying the batch into the log (`PartitionLog::append`).
    ProduceAppend,
    /// Produce acks=1: waiting until the batch reached the device.
    ProduceWriteWait,
    /// Produce acks=all: waiting until the flush policy is satisfied (the fsync, under the
    /// default policy).
    ProduceFsyncWait,
    /// Produce/Fetch/...: a request placed on another shard, until its answer came back.
    ShardHop,
    /// Fetch: reading one partition (batch cache or disk).
    FetchRead,
    /// Fetch: the long-poll wait for data (`max_wait_ms`).
    FetchWait,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::ProduceQueue,
        Stage::ProduceAppend,
        Stage::ProduceWriteWait,
        Stage::ProduceFsyncWait,
        Stage::ShardHop,
        Stage::FetchRead,
        Stage::FetchWait,
    ];

    /// (metric family, `stage` label)
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Stage::ProduceQueue => ("produce", "queue"),
            Stage::ProduceAppend => ("produce", "append"),
            Stage::ProduceWriteWait => ("produce", "write_wait"),
            Stage::ProduceFsyncWait => ("produce", "fsync_wait"),
            Stage::ShardHop => ("request", "shard_hop"),
            Stage::FetchRead => ("fetch", "read"),
            Stage::FetchWait => ("fetch", "wait"),
        }
    }
}

/// Highest API key counted individually (Kafka's keys are far below it).
const MAX_API: usize = 128;

/// The counters of one shard (thread-local; see [`with`]).
pub struct ShardMetrics {
    pub(crate) requests: [Cell<u64>; MAX_API],
    pub(crate) latency: RefCell<BTreeMap<i16, Histogram>>,
    pub(crate) errors: RefCell<BTreeMap<(i16, i16), u64>>,
    pub(crate) stages: [Histogram; Stage::ALL.len()],
    pub(crate) disk_ops: [Histogram; DiskOp::ALL.len()],
    pub(crate) connections_accepted: Cell<u64>,
    pub(crate) connections_refused: Cell<u64>,
    pub(crate) accept_failures: Cell<u64>,
    pub(crate) bad_requests: Cell<u64>,
    pub(crate) request_memory_waits: Cell<u64>,
    pub(crate) producer_ids_expired: Cell<u64>,
    pub(crate) producer_ids_evicted: Cell<u64>,
    pub(crate) response_queue_bytes: Cell<u64>,
    pub(crate) response_queue_peak: Cell<u64>,
    pub(crate) response_queue_waits: Cell<u64>,
    /// Committed ISR changes of partitions this shard leads.
    pub(crate) isr_shrinks: Cell<u64>,
    pub(crate) leaderships_gained: Cell<u64>,
    pub(crate) isr_expands: Cell<u64>,
    /// Per leader broker this shard's fetcher follows: the largest lag (messages) of its last
    /// round. Bounded by the brokers; an entry goes when its fetcher stops.
    pub(crate) follower_lag: RefCell<BTreeMap<i32, i64>>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| Cell::new(0)),
            latency: RefCell::new(BTreeMap::new()),
            errors: RefCell::new(BTreeMap::new()),
            stages: std::array::from_fn(|_| Histogram::default()),
            disk_ops: std::array::from_fn(|_| Histogram::default()),
            connections_accepted: Cell::new(0),
            connections_refused: Cell::new(0),
            accept_failures: Cell::new(0),
            bad_requests: Cell::new(0),
            request_memory_waits: Cell::new(0),
            producer_ids_expired: Cell::new(0),
            producer_ids_evicted: Cell::new(0),
            response_queue_bytes: Cell::new(0),
            response_queue_peak: Cell::new(0),
            response_queue_waits: Cell::new(0),
            isr_shrinks: Cell::new(0),
            leaderships_gained: Cell::new(0),
            isr_expands: Cell::new(0),
            follower_lag: RefCell::new(BTreeMap::new()),
        }
    }
}

thread_local! {
    static LOCAL: ShardMetrics = ShardMetrics::default();
}

/// Runs `f` with this thread's (shard's) metrics.
pub fn with<R>(f: impl FnOnce(&ShardMetrics) -> R) -> R {
    LOCAL.with(f)
}

/// One request of `api` answered after `d`.
pub fn request(api: i16, d: Duration) {
    with(|m| {
        if let Some(c) = usize::try_from(api).ok().and_then(|i| m.requests.get(i)) {
            c.set(c.get() + 1);
        }
        m.latency.borrow_mut().entry(api).or_default().observe(d);
    });
}

/// One error `code` (a partition- or request-level Kafka error code) answered to `api`.
pub fn error(api: i16, code: i16) {
    if code == 0 {
        return;
    }
    with(|m| *m.errors.borrow_mut().entry((api, code)).or_insert(0) += 1);
}

/// `d` spent in `stage`.
pub fn stage(stage: Stage, d: Duration) {
    with(|m| m.stages[stage as usize].observe(d));
}

/// A device operation of a log on this shard took `d` (installed as the engine's observer, see
/// `shardlog_engine::disk_ops`).
pub fn disk_op(op: DiskOp, d: Duration) {
    with(|m| m.disk_ops[op as usize].observe(d));
}

pub fn connection_accepted() {
    with(|m| m.connections_accepted.set(m.connections_accepted.get() + 1));
}

pub fn connection_refused() {
    with(|m| m.connections_refused.set(m.connections_refused.get() + 1));
}

/// An accept on the client listener failed (out of descriptors, for one).
pub fn accept_failed() {
    with(|m| m.accept_failures.set(m.accept_failures.get() + 1));
}

/// A connection waited for request memory before reading a request (back-pressure).
pub fn request_memory_wait() {
    with(|m| m.request_memory_waits.set(m.request_memory_waits.get() + 1));
}

/// A connection's answers took `bytes` more of its `max_response_queue_bytes`.
pub fn response_queue_add(bytes: u64) {
    with(|m| {
        let now = m.response_queue_bytes.get() + bytes;
        m.response_queue_bytes.set(now);
        m.response_queue_peak
            .set(m.response_queue_peak.get().max(now));
    });
}

/// A connection's answers gave back `bytes` (written, shrunk to their size, or abandoned).
pub fn response_queue_sub(bytes: u64) {
    with(|m| {
        m.response_queue_bytes
            .set(m.response_queue_bytes.get().saturating_sub(bytes))
    });
}

/// A request waited for its connection's earlier answers to be written (back-pressure).
pub fn response_queue_wait() {
    with(|m| m.response_queue_waits.set(m.response_queue_waits.get() + 1));
}

/// A frame or request that closed its connection (oversized, malformed, unknown API).
/// Producer ids forgotten: expired (`producer_id_expiration_ms`) or, when `!expired`, dropped
/// at `max_producer_ids_per_partition`.
pub fn producer_ids_dropped(n: usize, expired: bool) {
    with(|m| {
        let c = if expired {
            &m.producer_ids_expired
        } else {
            &m.producer_ids_evicted
        };
        c.set(c.get() + n as u64);
    });
}

/// This shard became the leader of a partition in a new leader epoch.
pub fn leadership_gained() {
    with(|m| m.leaderships_gained.set(m.leaderships_gained.get() + 1));
}

/// A committed ISR change of a partition this shard leads.
pub fn isr_changed(shrink: bool) {
    with(|m| {
        let c = if shrink {
            &m.isr_shrinks
        } else {
            &m.isr_expands
        };
        c.set(c.get() + 1);
    });
}

/// The largest lag (leader's high watermark minus the local log end, in messages) over the
/// partitions the fetcher of `leader` took an answer for in its last round.
pub fn follower_lag(leader: i32, lag: i64) {
    with(|m| m.follower_lag.borrow_mut().insert(leader, lag));
}

/// The fetcher of `leader` stopped.
pub fn follower_lag_remove(leader: i32) {
    with(|m| m.follower_lag.borrow_mut().remove(&leader));
}

pub fn bad_request() {
    with(|m| m.bad_requests.set(m.bad_requests.get() + 1));
}

/// Traffic counters of one partition, updated only on its owning shard.
#[derive(Default, Debug)]
pub struct PartitionStats {
    pub bytes_in: Cell<u64>,
    pub records_in: Cell<u64>,
    pub batches_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub records_out: Cell<u64>,
}

impl PartitionStats {
    pub fn appended(&self, bytes: usize, records: u64) {
        self.bytes_in.set(self.bytes_in.get() + bytes as u64);
        self.records_in.set(self.records_in.get() + records);
        self.batches_in.set(self.batches_in.get() + 1);
    }

    pub fn served(&self, bytes: usize, records: u64) {
        self.bytes_out.set(self.bytes_out.get() + bytes as u64);
        self.records_out.set(self.records_out.get() + records);
    }
}

/// Records in stored batches (read from each batch header; unparsable batches count 0).
pub fn records_in_batches<'a>(
    batches: impl IntoIterator<Item = &'a shardlog_engine::StoredBatch>,
) -> u64 {
    batches
        .into_iter()
        .filter_map(|b| b.info().ok())
        .map(|i| u64::try_from(i.record_count).unwrap_or(0))
        .sum()
}

/// One partition as seen by its shard at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: i32,
    pub bytes_in: u64,
    pub records_in: u64,
    pub batches_in: u64,
    pub bytes_out: u64,
    pub records_out: u64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    pub cache_bytes: u64,
}

/// Everything one shard reports to a scrape (`Send`: it crosses the mesh).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub connections: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub accept_failures: u64,
    pub bad_requests: u64,
    pub request_memory_bytes: u64,
    pub request_memory_waits: u64,
    /// Idempotent producers remembered by this shard's partitions, and how many were
    /// forgotten by expiry and by the per-partition limit.
    pub producer_ids: u64,
    pub producer_ids_expired: u64,
    pub producer_ids_evicted: u64,
    /// Answer bytes reserved or queued unsent by the shard's connections, now and at most.
    pub response_queue_bytes: u64,
    pub response_queue_peak_bytes: u64,
    pub response_queue_waits: u64,
    pub requests: Vec<(i16, u64)>,
    pub latency: Vec<(i16, HistSnapshot)>,
    pub errors: Vec<(i16, i16, u64)>,
    pub stages: Vec<(Stage, HistSnapshot)>,
    pub disk_ops: Vec<(DiskOp, HistSnapshot)>,
    /// The shard's batch caches together (every log, `__consumer_offsets` too) and their limit.
    pub cache_used_bytes: u64,
    pub cache_limit_bytes: u64,
    /// Sealed-segment files open (the shard's bounded set), its limit, and files opened on
    /// demand so far.
    pub segment_files_open: u64,
    pub segment_files_limit: u64,
    pub segment_files_opened: u64,
    /// Partitions of the shard whose log failed to open.
    pub partitions_offline: u64,
    /// Partitions this shard leads with fewer replicas in the ISR than assigned.
    pub under_replicated: u64,
    pub isr_shrinks: u64,
    pub leaderships_gained: u64,
    pub isr_expands: u64,
    /// (leader broker, lag in messages) per follower fetcher of the shard.
    pub follower_lag: Vec<(i32, i64)>,
    pub partitions: Vec<PartitionSnapshot>,
}

/// Lag of one consumer group on one partition (committed offset vs. high watermark).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub lag: i64,
}

/// Process-wide facts added to a scrape.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    pub node_id: i32,
    pub shards: usize,
    pub uptime: Duration,
    pub shutting_down: bool,
    pub groups: Vec<GroupLag>,
    /// Admin HTTP connections closed to admit newer ones (`crate::admin::http`).
    pub admin_connections_evicted: u64,
    /// The controller's view, counted from this broker's metadata image
    /// (`crate::api::cluster::ClusterView::health`): partitions this broker leads whose ISR
    /// is smaller than their replica set, ...
    pub partitions_under_replicated: u64,
    /// ... partitions of the whole cluster without a serving leader, ...
    pub partitions_offline: u64,
    /// ... registered, unfenced brokers, ...
    pub brokers_live: u64,
    /// ... and the controller (raft) leader this broker knows of, -1 while unknown.
    pub controller_leader: i32,
}

/// Name of an API key (`Produce`, `Fetch`, ...; `api_<n>` when unknown).
pub fn api_name(key: i16) -> String {
    match kafka_protocol::messages::ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("api_{key}"),
    }
}

/// Escapes a label value for the text format (backslash, quote, newline).
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Out(String);

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A gauge family with one sample per shard (label `shard`).
    fn per_shard(
        &mut self,
        shards: &[ShardSnapshot],
        name: &str,
        help: &str,
        get: fn(&ShardSnapshot) -> u64,
    ) {
        self.header(name, "gauge", help);
        for s in shards {
            self.sample(name, &[("shard", &s.shard.to_string())], get(s));
        }
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistSnapshot) {
        let mut cum = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, c) in h.counts.iter().enumerate() {
            cum += c;
            let le = match BUCKETS.get(i) {
                Some(b) => format!("{b}"),
                None => "+Inf".to_string(),
            };
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cum);
        }
        self.sample(
            &format!("{name}_sum"),
            labels,
            h.sum_ns as f64 / 1_000_000_000.0,
        );
        self.sample(&format!("{name}_count"), labels, cum);
    }
}

/// Renders the merged snapshots in the Prometheus text exposition format (0.0.4).
pub fn render(shards: &[ShardSnapshot], extra: &Extra) -> String {
    let mut o = Out(String::with_capacity(16 << 10));
    let node = extra.node_id.to_string();

    o.header(
        "shardlog_up",
        "gauge",
        "1 while the broker serves requests, 0 while it shuts down.",
    );
    o.sample(
        "shardlog_up",
        &[("node", &node)],
        u8::from(!extra.shutting_down),
    );
    o.header(
        "shardlog_shards",
        "gauge",
        "Number of shards (pinned executors).",
    );
    o.sample("shardlog_shards", &[], extra.shards);
    o.header(
        "shardlog_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
    );
    o.sample("shardlog_uptime_seconds", &[], extra.uptime.as_secs_f64());
    o.header(
        "shardlog_admin_connections_evicted_total",
        "counter",
        "Admin HTTP connections closed at the connection limit to admit a newer one.",
    );
    o.sample(
        "shardlog_admin_connections_evicted_total",
        &[],
        extra.admin_connections_evicted,
    );

    o.per_shard(
        shards,
        "shardlog_connections",
        "Open client connections per shard.",
        |s| s.connections,
    );
    o.header(
        "shardlog_connections_accepted_total",
        "counter",
        "Client connections accepted.",
    );
    o.sample(
        "shardlog_connections_accepted_total",
        &[],
        shards.iter().map(|s| s.connections_accepted).sum::<u64>(),
    );
    o.header(
        "shardlog_connections_refused_total",
        "counter",
        "Connections refused at max_connections or max_connections_per_ip.",
    );
    o.sample(
        "shardlog_connections_refused_total",
        &[],
        shards.iter().map(|s| s.connections_refused).sum::<u64>(),
    );
    o.header(
        "shardlog_accept_failures_total",
        "counter",
        "Failed accepts on the client listener (each is followed by a pause: 10 ms doubling to 1 s).",
    );
    o.sample(
        "shardlog_accept_failures_total",
        &[],
        shards.iter().map(|s| s.accept_failures).sum::<u64>(),
    );
    o.per_shard(
        shards,
        "shardlog_partition_logs_offline",
        "Partition logs of this broker that could not be opened (the replica is offline; retried every partition_open_retry_ms).",
        |s| s.partitions_offline,
    );
    o.header(
        "shardlog_partitions_offline",
        "gauge",
        "Partitions of the cluster without a serving leader (leader -1 in Metadata), from this broker's metadata image.",
    );
    o.sample("shardlog_partitions_offline", &[], extra.partitions_offline);
    o.header(
        "shardlog_partitions_under_replicated",
        "gauge",
        "Partitions this broker leads whose ISR is smaller than their replica set (sum over brokers: the cluster's).",
    );
    o.sample(
        "shardlog_partitions_under_replicated",
        &[],
        extra.partitions_under_replicated,
    );
    o.header(
        "shardlog_brokers_live",
        "gauge",
        "Brokers registered and not fenced, from this broker's metadata image.",
    );
    o.sample("shardlog_brokers_live", &[], extra.brokers_live);
    o.header(
        "shardlog_controller_leader",
        "gauge",
        "Node id of the controller (raft) leader this broker knows of; -1 while none is known.",
    );
    o.sample("shardlog_controller_leader", &[], extra.controller_leader);
    o.per_shard(
        shards,
        "shardlog_under_replicated_partitions",
        "Partitions led here whose ISR is smaller than their replica set.",
        |s| s.under_replicated,
    );
    o.header(
        "shardlog_isr_shrinks_total",
        "counter",
        "Committed ISR shrinks of partitions led here.",
    );
    o.sample(
        "shardlog_isr_shrinks_total",
        &[],
        shards.iter().map(|s| s.isr_shrinks).sum::<u64>(),
    );
    o.header(
        "shardlog_leader_elections_total",
        "counter",
        "Partition leaderships this broker took (each leader epoch in which it became leader).",
    );
    o.sample(
        "shardlog_leader_elections_total",
        &[],
        shards.iter().map(|s| s.leaderships_gained).sum::<u64>(),
    );
    o.header(
        "shardlog_isr_expands_total",
        "counter",
        "Committed ISR expansions of partitions led here.",
    );
    o.sample(
        "shardlog_isr_expands_total",
        &[],
        shards.iter().map(|s| s.isr_expands).sum::<u64>(),
    );
    o.header(
        "shardlog_follower_lag_messages",
        "gauge",
        "Per follower fetcher (shard, leader broker): the largest lag in messages (leader's high watermark minus the local log end) of its last round.",
    );
    for s in shards {
        for (leader, lag) in &s.follower_lag {
            o.sample(
                "shardlog_follower_lag_messages",
                &[
                    ("shard", &s.shard.to_string()),
                    ("leader", &leader.to_string()),
                ],
                *lag,
            );
        }
    }
    o.per_shard(
        shards,
        "shardlog_segment_files_open",
        "Sealed-segment files open per shard (at most max_open_segment_files split over the shards).",
        |s| s.segment_files_open,
    );
    o.per_shard(
        shards,
        "shardlog_segment_files_limit",
        "The shard's share of max_open_segment_files.",
        |s| s.segment_files_limit,
    );
    o.header(
        "shardlog_segment_files_opened_total",
        "counter",
        "Sealed-segment files opened on demand (reads of segments not kept open).",
    );
    o.sample(
        "shardlog_segment_files_opened_total",
        &[],
        shards.iter().map(|s| s.segment_files_opened).sum::<u64>(),
    );
    o.header(
        "shardlog_request_memory_bytes",
        "gauge",
        "Request bytes read and not yet answered per shard (max_request_memory_bytes).",
    );
    for s in shards {
        o.sample(
            "shardlog_request_memory_bytes",
            &[("shard", &s.shard.to_string())],
            s.request_memory_bytes,
        );
    }
    o.header(
        "shardlog_request_memory_waits_total",
        "counter",
        "Requests that waited for request memory before being read (back-pressure).",
    );
    o.sample(
        "shardlog_request_memory_waits_total",
        &[],
        shards.iter().map(|s| s.request_memory_waits).sum::<u64>(),
    );
    o.per_shard(
        shards,
        "shardlog_response_queue_bytes",
        "Answer bytes reserved or waiting to be written, all connections of a shard (each bounded by max_response_queue_bytes).",
        |s| s.response_queue_bytes,
    );
    o.per_shard(
        shards,
        "shardlog_response_queue_peak_bytes",
        "The most shardlog_response_queue_bytes has been since start, per shard.",
        |s| s.response_queue_peak_bytes,
    );
    o.header(
        "shardlog_response_queue_waits_total",
        "counter",
        "Requests that waited for their connection's earlier answers to be written (back-pressure).",
    );
    o.sample(
        "shardlog_response_queue_waits_total",
        &[],
        shards.iter().map(|s| s.response_queue_waits).sum::<u64>(),
    );
    o.header(
        "shardlog_bad_requests_total",
        "counter",
        "Malformed, oversized or unknown requests (each closed its connection).",
    );
    o.sample(
        "shardlog_bad_requests_total",
        &[],
        shards.iter().map(|s| s.bad_requests).sum::<u64>(),
    );
    o.per_shard(
        shards,
        "shardlog_producer_ids",
        "Idempotent producer ids whose state (epoch, last sequences) the shard's partitions keep; one per producer and partition.",
        |s| s.producer_ids,
    );
    o.header(
        "shardlog_producer_ids_forgotten_total",
        "counter",
        "Producer ids forgotten: reason=expired (producer_id_expiration_ms) or limit (max_producer_ids_per_partition).",
    );
    o.sample(
        "shardlog_producer_ids_forgotten_total",
        &[("reason", "expired")],
        shards.iter().map(|s| s.producer_ids_expired).sum::<u64>(),
    );
    o.sample(
        "shardlog_producer_ids_forgotten_total",
        &[("reason", "limit")],
        shards.iter().map(|s| s.producer_ids_evicted).sum::<u64>(),
    );

    let mut requests: BTreeMap<i16, u64> = BTreeMap::new();
    let mut latency: BTreeMap<i16, HistSnapshot> = BTreeMap::new();
    let mut errors: BTreeMap<(i16, i16), u64> = BTreeMap::new();
    let mut stages: BTreeMap<Stage, HistSnapshot> = BTreeMap::new();
    let mut disk_ops: [HistSnapshot; DiskOp::ALL.len()] = Default::default();
    for s in shards {
        for (k, n) in &s.requests {
            *requests.entry(*k).or_insert(0) += n;
        }
        for (k, h) in &s.latency {
            latency.entry(*k).or_default().merge(h);
        }
        for (a, c, n) in &s.errors {
            *errors.entry((*a, *c)).or_insert(0) += n;
        }
        for (st, h) in &s.stages {
            stages.entry(*st).or_default().merge(h);
        }
        for (op, h) in &s.disk_ops {
            disk_ops[*op as usize].merge(h);
        }
    }
    o.header(
        "shardlog_requests_total",
        "counter",
        "Requests answered, by API.",
    );
    for (k, n) in &requests {
        o.sample("shardlog_requests_total", &[("api", &api_name(*k))], n);
    }
    o.header(
        "shardlog_errors_total",
        "counter",
        "Error codes answered (request- or partition-level), by API and Kafka error code.",
    );
    for ((a, c), n) in &errors {
        o.sample(
            "shardlog_errors_total",
            &[
                ("api", &api_name(*a)),
                ("code", &c.to_string()),
                ("error", crate::wire::errors::name(*c)),
            ],
            n,
        );
    }
    o.header(
        "shardlog_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its response being ready, by API.",
    );
    for (k, h) in &latency {
        o.histogram(
            "shardlog_request_duration_seconds",
            &[("api", &api_name(*k))],
            h,
        );
    }
    for family in ["produce", "fetch", "request"] {
        let name = format!("shardlog_{family}_stage_duration_seconds");
        o.header(
            &name,
            "histogram",
            &format!("Time spent in each stage of the {family} path."),
        );
        for (st, h) in &stages {
            let (f, label) = st.names();
            if f == family {
                o.histogram(&name, &[("stage", label)], h);
            }
        }
    }
    if let Some(h) = stages.get(&Stage::ProduceFsyncWait) {
        o.header("shardlog_fsync_wait_duration_seconds", "histogram", "Time acks=all produce requests waited for their flush (fdatasync under the default policy; group commit shares one fsync between waiters).");
        o.histogram("shardlog_fsync_wait_duration_seconds", &[], h);
    }

    o.header(
        "shardlog_disk_op_duration_seconds",
        "histogram",
        "Device operations of the partition logs: direct writes of appended data and the fdatasyncs that make them durable (slower than slow_disk_op_ms: also a warning in the log).",
    );
    for op in DiskOp::ALL {
        o.histogram(
            "shardlog_disk_op_duration_seconds",
            &[("op", op.name())],
            &disk_ops[op as usize],
        );
    }

    let mut parts: Vec<&PartitionSnapshot> = shards.iter().flat_map(|s| &s.partitions).collect();
    parts.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    type Getter = fn(&PartitionSnapshot) -> i128;
    let families: [(&str, &str, &str, Getter); 10] = [
        (
            "shardlog_partition_bytes_in_total",
            "counter",
            "Record batch bytes appended.",
            |p| p.bytes_in.into(),
        ),
        (
            "shardlog_partition_records_in_total",
            "counter",
            "Records appended.",
            |p| p.records_in.into(),
        ),
        (
            "shardlog_partition_batches_in_total",
            "counter",
            "Record batches appended.",
            |p| p.batches_in.into(),
        ),
        (
            "shardlog_partition_bytes_out_total",
            "counter",
            "Record batch bytes served to fetches.",
            |p| p.bytes_out.into(),
        ),
        (
            "shardlog_partition_records_out_total",
            "counter",
            "Records served to fetches.",
            |p| p.records_out.into(),
        ),
        (
            "shardlog_partition_log_start_offset",
            "gauge",
            "Log start offset.",
            |p| p.log_start_offset.into(),
        ),
        (
            "shardlog_partition_log_end_offset",
            "gauge",
            "Log end offset (next offset to be assigned).",
            |p| p.log_end_offset.into(),
        ),
        (
            "shardlog_partition_high_watermark",
            "gauge",
            "High watermark: the end visible to consumers (committed by the flush policy).",
            |p| p.high_watermark.into(),
        ),
        (
            "shardlog_partition_size_bytes",
            "gauge",
            "Bytes of the partition's segments on disk.",
            |p| p.size_bytes.into(),
        ),
        (
            "shardlog_partition_cache_bytes",
            "gauge",
            "Bytes held in the partition's batch cache.",
            |p| p.cache_bytes.into(),
        ),
    ];
    for (name, kind, help, get) in families {
        o.header(name, kind, help);
        for p in &parts {
            let part = p.partition.to_string();
            o.sample(name, &[("topic", &p.topic), ("partition", &part)], get(p));
        }
    }
    o.per_shard(
        shards,
        "shardlog_partitions",
        "Partitions open per shard.",
        |s| s.partitions.len() as u64,
    );
    o.per_shard(
        shards,
        "shardlog_batch_cache_bytes",
        "Bytes in the batch caches of all partition logs (internal ones too), per shard.",
        |s| s.cache_used_bytes,
    );
    o.per_shard(
        shards,
        "shardlog_batch_cache_limit_bytes",
        "The shard's share of log_cache_total_bytes: its batch caches together hold at most this.",
        |s| s.cache_limit_bytes,
    );
    o.header(
        "shardlog_group_lag",
        "gauge",
        "Consumer group lag: high watermark minus committed offset.",
    );
    o.header(
        "shardlog_group_committed_offset",
        "gauge",
        "Consumer group committed offset.",
    );
    for g in &extra.groups {
        let part = g.partition.to_string();
        let l = [
            ("group", g.group.as_str()),
            ("topic", g.topic.as_str()),
            ("partition", part.as_str()),
        ];
        o.sample("shardlog_group_lag", &l, g.lag);
        o.sample("shardlog_group_committed_offset", &l, g.committed);
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_output() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(10)); // first bucket
        h.observe(Duration::from_millis(3)); // le 0.005
        h.observe(Duration::from_secs(100)); // +Inf
        let snap = h.snapshot();
        assert_eq!(snap.count(), 3);
        let s = ShardSnapshot {
            stages: vec![(Stage::ProduceFsyncWait, snap.clone())],
            disk_ops: vec![(DiskOp::Fdatasync, snap)],
            ..Default::default()
        };
        let text = render(&[s], &Extra::default());
        assert!(
            text.contains("shardlog_fsync_wait_duration_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("shardlog_fsync_wait_duration_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("shardlog_fsync_wait_duration_seconds_bucket{le=\"30\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("shardlog_fsync_wait_duration_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("shardlog_fsync_wait_duration_seconds_count 3\n"),
            "{text}"
        );
        assert!(
            text.contains("shardlog_disk_op_duration_seconds_count{op=\"fdatasync\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("shardlog_disk_op_duration_seconds_count{op=\"write\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "shardlog_produce_stage_duration_seconds_count{stage=\"fsync_wait\"} 3\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn shards_are_merged_and_labels_escaped() {
        let a = ShardSnapshot {
            shard: 0,
            requests: vec![(0, 5)],
            errors: vec![(0, 3, 2)],
            partitions: vec![PartitionSnapshot {
                topic: "we\"ird".into(),
                partition: 1,
                bytes_in: 10,
                log_end_offset: 7,
                ..Default::default()
            }],
            ..Default::default()
        };
        let b = ShardSnapshot {
            shard: 1,
            requests: vec![(0, 2), (1, 4)],
            errors: vec![(0, 3, 1)],
            ..Default::default()
        };
        let text = render(&[a, b], &Extra::default());
        assert!(
            text.contains("shardlog_requests_total{api=\"Produce\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("shardlog_requests_total{api=\"Fetch\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("shardlog_errors_total{api=\"Produce\",code=\"3\",error=\"UNKNOWN_TOPIC_OR_PARTITION\"} 3\n"), "{text}");
        assert!(
            text.contains(
                "shardlog_partition_log_end_offset{topic=\"we\\\"ird\",partition=\"1\"} 7\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn controller_view_gauges() {
        let s = ShardSnapshot {
            shard: 1,
            partitions_offline: 2,
            ..Default::default()
        };
        let extra = Extra {
            partitions_under_replicated: 3,
            partitions_offline: 4,
            brokers_live: 2,
            controller_leader: -1,
            ..Default::default()
        };
        let text = render(&[s], &extra);
        for line in [
            "shardlog_partition_logs_offline{shard=\"1\"} 2\n",
            "shardlog_partitions_offline 4\n",
            "shardlog_partitions_under_replicated 3\n",
            "shardlog_brokers_live 2\n",
            "shardlog_controller_leader -1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert_eq!(
            text.matches("# TYPE shardlog_partitions_offline ").count(),
            1
        );
    }

    #[test]
    fn counters_record_on_this_thread() {
        std::thread::spawn(|| {
            request(0, Duration::from_millis(1));
            request(0, Duration::from_millis(2));
            error(0, 0);
            error(0, 10);
            with(|m| {
                assert_eq!(m.requests[0].get(), 2);
                assert_eq!(m.errors.borrow().get(&(0, 10)), Some(&1));
                assert_eq!(m.errors.borrow().len(), 1);
            });
        })
        .join()
        .expect("thread");
    }
}

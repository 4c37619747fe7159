//! A shard: one pinned glommio executor that owns a fixed set of partitions.
//!
//! Partition `(topic, p)` belongs to shard `fnv1a(topic, p) % shards`. Nothing a shard owns is
//! touched by another thread: a request for a partition on another shard travels as a
//! [`ShardReq`] over the glommio channel mesh (bounded SPSC channels between every pair of
//! shards), is executed by the owner, and its [`ShardResp`] travels back. No locks on the
//! produce/fetch path: each shard's state is behind `RefCell`s that are never held across an
//! await.
//!
//! Ordering: [`Shard::send`] returns once the request has been *placed* (queued on the local
//! partition appender, or handed to the mesh channel, which is FIFO), and gives back a future
//! for the answer. A connection places its requests one after the other, so two produce
//! requests from one connection reach a partition in the order they were sent, wherever the
//! partition lives.
//!
//! Metadata: every shard keeps a copy of the [`ClusterMeta`]; shard 0 is the authority (see
//! `metadata.rs`) and changes reach the others as [`ShardReq::Apply`] before the admin request
//! that caused them is answered.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::controller::topic_map::TopicPartMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{self, LocalBoxFuture};
use futures::{FutureExt, StreamExt};
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::sync::Semaphore;
use shardlog_engine::{GlommioStorage, Storage, StoredBatch};

use crate::config::BrokerConfig;
use crate::controller::metadata::{
    self, ClusterMeta, MetaEvent, MetadataStore, PartitionMeta, TopicMeta,
};
use crate::partition::{now_ms, Partition};
use crate::wire::errors;
use crate::wire::fetch::FetchSessions;
use shardlog_coordinator::Untrusted;

/// Shard that owns `(topic, partition)` among `shards`.
///
/// The internal `__consumer_offsets` partitions are the exception: partition `p` is on shard
/// `p % shards`, with the groups stored in it (see `groups.rs`).
pub fn shard_for(topic: &str, partition: i32, shards: usize) -> usize {
    if topic == crate::groups::coordinator::OFFSETS_TOPIC {
        return shardlog_coordinator::shard_for_offsets_partition(
            partition.max(0) as usize,
            shards,
        );
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic
        .as_bytes()
        .iter()
        .chain(partition.to_be_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

/// Longest topic name whose directory is `<name>~<id>`: 222 + 33 = 255 bytes, the file name
/// limit of ext4 and xfs.
pub const FULL_NAME_DIR_MAX: usize = 255 - 33;
/// Characters of a longer name kept in its directory name (`<prefix>+~<id>`). 192 + 34 = 226
/// bytes leaves room for the `.deleted-<nanoseconds>` a deletion appends (29 bytes).
pub const LONG_NAME_DIR_PREFIX: usize = 192;

/// Directory of a topic's partitions: the id keeps a re-created topic from seeing old data.
///
/// `<name>~<32 hex id>` when that fits in a file name (names up to 222 characters: the form
/// every version wrote, so existing data directories open unchanged); for the longer names
/// Kafka allows (up to 249), `<first 192 characters>+~<32 hex id>`. `+` is not a legal topic
/// character, so the two forms never collide, and the id alone makes a directory unique.
pub fn topic_dir(data_dir: &std::path::Path, t: &TopicMeta) -> PathBuf {
    data_dir.join("logs").join(topic_dir_name(&t.name, t.id))
}

/// The file name of a topic's directory (see [`topic_dir`]).
pub fn topic_dir_name(name: &str, id: u128) -> String {
    if name.len() <= FULL_NAME_DIR_MAX {
        format!("{name}~{id:032x}")
    } else {
        // Topic names are ASCII (validated), so any byte index is a character boundary; `get`
        // keeps this total for any string.
        let prefix = name.get(..LONG_NAME_DIR_PREFIX).unwrap_or(name);
        format!("{prefix}+~{id:032x}")
    }
}

#[derive(Debug)]
pub struct ProducePart {
    pub topic: String,
    pub partition: i32,
    pub records: Option<Bytes>,
}

#[derive(Clone, Debug)]
pub struct ProduceResult {
    pub topic: String,
    pub partition: i32,
    pub error: i16,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

#[derive(Clone, Debug)]
pub struct ReadPart {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
}

#[derive(Clone, Debug, Default)]
pub struct ReadOut {
    pub topic: String,
    pub partition: i32,
    pub error: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: Vec<StoredBatch>,
    pub bytes: usize,
}

/// One partition-level answer with an offset and timestamp (ListOffsets, DeleteRecords,
/// OffsetForLeaderEpoch).
#[derive(Clone, Debug)]
pub struct OffsetOut {
    pub topic: String,
    pub partition: i32,
    pub error: i16,
    pub offset: i64,
    pub timestamp: i64,
    pub leader_epoch: i32,
}

impl OffsetOut {
    /// An answer for `(topic, partition)` with `error` and no offset, timestamp or epoch yet.
    pub fn new(topic: &str, partition: i32, error: i16) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            error,
            offset: -1,
            timestamp: -1,
            leader_epoch: -1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<(String, String)>,
}

/// (name, error code, message)
pub type AdminResult = (String, i16, Option<String>);

/// Config changes for one topic: (key, operation (0 set, 1 delete), value).
pub type ConfigOps = Vec<(String, i8, Option<String>)>;

#[derive(Debug)]
pub enum AdminReq {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics(Vec<String>),
    CreatePartitions {
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
    /// (topic, [(key, op, value)]) with op 0 set, 1 delete; `replace` = legacy AlterConfigs
    /// (the given set replaces every explicit config).
    AlterConfigs {
        topics: Vec<(String, ConfigOps)>,
        replace: bool,
        validate_only: bool,
    },
    AllocateProducerId,
}

#[derive(Debug)]
pub enum AdminResp {
    Results(Vec<AdminResult>),
    ProducerId(Result<i64, i16>),
}

#[derive(Debug)]
pub enum ShardReq {
    Produce {
        acks: i16,
        parts: Vec<ProducePart>,
    },
    Read {
        parts: Vec<ReadPart>,
        max_bytes: usize,
    },
    /// Resolve when any partition's high watermark passes its offset, or at the deadline.
    WaitData {
        parts: Vec<(String, i32, i64)>,
        wait_ms: u64,
    },
    ListOffsets {
        parts: Vec<(String, i32, i64)>,
    },
    DeleteRecords {
        parts: Vec<(String, i32, i64)>,
    },
    EpochEnd {
        parts: Vec<(String, i32, i32)>,
    },
    Admin(AdminReq),
    Apply(MetaEvent),
    /// A consumer-group request for a group this shard owns (see `groups.rs`).
    Group(shardlog_coordinator::Request),
    /// A metrics snapshot of the shard (for a `/metrics` scrape).
    Metrics,
    /// Bytes on disk of this shard's partitions (DescribeLogDirs): all of them (`None`) or
    /// those named.
    LogSizes {
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
}

#[derive(Debug)]
pub enum ShardResp {
    Produce(Vec<ProduceResult>),
    Read(Vec<ReadOut>),
    Waited,
    Offsets(Vec<OffsetOut>),
    Admin(AdminResp),
    Applied,
    Group(shardlog_coordinator::Response),
    Metrics(Box<crate::metrics::ShardSnapshot>),
    /// (topic, partition, bytes) of the partitions asked for that this shard holds.
    LogSizes(Vec<(String, i32, u64)>),
    /// The peer is gone (shutting down).
    Failed,
}

pub enum MeshMsg {
    Req {
        id: u64,
        from: usize,
        req: ShardReq,
        /// When it was handed to the mesh (the shard-hop latency metric).
        sent: std::time::Instant,
    },
    Resp {
        id: u64,
        resp: ShardResp,
    },
}

/// Process-wide state shared by all shards.
pub struct Global {
    pub shutdown: AtomicBool,
    pub drained: AtomicUsize,
    /// `max_connections` and `max_connections_per_ip`, counted over all shards.
    pub connections: std::sync::Arc<crate::wire::limits::ConnectionLimits>,
    /// Partitions whose log could not be opened, whichever shard owns them.
    pub offline: OfflinePartitions,
}

/// Partitions that exist in the metadata but whose log failed to open on its owning shard.
///
/// Metadata is answered on whichever shard a client is connected to, so the owners publish
/// here and every shard reads it there (leader -1, LEADER_NOT_AVAILABLE, the node in
/// `offline_replicas`). A mutex is fine: it is written when a partition goes offline or comes
/// back and read by Metadata only while the count is not zero; produce and fetch never take it
/// (the owner answers KAFKA_STORAGE_ERROR from its own table).
#[derive(Default)]
pub struct OfflinePartitions {
    count: AtomicUsize,
    set: std::sync::Mutex<TopicPartMap<()>>,
}

impl OfflinePartitions {
    fn with<R>(&self, f: impl FnOnce(&mut TopicPartMap<()>) -> R) -> R {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut set);
        self.count.store(set.len(), Ordering::Release);
        r
    }

    pub fn set(&self, topic: &str, partition: i32, offline: bool) {
        self.with(|s| {
            if offline {
                s.insert(topic, partition, ());
            } else {
                s.remove(topic, partition);
            }
        });
    }

    pub fn remove_topic(&self, topic: &str) {
        if self.count() > 0 {
            self.with(|s| s.remove_topic(topic));
        }
    }

    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.count() > 0 && self.with(|s| s.contains(topic, partition))
    }

    /// Offline partitions of `topic` (empty for most topics, without locking when none is).
    pub fn of_topic(&self, topic: &str) -> std::collections::HashSet<i32> {
        if self.count() == 0 {
            return Default::default();
        }
        self.with(|s| s.partitions_of(topic).collect())
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// A partition of this shard whose log failed to open, and when to try again.
struct Offline {
    attempts: u32,
    next_try: std::time::Instant,
}

pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub cfg: Arc<BrokerConfig>,
    pub global: Arc<Global>,
    pub meta: RefCell<ClusterMeta>,
    /// The metadata store (shard 0 only). An async lock: a change is persisted (off the shard)
    /// while the lock is held, so changes are written in the order they are applied.
    authority: Option<futures::lock::Mutex<MetadataStore>>,
    admin_lock: Semaphore,
    pub partitions: RefCell<TopicPartMap<Rc<Partition>>>,
    senders: Senders<MeshMsg>,
    pending: RefCell<HashMap<u64, oneshot::Sender<ShardResp>>>,
    next_id: Cell<u64>,
    pub fetch_sessions: RefCell<FetchSessions>,
    /// Notified once when shutdown begins (connections stop reading).
    pub shutdown_event: event_listener::Event,
    pub connections: Cell<usize>,
    /// This shard's share of `max_request_memory_bytes`: a connection holds a permit for the
    /// size of each request it has read until the request is answered.
    pub request_memory: Rc<Semaphore>,
    pub request_memory_limit: u64,
    /// This shard's share of `log_cache_total_bytes`, joined by every log it opens.
    pub cache_budget: Rc<shardlog_engine::CacheBudget>,
    /// This shard's share of `max_open_segment_files`: the sealed-segment files its logs
    /// keep open (least recently used ones are closed; see the engine's `files.rs`).
    pub segment_files: Rc<crate::partition::SegmentFiles>,
    /// Partitions this shard owns whose log failed to open (see [`OfflinePartitions`]).
    offline: RefCell<TopicPartMap<Offline>>,
    /// This shard's group coordinator and its internal log (see `groups.rs`).
    pub groups: crate::groups::coordinator::Groups,
}

impl Shard {
    pub fn new(
        id: usize,
        cfg: Arc<BrokerConfig>,
        global: Arc<Global>,
        meta: ClusterMeta,
        authority: Option<MetadataStore>,
        senders: Senders<MeshMsg>,
    ) -> Rc<Self> {
        let shards = cfg.cores;
        let slots = cfg.fetch_session_cache_slots.div_ceil(shards.max(1));
        // At least one maximal frame, so that every frame can be read.
        let request_memory_limit = cfg
            .max_request_memory_bytes
            .div_ceil(shards.max(1))
            .max(cfg.max_frame_bytes) as u64;
        Rc::new(Self {
            id,
            shards,
            global,
            meta: RefCell::new(meta),
            authority: authority.map(futures::lock::Mutex::new),
            admin_lock: Semaphore::new(1),
            partitions: RefCell::new(TopicPartMap::new()),
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            fetch_sessions: RefCell::new(FetchSessions::new(id, slots)),
            shutdown_event: event_listener::Event::new(),
            connections: Cell::new(0),
            request_memory: Rc::new(Semaphore::new(request_memory_limit)),
            request_memory_limit,
            cache_budget: shardlog_engine::CacheBudget::new(
                cfg.log_cache_total_bytes.div_ceil(shards.max(1)),
            ),
            segment_files: crate::partition::SegmentFiles::new(
                cfg.max_open_segment_files.div_ceil(shards.max(1)),
            ),
            offline: RefCell::new(TopicPartMap::new()),
            groups: crate::groups::coordinator::Groups::new(&cfg, id),
            cfg,
        })
    }

    pub fn is_shutting_down(&self) -> bool {
        self.global.shutdown.load(Ordering::Relaxed)
    }

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        shard_for(topic, partition, self.shards)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(topic, partition).cloned()
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.meta.borrow().topics.get(name).cloned()
    }

    /// Places `req` on shard `target` and returns a future for its answer (see module docs).
    pub async fn send(
        self: &Rc<Self>,
        target: usize,
        req: ShardReq,
    ) -> LocalBoxFuture<'static, ShardResp> {
        if target == self.id {
            return self.start(req);
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let msg = MeshMsg::Req {
            id,
            from: self.id,
            req,
            sent: std::time::Instant::now(),
        };
        if self.senders.send_to(target, msg).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            tracing::warn!(from = self.id, to = target, "shard channel closed");
            return future::ready(ShardResp::Failed).boxed_local();
        }
        async move { rx.await.unwrap_or(ShardResp::Failed) }.boxed_local()
    }

    /// `send` then await the answer.
    pub async fn call(self: &Rc<Self>, target: usize, req: ShardReq) -> ShardResp {
        self.send(target, req).await.await
    }

    /// Serves requests and answers arriving from the other shards until the mesh closes.
    pub fn spawn_mesh_receivers(self: &Rc<Self>, mut receivers: Receivers<MeshMsg>) {
        for (peer, rx) in receivers.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    match msg {
                        MeshMsg::Req {
                            id,
                            from,
                            req,
                            sent,
                        } => {
                            crate::metrics::stage(crate::metrics::Stage::ShardHop, sent.elapsed());
                            // Placed synchronously, in arrival order.
                            let fut = shard.start(req);
                            let s = shard.clone();
                            glommio::spawn_local(async move {
                                let resp = fut.await;
                                if s.senders
                                    .send_to(from, MeshMsg::Resp { id, resp })
                                    .await
                                    .is_err()
                                {
                                    tracing::debug!(to = from, "could not answer shard (closed)");
                                }
                            })
                            .detach();
                        }
                        MeshMsg::Resp { id, resp } => {
                            if let Some(tx) = shard.pending.borrow_mut().remove(&id) {
                                let _ = tx.send(resp);
                            }
                        }
                    }
                }
                tracing::debug!(shard = shard.id, peer, "mesh receiver closed");
            })
            .detach();
        }
    }

    pub fn close_mesh(&self) {
        self.senders.close();
    }

    /// Executes a request owned by this shard. Everything up to the returned future's first
    /// poll (in particular, queueing appends) happens now.
    fn start(self: &Rc<Self>, req: ShardReq) -> LocalBoxFuture<'static, ShardResp> {
        match req {
            ShardReq::Produce { acks, parts } => self.start_produce(acks, parts),
            ShardReq::Read { parts, max_bytes } => {
                let s = self.clone();
                async move { ShardResp::Read(s.read(parts, max_bytes).await) }.boxed_local()
            }
            ShardReq::WaitData { parts, wait_ms } => {
                let s = self.clone();
                async move {
                    s.wait_data(parts, wait_ms).await;
                    ShardResp::Waited
                }
                .boxed_local()
            }
            ShardReq::ListOffsets { parts } => {
                let s = self.clone();
                async move { ShardResp::Offsets(s.list_offsets(parts).await) }.boxed_local()
            }
            ShardReq::DeleteRecords { parts } => {
                let s = self.clone();
                async move { ShardResp::Offsets(s.delete_records(parts).await) }.boxed_local()
            }
            ShardReq::EpochEnd { parts } => ShardResp::Offsets(self.epoch_end(parts))
                .pipe(future::ready)
                .boxed_local(),
            ShardReq::Admin(a) => {
                let s = self.clone();
                async move { ShardResp::Admin(s.admin(a).await) }.boxed_local()
            }
            ShardReq::Group(r) => crate::groups::coordinator::Groups::submit(self, r)
                .map(ShardResp::Group)
                .boxed_local(),
            ShardReq::Apply(ev) => {
                let s = self.clone();
                async move {
                    s.apply(ev).await;
                    ShardResp::Applied
                }
                .boxed_local()
            }
            ShardReq::Metrics => {
                let snap = crate::metrics::snapshot(self);
                future::ready(ShardResp::Metrics(Box::new(snap))).boxed_local()
            }
            ShardReq::LogSizes { topics } => {
                future::ready(ShardResp::LogSizes(self.log_sizes(topics.as_deref()))).boxed_local()
            }
        }
    }

    /// (topic, partition, bytes on disk) of this shard's partitions: every one (`None`) or
    /// those of `topics` it holds, in (topic, partition) order.
    fn log_sizes(&self, topics: Option<&[(String, Vec<i32>)]>) -> Vec<(String, i32, u64)> {
        let parts = self.partitions.borrow();
        let mut out: Vec<(String, i32, u64)> = match topics {
            None => parts
                .values()
                .map(|p| (p.topic.clone(), p.index, p.log.size_bytes()))
                .collect(),
            Some(topics) => {
                let mut wanted: Vec<(&str, i32)> = topics
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.as_str(), p)))
                    .collect();
                wanted.sort_unstable();
                wanted.dedup();
                wanted
                    .into_iter()
                    .filter_map(|(t, i)| {
                        let p = parts.get(t, i)?;
                        Some((p.topic.clone(), p.index, p.log.size_bytes()))
                    })
                    .collect()
            }
        };
        out.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    fn start_produce(
        self: &Rc<Self>,
        acks: i16,
        parts: Vec<ProducePart>,
    ) -> LocalBoxFuture<'static, ShardResp> {
        let mut waits: Vec<LocalBoxFuture<'static, ProduceResult>> =
            Vec::with_capacity(parts.len());
        for part in parts {
            let mut res = ProduceResult {
                topic: part.topic.clone(),
                partition: part.partition,
                error: errors::NONE,
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1,
            };
            let Some(p) = self.partition(&part.topic, part.partition) else {
                res.error = self.missing_partition_error(&part.topic, part.partition);
                tracing::debug!(topic = %Untrusted(&part.topic), partition = part.partition, error = errors::name(res.error), "produce to a partition that is not open");
                waits.push(future::ready(res).boxed_local());
                continue;
            };
            let Some(records) = part.records.filter(|r| !r.is_empty()) else {
                tracing::info!(topic = %part.topic, partition = part.partition, "produce without records: INVALID_RECORD");
                res.error = errors::INVALID_RECORD;
                waits.push(future::ready(res).boxed_local());
                continue;
            };
            let rx = p.enqueue(records);
            waits.push(
                async move {
                    match rx.await {
                        Ok(Ok(a)) => {
                            res.base_offset = a.base_offset;
                            res.log_append_time_ms = a.log_append_time_ms.unwrap_or(-1);
                            let wait_started = std::time::Instant::now();
                            let waited = match acks {
                                0 => Ok(()),
                                1 => p.log.wait_written(a.last_offset).await,
                                _ => p.log.wait_committed(a.last_offset).await.map(|c| {
                                    debug_assert!(c.through() >= a.last_offset);
                                }),
                            };
                            match acks {
                                0 => {}
                                1 => crate::metrics::stage(
                                    crate::metrics::Stage::ProduceWriteWait,
                                    wait_started.elapsed(),
                                ),
                                _ => crate::metrics::stage(
                                    crate::metrics::Stage::ProduceFsyncWait,
                                    wait_started.elapsed(),
                                ),
                            }
                            if let Err(e) = waited {
                                res.error = errors::log_error_code(&e, &p.topic, p.index);
                            }
                        }
                        Ok(Err(code)) => res.error = code,
                        Err(_) => {
                            res.error = errors::UNKNOWN_TOPIC_OR_PARTITION;
                        }
                    }
                    res.log_start_offset = p.log.log_start_offset();
                    res
                }
                .boxed_local(),
            );
        }
        async move { ShardResp::Produce(future::join_all(waits).await) }.boxed_local()
    }

    async fn read(&self, parts: Vec<ReadPart>, max_bytes: usize) -> Vec<ReadOut> {
        let mut out = Vec::with_capacity(parts.len());
        let mut total = 0usize;
        for part in parts {
            let mut r = ReadOut {
                topic: part.topic.clone(),
                partition: part.partition,
                high_watermark: -1,
                log_start_offset: -1,
                ..ReadOut::default()
            };
            let Some(p) = self.partition(&part.topic, part.partition) else {
                r.error = self.missing_partition_error(&part.topic, part.partition);
                out.push(r);
                continue;
            };
            let hw = p.log.committed_end_offset();
            r.high_watermark = hw;
            r.log_start_offset = p.log.log_start_offset();
            let budget = part.max_bytes.min(max_bytes.saturating_sub(total));
            if budget > 0 || total == 0 {
                let read_started = std::time::Instant::now();
                let result = p.log.read(part.offset, hw, budget, total == 0).await;
                crate::metrics::stage(crate::metrics::Stage::FetchRead, read_started.elapsed());
                match result {
                    Ok(rr) => {
                        p.stats
                            .served(rr.bytes, crate::metrics::records_in_batches(&rr.batches));
                        total += rr.bytes;
                        r.bytes = rr.bytes;
                        r.batches = rr.batches;
                    }
                    Err(e) => r.error = errors::log_error_code(&e, &p.topic, p.index),
                }
            }
            out.push(r);
        }
        out
    }

    async fn wait_data(&self, parts: Vec<(String, i32, i64)>, wait_ms: u64) {
        let started = std::time::Instant::now();
        self.wait_data_inner(parts, wait_ms).await;
        crate::metrics::stage(crate::metrics::Stage::FetchWait, started.elapsed());
    }

    async fn wait_data_inner(&self, parts: Vec<(String, i32, i64)>, wait_ms: u64) {
        let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let mut listeners = Vec::new();
            for (topic, partition, offset) in &parts {
                match self.partition(topic, *partition) {
                    None => return,
                    Some(p) => {
                        let l = p.log.listen();
                        if p.log.committed_end_offset() > *offset {
                            return;
                        }
                        listeners.push(l);
                    }
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline
                || listeners.is_empty()
                || self.global.shutdown.load(Ordering::Relaxed)
            {
                return;
            }
            let left = (deadline - now).min(Duration::from_millis(200));
            let timer = glommio::timer::sleep(left).boxed_local();
            let any = future::select_all(listeners.into_iter().map(|l| l.boxed_local()));
            let _ = future::select(timer, any).await;
        }
    }

    async fn list_offsets(&self, parts: Vec<(String, i32, i64)>) -> Vec<OffsetOut> {
        let mut out = Vec::with_capacity(parts.len());
        for (topic, partition, ts) in parts {
            let mut r = OffsetOut::new(&topic, partition, errors::NONE);
            match self.partition(&topic, partition) {
                None => r.error = self.missing_partition_error(&topic, partition),
                Some(p) => {
                    r.leader_epoch = p.leader_epoch.get();
                    let hw = p.log.committed_end_offset();
                    match ts {
                        -2 => r.offset = p.log.log_start_offset(),
                        -1 => r.offset = hw,
                        ts if ts >= 0 => match p.log.offset_for_timestamp(ts).await {
                            Ok(Some((off, t))) if off < hw => {
                                r.offset = off;
                                r.timestamp = t;
                            }
                            Ok(_) => {}
                            Err(e) => r.error = errors::log_error_code(&e, &p.topic, p.index),
                        },
                        _ => {
                            tracing::info!(
                                topic,
                                partition,
                                timestamp = ts,
                                "ListOffsets: unsupported special timestamp"
                            );
                            r.error = errors::UNSUPPORTED_VERSION;
                        }
                    }
                }
            }
            out.push(r);
        }
        out
    }

    async fn delete_records(&self, parts: Vec<(String, i32, i64)>) -> Vec<OffsetOut> {
        let mut out = Vec::with_capacity(parts.len());
        for (topic, partition, offset) in parts {
            let mut r = OffsetOut::new(&topic, partition, errors::NONE);
            match self.partition(&topic, partition) {
                None => r.error = self.missing_partition_error(&topic, partition),
                Some(p) => {
                    let hw = p.log.committed_end_offset();
                    let target = if offset == -1 { hw } else { offset };
                    if target < 0 || target > hw {
                        tracing::info!(
                            topic,
                            partition,
                            offset,
                            hw,
                            "DeleteRecords beyond the high watermark: OFFSET_OUT_OF_RANGE"
                        );
                        r.error = errors::OFFSET_OUT_OF_RANGE;
                    } else {
                        match p.log.delete_records_before(target).await {
                            Ok(start) => {
                                tracing::info!(
                                    topic,
                                    partition,
                                    log_start = start,
                                    "deleted records"
                                );
                                r.offset = start;
                            }
                            Err(e) => r.error = errors::log_error_code(&e, &p.topic, p.index),
                        }
                    }
                }
            }
            out.push(r);
        }
        out
    }

    fn epoch_end(&self, parts: Vec<(String, i32, i32)>) -> Vec<OffsetOut> {
        parts
            .into_iter()
            .map(|(topic, partition, epoch)| {
                let mut r = OffsetOut::new(&topic, partition, errors::NONE);
                match self.partition(&topic, partition) {
                    None => r.error = self.missing_partition_error(&topic, partition),
                    Some(p) => {
                        let current = p.leader_epoch.get();
                        if epoch > current {
                            r.error = errors::UNKNOWN_LEADER_EPOCH;
                        } else if epoch == current {
                            r.leader_epoch = current;
                            r.offset = p.log.log_end_offset();
                        } else if let Some((e, off)) = p.log.end_offset_for_epoch(epoch) {
                            r.leader_epoch = e;
                            r.offset = off;
                        }
                    }
                }
                r
            })
            .collect()
    }

    /// Applies a metadata change: updates the local copy, opens, reconfigures or removes the
    /// logs this shard owns.
    pub async fn apply(self: &Rc<Self>, ev: MetaEvent) {
        self.meta.borrow_mut().apply(&ev);
        match ev {
            MetaEvent::Upsert(t) => self.open_topic(&t).await,
            MetaEvent::Deleted(name) => self.remove_topic(&name).await,
        }
    }

    /// Opens this shard's partitions of `t` that are not open yet; reconfigures the others.
    pub async fn open_topic(self: &Rc<Self>, t: &TopicMeta) {
        let config = metadata::log_config(t, &self.cfg);
        let compression = metadata::compression_policy(t, &self.cfg);
        for (i, pm) in t.partitions.iter().enumerate() {
            let i = i as i32;
            if self.owner(&t.name, i) != self.id {
                continue;
            }
            if let Some(p) = self.partition(&t.name, i) {
                p.log.set_config(config.clone());
                p.compression.set(compression);
                p.leader_epoch.set(pm.leader_epoch);
                continue;
            }
            self.open_partition(t, i).await;
        }
    }

    /// Opens one partition's log. On failure the partition is offline: Metadata shows it
    /// without a leader, requests for it get KAFKA_STORAGE_ERROR, and the shard's tick tries
    /// again every `partition_open_retry_ms` until it opens or its topic is deleted.
    async fn open_partition(self: &Rc<Self>, t: &TopicMeta, i: i32) -> bool {
        let config = metadata::log_config(t, &self.cfg);
        let dir = topic_dir(&self.cfg.data_dir, t);
        let leader_epoch = t.partitions.get(i as usize).map_or(0, |pm| pm.leader_epoch);
        let opened = Partition::open(
            &t.name,
            i,
            dir.join(i.to_string()),
            dir.join(format!("{i}.producers.json")),
            config,
            leader_epoch,
            &self.cache_budget,
            &self.segment_files,
        )
        .await;
        let retry = Duration::from_millis(self.cfg.partition_open_retry_ms);
        match opened {
            Ok(p) => {
                self.limit_producers(&p, now_ms());
                p.compression
                    .set(metadata::compression_policy(t, &self.cfg));
                self.partitions.borrow_mut().insert(&t.name, i, p);
                if let Some(o) = self.offline.borrow_mut().remove(&t.name, i) {
                    tracing::info!(topic = %t.name, partition = i, attempts = o.attempts, "partition log opened; the partition is online again");
                    self.global.offline.set(&t.name, i, false);
                }
                true
            }
            Err(e) => {
                let mut offline = self.offline.borrow_mut();
                let entry = offline.get_or_insert_with(&t.name, i, || Offline {
                    attempts: 0,
                    next_try: std::time::Instant::now(),
                });
                entry.attempts += 1;
                entry.next_try = std::time::Instant::now() + retry;
                if entry.attempts == 1 {
                    tracing::error!(topic = %t.name, partition = i, error = %e, retry_ms = self.cfg.partition_open_retry_ms, "cannot open partition log; the partition is offline until a retry succeeds");
                    self.global.offline.set(&t.name, i, true);
                } else {
                    tracing::debug!(topic = %t.name, partition = i, attempts = entry.attempts, error = %e, "partition log still cannot be opened");
                }
                false
            }
        }
    }

    /// Tries again to open the offline partitions whose retry time has come.
    async fn retry_offline(self: &Rc<Self>) {
        let now = std::time::Instant::now();
        let due: Vec<(String, i32)> = self
            .offline
            .borrow()
            .iter()
            .filter(|(_, _, o)| o.next_try <= now)
            .map(|(t, i, _)| (t.to_string(), i))
            .collect();
        let (mut opened, mut failed) = (0usize, 0usize);
        for (topic, i) in due {
            let Some(t) = self
                .topic(&topic)
                .filter(|t| (i as usize) < t.partitions.len())
            else {
                self.offline.borrow_mut().remove(&topic, i);
                self.global.offline.set(&topic, i, false);
                continue;
            };
            if self.open_partition(&t, i).await {
                opened += 1;
            } else {
                failed += 1;
            }
        }
        if failed > 0 {
            tracing::warn!(
                shard = self.id,
                opened,
                still_offline = failed,
                "retried offline partitions"
            );
        }
    }

    /// Partitions of this shard that are offline (their log failed to open).
    pub fn offline_count(&self) -> usize {
        self.offline.borrow().len()
    }

    /// The error for a request naming a partition this shard does not have open:
    /// KAFKA_STORAGE_ERROR when it exists but its log failed to open (offline), else
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn missing_partition_error(&self, topic: &str, partition: i32) -> i16 {
        if self.offline.borrow().contains(topic, partition) {
            errors::KAFKA_STORAGE_ERROR
        } else {
            errors::UNKNOWN_TOPIC_OR_PARTITION
        }
    }

    async fn remove_topic(&self, name: &str) {
        self.offline.borrow_mut().remove_topic(name);
        self.global.offline.remove_topic(name);
        let parts = self.partitions.borrow_mut().remove_topic(name);
        // Concurrently: releasing a log may wait for its appender task to notice the closed
        // queue, and removing it syncs the parent directory; one partition after another took
        // 35.8 s for the 2201 partitions of the standard benchmark's scenario 5.
        futures::stream::iter(parts)
            .for_each_concurrent(REMOVE_CONCURRENCY, |(index, p)| async move {
                let snapshot = p.snapshot_path().to_path_buf();
                let Some(log) = release_log(p).await else {
                    tracing::warn!(
                        topic = name,
                        partition = index,
                        "log still in use after deletion; its files are removed at next start"
                    );
                    return;
                };
                if let Err(e) = log.remove().await {
                    tracing::error!(topic = name, partition = index, error = %e, "removing deleted partition failed");
                }
                // Off the shard; a snapshot that was never written is already gone.
                if let Err(e) = GlommioStorage.remove_file(&snapshot).await {
                    tracing::warn!(topic = name, partition = index, error = %e, "removing deleted partition's producer snapshot failed");
                }
            })
            .await;
    }

    /// Closes every log cleanly (flush, indexes, clean marker) after writing producer snapshots.
    pub async fn close_all(&self) {
        let all = self.partitions.borrow_mut().drain();
        for (topic, idx, p) in all {
            if let Err(e) = p.write_snapshot().await {
                tracing::warn!(topic, partition = idx, error = %e, "could not write producer snapshot");
            }
            match release_log(p).await {
                Some(log) => {
                    if let Err(e) = log.close().await {
                        tracing::error!(topic, partition = idx, error = %e, "closing log failed");
                    }
                }
                None => tracing::warn!(
                    topic,
                    partition = idx,
                    "log still in use at shutdown; not closed cleanly"
                ),
            }
        }
    }

    /// Applies `producer_id_expiration_ms` and `max_producer_ids_per_partition` to a
    /// partition's producer state; true when it forgot any (its snapshot is then stale).
    fn limit_producers(&self, p: &Partition, now: i64) -> bool {
        let mut st = p.producers.borrow_mut();
        let expiration = i64::try_from(self.cfg.producer_id_expiration_ms).unwrap_or(i64::MAX);
        let expired = st.expire(now, expiration);
        let evicted = st.set_max_ids(self.cfg.max_producer_ids_per_partition);
        if expired > 0 {
            crate::metrics::producer_ids_dropped(expired, true);
        }
        if evicted > 0 {
            crate::metrics::producer_ids_dropped(evicted, false);
        }
        if expired + evicted > 0 {
            tracing::info!(
                topic = %p.topic,
                partition = p.index,
                expired,
                evicted,
                remaining = st.len(),
                "forgot idle idempotent producers"
            );
        }
        expired + evicted > 0
    }

    /// Periodic per-shard work: `tick` every log, retention and producer snapshots now and
    /// then, producer-id expiry when `expiry_due`.
    pub async fn tick_all(self: &Rc<Self>, retention_due: bool, expiry_due: bool) {
        if !self.offline.borrow().is_empty() {
            self.retry_offline().await;
        }
        let now = now_ms();
        let parts: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        for p in parts {
            // A snapshot still holding forgotten producers is rewritten at once, so they do
            // not come back from it after a restart.
            if expiry_due && self.limit_producers(&p, now) {
                if let Err(e) = p.write_snapshot().await {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "could not write producer snapshot");
                }
            }
            if let Err(e) = p.log.tick(now).await {
                errors::log_error_code(&e, &p.topic, p.index);
            }
            if retention_due {
                match p.log.apply_retention(now).await {
                    Ok(r) if r.segments_deleted > 0 => {
                        tracing::info!(topic = %p.topic, partition = p.index, segments = r.segments_deleted, bytes = r.bytes_deleted, "retention deleted segments");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        errors::log_error_code(&e, &p.topic, p.index);
                    }
                }
                if !p.producers.borrow().is_empty() {
                    if let Err(e) = p.write_snapshot().await {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "could not write producer snapshot");
                    }
                }
            }
        }
    }

    // ---- metadata authority (shard 0) ----

    async fn admin(self: &Rc<Self>, req: AdminReq) -> AdminResp {
        if self.authority.is_none() {
            tracing::error!(
                shard = self.id,
                "admin request reached a shard that is not the metadata authority"
            );
            return AdminResp::Results(Vec::new());
        }
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return AdminResp::Results(Vec::new());
        };
        match req {
            AdminReq::AllocateProducerId => {
                let r = match &self.authority {
                    Some(a) => Some(a.lock().await.allocate_producer_id().await),
                    None => None,
                };
                AdminResp::ProducerId(match r {
                    Some(Ok(id)) => Ok(id),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "cannot persist producer id block");
                        Err(errors::KAFKA_STORAGE_ERROR)
                    }
                    None => Err(errors::NOT_CONTROLLER),
                })
            }
            AdminReq::CreateTopics {
                topics,
                validate_only,
            } => {
                let mut out = Vec::with_capacity(topics.len());
                for t in topics {
                    out.push(self.create_topic(t, validate_only).await);
                }
                AdminResp::Results(out)
            }
            AdminReq::DeleteTopics(names) => {
                let mut out = Vec::with_capacity(names.len());
                for name in names {
                    if self.topic(&name).is_none() {
                        tracing::info!(topic = %Untrusted(&name), "delete: UNKNOWN_TOPIC_OR_PARTITION");
                        out.push((name, errors::UNKNOWN_TOPIC_OR_PARTITION, None));
                        continue;
                    }
                    let dir = self.topic(&name).map(|t| topic_dir(&self.cfg.data_dir, &t));
                    let r = self.commit(MetaEvent::Deleted(name.clone())).await;
                    if r == errors::NONE {
                        tracing::info!(topic = %name, "deleted topic");
                        // Every shard has released and removed its partitions by now (`commit`
                        // waits for them): the topic's directory goes too, not at next start.
                        if let Some(dir) = dir {
                            remove_topic_dir(&dir).await;
                        }
                    }
                    out.push((name, r, None));
                }
                AdminResp::Results(out)
            }
            AdminReq::CreatePartitions {
                topics,
                validate_only,
            } => {
                let mut out = Vec::with_capacity(topics.len());
                for (name, count) in topics {
                    let Some(mut t) = self.topic(&name) else {
                        out.push((name, errors::UNKNOWN_TOPIC_OR_PARTITION, None));
                        continue;
                    };
                    let have = t.partitions.len() as i32;
                    if count <= have || count > 100_000 {
                        let msg = format!("topic has {have} partitions; requested {count}");
                        tracing::info!(topic = %Untrusted(&name), %msg, "create partitions: INVALID_PARTITIONS");
                        out.push((name, errors::INVALID_PARTITIONS, Some(msg)));
                        continue;
                    }
                    if validate_only {
                        out.push((name, errors::NONE, None));
                        continue;
                    }
                    t.partitions
                        .resize(count as usize, PartitionMeta { leader_epoch: 0 });
                    let r = self.commit(MetaEvent::Upsert(t)).await;
                    tracing::info!(topic = %name, partitions = count, error = errors::name(r), "increased partitions");
                    out.push((name, r, None));
                }
                AdminResp::Results(out)
            }
            AdminReq::AlterConfigs {
                topics,
                replace,
                validate_only,
            } => {
                let mut out = Vec::with_capacity(topics.len());
                for (name, ops) in topics {
                    let Some(mut t) = self.topic(&name) else {
                        out.push((name, errors::UNKNOWN_TOPIC_OR_PARTITION, None));
                        continue;
                    };
                    if replace {
                        t.configs.clear();
                    }
                    let applied = ops.into_iter().try_for_each(|(key, op, value)| {
                        metadata::apply_config_op(&mut t.configs, key, op, value)
                    });
                    if let Err((code, msg)) = applied {
                        tracing::info!(topic = %Untrusted(&name), %msg, error = errors::name(code), "alter configs refused");
                        out.push((name, code, Some(msg)));
                        continue;
                    }
                    if validate_only {
                        out.push((name, errors::NONE, None));
                        continue;
                    }
                    let r = self.commit(MetaEvent::Upsert(t)).await;
                    tracing::info!(topic = %name, error = errors::name(r), "altered topic configs");
                    out.push((name, r, None));
                }
                AdminResp::Results(out)
            }
        }
    }

    async fn create_topic(self: &Rc<Self>, t: NewTopic, validate_only: bool) -> AdminResult {
        let name = t.name.clone();
        if let Err(msg) = metadata::validate_topic_name(&name) {
            tracing::info!(topic = %Untrusted(&name), %msg, "create topic: INVALID_TOPIC_EXCEPTION");
            return (name, errors::INVALID_TOPIC_EXCEPTION, Some(msg));
        }
        if self.topic(&name).is_some() {
            return (
                name.clone(),
                errors::TOPIC_ALREADY_EXISTS,
                Some(format!("Topic '{name}' already exists.")),
            );
        }
        let partitions = if t.partitions == -1 {
            self.cfg.default_partitions
        } else {
            t.partitions
        };
        if !(1..=100_000).contains(&partitions) {
            let msg = format!("number of partitions must be in 1..=100000, got {partitions}");
            tracing::info!(topic = %Untrusted(&name), %msg, "create topic: INVALID_PARTITIONS");
            return (name, errors::INVALID_PARTITIONS, Some(msg));
        }
        let mut configs = std::collections::BTreeMap::new();
        for (k, v) in t.configs {
            if let Err((code, msg)) = metadata::apply_config_op(&mut configs, k, 0, Some(v)) {
                tracing::info!(topic = %Untrusted(&name), %msg, error = errors::name(code), "create topic refused");
                return (name, code, Some(msg));
            }
        }
        if validate_only {
            return (name, errors::NONE, None);
        }
        let meta = TopicMeta {
            name: name.clone(),
            id: metadata::new_topic_id(),
            partitions: vec![PartitionMeta { leader_epoch: 0 }; partitions as usize],
            configs,
        };
        let r = self.commit(MetaEvent::Upsert(meta)).await;
        if r == errors::NONE {
            tracing::info!(topic = %name, partitions, "created topic");
        }
        (name, r, None)
    }

    /// Persists a change on the authority, then applies it on every shard.
    async fn commit(self: &Rc<Self>, ev: MetaEvent) -> i16 {
        let persisted = match &self.authority {
            Some(a) => a.lock().await.apply(&ev).await,
            None => return errors::NOT_CONTROLLER,
        };
        if let Err(e) = persisted {
            tracing::error!(error = %e, "cannot persist metadata change");
            return errors::KAFKA_STORAGE_ERROR;
        }
        let mut acks = Vec::with_capacity(self.shards);
        for target in 0..self.shards {
            acks.push(self.send(target, ShardReq::Apply(ev.clone())).await);
        }
        for r in future::join_all(acks).await {
            if matches!(r, ShardResp::Failed) {
                tracing::warn!("a shard did not acknowledge a metadata change");
            }
        }
        errors::NONE
    }

    /// Asks the authority to run an admin request.
    pub async fn admin_call(self: &Rc<Self>, req: AdminReq) -> AdminResp {
        match self.call(0, ShardReq::Admin(req)).await {
            ShardResp::Admin(a) => a,
            _ => AdminResp::Results(Vec::new()),
        }
    }
}

/// Removes a deleted topic's directory (its partitions' data directories are on their way to
/// the background deleter already) through the same paced deleter, off the shard.
async fn remove_topic_dir(dir: &std::path::Path) {
    let d = dir.to_path_buf();
    let r = glommio::executor()
        .spawn_blocking(move || {
            shardlog_engine::io::deleter::remove_dir_in_background(&d)?;
            match d.parent() {
                Some(logs) => std::fs::File::open(logs)?.sync_all(),
                None => Ok(()),
            }
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted topic's directory; it is removed at next start");
    }
}

/// Waits (bounded) until nobody else holds the partition, then takes its log.
/// Partitions of a deleted topic released and removed at once.
const REMOVE_CONCURRENCY: usize = 64;

async fn release_log(mut p: Rc<Partition>) -> Option<crate::partition::Log> {
    for attempt in 0..500 {
        match Rc::try_unwrap(p) {
            Ok(part) => {
                // Dropping the partition drops the appender's sender; the appender task holds
                // a clone of the log until it sees the closed channel.
                let mut log = part.into_log();
                for attempt in 0..500 {
                    match Rc::try_unwrap(log) {
                        Ok(l) => return Some(l),
                        Err(still) => {
                            log = still;
                            let_others_finish(attempt).await;
                        }
                    }
                }
                return None;
            }
            Err(still) => {
                p = still;
                let_others_finish(attempt).await;
            }
        }
    }
    None
}

/// Waits for other tasks on this shard to drop what they hold. The holder is usually a task
/// that is already woken (the appender seeing its queue closed), so the first waits only yield
/// to it; a 10 ms sleep from the start made every release take at least 10 ms, and a shutdown
/// with a thousand partitions spend seconds in it.
async fn let_others_finish(attempt: u32) {
    if attempt < 3 {
        futures_lite::future::yield_now().await;
    } else {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_stable_and_spreads() {
        let mut counts = [0usize; 4];
        for p in 0..400 {
            let s = shard_for("topic", p, 4);
            assert_eq!(s, shard_for("topic", p, 4));
            counts[s] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        assert_eq!(shard_for("x", 3, 1), 0);
    }

    #[test]
    fn topic_directory_names_fit_for_every_legal_name() {
        let id = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128;
        // The form every earlier version wrote, unchanged (existing data directories).
        assert_eq!(
            topic_dir_name("orders", id),
            "orders~0123456789abcdef0123456789abcdef"
        );
        let at_limit = "a".repeat(FULL_NAME_DIR_MAX);
        assert_eq!(
            topic_dir_name(&at_limit, id),
            format!("{at_limit}~{id:032x}")
        );
        for len in 1..=249 {
            let name = "n".repeat(len);
            let dir = topic_dir_name(&name, id);
            assert!(dir.len() <= 255, "{len}: {} bytes", dir.len());
            assert!(dir.ends_with(&format!("~{id:032x}")));
            if len > FULL_NAME_DIR_MAX {
                // Room for the suffix a deletion appends (`.deleted-` and 20 digits).
                assert!(dir.len() + 29 <= 255, "{len}: {} bytes", dir.len());
                assert!(dir.starts_with(&name[..LONG_NAME_DIR_PREFIX]));
                assert!(dir.contains("+~"));
            }
        }
        // Two long names sharing their first 192 characters differ by id.
        let a = format!("{}a", "x".repeat(240));
        let b = format!("{}b", "x".repeat(240));
        assert_ne!(topic_dir_name(&a, 1), topic_dir_name(&b, 2));
    }
}

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
//! `crate::controller::authority`) and changes reach the others as [`ShardReq::Apply`] before
//! the admin request that caused them is answered.
//!
//! What runs a request on the shard it is addressed to is not here: the broker passes
//! `crate::dispatch::serve` to [`Shard::new`], so the mesh knows nothing of the APIs above it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::controller::topic_map::TopicPartMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::channel::oneshot;
use futures::future::{self, LocalBoxFuture};
use futures::FutureExt;
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::sync::Semaphore;

use crate::config::BrokerConfig;
use crate::controller::log::MetadataAuthority;
use crate::controller::metadata::{ClusterMeta, TopicMeta};
use crate::controller::raft_log::ControllerLog;
use crate::partition::Partition;
use crate::wire::fetch::FetchSessions;

use crate::mesh::messages::*;
use crate::mesh::routing::shard_for;

/// What executes a request on the shard it is addressed to (`crate::dispatch::serve`).
pub type ServeFn = fn(&Rc<Shard>, ShardReq) -> LocalBoxFuture<'static, ShardResp>;

/// Process-wide state shared by all shards.
pub struct Global {
    pub shutdown: AtomicBool,
    /// Set by shard 0 once this broker registered with the controller (or gave up waiting):
    /// no shard accepts a client connection before.
    pub registered: AtomicBool,
    pub drained: AtomicUsize,
    /// `max_connections` and `max_connections_per_ip`, counted over all shards.
    pub connections: std::sync::Arc<crate::wire::limits::ConnectionLimits>,
    /// Partitions whose log could not be opened, whichever shard owns them.
    pub offline: OfflinePartitions,
    /// The controller (raft) leader this broker knows of, for Metadata and /metrics.
    pub controller: ControllerLeader,
}

/// The controller leader as last learned by the raft node on shard 0, readable on every shard
/// (Metadata's controller_id, DescribeCluster, /metrics) without a round trip to shard 0.
#[derive(Debug)]
pub struct ControllerLeader(std::sync::atomic::AtomicI32);

impl Default for ControllerLeader {
    fn default() -> Self {
        Self(std::sync::atomic::AtomicI32::new(-1))
    }
}

impl ControllerLeader {
    /// Records the leader (`None`: no leader known, e.g. during an election).
    pub fn set(&self, leader: Option<i32>) {
        self.0
            .store(leader.filter(|&l| l >= 0).unwrap_or(-1), Ordering::Release);
    }

    /// The leader, `None` while unknown.
    pub fn get(&self) -> Option<i32> {
        let l = self.0.load(Ordering::Acquire);
        (l >= 0).then_some(l)
    }
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

    /// Up to `limit` offline partitions (topic, partition), for the heartbeat's report.
    pub fn list(&self, limit: usize) -> Vec<(String, u32)> {
        if self.count() == 0 {
            return Vec::new();
        }
        self.with(|s| {
            s.iter()
                .filter_map(|(t, p, _)| Some((t.to_string(), u32::try_from(p).ok()?)))
                .take(limit)
                .collect()
        })
    }
}

/// A partition of this shard whose log failed to open, and when to try again.
pub(crate) struct Offline {
    pub(crate) attempts: u32,
    pub(crate) next_try: std::time::Instant,
}

pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub cfg: Arc<BrokerConfig>,
    pub global: Arc<Global>,
    pub meta: RefCell<ClusterMeta>,
    /// The metadata authority over the metadata log (shard 0 only). An async lock: a record is
    /// committed (off the shard) while the lock is held, so records commit in the order they
    /// are applied.
    pub(crate) authority: Option<futures::lock::Mutex<MetadataAuthority<ControllerLog>>>,
    /// The metadata quorum's lock-free side: inbox, leader, locally applied index (shard 0).
    pub(crate) quorum_io: Option<Rc<crate::controller::raft_log::QuorumIo>>,
    pub(crate) admin_lock: Semaphore,
    pub partitions: RefCell<TopicPartMap<Rc<Partition>>>,
    pub(crate) senders: Senders<MeshMsg>,
    pub(crate) pending: RefCell<HashMap<u64, oneshot::Sender<ShardResp>>>,
    pub(crate) next_id: Cell<u64>,
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
    /// The disk this shard's logs and their side files live on (see `broker::start_with`).
    pub storage: shardlog_engine::BrokerStorage,
    /// The wall clock of retention and producer-id expiry (see `crate::clock`).
    pub clock: crate::clock::Clock,
    /// Partitions this shard owns whose log failed to open (see [`OfflinePartitions`]).
    pub(crate) offline: RefCell<TopicPartMap<Offline>>,
    /// This shard's group coordinator and its internal log (see `crate::groups`).
    pub groups: crate::groups::state::Groups,
    /// The partitions this shard follows, by leader broker (one fetcher task per leader; see
    /// `crate::replication`).
    pub followers: crate::partition::replication::FollowTable,
    /// Executes a request addressed to this shard (`crate::dispatch::serve`): the mesh only
    /// carries requests, what runs them sits above it.
    serve: ServeFn,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        cfg: Arc<BrokerConfig>,
        global: Arc<Global>,
        meta: ClusterMeta,
        authority: Option<MetadataAuthority<ControllerLog>>,
        senders: Senders<MeshMsg>,
        serve: ServeFn,
        storage: shardlog_engine::BrokerStorage,
        clock: crate::clock::Clock,
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
            quorum_io: authority.as_ref().map(|a| a.log().io().clone()),
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
            groups: crate::groups::state::Groups::new(&cfg, id),
            followers: Default::default(),
            serve,
            storage,
            clock,
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
            return (self.serve)(self, req);
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
                            let fut = (shard.serve)(&shard, req);
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
}

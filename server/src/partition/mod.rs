//! One partition on its owning shard: the facade over the replica core (`shardlog-replica`,
//! which decides: admission, idempotent-producer checks, the high watermark, when a produce may
//! be acknowledged) and the engine log (which does the I/O), plus the appender task that
//! serialises appends. Handlers produce ([`Partition::produce`]), read up to the high
//! watermark ([`Partition::read`]), ask for it ([`Partition::high_watermark`]) and wait for
//! commits ([`Partition::wait_committed`]) here, not on the log; see "Replica core" in
//! `docs/ARCHITECTURE.md` for how the facade drives the core.
//!
//! Why an appender task: `PartitionLog::append` may await (back-pressure, segment roll), so two
//! produce requests for the same partition could otherwise finish appending in a different
//! order than they arrived, and an idempotent producer's check-then-append could interleave.
//! Requests push jobs into the partition's local FIFO channel *synchronously*, in arrival
//! order (which is connection order, cross-shard messages being FIFO too); the appender does
//! the core's check and the append one job at a time and answers with the offsets. Waiting
//! for durability (`wait_written`/`wait_committed`) happens in the requester, so while one
//! batch waits for its fsync the appender is already appending the next, and one fdatasync
//! commits them all (group commit).
//!
//! The queue is bounded ([`APPEND_QUEUE_CAPACITY`] jobs): a job that finds it full (or finds
//! earlier jobs still waiting) takes a ticket and waits in a small task until its turn and a
//! free slot, so jobs enter the queue in ticket order and an accepted batch is never dropped.
//! The waiting request keeps its request-memory permit and its connection's in-flight slot, so
//! the back-pressure reaches the socket. No deadlock: the appender never waits for a sender.

pub mod answer;
pub mod compression;
pub mod replication;
#[cfg(test)]
mod replication_tests;

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use shardlog_engine::{
    batch, BrokerStorage, CacheBudget, FlushPolicy, LogConfig, LogError, PartitionLog, Storage,
};
use shardlog_replica::{
    Acks, Action, BatchIdent, CommitOn, Committed, DedupCheck, ErrorCode, LogEnds, ReplicaState,
    Ticket, WaiterId,
};

use crate::metrics::{self, PartitionStats, Stage};
use crate::wire::errors;
use answer::ProduceResult;
use compression::CompressionPolicy;
pub use replication::{AlterSink, Assignment, IsrProposal, ReplicaSetup};
use shardlog_replica::producer_state::{BatchMeta, ProducerStates, Snapshot};

pub type Log = PartitionLog<BrokerStorage>;
/// A shard's bounded set of open sealed-segment files (see the engine's `files.rs`).
pub type SegmentFiles = shardlog_engine::SegmentFiles<<BrokerStorage as Storage>::File>;

/// The replica core of a partition with the broker's idempotent-producer state.
pub type Core = ReplicaState<ProducerStates>;

/// Result of one append job.
#[derive(Clone, Copy, Debug)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_append_time_ms: Option<i64>,
    /// A retried idempotent batch: already in the log, nothing was appended.
    pub duplicate: bool,
}

/// Jobs the appender queue holds at most. Enough for group commit (one fdatasync covers
/// every job appended while the previous one ran) and for the appender never to idle while
/// requests wait; small enough that a flood of pipelined produce requests waits in FIFO
/// order outside the queue, holding its request memory, instead of growing it.
pub const APPEND_QUEUE_CAPACITY: u64 = 64;

/// How long [`Partition::produce`] waits for the in-sync replicas (Kafka producers' default
/// `request.timeout.ms`); requests bring their own `timeout_ms`.
pub const DEFAULT_PRODUCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// FIFO admission to a partition's bounded appender queue, shared by the partition, the
/// appender and jobs waiting for a slot. Tickets enter the queue in the order they were taken.
struct Admission {
    capacity: u64,
    /// Tickets handed out (one per enqueued job).
    issued: Cell<u64>,
    /// Tickets whose job is in the queue (or already taken out of it).
    admitted: Cell<u64>,
    /// Jobs the appender took out of the queue.
    taken: Cell<u64>,
    /// Most jobs ever in the queue at once (tests check the bound).
    peak: Cell<u64>,
    /// Notified when a slot frees up or a waiting job entered the queue.
    changed: event_listener::Event,
}

impl Admission {
    fn new(capacity: u64) -> Self {
        Self {
            capacity,
            issued: Cell::new(0),
            admitted: Cell::new(0),
            taken: Cell::new(0),
            peak: Cell::new(0),
            changed: event_listener::Event::new(),
        }
    }

    /// True when `ticket` is next in line and the queue has room.
    fn may_enter(&self, ticket: u64) -> bool {
        self.admitted.get() == ticket && self.admitted.get() - self.taken.get() < self.capacity
    }

    fn entered(&self) {
        let admitted = self.admitted.get() + 1;
        self.admitted.set(admitted);
        self.peak
            .set(self.peak.get().max(admitted - self.taken.get()));
        // The next ticket may be allowed in too.
        self.changed.notify(usize::MAX);
    }

    fn took_one(&self) {
        self.taken.set(self.taken.get() + 1);
        self.changed.notify(usize::MAX);
    }

    /// Waits until `ticket` may enter the queue.
    async fn wait_turn(&self, ticket: u64) {
        loop {
            if self.may_enter(ticket) {
                return;
            }
            let listener = self.changed.listen();
            if self.may_enter(ticket) {
                return;
            }
            listener.await;
        }
    }
}

struct AppendJob {
    batch: Bytes,
    /// The core's admission of this produce; handed back by the appender in every outcome.
    ticket: Ticket,
    queued: std::time::Instant,
    reply: oneshot::Sender<Result<Appended, i16>>,
}

/// What a produce waits for: an answer of the replica core, by waiter id.
type Answer = Result<Committed, ErrorCode>;

/// The replica core and the answers it gave to produce requests still waiting, shared by the
/// partition, its appender task and the waiting requests (all on the owning shard).
struct Replica {
    core: RefCell<Core>,
    /// One entry per waiting acks=1/all produce (`None` until the core answers it), so no more
    /// than the core's `max_pending_waiters`. A slot map instead of a oneshot per request: no
    /// allocation per produce once it has grown.
    answers: RefCell<HashMap<u64, Option<Answer>>>,
    /// Notified when the high watermark moves and when the leader appends: consumer long
    /// polls wait for the first, follower fetches parked at the log end for the second (the
    /// log's own event only fires on I/O completions).
    changed: event_listener::Event,
    /// Where ISR proposals go (the shard forwards them to the controller); `None` for
    /// partitions that never have followers (`__consumer_offsets`).
    alter_sink: Option<AlterSink>,
    /// The leader and leader epoch of the latest assignment (KIP-951's `current_leader` in
    /// NOT_LEADER_OR_FOLLOWER answers); `-1` when none.
    current_leader: Cell<(i32, i32)>,
}

impl Replica {
    /// Carries out the core's decisions. A follower's `Truncate` and `RebuildProducers` need
    /// the log and are handled by the follower path before it calls this.
    fn apply(&self, actions: Vec<Action>, topic: &str, index: i32) {
        for action in actions {
            match action {
                Action::Complete { waiter, result } => {
                    if let Some(slot) = self.answers.borrow_mut().get_mut(&waiter.0) {
                        *slot = Some(result);
                    }
                    self.changed.notify(usize::MAX);
                }
                Action::HighWatermark(_) => {
                    self.changed.notify(usize::MAX);
                }
                Action::AlterPartition(alter) => match &self.alter_sink {
                    Some(sink) => sink(IsrProposal {
                        topic: topic.to_string(),
                        partition: index,
                        alter,
                    }),
                    None => {
                        tracing::warn!(
                            topic,
                            partition = index,
                            ?alter,
                            "ISR change proposed for a partition without a controller; ignored"
                        )
                    }
                },
                other => {
                    tracing::warn!(topic, partition = index, action = ?other, "replica action outside the follower path; ignored");
                }
            }
        }
    }

    /// Feeds the log's current positions to the core.
    fn sync(&self, log: &Log, topic: &str, index: i32) {
        let ends = log_ends(log);
        let result = {
            let mut core = self.core.borrow_mut();
            let mut acts = Vec::new();
            // The topic's flush policy can change at run time (AlterConfigs): when the written and
            // durable ends differ, the log's committed end says which one it counts.
            if ends.durable_end != ends.written_end {
                let committed = log.committed_end_offset();
                let on = if committed == ends.durable_end {
                    CommitOn::Fsync
                } else {
                    CommitOn::Write
                };
                acts = core.set_commit_on(on);
            }
            core.log_progress(ends).map(|more| {
                acts.extend(more);
                acts
            })
        };
        match result {
            Ok(acts) => self.apply(acts, topic, index),
            Err(e) => {
                tracing::warn!(topic, partition = index, error = %e, "replica core refused the log's positions")
            }
        }
    }
}

/// The log's four positions as the core wants them. Below the log start nothing is left to be
/// written or synced (DeleteRecords may move the start past the durable end under a relaxed
/// flush policy), so those ends are at least the start.
fn log_ends(log: &Log) -> LogEnds {
    let log_start = log.log_start_offset();
    let durable_end = log.durable_end_offset().max(log_start);
    let written_end = log.written_end_offset().max(durable_end);
    LogEnds {
        log_start,
        durable_end,
        written_end,
        log_end: log.log_end_offset().max(written_end),
    }
}

fn commit_on(config: &LogConfig) -> CommitOn {
    match config.flush {
        FlushPolicy::EveryBatch => CommitOn::Fsync,
        _ => CommitOn::Write,
    }
}

/// The partition's idempotent-producer state, which lives in the replica core: borrowed through
/// it for expiry, limits, snapshots and metrics.
pub struct Producers(Rc<Replica>);

impl Producers {
    pub fn borrow(&self) -> Ref<'_, ProducerStates> {
        Ref::map(self.0.core.borrow(), |c| c.producers())
    }

    /// For expiry and limits (they forget producers, never add any).
    pub fn borrow_mut(&self) -> RefMut<'_, ProducerStates> {
        RefMut::map(self.0.core.borrow_mut(), |c| c.producers_mut())
    }
}

/// A waiting produce's slot in [`Replica::answers`]; dropping it (the request went away, or its
/// wait failed) frees the slot and tells the core to forget the waiter.
struct AnswerSlot {
    replica: Rc<Replica>,
    waiter: WaiterId,
    answered: bool,
}

impl AnswerSlot {
    fn take(&mut self) -> Option<Answer> {
        let answer = self
            .replica
            .answers
            .borrow_mut()
            .get_mut(&self.waiter.0)
            .and_then(Option::take);
        if answer.is_some() {
            self.replica.answers.borrow_mut().remove(&self.waiter.0);
            self.answered = true;
        }
        answer
    }
}

impl Drop for AnswerSlot {
    fn drop(&mut self) {
        if !self.answered {
            self.replica.answers.borrow_mut().remove(&self.waiter.0);
            self.replica.core.borrow_mut().abandon(self.waiter);
        }
    }
}

/// One partition on its owning shard: the facade over the replica core (`shardlog-replica`)
/// and the engine log. Handlers produce, read and ask for the high watermark through it.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// The engine log: reached only through the facade's methods (produce, read, high
    /// watermark, waits, and the owner's reconfigure / tick / retention / close).
    log: Rc<Log>,
    pub leader_epoch: Rc<Cell<i32>>,
    /// The idempotent-producer state (inside the replica core).
    pub producers: Producers,
    /// Validation and `compression.type` for produced batches: the default until the owner
    /// sets the topic's (before the partition takes batches), then updated on config changes.
    pub compression: Rc<Cell<CompressionPolicy>>,
    /// Traffic counters (read by metrics scrapes on this shard).
    pub stats: Rc<PartitionStats>,
    replica: Rc<Replica>,
    /// The wall clock of append times and producer state (see `crate::clock`).
    clock: crate::clock::Clock,
    snapshot_path: PathBuf,
    appender: Rc<LocalSender<AppendJob>>,
    admission: Rc<Admission>,
    /// The first storage error (ENOSPC, EIO on an append, an fsync or a read) of this
    /// partition's log here, shared with the appender. Once set the owning shard takes the partition offline (see
    /// [`Partition::take_storage_failure`]).
    failure: StorageFailure,
}

/// The first storage failure of a partition's log (see [`is_storage_failure`]) its owner has
/// not acted on yet.
#[derive(Clone, Default)]
pub struct StorageFailure {
    error: Rc<RefCell<Option<String>>>,
    /// Set once the owner took the partition offline ([`Partition::went_offline`]).
    offline: Rc<Cell<bool>>,
}

impl StorageFailure {
    /// Records `e` when it is a storage failure (the first one is kept).
    pub fn note(&self, e: &LogError) {
        if is_storage_failure(e) && self.error.borrow().is_none() {
            *self.error.borrow_mut() = Some(e.to_string());
        }
    }

    /// The failure noted since the last call (the owner acts on it once).
    pub fn take(&self) -> Option<String> {
        self.error.borrow_mut().take()
    }
}

/// Errors after which a log on this broker cannot be trusted: the disk is full or failed (an
/// I/O error on a write, an fsync or a read, or the log latched a failure). The partition goes
/// offline on this broker, as Kafka marks a log directory offline on any `IOException`;
/// invalid batches, offsets outside the log, corrupt data and follower-protocol errors are
/// not, and neither is running out of file descriptors (EMFILE, ENFILE: a limit of the
/// process, not a fault of the disk).
pub fn is_storage_failure(e: &LogError) -> bool {
    match e {
        LogError::Io { source, .. } => {
            !matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
        }
        LogError::StorageFull(_) | LogError::Failed(_) => true,
        _ => false,
    }
}

pub use crate::clock::now_ms;

/// Builds the replica core over an opened log: its positions, the high watermark it has (the
/// committed end), the restored producer state, as replica `setup.node_id`; then the role the
/// assignment gives it. Returns the core and the actions of that role change.
fn build_core(
    log: &Log,
    config: &LogConfig,
    setup: &ReplicaSetup,
    producers: ProducerStates,
    assignment: &Assignment,
    now: i64,
) -> Result<(Core, Vec<Action>), shardlog_replica::StateError> {
    let cfg = shardlog_replica::Config {
        replica_id: setup.node_id,
        commit_on: commit_on(config),
        replica_lag_time_max_ms: setup.replica_lag_time_max_ms,
        min_insync_replicas: setup.min_insync_replicas.max(1),
        ..shardlog_replica::Config::default()
    };
    let mut core = ReplicaState::new(cfg, log_ends(log), log.committed_end_offset(), producers)?;
    let acts = replication::assign(&mut core, assignment, u64::try_from(now).unwrap_or(0))?;
    Ok((core, acts))
}

impl Partition {
    /// Opens the log in `dir`, restores producer state, builds the replica core and starts the
    /// appender task.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        topic: &str,
        index: i32,
        dir: PathBuf,
        snapshot_path: PathBuf,
        config: LogConfig,
        setup: ReplicaSetup,
        assignment: &Assignment,
        cache_budget: &Rc<CacheBudget>,
        segment_files: &Rc<SegmentFiles>,
        storage: &BrokerStorage,
        clock: &crate::clock::Clock,
    ) -> Result<Rc<Self>, LogError> {
        let (log, report) = Log::open(storage.clone(), dir.clone(), config.clone()).await?;
        log.join_cache_budget(cache_budget);
        log.join_segment_files(segment_files);
        tracing::info!(
            topic,
            partition = index,
            clean = report.clean,
            truncated_bytes = report.truncated_bytes,
            segments = report.segments,
            log_start = report.log_start_offset,
            log_end = report.log_end_offset,
            "opened partition log"
        );
        let log = Rc::new(log);
        let producers =
            restore_producers(&log, &snapshot_path, topic, index, clock.now_ms()).await?;
        let built = build_core(&log, &config, &setup, producers, assignment, clock.now_ms());
        let (core, acts) = built.map_err(|e| {
            tracing::error!(topic, partition = index, error = %e, "replica core refused the opened log");
            LogError::Io {
                op: "start the replica core of",
                path: dir.clone(),
                source: std::io::Error::other(e),
            }
        })?;
        let replica = Rc::new(Replica {
            core: RefCell::new(core),
            answers: RefCell::new(HashMap::new()),
            changed: event_listener::Event::new(),
            alter_sink: setup.alter_sink.clone(),
            current_leader: Cell::new((assignment.leader, assignment.leader_epoch)),
        });
        replica.apply(acts, topic, index);
        // Unbounded channel, bounded by `admission`: a job enters only with a free slot.
        let (tx, rx) = local_channel::new_unbounded();
        let admission = Rc::new(Admission::new(APPEND_QUEUE_CAPACITY));
        let stats = Rc::new(PartitionStats::default());
        let p = Rc::new(Self {
            topic: topic.to_string(),
            index,
            log: log.clone(),
            leader_epoch: Rc::new(Cell::new(assignment.leader_epoch)),
            producers: Producers(replica.clone()),
            compression: Rc::new(Cell::new(CompressionPolicy::default())),
            stats: stats.clone(),
            replica: replica.clone(),
            clock: clock.clone(),
            snapshot_path,
            appender: Rc::new(tx),
            admission: admission.clone(),
            failure: StorageFailure::default(),
        });
        glommio::spawn_local(appender(
            p.topic.clone(),
            index,
            log,
            replica,
            Live {
                leader_epoch: p.leader_epoch.clone(),
                compression: p.compression.clone(),
                clock: clock.clone(),
                failure: p.failure.clone(),
            },
            stats,
            QueueEnd { rx, admission },
        ))
        .detach();
        Ok(p)
    }

    /// Produces `batch` with `acks` (0, 1 or -1): admitted by the core and queued for the
    /// appender now, synchronously (so batches are appended in call order); the returned
    /// future waits for the acknowledgement level and gives the answer, a success only with the
    /// core's [`Committed`] proof.
    pub fn produce(
        self: &Rc<Self>,
        acks: i16,
        batch: Bytes,
    ) -> impl std::future::Future<Output = ProduceResult> + 'static {
        self.produce_within(acks, batch, DEFAULT_PRODUCE_TIMEOUT)
    }

    /// [`Partition::produce`] whose acks=all wait for the in-sync replicas ends with
    /// REQUEST_TIMED_OUT after `timeout` (the request's `timeout_ms`, as in Kafka).
    pub fn produce_within(
        self: &Rc<Self>,
        acks: i16,
        batch: Bytes,
        timeout: std::time::Duration,
    ) -> impl std::future::Future<Output = ProduceResult> + 'static {
        let p = self.clone();
        let admitted = Acks::from_wire(acks)
            .ok_or(errors::INVALID_REQUIRED_ACKS)
            .and_then(|a| {
                self.replica
                    .core
                    .borrow_mut()
                    .admit_produce(a)
                    .map_err(ErrorCode::code)
            });
        let queued = admitted.map(|ticket| {
            let slot = (ticket.acks() != Acks::None).then(|| {
                self.replica
                    .answers
                    .borrow_mut()
                    .insert(ticket.waiter().0, None);
                AnswerSlot {
                    replica: self.replica.clone(),
                    waiter: ticket.waiter(),
                    answered: false,
                }
            });
            (self.enqueue(ticket, batch), slot)
        });
        async move {
            let res = match queued {
                Err(code) if code == errors::NOT_ENOUGH_REPLICAS => {
                    tracing::info!(topic = %p.topic, partition = p.index, isr = ?p.isr(), "acks=all with fewer in-sync replicas than min.insync.replicas: NOT_ENOUGH_REPLICAS");
                    ProduceResult::failed(&p.topic, p.index, code)
                }
                Err(code) => {
                    tracing::debug!(topic = %p.topic, partition = p.index, error = errors::name(code), "produce refused before the append");
                    ProduceResult::failed(&p.topic, p.index, code)
                }
                Ok((rx, slot)) => p.await_produce(acks, rx, slot, timeout).await,
            };
            // A refusal for leadership names the leader this broker knows of (KIP-951).
            res.with_log_start(p.log.log_start_offset())
                .with_leader_hint(Some(p.current_leader()))
        }
    }

    /// Runs `f` to its end, or until the owner takes this partition offline here (then
    /// `None`): a produce waiting on a log that failed must not hold its client until the
    /// request times out (an idempotent producer then stalls every partition).
    async fn unless_offline<T>(&self, f: impl std::future::Future<Output = T>) -> Option<T> {
        let offline = async {
            loop {
                let changed = self.replica.changed.listen();
                if self.failure.offline.get() {
                    return;
                }
                changed.await;
            }
        };
        match futures::future::select(Box::pin(f), Box::pin(offline)).await {
            futures::future::Either::Left((v, _)) => Some(v),
            futures::future::Either::Right(_) => None,
        }
    }

    async fn await_produce(
        &self,
        acks: i16,
        rx: oneshot::Receiver<Result<Appended, i16>>,
        slot: Option<AnswerSlot>,
        timeout: std::time::Duration,
    ) -> ProduceResult {
        let offline =
            || ProduceResult::failed(&self.topic, self.index, errors::NOT_LEADER_OR_FOLLOWER);
        let Some(appended) = self.unless_offline(rx).await else {
            return offline();
        };
        let a = match appended {
            Ok(Ok(a)) => a,
            Ok(Err(code)) => return ProduceResult::failed(&self.topic, self.index, code),
            Err(_) => {
                return ProduceResult::failed(
                    &self.topic,
                    self.index,
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                )
            }
        };
        let Some(mut slot) = slot else {
            return ProduceResult::unanswered(&self.topic, self.index);
        };
        // The log's waits drive its I/O (write, then fdatasync); the core then decides.
        let wait_started = std::time::Instant::now();
        let waited = if acks == 1 {
            let Some(w) = self
                .unless_offline(self.log.wait_written(a.last_offset))
                .await
            else {
                return offline();
            };
            metrics::stage(Stage::ProduceWriteWait, wait_started.elapsed());
            w
        } else {
            let Some(w) = self
                .unless_offline(self.log.wait_committed(a.last_offset))
                .await
            else {
                return offline();
            };
            metrics::stage(Stage::ProduceFsyncWait, wait_started.elapsed());
            w.map(|_| ())
        };
        if let Err(e) = waited {
            self.failure.note(&e);
            let code = errors::log_error_code(&e, &self.topic, self.index);
            return ProduceResult::failed(&self.topic, self.index, code);
        }
        self.replica.sync(&self.log, &self.topic, self.index);
        let mut answer = slot.take();
        if answer.is_none() && acks == -1 {
            // Committed here; the high watermark waits for the in-sync followers to fetch
            // past the batch (or a shrink, a lost leadership or the timeout answers it).
            let deadline = wait_started + timeout;
            while answer.is_none() {
                let changed = self.replica.changed.listen();
                if self.failure.offline.get() {
                    // Taken offline here (storage error): the leadership is moving; the
                    // producer retries at the new leader (an idempotent retry of a batch it
                    // already has gets its original offsets).
                    return ProduceResult::failed(
                        &self.topic,
                        self.index,
                        errors::NOT_LEADER_OR_FOLLOWER,
                    );
                }
                self.replica.sync(&self.log, &self.topic, self.index);
                answer = slot.take();
                let now = std::time::Instant::now();
                if answer.is_some() || now >= deadline {
                    break;
                }
                let timer = glommio::timer::sleep(deadline - now);
                futures::future::select(changed, Box::pin(timer)).await;
            }
            if answer.is_none() {
                tracing::debug!(topic = %self.topic, partition = self.index, last_offset = a.last_offset, isr = ?self.isr(), "acks=all not replicated within the request timeout: REQUEST_TIMED_OUT");
                return ProduceResult::failed(&self.topic, self.index, errors::REQUEST_TIMED_OUT);
            }
        }
        match answer {
            Some(Ok(proof)) => ProduceResult::committed(
                &self.topic,
                self.index,
                proof,
                a.base_offset,
                a.last_offset,
                a.log_append_time_ms,
            )
            .unwrap_or_else(|e| {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "produce answer refused");
                ProduceResult::failed(&self.topic, self.index, errors::UNKNOWN_SERVER_ERROR)
            }),
            Some(Err(code)) => ProduceResult::failed(&self.topic, self.index, code.code()),
            None => {
                // The log says the batch is in; the core must agree after the sync above.
                tracing::warn!(topic = %self.topic, partition = self.index, last_offset = a.last_offset, "replica core did not answer a committed produce");
                ProduceResult::failed(&self.topic, self.index, errors::REQUEST_TIMED_OUT)
            }
        }
    }

    /// Queues a batch for appending; the position in the queue is taken now, synchronously.
    /// With the queue full (or earlier jobs waiting) the job waits in a task for its turn:
    /// it is still appended in the order of this call, whether or not the caller still waits.
    fn enqueue(&self, ticket: Ticket, batch: Bytes) -> oneshot::Receiver<Result<Appended, i16>> {
        let (reply, rx) = oneshot::channel();
        let job = AppendJob {
            batch,
            ticket,
            queued: std::time::Instant::now(),
            reply,
        };
        let adm = &self.admission;
        let ticket = adm.issued.get();
        adm.issued.set(ticket + 1);
        if adm.may_enter(ticket) {
            send_job(&self.appender, job, &self.topic, self.index);
            adm.entered();
        } else {
            let (tx, adm) = (self.appender.clone(), adm.clone());
            let (topic, index) = (self.topic.clone(), self.index);
            glommio::spawn_local(async move {
                adm.wait_turn(ticket).await;
                send_job(&tx, job, &topic, index);
                adm.entered();
            })
            .detach();
        }
        rx
    }

    /// The high watermark: what consumers may read up to (exclusive), as the replica core has
    /// it after taking in the log's current positions.
    pub fn high_watermark(&self) -> i64 {
        self.replica.sync(&self.log, &self.topic, self.index);
        self.replica.core.borrow().high_watermark()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// Resolves on the next log I/O completion, high watermark move or leader append: long
    /// polls re-check [`Partition::high_watermark`] (or the log end) after it fires.
    pub fn listen(&self) -> impl std::future::Future<Output = ()> + 'static {
        let io = self.log.listen();
        let changed = self.replica.changed.listen();
        async move {
            futures::future::select(io, changed).await;
        }
    }

    /// Reads batches from `offset` up to the high watermark, at most `max_bytes` (at least one
    /// batch when `at_least_one`).
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<shardlog_engine::ReadResult, LogError> {
        self.read_to(offset, i64::MAX, max_bytes, at_least_one)
            .await
    }

    /// [`Partition::read`] that also stops at `bound` (exclusive), e.g. a replay that must not
    /// pass the end it started with.
    pub async fn read_to(
        &self,
        offset: i64,
        bound: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<shardlog_engine::ReadResult, LogError> {
        let hw = self.high_watermark().min(bound);
        self.log
            .read(offset, hw, max_bytes, at_least_one)
            .await
            .inspect_err(|e| self.failure.note(e))
    }

    /// Waits until `offset` is committed on the log; the engine's proof acknowledges the
    /// broker's own writes (OffsetCommit on `__consumer_offsets`).
    pub async fn wait_committed(
        &self,
        offset: i64,
    ) -> Result<shardlog_engine::Committed, LogError> {
        let c = self
            .log
            .wait_committed(offset)
            .await
            .inspect_err(|e| self.failure.note(e))?;
        self.replica.sync(&self.log, &self.topic, self.index);
        Ok(c)
    }

    /// The storage failure (ENOSPC, EIO) of this partition's log on an append, an fsync or a
    /// read, as a leader or a follower, noted since the last call: the owning shard then takes the
    /// partition offline here when another replica can take over, and the broker reports it
    /// to the controller (see "Disk full" in `docs/RELIABILITY.md`).
    pub fn take_storage_failure(&self) -> Option<String> {
        self.failure.take()
    }

    /// The owner took this partition offline (storage error): acks=all produces still
    /// waiting for the followers are answered NOT_LEADER_OR_FOLLOWER now instead of at their
    /// timeout (the followers cannot fetch from an offline partition).
    pub fn went_offline(&self) {
        self.failure.offline.set(true);
        self.replica.changed.notify(usize::MAX);
    }

    /// Records a storage failure of this partition's log seen outside the appender.
    pub(crate) fn note_log_error(&self, e: &LogError) {
        self.failure.note(e);
    }

    /// Bytes of this log in the shard's batch cache.
    pub fn cached_bytes(&self) -> usize {
        self.log.cached_bytes()
    }

    /// The first offset at or after `timestamp_ms` below the high watermark, with its
    /// timestamp (ListOffsets by time).
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let found = self
            .log
            .offset_for_timestamp(timestamp_ms)
            .await
            .inspect_err(|e| self.failure.note(e))?;
        let hw = self.high_watermark();
        Ok(found.filter(|&(offset, _)| offset < hw))
    }

    /// DeleteRecords: moves the log start to `offset` (at most the high watermark; the caller
    /// checks); returns the new log start.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let start = self.log.delete_records_before(offset).await?;
        self.replica.sync(&self.log, &self.topic, self.index);
        Ok(start)
    }

    /// The end offset of `leader_epoch` in this log (OffsetForLeaderEpoch), with the epoch.
    pub fn end_offset_for_epoch(&self, leader_epoch: i32) -> Option<(i32, i64)> {
        self.log.end_offset_for_epoch(leader_epoch)
    }

    /// Bytes the log holds on disk.
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Most jobs the appender queue has held at once.
    pub fn append_queue_peak(&self) -> u64 {
        self.admission.peak.get()
    }

    /// Writes the producer-state snapshot (state as of the current log end), atomically and
    /// off the shard (the storage's atomic replacement).
    pub async fn write_snapshot(&self) -> std::io::Result<()> {
        let snap = Snapshot {
            end_offset: self.log.log_end_offset(),
            state: self.replica.core.borrow().producers().clone(),
        };
        let data = serde_json::to_vec(&snap).map_err(std::io::Error::other)?;
        self.log
            .storage()
            .write_file_atomic(&self.snapshot_path, &data)
            .await
    }

    /// The topic's log settings changed (AlterConfigs): the log takes them; the core's commit
    /// level follows on the next position sync.
    pub fn reconfigure(&self, config: LogConfig) {
        self.log.set_config(config);
        self.replica.sync(&self.log, &self.topic, self.index);
    }

    /// The owner's periodic work on this partition: the log's time-based flush (`flush.ms`)
    /// and roll (`segment.ms`), then the core sees the new positions and the time (its ISR
    /// lag checks; nothing to do with one replica).
    pub async fn tick(&self, now_ms: i64) -> Result<(), LogError> {
        let r = self.log.tick(now_ms).await;
        self.replica.sync(&self.log, &self.topic, self.index);
        let acts = self
            .replica
            .core
            .borrow_mut()
            .tick(u64::try_from(now_ms).unwrap_or(0));
        self.replica.apply(acts, &self.topic, self.index);
        r
    }

    /// Retention by time and size; the core learns the new log start.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
    ) -> Result<shardlog_engine::RetentionReport, LogError> {
        let r = self.log.apply_retention(now_ms).await;
        self.replica.sync(&self.log, &self.topic, self.index);
        r
    }

    /// Gives up the partition, closing its append queue; returns the log handle.
    pub fn into_log(self) -> Rc<Log> {
        self.log
    }

    pub fn snapshot_path(&self) -> &Path {
        &self.snapshot_path
    }

    fn clock_now(&self) -> i64 {
        self.clock.now_ms()
    }
}

fn send_job(tx: &LocalSender<AppendJob>, job: AppendJob, topic: &str, index: i32) {
    if let Err(e) = tx.try_send(job) {
        // Only when the appender is gone (partition closing): the dropped job's reply
        // sender makes the receiver resolve as cancelled.
        tracing::warn!(topic, partition = index, error = %e, "append queue closed");
    }
}

/// Loads the snapshot if it still describes a prefix of the log, then replays batch headers
/// from its offset (or from the log start) to the log end.
async fn restore_producers(
    log: &Log,
    snapshot_path: &Path,
    topic: &str,
    index: i32,
    now: i64,
) -> Result<ProducerStates, LogError> {
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    // Read off the shard (glommio's blocking pool), like the snapshot's atomic write.
    let snapshot = log
        .storage()
        .read_file(snapshot_path)
        .await
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Snapshot>(&b).ok());
    let (mut state, mut offset) = match snapshot {
        Some(mut s) if s.end_offset >= start && s.end_offset <= end => {
            s.state.loaded(now);
            (s.state, s.end_offset)
        }
        Some(s) => {
            tracing::warn!(
                topic,
                partition = index,
                snapshot_end = s.end_offset,
                start,
                end,
                "producer snapshot does not match the log; rebuilding from the log start"
            );
            (ProducerStates::default(), start)
        }
        None => (ProducerStates::default(), start),
    };
    let from = offset;
    let mut batches = 0u64;
    while offset < end {
        let rr = log.read(offset, end, 1 << 20, true).await?;
        if rr.batches.is_empty() {
            break;
        }
        for b in &rr.batches {
            let Ok(info) = b.info() else { break };
            if info.next_offset() <= offset {
                continue;
            }
            if info.producer_id >= 0 && !info.is_control() {
                // When the producer appended is not stored; the batch's max timestamp is
                // (Kafka uses it too), capped at now so a future timestamp cannot keep a
                // producer from expiring.
                state.record(
                    info.producer_id,
                    info.producer_epoch,
                    BatchMeta {
                        first_seq: info.base_sequence,
                        last_seq: info.last_sequence(),
                        base_offset: info.base_offset,
                        last_offset: info.last_offset(),
                    },
                    info.max_timestamp.min(now),
                );
            }
            offset = info.next_offset();
            batches += 1;
        }
    }
    if batches > 0 {
        tracing::info!(
            topic,
            partition = index,
            from,
            to = offset,
            batches,
            producers = state.len(),
            "rebuilt producer state from the log"
        );
    }
    Ok(state)
}

/// What the appender reads afresh for every batch: metadata updates change them.
struct Live {
    leader_epoch: Rc<Cell<i32>>,
    compression: Rc<Cell<CompressionPolicy>>,
    /// The wall clock of append times and producer state (see `crate::clock`).
    clock: crate::clock::Clock,
    failure: StorageFailure,
}

/// The appender's end of the queue: jobs, and the admission it frees a slot in per job taken.
struct QueueEnd {
    rx: LocalReceiver<AppendJob>,
    admission: Rc<Admission>,
}

async fn appender(
    topic: String,
    index: i32,
    log: Rc<Log>,
    replica: Rc<Replica>,
    live: Live,
    stats: Rc<PartitionStats>,
    queue: QueueEnd,
) {
    while let Some(job) = queue.rx.recv().await {
        queue.admission.took_one();
        let started = std::time::Instant::now();
        metrics::stage(Stage::ProduceQueue, started - job.queued);
        let result = append_one(
            &topic,
            index,
            &log,
            &replica,
            live.leader_epoch.get(),
            &live.compression.get(),
            &job.batch,
            live.clock.now_ms(),
            job.ticket,
            &live.failure,
        )
        .await;
        metrics::stage(Stage::ProduceAppend, started.elapsed());
        if let Ok(a) = &result {
            if !a.duplicate {
                stats.appended(
                    job.batch.len(),
                    (a.last_offset - a.base_offset + 1).max(0) as u64,
                );
            }
        }
        let _ = job.reply.send(result);
    }
}

/// Validates, checks with the core and appends one batch; the ticket goes back to the core in
/// every outcome (`appended` or `append_failed`).
#[allow(clippy::too_many_arguments)]
async fn append_one(
    topic: &str,
    index: i32,
    log: &Log,
    replica: &Replica,
    leader_epoch: i32,
    compression: &CompressionPolicy,
    bytes: &Bytes,
    now: i64,
    ticket: Ticket,
    failure: &StorageFailure,
) -> Result<Appended, i16> {
    let refuse = |ticket: Ticket, code: i16| {
        replica.core.borrow_mut().append_failed(ticket);
        Err(code)
    };
    // Validation and recompression come first: what follows (producer state, the log) sees
    // the batch as it will be stored. Recompression keeps producer id, epoch and sequence.
    let prepared = match compression::prepare(bytes.clone(), compression) {
        Ok(b) => b,
        Err(e) => {
            let code = e.code();
            tracing::info!(topic, partition = index, error = %e, "refused batch: {}", errors::name(code));
            return refuse(ticket, code);
        }
    };
    let bytes = &prepared;
    let info = batch::peek(bytes).ok();
    if info.is_some_and(|i| i.is_control()) {
        tracing::info!(
            topic,
            partition = index,
            "refused control batch from a client: INVALID_RECORD"
        );
        return refuse(ticket, errors::INVALID_RECORD);
    }
    let ident = info.map(|i| BatchIdent {
        producer_id: i.producer_id,
        producer_epoch: i.producer_epoch,
        first_seq: i.base_sequence,
        last_seq: i.last_sequence(),
    });
    let check = replica.core.borrow().check_batch(&ticket, ident.as_ref());
    match check {
        Ok(DedupCheck::Append) => {}
        Ok(DedupCheck::Duplicate {
            base_offset,
            last_offset,
        }) => {
            tracing::debug!(
                topic,
                partition = index,
                producer_id = ident.map_or(-1, |i| i.producer_id),
                base_sequence = ident.map_or(-1, |i| i.first_seq),
                base_offset,
                "duplicate idempotent batch; answering with its original offset"
            );
            let acts = replica.core.borrow_mut().appended(
                ticket,
                shardlog_replica::Appended {
                    base_offset,
                    last_offset,
                    ident,
                    duplicate: true,
                    at_ms: now,
                },
            );
            replica.apply(acts, topic, index);
            return Ok(Appended {
                base_offset,
                last_offset,
                log_append_time_ms: None,
                duplicate: true,
            });
        }
        Ok(DedupCheck::Reject(e)) => {
            let code = e.code();
            tracing::info!(
                topic,
                partition = index,
                producer_id = ident.map_or(-1, |i| i.producer_id),
                epoch = ident.map_or(-1, |i| i.producer_epoch),
                base_sequence = ident.map_or(-1, |i| i.first_seq),
                error = errors::name(code),
                "refused idempotent batch"
            );
            return refuse(ticket, code);
        }
        Err(e) => {
            let code = e.code();
            tracing::info!(
                topic,
                partition = index,
                error = errors::name(code),
                "refused batch: not the leader any more"
            );
            return refuse(ticket, code);
        }
    }
    match log.append(bytes.clone(), leader_epoch, now).await {
        Ok(a) => {
            // Follower fetches parked at the log end wake on it.
            replica.changed.notify(usize::MAX);
            let (acts, evicted) = {
                let mut core = replica.core.borrow_mut();
                let acts = core.appended(
                    ticket,
                    shardlog_replica::Appended {
                        base_offset: a.base_offset,
                        last_offset: a.last_offset,
                        ident,
                        duplicate: false,
                        at_ms: now,
                    },
                );
                (acts, core.producers_mut().take_evicted())
            };
            replica.apply(acts, topic, index);
            if evicted > 0 {
                metrics::producer_ids_dropped(evicted, false);
                tracing::info!(
                    topic,
                    partition = index,
                    evicted,
                    "max_producer_ids_per_partition reached: forgot the least recently used producer ids"
                );
            }
            Ok(Appended {
                base_offset: a.base_offset,
                last_offset: a.last_offset,
                log_append_time_ms: a.log_append_time_ms,
                duplicate: false,
            })
        }
        Err(e) => {
            failure.note(&e);
            refuse(ticket, errors::log_error_code(&e, topic, index))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_are_kept_once_and_taken_once() {
        let path = PathBuf::from("/x");
        let full = LogError::StorageFull(path.clone());
        let eio = LogError::Io {
            op: "fsync",
            path: path.clone(),
            source: std::io::Error::from_raw_os_error(5),
        };
        let range = LogError::OffsetOutOfRange {
            offset: 9,
            start: 0,
            end: 1,
        };
        assert!(is_storage_failure(&full));
        assert!(is_storage_failure(&eio));
        assert!(is_storage_failure(&LogError::Failed(path.clone())));
        assert!(!is_storage_failure(&range));
        let read_eio = LogError::Io {
            op: "read",
            path: path.clone(),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        };
        assert!(is_storage_failure(&read_eio));
        let emfile = LogError::Io {
            op: "open",
            path: path.clone(),
            source: std::io::Error::from_raw_os_error(libc::EMFILE),
        };
        assert!(
            !is_storage_failure(&emfile),
            "a process limit, not the disk"
        );
        let corrupt = LogError::Corrupt {
            path: path.clone(),
            position: 0,
            reason: "CRC mismatch on read".into(),
        };
        assert!(!is_storage_failure(&corrupt));
        let f = StorageFailure::default();
        f.note(&range);
        assert_eq!(f.take(), None, "not a storage failure");
        f.note(&full);
        f.note(&eio);
        assert_eq!(f.take(), Some(full.to_string()), "the first one is kept");
        assert_eq!(f.take(), None, "taken once");
    }

    /// Runs `f` on a glommio executor with a fresh partition of `config`.
    fn with_partition<F, Fut>(config: LogConfig, f: F)
    where
        F: FnOnce(Rc<Partition>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let p = Partition::open(
                    "t",
                    0,
                    path.join("0"),
                    path.join("0.producers.json"),
                    config,
                    ReplicaSetup::single(1),
                    &Assignment::sole(1, 0),
                    &CacheBudget::new(1 << 20),
                    &SegmentFiles::new(16),
                    &BrokerStorage::default(),
                    &crate::clock::Clock::System,
                )
                .await
                .unwrap();
                f(p).await;
            })
            .unwrap()
            .join()
            .unwrap();
    }

    fn idempotent(pid: i64, epoch: i16, seq: i32) -> Bytes {
        Bytes::from(batch::build_with(0, 1, 10, now_ms(), pid, epoch, seq))
    }

    /// A flood of appends produced at once (as pipelined produce requests are) never puts more
    /// than `APPEND_QUEUE_CAPACITY` jobs in the appender queue, and every batch is appended
    /// once, in produce order, and answered with success.
    #[test]
    fn append_queue_is_bounded_and_keeps_order() {
        with_partition(LogConfig::default(), |p| async move {
            let n = 10 * APPEND_QUEUE_CAPACITY as usize;
            let queued: Vec<_> = (0..n)
                .map(|_| p.produce(1, Bytes::from(batch::build(0, 1, 10, now_ms()))))
                .collect();
            let mut offsets = Vec::with_capacity(n);
            for f in queued {
                let r = f.await;
                assert_eq!(r.error(), errors::NONE);
                offsets.push(r.base_offset());
            }
            assert_eq!(offsets, (0..n as i64).collect::<Vec<_>>());
            let peak = p.append_queue_peak();
            assert!(
                peak <= APPEND_QUEUE_CAPACITY,
                "queue held {peak} jobs, capacity {APPEND_QUEUE_CAPACITY}"
            );
            assert_eq!(p.log_end_offset(), n as i64);
            assert_eq!(p.replica.answers.borrow().len(), 0, "every slot freed");
            assert_eq!(p.replica.core.borrow().pending_waiters(), 0);
        });
    }

    /// The facade's high watermark is the log's committed end, also for acks=0 data nobody
    /// waits for (written by the shard's tick), and under every flush policy.
    #[test]
    fn high_watermark_follows_the_committed_end_without_waiters() {
        for flush in [FlushPolicy::EveryBatch, FlushPolicy::Never] {
            let config = LogConfig {
                flush,
                ..LogConfig::default()
            };
            with_partition(config, |p| async move {
                for _ in 0..3 {
                    let r = p
                        .produce(0, Bytes::from(batch::build(0, 1, 10, now_ms())))
                        .await;
                    assert_eq!(r.error(), errors::NONE);
                    assert_eq!(r.base_offset(), -1, "acks=0 carries no offsets");
                }
                assert_eq!(p.high_watermark(), p.log.committed_end_offset());
                p.log.tick(now_ms()).await.unwrap();
                p.log.wait_committed(2).await.unwrap();
                assert_eq!(p.log.committed_end_offset(), 3);
                assert_eq!(p.high_watermark(), 3);
                let r = p
                    .produce(-1, Bytes::from(batch::build(0, 1, 10, now_ms())))
                    .await;
                assert_eq!((r.error(), r.base_offset()), (errors::NONE, 3));
                assert_eq!(p.high_watermark(), 4);
                let rr = p.read(0, 1 << 20, true).await.unwrap();
                assert_eq!(rr.batches.len(), 4);
            });
        }
    }

    /// Idempotent producers through the core: a retry gets its original offset, a gap and a
    /// fenced epoch get their Kafka codes, and nothing is appended for them.
    #[test]
    fn idempotent_decisions_come_from_the_core() {
        with_partition(LogConfig::default(), |p| async move {
            let first = p.produce(-1, idempotent(7, 0, 0)).await;
            assert_eq!((first.error(), first.base_offset()), (errors::NONE, 0));
            p.produce(-1, idempotent(7, 0, 1)).await;
            let retry = p.produce(-1, idempotent(7, 0, 0)).await;
            assert_eq!((retry.error(), retry.base_offset()), (errors::NONE, 0));
            let gap = p.produce(1, idempotent(7, 0, 5)).await;
            assert_eq!(gap.error(), errors::OUT_OF_ORDER_SEQUENCE_NUMBER);
            p.produce(-1, idempotent(7, 1, 0)).await;
            let fenced = p.produce(-1, idempotent(7, 0, 2)).await;
            assert_eq!(fenced.error(), errors::INVALID_PRODUCER_EPOCH);
            assert_eq!(p.log_end_offset(), 3);
            assert_eq!(p.producers.borrow().len(), 1);
            assert_eq!(p.replica.core.borrow().pending_waiters(), 0);
        });
    }

    /// A produce whose requester goes away frees its answer slot and its waiter in the core.
    #[test]
    fn an_abandoned_produce_frees_its_slot() {
        with_partition(LogConfig::default(), |p| async move {
            drop(p.produce(-1, Bytes::from(batch::build(0, 1, 10, now_ms()))));
            assert_eq!(p.replica.answers.borrow().len(), 0);
            let r = p
                .produce(-1, Bytes::from(batch::build(0, 1, 10, now_ms())))
                .await;
            assert_eq!((r.error(), r.base_offset()), (errors::NONE, 1));
            assert_eq!(p.replica.core.borrow().pending_waiters(), 0);
        });
    }

    /// Invalid acks never reach the core or the log.
    #[test]
    fn invalid_acks_are_refused() {
        with_partition(LogConfig::default(), |p| async move {
            let r = p
                .produce(2, Bytes::from(batch::build(0, 1, 10, now_ms())))
                .await;
            assert_eq!(r.error(), errors::INVALID_REQUIRED_ACKS);
            assert_eq!(p.log_end_offset(), 0);
        });
    }
}

//! One partition on its owning shard: the engine log, the leader epoch, the idempotent
//! producer state, and the appender task that serialises appends.
//!
//! Why an appender task: `PartitionLog::append` may await (back-pressure, segment roll), so two
//! produce requests for the same partition could otherwise finish appending in a different
//! order than they arrived, and an idempotent producer's check-then-append could interleave.
//! Requests push jobs into the partition's local FIFO channel *synchronously*, in arrival
//! order (which is connection order, cross-shard messages being FIFO too); the appender does
//! the sequence check and the append one job at a time and answers with the offsets. Waiting
//! for durability (`wait_written`/`wait_committed`) happens in the requester, so while one
//! batch waits for its fsync the appender is already appending the next, and one fdatasync
//! commits them all (group commit).
//!
//! The queue is bounded ([`APPEND_QUEUE_CAPACITY`] jobs): a job that finds it full (or finds
//! earlier jobs still waiting) takes a ticket and waits in a small task until its turn and a
//! free slot, so jobs enter the queue in ticket order and an accepted batch is never dropped.
//! The waiting request keeps its request-memory permit and its connection's in-flight slot, so
//! the back-pressure reaches the socket. No deadlock: the appender never waits for a sender.

pub mod compression;
pub mod producer_state;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use shardlog_engine::{
    batch, BrokerStorage, CacheBudget, LogConfig, LogError, PartitionLog, Storage,
};

use crate::metrics::{self, PartitionStats, Stage};
use crate::partition::producer_state::{BatchMeta, ProducerStates, SeqCheck, Snapshot};
use crate::wire::errors;
use compression::CompressionPolicy;

pub type Log = PartitionLog<BrokerStorage>;
/// A shard's bounded set of open sealed-segment files (see the engine's `files.rs`).
pub type SegmentFiles = shardlog_engine::SegmentFiles<<BrokerStorage as Storage>::File>;

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
    queued: std::time::Instant,
    reply: oneshot::Sender<Result<Appended, i16>>,
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Rc<Log>,
    pub leader_epoch: Rc<Cell<i32>>,
    pub producers: Rc<RefCell<ProducerStates>>,
    /// Validation and `compression.type` for produced batches: the default until the owner
    /// sets the topic's (before the partition takes batches), then updated on config changes.
    pub compression: Rc<Cell<CompressionPolicy>>,
    /// Traffic counters (read by metrics scrapes on this shard).
    pub stats: Rc<PartitionStats>,
    snapshot_path: PathBuf,
    appender: Rc<LocalSender<AppendJob>>,
    admission: Rc<Admission>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Partition {
    /// Opens the log in `dir`, restores producer state and starts the appender task.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        topic: &str,
        index: i32,
        dir: PathBuf,
        snapshot_path: PathBuf,
        config: LogConfig,
        leader_epoch: i32,
        cache_budget: &Rc<CacheBudget>,
        segment_files: &Rc<SegmentFiles>,
        storage: &BrokerStorage,
        clock: &crate::clock::Clock,
    ) -> Result<Rc<Self>, LogError> {
        let (log, report) = Log::open(storage.clone(), dir.clone(), config).await?;
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
        // Unbounded channel, bounded by `admission`: a job enters only with a free slot.
        let (tx, rx) = local_channel::new_unbounded();
        let admission = Rc::new(Admission::new(APPEND_QUEUE_CAPACITY));
        let stats = Rc::new(PartitionStats::default());
        let p = Rc::new(Self {
            topic: topic.to_string(),
            index,
            log: log.clone(),
            leader_epoch: Rc::new(Cell::new(leader_epoch)),
            producers: Rc::new(RefCell::new(producers)),
            compression: Rc::new(Cell::new(CompressionPolicy::default())),
            stats: stats.clone(),
            snapshot_path,
            appender: Rc::new(tx),
            admission: admission.clone(),
        });
        glommio::spawn_local(appender(
            p.topic.clone(),
            index,
            log,
            p.producers.clone(),
            Live {
                leader_epoch: p.leader_epoch.clone(),
                compression: p.compression.clone(),
                clock: clock.clone(),
            },
            stats,
            QueueEnd { rx, admission },
        ))
        .detach();
        Ok(p)
    }

    /// Queues a batch for appending; the position in the queue is taken now, synchronously.
    /// With the queue full (or earlier jobs waiting) the job waits in a task for its turn:
    /// it is still appended in the order of this call, whether or not the caller still waits.
    pub fn enqueue(&self, batch: Bytes) -> oneshot::Receiver<Result<Appended, i16>> {
        let (reply, rx) = oneshot::channel();
        let job = AppendJob {
            batch,
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

    /// Most jobs the appender queue has held at once.
    pub fn append_queue_peak(&self) -> u64 {
        self.admission.peak.get()
    }

    /// Writes the producer-state snapshot (state as of the current log end), atomically and
    /// off the shard (the storage's atomic replacement).
    pub async fn write_snapshot(&self) -> std::io::Result<()> {
        let snap = Snapshot {
            end_offset: self.log.log_end_offset(),
            state: self.producers.borrow().clone(),
        };
        let data = serde_json::to_vec(&snap).map_err(std::io::Error::other)?;
        self.log
            .storage()
            .write_file_atomic(&self.snapshot_path, &data)
            .await
    }

    /// Gives up the partition, closing its append queue; returns the log handle.
    pub fn into_log(self) -> Rc<Log> {
        self.log
    }

    pub fn snapshot_path(&self) -> &Path {
        &self.snapshot_path
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
    producers: Rc<RefCell<ProducerStates>>,
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
            &producers,
            live.leader_epoch.get(),
            &live.compression.get(),
            &job.batch,
            live.clock.now_ms(),
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

#[allow(clippy::too_many_arguments)]
async fn append_one(
    topic: &str,
    index: i32,
    log: &Log,
    producers: &RefCell<ProducerStates>,
    leader_epoch: i32,
    compression: &CompressionPolicy,
    bytes: &Bytes,
    now: i64,
) -> Result<Appended, i16> {
    // Validation and recompression come first: what follows (producer state, the log) sees
    // the batch as it will be stored. Recompression keeps producer id, epoch and sequence.
    let prepared = compression::prepare(bytes.clone(), compression).map_err(|e| {
        let code = e.code();
        tracing::info!(topic, partition = index, error = %e, "refused batch: {}", errors::name(code));
        code
    })?;
    let bytes = &prepared;
    let info = batch::peek(bytes).ok();
    if let Some(info) = info {
        if info.is_control() {
            tracing::info!(
                topic,
                partition = index,
                "refused control batch from a client: INVALID_RECORD"
            );
            return Err(errors::INVALID_RECORD);
        }
        let check = producers.borrow().check(
            info.producer_id,
            info.producer_epoch,
            info.base_sequence,
            info.last_sequence(),
        );
        match check {
            SeqCheck::Append => {}
            SeqCheck::Duplicate {
                base_offset,
                last_offset,
            } => {
                tracing::debug!(
                    topic,
                    partition = index,
                    producer_id = info.producer_id,
                    base_sequence = info.base_sequence,
                    base_offset,
                    "duplicate idempotent batch; answering with its original offset"
                );
                return Ok(Appended {
                    base_offset,
                    last_offset,
                    log_append_time_ms: None,
                    duplicate: true,
                });
            }
            SeqCheck::Reject(code) => {
                tracing::info!(
                    topic,
                    partition = index,
                    producer_id = info.producer_id,
                    epoch = info.producer_epoch,
                    base_sequence = info.base_sequence,
                    error = errors::name(code),
                    "refused idempotent batch"
                );
                return Err(code);
            }
        }
    }
    match log.append(bytes.clone(), leader_epoch, now).await {
        Ok(a) => {
            if let Some(info) = info {
                let evicted = producers.borrow_mut().record(
                    info.producer_id,
                    info.producer_epoch,
                    BatchMeta {
                        first_seq: info.base_sequence,
                        last_seq: info.last_sequence(),
                        base_offset: a.base_offset,
                        last_offset: a.last_offset,
                    },
                    now,
                );
                if evicted > 0 {
                    metrics::producer_ids_dropped(evicted, false);
                    tracing::info!(
                        topic,
                        partition = index,
                        evicted,
                        "max_producer_ids_per_partition reached: forgot the least recently used producer ids"
                    );
                }
            }
            Ok(Appended {
                base_offset: a.base_offset,
                last_offset: a.last_offset,
                log_append_time_ms: a.log_append_time_ms,
                duplicate: false,
            })
        }
        Err(e) => Err(errors::log_error_code(&e, topic, index)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of appends enqueued at once (as pipelined produce requests are) never puts more
    /// than `APPEND_QUEUE_CAPACITY` jobs in the appender queue, and every batch is appended
    /// once, in enqueue order.
    #[test]
    fn append_queue_is_bounded_and_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let p = Partition::open(
                    "t",
                    0,
                    path.join("0"),
                    path.join("0.producers.json"),
                    LogConfig::default(),
                    0,
                    &CacheBudget::new(1 << 20),
                    &SegmentFiles::new(16),
                    &BrokerStorage::default(),
                    &crate::clock::Clock::System,
                )
                .await
                .unwrap();
                let n = 10 * APPEND_QUEUE_CAPACITY as usize;
                let queued: Vec<_> = (0..n)
                    .map(|_| p.enqueue(Bytes::from(batch::build(0, 1, 10, now_ms()))))
                    .collect();
                let mut offsets = Vec::with_capacity(n);
                for rx in queued {
                    let a = rx.await.unwrap().unwrap();
                    offsets.push(a.base_offset);
                }
                assert_eq!(offsets, (0..n as i64).collect::<Vec<_>>());
                let peak = p.append_queue_peak();
                assert!(
                    peak <= APPEND_QUEUE_CAPACITY,
                    "queue held {peak} jobs, capacity {APPEND_QUEUE_CAPACITY}"
                );
                assert_eq!(p.log.log_end_offset(), n as i64);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

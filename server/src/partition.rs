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

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use shardlog_engine::{
    batch, CacheBudget, GlommioStorage, LogConfig, LogError, PartitionLog, Storage,
};

use crate::compression::{self, CompressionPolicy};
use crate::errors;
use crate::metrics::{self, PartitionStats, Stage};
use crate::producer_state::{BatchMeta, ProducerStates, SeqCheck, Snapshot};

pub type Log = PartitionLog<GlommioStorage>;
/// A shard's bounded set of open sealed-segment files (see the engine's `files.rs`).
pub type SegmentFiles = shardlog_engine::SegmentFiles<<GlommioStorage as Storage>::File>;

/// Result of one append job.
#[derive(Clone, Copy, Debug)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_append_time_ms: Option<i64>,
    /// A retried idempotent batch: already in the log, nothing was appended.
    pub duplicate: bool,
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
    appender: LocalSender<AppendJob>,
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
    ) -> Result<Rc<Self>, LogError> {
        let (log, report) = Log::open(GlommioStorage, dir.clone(), config).await?;
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
        let producers = restore_producers(&log, &snapshot_path, topic, index).await?;
        let (tx, rx) = local_channel::new_unbounded();
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
            appender: tx,
        });
        glommio::spawn_local(appender(
            p.topic.clone(),
            index,
            log,
            p.producers.clone(),
            Live {
                leader_epoch: p.leader_epoch.clone(),
                compression: p.compression.clone(),
            },
            stats,
            rx,
        ))
        .detach();
        Ok(p)
    }

    /// Queues a batch for appending; the position in the queue is taken now, synchronously.
    pub fn enqueue(&self, batch: Bytes) -> oneshot::Receiver<Result<Appended, i16>> {
        let (reply, rx) = oneshot::channel();
        let job = AppendJob {
            batch,
            queued: std::time::Instant::now(),
            reply,
        };
        if let Err(e) = self.appender.try_send(job) {
            // Only when the appender is gone (partition closing): the dropped job's reply
            // sender makes the receiver resolve as cancelled.
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "append queue closed");
        }
        rx
    }

    /// Writes the producer-state snapshot (state as of the current log end), atomically and
    /// off the shard (the storage's atomic replacement).
    pub async fn write_snapshot(&self) -> std::io::Result<()> {
        let snap = Snapshot {
            end_offset: self.log.log_end_offset(),
            state: self.producers.borrow().clone(),
        };
        let data = serde_json::to_vec(&snap).map_err(std::io::Error::other)?;
        GlommioStorage
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

/// Loads the snapshot if it still describes a prefix of the log, then replays batch headers
/// from its offset (or from the log start) to the log end.
async fn restore_producers(
    log: &Log,
    snapshot_path: &Path,
    topic: &str,
    index: i32,
) -> Result<ProducerStates, LogError> {
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    let snapshot = std::fs::read(snapshot_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Snapshot>(&b).ok());
    let now = now_ms();
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
}

async fn appender(
    topic: String,
    index: i32,
    log: Rc<Log>,
    producers: Rc<RefCell<ProducerStates>>,
    live: Live,
    stats: Rc<PartitionStats>,
    rx: LocalReceiver<AppendJob>,
) {
    while let Some(job) = rx.recv().await {
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

async fn append_one(
    topic: &str,
    index: i32,
    log: &Log,
    producers: &RefCell<ProducerStates>,
    leader_epoch: i32,
    compression: &CompressionPolicy,
    bytes: &Bytes,
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
    match log.append(bytes.clone(), leader_epoch, now_ms()).await {
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
                    now_ms(),
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

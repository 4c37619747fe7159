//! Consumer groups on the shards: one [`GroupCoordinator`] per shard, its internal log
//! (`__consumer_offsets`), the timer that drives it, and the lag admin path.
//!
//! # Why it is shaped like this
//!
//! The coordinator crate is a pure state machine; this module is its I/O edge. Each shard owns
//! the groups whose internal-log partition it owns, so a group's requests, its timers and its
//! durable records all live on one thread and nothing is locked:
//!
//! * **placement**: the internal topic `__consumer_offsets` has `N` partitions (config
//!   `offsets_topic_partitions`, default `2 × shards`, fixed at the first start and remembered
//!   in `<data_dir>/__consumer_offsets/partitions`). Group `g` is stored in partition
//!   `p = offsets_partition_for_group(g, N)` (Kafka's hash) and partition `p` lives on shard
//!   `p % shards`; the group lives there too ([`group_shard`]). With `N` a multiple of the shard
//!   count this is exactly `shard_for_group(g, shards)`; when the core count later changes so
//!   that it is not, groups still stay with their partition (a warning is logged).
//! * **requests** are placed synchronously ([`Groups::submit`]): the request goes into the
//!   coordinator at once and its answer comes back as a future. Parked JoinGroup/SyncGroup
//!   answers resolve whenever the rebalance moves on; the connection writes them in request
//!   order like any other answer.
//! * **persist, then acknowledge**: every `Persist` output becomes one or more RecordBatch v2
//!   batches (uncompressed, one record per coordinator [`Record`], key null, value
//!   `Record::encode()`) queued *synchronously, in output order* on the partition's appender;
//!   the acknowledgement reaches [`GroupCoordinator::persisted`] only through
//!   [`append_durable`], which returns the engine's [`Committed`] proof (the internal log uses
//!   the `EveryBatch` flush policy: fdatasync before commit). An OffsetCommit is therefore
//!   answered only after its records are on disk.
//! * **time**: a per-shard task sleeps until `next_deadline_ms()` (at most 1 s) or until a
//!   request wakes it, then calls `tick`.
//!
//! # Replay and compaction (snapshots)
//!
//! At start-up every shard opens its internal partitions and feeds every record from the log
//! start to the log end into `replay_bytes`, then `finish_loading`. To keep that bounded, when
//! a partition holds more than `max(offsets_snapshot_records, 2 × last snapshot size)` records
//! and no acknowledged write is in flight on it, the shard appends a *snapshot*: the records of
//! `GroupCoordinator::snapshot()` that belong to this partition (each group's last metadata and
//! its live offsets), or a single no-op marker (a tombstone for the empty group id, which replay
//! ignores) when there are none. Once the snapshot is committed (fsynced), the log start moves
//! to the snapshot's first offset with `delete_records_before`, and sealed segments below it are
//! deleted.
//!
//! Why this is crash-safe — a decision table of the crash points:
//!
//! | crash … | on restart the log holds | replay gives |
//! |---|---|---|
//! | before the snapshot is durable | old records (+ a torn/partial snapshot, truncated or kept by recovery) | old records rebuild the state; snapshot records re-put values already set (key/value records are idempotent) |
//! | after the snapshot is durable, before `log-start` is replaced | old records + whole snapshot | as above |
//! | after `log-start` is replaced (atomic rename) | snapshot + later records | the snapshot is the complete state at its offset |
//!
//! The snapshot is complete at its offset because it is taken synchronously, when no
//! acknowledged write (OffsetCommit) of this partition is in flight: every record queued before
//! it is then already reflected in the coordinator's state (group metadata and tombstones are
//! applied when emitted, commits when `persisted` is called). `delete_records_before` refuses
//! offsets past the committed end, and the engine writes `log-start` atomically (tmp, fsync,
//! rename, fsync dir). Time retention is off for the internal log; segments are 16 MiB so the
//! log start move frees space.
//!
//! # Lag
//!
//! [`group_lag`] (one group) and [`all_group_lags`] (every group of the broker) compute, per
//! committed partition, `high watermark − committed offset` from any shard: the committed
//! offsets come from the group's shard (an OffsetFetch through the coordinator), the high
//! watermarks from the partitions' shards. The CLI and `/metrics` call these.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::{self, LocalBoxFuture};
use futures::FutureExt;
use shardlog_coordinator::{
    error_response, offsets_partition_for_group, shard_for_offsets_partition, Config, ErrorCode,
    GroupCoordinator, ListGroupsRequest, OffsetFetchRequest, Output, PartitionLag, Persist,
    PersistId, Record, Request, RequestId, Response, Untrusted,
};
use shardlog_engine::batch::{self, HEADER_BYTES, LOG_OVERHEAD};
use shardlog_engine::{Committed, FlushPolicy, LogConfig};

use crate::config::BrokerConfig;
use crate::mesh::messages::{ShardReq, ShardResp};
use crate::mesh::shard::Shard;
use crate::partition::{now_ms, Partition};

/// Name of the internal topic holding group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Largest batch the internal log is written with (a Persist is split into batches this size).
const BATCH_BYTES_TARGET: usize = 1 << 20;
/// Segment size of the internal log: small, so moving the log start frees space soon.
const OFFSETS_SEGMENT_BYTES: u64 = 16 << 20;
/// Longest the timer sleeps between looks at the coordinator.
const TICK_MAX_MS: u64 = 1000;

fn now_u64() -> u64 {
    now_ms().max(0) as u64
}

/// Directory holding the internal log partitions and the `partitions` file.
pub fn offsets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(OFFSETS_TOPIC)
}

/// The number of internal-log partitions: remembered from the first start (it decides where
/// every group's records are, so it must never change), else `offsets_topic_partitions` or
/// `2 × cores`. Written durably on first use (called at start-up, before the shards run).
pub fn resolve_offsets_partitions(cfg: &BrokerConfig) -> std::io::Result<usize> {
    let dir = offsets_dir(&cfg.data_dir);
    let file = dir.join("partitions");
    if let Ok(text) = std::fs::read_to_string(&file) {
        return match text.trim().parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => {
                if n % cfg.cores.max(1) != 0 {
                    tracing::warn!(
                        partitions = n,
                        shards = cfg.cores,
                        "__consumer_offsets partitions are not a multiple of the shard count; groups follow their partition's shard"
                    );
                }
                Ok(n)
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a partition count: {text:?}", file.display()),
            )),
        };
    }
    let n = if cfg.offsets_topic_partitions == 0 {
        2 * cfg.cores.max(1)
    } else {
        cfg.offsets_topic_partitions
    };
    shardlog_engine::io::create_dir_all_durable(&dir)?;
    // Start-up, before the shards run: blocking is fine here.
    shardlog_engine::io::write_file_atomic_blocking(&file, format!("{n}\n").as_bytes())?;
    Ok(n)
}

/// The shard owning `group_id` when the internal topic has `partitions` partitions.
pub fn group_shard(group_id: &str, partitions: usize, shards: usize) -> usize {
    shard_for_offsets_partition(offsets_partition_for_group(group_id, partitions), shards)
}

/// Log configuration of an internal partition: fsync before acknowledging, no time or size
/// retention (the snapshot scheme above moves the log start), small segments.
pub fn offsets_log_config(cfg: &BrokerConfig) -> LogConfig {
    LogConfig {
        segment_bytes: OFFSETS_SEGMENT_BYTES,
        segment_ms: i64::MAX / 4,
        retention_ms: None,
        retention_bytes: None,
        max_batch_bytes: 4 * BATCH_BYTES_TARGET,
        flush: FlushPolicy::EveryBatch,
        cache_bytes: cfg.log_cache_bytes.min(1 << 20),
        preallocate_bytes: cfg.log_preallocate_bytes.min(1 << 20),
        ..LogConfig::default()
    }
    .normalized()
}

// ---- the internal log's batch encoding ------------------------------------------------------

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OffsetsBatchError {
    #[error("batch is not valid: {0}")]
    Batch(String),
    #[error("compressed internal batch (attributes {0:#x})")]
    Compressed(i16),
    #[error("record {index} is malformed: {what}")]
    Record { index: i32, what: &'static str },
}

/// Encodes `values` as one RecordBatch v2 (magic 2, uncompressed, CreateTime, no producer,
/// base offset 0: the log assigns it). Each record: null key, the value, no headers.
pub fn encode_offsets_batch(values: &[Bytes], timestamp_ms: i64) -> Bytes {
    assert!(
        !values.is_empty(),
        "an internal batch holds at least one record"
    );
    let mut records = BytesMut::with_capacity(values.iter().map(|v| v.len() + 16).sum());
    let mut rec = BytesMut::new();
    for (i, v) in values.iter().enumerate() {
        rec.clear();
        rec.put_u8(0); // attributes
        batch::put_varlong(&mut rec, 0); // timestamp delta
        batch::put_varlong(&mut rec, i as i64); // offset delta
        batch::put_varlong(&mut rec, -1); // null key
        batch::put_varlong(&mut rec, v.len() as i64);
        rec.extend_from_slice(v);
        batch::put_varlong(&mut rec, 0); // no headers
        batch::put_varlong(&mut records, rec.len() as i64);
        records.extend_from_slice(&rec);
    }
    let total = HEADER_BYTES + records.len();
    let mut out = BytesMut::with_capacity(total);
    out.put_i64(0); // base offset (assigned by the log)
    out.put_i32((total - LOG_OVERHEAD) as i32);
    out.put_i32(0); // partition leader epoch (assigned by the log)
    out.put_i8(2); // magic
    out.put_u32(0); // crc, below
    out.put_i16(0); // attributes
    out.put_i32(values.len() as i32 - 1);
    out.put_i64(timestamp_ms);
    out.put_i64(timestamp_ms);
    out.put_i64(-1); // producer id
    out.put_i16(-1);
    out.put_i32(-1);
    out.put_i32(values.len() as i32);
    out.extend_from_slice(&records);
    let crc = batch::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(batch::validate(&out, usize::MAX).is_ok());
    out.freeze()
}

/// Splits encoded records into batches of about [`BATCH_BYTES_TARGET`] bytes, in order.
pub fn encode_offsets_batches(values: &[Bytes], timestamp_ms: i64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, v) in values.iter().enumerate() {
        if i > start && bytes + v.len() + 32 > BATCH_BYTES_TARGET {
            out.push(encode_offsets_batch(&values[start..i], timestamp_ms));
            start = i;
            bytes = 0;
        }
        bytes += v.len() + 32;
    }
    if start < values.len() {
        out.push(encode_offsets_batch(&values[start..], timestamp_ms));
    }
    out
}

/// Decodes one stored internal batch into (offset, value) pairs. Checks the CRC and every
/// length against the bytes present; never panics on bad input.
pub fn decode_offsets_batch(bytes: &[u8]) -> Result<Vec<(i64, Bytes)>, OffsetsBatchError> {
    let info =
        batch::validate(bytes, usize::MAX).map_err(|e| OffsetsBatchError::Batch(e.to_string()))?;
    if info.compression() != 0 {
        return Err(OffsetsBatchError::Compressed(info.attributes));
    }
    let mut out = Vec::with_capacity((info.record_count.max(0) as usize).min(bytes.len() / 8));
    let mut pos = HEADER_BYTES;
    for index in 0..info.record_count {
        let bad = |what| OffsetsBatchError::Record { index, what };
        let len = batch::get_varlong(bytes, &mut pos).ok_or(bad("length"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= bytes.len())
            .ok_or(bad("length past the batch"))?;
        let rec = &bytes[..end];
        pos += 1; // attributes
        batch::get_varlong(rec, &mut pos).ok_or(bad("timestamp delta"))?;
        let delta = batch::get_varlong(rec, &mut pos).ok_or(bad("offset delta"))?;
        let key_len = batch::get_varlong(rec, &mut pos).ok_or(bad("key length"))?;
        if key_len > 0 {
            pos = pos
                .checked_add(key_len as usize)
                .filter(|&p| p <= end)
                .ok_or(bad("key past the record"))?;
        }
        let value_len = batch::get_varlong(rec, &mut pos).ok_or(bad("value length"))?;
        let value_len = usize::try_from(value_len).map_err(|_| bad("null value"))?;
        let value_end = pos
            .checked_add(value_len)
            .filter(|&p| p <= end)
            .ok_or(bad("value past the record"))?;
        let value = Bytes::copy_from_slice(&rec[pos..value_end]);
        // Offset deltas run from 0 to the batch's last offset delta; anything else (and an
        // offset past i64::MAX) is a malformed record, not an offset.
        let offset = (0..=i64::from(info.last_offset_delta))
            .contains(&delta)
            .then(|| info.base_offset.checked_add(delta))
            .flatten()
            .ok_or(bad("offset delta outside the batch"))?;
        out.push((offset, value));
        pos = end; // headers are ignored
    }
    Ok(out)
}

// ---- the per-shard coordinator ----------------------------------------------------------------

struct Waiter {
    tx: oneshot::Sender<Response>,
    /// JoinGroup/SyncGroup: may be parked for long; answered with an error at shutdown.
    parked: bool,
}

/// Per-shard group state: the coordinator and everything carrying out its outputs.
pub struct Groups {
    coord: RefCell<GroupCoordinator>,
    waiters: RefCell<HashMap<u64, Waiter>>,
    next_request_id: Cell<u64>,
    /// Internal-log partitions of the whole broker (`N`).
    pub partitions: usize,
    wake: event_listener::Event,
    /// Acknowledged writes (OffsetCommit) queued and not yet durable, per internal partition.
    acks_in_flight: RefCell<HashMap<usize, usize>>,
    snapshotting: RefCell<HashSet<usize>>,
    /// Records of the last snapshot, per partition.
    snapshot_records: RefCell<HashMap<usize, i64>>,
    snapshot_threshold_records: i64,
}

/// Coordinator configuration from the broker configuration (random member-id seed).
pub fn coordinator_config(cfg: &BrokerConfig, shard_id: usize) -> Config {
    use std::hash::BuildHasher;
    let seed = std::collections::hash_map::RandomState::new().hash_one((shard_id, now_ms()));
    Config {
        session_timeout_ms_min: cfg.group_min_session_timeout_ms,
        session_timeout_ms_max: cfg.group_max_session_timeout_ms,
        initial_rebalance_delay_ms: cfg.group_initial_rebalance_delay_ms,
        offsets_retention_ms: cfg.offsets_retention_ms,
        member_id_seed: seed,
        ..Config::default()
    }
}

impl Groups {
    pub fn new(cfg: &BrokerConfig, shard_id: usize) -> Self {
        let partitions = if cfg.offsets_topic_partitions == 0 {
            2 * cfg.cores.max(1)
        } else {
            cfg.offsets_topic_partitions
        };
        Self {
            coord: RefCell::new(GroupCoordinator::new(coordinator_config(cfg, shard_id))),
            waiters: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
            partitions,
            wake: event_listener::Event::new(),
            acks_in_flight: RefCell::new(HashMap::new()),
            snapshotting: RefCell::new(HashSet::new()),
            snapshot_records: RefCell::new(HashMap::new()),
            snapshot_threshold_records: cfg.offsets_snapshot_records as i64,
        }
    }

    /// The internal partitions `shard` owns.
    pub fn owned_partitions(&self, shard: &Shard) -> Vec<usize> {
        (0..self.partitions)
            .filter(|&p| shard_for_offsets_partition(p, shard.shards) == shard.id)
            .collect()
    }

    /// The shard that owns `group_id`.
    pub fn shard_of(&self, group_id: &str, shards: usize) -> usize {
        group_shard(group_id, self.partitions, shards)
    }

    /// Places `req` in this shard's coordinator now and returns a future for its answer.
    pub fn submit(shard: &Rc<Shard>, req: Request) -> LocalBoxFuture<'static, Response> {
        let g = &shard.groups;
        let fallback = error_response(&req, ErrorCode::CoordinatorNotAvailable);
        let parked = matches!(req, Request::JoinGroup(_) | Request::SyncGroup(_));
        let id = g.next_request_id.get();
        g.next_request_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        g.waiters.borrow_mut().insert(id, Waiter { tx, parked });
        let outs = g.coord.borrow_mut().handle(now_u64(), RequestId(id), req);
        carry_out(shard, outs);
        g.wake.notify(1);
        async move { rx.await.unwrap_or(fallback) }.boxed_local()
    }

    /// Committed offsets of a group held by this shard (`None`: unknown group).
    pub fn committed(&self, group_id: &str) -> Option<Vec<(String, i32, i64)>> {
        self.coord
            .borrow()
            .committed_offsets(group_id)
            .map(|v| v.into_iter().map(|(t, p, o)| (t, p, o.offset)).collect())
    }

    /// Number of groups this shard holds.
    pub fn group_count(&self) -> usize {
        self.coord.borrow().group_count()
    }
}

/// Carries out coordinator outputs in order: answers go to their waiters, persists are queued
/// on the internal log synchronously (so appends keep the output order).
fn carry_out(shard: &Rc<Shard>, outs: Vec<Output>) {
    for out in outs {
        match out {
            Output::Respond {
                request_id,
                response,
            } => {
                let w = shard.groups.waiters.borrow_mut().remove(&request_id.0);
                match w {
                    Some(w) => {
                        let _ = w.tx.send(response);
                    }
                    None => tracing::debug!(
                        request = request_id.0,
                        "answer for a request nobody waits for"
                    ),
                }
            }
            Output::Persist(p) => persist(shard, p),
        }
    }
}

/// Appends `batches` (already queued) and waits until the last is committed. The returned
/// [`Committed`] is the only way to acknowledge an OffsetCommit.
async fn append_durable(
    p: &Partition,
    queued: Vec<oneshot::Receiver<Result<crate::partition::Appended, i16>>>,
) -> Result<(i64, Committed), ErrorCode> {
    let mut first = None;
    let mut last = -1;
    let mut failed = None;
    for rx in queued {
        match rx.await {
            Ok(Ok(a)) => {
                first.get_or_insert(a.base_offset);
                last = a.last_offset;
            }
            Ok(Err(code)) => {
                failed.get_or_insert(code);
            }
            Err(_) => {
                failed.get_or_insert(crate::wire::errors::UNKNOWN_SERVER_ERROR);
            }
        }
    }
    if let Some(code) = failed {
        tracing::error!(
            partition = p.index,
            error = crate::wire::errors::name(code),
            "append to {OFFSETS_TOPIC} failed"
        );
        return Err(ErrorCode::CoordinatorNotAvailable);
    }
    let first = first.ok_or(ErrorCode::UnknownServerError)?;
    match p.log.wait_committed(last).await {
        Ok(c) => {
            assert!(c.through() >= last, "committed proof below the append");
            Ok((first, c))
        }
        Err(e) => {
            tracing::error!(partition = p.index, error = %e, "{OFFSETS_TOPIC} not durable");
            Err(ErrorCode::CoordinatorNotAvailable)
        }
    }
}

fn persist(shard: &Rc<Shard>, p: Persist) {
    let g = &shard.groups;
    let index = offsets_partition_for_group(&p.group_id, g.partitions);
    debug_assert_eq!(shard_for_offsets_partition(index, shard.shards), shard.id);
    let mut values = Vec::with_capacity(p.records.len());
    for r in &p.records {
        match r.encode() {
            Ok(b) => values.push(b),
            Err(e) => {
                tracing::error!(group = %Untrusted(&p.group_id), error = %e, "cannot encode a group record; dropped")
            }
        }
    }
    let partition = shard.partition(OFFSETS_TOPIC, index as i32);
    let (partition, queued) = match partition {
        Some(part) if !values.is_empty() => {
            let batches = encode_offsets_batches(&values, now_ms());
            let queued: Vec<_> = batches.into_iter().map(|b| part.enqueue(b)).collect();
            (Some(part), queued)
        }
        other => {
            if other.is_none() {
                tracing::error!(partition = index, "{OFFSETS_TOPIC} partition is not open");
            }
            (other, Vec::new())
        }
    };
    if p.ack.is_some() {
        *g.acks_in_flight.borrow_mut().entry(index).or_default() += 1;
    }
    let shard = shard.clone();
    let ack = p.ack;
    glommio::spawn_local(async move {
        let result = match &partition {
            Some(part) if !queued.is_empty() => append_durable(part, queued).await.map(|_| ()),
            _ => Err(ErrorCode::CoordinatorNotAvailable),
        };
        if let Some(ack) = ack {
            acknowledge(&shard, index, ack, result);
        }
        maybe_snapshot(&shard, index);
    })
    .detach();
}

fn acknowledge(shard: &Rc<Shard>, index: usize, ack: PersistId, result: Result<(), ErrorCode>) {
    let g = &shard.groups;
    if let Some(n) = g.acks_in_flight.borrow_mut().get_mut(&index) {
        *n = n.saturating_sub(1);
    }
    let outs = g.coord.borrow_mut().persisted(now_u64(), ack, result);
    carry_out(shard, outs);
}

/// Writes a snapshot of partition `index` and moves its log start, when due (see module docs).
fn maybe_snapshot(shard: &Rc<Shard>, index: usize) {
    let g = &shard.groups;
    if g.acks_in_flight.borrow().get(&index).copied().unwrap_or(0) > 0
        || g.snapshotting.borrow().contains(&index)
        || shard.is_shutting_down()
    {
        return;
    }
    let Some(part) = shard.partition(OFFSETS_TOPIC, index as i32) else {
        return;
    };
    let held = part.log.log_end_offset() - part.log.log_start_offset();
    let last = g
        .snapshot_records
        .borrow()
        .get(&index)
        .copied()
        .unwrap_or(0);
    if held < g.snapshot_threshold_records.max(2 * last) {
        return;
    }
    let records: Vec<Record> = g
        .coord
        .borrow()
        .snapshot()
        .into_iter()
        .filter(|r| offsets_partition_for_group(r.group_id(), g.partitions) == index)
        .collect();
    let mut values: Vec<Bytes> = records.iter().filter_map(|r| r.encode().ok()).collect();
    if values.len() != records.len() {
        tracing::error!(
            partition = index,
            "cannot encode a snapshot record; snapshot skipped"
        );
        return;
    }
    if values.is_empty() {
        // A no-op marker so the snapshot has an offset: replay ignores tombstones of unknown
        // groups, and the empty group id is never a group.
        let marker = Record::GroupMetadata {
            group_id: String::new(),
            value: None,
        };
        match marker.encode() {
            Ok(b) => values.push(b),
            Err(_) => return,
        }
    }
    let count = values.len() as i64;
    let queued: Vec<_> = encode_offsets_batches(&values, now_ms())
        .into_iter()
        .map(|b| part.enqueue(b))
        .collect();
    g.snapshotting.borrow_mut().insert(index);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        match append_durable(&part, queued).await {
            Ok((base, _committed)) => match part.log.delete_records_before(base).await {
                Ok(start) => {
                    tracing::info!(partition = index, records = count, dropped = held, log_start = start, "{OFFSETS_TOPIC}: wrote snapshot and moved the log start");
                    shard.groups.snapshot_records.borrow_mut().insert(index, count);
                }
                Err(e) => {
                    tracing::warn!(partition = index, error = %e, "{OFFSETS_TOPIC}: cannot move the log start after a snapshot")
                }
            },
            Err(e) => tracing::warn!(partition = index, error = ?e, "{OFFSETS_TOPIC}: snapshot not written"),
        }
        shard.groups.snapshotting.borrow_mut().remove(&index);
    })
    .detach();
}

/// Opens this shard's internal partitions, replays them into the coordinator and ends loading.
/// Called at start-up before the shard accepts connections.
pub async fn load(shard: &Rc<Shard>) {
    let g = &shard.groups;
    let dir = offsets_dir(&shard.cfg.data_dir);
    let config = offsets_log_config(&shard.cfg);
    let t0 = std::time::Instant::now();
    let mut records = 0u64;
    let mut bad = 0u64;
    for index in g.owned_partitions(shard) {
        let i = index as i32;
        let opened = Partition::open(
            OFFSETS_TOPIC,
            i,
            dir.join(index.to_string()),
            dir.join(format!("{index}.producers.json")),
            config.clone(),
            0,
            &shard.cache_budget,
            &shard.segment_files,
        )
        .await;
        let part = match opened {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(partition = index, error = %e, "cannot open {OFFSETS_TOPIC}; its groups are unavailable");
                continue;
            }
        };
        shard
            .partitions
            .borrow_mut()
            .insert(OFFSETS_TOPIC, i, part.clone());
        let start = part.log.log_start_offset();
        let end = part.log.committed_end_offset();
        let mut offset = start;
        let mut held = 0i64;
        while offset < end {
            let rr = match part.log.read(offset, end, 1 << 20, true).await {
                Ok(rr) => rr,
                Err(e) => {
                    tracing::error!(partition = index, offset, error = %e, "cannot read {OFFSETS_TOPIC} during replay; the rest of it is skipped");
                    break;
                }
            };
            if rr.batches.is_empty() {
                break;
            }
            for b in &rr.batches {
                let next = b.info().map(|info| info.next_offset());
                match decode_offsets_batch(&b.to_bytes()) {
                    Ok(recs) => {
                        for (off, value) in recs {
                            if off < offset {
                                continue;
                            }
                            held += 1;
                            records += 1;
                            if let Err(e) = g.coord.borrow_mut().replay_bytes(&value) {
                                bad += 1;
                                tracing::error!(partition = index, offset = off, error = %e, "undecodable record in {OFFSETS_TOPIC}; skipped");
                            }
                        }
                    }
                    Err(e) => {
                        bad += 1;
                        tracing::error!(partition = index, offset, error = %e, "bad batch in {OFFSETS_TOPIC}; skipped");
                    }
                }
                match next {
                    Ok(n) if n > offset => offset = n,
                    _ => {
                        offset = end;
                        break;
                    }
                }
            }
        }
        tracing::debug!(
            partition = index,
            records = held,
            "replayed {OFFSETS_TOPIC} partition"
        );
    }
    g.coord.borrow_mut().finish_loading(now_u64());
    tracing::info!(
        shard = shard.id,
        groups = g.group_count(),
        records,
        bad,
        replay_ms = t0.elapsed().as_millis() as u64,
        "group coordinator loaded"
    );
}

/// Drives `tick` from the coordinator's next deadline until the broker has drained; at
/// shutdown answers parked JoinGroup/SyncGroup requests (COORDINATOR_NOT_AVAILABLE) so
/// their connections can close.
pub fn spawn_timer(shard: Rc<Shard>) {
    glommio::spawn_local(async move {
        loop {
            if shard.global.drained.load(Ordering::SeqCst) >= shard.shards {
                break;
            }
            if shard.is_shutting_down() {
                shard.groups.waiters.borrow_mut().retain(|_, w| !w.parked);
            }
            let listener = shard.groups.wake.listen();
            let now = now_u64();
            let next = shard.groups.coord.borrow().next_deadline_ms();
            let mut wait_ms = next.map_or(TICK_MAX_MS, |d| d.saturating_sub(now));
            if shard.is_shutting_down() {
                wait_ms = wait_ms.min(50);
            }
            if wait_ms == 0 {
                let outs = shard.groups.coord.borrow_mut().tick(now);
                carry_out(&shard, outs);
                continue;
            }
            let sleep = glommio::timer::sleep(Duration::from_millis(wait_ms.min(TICK_MAX_MS)));
            let _ = future::select(sleep.boxed_local(), listener.boxed_local()).await;
        }
    })
    .detach();
}

// ---- admin: lag ---------------------------------------------------------------------------

/// Errors of the lag admin path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LagError {
    #[error("group coordinator error {0:?}")]
    Coordinator(ErrorCode),
    #[error("a shard did not answer (shutting down)")]
    ShardGone,
}

/// Lag of one group, per committed partition: high watermark − committed offset. Callable from
/// any shard. `Ok(None)` when the group has no committed offsets (or does not exist).
pub async fn group_lag(
    shard: &Rc<Shard>,
    group_id: &str,
) -> Result<Option<Vec<PartitionLag>>, LagError> {
    let target = shard.groups.shard_of(group_id, shard.shards);
    let req = Request::OffsetFetch(OffsetFetchRequest {
        group_id: group_id.to_string(),
        topics: None,
    });
    let committed: Vec<(String, i32, i64)> = match shard.call(target, ShardReq::Group(req)).await {
        ShardResp::Group(Response::OffsetFetch(r)) => {
            if !r.error.is_ok() {
                return Err(LagError::Coordinator(r.error));
            }
            r.topics
                .into_iter()
                .flat_map(|t| {
                    let topic = t.topic;
                    t.partitions
                        .into_iter()
                        .filter(|p| p.committed_offset >= 0)
                        .map(move |p| (topic.clone(), p.partition, p.committed_offset))
                })
                .collect()
        }
        _ => return Err(LagError::ShardGone),
    };
    if committed.is_empty() {
        return Ok(None);
    }
    let hws = high_watermarks(shard, committed.iter().map(|(t, p, _)| (t.clone(), *p))).await;
    Ok(Some(shardlog_coordinator::compute_lag(
        committed.iter().map(|(t, p, o)| (t.as_str(), *p, *o)),
        |t, p| hws.get(&(t.to_string(), p)).copied(),
    )))
}

/// Lag of every group of the broker that has committed offsets, sorted by group id.
pub async fn all_group_lags(
    shard: &Rc<Shard>,
) -> Result<Vec<(String, Vec<PartitionLag>)>, LagError> {
    let mut ids = Vec::new();
    for target in 0..shard.shards {
        let req = Request::ListGroups(ListGroupsRequest::default());
        match shard.call(target, ShardReq::Group(req)).await {
            ShardResp::Group(Response::ListGroups(r)) => {
                ids.extend(r.groups.into_iter().map(|g| g.group_id))
            }
            _ => return Err(LagError::ShardGone),
        }
    }
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(lag) = group_lag(shard, &id).await? {
            out.push((id, lag));
        }
    }
    Ok(out)
}

/// High watermarks of the given partitions, asked of their owning shards.
async fn high_watermarks(
    shard: &Rc<Shard>,
    parts: impl Iterator<Item = (String, i32)>,
) -> HashMap<(String, i32), i64> {
    let mut by_shard: BTreeMap<usize, Vec<(String, i32, i64)>> = BTreeMap::new();
    for (t, p) in parts {
        by_shard
            .entry(shard.owner(&t, p))
            .or_default()
            .push((t, p, -1));
    }
    let mut out = HashMap::new();
    for (target, parts) in by_shard {
        if let ShardResp::Offsets(rs) = shard.call(target, ShardReq::ListOffsets { parts }).await {
            for r in rs {
                if r.error == crate::wire::errors::NONE && r.offset >= 0 {
                    out.insert((r.topic, r.partition), r.offset);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog_coordinator::OffsetValue;

    fn rec(group: &str, p: i32, off: i64) -> Record {
        Record::Offset {
            group_id: group.into(),
            topic: "t".into(),
            partition: p,
            value: Some(OffsetValue {
                offset: off,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_timestamp_ms: 5,
            }),
        }
    }

    #[test]
    fn batch_round_trip_is_valid_for_the_engine() {
        let records: Vec<Record> = (0..50).map(|i| rec("g", i, i64::from(i) * 7)).collect();
        let values: Vec<Bytes> = records
            .iter()
            .map(|r| r.encode().expect("encode"))
            .collect();
        let b = encode_offsets_batch(&values, 1234);
        let info = batch::validate(&b, usize::MAX).expect("engine accepts the batch");
        assert_eq!(info.record_count, 50);
        assert_eq!(info.producer_id, -1);
        // Pretend the log placed it at offset 100.
        let mut placed = b.to_vec();
        batch::assign(&mut placed, 100, 3);
        let decoded = decode_offsets_batch(&placed).expect("decode");
        assert_eq!(decoded.len(), 50);
        for (i, (off, v)) in decoded.iter().enumerate() {
            assert_eq!(*off, 100 + i as i64);
            assert_eq!(Record::decode(v).expect("record"), records[i]);
        }
    }

    #[test]
    fn corrupt_or_truncated_batches_are_errors() {
        let values = vec![rec("g", 0, 1).encode().expect("encode")];
        let b = encode_offsets_batch(&values, 0).to_vec();
        for cut in 0..b.len() {
            assert!(decode_offsets_batch(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = b.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        assert!(matches!(
            decode_offsets_batch(&flipped),
            Err(OffsetsBatchError::Batch(_))
        ));
        // A record length that lies (CRC recomputed so only the record walk can catch it).
        let mut lying = b.clone();
        lying[HEADER_BYTES] = 0x7e; // varint 63: past the batch
        let crc = batch::compute_crc(&lying);
        lying[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_offsets_batch(&lying),
            Err(OffsetsBatchError::Record { .. })
        ));
    }

    #[test]
    fn large_persists_split_into_bounded_batches_in_order() {
        let values: Vec<Bytes> = (0..3000)
            .map(|i| Bytes::from(vec![(i % 251) as u8; 1000]))
            .collect();
        let batches = encode_offsets_batches(&values, 0);
        assert!(batches.len() >= 3, "{}", batches.len());
        let mut all = Vec::new();
        for b in &batches {
            assert!(b.len() <= BATCH_BYTES_TARGET + 64);
            all.extend(
                decode_offsets_batch(b)
                    .expect("decode")
                    .into_iter()
                    .map(|(_, v)| v),
            );
        }
        assert_eq!(all, values);
    }

    #[test]
    fn groups_live_with_their_partition() {
        for shards in 1..=4 {
            for n in [shards, 2 * shards, 3 * shards + 1] {
                for i in 0..200 {
                    let g = format!("group-{i}");
                    let p = offsets_partition_for_group(&g, n);
                    assert_eq!(group_shard(&g, n, shards), p % shards);
                    if n % shards == 0 {
                        assert_eq!(
                            group_shard(&g, n, shards),
                            shardlog_coordinator::shard_for_group(&g, shards)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, i64::MAX, i64::MIN] {
            let mut b = BytesMut::new();
            batch::put_varlong(&mut b, v);
            let mut pos = 0;
            assert_eq!(batch::get_varlong(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
        }
        assert_eq!(batch::get_varlong(&[0xff; 11], &mut 0), None);
    }
}

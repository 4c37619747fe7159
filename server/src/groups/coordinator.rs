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

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{self, LocalBoxFuture};
use futures::FutureExt;
use shardlog_coordinator::{
    error_response, offsets_partition_for_group, shard_for_offsets_partition, ErrorCode, Output,
    Persist, PersistId, Record, Request, RequestId, Response, Untrusted,
};
use shardlog_engine::Committed;

use crate::clock::now_ms;
use crate::mesh::shard::Shard;
use crate::partition::Partition;

use crate::groups::offsets_log::*;
use crate::groups::state::{Groups, Waiter};

impl Groups {
    /// The internal partitions `shard` owns.
    pub fn owned_partitions(&self, shard: &Shard) -> Vec<usize> {
        (0..self.partitions)
            .filter(|&p| shard_for_offsets_partition(p, shard.shards) == shard.id)
            .collect()
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
    match p.wait_committed(last).await {
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
            let queued: Vec<_> = batches
                .into_iter()
                .map(|b| part.enqueue_internal(b))
                .collect();
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
    let held = part.log_end_offset() - part.log_start_offset();
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
        .map(|b| part.enqueue_internal(b))
        .collect();
    g.snapshotting.borrow_mut().insert(index);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        match append_durable(&part, queued).await {
            Ok((base, _committed)) => match part.delete_records_before(base).await {
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
            crate::partition::ReplicaSetup::single(shard.cfg.node_id),
            &crate::partition::Assignment::sole(shard.cfg.node_id, 0),
            &shard.cache_budget,
            &shard.segment_files,
            &shard.storage,
            &shard.clock,
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
        let start = part.log_start_offset();
        let end = part.high_watermark();
        let mut offset = start;
        let mut held = 0i64;
        while offset < end {
            let rr = match part.read_to(offset, end, 1 << 20, true).await {
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

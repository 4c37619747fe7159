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
//!   `Record::encode()`) queued *synchronously, in output order* on the partition as acks=all
//!   produces; the acknowledgement reaches [`GroupCoordinator::persisted`] only through
//!   [`append_acked`], whose success exists only with the replica core's commit proof (the
//!   internal log uses the `EveryBatch` flush policy: fdatasync before commit, on every
//!   replica). An OffsetCommit is therefore answered only after its records are on the disks
//!   of the in-sync replicas (`min.insync.replicas = min(2, RF)` in a cluster).
//! * **ownership**: the coordinator is partitioned (`GroupCoordinator::new_partitioned`): it
//!   answers for the groups of the partitions it has loaded only. On a single node those are
//!   the shard's local partitions, loaded at start-up ([`load`]). In a cluster
//!   (`Groups::replicated`) the partitions are the image's topic and [`follow_leadership`]
//!   loads a partition when this shard leads it and unloads it when it stops
//!   (docs/ARCHITECTURE.md, "Consumer groups").
//! * **time**: a per-shard task sleeps until `next_deadline_ms()` (at most 1 s) or until a
//!   request wakes it, then calls `tick`.
//!
//! # Replay and compaction (snapshots)
//!
//! Loading a partition feeds every record from its log start up to its high watermark (a new
//! leader: once that covers the log end it took over with) into `replay_partition_bytes`,
//! then `finish_partition_load`. To keep that bounded, when
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
//! log start move frees space. Only the loaded leader snapshots (a loading partition's groups
//! are not in the coordinator yet). Followers replicate the snapshot records but keep their
//! own log start (the follower path does not take the leader's log start yet), so a new
//! leader replays its whole log once; its own snapshots bound it from then on.
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
    PartitionLoad, Persist, PersistId, Record, Request, RequestId, Response, Untrusted,
};

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

/// How long a coordinator write waits for the in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms`).
pub(crate) const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Queues `batches` on the internal partition now, in order, as acks=all produces, and
/// returns a future for the first offset once the high watermark covers the last batch. A
/// success exists only with the replica core's commit proof (`ProduceResult` carries no error
/// only when built from one), so an OffsetCommit is never acknowledged before its records
/// are committed on the in-sync replicas (on this broker alone: fsynced).
fn append_acked(
    p: &Rc<Partition>,
    batches: Vec<Bytes>,
) -> LocalBoxFuture<'static, Result<i64, ErrorCode>> {
    let queued: Vec<_> = batches
        .into_iter()
        .map(|b| p.produce_within(-1, b, OFFSETS_COMMIT_TIMEOUT))
        .collect();
    let index = p.index;
    async move {
        let mut first = None;
        let mut failed = None;
        for r in future::join_all(queued).await {
            if r.error() == crate::wire::errors::NONE {
                first.get_or_insert(r.base_offset());
            } else {
                failed.get_or_insert(r.error());
            }
        }
        if let Some(code) = failed {
            tracing::warn!(
                partition = index,
                error = crate::wire::errors::name(code),
                "append to {OFFSETS_TOPIC} failed"
            );
            return Err(append_error(code));
        }
        first.ok_or(ErrorCode::UnknownServerError)
    }
    .boxed_local()
}

/// The answer to an OffsetCommit whose append failed, as Kafka maps it: the partition moved
/// (NOT_COORDINATOR: the client finds the coordinator again), too large
/// (INVALID_COMMIT_OFFSET_SIZE), anything else COORDINATOR_NOT_AVAILABLE (not enough in-sync
/// replicas, timed out).
pub(crate) fn append_error(code: i16) -> ErrorCode {
    use crate::wire::errors as e;
    match code {
        e::NOT_LEADER_OR_FOLLOWER | e::KAFKA_STORAGE_ERROR | e::FENCED_LEADER_EPOCH => {
            ErrorCode::NotCoordinator
        }
        e::MESSAGE_TOO_LARGE | e::RECORD_LIST_TOO_LARGE => ErrorCode::InvalidCommitOffsetSize,
        _ => ErrorCode::CoordinatorNotAvailable,
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
    let appended = match shard.partition(OFFSETS_TOPIC, index as i32) {
        Some(part) if !values.is_empty() => Some(append_acked(
            &part,
            encode_offsets_batches(&values, now_ms()),
        )),
        Some(_) => None,
        None => {
            tracing::error!(partition = index, "{OFFSETS_TOPIC} partition is not open");
            None
        }
    };
    if p.ack.is_some() {
        *g.acks_in_flight.borrow_mut().entry(index).or_default() += 1;
    }
    let shard = shard.clone();
    let ack = p.ack;
    glommio::spawn_local(async move {
        let result = match appended {
            Some(f) => f.await.map(|_| ()),
            None => Err(ErrorCode::CoordinatorNotAvailable),
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
    // Only the loaded leader: its coordinator holds every group of the partition (a partition
    // still loading holds none of them yet, and its snapshot would drop them all).
    if g.coord.borrow().partition_load(index) != Some(PartitionLoad::Active) {
        return;
    }
    let Some(part) = shard
        .partition(OFFSETS_TOPIC, index as i32)
        .filter(|p| p.is_leader())
    else {
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
    let appended = append_acked(&part, encode_offsets_batches(&values, now_ms()));
    g.snapshotting.borrow_mut().insert(index);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        match appended.await {
            Ok(base) => match part.delete_records_before(base).await {
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

/// Start-up. Single node: opens this shard's local internal partitions and loads each
/// (replays its log into the coordinator) before the shard accepts connections. Cluster: the
/// partitions are the image's (opened with the other topics) and their groups load when this
/// shard leads them ([`follow_leadership`]).
pub async fn load(shard: &Rc<Shard>) {
    let g = &shard.groups;
    if g.replicated {
        tracing::info!(
            shard = shard.id,
            partitions = g.partitions,
            "groups follow the leadership of the replicated {OFFSETS_TOPIC}"
        );
        follow_leadership(shard);
        return;
    }
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
        let outs = g.coord.borrow_mut().begin_partition_load(index);
        carry_out(shard, outs);
        let end = part.high_watermark();
        let (n, b) = replay(shard, index, &part, end, &|| true).await;
        records += n;
        bad += b;
        g.coord.borrow_mut().finish_partition_load(now_u64(), index);
    }
    tracing::info!(
        shard = shard.id,
        groups = g.group_count(),
        records,
        bad,
        replay_ms = t0.elapsed().as_millis() as u64,
        "group coordinator loaded"
    );
}

/// Feeds partition `index`'s records from its log start up to `end` into the coordinator
/// (loading that partition). Stops early when `current` turns false (the load was
/// superseded). Returns (records, bad records or batches).
async fn replay(
    shard: &Rc<Shard>,
    index: usize,
    part: &Partition,
    end: i64,
    current: &dyn Fn() -> bool,
) -> (u64, u64) {
    let g = &shard.groups;
    let mut offset = part.log_start_offset();
    let (mut records, mut bad) = (0u64, 0u64);
    while offset < end && current() {
        let rr = match part.read_to(offset, end, 1 << 20, true).await {
            Ok(rr) => rr,
            Err(e) => {
                tracing::error!(partition = index, offset, error = %e, "cannot read {OFFSETS_TOPIC} during replay; the rest of it is skipped");
                break;
            }
        };
        if rr.batches.is_empty() || !current() {
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
                        records += 1;
                        if let Err(e) = g.coord.borrow_mut().replay_partition_bytes(index, &value) {
                            bad += 1;
                            tracing::error!(partition = index, offset = off, error = %e, "unusable record in {OFFSETS_TOPIC}; skipped");
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
        records,
        "replayed {OFFSETS_TOPIC} partition"
    );
    (records, bad)
}

/// Cluster: makes this shard's coordinator follow the leadership of its `__consumer_offsets`
/// partitions in the image. Called after every metadata record about the topic and at
/// start-up. A partition this shard now leads (or leads in a new leader epoch) starts
/// loading; one it stopped leading is unloaded (its waiting requests get NOT_COORDINATOR).
pub fn follow_leadership(shard: &Rc<Shard>) {
    let g = &shard.groups;
    if !g.replicated {
        return;
    }
    let image_partitions = shard.topic(OFFSETS_TOPIC).map(|t| t.partitions.len());
    let usable = image_partitions.is_none_or(|n| n == g.partitions);
    if !usable && !g.mismatch_logged.replace(true) {
        tracing::error!(
            image = image_partitions,
            local = g.partitions,
            "{OFFSETS_TOPIC} has another partition count in the image than offsets_topic_partitions here; this broker coordinates no group (set the same value on every broker)"
        );
    }
    for index in g.owned_partitions(shard) {
        let part = shard
            .partition(OFFSETS_TOPIC, index as i32)
            .filter(|p| usable && p.is_leader());
        let epoch = part.as_ref().map(|p| p.current_leader().1);
        let current = g.leading.borrow().get(&index).map(|&(e, _)| e);
        match (part, epoch, current) {
            (Some(_), Some(e), Some(c)) if e == c => {}
            (Some(part), Some(e), _) => start_load(shard, index, part, e),
            (_, _, Some(c)) => {
                g.leading.borrow_mut().remove(&index);
                let outs = g.coord.borrow_mut().unload_partition(index);
                carry_out(shard, outs);
                tracing::info!(
                    partition = index,
                    leader_epoch = c,
                    "no longer leading {OFFSETS_TOPIC}: its groups are unloaded"
                );
            }
            _ => {}
        }
    }
}

/// Cluster: asks the controller to create `__consumer_offsets` in the image (Kafka creates
/// it when a group first needs a coordinator), once enough brokers are live for its full
/// replication factor, min(3, voters). One creation at a time per shard; the FindCoordinator
/// that called this answers COORDINATOR_NOT_AVAILABLE and the client asks again.
pub fn ensure_offsets_topic(shard: &Rc<Shard>) {
    let g = &shard.groups;
    if !g.replicated || g.creating.get() || shard.topic(OFFSETS_TOPIC).is_some() {
        return;
    }
    let live = shard
        .meta
        .borrow()
        .brokers
        .values()
        .filter(|b| !b.fenced && !b.shutting_down)
        .count();
    let want = g.voters.clamp(1, 3);
    if live < want {
        // Debug: every FindCoordinator of a waiting client comes here.
        tracing::debug!(
            live,
            want,
            "{OFFSETS_TOPIC} waits for enough live brokers before it is created"
        );
        return;
    }
    g.creating.set(true);
    let topic = crate::mesh::messages::NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: i32::try_from(g.partitions).unwrap_or(i32::MAX),
        replication_factor: -1,
        assignments: Vec::new(),
        configs: Vec::new(),
    };
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let answer = shard
            .admin_call(crate::mesh::messages::AdminReq::CreateTopics {
                topics: vec![topic],
                validate_only: false,
            })
            .await;
        match answer {
            crate::mesh::messages::AdminResp::Results(r) => {
                for (_, code, msg) in r {
                    match code {
                        crate::wire::errors::NONE => {
                            tracing::info!(
                                partitions = shard.groups.partitions,
                                "created {OFFSETS_TOPIC}"
                            )
                        }
                        crate::wire::errors::TOPIC_ALREADY_EXISTS => {}
                        code => tracing::warn!(
                            error = crate::wire::errors::name(code),
                            message = msg.as_deref().unwrap_or(""),
                            "cannot create {OFFSETS_TOPIC} yet"
                        ),
                    }
                }
            }
            _ => tracing::warn!("cannot create {OFFSETS_TOPIC} yet: unexpected admin answer"),
        }
        shard.groups.creating.set(false);
    })
    .detach();
}

/// How often a load waiting for the high watermark looks again without a wake-up.
const LOAD_POLL: Duration = Duration::from_millis(100);

/// Starts loading partition `index`, led here in `epoch`: waits until the high watermark
/// covers the log end this leader took over with (the records a former leader wrote are
/// committed, or cut from the followers), replays up to there, then serves its groups. Until
/// then its groups get COORDINATOR_LOAD_IN_PROGRESS; no coordinator write reaches the
/// partition meanwhile, so that log end does not move.
fn start_load(shard: &Rc<Shard>, index: usize, part: Rc<Partition>, epoch: i32) {
    let g = &shard.groups;
    let load = g.next_load.get();
    g.next_load.set(load + 1);
    g.leading.borrow_mut().insert(index, (epoch, load));
    let outs = g.coord.borrow_mut().begin_partition_load(index);
    carry_out(shard, outs);
    tracing::info!(
        partition = index,
        leader_epoch = epoch,
        "leading {OFFSETS_TOPIC}: loading its groups"
    );
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let t0 = std::time::Instant::now();
        // Still this load, and the partition still open (a task holding a removed or closed
        // partition would keep its log from being released).
        let current = || {
            shard.groups.leading.borrow().get(&index).map(|&(_, l)| l) == Some(load)
                && !shard.is_shutting_down()
                && shard
                    .partition(OFFSETS_TOPIC, index as i32)
                    .is_some_and(|p| Rc::ptr_eq(&p, &part))
        };
        let target = part.log_end_offset();
        while current() && part.high_watermark() < target {
            let changed = part.listen();
            if part.high_watermark() >= target {
                break;
            }
            let pause = glommio::timer::sleep(LOAD_POLL);
            future::select(changed.boxed_local(), pause.boxed_local()).await;
        }
        if !current() {
            return;
        }
        let (records, bad) = replay(&shard, index, &part, target, &current).await;
        if !current() {
            return;
        }
        let g = &shard.groups;
        g.coord.borrow_mut().finish_partition_load(now_u64(), index);
        g.wake.notify(1);
        tracing::info!(
            partition = index,
            leader_epoch = epoch,
            records,
            bad,
            end = target,
            load_ms = t0.elapsed().as_millis() as u64,
            "{OFFSETS_TOPIC} partition loaded: coordinating its groups"
        );
    })
    .detach();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::errors;

    #[test]
    fn failed_appends_answer_commits_like_kafka() {
        for code in [
            errors::NOT_LEADER_OR_FOLLOWER,
            errors::KAFKA_STORAGE_ERROR,
            errors::FENCED_LEADER_EPOCH,
        ] {
            assert_eq!(append_error(code), ErrorCode::NotCoordinator, "{code}");
        }
        for code in [errors::MESSAGE_TOO_LARGE, errors::RECORD_LIST_TOO_LARGE] {
            assert_eq!(
                append_error(code),
                ErrorCode::InvalidCommitOffsetSize,
                "{code}"
            );
        }
        for code in [
            errors::NOT_ENOUGH_REPLICAS,
            errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            errors::REQUEST_TIMED_OUT,
            errors::UNKNOWN_SERVER_ERROR,
        ] {
            assert_eq!(
                append_error(code),
                ErrorCode::CoordinatorNotAvailable,
                "{code}"
            );
        }
    }
}

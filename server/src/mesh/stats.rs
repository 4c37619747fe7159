//! A shard's metrics snapshot for a `/metrics` scrape: the thread-local counters of
//! `crate::metrics` plus what the shard's own state says (partitions, caches, producers).
//! Here rather than in `metrics`, so the counters, which the partitions update, know nothing
//! of shards.

use shardlog_engine::DiskOp;

use crate::mesh::shard::Shard;
use crate::metrics::{with, PartitionSnapshot, ShardSnapshot, Stage};

/// Takes this shard's snapshot (call on the shard itself).
pub fn snapshot(shard: &Shard) -> ShardSnapshot {
    let mut partitions: Vec<PartitionSnapshot> = shard
        .partitions
        .borrow()
        .values()
        .map(|p| PartitionSnapshot {
            topic: p.topic.clone(),
            partition: p.index,
            bytes_in: p.stats.bytes_in.get(),
            records_in: p.stats.records_in.get(),
            batches_in: p.stats.batches_in.get(),
            bytes_out: p.stats.bytes_out.get(),
            records_out: p.stats.records_out.get(),
            log_start_offset: p.log_start_offset(),
            log_end_offset: p.log_end_offset(),
            high_watermark: p.high_watermark(),
            size_bytes: p.size_bytes(),
            cache_bytes: p.cached_bytes() as u64,
        })
        .collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let producer_ids = shard
        .partitions
        .borrow()
        .values()
        .map(|p| p.producers.borrow().len() as u64)
        .sum();
    let files = shard.segment_files.stats();
    let under_replicated = shard
        .partitions
        .borrow()
        .values()
        .filter(|p| p.under_replicated())
        .count() as u64;
    with(|m| ShardSnapshot {
        shard: shard.id,
        connections: shard.connections.get() as u64,
        connections_accepted: m.connections_accepted.get(),
        connections_refused: m.connections_refused.get(),
        accept_failures: m.accept_failures.get(),
        bad_requests: m.bad_requests.get(),
        request_memory_bytes: shard
            .request_memory_limit
            .saturating_sub(shard.request_memory.available()),
        request_memory_waits: m.request_memory_waits.get(),
        producer_ids,
        producer_ids_expired: m.producer_ids_expired.get(),
        producer_ids_evicted: m.producer_ids_evicted.get(),
        response_queue_bytes: m.response_queue_bytes.get(),
        response_queue_peak_bytes: m.response_queue_peak.get(),
        response_queue_waits: m.response_queue_waits.get(),
        requests: m
            .requests
            .iter()
            .enumerate()
            .filter(|(_, c)| c.get() > 0)
            .map(|(i, c)| (i as i16, c.get()))
            .collect(),
        latency: m
            .latency
            .borrow()
            .iter()
            .map(|(k, h)| (*k, h.snapshot()))
            .collect(),
        errors: m
            .errors
            .borrow()
            .iter()
            .map(|(&(a, c), &n)| (a, c, n))
            .collect(),
        stages: Stage::ALL
            .iter()
            .map(|&s| (s, m.stages[s as usize].snapshot()))
            .collect(),
        disk_ops: DiskOp::ALL
            .iter()
            .map(|&op| (op, m.disk_ops[op as usize].snapshot()))
            .collect(),
        cache_used_bytes: shard.cache_budget.used_bytes() as u64,
        cache_limit_bytes: shard.cache_budget.limit_bytes() as u64,
        segment_files_open: files.open as u64,
        segment_files_limit: files.limit as u64,
        segment_files_opened: files.opened,
        partitions_offline: shard.offline_count() as u64,
        under_replicated,
        isr_shrinks: m.isr_shrinks.get(),
        leaderships_gained: m.leaderships_gained.get(),
        isr_expands: m.isr_expands.get(),
        follower_lag: m
            .follower_lag
            .borrow()
            .iter()
            .map(|(&l, &lag)| (l, lag))
            .collect(),
        partitions,
    })
}

//! The data path on the owning shard: produce (with its acknowledgement wait), reads, long-poll
//! waits, ListOffsets, DeleteRecords, OffsetForLeaderEpoch and log sizes, for partitions this
//! shard owns. Reached through [`ShardReq`] (see `crate::dispatch`).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::{self, LocalBoxFuture};
use futures::FutureExt;

use crate::wire::errors;
use shardlog_coordinator::Untrusted;

use crate::mesh::messages::*;
use crate::mesh::shard::Shard;

impl Shard {
    /// (topic, partition, bytes on disk) of this shard's partitions: every one (`None`) or
    /// those of `topics` it holds, in (topic, partition) order.
    pub(crate) fn log_sizes(
        &self,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, u64)> {
        let parts = self.partitions.borrow();
        let mut out: Vec<(String, i32, u64)> = match topics {
            None => parts
                .values()
                .map(|p| (p.topic.clone(), p.index, p.size_bytes()))
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
                        Some((p.topic.clone(), p.index, p.size_bytes()))
                    })
                    .collect()
            }
        };
        out.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// A partition this shard has open and leads, or the error for a client request naming
    /// it (UNKNOWN_TOPIC_OR_PARTITION, KAFKA_STORAGE_ERROR, NOT_LEADER_OR_FOLLOWER).
    fn led_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Rc<crate::partition::Partition>, i16> {
        let p = self
            .partition(topic, partition)
            .ok_or_else(|| self.missing_partition_error(topic, partition))?;
        match p.client_refusal() {
            Some(code) => Err(code),
            None => Ok(p),
        }
    }

    pub(crate) fn start_produce(
        self: &Rc<Self>,
        acks: i16,
        parts: Vec<ProducePart>,
    ) -> LocalBoxFuture<'static, ShardResp> {
        let mut waits: Vec<LocalBoxFuture<'static, ProduceResult>> =
            Vec::with_capacity(parts.len());
        for part in parts {
            let Some(p) = self.partition(&part.topic, part.partition) else {
                let error = self.missing_partition_error(&part.topic, part.partition);
                tracing::debug!(topic = %Untrusted(&part.topic), partition = part.partition, error = errors::name(error), "produce to a partition that is not open");
                let failed = ProduceResult::failed(&part.topic, part.partition, error)
                    .with_leader_hint(self.leader_in_image(&part.topic, part.partition));
                waits.push(future::ready(failed).boxed_local());
                continue;
            };
            let Some(records) = part.records.filter(|r| !r.is_empty()) else {
                tracing::info!(topic = %part.topic, partition = part.partition, "produce without records: INVALID_RECORD");
                waits.push(
                    future::ready(ProduceResult::failed(
                        &part.topic,
                        part.partition,
                        errors::INVALID_RECORD,
                    ))
                    .boxed_local(),
                );
                continue;
            };
            let timeout = std::time::Duration::from_millis(part.timeout_ms.max(0) as u64);
            waits.push(p.produce_within(acks, records, timeout).boxed_local());
        }
        async move { ShardResp::Produce(future::join_all(waits).await) }.boxed_local()
    }

    pub(crate) async fn read(&self, parts: Vec<ReadPart>, max_bytes: usize) -> Vec<ReadOut> {
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
                if r.error == errors::NOT_LEADER_OR_FOLLOWER {
                    r.current_leader = self.leader_in_image(&part.topic, part.partition);
                }
                out.push(r);
                continue;
            };
            if let Some(f) = part.replica {
                // A follower: the replica core answers (up to the log end, not the HW).
                let budget = part.max_bytes.min(max_bytes.saturating_sub(total));
                let fetch = crate::partition::replication::ReplicaFetch {
                    replica: f.replica_id,
                    fetch_offset: part.offset,
                    current_leader_epoch: f.current_leader_epoch,
                    last_fetched_epoch: f.last_fetched_epoch,
                };
                let read_started = std::time::Instant::now();
                let r = p.serve_replica_fetch(fetch, budget.max(1)).await;
                crate::metrics::stage(crate::metrics::Stage::FetchRead, read_started.elapsed());
                total += r.bytes;
                out.push(r);
                continue;
            }
            if let Some(code) = p.client_refusal() {
                // Consumers read from the leader only (KIP-392's follower fetching is not
                // implemented); the answer names the leader (KIP-951).
                r.error = code;
                r.current_leader = Some(p.current_leader());
                out.push(r);
                continue;
            }
            r.high_watermark = p.high_watermark();
            r.log_start_offset = p.log_start_offset();
            let budget = part.max_bytes.min(max_bytes.saturating_sub(total));
            if budget > 0 || total == 0 {
                let read_started = std::time::Instant::now();
                let result = p.read(part.offset, budget, total == 0).await;
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

    pub(crate) async fn wait_data(&self, parts: Vec<WaitPart>, wait_ms: u64) {
        let started = std::time::Instant::now();
        self.wait_data_inner(parts, wait_ms).await;
        crate::metrics::stage(crate::metrics::Stage::FetchWait, started.elapsed());
    }

    pub(crate) async fn wait_data_inner(&self, parts: Vec<WaitPart>, wait_ms: u64) {
        let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let mut listeners = Vec::new();
            for w in &parts {
                match self.partition(&w.topic, w.partition) {
                    None => return,
                    Some(p) => {
                        let l = p.listen();
                        let end = if w.replica {
                            p.log_end_offset()
                        } else {
                            p.high_watermark()
                        };
                        if end > w.offset || !p.is_leader() {
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

    pub(crate) async fn list_offsets(&self, parts: Vec<(String, i32, i64)>) -> Vec<OffsetOut> {
        let mut out = Vec::with_capacity(parts.len());
        for (topic, partition, ts) in parts {
            let mut r = OffsetOut::new(&topic, partition, errors::NONE);
            match self.led_partition(&topic, partition) {
                Err(code) => r.error = code,
                Ok(p) => {
                    r.leader_epoch = p.leader_epoch.get();
                    let hw = p.high_watermark();
                    match ts {
                        -2 => r.offset = p.log_start_offset(),
                        -1 => r.offset = hw,
                        ts if ts >= 0 => match p.offset_for_timestamp(ts).await {
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

    pub(crate) async fn delete_records(&self, parts: Vec<(String, i32, i64)>) -> Vec<OffsetOut> {
        let mut out = Vec::with_capacity(parts.len());
        for (topic, partition, offset) in parts {
            let mut r = OffsetOut::new(&topic, partition, errors::NONE);
            match self.led_partition(&topic, partition) {
                Err(code) => r.error = code,
                Ok(p) => {
                    let hw = p.high_watermark();
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
                        match p.delete_records_before(target).await {
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

    pub(crate) fn epoch_end(&self, parts: Vec<(String, i32, i32)>) -> Vec<OffsetOut> {
        parts
            .into_iter()
            .map(|(topic, partition, epoch)| {
                let mut r = OffsetOut::new(&topic, partition, errors::NONE);
                match self.led_partition(&topic, partition) {
                    Err(code) => r.error = code,
                    Ok(p) => {
                        let current = p.leader_epoch.get();
                        if epoch > current {
                            r.error = errors::UNKNOWN_LEADER_EPOCH;
                        } else if epoch == current {
                            r.leader_epoch = current;
                            r.offset = p.log_end_offset();
                        } else if let Some((e, off)) = p.end_offset_for_epoch(epoch) {
                            r.leader_epoch = e;
                            r.offset = off;
                        }
                    }
                }
                r
            })
            .collect()
    }
}

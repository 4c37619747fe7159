//! Fetch: sessions, reads on the owning shards, the long poll, response limits and the
//! zero-copy response (`crate::wire::fetch`).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self};
use kafka_protocol::messages::*;

use crate::mesh::messages::{ReadOut, ReadPart, ReplicaFetchPart, ShardReq, ShardResp, WaitPart};
use crate::mesh::scatter;
use crate::mesh::shard::Shard;
use crate::wire::errors;
use crate::wire::fetch::{self, FetchTopicOut, SessionStep};

pub(crate) async fn fetch_api(
    shard: Rc<Shard>,
    v: i16,
    corr: i32,
    req: FetchRequest,
) -> Option<Vec<Bytes>> {
    if !valid_isolation_level(req.isolation_level) {
        return refuse_fetch(v, corr, &req);
    }
    let requested: Vec<(String, i32, i64, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.topic.0.to_string();
            t.partitions.iter().map(move |p| {
                (
                    name.clone(),
                    p.partition,
                    p.fetch_offset,
                    p.partition_max_bytes,
                )
            })
        })
        .collect();
    let forgotten: Vec<(String, i32)> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let name = t.topic.0.to_string();
            t.partitions.iter().map(move |p| (name.clone(), *p))
        })
        .collect();
    let (step, parts) = if v >= 7 {
        shard.fetch_sessions.borrow_mut().begin(
            req.session_id,
            req.session_epoch,
            requested,
            forgotten,
        )
    } else {
        (SessionStep::Full { session_id: 0 }, requested)
    };
    let session_id = match step {
        SessionStep::Error(code) => {
            tracing::info!(
                session = req.session_id,
                epoch = req.session_epoch,
                error = errors::name(code),
                "fetch session error"
            );
            crate::metrics::error(ApiKey::Fetch as i16, code);
            return fetch::encode_fetch_response(v, corr, code, 0, &[]).ok();
        }
        SessionStep::Full { session_id } | SessionStep::Incremental { session_id } => session_id,
    };
    // A follower broker's fetch (replica id >= 0; the body field up to v14, which covers every
    // version advertised): each partition goes through the replica core on its owner.
    let replica_id = req.replica_id.0;
    let replica_epochs: HashMap<(String, i32), (i32, i32)> = if replica_id >= 0 {
        req.topics
            .iter()
            .flat_map(|t| {
                let name = t.topic.0.to_string();
                t.partitions.iter().map(move |p| {
                    (
                        (name.clone(), p.partition),
                        (p.current_leader_epoch, p.last_fetched_epoch),
                    )
                })
            })
            .collect()
    } else {
        HashMap::new()
    };
    let max_bytes = fetch::response_limit(req.max_bytes, shard.cfg.fetch_max_bytes);
    let min_bytes = req.min_bytes.max(0) as usize;
    let wait_ms = (req.max_wait_ms.max(0) as u64).min(shard.cfg.fetch_max_wait_ms_cap);
    let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);

    let by_shard = scatter::split_by_owner(
        parts
            .iter()
            .map(|(topic, partition, offset, pmax)| ReadPart {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                max_bytes: (*pmax).max(0) as usize,
                replica: (replica_id >= 0).then(|| {
                    let (current_leader_epoch, last_fetched_epoch) = replica_epochs
                        .get(&(topic.clone(), *partition))
                        .copied()
                        .unwrap_or((-1, -1));
                    ReplicaFetchPart {
                        replica_id,
                        current_leader_epoch,
                        last_fetched_epoch,
                    }
                }),
            }),
        |p| shard.owner(&p.topic, p.partition),
    );
    let mut outs: Vec<ReadOut>;
    loop {
        let waits = scatter::send_each(&shard, by_shard.iter().map(|(t, ps)| (*t, ps)), |ps| {
            ShardReq::Read {
                parts: ps.clone(),
                max_bytes,
            }
        })
        .await;
        outs = scatter::join(waits, |r| match r {
            ShardResp::Read(rs) => Some(rs),
            _ => None,
        })
        .await;
        let total: usize = outs.iter().map(|o| o.bytes).sum();
        let any_error = outs
            .iter()
            .any(|o| o.error != errors::NONE || o.diverging_epoch.is_some());
        let now = std::time::Instant::now();
        if total >= min_bytes.max(1) || any_error || now >= deadline || by_shard.is_empty() {
            break;
        }
        // Long poll: wait until some shard sees its high watermark pass a fetch offset.
        let left = (deadline - now).as_millis() as u64;
        let waiters = scatter::send_each(&shard, by_shard.iter().map(|(t, ps)| (*t, ps)), |ps| {
            ShardReq::WaitData {
                parts: ps
                    .iter()
                    .map(|p| WaitPart {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        offset: p.offset,
                        replica: p.replica.is_some(),
                    })
                    .collect(),
                wait_ms: left,
            }
        })
        .await;
        let _ = future::select_all(waiters).await;
        if shard
            .global
            .shutdown
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            break;
        }
    }
    // Request order, then the response and partition limits in that order (each shard read
    // within the whole limit on its own).
    let rank: HashMap<(&str, i32), (usize, usize)> = parts
        .iter()
        .enumerate()
        .map(|(i, (t, p, _, pmax))| ((t.as_str(), *p), (i, (*pmax).max(0) as usize)))
        .collect();
    outs.sort_by_cached_key(|o| {
        rank.get(&(o.topic.as_str(), o.partition))
            .map_or(usize::MAX, |r| r.0)
    });
    fetch::apply_limits(
        &mut outs,
        |o| {
            rank.get(&(o.topic.as_str(), o.partition))
                .map_or(0, |r| r.1)
        },
        max_bytes,
    );
    if session_id != 0 {
        shard.fetch_sessions.borrow_mut().finish(&step, &mut outs);
    }
    // Group by topic in request order.
    let mut topics: Vec<FetchTopicOut> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for o in outs {
        crate::metrics::error(ApiKey::Fetch as i16, o.error);
        let i = *index.entry(o.topic.clone()).or_insert_with(|| {
            topics.push(FetchTopicOut {
                name: o.topic.clone(),
                partitions: Vec::new(),
            });
            topics.len() - 1
        });
        topics[i].partitions.push(o);
    }
    match fetch::encode_fetch_response(v, corr, errors::NONE, session_id, &topics) {
        Ok(chunks) => Some(chunks),
        Err(e) => {
            // Only a request naming millions of partitions gets here (the records are limited):
            // answer a top-level error (v7+) or an empty response rather than a broken size.
            let partitions: usize = topics.iter().map(|t| t.partitions.len()).sum();
            tracing::warn!(error = %e, partitions, "fetch response too large: INVALID_REQUEST");
            fetch::encode_fetch_response(v, corr, errors::INVALID_REQUEST, 0, &[]).ok()
        }
    }
}

/// Kafka's isolation levels: 0 READ_UNCOMMITTED, 1 READ_COMMITTED (the same here: without
/// transactions the last stable offset is the high watermark).
pub(crate) fn valid_isolation_level(level: i8) -> bool {
    matches!(level, 0 | 1)
}

/// Answers a Fetch whose request-level fields are invalid: INVALID_REQUEST at the top (v7+)
/// and on every partition asked for, nothing read, no session touched.
pub(crate) fn refuse_fetch(v: i16, corr: i32, req: &FetchRequest) -> Option<Vec<Bytes>> {
    tracing::info!(
        isolation_level = req.isolation_level,
        "fetch with an unknown isolation level: INVALID_REQUEST"
    );
    crate::metrics::error(ApiKey::Fetch as i16, errors::INVALID_REQUEST);
    let topics: Vec<FetchTopicOut> = req
        .topics
        .iter()
        .map(|t| FetchTopicOut {
            name: t.topic.0.to_string(),
            partitions: t
                .partitions
                .iter()
                .map(|p| ReadOut {
                    topic: t.topic.0.to_string(),
                    partition: p.partition,
                    error: errors::INVALID_REQUEST,
                    high_watermark: -1,
                    log_start_offset: -1,
                    ..ReadOut::default()
                })
                .collect(),
        })
        .collect();
    fetch::encode_fetch_response(v, corr, errors::INVALID_REQUEST, 0, &topics)
        .or_else(|_| fetch::encode_fetch_response(v, corr, errors::INVALID_REQUEST, 0, &[]))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kafkas_two_isolation_levels_are_valid() {
        assert!(valid_isolation_level(0));
        assert!(valid_isolation_level(1));
        for level in [-1, 2, i8::MAX, i8::MIN] {
            assert!(!valid_isolation_level(level), "{level}");
        }
    }
}

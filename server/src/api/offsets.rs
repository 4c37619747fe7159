//! The offset APIs answered by the partitions' owners: ListOffsets, DeleteRecords and
//! OffsetForLeaderEpoch.

use std::rc::Rc;

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::*;

use crate::groups::offsets_log::OFFSETS_TOPIC;
use crate::mesh::messages::{OffsetOut, ShardReq, ShardResp};
use crate::mesh::scatter;
use crate::mesh::shard::Shard;
use crate::wire::errors;

use crate::api::common::*;

use crate::api::fetch::valid_isolation_level;

/// Splits (topic, partition, value) parts by owner, places them, returns the joined answers.
pub(crate) async fn offsets_call(
    shard: &Rc<Shard>,
    parts: Vec<(String, i32, i64)>,
    make: fn(Vec<(String, i32, i64)>) -> ShardReq,
) -> LocalBoxFuture<'static, scatter::FirstPlace<(String, i32), OffsetOut>> {
    let by_owner = scatter::split_by_owner(parts, |p| shard.owner(&p.0, p.1));
    let waits = scatter::send_each(shard, by_owner, make).await;
    async move {
        let answers = scatter::join(waits, |r| match r {
            ShardResp::Offsets(rs) => Some(rs),
            _ => None,
        })
        .await;
        scatter::first_place_by_key(answers, |o| (o.topic.clone(), o.partition))
    }
    .boxed_local()
}

/// Every topic of `order` with its partitions' answers in request order: each from `got`
/// (a partition named twice gets its answer at its first place, see
/// [`scatter::first_place_by_key`]), else UNKNOWN_SERVER_ERROR.
pub(crate) fn answers_in_order(
    order: Vec<(String, Vec<i32>)>,
    got: &mut scatter::FirstPlace<(String, i32), OffsetOut>,
) -> Vec<(String, Vec<(i32, OffsetOut)>)> {
    order
        .into_iter()
        .map(|(topic, ps)| {
            let answers = ps
                .into_iter()
                .map(|p| {
                    let o = got
                        .take(&(topic.clone(), p))
                        .unwrap_or_else(|| missing(&topic, p));
                    (p, o)
                })
                .collect();
            (topic, answers)
        })
        .collect()
}

/// Every topic of a request with its partitions, in request order.
pub(crate) type RequestOrder = Vec<(String, Vec<i32>)>;
/// (topic, partition, value) parts to send to their owners.
pub(crate) type RequestParts = Vec<(String, i32, i64)>;

/// The layout of a per-partition request: every topic with its partitions in request order
/// (for [`answers_in_order`]), and the flat (topic, partition, value) parts to send to their
/// owners, taken only from the topics `send` keeps.
pub(crate) fn request_parts<T, P>(
    topics: &[T],
    name: impl Fn(&T) -> &str,
    partitions: impl Fn(&T) -> &[P],
    value: impl Fn(&P) -> (i32, i64),
    send: impl Fn(&str) -> bool,
) -> (RequestOrder, RequestParts) {
    let order = topics
        .iter()
        .map(|t| {
            let ps = partitions(t).iter().map(|p| value(p).0).collect();
            (name(t).to_string(), ps)
        })
        .collect();
    let parts = topics
        .iter()
        .filter(|t| send(name(t)))
        .flat_map(|t| {
            partitions(t).iter().map(|p| {
                let (partition, v) = value(p);
                (name(t).to_string(), partition, v)
            })
        })
        .collect();
    (order, parts)
}

pub(crate) fn missing(topic: &str, partition: i32) -> OffsetOut {
    OffsetOut::new(topic, partition, errors::UNKNOWN_SERVER_ERROR)
}

pub(crate) async fn list_offsets(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: ListOffsetsRequest,
) -> Pending {
    // v2+ carries an isolation level; anything but 0 or 1 refuses every partition.
    let bad_isolation = v >= 2 && !valid_isolation_level(req.isolation_level);
    if bad_isolation {
        tracing::info!(
            isolation_level = req.isolation_level,
            "list offsets with an unknown isolation level: INVALID_REQUEST"
        );
    }
    let (order, parts) = request_parts(
        &req.topics,
        |t| t.name.0.as_str(),
        |t| &t.partitions,
        |p| (p.partition_index, p.timestamp),
        |_| !bad_isolation,
    );
    let fut = offsets_call(shard, parts, |parts| ShardReq::ListOffsets { parts }).await;
    async move {
        let mut got = fut.await;
        if bad_isolation {
            for (topic, ps) in &order {
                for &p in ps {
                    got.set(
                        (topic.clone(), p),
                        OffsetOut::new(topic, p, errors::INVALID_REQUEST),
                    );
                }
            }
        }
        let mut r = ListOffsetsResponse::default();
        r.topics = answers_in_order(order, &mut got)
            .into_iter()
            .map(|(topic, ps)| {
                let mut tr = list_offsets_response::ListOffsetsTopicResponse::default();
                tr.name = tname(&topic);
                tr.partitions = ps
                    .into_iter()
                    .map(|(p, o)| {
                        let mut pr = list_offsets_response::ListOffsetsPartitionResponse::default();
                        pr.partition_index = p;
                        pr.error_code = o.error;
                        pr.offset = o.offset;
                        pr.timestamp = o.timestamp;
                        if v >= 4 {
                            pr.leader_epoch = o.leader_epoch;
                        }
                        pr
                    })
                    .collect();
                tr
            })
            .collect();
        respond(ApiKey::ListOffsets, v, corr, &r)
    }
    .boxed_local()
}

pub(crate) async fn delete_records(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: DeleteRecordsRequest,
) -> Pending {
    // The internal log's start is moved only by its snapshots.
    let (order, parts) = request_parts(
        &req.topics,
        |t| t.name.0.as_str(),
        |t| &t.partitions,
        |p| (p.partition_index, p.offset),
        |name| name != OFFSETS_TOPIC,
    );
    let fut = offsets_call(shard, parts, |parts| ShardReq::DeleteRecords { parts }).await;
    async move {
        let mut got = fut.await;
        let mut r = DeleteRecordsResponse::default();
        r.topics = answers_in_order(order, &mut got)
            .into_iter()
            .map(|(topic, ps)| {
                let mut tr = delete_records_response::DeleteRecordsTopicResult::default();
                tr.name = tname(&topic);
                tr.partitions = ps
                    .into_iter()
                    .map(|(p, o)| {
                        let mut pr =
                            delete_records_response::DeleteRecordsPartitionResult::default();
                        pr.partition_index = p;
                        pr.error_code = o.error;
                        pr.low_watermark = o.offset;
                        pr
                    })
                    .collect();
                tr
            })
            .collect();
        respond(ApiKey::DeleteRecords, v, corr, &r)
    }
    .boxed_local()
}

pub(crate) async fn epoch_end(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: OffsetForLeaderEpochRequest,
) -> Pending {
    let (order, parts) = request_parts(
        &req.topics,
        |t| t.topic.0.as_str(),
        |t| &t.partitions,
        |p| (p.partition, i64::from(p.leader_epoch)),
        |_| true,
    );
    let fut = offsets_call(shard, parts, |parts| ShardReq::EpochEnd {
        parts: parts
            .into_iter()
            .map(|(t, p, e)| {
                (
                    t,
                    p,
                    e.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                )
            })
            .collect(),
    })
    .await;
    async move {
        let mut got = fut.await;
        let mut r = OffsetForLeaderEpochResponse::default();
        r.topics = answers_in_order(order, &mut got)
            .into_iter()
            .map(|(topic, ps)| {
                let mut tr =
                    offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default();
                tr.topic = tname(&topic);
                tr.partitions = ps
                    .into_iter()
                    .map(|(p, o)| {
                        let mut pr = offset_for_leader_epoch_response::EpochEndOffset::default();
                        pr.partition = p;
                        pr.error_code = o.error;
                        pr.leader_epoch = o.leader_epoch;
                        pr.end_offset = o.offset;
                        pr
                    })
                    .collect();
                tr
            })
            .collect();
        respond(ApiKey::OffsetForLeaderEpoch, v, corr, &r)
    }
    .boxed_local()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(topic: &str, partition: i32, offset: i64) -> OffsetOut {
        let mut o = OffsetOut::new(topic, partition, errors::NONE);
        o.offset = offset;
        o
    }

    #[test]
    fn request_parts_keep_every_topic_in_order_and_send_only_the_kept_ones() {
        let topics = [
            ("b", vec![(2, 20), (0, 0)]),
            (OFFSETS_TOPIC, vec![(1, 5)]),
            ("a", vec![(0, 7), (0, 8)]),
        ];
        let (order, parts) = request_parts(
            &topics,
            |t| t.0,
            |t| &t.1,
            |&(p, v)| (p, v),
            |name| name != OFFSETS_TOPIC,
        );
        let names: Vec<_> = order
            .iter()
            .map(|(t, ps)| (t.as_str(), ps.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("b", vec![2, 0]),
                (OFFSETS_TOPIC, vec![1]),
                ("a", vec![0, 0])
            ]
        );
        let sent: Vec<_> = parts.iter().map(|(t, p, v)| (t.as_str(), *p, *v)).collect();
        assert_eq!(
            sent,
            vec![("b", 2, 20), ("b", 0, 0), ("a", 0, 7), ("a", 0, 8)]
        );
        let (order, parts) = request_parts(&topics, |t| t.0, |t| &t.1, |&(p, v)| (p, v), |_| false);
        assert_eq!(order.len(), 3);
        assert!(parts.is_empty());
    }

    #[test]
    fn answers_follow_request_order_and_gaps_are_unknown_server_errors() {
        // Answers arrive grouped by shard, not in request order; "b"-1 got none.
        let answers = vec![answer("b", 0, 7), answer("a", 1, 5), answer("a", 0, 3)];
        let mut got = scatter::first_place_by_key(answers, |o| (o.topic.clone(), o.partition));
        let order = vec![("a".to_string(), vec![0, 1]), ("b".to_string(), vec![1, 0])];
        let out = answers_in_order(order, &mut got);
        let flat: Vec<(&str, i32, i16, i64)> = out
            .iter()
            .flat_map(|(t, ps)| {
                ps.iter()
                    .map(move |(p, o)| (t.as_str(), *p, o.error, o.offset))
            })
            .collect();
        assert_eq!(
            flat,
            vec![
                ("a", 0, errors::NONE, 3),
                ("a", 1, errors::NONE, 5),
                ("b", 1, errors::UNKNOWN_SERVER_ERROR, -1),
                ("b", 0, errors::NONE, 7),
            ]
        );
        assert!(answers_in_order(Vec::new(), &mut got).is_empty());
    }

    #[test]
    fn a_partition_named_twice_is_answered_at_its_first_place_only() {
        let answers = vec![answer("t", 0, 1), answer("t", 0, 2)];
        let mut got = scatter::first_place_by_key(answers, |o| (o.topic.clone(), o.partition));
        let out = answers_in_order(vec![("t".to_string(), vec![0, 0])], &mut got);
        let ps = &out[0].1;
        assert_eq!((ps[0].1.error, ps[0].1.offset), (errors::NONE, 2));
        assert_eq!(ps[1].1.error, errors::UNKNOWN_SERVER_ERROR);
    }
}

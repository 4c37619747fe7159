//! OffsetCommit, OffsetFetch and OffsetDelete.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures::future::{self};
use futures::FutureExt;
use kafka_protocol::messages::*;
use shardlog_coordinator as coord;
use shardlog_coordinator::{Request, Response, Untrusted};

use crate::api::common::{respond, s, Pending};
use crate::mesh::shard::Shard;
use crate::wire::errors;

use crate::api::groups::place::*;

// ---- offsets ----------------------------------------------------------------------------

/// Whether clients may commit offsets for `topic` (the internal topic is refused).
pub(crate) fn committable(topic: &str) -> bool {
    topic != crate::groups::offsets_log::OFFSETS_TOPIC
}

/// The error a commit of `(topic, partition)` gets before it reaches the coordinator, if any:
/// the internal topic is refused, and, as in Kafka, a topic that does not exist or a
/// partition index outside it answers UNKNOWN_TOPIC_OR_PARTITION (so a client committing to a
/// deleted topic or a mistyped name learns it instead of storing offsets nobody reads).
pub(crate) fn commit_refusal(shard: &Shard, topic: &str, partition: i32) -> Option<i16> {
    if !committable(topic) {
        return Some(errors::INVALID_TOPIC_EXCEPTION);
    }
    let partitions = shard
        .meta
        .borrow()
        .topics
        .get(topic)
        .map(|t| t.partitions.len());
    match partitions {
        Some(n) if usize::try_from(partition).is_ok_and(|p| p < n) => None,
        _ => Some(errors::UNKNOWN_TOPIC_OR_PARTITION),
    }
}

/// A partition of an OffsetCommit and the error it gets before the coordinator, if any.
type CommitCheck = (i32, Option<i16>);

pub async fn offset_commit(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: OffsetCommitRequest,
) -> Pending {
    let group_id = req.group_id.0.to_string();
    // Each partition of the request in order, with the error it gets without the coordinator.
    let order: Vec<(String, Vec<CommitCheck>)> = req
        .topics
        .iter()
        .map(|t| {
            let topic = t.name.0.as_str();
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.partition_index,
                        commit_refusal(shard, topic, p.partition_index),
                    )
                })
                .collect();
            (topic.to_string(), parts)
        })
        .collect();
    let refused: Vec<(&str, i32, i16)> = order
        .iter()
        .flat_map(|(t, ps)| ps.iter().filter_map(|&(p, e)| Some((t.as_str(), p, e?))))
        .collect();
    if let Some(&(topic, partition, code)) = refused.first() {
        tracing::info!(
            group = %Untrusted(&group_id),
            topic = %Untrusted(topic),
            partition,
            error = code,
            refused = refused.len(),
            "offset commit for partitions that cannot be committed"
        );
    }
    let topics: Vec<coord::TopicCommit> = req
        .topics
        .iter()
        .zip(&order)
        .filter_map(|(t, (_, refusals))| {
            let partitions: Vec<coord::PartitionCommit> = t
                .partitions
                .iter()
                .zip(refusals)
                .filter(|(_, (_, refusal))| refusal.is_none())
                .map(|(p, _)| coord::PartitionCommit {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if v >= 6 { p.committed_leader_epoch } else { -1 },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
                .collect();
            (!partitions.is_empty()).then(|| coord::TopicCommit {
                topic: t.name.0.to_string(),
                partitions,
            })
        })
        .collect();
    // Nothing left to commit: answered here, as Kafka does, without asking the coordinator.
    let answer = if topics.is_empty() {
        None
    } else {
        let r = coord::OffsetCommitRequest {
            group_id: group_id.clone(),
            generation_id: req.generation_id_or_member_epoch,
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.as_ref().map(|x| x.to_string()),
            topics,
        };
        Some(place(shard, &group_id, Request::OffsetCommit(r)).await)
    };
    async move {
        let mut got: BTreeMap<(String, i32), i16> = BTreeMap::new();
        if let Some(answer) = answer {
            let Response::OffsetCommit(x) = answer.await else {
                return None;
            };
            for t in x.topics {
                for (p, e) in t.partitions {
                    got.insert((t.topic.clone(), p), e.code());
                }
            }
        }
        let mut out = OffsetCommitResponse::default();
        out.topics = order
            .into_iter()
            .map(|(topic, parts)| {
                let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
                tr.partitions = parts
                    .into_iter()
                    .map(|(p, refusal)| {
                        let mut pr =
                            offset_commit_response::OffsetCommitResponsePartition::default();
                        pr.partition_index = p;
                        pr.error_code = refusal.unwrap_or_else(|| {
                            got.get(&(topic.clone(), p))
                                .copied()
                                .unwrap_or(errors::UNKNOWN_SERVER_ERROR)
                        });
                        pr
                    })
                    .collect();
                tr.name = TopicName(s(&topic));
                tr
            })
            .collect();
        respond(ApiKey::OffsetCommit, v, corr, &out)
    }
    .boxed_local()
}

pub(crate) fn fetch_topics(
    topics: Option<impl Iterator<Item = (String, Vec<i32>)>>,
) -> Option<Vec<coord::TopicPartitions>> {
    topics.map(|ts| {
        ts.map(|(topic, partitions)| coord::TopicPartitions { topic, partitions })
            .collect()
    })
}

pub async fn offset_fetch(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: OffsetFetchRequest,
) -> Pending {
    if v >= 8 {
        let ids: Vec<String> = req
            .groups
            .iter()
            .map(|g| g.group_id.0.to_string())
            .collect();
        let mut answers = Vec::with_capacity(ids.len());
        for g in &req.groups {
            let id = g.group_id.0.to_string();
            let r = coord::OffsetFetchRequest {
                group_id: id.clone(),
                topics: fetch_topics(g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                })),
            };
            answers.push(place(shard, &id, Request::OffsetFetch(r)).await);
        }
        return async move {
            let mut out = OffsetFetchResponse::default();
            for (id, a) in ids.into_iter().zip(future::join_all(answers).await) {
                let Response::OffsetFetch(x) = a else {
                    continue;
                };
                let mut g = offset_fetch_response::OffsetFetchResponseGroup::default();
                g.group_id = GroupId(s(&id));
                g.error_code = x.error.code();
                g.topics = x
                    .topics
                    .iter()
                    .map(|t| {
                        let mut tr = offset_fetch_response::OffsetFetchResponseTopics::default();
                        tr.name = TopicName(s(&t.topic));
                        tr.partitions = t
                            .partitions
                            .iter()
                            .map(|p| {
                                let mut pr =
                                    offset_fetch_response::OffsetFetchResponsePartitions::default();
                                pr.partition_index = p.partition;
                                pr.committed_offset = p.committed_offset;
                                pr.committed_leader_epoch = p.leader_epoch;
                                pr.metadata = Some(s(&p.metadata));
                                pr.error_code = p.error.code();
                                pr
                            })
                            .collect();
                        tr
                    })
                    .collect();
                out.groups.push(g);
            }
            respond(ApiKey::OffsetFetch, v, corr, &out)
        }
        .boxed_local();
    }
    let id = req.group_id.0.to_string();
    let r = coord::OffsetFetchRequest {
        group_id: id.clone(),
        // v0/v1 cannot ask for "all topics"; an empty list there means none.
        topics: fetch_topics(req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
        })),
    };
    let answer = place(shard, &id, Request::OffsetFetch(r)).await;
    async move {
        let Response::OffsetFetch(x) = answer.await else {
            return None;
        };
        let mut out = OffsetFetchResponse::default();
        if v >= 2 {
            out.error_code = x.error.code();
        }
        out.topics = x
            .topics
            .iter()
            .map(|t| {
                let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
                tr.name = TopicName(s(&t.topic));
                tr.partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut pr = offset_fetch_response::OffsetFetchResponsePartition::default();
                        pr.partition_index = p.partition;
                        pr.committed_offset = p.committed_offset;
                        if v >= 5 {
                            pr.committed_leader_epoch = p.leader_epoch;
                        }
                        pr.metadata = Some(s(&p.metadata));
                        // Before v2 a group-level error is reported on every partition.
                        pr.error_code = if v < 2 && !x.error.is_ok() {
                            x.error.code()
                        } else {
                            p.error.code()
                        };
                        pr
                    })
                    .collect();
                tr
            })
            .collect();
        respond(ApiKey::OffsetFetch, v, corr, &out)
    }
    .boxed_local()
}

pub async fn offset_delete(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: OffsetDeleteRequest,
) -> Pending {
    let id = req.group_id.0.to_string();
    let r = coord::OffsetDeleteRequest {
        group_id: id.clone(),
        topics: req
            .topics
            .iter()
            .map(|t| coord::TopicPartitions {
                topic: t.name.0.to_string(),
                partitions: t.partitions.iter().map(|p| p.partition_index).collect(),
            })
            .collect(),
    };
    let answer = place(shard, &id, Request::OffsetDelete(r)).await;
    async move {
        let Response::OffsetDelete(x) = answer.await else {
            return None;
        };
        let mut out = OffsetDeleteResponse::default();
        out.error_code = x.error.code();
        out.topics = x
            .topics
            .iter()
            .map(|t| {
                let mut tr = offset_delete_response::OffsetDeleteResponseTopic::default();
                tr.name = TopicName(s(&t.topic));
                tr.partitions = t
                    .partitions
                    .iter()
                    .map(|(p, e)| {
                        let mut pr =
                            offset_delete_response::OffsetDeleteResponsePartition::default();
                        pr.partition_index = *p;
                        pr.error_code = e.code();
                        pr
                    })
                    .collect();
                tr
            })
            .collect();
        respond(ApiKey::OffsetDelete, v, corr, &out)
    }
    .boxed_local()
}

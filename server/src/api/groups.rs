//! The consumer-group Kafka APIs: wire versions in, coordinator requests out, and back.
//!
//! This module maps each wire version onto the coordinator's own request types (LeaveGroup
//! v0–v2 is a one-member batch, JoinGroup v0's rebalance timeout is its session timeout,
//! an OffsetFetch v8 naming several groups is split per group) and routes every group request
//! to the shard that owns the group ([`crate::groups::offsets_log::group_shard`]). The placing phase runs in
//! request order on the connection ([`Shard::send`] returns once the request reached the
//! owner's FIFO channel), so two requests of one connection reach a group's coordinator in the
//! order they were sent; their answers are joined back and written in request order by the
//! connection. A JoinGroup/SyncGroup parked by the coordinator delays only the responses after
//! it on the same connection, as Kafka's in-order rule requires.
//!
//! APIs that name several groups (DescribeGroups, DeleteGroups, OffsetFetch v8) are split by
//! owning shard, one shard request per shard, and the answers are put back in the request's
//! order. ListGroups asks every shard and merges.
//!
//! Version ranges (advertised in ApiVersions, `protocol.rs`): FindCoordinator 0–4 (v4 batched
//! keys), JoinGroup 0–9, SyncGroup 0–5, Heartbeat 0–4, LeaveGroup 0–5, OffsetCommit 2–8,
//! OffsetFetch 1–8, ListGroups 0–5, DescribeGroups 0–5, DeleteGroups 0–2, OffsetDelete 0.
//! That covers librdkafka ≥ 2.0, the Java client 3.x (classic protocol) and kafka-python.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use bytes::Bytes;
use futures::future::{self, LocalBoxFuture};
use futures::FutureExt;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use shardlog_coordinator as coord;
use shardlog_coordinator::{error_response, ErrorCode, Request, Response, Untrusted};

use crate::api::common::Pending;
use crate::groups::offsets_log::group_shard;
use crate::mesh::messages::{ShardReq, ShardResp};
use crate::mesh::scatter;
use crate::mesh::shard::Shard;
use crate::wire::errors;
use crate::wire::protocol;

/// FindCoordinator key type of a transactional id (we have no transaction coordinator).
const KEY_TYPE_TRANSACTION: i8 = 1;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn opt_s(x: &Option<String>) -> Option<StrBytes> {
    x.as_deref().map(s)
}

fn respond<M: kafka_protocol::protocol::Encodable>(
    api_key: ApiKey,
    v: i16,
    corr: i32,
    body: &M,
) -> Option<Vec<Bytes>> {
    match protocol::encode_response(api_key, v, corr, body) {
        Ok(b) => Some(vec![b]),
        Err(e) => {
            tracing::error!(?api_key, version = v, error = %e, "cannot encode group response");
            None
        }
    }
}

fn client_id(header: &RequestHeader) -> String {
    header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default()
}

/// A member's client host as Kafka reports it: `/` and the address, IPv6 written out in full
/// (`/0:0:0:0:0:0:0:1`) and an IPv4-mapped IPv6 address as IPv4, like Java's
/// `InetAddress.toString()` for an address without a host name.
pub fn client_host(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(a) => format!("/{a}"),
        IpAddr::V6(a) => {
            let groups: Vec<String> = a.segments().iter().map(|g| format!("{g:x}")).collect();
            format!("/{}", groups.join(":"))
        }
    }
}

/// Places `req` on the shard owning `group_id`; the future yields the coordinator's answer
/// (COORDINATOR_NOT_AVAILABLE if the shard is gone).
pub async fn place(
    shard: &Rc<Shard>,
    group_id: &str,
    req: Request,
) -> LocalBoxFuture<'static, Response> {
    let fallback = error_response(&req, ErrorCode::CoordinatorNotAvailable);
    let target = shard.groups.shard_of(group_id, shard.shards);
    let answer = shard.send(target, ShardReq::Group(req)).await;
    async move {
        match answer.await {
            ShardResp::Group(r) => r,
            _ => fallback,
        }
    }
    .boxed_local()
}

/// Splits `ids` by owning shard: (shard, positions in `ids`), shards ascending.
pub fn split_by_shard(
    ids: &[String],
    partitions: usize,
    shards: usize,
) -> Vec<(usize, Vec<usize>)> {
    scatter::split_by_owner(0..ids.len(), |&i| group_shard(&ids[i], partitions, shards))
}

// ---- FindCoordinator ----------------------------------------------------------------------

pub fn find_coordinator(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: FindCoordinatorRequest,
) -> Pending {
    let (host, port) = shard.cfg.advertised_host_port();
    let node = shard.cfg.node_id;
    let answer = |key_type: i8| -> (i16, Option<&'static str>) {
        if key_type == KEY_TYPE_TRANSACTION {
            (
                ErrorCode::CoordinatorNotAvailable.code(),
                Some("transactions are not supported"),
            )
        } else if key_type != 0 {
            (errors::INVALID_REQUEST, Some("unknown key type"))
        } else {
            (errors::NONE, None)
        }
    };
    let mut r = FindCoordinatorResponse::default();
    if v >= 4 {
        r.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg) = answer(req.key_type);
                let mut c = find_coordinator_response::Coordinator::default();
                c.key = k.clone();
                c.error_code = code;
                c.error_message = msg.map(s);
                if code == errors::NONE {
                    c.node_id = BrokerId(node);
                    c.host = s(&host);
                    c.port = port;
                } else {
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                }
                c
            })
            .collect();
    } else {
        let (code, msg) = answer(req.key_type);
        r.error_code = code;
        if v >= 1 {
            r.error_message = msg.map(s);
        }
        if code == errors::NONE {
            r.node_id = BrokerId(node);
            r.host = s(&host);
            r.port = port;
        } else {
            r.node_id = BrokerId(-1);
            r.port = -1;
        }
    }
    future::ready(respond(ApiKey::FindCoordinator, v, corr, &r)).boxed_local()
}

// ---- JoinGroup / SyncGroup / Heartbeat / LeaveGroup ---------------------------------------

pub async fn join_group(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    peer: SocketAddr,
    v: i16,
    corr: i32,
    req: JoinGroupRequest,
) -> Pending {
    let group_id = req.group_id.0.to_string();
    let r = coord::JoinGroupRequest {
        group_id: group_id.clone(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|x| x.to_string()),
        client_id: client_id(header),
        client_host: client_host(peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if v == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| coord::Protocol {
                name: p.name.to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
        require_known_member_id: v >= 4,
    };
    let answer = place(shard, &group_id, Request::JoinGroup(r)).await;
    async move {
        let Response::JoinGroup(j) = answer.await else {
            return None;
        };
        let mut out = JoinGroupResponse::default();
        out.error_code = j.error.code();
        out.generation_id = j.generation_id;
        if v >= 7 {
            out.protocol_type = opt_s(&j.protocol_type);
            out.protocol_name = opt_s(&j.protocol_name);
        } else {
            // Non-nullable before v7.
            out.protocol_name = Some(s(j.protocol_name.as_deref().unwrap_or("")));
        }
        out.leader = s(&j.leader);
        out.skip_assignment = v >= 9 && j.skip_assignment;
        out.member_id = s(&j.member_id);
        out.members = j
            .members
            .iter()
            .map(|m| {
                let mut x = join_group_response::JoinGroupResponseMember::default();
                x.member_id = s(&m.member_id);
                if v >= 5 {
                    x.group_instance_id = opt_s(&m.group_instance_id);
                }
                x.metadata = m.metadata.clone();
                x
            })
            .collect();
        respond(ApiKey::JoinGroup, v, corr, &out)
    }
    .boxed_local()
}

pub async fn sync_group(shard: &Rc<Shard>, v: i16, corr: i32, req: SyncGroupRequest) -> Pending {
    let group_id = req.group_id.0.to_string();
    let r = coord::SyncGroupRequest {
        group_id: group_id.clone(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|x| x.to_string()),
        protocol_type: req.protocol_type.as_ref().map(|x| x.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|x| x.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let answer = place(shard, &group_id, Request::SyncGroup(r)).await;
    async move {
        let Response::SyncGroup(x) = answer.await else {
            return None;
        };
        let mut out = SyncGroupResponse::default();
        out.error_code = x.error.code();
        if v >= 5 {
            out.protocol_type = opt_s(&x.protocol_type);
            out.protocol_name = opt_s(&x.protocol_name);
        }
        out.assignment = x.assignment;
        respond(ApiKey::SyncGroup, v, corr, &out)
    }
    .boxed_local()
}

pub async fn heartbeat(shard: &Rc<Shard>, v: i16, corr: i32, req: HeartbeatRequest) -> Pending {
    let group_id = req.group_id.0.to_string();
    let r = coord::HeartbeatRequest {
        group_id: group_id.clone(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|x| x.to_string()),
    };
    let answer = place(shard, &group_id, Request::Heartbeat(r)).await;
    async move {
        let Response::Heartbeat(e) = answer.await else {
            return None;
        };
        let mut out = HeartbeatResponse::default();
        out.error_code = e.code();
        respond(ApiKey::Heartbeat, v, corr, &out)
    }
    .boxed_local()
}

pub async fn leave_group(shard: &Rc<Shard>, v: i16, corr: i32, req: LeaveGroupRequest) -> Pending {
    let group_id = req.group_id.0.to_string();
    let members = if v <= 2 {
        vec![coord::LeavingMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        }]
    } else {
        req.members
            .iter()
            .map(|m| coord::LeavingMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|x| x.to_string()),
            })
            .collect()
    };
    let r = coord::LeaveGroupRequest {
        group_id: group_id.clone(),
        members,
    };
    let answer = place(shard, &group_id, Request::LeaveGroup(r)).await;
    async move {
        let Response::LeaveGroup(x) = answer.await else {
            return None;
        };
        let mut out = LeaveGroupResponse::default();
        if v <= 2 {
            // One member, no member list on the wire: its error is the answer.
            out.error_code = if x.error.is_ok() {
                x.members.first().map_or(0, |m| m.error.code())
            } else {
                x.error.code()
            };
        } else {
            out.error_code = x.error.code();
            out.members = x
                .members
                .iter()
                .map(|m| {
                    let mut r = leave_group_response::MemberResponse::default();
                    r.member_id = s(&m.member_id);
                    r.group_instance_id = opt_s(&m.group_instance_id);
                    r.error_code = m.error.code();
                    r
                })
                .collect();
        }
        respond(ApiKey::LeaveGroup, v, corr, &out)
    }
    .boxed_local()
}

// ---- offsets ----------------------------------------------------------------------------

/// Whether clients may commit offsets for `topic` (the internal topic is refused).
fn committable(topic: &str) -> bool {
    topic != crate::groups::offsets_log::OFFSETS_TOPIC
}

/// The error a commit of `(topic, partition)` gets before it reaches the coordinator, if any:
/// the internal topic is refused, and, as in Kafka, a topic that does not exist or a
/// partition index outside it answers UNKNOWN_TOPIC_OR_PARTITION (so a client committing to a
/// deleted topic or a mistyped name learns it instead of storing offsets nobody reads).
fn commit_refusal(shard: &Shard, topic: &str, partition: i32) -> Option<i16> {
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

fn fetch_topics(
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

// ---- group admin ----------------------------------------------------------------------

pub async fn list_groups(shard: &Rc<Shard>, v: i16, corr: i32, req: ListGroupsRequest) -> Pending {
    let mut bad_state = false;
    let states_filter: Vec<coord::GroupState> = req
        .states_filter
        .iter()
        .filter_map(|x| {
            let st = coord::GroupState::parse(x.as_str());
            bad_state |= st.is_none();
            st
        })
        .collect();
    let r = coord::ListGroupsRequest {
        states_filter,
        types_filter: req.types_filter.iter().map(|x| x.to_string()).collect(),
    };
    let mut answers = Vec::with_capacity(shard.shards);
    if !bad_state {
        for target in 0..shard.shards {
            answers.push(
                shard
                    .send(target, ShardReq::Group(Request::ListGroups(r.clone())))
                    .await,
            );
        }
    }
    async move {
        let mut out = ListGroupsResponse::default();
        let mut groups = Vec::new();
        for a in future::join_all(answers).await {
            match a {
                ShardResp::Group(Response::ListGroups(x)) => {
                    if !x.error.is_ok() && out.error_code == 0 {
                        out.error_code = x.error.code();
                    }
                    groups.extend(x.groups);
                }
                _ => out.error_code = ErrorCode::CoordinatorNotAvailable.code(),
            }
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.groups = groups
            .iter()
            .map(|g| {
                let mut l = list_groups_response::ListedGroup::default();
                l.group_id = GroupId(s(&g.group_id));
                l.protocol_type = s(&g.protocol_type);
                if v >= 4 {
                    l.group_state = s(g.state.as_kafka_str());
                }
                if v >= 5 {
                    l.group_type = s("classic");
                }
                l
            })
            .collect();
        respond(ApiKey::ListGroups, v, corr, &out)
    }
    .boxed_local()
}

/// Sends the group ids of a multi-group request to their shards: one request per shard.
async fn place_split(
    shard: &Rc<Shard>,
    ids: &[String],
    make: impl Fn(Vec<String>) -> Request,
) -> Vec<(Vec<usize>, LocalBoxFuture<'static, Response>)> {
    let mut out = Vec::new();
    for (target, positions) in split_by_shard(ids, shard.groups.partitions, shard.shards) {
        let part: Vec<String> = positions.iter().map(|&i| ids[i].clone()).collect();
        let req = make(part);
        let fallback = error_response(&req, ErrorCode::CoordinatorNotAvailable);
        let answer = shard.send(target, ShardReq::Group(req)).await;
        out.push((
            positions,
            async move {
                match answer.await {
                    ShardResp::Group(r) => r,
                    _ => fallback,
                }
            }
            .boxed_local(),
        ));
    }
    out
}

pub async fn describe_groups(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: DescribeGroupsRequest,
) -> Pending {
    let ids: Vec<String> = req.groups.iter().map(|g| g.0.to_string()).collect();
    let placed = place_split(shard, &ids, Request::DescribeGroups).await;
    async move {
        let mut parts = Vec::with_capacity(placed.len());
        for (positions, answer) in placed {
            let described = match answer.await {
                Response::DescribeGroups(d) => d,
                _ => Vec::new(),
            };
            parts.push((positions, described));
        }
        let groups = scatter::in_request_order(ids.len(), parts, |i| coord::DescribedGroup {
            error: ErrorCode::CoordinatorNotAvailable,
            group_id: ids[i].clone(),
            state: coord::GroupState::Dead,
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
        });
        let mut out = DescribeGroupsResponse::default();
        out.groups = groups
            .iter()
            .map(|g| {
                let mut d = describe_groups_response::DescribedGroup::default();
                d.error_code = g.error.code();
                d.group_id = GroupId(s(&g.group_id));
                d.group_state = s(g.state.as_kafka_str());
                d.protocol_type = s(&g.protocol_type);
                d.protocol_data = s(&g.protocol_data);
                d.members = g
                    .members
                    .iter()
                    .map(|m| {
                        let mut x = describe_groups_response::DescribedGroupMember::default();
                        x.member_id = s(&m.member_id);
                        if v >= 4 {
                            x.group_instance_id = opt_s(&m.group_instance_id);
                        }
                        x.client_id = s(&m.client_id);
                        x.client_host = s(&m.client_host);
                        x.member_metadata = m.metadata.clone();
                        x.member_assignment = m.assignment.clone();
                        x
                    })
                    .collect();
                d
            })
            .collect();
        respond(ApiKey::DescribeGroups, v, corr, &out)
    }
    .boxed_local()
}

pub async fn delete_groups(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: DeleteGroupsRequest,
) -> Pending {
    let ids: Vec<String> = req.groups_names.iter().map(|g| g.0.to_string()).collect();
    let placed = place_split(shard, &ids, Request::DeleteGroups).await;
    async move {
        let mut parts = Vec::with_capacity(placed.len());
        for (positions, answer) in placed {
            let results = match answer.await {
                Response::DeleteGroups(d) => d,
                _ => Vec::new(),
            };
            parts.push((positions, results));
        }
        let results = scatter::in_request_order(ids.len(), parts, |i| {
            (ids[i].clone(), ErrorCode::CoordinatorNotAvailable)
        });
        let mut out = DeleteGroupsResponse::default();
        out.results = results
            .iter()
            .map(|(id, e)| {
                let mut r = delete_groups_response::DeletableGroupResult::default();
                r.group_id = GroupId(s(id));
                r.error_code = e.code();
                r
            })
            .collect();
        respond(ApiKey::DeleteGroups, v, corr, &out)
    }
    .boxed_local()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_by_shard_covers_every_id_once_and_matches_ownership() {
        let ids: Vec<String> = (0..100).map(|i| format!("g{i}")).collect();
        for shards in 1..=4 {
            let parts = split_by_shard(&ids, 2 * shards, shards);
            let mut seen = vec![false; ids.len()];
            let mut last_shard = None;
            for (target, positions) in &parts {
                assert!(last_shard < Some(*target), "shards ascending, each once");
                last_shard = Some(*target);
                for &p in positions {
                    assert!(!seen[p]);
                    seen[p] = true;
                    assert_eq!(group_shard(&ids[p], 2 * shards, shards), *target);
                }
                // Positions keep request order inside a shard.
                assert!(positions.windows(2).all(|w| w[0] < w[1]));
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    #[test]
    fn client_host_is_written_like_kafka() {
        use std::net::{Ipv4Addr, Ipv6Addr};
        assert_eq!(
            client_host(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))),
            "/127.0.0.1"
        );
        assert_eq!(
            client_host(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            "/0:0:0:0:0:0:0:1"
        );
        assert_eq!(
            client_host(IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped())),
            "/10.1.2.3"
        );
        assert_eq!(
            client_host("2001:db8::ff00:42:8329".parse().unwrap()),
            "/2001:db8:0:0:0:ff00:42:8329"
        );
    }
}

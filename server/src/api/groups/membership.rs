//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat and LeaveGroup.

use std::net::SocketAddr;
use std::rc::Rc;

use futures::future::{self};
use futures::FutureExt;
use kafka_protocol::messages::*;
use shardlog_coordinator as coord;
use shardlog_coordinator::{ErrorCode, Request, Response};

use crate::api::cluster::{view, Node};
use crate::api::common::{respond, s, Pending};
use crate::groups::offsets_log::OFFSETS_TOPIC;
use crate::mesh::shard::Shard;
use crate::wire::errors;

use crate::api::groups::place::*;

// ---- FindCoordinator ----------------------------------------------------------------------

/// FindCoordinator: a group's coordinator is the broker leading the group's
/// `__consumer_offsets` partition ([`ClusterView::coordinator`]); COORDINATOR_NOT_AVAILABLE
/// while that partition has no serving leader (the client retries after a metadata refresh).
pub fn find_coordinator(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: FindCoordinatorRequest,
) -> Pending {
    if shard.groups.replicated && req.key_type == 0 {
        crate::groups::coordinator::ensure_offsets_topic(shard);
    }
    let meta = shard.meta.borrow();
    let cv = view(shard, &meta);
    let in_image = meta.topics.get(OFFSETS_TOPIC).map(|t| t.partitions.len());
    // A cluster's coordinators are the leaders of the image's partitions only: none before
    // the topic is created (COORDINATOR_NOT_AVAILABLE meanwhile).
    let unknown = shard.groups.replicated && in_image.is_none();
    let partitions = in_image.unwrap_or(shard.groups.partitions);
    // The coordinator of one key, or the error code and message.
    let answer = |key: &str| -> Result<Node, (i16, &'static str)> {
        if req.key_type == KEY_TYPE_TRANSACTION {
            Err((
                ErrorCode::CoordinatorNotAvailable.code(),
                "transactions are not supported",
            ))
        } else if req.key_type != 0 {
            Err((errors::INVALID_REQUEST, "unknown key type"))
        } else if unknown {
            Err((
                ErrorCode::CoordinatorNotAvailable.code(),
                "__consumer_offsets is being created",
            ))
        } else {
            cv.coordinator(key, partitions).cloned().ok_or((
                ErrorCode::CoordinatorNotAvailable.code(),
                "the group's __consumer_offsets partition has no leader",
            ))
        }
    };
    let mut r = FindCoordinatorResponse::default();
    if v >= 4 {
        r.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let mut c = find_coordinator_response::Coordinator::default();
                c.key = k.clone();
                match answer(k) {
                    Ok(n) => {
                        c.node_id = BrokerId(n.id);
                        c.host = s(&n.host);
                        c.port = n.port;
                    }
                    Err((code, msg)) => {
                        c.error_code = code;
                        c.error_message = Some(s(msg));
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                    }
                }
                c
            })
            .collect();
    } else {
        match answer(&req.key) {
            Ok(n) => {
                r.node_id = BrokerId(n.id);
                r.host = s(&n.host);
                r.port = n.port;
            }
            Err((code, msg)) => {
                r.error_code = code;
                if v >= 1 {
                    r.error_message = Some(s(msg));
                }
                r.node_id = BrokerId(-1);
                r.port = -1;
            }
        }
    }
    drop(meta);
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

//! ListGroups, DescribeGroups and DeleteGroups.

use std::rc::Rc;

use futures::future::{self, LocalBoxFuture};
use futures::FutureExt;
use kafka_protocol::messages::*;
use shardlog_coordinator as coord;
use shardlog_coordinator::{error_response, ErrorCode, Request, Response};

use crate::api::common::{respond, s, Pending};
use crate::mesh::messages::{ShardReq, ShardResp};
use crate::mesh::scatter;
use crate::mesh::shard::Shard;

use crate::api::groups::place::*;

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
pub(crate) async fn place_split(
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

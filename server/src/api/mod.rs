//! Kafka API handlers: turn a decoded request into shard requests, join the answers, encode the
//! response.
//!
//! Every handler has two phases. [`dispatch`] runs the *placing* phase on the connection's task,
//! in request order: it decides which shards are involved and hands each its part
//! ([`Shard::send`] returns once the part is queued). It returns the *answer* phase as a
//! future, which the connection spawns and whose result it writes in request order. Produce
//! relies on this to keep per-partition order across pipelined requests; the other APIs do not
//! care but use the same shape.

pub mod admin;
pub mod cluster;
pub mod common;
pub mod configs;
pub mod fetch;
pub mod groups;
pub mod log_dirs;
pub mod offsets;
pub mod produce;

use std::net::SocketAddr;
use std::rc::Rc;

use futures::future::{self};
use futures::FutureExt;
use kafka_protocol::messages::*;

use crate::mesh::shard::Shard;
use crate::wire::errors;

use crate::wire::protocol;

use crate::api::admin::*;
use crate::api::cluster::*;
use crate::api::common::*;
use crate::api::configs::*;
use crate::api::fetch::fetch_api;
use crate::api::offsets::*;
use crate::api::produce::*;

pub use crate::api::common::Pending;

/// Places the request and returns its answer phase. `peer` is the client's address (a group
/// member's client host, as DescribeGroups reports it).
pub async fn dispatch(
    shard: &Rc<Shard>,
    peer: SocketAddr,
    header: RequestHeader,
    api_key: ApiKey,
    body: RequestKind,
) -> Pending {
    let v = header.request_api_version;
    let corr = header.correlation_id;
    tracing::trace!(?api_key, version = v, correlation_id = corr, "request");
    match body {
        RequestKind::ApiVersions(_) => {
            let r = protocol::api_versions_response(errors::NONE);
            future::ready(respond(api_key, v, corr, &r)).boxed_local()
        }
        RequestKind::Metadata(req) => metadata_api(shard.clone(), v, corr, req).boxed_local(),
        RequestKind::Produce(req) => produce(shard, v, corr, req).await,
        RequestKind::Fetch(req) => fetch_api(shard.clone(), v, corr, req).boxed_local(),
        RequestKind::ListOffsets(req) => list_offsets(shard, v, corr, req).await,
        RequestKind::CreateTopics(req) => create_topics(shard.clone(), v, corr, req).boxed_local(),
        RequestKind::DeleteTopics(req) => delete_topics(shard.clone(), v, corr, req).boxed_local(),
        RequestKind::CreatePartitions(req) => {
            create_partitions(shard.clone(), v, corr, req).boxed_local()
        }
        RequestKind::DescribeConfigs(req) => {
            future::ready(describe_configs(shard, v, corr, req)).boxed_local()
        }
        RequestKind::AlterConfigs(req) => {
            let topics = req
                .resources
                .iter()
                .map(|r| {
                    (
                        r.resource_type,
                        r.resource_name.to_string(),
                        r.configs
                            .iter()
                            .map(|c| {
                                (
                                    c.name.to_string(),
                                    0i8,
                                    c.value.as_ref().map(|v| v.to_string()),
                                )
                            })
                            .collect(),
                    )
                })
                .collect();
            alter_configs(
                shard.clone(),
                api_key,
                v,
                corr,
                topics,
                true,
                req.validate_only,
            )
            .boxed_local()
        }
        RequestKind::IncrementalAlterConfigs(req) => {
            let topics = req
                .resources
                .iter()
                .map(|r| {
                    (
                        r.resource_type,
                        r.resource_name.to_string(),
                        r.configs
                            .iter()
                            .map(|c| {
                                (
                                    c.name.to_string(),
                                    c.config_operation,
                                    c.value.as_ref().map(|v| v.to_string()),
                                )
                            })
                            .collect(),
                    )
                })
                .collect();
            alter_configs(
                shard.clone(),
                api_key,
                v,
                corr,
                topics,
                false,
                req.validate_only,
            )
            .boxed_local()
        }
        RequestKind::DeleteRecords(req) => delete_records(shard, v, corr, req).await,
        RequestKind::OffsetForLeaderEpoch(req) => epoch_end(shard, v, corr, req).await,
        RequestKind::DescribeLogDirs(req) => log_dirs::describe_log_dirs(shard, v, corr, req).await,
        RequestKind::DescribeCluster(req) => {
            future::ready(describe_cluster(shard, v, corr, &req)).boxed_local()
        }
        RequestKind::InitProducerId(req) => {
            init_producer_id(shard.clone(), v, corr, req).boxed_local()
        }
        RequestKind::FindCoordinator(req) => groups::find_coordinator(shard, v, corr, req),
        RequestKind::JoinGroup(req) => groups::join_group(shard, &header, peer, v, corr, req).await,
        RequestKind::SyncGroup(req) => groups::sync_group(shard, v, corr, req).await,
        RequestKind::Heartbeat(req) => groups::heartbeat(shard, v, corr, req).await,
        RequestKind::LeaveGroup(req) => groups::leave_group(shard, v, corr, req).await,
        RequestKind::OffsetCommit(req) => groups::offset_commit(shard, v, corr, req).await,
        RequestKind::OffsetFetch(req) => groups::offset_fetch(shard, v, corr, req).await,
        RequestKind::OffsetDelete(req) => groups::offset_delete(shard, v, corr, req).await,
        RequestKind::ListGroups(req) => groups::list_groups(shard, v, corr, req).await,
        RequestKind::DescribeGroups(req) => groups::describe_groups(shard, v, corr, req).await,
        RequestKind::DeleteGroups(req) => groups::delete_groups(shard, v, corr, req).await,
        other => {
            // parse_request only admits the APIs listed in SUPPORTED_APIS.
            tracing::error!(
                ?api_key,
                "no handler for advertised API: {:?}",
                std::mem::discriminant(&other)
            );
            future::ready(None).boxed_local()
        }
    }
}

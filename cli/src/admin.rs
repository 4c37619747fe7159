//! Kafka admin requests the CLI needs beyond what `shardlog-client` wraps: full metadata
//! (replicas, ISR, controller), configs, partitions, log dirs and the group admin APIs.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use shardlog_client::{Client, ClientError, Connection};

use crate::error::{CliError, CliResult};

/// `ConfigResource.Type.TOPIC`.
pub const RESOURCE_TOPIC: i8 = 2;
/// Kafka's GROUP_ID_NOT_FOUND.
pub const GROUP_ID_NOT_FOUND: i16 = 69;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// A Kafka error code as a CLI failure with context (`None` for code 0).
pub fn kafka_err(code: i16, context: impl Into<String>) -> CliResult {
    if code == 0 {
        Ok(())
    } else {
        Err(ClientError::kafka(code, context).into())
    }
}

/// One partition in the cluster metadata.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
    pub error_code: i16,
}

/// One topic in the cluster metadata.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub internal: bool,
    pub error_code: i16,
    pub partitions: Vec<PartitionInfo>,
}

/// One broker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Registered but fenced (not serving): only DescribeCluster v2 reports such brokers;
    /// Metadata lists live brokers only.
    pub fenced: bool,
}

/// The cluster metadata.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterInfo {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

/// Metadata of `topics` (`None`: every topic), never creating topics.
pub async fn metadata(client: &Client, topics: Option<&[String]>) -> CliResult<ClusterInfo> {
    let conn = client.any_conn().await?;
    let mut req = MetadataRequest::default();
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| {
                let mut mt = metadata_request::MetadataRequestTopic::default();
                mt.name = Some(TopicName(s(t)));
                mt
            })
            .collect()
    });
    req.allow_auto_topic_creation = false;
    let resp = conn.request(&req).await?;
    let mut brokers: Vec<BrokerInfo> = resp
        .brokers
        .iter()
        .map(|b| BrokerInfo {
            node_id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.as_ref().map(|r| r.to_string()),
            fenced: false,
        })
        .collect();
    brokers.sort_by_key(|b| b.node_id);
    let mut out: Vec<TopicInfo> = resp
        .topics
        .into_iter()
        .map(|t| {
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            TopicInfo {
                name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                internal: t.is_internal,
                error_code: t.error_code,
                partitions,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ClusterInfo {
        cluster_id: resp.cluster_id.map(|c| c.to_string()),
        controller_id: resp.controller_id.0,
        brokers,
        topics: out,
    })
}

/// What DescribeCluster answers: the controller and the brokers, fenced ones included when
/// the broker speaks v2 (KIP-1073).
#[derive(Debug, Clone)]
pub struct DescribedCluster {
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    /// The answer includes fenced brokers (v2).
    pub with_fenced: bool,
}

/// DescribeCluster (with the fenced brokers where supported); `None` when the cluster does not
/// implement the API (then Metadata is all there is).
pub async fn describe_cluster(client: &Client) -> CliResult<Option<DescribedCluster>> {
    let conn = client.any_conn().await?;
    let v = match conn.version_for(ApiKey::DescribeCluster) {
        Ok(v) => v,
        Err(ClientError::UnsupportedApi { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut req = DescribeClusterRequest::default();
    req.include_fenced_brokers = v >= 2;
    let resp = conn.request(&req).await?;
    let msg = resp
        .error_message
        .map(|m| m.to_string())
        .unwrap_or_default();
    kafka_err(resp.error_code, format!("describe cluster: {msg}"))?;
    let mut brokers: Vec<BrokerInfo> = resp
        .brokers
        .iter()
        .map(|b| BrokerInfo {
            node_id: b.broker_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.as_ref().map(|r| r.to_string()),
            fenced: b.is_fenced,
        })
        .collect();
    brokers.sort_by_key(|b| b.node_id);
    Ok(Some(DescribedCluster {
        controller_id: resp.controller_id.0,
        brokers,
        with_fenced: v >= 2,
    }))
}

/// Metadata of one existing topic (error when the cluster does not know it).
pub async fn topic_info(client: &Client, name: &str) -> CliResult<TopicInfo> {
    let md = metadata(client, Some(&[name.to_string()])).await?;
    match md.topics.into_iter().find(|t| t.name == name) {
        Some(t) if t.error_code == 0 => Ok(t),
        Some(t) if t.error_code == 3 => {
            Err(CliError::Failed(format!("topic {name:?} does not exist")))
        }
        Some(t) => Err(ClientError::kafka(t.error_code, format!("topic {name}")).into()),
        None => Err(CliError::Failed(format!("topic {name:?} does not exist"))),
    }
}

/// One config entry of a topic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: &'static str,
    pub read_only: bool,
    pub sensitive: bool,
}

fn config_source(s: i8) -> &'static str {
    match s {
        1 => "dynamic-topic",
        2 => "dynamic-broker",
        3 => "dynamic-default-broker",
        4 => "static-broker",
        5 => "default",
        6 => "dynamic-broker-logger",
        7 => "client-metrics",
        _ => "unknown",
    }
}

/// DescribeConfigs of one topic.
pub async fn describe_topic_configs(client: &Client, topic: &str) -> CliResult<Vec<ConfigEntry>> {
    let conn = client.any_conn().await?;
    let mut req = DescribeConfigsRequest::default();
    let mut r = describe_configs_request::DescribeConfigsResource::default();
    r.resource_type = RESOURCE_TOPIC;
    r.resource_name = s(topic);
    r.configuration_keys = None;
    req.resources = vec![r];
    let resp = conn.request(&req).await?;
    let mut out = Vec::new();
    for res in resp.results {
        let msg = res.error_message.map(|m| m.to_string()).unwrap_or_default();
        kafka_err(
            res.error_code,
            format!("describe configs of {topic}: {msg}"),
        )?;
        for c in res.configs {
            out.push(ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: config_source(c.config_source),
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// IncrementalAlterConfigs of one topic: `set` (op 0) and `delete` (op 1).
pub async fn alter_topic_configs(
    client: &Client,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
    validate_only: bool,
) -> CliResult {
    let conn = client.any_conn().await?;
    let mut req = IncrementalAlterConfigsRequest::default();
    let mut r = AlterConfigsResource::default();
    r.resource_type = RESOURCE_TOPIC;
    r.resource_name = s(topic);
    for (k, v) in set {
        let mut c = AlterableConfig::default();
        c.name = s(k);
        c.config_operation = 0;
        c.value = Some(s(v));
        r.configs.push(c);
    }
    for k in delete {
        let mut c = AlterableConfig::default();
        c.name = s(k);
        c.config_operation = 1;
        c.value = None;
        r.configs.push(c);
    }
    req.resources = vec![r];
    req.validate_only = validate_only;
    let resp = conn.request(&req).await?;
    for res in resp.responses {
        let msg = res.error_message.map(|m| m.to_string()).unwrap_or_default();
        kafka_err(res.error_code, format!("alter configs of {topic}: {msg}"))?;
    }
    Ok(())
}

/// CreatePartitions: grow `topic` to `total` partitions.
pub async fn add_partitions(
    client: &Client,
    topic: &str,
    total: i32,
    timeout_ms: i32,
) -> CliResult {
    let conn = client.any_conn().await?;
    let mut req = CreatePartitionsRequest::default();
    let mut t = create_partitions_request::CreatePartitionsTopic::default();
    t.name = TopicName(s(topic));
    t.count = total;
    t.assignments = None;
    req.topics = vec![t];
    req.timeout_ms = timeout_ms;
    let resp = conn.request(&req).await?;
    for r in resp.results {
        let msg = r.error_message.map(|m| m.to_string()).unwrap_or_default();
        kafka_err(r.error_code, format!("add partitions to {topic}: {msg}"))?;
    }
    Ok(())
}

/// Partition sizes from DescribeLogDirs, summed over log dirs; `Ok(None)` when no broker
/// supports the API (then sizes are not shown).
pub async fn partition_sizes(
    client: &Client,
    info: &ClusterInfo,
    topic: &str,
) -> CliResult<Option<BTreeMap<i32, i64>>> {
    let mut sizes = BTreeMap::new();
    for b in &info.brokers {
        let conn = client.broker_conn(b.node_id).await?;
        if conn.version_for(ApiKey::DescribeLogDirs).is_err() {
            return Ok(None);
        }
        let mut req = DescribeLogDirsRequest::default();
        let mut t = describe_log_dirs_request::DescribableLogDirTopic::default();
        t.topic = TopicName(s(topic));
        t.partitions = info
            .topics
            .iter()
            .filter(|x| x.name == topic)
            .flat_map(|x| x.partitions.iter().map(|p| p.partition))
            .collect();
        req.topics = Some(vec![t]);
        let resp = conn.request(&req).await?;
        for d in resp.results {
            for t in d.topics {
                for p in t.partitions {
                    if !p.is_future_key {
                        *sizes.entry(p.partition_index).or_insert(0) += p.partition_size;
                    }
                }
            }
        }
    }
    Ok(Some(sizes))
}

/// A group as listed by ListGroups.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedGroupInfo {
    pub group: String,
    pub protocol_type: String,
    pub state: String,
    pub coordinator: i32,
}

/// ListGroups on every broker.
pub async fn list_groups(client: &Client, info: &ClusterInfo) -> CliResult<Vec<ListedGroupInfo>> {
    let mut out = Vec::new();
    for b in &info.brokers {
        let conn = client.broker_conn(b.node_id).await?;
        let req = ListGroupsRequest::default();
        let resp = conn.request(&req).await.map_err(|e| match e {
            ClientError::UnsupportedApi { .. } => CliError::Failed(format!(
                "the cluster does not support consumer groups (ListGroups): {e}"
            )),
            e => e.into(),
        })?;
        kafka_err(
            resp.error_code,
            format!("ListGroups on broker {}", b.node_id),
        )?;
        for g in resp.groups {
            out.push(ListedGroupInfo {
                group: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
                coordinator: b.node_id,
            });
        }
    }
    out.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(out)
}

/// One member of a described group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// (topic, partitions) from the member's consumer-protocol assignment.
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A described group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupInfo {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberInfo>,
}

/// Decodes a consumer-protocol assignment (2-byte version, then the body); empty or
/// undecodable assignments give no partitions.
pub fn decode_assignment(mut b: Bytes) -> Vec<(String, Vec<i32>)> {
    if b.len() < 2 {
        return Vec::new();
    }
    let v = b.get_i16().clamp(0, 3);
    match ConsumerProtocolAssignment::decode(&mut b, v) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .map(|tp| {
                let mut ps = tp.partitions;
                ps.sort_unstable();
                (tp.topic.0.to_string(), ps)
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// DescribeGroups on the group's coordinator.
pub async fn describe_group(coord: &Connection, group: &str) -> CliResult<GroupInfo> {
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(s(group))];
    let resp = coord.request(&req).await?;
    let Some(g) = resp.groups.into_iter().next() else {
        return Err(CliError::Failed(format!(
            "DescribeGroups returned nothing for {group}"
        )));
    };
    // GROUP_ID_NOT_FOUND (newer coordinators) means what state Dead means (older ones).
    let dead = g.error_code == GROUP_ID_NOT_FOUND;
    if !dead {
        kafka_err(g.error_code, format!("describe group {group}"))?;
    }
    let consumer = g.protocol_type.as_str() == "consumer";
    Ok(GroupInfo {
        group: group.to_string(),
        state: if dead {
            "Dead".to_string()
        } else {
            g.group_state.to_string()
        },
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        members: g
            .members
            .into_iter()
            .map(|m| MemberInfo {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|x| x.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment: if consumer {
                    decode_assignment(m.member_assignment)
                } else {
                    Vec::new()
                },
            })
            .collect(),
    })
}

/// Every committed offset of a group: (topic, partition) -> offset.
pub async fn committed_offsets(
    coord: &Connection,
    group: &str,
) -> CliResult<BTreeMap<(String, i32), i64>> {
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(s(group));
    req.topics = None;
    let resp = coord.request(&req).await?;
    kafka_err(resp.error_code, format!("OffsetFetch {group}"))?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            kafka_err(
                p.error_code,
                format!("OffsetFetch {group} {}-{}", t.name.0, p.partition_index),
            )?;
            if p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// Commits offsets for a group from outside it (generation -1, no member: allowed by Kafka
/// only while the group has no active members).
pub async fn commit_offsets(
    coord: &Connection,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> CliResult {
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id_or_member_epoch = -1;
    req.member_id = StrBytes::default();
    req.retention_time_ms = -1;
    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = offsets
        .iter()
        .map(|&(p, o)| {
            let mut op = offset_commit_request::OffsetCommitRequestPartition::default();
            op.partition_index = p;
            op.committed_offset = o;
            op.committed_leader_epoch = -1;
            op
        })
        .collect();
    req.topics = vec![t];
    let resp = coord.request(&req).await?;
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code == 25 || p.error_code == 22 || p.error_code == 27 {
                // UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION / REBALANCE_IN_PROGRESS: the group
                // has active members, whose commits would overwrite ours.
                return Err(CliError::Failed(format!(
                    "cannot reset offsets of group {group}: it has active members (stop its consumers first)"
                )));
            }
            kafka_err(
                p.error_code,
                format!("OffsetCommit {group} {topic}-{}", p.partition_index),
            )?;
        }
    }
    Ok(())
}

/// DeleteGroups on the group's coordinator.
pub async fn delete_group(coord: &Connection, group: &str) -> CliResult {
    let mut req = DeleteGroupsRequest::default();
    req.groups_names = vec![GroupId(s(group))];
    let resp = coord.request(&req).await?;
    for r in resp.results {
        if r.error_code == 68 {
            return Err(CliError::Failed(format!(
                "cannot delete group {group}: it still has members (NON_EMPTY_GROUP)"
            )));
        }
        if r.error_code == GROUP_ID_NOT_FOUND {
            return Err(CliError::Failed(format!(
                "group {group:?} does not exist; `shardlog group list` shows the groups"
            )));
        }
        kafka_err(r.error_code, format!("delete group {group}"))?;
    }
    Ok(())
}

/// The coordinator connection of a group, with a clear error when the cluster has no group
/// support.
pub async fn coordinator(client: &Client, group: &str) -> CliResult<Arc<Connection>> {
    client.group_coordinator(group).await.map_err(|e| match e {
        ClientError::UnsupportedApi { .. } => CliError::Failed(format!(
            "the cluster does not support consumer groups (FindCoordinator): {e}"
        )),
        e => CliError::Failed(format!("cannot find the coordinator of group {group}: {e}")),
    })
}

/// LeaveGroup for one member, with the member in the field the negotiated version has
/// (`member_id` up to v2, `members` from v3).
pub async fn leave_group(coord: &Connection, group: &str, member_id: &str) -> CliResult {
    let v = coord.version_for(ApiKey::LeaveGroup)?;
    let mut req = LeaveGroupRequest::default();
    req.group_id = GroupId(s(group));
    if v >= 3 {
        let mut m = leave_group_request::MemberIdentity::default();
        m.member_id = s(member_id);
        req.members = vec![m];
    } else {
        req.member_id = s(member_id);
    }
    let resp = coord.request(&req).await?;
    kafka_err(resp.error_code, format!("leave group {group}"))
}

/// The answer of DeleteRecords for one partition: its new log start, or the error.
pub type DeleteOutcome = Result<i64, ClientError>;

/// DeleteRecords: moves the log start of each `(partition, offset)` of `topic` up to `offset`
/// (-1: the high watermark), sent to each partition's leader. The client's metadata cache must
/// know the topic.
pub async fn delete_records(
    client: &Client,
    topic: &str,
    parts: &[(i32, i64)],
    timeout_ms: i32,
) -> CliResult<BTreeMap<i32, DeleteOutcome>> {
    let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
    for &(p, o) in parts {
        by_leader
            .entry(client.leader(topic, p)?)
            .or_default()
            .push((p, o));
    }
    let mut out = BTreeMap::new();
    for (leader, ps) in by_leader {
        let conn = client.broker_conn(leader).await?;
        let mut req = DeleteRecordsRequest::default();
        let mut t = delete_records_request::DeleteRecordsTopic::default();
        t.name = TopicName(s(topic));
        t.partitions = ps
            .iter()
            .map(|&(p, o)| {
                let mut dp = delete_records_request::DeleteRecordsPartition::default();
                dp.partition_index = p;
                dp.offset = o;
                dp
            })
            .collect();
        req.topics = vec![t];
        req.timeout_ms = timeout_ms;
        let resp = conn.request(&req).await?;
        for rt in resp.topics {
            for rp in rt.partitions {
                let r = if rp.error_code == 0 {
                    Ok(rp.low_watermark)
                } else {
                    Err(ClientError::kafka(
                        rp.error_code,
                        format!("delete records of {topic}-{}", rp.partition_index),
                    ))
                };
                out.insert(rp.partition_index, r);
            }
        }
        for (p, _) in ps {
            out.entry(p).or_insert_with(|| {
                Err(ClientError::Protocol {
                    addr: conn.addr().to_string(),
                    msg: format!("no DeleteRecords answer for {topic}-{p}"),
                })
            });
        }
    }
    Ok(out)
}

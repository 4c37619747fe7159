//! What a client learns about the cluster: Metadata and DescribeCluster.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::*;

use crate::controller::metadata;
use crate::groups::offsets_log::OFFSETS_TOPIC;
use crate::mesh::shard::Shard;
use crate::wire::errors;

use crate::api::common::*;

use crate::api::admin::*;

pub(crate) async fn metadata_api(
    shard: Rc<Shard>,
    v: i16,
    corr: i32,
    req: MetadataRequest,
) -> Option<Vec<Bytes>> {
    let requested: Option<Vec<Option<String>>> = match req.topics {
        None => None,
        Some(t) if v == 0 && t.is_empty() => None,
        Some(t) => Some(
            t.iter()
                .map(|x| x.name.as_ref().map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let allow_auto = v < 4 || req.allow_auto_topic_creation;
    if let (Some(names), true) = (&requested, allow_auto) {
        let names: Vec<String> = names.iter().flatten().cloned().collect();
        auto_create(&shard, &names).await;
    }
    let (host, port) = shard.cfg.advertised_host_port();
    let node = shard.cfg.node_id;
    let mut r = MetadataResponse::default();
    let mut b = metadata_response::MetadataResponseBroker::default();
    b.node_id = BrokerId(node);
    b.host = s(&host);
    b.port = port;
    r.brokers = vec![b];
    r.cluster_id = Some(s(&shard.cfg.cluster_id));
    r.controller_id = BrokerId(node);
    let meta = shard.meta.borrow();
    let topic_resp = |t: &metadata::TopicMeta| {
        let mut tr = metadata_response::MetadataResponseTopic::default();
        tr.name = Some(tname(&t.name));
        tr.topic_id = uuid::Uuid::from_u128(t.id);
        // A partition whose log failed to open has no leader, as Kafka reports a partition
        // whose only replica is offline: LEADER_NOT_AVAILABLE, leader -1, the replica in
        // offline_replicas and not in the ISR.
        let offline = shard.global.offline.of_topic(&t.name);
        tr.partitions = t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, pm)| {
                let mut p = metadata_response::MetadataResponsePartition::default();
                p.partition_index = i as i32;
                p.leader_epoch = pm.leader_epoch;
                p.replica_nodes = vec![BrokerId(node)];
                if offline.contains(&(i as i32)) {
                    p.error_code = errors::LEADER_NOT_AVAILABLE;
                    p.leader_id = BrokerId(-1);
                    p.offline_replicas = vec![BrokerId(node)];
                } else {
                    p.leader_id = BrokerId(node);
                    p.isr_nodes = vec![BrokerId(node)];
                }
                p
            })
            .collect();
        tr
    };
    r.topics = match requested {
        None => meta.topics.values().map(topic_resp).collect(),
        Some(names) => names
            .into_iter()
            .map(|n| match n {
                Some(name) => match meta.topics.get(&name) {
                    Some(t) => topic_resp(t),
                    // The internal topic is listed only when asked for by name.
                    None if name == OFFSETS_TOPIC => {
                        let internal = metadata::TopicMeta {
                            name: name.clone(),
                            id: 0,
                            partitions: vec![
                                metadata::PartitionMeta::new(vec![shard.cfg.node_id]);
                                shard.groups.partitions
                            ],
                            configs: Default::default(),
                        };
                        let mut tr = topic_resp(&internal);
                        tr.is_internal = true;
                        tr
                    }
                    None => {
                        let mut tr = metadata_response::MetadataResponseTopic::default();
                        tr.error_code = if metadata::validate_topic_name(&name).is_err() {
                            errors::INVALID_TOPIC_EXCEPTION
                        } else {
                            errors::UNKNOWN_TOPIC_OR_PARTITION
                        };
                        tr.name = Some(tname(&name));
                        tr
                    }
                },
                None => {
                    let mut tr = metadata_response::MetadataResponseTopic::default();
                    tr.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                    tr
                }
            })
            .collect(),
    };
    drop(meta);
    respond(ApiKey::Metadata, v, corr, &r)
}

pub(crate) fn describe_cluster(shard: &Rc<Shard>, v: i16, corr: i32) -> Option<Vec<Bytes>> {
    let (host, port) = shard.cfg.advertised_host_port();
    let mut r = DescribeClusterResponse::default();
    r.cluster_id = s(&shard.cfg.cluster_id);
    r.controller_id = BrokerId(shard.cfg.node_id);
    let mut b = describe_cluster_response::DescribeClusterBroker::default();
    b.broker_id = BrokerId(shard.cfg.node_id);
    b.host = s(&host);
    b.port = port;
    r.brokers = vec![b];
    r.endpoint_type = 1;
    respond(ApiKey::DescribeCluster, v, corr, &r)
}

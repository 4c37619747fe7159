//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, and auto-creation
//! (Metadata and Produce). Every change goes to the metadata authority on shard 0.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::*;

use crate::controller::metadata;
use crate::groups::offsets_log::OFFSETS_TOPIC;
use crate::mesh::messages::{AdminReq, AdminResp, NewTopic};
use crate::mesh::shard::Shard;
use crate::wire::errors;
use shardlog_coordinator::Untrusted;

use crate::api::common::*;

/// Creates the topics in `names` that do not exist, if auto-creation is on.
pub(crate) async fn auto_create(shard: &Rc<Shard>, names: &[String]) {
    if !shard.cfg.auto_create_topics {
        return;
    }
    let missing: Vec<NewTopic> = names
        .iter()
        .filter(|n| {
            shard.topic(n).is_none()
                && metadata::validate_topic_name(n).is_ok()
                && n.as_str() != OFFSETS_TOPIC
        })
        .map(|n| NewTopic {
            name: n.clone(),
            partitions: shard.cfg.default_partitions,
            configs: Vec::new(),
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    if let AdminResp::Results(rs) = shard
        .admin_call(AdminReq::CreateTopics {
            topics: missing,
            validate_only: false,
        })
        .await
    {
        for (name, code, _) in rs {
            if code == errors::NONE {
                tracing::info!(topic = %Untrusted(&name), "auto-created topic");
            }
        }
    }
}

pub(crate) fn admin_results(resp: AdminResp) -> HashMap<String, (i16, Option<String>)> {
    match resp {
        AdminResp::Results(rs) => rs.into_iter().map(|(n, c, m)| (n, (c, m))).collect(),
        AdminResp::ProducerId(_) | AdminResp::AlterPartition(_) => HashMap::new(),
    }
}

pub(crate) async fn create_topics(
    shard: Rc<Shard>,
    v: i16,
    corr: i32,
    req: CreateTopicsRequest,
) -> Option<Vec<Bytes>> {
    let mut pre: HashMap<String, (i16, String)> = HashMap::new();
    // A name given twice is refused in every one of its entries and none of them is created,
    // as Kafka does: which entry's partitions and configs would win is not defined.
    let mut seen: HashSet<&str> = HashSet::new();
    for t in &req.topics {
        let name = t.name.0.as_str();
        if !seen.insert(name) && !pre.contains_key(name) {
            tracing::info!(topic = %Untrusted(name), "create topic: the name appears more than once: INVALID_REQUEST");
            pre.insert(
                name.to_string(),
                (
                    errors::INVALID_REQUEST,
                    "Found multiple entries for this topic.".to_string(),
                ),
            );
        }
    }
    let mut topics = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        if pre.contains_key(&name) {
            continue;
        }
        if name == OFFSETS_TOPIC {
            let msg = format!("{OFFSETS_TOPIC} is the broker's internal topic");
            pre.insert(name, (errors::TOPIC_ALREADY_EXISTS, msg));
            continue;
        }
        if t.replication_factor != -1 && t.replication_factor != 1 {
            let msg = format!(
                "replication factor {} > 1 on a single-node cluster",
                t.replication_factor
            );
            tracing::info!(topic = %Untrusted(&name), %msg, "create topic: INVALID_REPLICATION_FACTOR");
            pre.insert(name, (errors::INVALID_REPLICATION_FACTOR, msg));
            continue;
        }
        let partitions = if t.assignments.is_empty() {
            t.num_partitions
        } else {
            t.assignments.len() as i32
        };
        topics.push(NewTopic {
            name,
            partitions,
            configs: t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect(),
        });
    }
    let mut got = admin_results(
        shard
            .admin_call(AdminReq::CreateTopics {
                topics,
                validate_only: req.validate_only,
            })
            .await,
    );
    let mut r = CreateTopicsResponse::default();
    r.topics = req
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let (code, msg) = match pre.get(&name) {
                Some((c, m)) => (*c, Some(m.clone())),
                None => got
                    .remove(&name)
                    .unwrap_or((errors::UNKNOWN_SERVER_ERROR, None)),
            };
            let mut tr = create_topics_response::CreatableTopicResult::default();
            tr.name = tname(&name);
            tr.error_code = code;
            tr.error_message = msg.map(|m| s(&m));
            if code == errors::NONE {
                if let Some(meta) = shard.topic(&name) {
                    tr.topic_id = uuid::Uuid::from_u128(meta.id);
                    tr.num_partitions = meta.partitions.len() as i32;
                    tr.replication_factor = 1;
                    tr.configs = Some(
                        metadata::effective_configs(&meta, &shard.cfg)
                            .into_iter()
                            .map(|(k, val, is_default)| {
                                let mut c =
                                    create_topics_response::CreatableTopicConfigs::default();
                                c.name = s(&k);
                                c.value = Some(s(&val));
                                c.config_source = if is_default { 5 } else { 1 };
                                c
                            })
                            .collect(),
                    );
                } else {
                    // validate_only: report what would be created.
                    tr.num_partitions = if t.num_partitions == -1 {
                        shard.cfg.default_partitions
                    } else {
                        t.num_partitions
                    };
                    tr.replication_factor = 1;
                }
            } else {
                tr.num_partitions = -1;
                tr.replication_factor = -1;
            }
            tr
        })
        .collect();
    respond(ApiKey::CreateTopics, v, corr, &r)
}

pub(crate) async fn delete_topics(
    shard: Rc<Shard>,
    v: i16,
    corr: i32,
    req: DeleteTopicsRequest,
) -> Option<Vec<Bytes>> {
    // v6 names topics in `topics` (by name or id); older versions in `topic_names`.
    let mut names: Vec<(Option<String>, uuid::Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    for t in &req.topics {
        let name = match &t.name {
            Some(n) => Some(n.0.to_string()),
            None => shard
                .meta
                .borrow()
                .topics
                .values()
                .find(|m| uuid::Uuid::from_u128(m.id) == t.topic_id)
                .map(|m| m.name.clone()),
        };
        names.push((name, t.topic_id));
    }
    let to_delete: Vec<String> = names.iter().filter_map(|(n, _)| n.clone()).collect();
    let mut got = admin_results(shard.admin_call(AdminReq::DeleteTopics(to_delete)).await);
    let mut r = DeleteTopicsResponse::default();
    r.responses = names
        .into_iter()
        .map(|(name, id)| {
            let mut tr = delete_topics_response::DeletableTopicResult::default();
            tr.topic_id = id;
            match name {
                Some(n) => {
                    let (code, msg) = got
                        .remove(&n)
                        .unwrap_or((errors::UNKNOWN_TOPIC_OR_PARTITION, None));
                    tr.error_code = code;
                    tr.error_message = msg.map(|m| s(&m));
                    tr.name = Some(tname(&n));
                }
                None => tr.error_code = 100, // UNKNOWN_TOPIC_ID
            }
            tr
        })
        .collect();
    respond(ApiKey::DeleteTopics, v, corr, &r)
}

pub(crate) async fn create_partitions(
    shard: Rc<Shard>,
    v: i16,
    corr: i32,
    req: CreatePartitionsRequest,
) -> Option<Vec<Bytes>> {
    let topics = req
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.count))
        .collect();
    let mut got = admin_results(
        shard
            .admin_call(AdminReq::CreatePartitions {
                topics,
                validate_only: req.validate_only,
            })
            .await,
    );
    let mut r = CreatePartitionsResponse::default();
    r.results = req
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let (code, msg) = got
                .remove(&name)
                .unwrap_or((errors::UNKNOWN_SERVER_ERROR, None));
            let mut tr = create_partitions_response::CreatePartitionsTopicResult::default();
            tr.name = tname(&name);
            tr.error_code = code;
            tr.error_message = msg.map(|m| s(&m));
            tr
        })
        .collect();
    respond(ApiKey::CreatePartitions, v, corr, &r)
}

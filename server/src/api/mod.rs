//! Kafka API handlers: turn a decoded request into shard requests, join the answers, encode the
//! response.
//!
//! Every handler has two phases. [`dispatch`] runs the *placing* phase on the connection's task,
//! in request order: it decides which shards are involved and hands each its part
//! ([`Shard::send`] returns once the part is queued). It returns the *answer* phase as a
//! future, which the connection spawns and whose result it writes in request order. Produce
//! relies on this to keep per-partition order across pipelined requests; the other APIs do not
//! care but use the same shape.

pub mod groups;
pub mod log_dirs;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, LocalBoxFuture};
use futures::FutureExt;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::controller::metadata;
use crate::groups::offsets_log::OFFSETS_TOPIC;
use crate::mesh::messages::{
    AdminReq, AdminResp, NewTopic, OffsetOut, ProducePart, ProduceResult, ReadOut, ReadPart,
    ShardReq, ShardResp,
};
use crate::mesh::scatter;
use crate::mesh::shard::Shard;
use crate::wire::errors;
use crate::wire::fetch::{self, FetchTopicOut, SessionStep};
use crate::wire::protocol;
use shardlog_coordinator::Untrusted;

/// The answer phase: the response frame as chunks, or `None` for no response (acks=0).
pub type Pending = LocalBoxFuture<'static, Option<Vec<Bytes>>>;

fn respond<M: Encodable>(api_key: ApiKey, version: i16, corr: i32, body: &M) -> Option<Vec<Bytes>> {
    match protocol::encode_response(api_key, version, corr, body) {
        Ok(b) => Some(vec![b]),
        Err(e) => {
            tracing::error!(?api_key, version, error = %e, "cannot encode response");
            None
        }
    }
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn tname(x: &str) -> TopicName {
    TopicName(s(x))
}

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
        RequestKind::DescribeCluster(_) => {
            future::ready(describe_cluster(shard, v, corr)).boxed_local()
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

/// Creates the topics in `names` that do not exist, if auto-creation is on.
async fn auto_create(shard: &Rc<Shard>, names: &[String]) {
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

// ---------------------------------------------------------------------------------------------

async fn metadata_api(
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
                                metadata::PartitionMeta { leader_epoch: 0 };
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

// ---------------------------------------------------------------------------------------------

async fn produce(shard: &Rc<Shard>, v: i16, corr: i32, req: ProduceRequest) -> Pending {
    let acks = req.acks;
    let order: Vec<(String, Vec<i32>)> = req
        .topic_data
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partition_data.iter().map(|p| p.index).collect(),
            )
        })
        .collect();
    let refuse_all = |code: i16| {
        let results = order
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| err_result(t, *p, code)))
            .collect();
        future::ready(produce_response(v, corr, acks, &order, results)).boxed_local()
    };
    // Kafka refuses the whole request when it carries a transactional id, or a transactional
    // batch, that the producer is not authorised for; without transactions that is every one.
    // A transactional batch outside a transaction would otherwise be stored and its records
    // stay invisible to read_committed consumers forever (no marker ever ends it).
    let transactional_batches = req
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .any(|p| p.records.as_deref().is_some_and(has_transactional_batch));
    if transactional_batches
        || req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty())
    {
        let transactional_id = req.transactional_id.as_ref().map_or("", |t| t.0.as_str());
        tracing::info!(
            transactional_batches,
            transactional_id = %Untrusted(transactional_id),
            "transactional produce refused: TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
        );
        return refuse_all(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
    if !matches!(acks, -1..=1) {
        tracing::info!(acks, "produce: INVALID_REQUIRED_ACKS");
        return refuse_all(errors::INVALID_REQUIRED_ACKS);
    }
    // The same partition twice: Kafka keeps only the last entry of a partition (a map) and
    // answers it once, so the client cannot tell what was stored. Here the whole request is
    // refused and nothing is stored; every entry answers INVALID_REQUEST, as Kafka answers
    // duplicates in CreateTopics, CreatePartitions and ListOffsets.
    let mut seen = std::collections::HashSet::new();
    if let Some((topic, partition)) = order
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.as_str(), *p)))
        .find(|key| !seen.insert(*key))
    {
        tracing::info!(
            topic = %Untrusted(topic),
            partition,
            "produce names a partition twice: INVALID_REQUEST, nothing stored"
        );
        return refuse_all(errors::INVALID_REQUEST);
    }
    let names: Vec<String> = order.iter().map(|(t, _)| t.clone()).collect();
    auto_create(shard, &names).await;

    // A stored batch's records stay in the request buffer they arrived in (the batch cache
    // keeps them; see `StoredBatch`). That is only economical for a batch that is most of
    // its request: the others are copied out, so a small batch cannot pin a large request.
    let records_total: usize = req
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
        .sum();
    let mut placed: Vec<ProducePart> = Vec::new();
    let mut refused = Vec::new();
    for t in req.topic_data {
        let topic = t.name.0.to_string();
        if topic == OFFSETS_TOPIC {
            tracing::info!("produce to {OFFSETS_TOPIC} refused: INVALID_TOPIC_EXCEPTION");
            refused.extend(
                t.partition_data
                    .iter()
                    .map(|p| err_result(&topic, p.index, errors::INVALID_TOPIC_EXCEPTION)),
            );
            continue;
        }
        // One replica here: acks=all cannot be honoured when the topic asks for more in sync.
        if acks == -1 {
            if let Some(min_isr) = min_insync_replicas(shard, &topic).filter(|&m| m > 1) {
                tracing::info!(
                    topic = %topic,
                    min_isr,
                    "acks=all with min.insync.replicas above the replica count (1): NOT_ENOUGH_REPLICAS"
                );
                refused.extend(
                    t.partition_data
                        .iter()
                        .map(|p| err_result(&topic, p.index, errors::NOT_ENOUGH_REPLICAS)),
                );
                continue;
            }
        }
        placed.extend(t.partition_data.into_iter().map(|p| ProducePart {
            topic: topic.clone(),
            partition: p.index,
            records: p.records.map(|r| compact(r, records_total)),
        }));
    }
    let by_owner = scatter::split_by_owner(placed, |p| shard.owner(&p.topic, p.partition));
    let waits =
        scatter::send_each(shard, by_owner, |parts| ShardReq::Produce { acks, parts }).await;
    async move {
        let mut results = refused;
        results.extend(
            scatter::join(waits, |r| match r {
                ShardResp::Produce(rs) => Some(rs),
                _ => None,
            })
            .await,
        );
        produce_response(v, corr, acks, &order, results)
    }
    .boxed_local()
}

/// Whether any record batch in a partition's records has the transactional attribute. Stops
/// at the first bytes that are not a batch header (the append refuses those).
fn has_transactional_batch(records: &[u8]) -> bool {
    let mut rest = records;
    while let Ok(info) = shardlog_engine::batch::peek(rest) {
        if info.is_transactional() {
            return true;
        }
        match rest.get(info.size..) {
            Some(next) if info.size > 0 => rest = next,
            _ => break,
        }
    }
    false
}

/// The topic's `min.insync.replicas`, if it sets one.
fn min_insync_replicas(shard: &Shard, topic: &str) -> Option<i64> {
    shard
        .meta
        .borrow()
        .topics
        .get(topic)?
        .configs
        .get("min.insync.replicas")?
        .parse()
        .ok()
}

/// `records` itself when it is at least half of the request's records, else a copy of it.
fn compact(records: Bytes, records_total: usize) -> Bytes {
    if records.len() * 2 >= records_total {
        records
    } else {
        Bytes::copy_from_slice(&records)
    }
}

fn err_result(topic: &str, partition: i32, error: i16) -> ProduceResult {
    ProduceResult {
        topic: topic.to_string(),
        partition,
        error,
        base_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: -1,
    }
}

fn produce_response(
    v: i16,
    corr: i32,
    acks: i16,
    order: &[(String, Vec<i32>)],
    results: Vec<ProduceResult>,
) -> Option<Vec<Bytes>> {
    if acks == 0 {
        return None;
    }
    // A partition named twice (refused as a whole) has one result per entry, in order.
    let mut by_key: HashMap<(String, i32), std::collections::VecDeque<ProduceResult>> =
        HashMap::new();
    for r in results {
        by_key
            .entry((r.topic.clone(), r.partition))
            .or_default()
            .push_back(r);
    }
    let mut resp = ProduceResponse::default();
    resp.responses = order
        .iter()
        .map(|(topic, parts)| {
            let mut tr = produce_response::TopicProduceResponse::default();
            tr.name = tname(topic);
            tr.partition_responses = parts
                .iter()
                .map(|&p| {
                    let r = by_key
                        .get_mut(&(topic.clone(), p))
                        .and_then(|q| q.pop_front())
                        .unwrap_or_else(|| err_result(topic, p, errors::UNKNOWN_SERVER_ERROR));
                    let mut pr = produce_response::PartitionProduceResponse::default();
                    pr.index = p;
                    crate::metrics::error(ApiKey::Produce as i16, r.error);
                    pr.error_code = r.error;
                    pr.base_offset = r.base_offset;
                    pr.log_append_time_ms = r.log_append_time_ms;
                    pr.log_start_offset = r.log_start_offset;
                    pr
                })
                .collect();
            tr
        })
        .collect();
    respond(ApiKey::Produce, v, corr, &resp)
}

// ---------------------------------------------------------------------------------------------

async fn fetch_api(shard: Rc<Shard>, v: i16, corr: i32, req: FetchRequest) -> Option<Vec<Bytes>> {
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
        let any_error = outs.iter().any(|o| o.error != errors::NONE);
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
                    .map(|p| (p.topic.clone(), p.partition, p.offset))
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
fn valid_isolation_level(level: i8) -> bool {
    matches!(level, 0 | 1)
}

/// Answers a Fetch whose request-level fields are invalid: INVALID_REQUEST at the top (v7+)
/// and on every partition asked for, nothing read, no session touched.
fn refuse_fetch(v: i16, corr: i32, req: &FetchRequest) -> Option<Vec<Bytes>> {
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

// ---------------------------------------------------------------------------------------------

/// Splits (topic, partition, value) parts by owner, places them, returns the joined answers.
async fn offsets_call(
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

fn missing(topic: &str, partition: i32) -> OffsetOut {
    OffsetOut::new(topic, partition, errors::UNKNOWN_SERVER_ERROR)
}

async fn list_offsets(shard: &Rc<Shard>, v: i16, corr: i32, req: ListOffsetsRequest) -> Pending {
    let order: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    // v2+ carries an isolation level; anything but 0 or 1 refuses every partition.
    let bad_isolation = v >= 2 && !valid_isolation_level(req.isolation_level);
    if bad_isolation {
        tracing::info!(
            isolation_level = req.isolation_level,
            "list offsets with an unknown isolation level: INVALID_REQUEST"
        );
    }
    let parts = req
        .topics
        .iter()
        .filter(|_| !bad_isolation)
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions
                .iter()
                .map(move |p| (name.clone(), p.partition_index, p.timestamp))
        })
        .collect();
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
        r.topics = order
            .into_iter()
            .map(|(topic, ps)| {
                let mut tr = list_offsets_response::ListOffsetsTopicResponse::default();
                tr.name = tname(&topic);
                tr.partitions = ps
                    .into_iter()
                    .map(|p| {
                        let o = got
                            .take(&(topic.clone(), p))
                            .unwrap_or_else(|| missing(&topic, p));
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

async fn delete_records(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: DeleteRecordsRequest,
) -> Pending {
    let order: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let parts = req
        .topics
        .iter()
        // The internal log's start is moved only by its snapshots.
        .filter(|t| t.name.0.as_str() != OFFSETS_TOPIC)
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions
                .iter()
                .map(move |p| (name.clone(), p.partition_index, p.offset))
        })
        .collect();
    let fut = offsets_call(shard, parts, |parts| ShardReq::DeleteRecords { parts }).await;
    async move {
        let mut got = fut.await;
        let mut r = DeleteRecordsResponse::default();
        r.topics = order
            .into_iter()
            .map(|(topic, ps)| {
                let mut tr = delete_records_response::DeleteRecordsTopicResult::default();
                tr.name = tname(&topic);
                tr.partitions = ps
                    .into_iter()
                    .map(|p| {
                        let o = got
                            .take(&(topic.clone(), p))
                            .unwrap_or_else(|| missing(&topic, p));
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

async fn epoch_end(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: OffsetForLeaderEpochRequest,
) -> Pending {
    let order: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.topic.0.to_string(),
                t.partitions.iter().map(|p| p.partition).collect(),
            )
        })
        .collect();
    let parts = req
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.topic.0.to_string();
            t.partitions
                .iter()
                .map(move |p| (name.clone(), p.partition, i64::from(p.leader_epoch)))
        })
        .collect();
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
        r.topics = order
            .into_iter()
            .map(|(topic, ps)| {
                let mut tr =
                    offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default();
                tr.topic = tname(&topic);
                tr.partitions = ps
                    .into_iter()
                    .map(|p| {
                        let o = got
                            .take(&(topic.clone(), p))
                            .unwrap_or_else(|| missing(&topic, p));
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

// ---------------------------------------------------------------------------------------------

fn admin_results(resp: AdminResp) -> HashMap<String, (i16, Option<String>)> {
    match resp {
        AdminResp::Results(rs) => rs.into_iter().map(|(n, c, m)| (n, (c, m))).collect(),
        AdminResp::ProducerId(_) => HashMap::new(),
    }
}

async fn create_topics(
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

async fn delete_topics(
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

async fn create_partitions(
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

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn describe_configs(
    shard: &Rc<Shard>,
    v: i16,
    corr: i32,
    req: DescribeConfigsRequest,
) -> Option<Vec<Bytes>> {
    let mut r = DescribeConfigsResponse::default();
    r.results = req
        .resources
        .iter()
        .map(|res| {
            let mut out = describe_configs_response::DescribeConfigsResult::default();
            out.resource_type = res.resource_type;
            out.resource_name = res.resource_name.clone();
            let wanted = |k: &str| {
                res.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k))
            };
            match res.resource_type {
                RESOURCE_TOPIC => match shard.topic(res.resource_name.as_str()) {
                    Some(t) => {
                        out.configs = metadata::effective_configs(&t, &shard.cfg)
                            .into_iter()
                            .filter(|(k, _, _)| wanted(k))
                            .map(|(k, val, is_default)| {
                                let mut c = describe_configs_response::DescribeConfigsResourceResult::default();
                                c.name = s(&k);
                                c.value = Some(s(&val));
                                c.config_source = if is_default { 5 } else { 1 };
                                c
                            })
                            .collect();
                    }
                    None => {
                        out.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                        out.error_message = Some(s("unknown topic"));
                    }
                },
                RESOURCE_BROKER => {
                    let cfg = &shard.cfg;
                    let entries = [
                        ("auto.create.topics.enable", cfg.auto_create_topics.to_string()),
                        ("num.partitions", cfg.default_partitions.to_string()),
                        ("socket.request.max.bytes", cfg.max_frame_bytes.to_string()),
                        ("message.max.bytes", cfg.default_max_message_bytes.to_string()),
                        ("log.retention.ms", cfg.default_retention_ms.to_string()),
                        ("log.segment.bytes", cfg.default_segment_bytes.to_string()),
                        ("compression.type", cfg.compression_type.clone()),
                    ];
                    out.configs = entries
                        .iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, val)| {
                            let mut c = describe_configs_response::DescribeConfigsResourceResult::default();
                            c.name = s(k);
                            c.value = Some(s(val));
                            c.read_only = true;
                            c.config_source = 4; // STATIC_BROKER_CONFIG
                            c
                        })
                        .collect();
                }
                other => {
                    out.error_code = errors::INVALID_REQUEST;
                    out.error_message = Some(s(&format!("resource type {other} is not supported")));
                }
            }
            out
        })
        .collect();
    respond(ApiKey::DescribeConfigs, v, corr, &r)
}

use crate::mesh::messages::ConfigOps;

async fn alter_configs(
    shard: Rc<Shard>,
    api_key: ApiKey,
    v: i16,
    corr: i32,
    resources: Vec<(i8, String, ConfigOps)>,
    replace: bool,
    validate_only: bool,
) -> Option<Vec<Bytes>> {
    let topics = resources
        .iter()
        .filter(|(t, _, _)| *t == RESOURCE_TOPIC)
        .map(|(_, n, ops)| (n.clone(), ops.clone()))
        .collect();
    let mut got = admin_results(
        shard
            .admin_call(AdminReq::AlterConfigs {
                topics,
                replace,
                validate_only,
            })
            .await,
    );
    let results: Vec<(i8, String, i16, Option<String>)> = resources
        .into_iter()
        .map(|(t, name, _)| {
            if t != RESOURCE_TOPIC {
                tracing::info!(resource_type = t, name = %Untrusted(&name), "alter configs on a non-topic resource refused");
                return (t, name, errors::INVALID_REQUEST, Some("only topic configs can be altered".to_string()));
            }
            let (code, msg) = got.remove(&name).unwrap_or((errors::UNKNOWN_SERVER_ERROR, None));
            (t, name, code, msg)
        })
        .collect();
    if api_key == ApiKey::AlterConfigs {
        let mut r = AlterConfigsResponse::default();
        r.responses = results
            .into_iter()
            .map(|(t, name, code, msg)| {
                let mut x = alter_configs_response::AlterConfigsResourceResponse::default();
                x.resource_type = t;
                x.resource_name = s(&name);
                x.error_code = code;
                x.error_message = msg.map(|m| s(&m));
                x
            })
            .collect();
        respond(api_key, v, corr, &r)
    } else {
        let mut r = IncrementalAlterConfigsResponse::default();
        r.responses = results
            .into_iter()
            .map(|(t, name, code, msg)| {
                let mut x =
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default();
                x.resource_type = t;
                x.resource_name = s(&name);
                x.error_code = code;
                x.error_message = msg.map(|m| s(&m));
                x
            })
            .collect();
        respond(api_key, v, corr, &r)
    }
}

fn describe_cluster(shard: &Rc<Shard>, v: i16, corr: i32) -> Option<Vec<Bytes>> {
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

async fn init_producer_id(
    shard: Rc<Shard>,
    v: i16,
    corr: i32,
    req: InitProducerIdRequest,
) -> Option<Vec<Bytes>> {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    if let Some(tid) = req.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
        tracing::info!(
            transactional_id = %Untrusted(&tid.0),
            "InitProducerId with a transactional id: transactions are not supported"
        );
        r.error_code = errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return respond(ApiKey::InitProducerId, v, corr, &r);
    }
    // An existing idempotent producer asking for a bump (KIP-360) keeps its id.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        r.producer_id = req.producer_id;
        r.producer_epoch = req.producer_epoch + 1;
        return respond(ApiKey::InitProducerId, v, corr, &r);
    }
    match shard.admin_call(AdminReq::AllocateProducerId).await {
        AdminResp::ProducerId(Ok(id)) => {
            tracing::debug!(producer_id = id, "allocated producer id");
            r.producer_id = ProducerId(id);
            r.producer_epoch = 0;
        }
        AdminResp::ProducerId(Err(code)) => r.error_code = code,
        AdminResp::Results(_) => r.error_code = errors::UNKNOWN_SERVER_ERROR,
    }
    respond(ApiKey::InitProducerId, v, corr, &r)
}

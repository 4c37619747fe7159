//! Produce (validation, split by owning shard, the response in request order) and
//! InitProducerId.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::{self};
use futures::FutureExt;
use kafka_protocol::messages::*;

use crate::groups::offsets_log::OFFSETS_TOPIC;
use crate::mesh::messages::{AdminReq, AdminResp, ProducePart, ProduceResult, ShardReq, ShardResp};
use crate::mesh::scatter;
use crate::mesh::shard::Shard;
use crate::wire::errors;
use shardlog_coordinator::Untrusted;

use crate::api::common::*;

use crate::api::admin::*;

pub(crate) async fn produce(shard: &Rc<Shard>, v: i16, corr: i32, req: ProduceRequest) -> Pending {
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
        future::ready(produce_response(v, corr, acks, &order, results, |_| None)).boxed_local()
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
        // acks=all below min.insync.replicas is refused by each partition's replica core,
        // before the append (NOT_ENOUGH_REPLICAS).
        placed.extend(t.partition_data.into_iter().map(|p| ProducePart {
            topic: topic.clone(),
            partition: p.index,
            records: p.records.map(|r| compact(r, records_total)),
            timeout_ms: req.timeout_ms,
        }));
    }
    let by_owner = scatter::split_by_owner(placed, |p| shard.owner(&p.topic, p.partition));
    let waits =
        scatter::send_each(shard, by_owner, |parts| ShardReq::Produce { acks, parts }).await;
    let shard = shard.clone();
    async move {
        let mut results = refused;
        results.extend(
            scatter::join(waits, |r| match r {
                ShardResp::Produce(rs) => Some(rs),
                _ => None,
            })
            .await,
        );
        produce_response(v, corr, acks, &order, results, |id| {
            leader_endpoint(&shard, id)
        })
    }
    .boxed_local()
}

/// Whether any record batch in a partition's records has the transactional attribute. Stops
/// at the first bytes that are not a batch header (the append refuses those).
pub(crate) fn has_transactional_batch(records: &[u8]) -> bool {
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

/// `records` itself when it is at least half of the request's records, else a copy of it.
pub(crate) fn compact(records: Bytes, records_total: usize) -> Bytes {
    if records.len() * 2 >= records_total {
        records
    } else {
        Bytes::copy_from_slice(&records)
    }
}

pub(crate) fn err_result(topic: &str, partition: i32, error: i16) -> ProduceResult {
    ProduceResult::failed(topic, partition, error)
}

/// The advertised address of broker `id` when it is live in this broker's image (the
/// brokers a Metadata answer lists), for KIP-951's `NodeEndpoints`.
pub(crate) fn leader_endpoint(shard: &Shard, id: i32) -> Option<(String, i32)> {
    let meta = shard.meta.borrow();
    let cv = crate::api::cluster::view(shard, &meta);
    cv.live(id).map(|n| (n.host.clone(), n.port))
}

/// The response in request order. From v10 on (KIP-951) a partition refused with
/// NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH carries `CurrentLeader`, and the response
/// the `NodeEndpoints` of those leaders that `endpoint` knows (id -> host, port), so the
/// client can move without a Metadata round.
pub(crate) fn produce_response(
    v: i16,
    corr: i32,
    acks: i16,
    order: &[(String, Vec<i32>)],
    results: Vec<ProduceResult>,
    endpoint: impl Fn(i32) -> Option<(String, i32)>,
) -> Option<Vec<Bytes>> {
    if acks == 0 {
        return None;
    }
    let hints = v >= 10;
    let mut leaders = std::collections::BTreeSet::new();
    // A partition named twice (refused as a whole) has one result per entry, in order.
    let mut by_key: HashMap<(String, i32), std::collections::VecDeque<ProduceResult>> =
        HashMap::new();
    for r in results {
        by_key
            .entry((r.topic().to_string(), r.partition()))
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
                    crate::metrics::error(ApiKey::Produce as i16, r.error());
                    pr.error_code = r.error();
                    pr.base_offset = r.base_offset();
                    pr.log_append_time_ms = r.log_append_time_ms();
                    pr.log_start_offset = r.log_start_offset();
                    if let Some((leader, epoch)) = r.current_leader().filter(|_| hints) {
                        pr.current_leader = produce_response::LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(leader))
                            .with_leader_epoch(epoch);
                        if leader >= 0 {
                            leaders.insert(leader);
                        }
                    }
                    pr
                })
                .collect();
            tr
        })
        .collect();
    resp.node_endpoints = leaders
        .into_iter()
        .filter_map(|id| {
            let (host, port) = endpoint(id)?;
            Some(
                produce_response::NodeEndpoint::default()
                    .with_node_id(BrokerId(id))
                    .with_host(s(&host))
                    .with_port(port),
            )
        })
        .collect();
    respond(ApiKey::Produce, v, corr, &resp)
}

pub(crate) async fn init_producer_id(
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
        AdminResp::Results(_) | AdminResp::AlterPartition(_) => {
            r.error_code = errors::UNKNOWN_SERVER_ERROR
        }
    }
    respond(ApiKey::InitProducerId, v, corr, &r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::protocol::Decodable;

    /// Produce v8 has a non-flexible header: size, correlation id, body.
    fn decode(chunks: Vec<Bytes>) -> ProduceResponse {
        let mut b = Bytes::from(chunks.concat());
        assert_eq!(b.get_i32() as usize, b.len());
        assert_eq!(b.get_i32(), 42);
        ProduceResponse::decode(&mut b, 8).expect("decodes")
    }

    fn ok(topic: &str, partition: i32, base_offset: i64) -> ProduceResult {
        ProduceResult::for_test(topic, partition, base_offset)
    }

    #[test]
    fn response_is_in_request_order_and_a_lost_answer_is_an_unknown_server_error() {
        let order = vec![("a".to_string(), vec![1, 0]), ("b".to_string(), vec![0])];
        // Answers come back by shard: not in request order, and "b"-0 never answered.
        let results = vec![ok("a", 0, 10), ok("a", 1, 20)];
        let r =
            decode(produce_response(8, 42, 1, &order, results, |_| None).expect("acks=1 answers"));
        let got: Vec<(String, i32, i16, i64)> = r
            .responses
            .iter()
            .flat_map(|t| {
                t.partition_responses
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.index, p.error_code, p.base_offset))
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), 1, errors::NONE, 20),
                ("a".into(), 0, errors::NONE, 10),
                ("b".into(), 0, errors::UNKNOWN_SERVER_ERROR, -1),
            ]
        );
    }

    #[test]
    fn a_partition_named_twice_gets_one_result_per_entry_in_order() {
        let order = vec![("t".to_string(), vec![0, 0])];
        let results = vec![
            err_result("t", 0, errors::INVALID_REQUEST),
            err_result("t", 0, errors::NOT_ENOUGH_REPLICAS),
        ];
        let r = decode(produce_response(8, 42, -1, &order, results, |_| None).expect("answers"));
        let codes: Vec<i16> = r.responses[0]
            .partition_responses
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(
            codes,
            vec![errors::INVALID_REQUEST, errors::NOT_ENOUGH_REPLICAS]
        );
    }

    /// Produce v9+ has a flexible header: size, correlation id, tagged fields, body.
    fn decode_flexible(chunks: Vec<Bytes>, version: i16) -> ProduceResponse {
        let mut b = Bytes::from(chunks.concat());
        assert_eq!(b.get_i32() as usize, b.len());
        assert_eq!(b.get_i32(), 42);
        assert_eq!(b.get_u8(), 0, "no header tagged fields");
        ProduceResponse::decode(&mut b, version).expect("decodes")
    }

    #[test]
    fn v10_names_the_leader_and_its_endpoint_on_leadership_errors() {
        let order = vec![("t".to_string(), vec![0, 1, 2, 3])];
        let results = vec![
            err_result("t", 0, errors::NOT_LEADER_OR_FOLLOWER).with_leader_hint(Some((2, 5))),
            err_result("t", 1, errors::FENCED_LEADER_EPOCH).with_leader_hint(Some((3, 9))),
            // A leader nobody can reach: the hint without an endpoint.
            err_result("t", 2, errors::NOT_LEADER_OR_FOLLOWER).with_leader_hint(Some((7, 1))),
            ok("t", 3, 40),
        ];
        let endpoint = |id: i32| match id {
            2 => Some(("b2.example".to_string(), 9092)),
            3 => Some(("b3.example".to_string(), 9093)),
            _ => None,
        };
        let frame = produce_response(10, 42, -1, &order, results.clone(), endpoint);
        let r = decode_flexible(frame.expect("answers"), 10);
        let leaders: Vec<(i16, i32, i32)> = r.responses[0]
            .partition_responses
            .iter()
            .map(|p| {
                (
                    p.error_code,
                    p.current_leader.leader_id.0,
                    p.current_leader.leader_epoch,
                )
            })
            .collect();
        assert_eq!(
            leaders,
            vec![
                (errors::NOT_LEADER_OR_FOLLOWER, 2, 5),
                (errors::FENCED_LEADER_EPOCH, 3, 9),
                (errors::NOT_LEADER_OR_FOLLOWER, 7, 1),
                (errors::NONE, -1, -1),
            ]
        );
        let nodes: Vec<(i32, String, i32)> = r
            .node_endpoints
            .iter()
            .map(|n| (n.node_id.0, n.host.to_string(), n.port))
            .collect();
        assert_eq!(
            nodes,
            vec![
                (2, "b2.example".to_string(), 9092),
                (3, "b3.example".to_string(), 9093)
            ]
        );

        // v9 has neither field: the same answers encode without them.
        let r9 = decode_flexible(
            produce_response(9, 42, -1, &order, results, endpoint).expect("answers"),
            9,
        );
        assert!(r9.node_endpoints.is_empty());
        assert!(r9.responses[0]
            .partition_responses
            .iter()
            .all(|p| p.current_leader.leader_id.0 == -1));
    }

    #[test]
    fn acks_zero_gets_no_response() {
        let order = vec![("t".to_string(), vec![0])];
        assert!(produce_response(8, 42, 0, &order, vec![ok("t", 0, 1)], |_| None).is_none());
    }

    #[test]
    fn small_batches_are_copied_out_of_a_large_request() {
        let records = Bytes::from(vec![7u8; 100]);
        let whole = compact(records.clone(), 150);
        assert_eq!(
            whole.as_ptr(),
            records.as_ptr(),
            "most of the request: kept"
        );
        let copied = compact(records.clone(), 1000);
        assert_eq!(copied, records);
        assert_ne!(copied.as_ptr(), records.as_ptr(), "a small part: copied");
    }

    #[test]
    fn bytes_that_are_no_batch_are_not_transactional() {
        assert!(!has_transactional_batch(&[]));
        assert!(!has_transactional_batch(&[0u8; 10]));
    }
}

//! Criterion benches for the broker's hot paths, in-process (no sockets), beside the engine's
//! (`engine/benches/engine.rs`):
//!
//! * `decode_*`: [`protocol::parse_request`] on real frames: Produce v9 carrying one 16 KiB or
//!   1 MiB RecordBatch of 1 KiB records, Fetch v12 for 4 partitions, Metadata v12 for 3 topics.
//!   The frames are encoded once, outside the timed loop, with `kafka-protocol` and the
//!   client's batch encoder (`shardlog_client::records::BatchBuilder`).
//! * `produce`: on a one-shard broker whose logs live on the real disk (glommio, O_DIRECT):
//!   `dispatch/…` takes a decoded Produce v9 (acks=-1) through [`api::dispatch`] to its
//!   encoded response, exactly as a connection does; `partition/…` is the partition part of
//!   that path alone, as `Shard::start_produce` runs it for acks=-1: `Partition::enqueue`
//!   (appender task: producer-state check, CRC validation, offset assignment, copy into the
//!   write buffer, cache insert) then `wait_committed`. Topics with `flush.messages=1` (fdatasync
//!   before every acknowledgement) and without flushing (written with O_DIRECT, no fdatasync).
//! * `fetch`: `encode/…` is [`fetch::encode_fetch_response`] over the batches the engine's
//!   cache returns; `dispatch/…` is a whole sessionless Fetch v12 through [`api::dispatch`]
//!   (shard read from the cache, then the same encoder). 1 partition × 1 MiB (a 1 MiB
//!   `partition_max_bytes` over 16 KiB batches) and 100 partitions × one 16 KiB batch.
//!
//! Run: `cargo bench -p shardlog-server --bench hot_paths` (data goes to $SHARDLOG_BENCH_DIR or
//! the system temp dir, which must support O_DIRECT). `-- --test` runs every bench once.

use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use kafka_protocol::messages::{
    fetch_request, metadata_request, produce_request, ApiKey, FetchRequest, FetchResponse,
    MetadataRequest, ProduceRequest, ProduceResponse, RequestHeader, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shardlog_client::records::{BatchBuilder, Compression, ProducerStamp};
use shardlog_engine::GlommioStorage;
use shardlog_server::api;
use shardlog_server::config::BrokerConfig;
use shardlog_server::controller::log::MetadataAuthority;
use shardlog_server::mesh::messages::{AdminReq, AdminResp, MeshMsg, NewTopic, ReadOut};
use shardlog_server::mesh::shard::{Global, Shard};
use shardlog_server::wire::fetch::{self, FetchTopicOut};
use shardlog_server::wire::protocol::{self, Parsed};

/// glommio I/O memory per executor: the broker's default (32 MiB), the pool the engine's
/// write buffers come from. glommio registers it with io_uring when RLIMIT_MEMLOCK allows and
/// otherwise keeps it as an unregistered pool (writes then pin pages per request). A pool
/// small enough to register under a low limit (say 4 MiB under 8 MiB) cannot hold a 1 MiB
/// batch's 2 MiB write buffer next to the one in flight, so those would come from the heap,
/// which is not what the broker does.
fn io_memory_bytes() -> usize {
    BrokerConfig::default().io_memory_bytes
}
/// Value bytes per record: with its framing, a record is 1023-1024 bytes on the wire.
const RECORD_VALUE_BYTES: usize = 1014;
/// Bench topics roll at this size and keep about this much (retention runs between samples,
/// outside the timed loop), so a long run does not fill the disk.
const SEGMENT_BYTES: &str = "268435456";
const RETENTION_BYTES: &str = "268435456";
/// `flush.messages` values: fsync before every acknowledgement, and never.
const FSYNC_EVERY_BATCH: &str = "1";
const FLUSH_NEVER: &str = "9223372036854775807";

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(io_memory_bytes())
        .make()
        .expect("glommio executor")
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("SHARDLOG_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("shardlog-server-bench-")
        .tempdir_in(base)
        .expect("bench dir")
}

/// One RecordBatch of `records` 1 KiB records, as the client encodes it (no compression, no
/// producer id).
fn batch_of(records: usize) -> Bytes {
    let value = vec![0x5a; RECORD_VALUE_BYTES];
    let mut builder =
        BatchBuilder::with_capacity(records * BatchBuilder::record_len(0, RECORD_VALUE_BYTES));
    for _ in 0..records {
        builder
            .push(None, Some(&[&value]), 1_795_000_000_000)
            .expect("record");
    }
    let b = builder
        .finish(Compression::None, ProducerStamp::NONE)
        .expect("batch");
    assert!(
        b.len() <= BrokerConfig::default().default_max_message_bytes,
        "a {}-byte batch would be refused by max.message.bytes",
        b.len()
    );
    b
}

/// The two batch sizes: 16 × 1 KiB and 1024 × 1 KiB records.
fn batches() -> [(&'static str, Bytes); 2] {
    [("16KiB", batch_of(16)), ("1MiB", batch_of(1024))]
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A request frame as the connection hands it to `parse_request` (no size prefix).
fn frame<R: Encodable>(key: ApiKey, version: i16, req: &R) -> Bytes {
    let mut h = RequestHeader::default();
    h.request_api_key = key as i16;
    h.request_api_version = version;
    h.correlation_id = 7;
    h.client_id = Some(StrBytes::from_static_str("shardlog-bench"));
    let mut b = BytesMut::new();
    h.encode(&mut b, key.request_header_version(version))
        .expect("header");
    req.encode(&mut b, version).expect("body");
    b.freeze()
}

fn produce_frame(topic: &str, batch: &Bytes) -> Bytes {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.clone())),
            ])]);
    frame(ApiKey::Produce, 9, &req)
}

/// Sessionless Fetch v12 (as librdkafka sends it) of `partitions` from offset 0.
fn fetch_frame(topic: &str, partitions: i32, partition_max_bytes: i32) -> Bytes {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(
                (0..partitions)
                    .map(|p| {
                        fetch_request::FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(partition_max_bytes)
                    })
                    .collect(),
            )]);
    frame(ApiKey::Fetch, 12, &req)
}

fn metadata_frame(topics: &[&str]) -> Bytes {
    let req = MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|t| metadata_request::MetadataRequestTopic::default().with_name(Some(name(t))))
                .collect(),
        ))
        .with_allow_auto_topic_creation(false);
    frame(ApiKey::Metadata, 12, &req)
}

/// What the connection passes to `api::dispatch` for `frame`.
fn decoded(frame: Bytes) -> (RequestHeader, ApiKey, RequestKind) {
    match protocol::parse_request(frame).expect("parses") {
        Parsed::Request {
            header,
            api_key,
            body,
        } => (header, api_key, *body),
        Parsed::ApiVersionsUnsupported { .. } => panic!("not a request"),
    }
}

/// Places a decoded request and waits for its answer, as a connection does.
async fn answer(
    shard: &Rc<Shard>,
    header: RequestHeader,
    api_key: ApiKey,
    body: RequestKind,
) -> Option<Vec<Bytes>> {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    api::dispatch(shard, peer, header, api_key, body)
        .await
        .await
}

/// Times `iters` dispatches of the same request (copies made before the clock starts); with
/// `tick`, then runs the shard's periodic log work outside the measured time.
fn time_dispatch(
    ex: &LocalExecutor,
    shard: &Rc<Shard>,
    (header, api_key, body): (&RequestHeader, ApiKey, &RequestKind),
    iters: u64,
    tick: bool,
) -> Duration {
    let reqs: Vec<_> = (0..iters).map(|_| (header.clone(), body.clone())).collect();
    ex.run(async {
        let start = Instant::now();
        for (header, body) in reqs {
            black_box(
                answer(shard, header, api_key, body)
                    .await
                    .expect("answered"),
            );
        }
        let elapsed = start.elapsed();
        if tick {
            shard.tick_all(true, false).await;
        }
        elapsed
    })
}

/// A response frame's body: chunks joined, size prefix and flexible response header dropped.
fn response_body(chunks: &[Bytes]) -> Bytes {
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let len = i32::from_be_bytes([whole[0], whole[1], whole[2], whole[3]]) as usize;
    assert_eq!(len, whole.len() - 4, "size prefix");
    Bytes::from(whole).slice(9..)
}

/// A one-shard broker on a temp dir, built the way `broker::run` builds each shard (minus the
/// listener, the signal thread and the periodic tasks).
struct Broker {
    shard: Rc<Shard>,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(ex: &LocalExecutor, tune: impl FnOnce(&mut BrokerConfig)) -> Self {
        let dir = bench_dir();
        let mut cfg = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            cores: 1,
            auto_create_topics: false,
            ..BrokerConfig::default()
        };
        tune(&mut cfg);
        let global = Arc::new(Global {
            shutdown: AtomicBool::new(false),
            registered: AtomicBool::new(true),
            drained: AtomicUsize::new(0),
            connections: shardlog_server::wire::limits::ConnectionLimits::new(1, 0),
            offline: Default::default(),
            controller: Default::default(),
        });
        let shard = ex.run(async move {
            // Must run on every executor before a log opens a file (see its docs).
            GlommioStorage::prepare(&cfg.data_dir)
                .await
                .expect("direct I/O");
            let store = MetadataAuthority::new(
                shardlog_server::controller::quorum::open_log(
                    &cfg,
                    &shardlog_engine::BrokerStorage::default(),
                )
                .await
                .expect("metadata log"),
            );
            let meta = store.image().clone();
            GlommioStorage::prepare(&cfg.data_dir)
                .await
                .expect("O_DIRECT in the bench dir");
            let (senders, receivers) = MeshBuilder::<MeshMsg, _>::full(1, 1024)
                .join()
                .await
                .expect("shard mesh");
            let shard = Shard::new(
                0,
                Arc::new(cfg),
                global,
                meta,
                Some(store),
                senders,
                shardlog_server::dispatch::serve,
                shardlog_engine::BrokerStorage::default(),
                shardlog_server::clock::Clock::System,
            );
            shard.spawn_mesh_receivers(receivers);
            shard
        });
        Self { shard, _dir: dir }
    }

    fn create_topic(
        &self,
        ex: &LocalExecutor,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) {
        let req = AdminReq::CreateTopics {
            topics: vec![NewTopic {
                name: topic.to_string(),
                partitions,
                replication_factor: 1,
                assignments: Vec::new(),
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }],
            validate_only: false,
        };
        match ex.run(self.shard.admin_call(req)) {
            AdminResp::Results(rs) => {
                assert!(rs.len() == 1 && rs[0].1 == 0, "create {topic}: {rs:?}")
            }
            other => panic!("create {topic}: unexpected {other:?}"),
        }
    }

    /// Produces `batch` to `(topic, partition)` through the broker's produce path.
    fn produce(&self, ex: &LocalExecutor, topic: &str, partition: i32, batch: &Bytes) {
        let p = self.shard.partition(topic, partition).expect("partition");
        ex.run(async {
            let r = p.produce(-1, batch.clone()).await;
            assert_eq!(r.error(), 0, "produce");
        });
    }

    fn stop(self, ex: &LocalExecutor) {
        ex.run(self.shard.close_all());
        self.shard.close_mesh();
    }
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_produce_v9");
    for (size, batch) in batches() {
        let f = produce_frame("bench", &batch);
        g.throughput(Throughput::Bytes(f.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &f, |b, f| {
            b.iter(|| protocol::parse_request(black_box(f.clone())).expect("parses"))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("decode");
    for (id, f) in [
        ("fetch_v12_4_partitions", fetch_frame("bench", 4, 1 << 20)),
        (
            "metadata_v12_3_topics",
            metadata_frame(&["alpha", "beta", "gamma"]),
        ),
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(id), &f, |b, f| {
            b.iter(|| protocol::parse_request(black_box(f.clone())).expect("parses"))
        });
    }
    g.finish();
}

fn produce(c: &mut Criterion) {
    let ex = executor();
    let broker = Broker::start(&ex, |_| {});
    let shard = &broker.shard;
    let mut g = c.benchmark_group("produce");
    g.measurement_time(Duration::from_secs(4)).sample_size(20);
    for (policy, flush_messages) in [
        ("fsync_every_batch", FSYNC_EVERY_BATCH),
        ("flush_never", FLUSH_NEVER),
    ] {
        let topic = format!("produce-{policy}");
        broker.create_topic(
            &ex,
            &topic,
            1,
            &[
                ("flush.messages", flush_messages),
                ("segment.bytes", SEGMENT_BYTES),
                ("retention.bytes", RETENTION_BYTES),
            ],
        );
        let p = shard.partition(&topic, 0).expect("partition");
        for (size, batch) in batches() {
            let (header, api_key, body) = decoded(produce_frame(&topic, &batch));
            // The batch as the appender gets it: a view of the request frame.
            let RequestKind::Produce(req) = &body else {
                unreachable!("a produce frame")
            };
            let records = req.topic_data[0].partition_data[0]
                .records
                .clone()
                .expect("records");

            // The path works end to end: the response says the batch was appended.
            let chunks = ex
                .run(answer(shard, header.clone(), api_key, body.clone()))
                .expect("acks=-1 is answered");
            let r = ProduceResponse::decode(&mut response_body(&chunks), 9).expect("response");
            let pr = &r.responses[0].partition_responses[0];
            assert!(pr.error_code == 0 && pr.base_offset >= 0, "{pr:?}");

            g.throughput(Throughput::Bytes(batch.len() as u64));
            g.bench_function(BenchmarkId::new(format!("dispatch/{policy}"), size), |b| {
                b.iter_custom(|iters| {
                    time_dispatch(&ex, shard, (&header, api_key, &body), iters, true)
                })
            });
            g.bench_function(BenchmarkId::new(format!("partition/{policy}"), size), |b| {
                b.iter_custom(|iters| {
                    ex.run(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let r = p.produce(-1, records.clone()).await;
                            assert_eq!(r.error(), 0, "produce");
                        }
                        let elapsed = start.elapsed();
                        shard.tick_all(true, false).await;
                        elapsed
                    })
                })
            });
        }
    }
    g.finish();
    broker.stop(&ex);
}

/// One fetch shape: a topic of `partitions` partitions, each holding `batches_per_partition`
/// 16 KiB batches, fetched with a `partition_max_bytes` of 1 MiB.
struct FetchCase {
    id: &'static str,
    topic: &'static str,
    partitions: i32,
    batches_per_partition: usize,
}

const FETCH_CASES: [FetchCase; 2] = [
    FetchCase {
        id: "1_partition_x_1MiB",
        topic: "fetch-1p",
        partitions: 1,
        // 64 × 16 429 bytes: more than the 1 MiB a partition may return.
        batches_per_partition: 64,
    },
    FetchCase {
        id: "100_partitions_x_16KiB",
        topic: "fetch-100p",
        partitions: 100,
        batches_per_partition: 1,
    },
];
const PARTITION_MAX_BYTES: i32 = 1 << 20;

fn fetch(c: &mut Criterion) {
    let ex = executor();
    // Fetches are served from the batch cache; 100 partitions need no 32 MiB preallocation
    // each on the bench disk.
    let broker = Broker::start(&ex, |cfg| cfg.log_preallocate_bytes = 1 << 20);
    let shard = &broker.shard;
    let batch = batch_of(16);
    let mut g = c.benchmark_group("fetch");
    for case in &FETCH_CASES {
        broker.create_topic(&ex, case.topic, case.partitions, &[]);
        for p in 0..case.partitions {
            for _ in 0..case.batches_per_partition {
                broker.produce(&ex, case.topic, p, &batch);
            }
        }
        let (header, api_key, body) = decoded(fetch_frame(
            case.topic,
            case.partitions,
            PARTITION_MAX_BYTES,
        ));

        // What the shard's read returns for each partition: the engine's cached batches.
        let outs: Vec<ReadOut> = ex.run(async {
            let mut outs = Vec::new();
            for p in 0..case.partitions {
                let part = shard.partition(case.topic, p).expect("partition");
                let hw = part.high_watermark();
                let rr = part
                    .read(0, PARTITION_MAX_BYTES as usize, true)
                    .await
                    .expect("read");
                outs.push(ReadOut {
                    topic: case.topic.to_string(),
                    partition: p,
                    error: 0,
                    high_watermark: hw,
                    log_start_offset: part.log_start_offset(),
                    bytes: rr.bytes,
                    batches: rr.batches,
                    ..ReadOut::default()
                });
            }
            outs
        });
        let record_bytes: usize = outs.iter().map(|o| o.bytes).sum();
        assert!(record_bytes > 0);
        let topics = vec![FetchTopicOut {
            name: case.topic.to_string(),
            partitions: outs,
        }];

        // The whole path answers with every partition's records, as the encoder alone does.
        let chunks = ex
            .run(answer(shard, header.clone(), api_key, body.clone()))
            .expect("fetch is answered");
        let r = FetchResponse::decode(&mut response_body(&chunks), 12).expect("response");
        let served: usize = r.responses[0]
            .partitions
            .iter()
            .map(|p| {
                assert_eq!(p.error_code, 0, "{p:?}");
                p.records.as_ref().map_or(0, Bytes::len)
            })
            .sum();
        assert_eq!(served, record_bytes);
        let encoded = fetch::encode_fetch_response(12, 7, 0, 0, &topics).expect("fits an i32");
        assert_eq!(response_body(&encoded), response_body(&chunks));

        g.throughput(Throughput::Bytes(record_bytes as u64));
        g.bench_with_input(BenchmarkId::new("encode", case.id), &topics, |b, topics| {
            b.iter(|| fetch::encode_fetch_response(12, 7, 0, 0, black_box(topics)))
        });
        g.bench_function(BenchmarkId::new("dispatch", case.id), |b| {
            b.iter_custom(|iters| {
                time_dispatch(&ex, shard, (&header, api_key, &body), iters, false)
            })
        });
    }
    g.finish();
    broker.stop(&ex);
}

criterion_group!(benches, decode, fetch, produce);
criterion_main!(benches);

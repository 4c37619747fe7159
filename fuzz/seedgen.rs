//! Writes the seed corpus of the server's fuzz targets into `fuzz/seeds/<target>/`:
//!
//! * `request_body`: one realistic request per API and version the broker supports, in that
//!   target's input format (API index, version index, header flags, body);
//! * `frame_decode`: the same requests as wire frames (length prefix, header, body), plus
//!   pipelined pairs and an ApiVersions request at a version the broker does not speak;
//! * `config_parse`: broker config files (full, minimal, with `SHARDLOG_*` variables), and the
//!   dictionary `fuzz/dicts/config_parse.dict` of the config keys;
//! * `offsets_batch`: internal `__consumer_offsets` batches of real coordinator records;
//! * `controller_rpc`: a hello and controller RPC frames of every forwarded admin operation;
//! * `raft_frame`: raft messages of the types controller peers exchange, framed.
//!
//! Run from the repository root (it replaces the files it writes, nothing else):
//!
//! ```text
//! cargo run -p shardlog-server --example fuzz_seeds -- fuzz/seeds
//! ```
//!
//! The requests are encoded by `kafka-protocol`, the decoder the broker uses, so every seed
//! decodes; the fuzzer mutates from there.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use shardlog_coordinator::{GroupMetadataValue, MemberRecord, OffsetValue, Record};
use shardlog_engine::batch;
use shardlog_server::config::BrokerConfig;
use shardlog_server::groups::offsets_log::encode_offsets_batch;
use shardlog_server::wire::protocol::SUPPORTED_APIS;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn topic_name(x: &str) -> TopicName {
    TopicName(s(x))
}

fn group(x: &str) -> GroupId {
    GroupId(s(x))
}

const TOPIC_ID: u128 = 0x6ba7_b810_9dad_11d1_80b4_00c0_4fd4_30c8;

/// A request of `key` with realistic content, using only the fields `version` has.
fn request(key: ApiKey, v: i16) -> anyhow::Result<RequestKind> {
    Ok(match key {
        ApiKey::Produce => {
            let mut p = produce_request::PartitionProduceData::default();
            p.index = 0;
            p.records = Some(Bytes::from(batch::build(0, 3, 16, 1_700_000_000_000)));
            let mut t = produce_request::TopicProduceData::default();
            t.name = topic_name("orders");
            t.partition_data = vec![p];
            let mut r = ProduceRequest::default();
            r.transactional_id = None;
            r.acks = -1;
            r.timeout_ms = 30_000;
            r.topic_data = vec![t];
            RequestKind::Produce(r)
        }
        ApiKey::Fetch => {
            let mut p = fetch_request::FetchPartition::default();
            p.partition = 0;
            p.fetch_offset = 42;
            p.partition_max_bytes = 1 << 20;
            if v >= 5 {
                p.log_start_offset = -1;
            }
            if v >= 9 {
                p.current_leader_epoch = 0;
            }
            if v >= 12 {
                p.last_fetched_epoch = -1;
            }
            let mut t = fetch_request::FetchTopic::default();
            t.topic = topic_name("orders");
            t.partitions = vec![p];
            let mut r = FetchRequest::default();
            r.replica_id = BrokerId(-1);
            r.max_wait_ms = 500;
            r.min_bytes = 1;
            r.max_bytes = 50 << 20;
            r.isolation_level = 0;
            r.topics = vec![t];
            if v >= 7 {
                r.session_id = 0;
                r.session_epoch = -1;
                let mut f = fetch_request::ForgottenTopic::default();
                f.topic = topic_name("old");
                f.partitions = vec![1, 2];
                r.forgotten_topics_data = vec![f];
            }
            if v >= 11 {
                r.rack_id = s("rack-a");
            }
            RequestKind::Fetch(r)
        }
        ApiKey::ListOffsets => {
            let mut p = list_offsets_request::ListOffsetsPartition::default();
            p.partition_index = 0;
            p.timestamp = -1;
            if v >= 4 {
                p.current_leader_epoch = 0;
            }
            let mut t = list_offsets_request::ListOffsetsTopic::default();
            t.name = topic_name("orders");
            t.partitions = vec![p];
            let mut r = ListOffsetsRequest::default();
            r.replica_id = BrokerId(-1);
            if v >= 2 {
                r.isolation_level = 1;
            }
            r.topics = vec![t];
            RequestKind::ListOffsets(r)
        }
        ApiKey::Metadata => {
            let mut t = metadata_request::MetadataRequestTopic::default();
            t.name = Some(topic_name("orders"));
            let mut r = MetadataRequest::default();
            r.topics = Some(vec![t]);
            if v >= 4 {
                r.allow_auto_topic_creation = true;
            }
            if (8..=10).contains(&v) {
                r.include_cluster_authorized_operations = true;
            }
            RequestKind::Metadata(r)
        }
        ApiKey::ApiVersions => {
            let mut r = ApiVersionsRequest::default();
            if v >= 3 {
                r.client_software_name = s("librdkafka");
                r.client_software_version = s("2.3.0");
            }
            RequestKind::ApiVersions(r)
        }
        ApiKey::CreateTopics => {
            let mut c = create_topics_request::CreatableTopicConfig::default();
            c.name = s("retention.ms");
            c.value = Some(s("86400000"));
            let mut t = create_topics_request::CreatableTopic::default();
            t.name = topic_name("orders");
            t.num_partitions = 3;
            t.replication_factor = 1;
            t.configs = vec![c];
            let mut t2 = create_topics_request::CreatableTopic::default();
            t2.name = topic_name("assigned");
            t2.num_partitions = -1;
            t2.replication_factor = -1;
            let mut a = create_topics_request::CreatableReplicaAssignment::default();
            a.partition_index = 0;
            a.broker_ids = vec![BrokerId(0)];
            t2.assignments = vec![a];
            let mut r = CreateTopicsRequest::default();
            r.topics = vec![t, t2];
            r.timeout_ms = 30_000;
            RequestKind::CreateTopics(r)
        }
        ApiKey::DeleteTopics => {
            let mut r = DeleteTopicsRequest::default();
            r.timeout_ms = 30_000;
            if v >= 6 {
                let mut a = delete_topics_request::DeleteTopicState::default();
                a.name = Some(topic_name("orders"));
                let mut b = delete_topics_request::DeleteTopicState::default();
                b.topic_id = uuid::Uuid::from_u128(TOPIC_ID);
                r.topics = vec![a, b];
            } else {
                r.topic_names = vec![topic_name("orders"), topic_name("other")];
            }
            RequestKind::DeleteTopics(r)
        }
        ApiKey::DeleteRecords => {
            let mut p = delete_records_request::DeleteRecordsPartition::default();
            p.partition_index = 0;
            p.offset = 100;
            let mut t = delete_records_request::DeleteRecordsTopic::default();
            t.name = topic_name("orders");
            t.partitions = vec![p];
            let mut r = DeleteRecordsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 30_000;
            RequestKind::DeleteRecords(r)
        }
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = None;
            r.transaction_timeout_ms = 60_000;
            if v >= 3 {
                r.producer_id = ProducerId(-1);
                r.producer_epoch = -1;
            }
            RequestKind::InitProducerId(r)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
            p.partition = 0;
            p.current_leader_epoch = 0;
            p.leader_epoch = 0;
            let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
            t.topic = topic_name("orders");
            t.partitions = vec![p];
            let mut r = OffsetForLeaderEpochRequest::default();
            if v >= 3 {
                r.replica_id = BrokerId(-1);
            }
            r.topics = vec![t];
            RequestKind::OffsetForLeaderEpoch(r)
        }
        ApiKey::DescribeConfigs => {
            let mut t = describe_configs_request::DescribeConfigsResource::default();
            t.resource_type = 2;
            t.resource_name = s("orders");
            t.configuration_keys = Some(vec![s("retention.ms"), s("segment.bytes")]);
            let mut b = describe_configs_request::DescribeConfigsResource::default();
            b.resource_type = 4;
            b.resource_name = s("0");
            b.configuration_keys = None;
            let mut r = DescribeConfigsRequest::default();
            r.resources = vec![t, b];
            r.include_synonyms = true;
            if v >= 3 {
                r.include_documentation = true;
            }
            RequestKind::DescribeConfigs(r)
        }
        ApiKey::AlterConfigs => {
            let mut c = alter_configs_request::AlterableConfig::default();
            c.name = s("retention.ms");
            c.value = Some(s("3600000"));
            let mut d = alter_configs_request::AlterableConfig::default();
            d.name = s("cleanup.policy");
            d.value = Some(s("compact"));
            let mut t = alter_configs_request::AlterConfigsResource::default();
            t.resource_type = 2;
            t.resource_name = s("orders");
            t.configs = vec![c, d];
            let mut r = AlterConfigsRequest::default();
            r.resources = vec![t];
            r.validate_only = true;
            RequestKind::AlterConfigs(r)
        }
        ApiKey::CreatePartitions => {
            let mut t = create_partitions_request::CreatePartitionsTopic::default();
            t.name = topic_name("orders");
            t.count = 6;
            t.assignments = None;
            let mut r = CreatePartitionsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 30_000;
            RequestKind::CreatePartitions(r)
        }
        ApiKey::IncrementalAlterConfigs => {
            let ops = [
                ("retention.ms", 0, Some("3600000")),
                ("segment.bytes", 1, None),
                ("cleanup.policy", 2, Some("delete")),
            ];
            let mut t = incremental_alter_configs_request::AlterConfigsResource::default();
            t.resource_type = 2;
            t.resource_name = s("orders");
            t.configs = ops
                .iter()
                .map(|&(k, op, val)| {
                    let mut c = incremental_alter_configs_request::AlterableConfig::default();
                    c.name = s(k);
                    c.config_operation = op;
                    c.value = val.map(s);
                    c
                })
                .collect();
            let mut r = IncrementalAlterConfigsRequest::default();
            r.resources = vec![t];
            RequestKind::IncrementalAlterConfigs(r)
        }
        ApiKey::DescribeCluster => {
            let mut r = DescribeClusterRequest::default();
            r.include_cluster_authorized_operations = true;
            if v >= 1 {
                r.endpoint_type = 1;
            }
            RequestKind::DescribeCluster(r)
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if v >= 4 {
                r.coordinator_keys = vec![s("payments"), s("audit")];
            } else {
                r.key = s("payments");
            }
            RequestKind::FindCoordinator(r)
        }
        ApiKey::JoinGroup => {
            let mut p = join_group_request::JoinGroupRequestProtocol::default();
            p.name = s("range");
            p.metadata = Bytes::from_static(&[
                0, 1, 0, 0, 0, 1, 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0xff, 0xff, 0xff, 0xff,
            ]);
            let mut r = JoinGroupRequest::default();
            r.group_id = group("payments");
            r.session_timeout_ms = 10_000;
            if v >= 1 {
                r.rebalance_timeout_ms = 30_000;
            }
            r.member_id = s("");
            r.protocol_type = s("consumer");
            r.protocols = vec![p];
            if v >= 8 {
                r.reason = Some(s("rebalance"));
            }
            RequestKind::JoinGroup(r)
        }
        ApiKey::SyncGroup => {
            let mut a = sync_group_request::SyncGroupRequestAssignment::default();
            a.member_id = s("consumer-1-3f2a");
            a.assignment = Bytes::from_static(&[
                0, 1, 0, 0, 0, 1, 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 1, 0, 0, 0, 0,
                0xff, 0xff, 0xff, 0xff,
            ]);
            let mut r = SyncGroupRequest::default();
            r.group_id = group("payments");
            r.generation_id = 1;
            r.member_id = s("consumer-1-3f2a");
            if v >= 5 {
                r.protocol_type = Some(s("consumer"));
                r.protocol_name = Some(s("range"));
            }
            r.assignments = vec![a];
            RequestKind::SyncGroup(r)
        }
        ApiKey::Heartbeat => {
            let mut r = HeartbeatRequest::default();
            r.group_id = group("payments");
            r.generation_id = 1;
            r.member_id = s("consumer-1-3f2a");
            if v >= 3 {
                r.group_instance_id = Some(s("instance-1"));
            }
            RequestKind::Heartbeat(r)
        }
        ApiKey::LeaveGroup => {
            let mut r = LeaveGroupRequest::default();
            r.group_id = group("payments");
            if v >= 3 {
                let mut m = leave_group_request::MemberIdentity::default();
                m.member_id = s("consumer-1-3f2a");
                m.group_instance_id = None;
                if v >= 5 {
                    m.reason = Some(s("shutdown"));
                }
                r.members = vec![m];
            } else {
                r.member_id = s("consumer-1-3f2a");
            }
            RequestKind::LeaveGroup(r)
        }
        ApiKey::OffsetCommit => {
            let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
            p.partition_index = 0;
            p.committed_offset = 1234;
            if v >= 6 {
                p.committed_leader_epoch = -1;
            }
            p.committed_metadata = Some(s(""));
            let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
            t.name = topic_name("orders");
            t.partitions = vec![p];
            let mut r = OffsetCommitRequest::default();
            r.group_id = group("payments");
            r.generation_id_or_member_epoch = 1;
            r.member_id = s("consumer-1-3f2a");
            if (2..=4).contains(&v) {
                r.retention_time_ms = -1;
            }
            r.topics = vec![t];
            RequestKind::OffsetCommit(r)
        }
        ApiKey::OffsetFetch => {
            let mut r = OffsetFetchRequest::default();
            if v >= 8 {
                let mut t = offset_fetch_request::OffsetFetchRequestTopics::default();
                t.name = topic_name("orders");
                t.partition_indexes = vec![0, 1];
                let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                g.group_id = group("payments");
                g.topics = Some(vec![t]);
                let mut all = offset_fetch_request::OffsetFetchRequestGroup::default();
                all.group_id = group("audit");
                all.topics = None;
                r.groups = vec![g, all];
            } else {
                let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                t.name = topic_name("orders");
                t.partition_indexes = vec![0, 1];
                r.group_id = group("payments");
                r.topics = Some(vec![t]);
            }
            if v >= 7 {
                r.require_stable = true;
            }
            RequestKind::OffsetFetch(r)
        }
        ApiKey::ListGroups => {
            let mut r = ListGroupsRequest::default();
            if v >= 4 {
                r.states_filter = vec![s("Stable"), s("Empty")];
            }
            if v >= 5 {
                r.types_filter = vec![s("classic")];
            }
            RequestKind::ListGroups(r)
        }
        ApiKey::DescribeGroups => {
            let mut r = DescribeGroupsRequest::default();
            r.groups = vec![group("payments"), group("audit")];
            if v >= 3 {
                r.include_authorized_operations = true;
            }
            RequestKind::DescribeGroups(r)
        }
        ApiKey::DeleteGroups => {
            let mut r = DeleteGroupsRequest::default();
            r.groups_names = vec![group("payments")];
            RequestKind::DeleteGroups(r)
        }
        ApiKey::OffsetDelete => {
            let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
            p.partition_index = 0;
            let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
            t.name = topic_name("orders");
            t.partitions = vec![p];
            let mut r = OffsetDeleteRequest::default();
            r.group_id = group("payments");
            r.topics = vec![t];
            RequestKind::OffsetDelete(r)
        }
        ApiKey::DescribeLogDirs => {
            let mut t = describe_log_dirs_request::DescribableLogDirTopic::default();
            t.topic = topic_name("orders");
            t.partitions = vec![0, 1];
            let mut r = DescribeLogDirsRequest::default();
            r.topics = Some(vec![t]);
            RequestKind::DescribeLogDirs(r)
        }
        other => anyhow::bail!("no seed request for {other:?}: add one"),
    })
}

/// Header (with a client id) and body of a request.
fn header_and_body(key: ApiKey, v: i16, corr: i32) -> anyhow::Result<(BytesMut, BytesMut)> {
    let mut h = RequestHeader::default();
    h.request_api_key = key as i16;
    h.request_api_version = v;
    h.correlation_id = corr;
    h.client_id = Some(s("seedgen"));
    let mut header = BytesMut::new();
    h.encode(&mut header, key.request_header_version(v))?;
    let mut body = BytesMut::new();
    request(key, v)?
        .encode(&mut body, v)
        .with_context(|| format!("{key:?} v{v}"))?;
    Ok((header, body))
}

fn frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + header.len() + body.len());
    f.put_i32((header.len() + body.len()) as i32);
    f.extend_from_slice(header);
    f.extend_from_slice(body);
    f
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(dir.join(name), bytes).with_context(|| format!("write {name}"))
}

fn fresh_dir(root: &Path, target: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn requests(root: &Path) -> anyhow::Result<usize> {
    let bodies = fresh_dir(root, "request_body")?;
    let frames = fresh_dir(root, "frame_decode")?;
    let mut n = 0;
    let mut corr = 1;
    for (index, &(key, lo, hi)) in SUPPORTED_APIS.iter().enumerate() {
        for v in lo..=hi {
            let (header, body) = header_and_body(key, v, corr)?;
            corr += 1;
            let name = format!("{key:?}-v{v}");
            let mut input = vec![index as u8, (v - lo) as u8, 0];
            input.extend_from_slice(&body);
            write(&bodies, &name, &input)?;
            write(&frames, &name, &frame(&header, &body))?;
            n += 1;
        }
    }
    // Pipelined: a Metadata request followed by a Produce request in one read.
    let (h1, b1) = header_and_body(ApiKey::Metadata, 12, 100)?;
    let (h2, b2) = header_and_body(ApiKey::Produce, 9, 101)?;
    let mut both = frame(&h1, &b1);
    both.extend_from_slice(&frame(&h2, &b2));
    write(&frames, "pipelined-metadata-produce", &both)?;
    // ApiVersions at a version the broker does not speak (answered with UNSUPPORTED_VERSION).
    let mut h = BytesMut::new();
    h.put_i16(ApiKey::ApiVersions as i16);
    h.put_i16(99);
    h.put_i32(7);
    h.put_i16(-1);
    write(&frames, "ApiVersions-unsupported", &frame(&h, &[]))?;
    Ok(n + 2)
}

fn configs(root: &Path) -> anyhow::Result<usize> {
    let dir = fresh_dir(root, "config_parse")?;
    let full = BrokerConfig {
        cores: 1,
        advertised: Some("broker-0.example:9092".into()),
        ..BrokerConfig::default()
    };
    let text = toml::to_string(&full.as_table())?;
    write(&dir, "full.toml", text.as_bytes())?;
    write(
        &dir,
        "minimal.toml",
        b"listen = \"0.0.0.0:9092\"\ndata_dir = \"/var/lib/shardlog\"\ncores = 1\n",
    )?;
    write(
        &dir,
        "flush-and-groups.toml",
        b"default_flush = \"interval\"\nflush_interval_ms = 200\nlog_format = \"json\"\n\
          group_initial_rebalance_delay_ms = 0\noffsets_topic_partitions = 4\n\
          admin_listen = \"\"\nmax_frame_bytes = 1048576\ndefault_max_message_bytes = 1048576\n",
    )?;
    // A libFuzzer dictionary of the keys, as file keys and as variable names.
    let mut dict = String::from("# Generated by fuzz/seedgen.rs.\nsep=\"\\x00\"\nnl=\"\\x0a\"\n");
    for key in full.as_table().keys() {
        dict.push_str(&format!(
            "\"{key} = \"\n\"SHARDLOG_{}=\"\n",
            key.to_uppercase()
        ));
    }
    let dicts = root.join("../dicts");
    std::fs::create_dir_all(&dicts).context("create dicts")?;
    write(&dicts, "config_parse.dict", dict.as_bytes())?;
    write(
        &dir,
        "with-env",
        b"cores = 1\n\0SHARDLOG_LISTEN=127.0.0.1:19092\0SHARDLOG_DEFAULT_PARTITIONS=3\0\
          SHARDLOG_DEFAULT_FLUSH=never\0SHARDLOG_ADVERTISED=localhost:19092\0SHARDLOG_BIN=/x",
    )?;
    Ok(4)
}

fn offsets_batches(root: &Path) -> anyhow::Result<usize> {
    let dir = fresh_dir(root, "offsets_batch")?;
    let records = [
        Record::Offset {
            group_id: "payments".into(),
            topic: "orders".into(),
            partition: 0,
            value: Some(OffsetValue {
                offset: 1234,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 1_700_000_000_000,
            }),
        },
        Record::Offset {
            group_id: "payments".into(),
            topic: "orders".into(),
            partition: 1,
            value: None,
        },
        Record::GroupMetadata {
            group_id: "payments".into(),
            value: Some(GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation_id: 3,
                protocol_name: Some("range".into()),
                leader: Some("consumer-1-3f2a".into()),
                state_timestamp_ms: 1_700_000_000_000,
                members: vec![MemberRecord {
                    member_id: "consumer-1-3f2a".into(),
                    group_instance_id: None,
                    client_id: "rdkafka".into(),
                    client_host: "/10.0.0.7".into(),
                    rebalance_timeout_ms: 30_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::from_static(&[
                        0, 1, 0, 0, 0, 1, 0, 6, b'o', b'r', b'd', b'e', b'r', b's',
                    ]),
                    assignment: Bytes::new(),
                }],
            }),
        },
        Record::GroupMetadata {
            group_id: String::new(),
            value: None,
        },
    ];
    let values = records
        .iter()
        .map(|r| r.encode().context("encode record"))
        .collect::<anyhow::Result<Vec<Bytes>>>()?;
    write(
        &dir,
        "all-kinds",
        &encode_offsets_batch(&values, 1_700_000_000_000),
    )?;
    for (i, v) in values.iter().enumerate() {
        write(
            &dir,
            &format!("single-{i}"),
            &encode_offsets_batch(std::slice::from_ref(v), 1_700_000_000_000),
        )?;
    }
    Ok(1 + values.len())
}

fn controller(root: &Path) -> anyhow::Result<usize> {
    use shardlog_server::controller::rpc::{self, ForwardReq, Hello, RpcKind};
    let dir = fresh_dir(root, "controller_rpc")?;
    let reqs = [
        ForwardReq::CreateTopics {
            topics: vec![shardlog_server::mesh::messages::NewTopic {
                name: "t".into(),
                partitions: 3,
                replication_factor: 3,
                assignments: Vec::new(),
                configs: vec![("retention.ms".into(), "1000".into())],
            }],
            validate_only: false,
        },
        ForwardReq::DeleteTopics(vec!["t".into()]),
        ForwardReq::CreatePartitions {
            topics: vec![("t".into(), 6)],
            validate_only: true,
        },
        ForwardReq::AlterConfigs {
            topics: vec![("t".into(), vec![("segment.ms".into(), 0, Some("5".into()))])],
            replace: false,
            validate_only: false,
        },
        ForwardReq::ProducerIdBlock,
    ];
    let mut n = 0;
    for (i, r) in reqs.iter().enumerate() {
        let mut input = rpc::encode_hello(Hello {
            purpose: rpc::PURPOSE_RPC,
            node: 2,
        })
        .to_vec();
        input.extend(rpc::encode_frame(
            RpcKind::Forward,
            false,
            i as u64,
            &rpc::to_body(r),
        )?);
        write(&dir, &format!("forward-{i}"), &input)?;
        n += 1;
    }
    let dir = fresh_dir(root, "raft_frame")?;
    use shardlog_quorum::{encode_message, Message, MessageType};
    for (i, ty) in [
        MessageType::MsgAppend,
        MessageType::MsgAppendResponse,
        MessageType::MsgRequestVote,
        MessageType::MsgRequestPreVote,
        MessageType::MsgHeartbeat,
        MessageType::MsgHeartbeatResponse,
    ]
    .into_iter()
    .enumerate()
    {
        let mut m = Message::default();
        m.set_msg_type(ty);
        m.from = 1;
        m.to = 2;
        m.term = 3;
        m.index = 7;
        m.log_term = 2;
        m.commit = 6;
        write(&dir, &format!("msg-{i}"), &encode_message(&m, 1 << 16)?)?;
        n += 1;
    }
    Ok(n)
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    ensure!(
        root.is_dir(),
        "{} is not a directory (run from the repository root)",
        root.display()
    );
    let n = requests(&root)?;
    let c = configs(&root)?;
    let o = offsets_batches(&root)?;
    let q = controller(&root)?;
    println!("wrote {n} request seeds (x2 targets), {c} config seeds, {o} offsets batches, {q} controller seeds");
    Ok(())
}

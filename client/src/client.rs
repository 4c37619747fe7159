//! Cluster-level client: bootstrap, metadata cache, one connection per broker, admin calls,
//! offsets, producer ids and the classic group protocol calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, GroupId, HeartbeatRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListOffsetsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::conn::{Connection, ConnectionOptions};
use crate::error::{ClientError, Result};

/// `ListOffsets` timestamp meaning "the log end offset (high watermark)".
pub const LATEST: i64 = -1;
/// `ListOffsets` timestamp meaning "the log start offset".
pub const EARLIEST: i64 = -2;

/// Client configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of one or more brokers.
    pub bootstrap: Vec<String>,
    /// Connection options (client id, in-flight limit, timeouts).
    pub conn: ConnectionOptions,
}

impl ClientConfig {
    /// A config for one bootstrap address with defaults otherwise.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ClientConfig {
            bootstrap: bootstrap
                .into()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            conn: ConnectionOptions::default(),
        }
    }
}

/// One partition in the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    /// Partition index.
    pub partition: i32,
    /// Leader broker id (-1: none).
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Partition-level error code.
    pub error_code: i16,
}

/// One topic in the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
    /// Topic-level error code.
    pub error_code: i16,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionMeta>,
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i16,
    /// Topic configs (e.g. `flush.messages` = `1`).
    pub configs: Vec<(String, String)>,
}

/// Result of a JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinResult {
    /// Generation.
    pub generation_id: i32,
    /// Chosen protocol (assignor) name.
    pub protocol_name: Option<String>,
    /// Leader member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Members with their subscription metadata (only for the leader).
    pub members: Vec<(String, Bytes)>,
}

#[derive(Default)]
struct State {
    brokers: HashMap<i32, String>,
    conns: HashMap<i32, Arc<Connection>>,
    topics: HashMap<String, TopicMeta>,
}

/// A client of a Kafka-compatible cluster.
pub struct Client {
    cfg: ClientConfig,
    bootstrap: Mutex<Option<Arc<Connection>>>,
    state: Mutex<State>,
    connect_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.cfg.bootstrap)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn check(code: i16, context: impl FnOnce() -> String) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(ClientError::kafka(code, context()))
    }
}

impl Client {
    /// Connects to the first reachable bootstrap broker and loads the broker list.
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        if cfg.bootstrap.is_empty() {
            return Err(ClientError::InvalidArgument("no bootstrap address".into()));
        }
        let client = Client {
            cfg,
            bootstrap: Mutex::new(None),
            state: Mutex::new(State::default()),
            connect_lock: tokio::sync::Mutex::new(()),
        };
        client.refresh_metadata(&[]).await?;
        Ok(client)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    async fn bootstrap_conn(&self) -> Result<Arc<Connection>> {
        if let Some(c) = lock(&self.bootstrap).as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let _g = self.connect_lock.lock().await;
        if let Some(c) = lock(&self.bootstrap).as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let mut last = None;
        for addr in &self.cfg.bootstrap {
            match Connection::connect(addr, &self.cfg.conn).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    *lock(&self.bootstrap) = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(addr, error = %e, "bootstrap connect failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::InvalidArgument("no bootstrap address".into())))
    }

    /// Any live connection (for cluster-wide requests such as Metadata or CreateTopics).
    pub async fn any_conn(&self) -> Result<Arc<Connection>> {
        self.bootstrap_conn().await
    }

    /// The connection to broker `node_id`, opened on first use and reopened after a failure.
    pub async fn broker_conn(&self, node_id: i32) -> Result<Arc<Connection>> {
        {
            let st = lock(&self.state);
            if let Some(c) = st.conns.get(&node_id) {
                if !c.is_closed() {
                    return Ok(c.clone());
                }
            }
        }
        let _g = self.connect_lock.lock().await;
        let addr = {
            let st = lock(&self.state);
            if let Some(c) = st.conns.get(&node_id) {
                if !c.is_closed() {
                    return Ok(c.clone());
                }
            }
            st.brokers.get(&node_id).cloned()
        };
        let addr =
            addr.ok_or_else(|| ClientError::NoLeader(format!("broker {node_id} unknown")))?;
        let c = Arc::new(Connection::connect(&addr, &self.cfg.conn).await?);
        lock(&self.state).conns.insert(node_id, c.clone());
        Ok(c)
    }

    /// Refreshes the broker list and the metadata of `topics` (none: brokers only).
    pub async fn refresh_metadata(&self, topics: &[String]) -> Result<Vec<TopicMeta>> {
        self.metadata_request(topics, false).await
    }

    /// Metadata of a topic, asking the cluster to create it if it does not exist (it does so
    /// when its `auto.create.topics.enable` is on, as for Kafka's console producer); error
    /// when the topic still does not exist.
    pub async fn topic_meta_auto_create(&self, name: &str) -> Result<TopicMeta> {
        let got = self.metadata_request(&[name.to_string()], true).await?;
        match got.into_iter().find(|t| t.name == name) {
            Some(t) if t.error_code == 0 => Ok(t),
            Some(t) => Err(ClientError::kafka(t.error_code, format!("metadata {name}"))),
            None => Err(ClientError::UnknownTopicOrPartition(name.to_string())),
        }
    }

    async fn metadata_request(
        &self,
        topics: &[String],
        allow_auto_topic_creation: bool,
    ) -> Result<Vec<TopicMeta>> {
        let conn = self.bootstrap_conn().await?;
        let mut req = MetadataRequest::default();
        req.topics = Some(
            topics
                .iter()
                .map(|t| {
                    let mut mt = MetadataRequestTopic::default();
                    mt.name = Some(TopicName(StrBytes::from_string(t.clone())));
                    mt
                })
                .collect(),
        );
        req.allow_auto_topic_creation = allow_auto_topic_creation;
        let resp = conn.request(&req).await?;
        let mut out = Vec::new();
        let mut st = lock(&self.state);
        for b in &resp.brokers {
            let addr = format!("{}:{}", b.host.as_str(), b.port);
            if st.brokers.get(&b.node_id.0) != Some(&addr) {
                st.conns.remove(&b.node_id.0);
                st.brokers.insert(b.node_id.0, addr);
            }
        }
        for t in resp.topics {
            let name = t.name.map(|n| n.0.as_str().to_string()).unwrap_or_default();
            let mut partitions: Vec<PartitionMeta> = t
                .partitions
                .iter()
                .map(|p| PartitionMeta {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            let meta = TopicMeta {
                name: name.clone(),
                error_code: t.error_code,
                partitions,
            };
            if t.error_code == 0 {
                st.topics.insert(name, meta.clone());
            } else {
                st.topics.remove(&name);
            }
            out.push(meta);
        }
        Ok(out)
    }

    /// Cached metadata of a topic.
    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        lock(&self.state).topics.get(name).cloned()
    }

    /// Partition count of a cached topic (no copy of the metadata).
    pub fn partition_count(&self, name: &str) -> Option<usize> {
        lock(&self.state)
            .topics
            .get(name)
            .map(|t| t.partitions.len())
    }

    /// Partition count of a topic, fetching its metadata if not cached.
    pub async fn partition_count_or_fetch(&self, name: &str) -> Result<usize> {
        match self.partition_count(name) {
            Some(n) => Ok(n),
            None => Ok(self.topic_meta(name).await?.partitions.len()),
        }
    }

    /// Metadata of a topic, fetched if not cached; error if the broker does not know it.
    pub async fn topic_meta(&self, name: &str) -> Result<TopicMeta> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let got = self.refresh_metadata(&[name.to_string()]).await?;
        match got.into_iter().find(|t| t.name == name) {
            Some(t) if t.error_code == 0 => Ok(t),
            Some(t) => Err(ClientError::kafka(t.error_code, format!("metadata {name}"))),
            None => Err(ClientError::UnknownTopicOrPartition(name.to_string())),
        }
    }

    /// The leader of a partition (from the cache).
    pub fn leader(&self, topic: &str, partition: i32) -> Result<i32> {
        let st = lock(&self.state);
        let t = st
            .topics
            .get(topic)
            .ok_or_else(|| ClientError::UnknownTopicOrPartition(topic.to_string()))?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| ClientError::UnknownTopicOrPartition(format!("{topic}-{partition}")))?;
        if p.leader < 0 {
            return Err(ClientError::NoLeader(format!("{topic}-{partition}")));
        }
        Ok(p.leader)
    }

    /// Creates topics. `TOPIC_ALREADY_EXISTS` counts as success when `ok_if_exists`.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        timeout: Duration,
        ok_if_exists: bool,
    ) -> Result<()> {
        let conn = self.any_conn().await?;
        let mut req = CreateTopicsRequest::default();
        req.timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        req.topics = topics
            .iter()
            .map(|t| {
                let mut ct = CreatableTopic::default();
                ct.name = TopicName(StrBytes::from_string(t.name.clone()));
                ct.num_partitions = t.partitions;
                ct.replication_factor = t.replication_factor;
                ct.configs = t
                    .configs
                    .iter()
                    .map(|(k, v)| {
                        let mut c = CreatableTopicConfig::default();
                        c.name = StrBytes::from_string(k.clone());
                        c.value = Some(StrBytes::from_string(v.clone()));
                        c
                    })
                    .collect();
                ct
            })
            .collect();
        let resp = conn.send_with_timeout(&req, timeout).await?.wait().await?;
        for t in resp.topics {
            if t.error_code == 36 && ok_if_exists {
                continue;
            }
            let name = t.name.0.as_str().to_string();
            let msg = t
                .error_message
                .map(|m| m.as_str().to_string())
                .unwrap_or_default();
            check(t.error_code, || format!("create topic {name}: {msg}"))?;
        }
        Ok(())
    }

    /// Deletes topics. `UNKNOWN_TOPIC_OR_PARTITION` counts as success when `ok_if_missing`.
    pub async fn delete_topics(
        &self,
        names: &[String],
        timeout: Duration,
        ok_if_missing: bool,
    ) -> Result<()> {
        let conn = self.any_conn().await?;
        let mut req = DeleteTopicsRequest::default();
        req.timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        req.topic_names = names
            .iter()
            .map(|n| TopicName(StrBytes::from_string(n.clone())))
            .collect();
        let resp = conn.send_with_timeout(&req, timeout).await?.wait().await?;
        for r in resp.responses {
            if r.error_code == 3 && ok_if_missing {
                continue;
            }
            let name = r.name.map(|n| n.0.as_str().to_string()).unwrap_or_default();
            check(r.error_code, || format!("delete topic {name}"))?;
        }
        let mut st = lock(&self.state);
        for n in names {
            st.topics.remove(n);
        }
        Ok(())
    }

    /// Offsets of the given partitions at `timestamp` ([`LATEST`], [`EARLIEST`] or a time in
    /// ms), asking each partition's leader. Returns `(partition, offset)` pairs.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<(i32, i64)>> {
        self.topic_meta(topic).await?;
        let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
        for &p in partitions {
            by_leader.entry(self.leader(topic, p)?).or_default().push(p);
        }
        let mut out = Vec::with_capacity(partitions.len());
        for (leader, parts) in by_leader {
            let conn = self.broker_conn(leader).await?;
            let mut req = ListOffsetsRequest::default();
            req.replica_id = BrokerId(-1);
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName(StrBytes::from_string(topic.to_string()));
            t.partitions = parts
                .iter()
                .map(|&p| {
                    let mut lp = ListOffsetsPartition::default();
                    lp.partition_index = p;
                    lp.current_leader_epoch = -1;
                    lp.timestamp = timestamp;
                    lp
                })
                .collect();
            req.topics = vec![t];
            let resp = conn.request(&req).await?;
            for t in resp.topics {
                for p in t.partitions {
                    check(p.error_code, || {
                        format!("list offsets {topic}-{}", p.partition_index)
                    })?;
                    out.push((p.partition_index, p.offset));
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Allocates a producer id for an idempotent producer: `(producer_id, epoch)`.
    pub async fn init_producer_id(&self) -> Result<(i64, i16)> {
        let conn = self.any_conn().await?;
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = 60_000;
        req.producer_id = kafka_protocol::messages::ProducerId(-1);
        req.producer_epoch = -1;
        let resp = conn.request(&req).await?;
        check(resp.error_code, || "InitProducerId".to_string())?;
        Ok((resp.producer_id.0, resp.producer_epoch))
    }

    /// Finds the coordinator of a consumer group and returns a connection to it.
    pub async fn group_coordinator(&self, group: &str) -> Result<Arc<Connection>> {
        let conn = self.any_conn().await?;
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_string(group.to_string());
        req.key_type = 0;
        let resp = conn.request(&req).await?;
        check(resp.error_code, || format!("FindCoordinator {group}"))?;
        let addr = format!("{}:{}", resp.host.as_str(), resp.port);
        {
            let mut st = lock(&self.state);
            st.brokers.entry(resp.node_id.0).or_insert(addr);
        }
        self.broker_conn(resp.node_id.0).await
    }

    /// JoinGroup with the `consumer` protocol type and one protocol (`name`, `metadata`).
    #[allow(clippy::too_many_arguments)]
    pub async fn join_group(
        &self,
        coord: &Connection,
        group: &str,
        member_id: &str,
        session_timeout: Duration,
        rebalance_timeout: Duration,
        protocol: &str,
        metadata: Bytes,
    ) -> Result<JoinResult> {
        let mut req = JoinGroupRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.session_timeout_ms = session_timeout.as_millis() as i32;
        req.rebalance_timeout_ms = rebalance_timeout.as_millis() as i32;
        req.member_id = StrBytes::from_string(member_id.to_string());
        req.protocol_type = StrBytes::from_static_str("consumer");
        let mut p = JoinGroupRequestProtocol::default();
        p.name = StrBytes::from_string(protocol.to_string());
        p.metadata = metadata;
        req.protocols = vec![p];
        let resp = coord
            .send_with_timeout(&req, rebalance_timeout)
            .await?
            .wait()
            .await?;
        if resp.error_code == 79 {
            // MEMBER_ID_REQUIRED: the response carries the id to join again with.
            return Ok(JoinResult {
                generation_id: -1,
                protocol_name: None,
                leader: String::new(),
                member_id: resp.member_id.as_str().to_string(),
                members: Vec::new(),
            });
        }
        check(resp.error_code, || format!("JoinGroup {group}"))?;
        Ok(JoinResult {
            generation_id: resp.generation_id,
            protocol_name: resp.protocol_name.map(|s| s.as_str().to_string()),
            leader: resp.leader.as_str().to_string(),
            member_id: resp.member_id.as_str().to_string(),
            members: resp
                .members
                .into_iter()
                .map(|m| (m.member_id.as_str().to_string(), m.metadata))
                .collect(),
        })
    }

    /// SyncGroup; the leader passes every member's assignment, others pass none.
    pub async fn sync_group(
        &self,
        coord: &Connection,
        group: &str,
        generation_id: i32,
        member_id: &str,
        protocol: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes> {
        let mut req = SyncGroupRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.generation_id = generation_id;
        req.member_id = StrBytes::from_string(member_id.to_string());
        req.protocol_type = Some(StrBytes::from_static_str("consumer"));
        req.protocol_name = Some(StrBytes::from_string(protocol.to_string()));
        req.assignments = assignments
            .into_iter()
            .map(|(m, a)| {
                let mut s = SyncGroupRequestAssignment::default();
                s.member_id = StrBytes::from_string(m);
                s.assignment = a;
                s
            })
            .collect();
        let resp = coord.request(&req).await?;
        check(resp.error_code, || format!("SyncGroup {group}"))?;
        Ok(resp.assignment)
    }

    /// Heartbeat; returns the error code (27 REBALANCE_IN_PROGRESS means rejoin).
    pub async fn heartbeat(
        &self,
        coord: &Connection,
        group: &str,
        generation_id: i32,
        member_id: &str,
    ) -> Result<i16> {
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.generation_id = generation_id;
        req.member_id = StrBytes::from_string(member_id.to_string());
        Ok(coord.request(&req).await?.error_code)
    }

    /// LeaveGroup for one member.
    pub async fn leave_group(
        &self,
        coord: &Connection,
        group: &str,
        member_id: &str,
    ) -> Result<()> {
        let mut req = LeaveGroupRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.member_id = StrBytes::from_string(member_id.to_string());
        let mut m = kafka_protocol::messages::leave_group_request::MemberIdentity::default();
        m.member_id = StrBytes::from_string(member_id.to_string());
        req.members = vec![m];
        let resp = coord.request(&req).await?;
        check(resp.error_code, || format!("LeaveGroup {group}"))
    }

    /// Commits offsets (next offset to read) of one topic's partitions.
    pub async fn offset_commit(
        &self,
        coord: &Connection,
        group: &str,
        generation_id: i32,
        member_id: &str,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<()> {
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.generation_id_or_member_epoch = generation_id;
        req.member_id = StrBytes::from_string(member_id.to_string());
        req.retention_time_ms = -1;
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = offsets
            .iter()
            .map(|&(p, o)| {
                let mut op = OffsetCommitRequestPartition::default();
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
                check(p.error_code, || {
                    format!("OffsetCommit {group} {topic}-{}", p.partition_index)
                })?;
            }
        }
        Ok(())
    }

    /// Committed offsets of one topic's partitions (-1: none committed).
    pub async fn offset_fetch(
        &self,
        coord: &Connection,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>> {
        let mut req = OffsetFetchRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        let mut t = OffsetFetchRequestTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partition_indexes = partitions.to_vec();
        req.topics = Some(vec![t]);
        let resp = coord.request(&req).await?;
        check(resp.error_code, || format!("OffsetFetch {group}"))?;
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                check(p.error_code, || {
                    format!("OffsetFetch {group} {topic}-{}", p.partition_index)
                })?;
                out.push((p.partition_index, p.committed_offset));
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

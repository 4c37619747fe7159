//! Consumers: [`Consumer`] reads assigned partitions with long-poll Fetch requests;
//! [`GroupMember`] joins a classic consumer group (range assignment) to get its partitions
//! and commit offsets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::client::{Client, EARLIEST, LATEST};
use crate::conn::Connection;
use crate::error::{ClientError, Result};
use crate::records::{decode_batch, split_batches, InRecord};

/// Fetch settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Long poll: how long the broker may wait for `min_bytes`.
    pub max_wait: Duration,
    /// Bytes the broker waits for before answering.
    pub min_bytes: i32,
    /// Response size limit.
    pub max_bytes: i32,
    /// Per-partition size limit.
    pub partition_max_bytes: i32,
    /// 0 read uncommitted, 1 read committed.
    pub isolation_level: i8,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 52_428_800,
            partition_max_bytes: 1_048_576,
            isolation_level: 0,
        }
    }
}

/// Where a partition starts when no offset is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The log start.
    Earliest,
    /// The log end (only new records).
    Latest,
    /// An explicit offset.
    Offset(i64),
}

/// Records of one partition from one fetch.
#[derive(Debug)]
pub struct PartitionRecords {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// High watermark reported by the broker.
    pub high_watermark: i64,
    /// Records at or after the requested offset, in order.
    pub records: Vec<InRecord>,
    /// Bytes of record batches received for the partition.
    pub bytes: usize,
}

#[derive(Debug, Clone)]
struct Position {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

/// A consumer of explicitly assigned partitions.
pub struct Consumer {
    client: Arc<Client>,
    cfg: ConsumerConfig,
    positions: Vec<Position>,
}

impl Consumer {
    /// A consumer with no partitions yet.
    pub fn new(client: Arc<Client>, cfg: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            cfg,
            positions: Vec::new(),
        }
    }

    /// Adds partitions of a topic starting at `start`.
    pub async fn assign(&mut self, topic: &str, partitions: &[i32], start: StartAt) -> Result<()> {
        let topic: Arc<str> = Arc::from(topic);
        let offsets: Vec<(i32, i64)> = match start {
            StartAt::Offset(o) => partitions.iter().map(|&p| (p, o)).collect(),
            StartAt::Earliest => {
                self.client
                    .list_offsets(&topic, partitions, EARLIEST)
                    .await?
            }
            StartAt::Latest => self.client.list_offsets(&topic, partitions, LATEST).await?,
        };
        for (p, o) in offsets {
            self.positions
                .retain(|x| !(x.topic == topic && x.partition == p));
            self.positions.push(Position {
                topic: topic.clone(),
                partition: p,
                offset: o,
            });
        }
        Ok(())
    }

    /// Removes all partitions.
    pub fn unassign(&mut self) {
        self.positions.clear();
    }

    /// Next offset to read of each assigned partition.
    pub fn positions(&self) -> Vec<(Arc<str>, i32, i64)> {
        self.positions
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.offset))
            .collect()
    }

    /// One fetch round: one Fetch per leader (sent together, pipelined), waiting up to
    /// `max_wait` for data. Positions advance past what is returned.
    pub async fn poll(&mut self) -> Result<Vec<PartitionRecords>> {
        if self.positions.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_leader: HashMap<i32, Vec<usize>> = HashMap::new();
        for (i, p) in self.positions.iter().enumerate() {
            self.client.partition_count_or_fetch(&p.topic).await?;
            let leader = self.client.leader(&p.topic, p.partition)?;
            by_leader.entry(leader).or_default().push(i);
        }
        let mut pending = Vec::new();
        for (leader, idx) in by_leader {
            let conn = self.client.broker_conn(leader).await?;
            let req = self.build(&idx);
            pending.push(conn.send_with_timeout(&req, self.cfg.max_wait).await?);
        }
        let mut out = Vec::new();
        let mut stale = false;
        for f in pending {
            let resp = f.wait().await?;
            if resp.error_code != 0 {
                return Err(ClientError::kafka(resp.error_code, "fetch"));
            }
            for t in resp.responses {
                let topic = t.topic.0.as_str().to_string();
                for pd in t.partitions {
                    let Some(pos) = self
                        .positions
                        .iter_mut()
                        .find(|x| &*x.topic == topic.as_str() && x.partition == pd.partition_index)
                    else {
                        continue;
                    };
                    match pd.error_code {
                        0 => {}
                        // NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, FENCED/UNKNOWN
                        // LEADER_EPOCH: refresh metadata and retry next round.
                        6 | 3 | 74 | 75 => {
                            stale = true;
                            continue;
                        }
                        code => {
                            return Err(ClientError::kafka(
                                code,
                                format!("fetch {topic}-{} at {}", pd.partition_index, pos.offset),
                            ))
                        }
                    }
                    let data = pd.records.unwrap_or_default();
                    let bytes = data.len();
                    let mut records = Vec::new();
                    for (h, batch) in split_batches(data) {
                        if h.last_offset() < pos.offset {
                            continue;
                        }
                        let next = h.last_offset().saturating_add(1);
                        if !h.is_control() {
                            for r in decode_batch(batch)? {
                                if r.offset >= pos.offset {
                                    records.push(r);
                                }
                            }
                        }
                        pos.offset = next;
                    }
                    out.push(PartitionRecords {
                        topic: pos.topic.clone(),
                        partition: pos.partition,
                        high_watermark: pd.high_watermark,
                        records,
                        bytes,
                    });
                }
            }
        }
        if stale {
            let topics: Vec<String> = self.positions.iter().map(|p| p.topic.to_string()).collect();
            self.client.refresh_metadata(&topics).await?;
        }
        Ok(out)
    }

    fn build(&self, idx: &[usize]) -> FetchRequest {
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = self.cfg.max_wait.as_millis().min(i32::MAX as u128) as i32;
        req.min_bytes = self.cfg.min_bytes;
        req.max_bytes = self.cfg.max_bytes;
        req.isolation_level = self.cfg.isolation_level;
        req.session_id = 0;
        req.session_epoch = -1;
        let mut topics: Vec<FetchTopic> = Vec::new();
        for &i in idx {
            let p = &self.positions[i];
            let mut fp = FetchPartition::default();
            fp.partition = p.partition;
            fp.current_leader_epoch = -1;
            fp.fetch_offset = p.offset;
            fp.last_fetched_epoch = -1;
            fp.log_start_offset = -1;
            fp.partition_max_bytes = self.cfg.partition_max_bytes;
            match topics.iter_mut().find(|t| t.topic.0.as_str() == &*p.topic) {
                Some(t) => t.partitions.push(fp),
                None => {
                    let mut t = FetchTopic::default();
                    t.topic = TopicName(StrBytes::from_string(p.topic.to_string()));
                    t.partitions.push(fp);
                    topics.push(t);
                }
            }
        }
        req.topics = topics;
        req
    }
}

/// Range assignment (the Java `RangeAssignor` for one topic): members sorted by id, each gets
/// a contiguous range; the first `partitions % members` get one extra.
pub fn range_assign(members: &[String], partitions: i32) -> Vec<(String, Vec<i32>)> {
    let mut sorted: Vec<String> = members.to_vec();
    sorted.sort();
    let n = sorted.len() as i32;
    if n == 0 {
        return Vec::new();
    }
    let per = partitions / n;
    let extra = partitions % n;
    let mut start = 0;
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let len = per + if (i as i32) < extra { 1 } else { 0 };
            let ps: Vec<i32> = (start..start + len).collect();
            start += len;
            (m, ps)
        })
        .collect()
}

const CONSUMER_PROTOCOL_VERSION: i16 = 0;

fn encode_versioned<T: Encodable>(v: &T) -> Result<Bytes> {
    let mut b = BytesMut::new();
    b.put_i16(CONSUMER_PROTOCOL_VERSION);
    v.encode(&mut b, CONSUMER_PROTOCOL_VERSION)
        .map_err(|e| ClientError::Encode {
            api: "ConsumerProtocol",
            msg: e.to_string(),
        })?;
    Ok(b.freeze())
}

fn decode_versioned<T: Decodable + Default>(mut b: Bytes) -> Result<T> {
    if b.is_empty() {
        return Ok(T::default());
    }
    if b.len() < 2 {
        return Err(ClientError::Decode {
            api: "ConsumerProtocol",
            msg: "short".into(),
        });
    }
    let v = b.get_i16().clamp(0, 3);
    T::decode(&mut b, v).map_err(|e| ClientError::Decode {
        api: "ConsumerProtocol",
        msg: e.to_string(),
    })
}

/// A member of a classic consumer group subscribed to one topic.
pub struct GroupMember {
    client: Arc<Client>,
    coord: Arc<Connection>,
    group: String,
    topic: String,
    member_id: String,
    generation: i32,
    assignment: Vec<i32>,
    session_timeout: Duration,
}

impl GroupMember {
    /// Joins `group` for `topic` and returns once partitions are assigned.
    pub async fn join(
        client: Arc<Client>,
        group: &str,
        topic: &str,
        session_timeout: Duration,
    ) -> Result<GroupMember> {
        let coord = client.group_coordinator(group).await?;
        let mut m = GroupMember {
            client,
            coord,
            group: group.to_string(),
            topic: topic.to_string(),
            member_id: String::new(),
            generation: -1,
            assignment: Vec::new(),
            session_timeout,
        };
        m.rejoin().await?;
        Ok(m)
    }

    /// Runs JoinGroup + SyncGroup again (after a rebalance is signalled).
    pub async fn rejoin(&mut self) -> Result<()> {
        let mut sub = ConsumerProtocolSubscription::default();
        sub.topics = vec![StrBytes::from_string(self.topic.clone())];
        let meta = encode_versioned(&sub)?;
        let rebalance = self.session_timeout * 2;
        for _ in 0..5 {
            let j = self
                .client
                .join_group(
                    &self.coord,
                    &self.group,
                    &self.member_id,
                    self.session_timeout,
                    rebalance,
                    "range",
                    meta.clone(),
                )
                .await?;
            self.member_id = j.member_id.clone();
            if j.generation_id < 0 {
                continue; // MEMBER_ID_REQUIRED: join again with the assigned id
            }
            self.generation = j.generation_id;
            let assignments = if j.leader == j.member_id {
                let parts = self.client.topic_meta(&self.topic).await?.partitions.len() as i32;
                let members: Vec<String> = j.members.iter().map(|(m, _)| m.clone()).collect();
                let mut out = Vec::new();
                for (m, ps) in range_assign(&members, parts) {
                    let mut tp =
                        kafka_protocol::messages::consumer_protocol_assignment::TopicPartition::default();
                    tp.topic = TopicName(StrBytes::from_string(self.topic.clone()));
                    tp.partitions = ps;
                    let mut a = ConsumerProtocolAssignment::default();
                    a.assigned_partitions = vec![tp];
                    out.push((m, encode_versioned(&a)?));
                }
                out
            } else {
                Vec::new()
            };
            let got = self
                .client
                .sync_group(
                    &self.coord,
                    &self.group,
                    self.generation,
                    &self.member_id,
                    "range",
                    assignments,
                )
                .await?;
            let a: ConsumerProtocolAssignment = decode_versioned(got)?;
            self.assignment = a
                .assigned_partitions
                .into_iter()
                .filter(|tp| tp.topic.0.as_str() == self.topic)
                .flat_map(|tp| tp.partitions)
                .collect();
            self.assignment.sort_unstable();
            tracing::debug!(group = %self.group, member = %self.member_id, generation = self.generation, partitions = ?self.assignment, "joined");
            return Ok(());
        }
        Err(ClientError::Timeout(format!("join group {}", self.group)))
    }

    /// Partitions assigned to this member.
    pub fn assignment(&self) -> &[i32] {
        &self.assignment
    }

    /// The subscribed topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Member id.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// Sends a heartbeat; `Ok(true)` means a rebalance is in progress (call [`Self::rejoin`]).
    pub async fn heartbeat(&self) -> Result<bool> {
        let code = self
            .client
            .heartbeat(&self.coord, &self.group, self.generation, &self.member_id)
            .await?;
        match code {
            0 => Ok(false),
            27 => Ok(true),
            c => Err(ClientError::kafka(c, format!("heartbeat {}", self.group))),
        }
    }

    /// Commits next-offsets of this member's partitions.
    pub async fn commit(&self, offsets: &[(i32, i64)]) -> Result<()> {
        self.client
            .offset_commit(
                &self.coord,
                &self.group,
                self.generation,
                &self.member_id,
                &self.topic,
                offsets,
            )
            .await
    }

    /// Committed offsets of this member's partitions (-1: none).
    pub async fn committed(&self) -> Result<Vec<(i32, i64)>> {
        self.client
            .offset_fetch(&self.coord, &self.group, &self.topic, &self.assignment)
            .await
    }

    /// Leaves the group.
    pub async fn leave(self) -> Result<()> {
        self.client
            .leave_group(&self.coord, &self.group, &self.member_id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_like_java() {
        let m = vec!["c".to_string(), "a".to_string(), "b".to_string()];
        let a = range_assign(&m, 7);
        assert_eq!(
            a,
            vec![
                ("a".to_string(), vec![0, 1, 2]),
                ("b".to_string(), vec![3, 4]),
                ("c".to_string(), vec![5, 6]),
            ]
        );
        let a = range_assign(&m, 2);
        assert_eq!(a[2].1, Vec::<i32>::new());
        assert!(range_assign(&[], 3).is_empty());
    }

    #[test]
    fn consumer_protocol_round_trip() {
        let mut tp =
            kafka_protocol::messages::consumer_protocol_assignment::TopicPartition::default();
        tp.topic = TopicName(StrBytes::from_static_str("t"));
        tp.partitions = vec![1, 4];
        let mut a = ConsumerProtocolAssignment::default();
        a.assigned_partitions = vec![tp];
        let bytes = encode_versioned(&a).expect("encode");
        assert_eq!(&bytes[..2], &[0, 0]);
        let back: ConsumerProtocolAssignment = decode_versioned(bytes).expect("decode");
        assert_eq!(back.assigned_partitions[0].partitions, vec![1, 4]);
        let empty: ConsumerProtocolAssignment = decode_versioned(Bytes::new()).expect("empty");
        assert!(empty.assigned_partitions.is_empty());
    }
}

//! What one shard asks another over the channel mesh ([`ShardReq`]) and what it answers
//! ([`ShardResp`]), with the per-partition parts they carry. Plain data: the executing side is
//! `crate::dispatch`, the sending side `Shard::send`.

pub use crate::wire::fetch::ReadOut;

use bytes::Bytes;

use crate::controller::metadata::PartitionMeta;
use crate::controller::records::MetadataRecord;

#[derive(Debug)]
pub struct ProducePart {
    pub topic: String,
    pub partition: i32,
    pub records: Option<Bytes>,
    /// The request's `timeout_ms`: how long an acks=all produce waits for the ISR.
    pub timeout_ms: i32,
}

/// A partition's produce answer: only the partition facade builds successes (see
/// [`crate::partition::answer`]).
pub use crate::partition::answer::ProduceResult;

#[derive(Clone, Debug)]
pub struct ReadPart {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    /// A follower's fetch (replica id >= 0): read up to the log end through the replica core.
    pub replica: Option<ReplicaFetchPart>,
}

/// The follower fields of one partition of a replica Fetch.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaFetchPart {
    pub replica_id: i32,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
}

/// A long-poll wait on one partition.
#[derive(Clone, Debug)]
pub struct WaitPart {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// A follower waits for the log end to pass `offset` (or the high watermark to move),
    /// a consumer for the high watermark.
    pub replica: bool,
}

/// One partition-level answer with an offset and timestamp (ListOffsets, DeleteRecords,
/// OffsetForLeaderEpoch).
#[derive(Clone, Debug)]
pub struct OffsetOut {
    pub topic: String,
    pub partition: i32,
    pub error: i16,
    pub offset: i64,
    pub timestamp: i64,
    pub leader_epoch: i32,
}

impl OffsetOut {
    /// An answer for `(topic, partition)` with `error` and no offset, timestamp or epoch yet.
    pub fn new(topic: &str, partition: i32, error: i16) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            error,
            offset: -1,
            timestamp: -1,
            leader_epoch: -1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// The replication factor (the receiving broker has put its `default_replication_factor`
    /// for the request's -1).
    pub replication_factor: i16,
    /// A manual replica assignment, `(partition index, broker ids)` as the request gave it
    /// (empty: placed by the controller).
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, String)>,
}

/// (name, error code, message)
pub type AdminResult = (String, i16, Option<String>);

/// Config changes for one topic: (key, operation (0 set, 1 delete), value).
pub type ConfigOps = Vec<(String, i8, Option<String>)>;

#[derive(Debug)]
pub enum AdminReq {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics(Vec<String>),
    CreatePartitions {
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
    /// (topic, [(key, op, value)]) with op 0 set, 1 delete; `replace` = legacy AlterConfigs
    /// (the given set replaces every explicit config).
    AlterConfigs {
        topics: Vec<(String, ConfigOps)>,
        replace: bool,
        validate_only: bool,
    },
    AllocateProducerId,
    /// A partition leader's ISR change for the controller (KIP-497).
    AlterPartition(AlterPartitionReq),
}

/// An ISR change a partition leader asks the controller for (AlterPartition, KIP-497).
pub use crate::controller::decide::AlterPartitionReq;

#[derive(Debug)]
pub enum AdminResp {
    Results(Vec<AdminResult>),
    ProducerId(Result<i64, i16>),
    /// The partition's state as committed after an AlterPartition, or the error code.
    AlterPartition(Result<PartitionMeta, i16>),
}

#[derive(Debug)]
pub enum ShardReq {
    Produce {
        acks: i16,
        parts: Vec<ProducePart>,
    },
    Read {
        parts: Vec<ReadPart>,
        max_bytes: usize,
    },
    /// Resolve when any partition's high watermark passes its offset (for a follower's
    /// fetch: its log end), or at the deadline.
    WaitData {
        parts: Vec<WaitPart>,
        wait_ms: u64,
    },
    ListOffsets {
        parts: Vec<(String, i32, i64)>,
    },
    DeleteRecords {
        parts: Vec<(String, i32, i64)>,
    },
    EpochEnd {
        parts: Vec<(String, i32, i32)>,
    },
    Admin(AdminReq),
    Apply(MetadataRecord),
    /// A consumer-group request for a group this shard owns (see `crate::groups`).
    Group(shardlog_coordinator::Request),
    /// A metrics snapshot of the shard (for a `/metrics` scrape).
    Metrics,
    /// Bytes on disk of this shard's partitions (DescribeLogDirs): all of them (`None`) or
    /// those named.
    LogSizes {
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
}

#[derive(Debug)]
pub enum ShardResp {
    Produce(Vec<ProduceResult>),
    Read(Vec<ReadOut>),
    Waited,
    Offsets(Vec<OffsetOut>),
    Admin(AdminResp),
    Applied,
    Group(shardlog_coordinator::Response),
    Metrics(Box<crate::metrics::ShardSnapshot>),
    /// (topic, partition, bytes) of the partitions asked for that this shard holds.
    LogSizes(Vec<(String, i32, u64)>),
    /// The peer is gone (shutting down).
    Failed,
}

pub enum MeshMsg {
    Req {
        id: u64,
        from: usize,
        req: ShardReq,
        /// When it was handed to the mesh (the shard-hop latency metric).
        sent: std::time::Instant,
    },
    Resp {
        id: u64,
        resp: ShardResp,
    },
}

//! Requests the server feeds in, responses and actions it gets back.
//!
//! These are the coordinator's own types rather than `kafka-protocol`'s: the
//! server maps wire versions onto them (for example a LeaveGroup v0–v2 becomes
//! a one-member batch, JoinGroup v0 sets `rebalance_timeout_ms =
//! session_timeout_ms`, OffsetFetch with several groups is split per group,
//! since each group may live on another shard).

use bytes::Bytes;

use crate::error::ErrorCode;
use crate::record::Record;

/// Identifies a request the server is waiting to answer. Supplied by the
/// server; JoinGroup and SyncGroup responses may come back much later, from a
/// different `handle`/`tick` call, addressed with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies a [`Persist`] whose completion the coordinator must hear about
/// through [`crate::GroupCoordinator::persisted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistId(pub u64);

/// The classic group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn as_kafka_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Parses a ListGroups states filter entry (case-insensitive, like Kafka).
    pub fn parse(s: &str) -> Option<GroupState> {
        [
            GroupState::Empty,
            GroupState::PreparingRebalance,
            GroupState::CompletingRebalance,
            GroupState::Stable,
            GroupState::Dead,
        ]
        .into_iter()
        .find(|st| st.as_kafka_str().eq_ignore_ascii_case(s))
    }
}

/// One protocol (assignor) a member supports, with its opaque metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupRequest {
    pub group_id: String,
    /// Empty for a new member.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// v0: set equal to `session_timeout_ms`.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    /// True from JoinGroup v4: a new dynamic member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResponse {
    pub error: ErrorCode,
    /// -1 on error.
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Empty on error.
    pub leader: String,
    /// KIP-814 (v9+): the static leader rejoined a stable group and must not
    /// recompute the assignment.
    pub skip_assignment: bool,
    /// The member's id (also set with MEMBER_ID_REQUIRED).
    pub member_id: String,
    /// Non-empty only for the leader.
    pub members: Vec<JoinGroupMember>,
}

impl JoinGroupResponse {
    pub(crate) fn error(error: ErrorCode, member_id: &str) -> JoinGroupResponse {
        JoinGroupResponse {
            error,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// v5+; `None` skips the check.
    pub protocol_type: Option<String>,
    /// v5+; `None` skips the check.
    pub protocol_name: Option<String>,
    /// Only the leader sends assignments: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupResponse {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncGroupResponse {
    pub(crate) fn error(error: ErrorCode) -> SyncGroupResponse {
        SyncGroupResponse {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    /// May be empty when `group_instance_id` is set (KIP-345 admin removal).
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupRequest {
    pub group_id: String,
    pub members: Vec<LeavingMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error: ErrorCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupResponse {
    /// Top-level error (v0–v2 clients only see this: the server should use
    /// the first member's error there when the top level is `None`).
    pub error: ErrorCode,
    pub members: Vec<LeftMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCommit {
    pub partition: i32,
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCommit {
    pub topic: String,
    pub partitions: Vec<PartitionCommit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    /// -1 for a "simple" (standalone) commit.
    pub generation_id: i32,
    /// Empty for a simple commit.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<TopicCommit>,
}

/// Per-partition result of a commit, an OffsetDelete, etc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicErrors {
    pub topic: String,
    pub partitions: Vec<(i32, ErrorCode)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitResponse {
    pub topics: Vec<TopicErrors>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    pub group_id: String,
    /// `None`: every committed partition of the group.
    pub topics: Option<Vec<TopicPartitions>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub partition: i32,
    /// -1 when nothing is committed.
    pub committed_offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub error: ErrorCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedTopic {
    pub topic: String,
    pub partitions: Vec<FetchedPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchResponse {
    pub error: ErrorCode,
    pub topics: Vec<FetchedTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListGroupsRequest {
    /// v4+; empty = all states.
    pub states_filter: Vec<GroupState>,
    /// v5+; empty = all protocol types.
    pub types_filter: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListGroupsResponse {
    pub error: ErrorCode,
    /// Sorted by group id.
    pub groups: Vec<ListedGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Empty unless the group is Stable.
    pub metadata: Bytes,
    /// Empty unless the group is Stable.
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    pub error: ErrorCode,
    pub group_id: String,
    /// `Dead` for an unknown group (Kafka's answer, with no error).
    pub state: GroupState,
    pub protocol_type: String,
    /// The selected protocol; empty unless the group is Stable.
    pub protocol_data: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDeleteRequest {
    pub group_id: String,
    pub topics: Vec<TopicPartitions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDeleteResponse {
    pub error: ErrorCode,
    pub topics: Vec<TopicErrors>,
}

/// Everything the server can ask the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(Vec<String>),
    DeleteGroups(Vec<String>),
    OffsetDelete(OffsetDeleteRequest),
}

/// Answers, one per request (delayed for JoinGroup, SyncGroup and OffsetCommit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(ErrorCode),
    LeaveGroup(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    OffsetFetch(OffsetFetchResponse),
    ListGroups(ListGroupsResponse),
    DescribeGroups(Vec<DescribedGroup>),
    DeleteGroups(Vec<(String, ErrorCode)>),
    OffsetDelete(OffsetDeleteResponse),
}

/// Records to append to the internal log of `group_id`'s partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    pub group_id: String,
    pub records: Vec<Record>,
    /// `Some`: a client is waiting on durability (an OffsetCommit); the server
    /// must call [`crate::GroupCoordinator::persisted`] once the append is
    /// durable (or failed). `None`: fire and forget (group metadata,
    /// tombstones); losing one is safe — after a restart clients would see
    /// UNKNOWN_MEMBER_ID / stale data and rejoin.
    pub ack: Option<PersistId>,
}

/// What the coordinator wants done, in order.
///
/// The server must carry outputs out in the order given: in particular a
/// `Persist` precedes the responses that depend on it in the same batch, and
/// appends to one group's log partition must keep their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Respond {
        request_id: RequestId,
        response: Response,
    },
    Persist(Persist),
}

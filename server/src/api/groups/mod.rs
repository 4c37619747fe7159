//! The consumer-group Kafka APIs: wire versions in, coordinator requests out, and back.
//!
//! This module maps each wire version onto the coordinator's own request types (LeaveGroup
//! v0–v2 is a one-member batch, JoinGroup v0's rebalance timeout is its session timeout,
//! an OffsetFetch v8 naming several groups is split per group) and routes every group request
//! to the shard that owns the group ([`crate::groups::offsets_log::group_shard`]). The placing phase runs in
//! request order on the connection ([`Shard::send`] returns once the request reached the
//! owner's FIFO channel), so two requests of one connection reach a group's coordinator in the
//! order they were sent; their answers are joined back and written in request order by the
//! connection. A JoinGroup/SyncGroup parked by the coordinator delays only the responses after
//! it on the same connection, as Kafka's in-order rule requires.
//!
//! APIs that name several groups (DescribeGroups, DeleteGroups, OffsetFetch v8) are split by
//! owning shard, one shard request per shard, and the answers are put back in the request's
//! order. ListGroups asks every shard and merges.
//!
//! Version ranges (advertised in ApiVersions, `protocol.rs`): FindCoordinator 0–4 (v4 batched
//! keys), JoinGroup 0–9, SyncGroup 0–5, Heartbeat 0–4, LeaveGroup 0–5, OffsetCommit 2–8,
//! OffsetFetch 1–8, ListGroups 0–5, DescribeGroups 0–5, DeleteGroups 0–2, OffsetDelete 0.
//! That covers librdkafka ≥ 2.0, the Java client 3.x (classic protocol) and kafka-python.

pub mod admin;
pub mod membership;
pub mod offsets;
pub mod place;

pub use admin::{delete_groups, describe_groups, list_groups};
pub use membership::{find_coordinator, heartbeat, join_group, leave_group, sync_group};
pub use offsets::{offset_commit, offset_delete, offset_fetch};

//! # shardlog-coordinator: the classic consumer group coordinator
//!
//! A pure state machine for Kafka's classic group protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup) and committed offsets (OffsetCommit,
//! OffsetFetch, OffsetDelete), plus ListGroups, DescribeGroups and
//! DeleteGroups.
//!
//! ## Why a pure core
//!
//! Rebalancing is a distributed protocol full of timeouts and races (members
//! rejoining while the leader assigns, zombies of replaced static members,
//! sessions expiring mid-sync). Tested over sockets such races are slow and
//! flaky to reproduce; as a plain struct fed events they are a few lines each.
//! So, as in raft-rs, the coordinator does no I/O, has no clock, spawns
//! nothing and never blocks:
//!
//! * **time is an input**: every call takes `now_ms`; [`GroupCoordinator::tick`]
//!   fires session expiry, rebalance and sync timeouts, the initial rebalance
//!   delay and offset retention; [`GroupCoordinator::next_deadline_ms`] says
//!   when the next one is due;
//! * **requests in, [`Output`]s out**: [`GroupCoordinator::handle`] takes a
//!   [`Request`] with a server-chosen [`RequestId`] and returns responses
//!   addressed by request id — JoinGroup and SyncGroup are *parked* and
//!   answered by a later `handle`/`tick` when the rebalance moves on — and
//!   [`Persist`] actions carrying [`Record`]s for the internal log;
//! * **persist, then acknowledge**: an OffsetCommit is answered only through
//!   [`GroupCoordinator::persisted`], which the server calls once the
//!   records of a `Persist` with an `ack` are durable, so a commit cannot be
//!   acknowledged before it is written. Group metadata writes are fire and
//!   forget: losing one only makes members rejoin after a restart;
//! * **replay at start-up**: a new coordinator is *loading*; the server feeds
//!   the internal log to [`GroupCoordinator::replay`] (or `replay_bytes`),
//!   calls [`GroupCoordinator::finish_loading`], and from then on serves
//!   requests. [`GroupCoordinator::snapshot`] returns the minimal records
//!   rebuilding the durable state, for compaction.
//!
//! ## Driving it from a server
//!
//! ```text
//! per shard:   coord = GroupCoordinator::new(cfg)        // seed member ids randomly
//!              for rec in internal log: coord.replay_bytes(rec)?
//!              coord.finish_loading(now)
//! on request:  outs = coord.handle(now, rid, req)         // route by shard_for_group
//! on timer:    outs = coord.tick(now)                      // e.g. at next_deadline_ms()
//! for out in outs (in order):
//!     Respond { rid, resp } -> send resp to the connection waiting on rid
//!     Persist { records, ack } -> append encode(records) to the group's log partition;
//!              if ack: outs2 = coord.persisted(now, ack, result); process outs2
//! ```
//!
//! A connection that closes while a JoinGroup/SyncGroup is parked needs no
//! call: the member's response is dropped by the server and its session or
//! the rebalance timeout removes it.
//!
//! ## Placement
//!
//! Each group lives on exactly one shard: [`shard_for_group`] and
//! [`offsets_partition_for_group`] use Kafka's hash (Java `String.hashCode`
//! masked to non-negative), so with `partitions` a multiple of `shards` the
//! group's log partition `p` is on shard `p % shards` = the group's shard.
//!
//! ## Differences from Kafka worth knowing
//!
//! * Dead is terminal and instant: a group that dies (DeleteGroups, or Empty
//!   with no offsets left at a retention check) is removed at once, so later
//!   requests see an unknown group (DescribeGroups reports `Dead`).
//! * Bounded: `groups_max` (new groups get COORDINATOR_NOT_AVAILABLE),
//!   `members_per_group_max` (GROUP_MAX_SIZE_REACHED, pending members count),
//!   `pending_commits_max` (COORDINATOR_NOT_AVAILABLE).
//! * A static member that rejoins a Stable group keeps the generation only if
//!   the selected protocol *and its metadata* are unchanged (Kafka checks only
//!   the protocol); otherwise the group rebalances.
//! * A resent JoinGroup/SyncGroup of the same member supersedes the parked one,
//!   which is answered with REBALANCE_IN_PROGRESS so the server never leaks it.
//! * Protocol-vote ties go to the first member's preference order.

mod consumer;
mod coordinator;
mod error;
mod group;
mod record;
mod types;
pub mod untrusted;

#[cfg(test)]
mod tests;

pub use consumer::{encode_subscription, subscription_topics};
pub use coordinator::{
    error_response, GroupCoordinator, PartitionLoad, ReplayError, STRING_BYTES_MAX,
};
pub use error::ErrorCode;
pub use record::{
    DecodeError, EncodeError, GroupMetadataValue, MemberRecord, OffsetValue, Record, RECORD_VERSION,
};
pub use types::*;
pub use untrusted::Untrusted;

/// Coordinator limits and timeouts. Defaults follow Kafka's broker defaults
/// where Kafka has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `group.min.session.timeout.ms`.
    pub session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_ms_max: i32,
    /// `group.initial.rebalance.delay.ms`; 0 disables the delay.
    pub initial_rebalance_delay_ms: u64,
    /// `offsets.retention.minutes` in ms (7 days).
    pub offsets_retention_ms: u64,
    /// `offsets.retention.check.interval.ms`; also how often dead groups are reaped.
    pub offsets_retention_check_interval_ms: u64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
    /// `group.max.size` (members plus members holding a MEMBER_ID_REQUIRED id).
    pub members_per_group_max: usize,
    /// Groups one coordinator (shard) holds.
    pub groups_max: usize,
    /// OffsetCommits waiting for [`GroupCoordinator::persisted`].
    pub pending_commits_max: usize,
    /// Seed of generated member-id suffixes: random in production, fixed in tests.
    pub member_id_seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_bytes_max: 4096,
            members_per_group_max: 1000,
            groups_max: 100_000,
            pending_commits_max: 10_000,
            member_id_seed: 0,
        }
    }
}

/// Java's `String.hashCode` over UTF-16 code units, masked to non-negative
/// like Kafka's `Utils.abs` (`& 0x7fffffff`).
fn kafka_group_hash(group_id: &str) -> u32 {
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (h as u32) & 0x7fff_ffff
}

/// The internal-log partition of a group, exactly as Kafka picks the
/// `__consumer_offsets` partition: `(hashCode(group_id) & 0x7fffffff) % partitions`.
/// Stable forever (it decides where a group's records are). Returns 0 when
/// `partitions` is 0.
pub fn offsets_partition_for_group(group_id: &str, partitions: usize) -> usize {
    if partitions == 0 {
        return 0;
    }
    kafka_group_hash(group_id) as usize % partitions
}

/// The shard owning a group: the same hash modulo `shards`. When the number
/// of internal-log partitions is a multiple of `shards` and partition `p`
/// lives on shard `p % shards`, a group and its log partition share a shard.
/// Returns 0 when `shards` is 0.
pub fn shard_for_group(group_id: &str, shards: usize) -> usize {
    offsets_partition_for_group(group_id, shards)
}

/// The shard owning internal-log partition `partition` (see [`shard_for_group`]).
pub fn shard_for_offsets_partition(partition: usize, shards: usize) -> usize {
    if shards == 0 {
        0
    } else {
        partition % shards
    }
}

/// Lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    /// `None` if the broker does not know the partition.
    pub high_watermark: Option<i64>,
    /// `high_watermark - committed_offset`, never negative; `None` when the
    /// high watermark is unknown or nothing (-1) is committed.
    pub lag: Option<i64>,
}

/// Lag per partition: high watermark minus committed offset.
pub fn compute_lag<'a>(
    committed: impl IntoIterator<Item = (&'a str, i32, i64)>,
    mut high_watermark: impl FnMut(&str, i32) -> Option<i64>,
) -> Vec<PartitionLag> {
    committed
        .into_iter()
        .map(|(topic, partition, committed_offset)| {
            let hw = high_watermark(topic, partition);
            let lag = match hw {
                Some(hw) if committed_offset >= 0 => {
                    Some(hw.saturating_sub(committed_offset).max(0))
                }
                _ => None,
            };
            PartitionLag {
                topic: topic.to_owned(),
                partition,
                committed_offset,
                high_watermark: hw,
                lag,
            }
        })
        .collect()
}

//! A shard's group state: the coordinator state machine and the requests waiting on it.
//! What carries its outputs out (the internal log, the timer) is in `coordinator.rs`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use futures::channel::oneshot;
use shardlog_coordinator::{Config, GroupCoordinator, Response};

use crate::clock::now_ms;
use crate::config::BrokerConfig;

use crate::groups::offsets_log::*;

pub(crate) struct Waiter {
    pub(crate) tx: oneshot::Sender<Response>,
    /// JoinGroup/SyncGroup: may be parked for long; answered with an error at shutdown.
    pub(crate) parked: bool,
}

/// Per-shard group state: the coordinator and everything carrying out its outputs.
pub struct Groups {
    pub(crate) coord: RefCell<GroupCoordinator>,
    pub(crate) waiters: RefCell<HashMap<u64, Waiter>>,
    pub(crate) next_request_id: Cell<u64>,
    /// Internal-log partitions of the whole broker (`N`).
    pub partitions: usize,
    pub(crate) wake: event_listener::Event,
    /// Acknowledged writes (OffsetCommit) queued and not yet durable, per internal partition.
    pub(crate) acks_in_flight: RefCell<HashMap<usize, usize>>,
    pub(crate) snapshotting: RefCell<HashSet<usize>>,
    /// Records of the last snapshot, per partition.
    pub(crate) snapshot_records: RefCell<HashMap<usize, i64>>,
    pub(crate) snapshot_threshold_records: i64,
    /// `__consumer_offsets` is a replicated topic of the metadata image (a multi-broker
    /// cluster) rather than this broker's local log (see `crate::groups::coordinator`).
    pub replicated: bool,
    /// Per internal partition this shard leads: the leader epoch its groups were (or are
    /// being) loaded for, and the load's number (a load that is no longer current stops).
    pub(crate) leading: RefCell<HashMap<usize, (i32, u64)>>,
    pub(crate) next_load: Cell<u64>,
    /// The image's partition count differs from this broker's (logged once).
    pub(crate) mismatch_logged: Cell<bool>,
    /// Controller voters of the cluster (the internal topic waits for min(3, voters) live
    /// brokers before it is created, so it gets its full replication factor).
    pub voters: usize,
    /// A creation of the internal topic is under way on this shard.
    pub(crate) creating: Cell<bool>,
}

/// Whether `__consumer_offsets` is replicated through the metadata image: a cluster of more
/// than one controller voter. A single node (no `voters`, or only itself) keeps it local.
pub fn replicated_offsets(cfg: &BrokerConfig) -> bool {
    voter_count(cfg) > 1
}

/// Controller voters in the configuration (0 without `voters`).
pub fn voter_count(cfg: &BrokerConfig) -> usize {
    cfg.voters
        .as_deref()
        .and_then(|v| shardlog_quorum::parse_voters(v).ok())
        .map_or(0, |v| v.len())
}

/// Coordinator configuration from the broker configuration (random member-id seed).
pub fn coordinator_config(cfg: &BrokerConfig, shard_id: usize) -> Config {
    use std::hash::BuildHasher;
    let seed = std::collections::hash_map::RandomState::new().hash_one((shard_id, now_ms()));
    Config {
        session_timeout_ms_min: cfg.group_min_session_timeout_ms,
        session_timeout_ms_max: cfg.group_max_session_timeout_ms,
        initial_rebalance_delay_ms: cfg.group_initial_rebalance_delay_ms,
        offsets_retention_ms: cfg.offsets_retention_ms,
        member_id_seed: seed,
        ..Config::default()
    }
}

impl Groups {
    pub fn new(cfg: &BrokerConfig, shard_id: usize) -> Self {
        let partitions = if cfg.offsets_topic_partitions == 0 {
            2 * cfg.cores.max(1)
        } else {
            cfg.offsets_topic_partitions
        };
        Self {
            coord: RefCell::new(GroupCoordinator::new_partitioned(
                coordinator_config(cfg, shard_id),
                partitions,
            )),
            waiters: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
            partitions,
            wake: event_listener::Event::new(),
            acks_in_flight: RefCell::new(HashMap::new()),
            snapshotting: RefCell::new(HashSet::new()),
            snapshot_records: RefCell::new(HashMap::new()),
            snapshot_threshold_records: cfg.offsets_snapshot_records as i64,
            replicated: replicated_offsets(cfg),
            leading: RefCell::new(HashMap::new()),
            next_load: Cell::new(1),
            mismatch_logged: Cell::new(false),
            voters: voter_count(cfg),
            creating: Cell::new(false),
        }
    }

    /// The shard that owns `group_id`.
    pub fn shard_of(&self, group_id: &str, shards: usize) -> usize {
        group_shard(group_id, self.partitions, shards)
    }

    /// Committed offsets of a group held by this shard (`None`: unknown group).
    pub fn committed(&self, group_id: &str) -> Option<Vec<(String, i32, i64)>> {
        self.coord
            .borrow()
            .committed_offsets(group_id)
            .map(|v| v.into_iter().map(|(t, p, o)| (t, p, o.offset)).collect())
    }

    /// Number of groups this shard holds.
    pub fn group_count(&self) -> usize {
        self.coord.borrow().group_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_replicated_only_with_more_than_one_voter() {
        let mut cfg = BrokerConfig::default();
        assert!(!replicated_offsets(&cfg));
        cfg.voters = Some("1@127.0.0.1:9093".into());
        assert!(!replicated_offsets(&cfg));
        cfg.voters = Some("1@127.0.0.1:9093,2@127.0.0.1:9103,3@127.0.0.1:9113".into());
        assert!(replicated_offsets(&cfg));
        assert_eq!(voter_count(&cfg), 3);
        cfg.voters = Some("not voters".into());
        assert!(!replicated_offsets(&cfg));
    }
}

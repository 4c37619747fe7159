//! # shardlog-replica: the replica core of a partition
//!
//! A pure state machine for one partition replica: its role (leader, follower, offline), leader
//! epoch, local log positions, the high watermark, as leader the followers' positions and the
//! ISR, the produce acknowledgement waiters and the idempotent-producer state. It decides; the
//! partition facade in the server does the I/O (the log, the network, the controller) and feeds
//! the results back.
//!
//! ## Why a pure core
//!
//! Replication is where acknowledged data gets lost: an ISR that shrinks while a produce
//! waits, a high watermark that runs ahead of a follower, a follower that keeps a divergent
//! tail after two failovers in a row. Those races are slow and flaky to provoke over sockets
//! and disks, and a few lines each as a plain struct fed events. So, as in raft-rs and like
//! the group coordinator (`shardlog-coordinator`), the core does no I/O, has no clock, spawns
//! nothing and never blocks: time is an input (`now_ms`), the log's epoch history is passed
//! in as an [`EpochHistory`], and every decision comes back as a value: an answer or a list
//! of [`Action`]s. Unit tests drive it event by event; property tests drive it with random
//! event sequences and check Kafka's invariants after every step.
//!
//! ## Driving it from the partition facade
//!
//! ```text
//! open:        core = ReplicaState::new(cfg, log ends, hw checkpoint, producer state)
//! metadata:    core.became_leader(..) / became_follower(..) / went_offline(..)
//! produce:     ticket = core.admit_produce(acks)?           // NOT_ENOUGH_REPLICAS etc. before append
//!  appender:   match core.check_batch(&ticket, ident)? { Append => log.append(..), Duplicate{..}, Reject(e) }
//!              acts = core.appended(ticket, Appended{..})   // or core.append_failed(ticket)
//! log I/O:     acts = core.log_progress(log ends)           // after each append/write/fdatasync
//! follower fetch (leader): (answer, acts) = core.follower_fetch(fetch, &log)
//! fetch answer (follower): acts = core.leader_answer(answer, &log); fetch from core.fetch_position()
//! timer:       acts = core.tick(now)                         // ISR shrink
//! controller:  core.isr_committed(update) / core.isr_rejected(epoch)
//! for act in acts (in order):
//!     HighWatermark(hw)       -> wake fetch long-polls; checkpoint hw
//!     Complete{waiter, result}-> answer that produce: Ok(proof) is the only way to a success
//!     AlterPartition(req)     -> send to the controller
//!     Truncate{to, ..}        -> log.truncate_to(to); core.truncated(log ends)
//!     RebuildProducers{end}   -> rebuild producer state from the log up to end
//! ```
//!
//! ## The single-replica broker
//!
//! With one replica (RF=1, ISR = {self}) the core reduces to what the broker does without it:
//! the high watermark is the log's committed end (written end, or durable end under
//! `EveryBatch`: [`CommitOn`]), acks=all is answered once the batch is committed locally, acks=1
//! once it is written (Kafka's acks=1 does not wait for a flush), acks=0 is never answered, and acks=all is refused with
//! NOT_ENOUGH_REPLICAS before the append when `min.insync.replicas` is above 1.
//!
//! ## Bounds
//!
//! Waiters and admitted tickets per partition are limited by
//! [`Config::max_pending_waiters`]: past it a produce (acks 1 or all) is refused before the
//! append with REQUEST_TIMED_OUT, which clients retry. Followers are the assigned replicas;
//! the ISR change in flight is one at a time.

mod epochs;
mod error;
pub mod producer_state;
mod producers;
mod proof;
mod state;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use epochs::{
    diverging_epoch, truncation_for, EpochEndOffset, EpochHistory, EpochTable, Truncation,
};
pub use error::{ErrorCode, StateError};
pub use producers::{BatchIdent, DedupCheck, NoDedup, ProducerDedup};
pub use proof::{CommitScope, Committed};
pub use state::{
    Acks, Action, AlterPartition, Appended, BecameLeader, CommitOn, FetchAnswer, FollowerFetch,
    FollowerView, IsrMember, IsrUpdate, LeaderAnswer, LogEnds, ReplicaState, Role, Ticket,
    WaiterId,
};

/// An offset in a partition's log.
pub type Offset = i64;
/// A broker (replica) id.
pub type ReplicaId = i32;
/// A leader epoch.
pub type LeaderEpoch = i32;

/// Replica settings. Defaults follow Kafka's where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This broker's id.
    pub replica_id: ReplicaId,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// The topic's `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// Produce waiters (and admitted tickets) one partition holds at most.
    pub max_pending_waiters: usize,
    /// What the local log counts as committed (the topic's flush policy).
    pub commit_on: CommitOn,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            replica_id: 1,
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
            max_pending_waiters: 4096,
            commit_on: CommitOn::Write,
        }
    }
}

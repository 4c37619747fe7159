//! The seam for idempotent-producer state (deduplication of retried batches).
//!
//! The replica core owns the producer state of its partition (a field of type `P:
//! ProducerDedup`), because which batches are duplicates depends on what the log holds: it
//! changes with appends as leader, with batches copied as follower (so a retry after failover
//! is still recognised, issue 19), and with truncation. The core calls it in log order, one
//! batch at a time: [`ProducerDedup::check`] before a leader append, [`ProducerDedup::record`]
//! after it (and for every batch a follower appends), [`ProducerDedup::truncated`] when the
//! log is cut.
//!
//! The broker's [`ProducerStates`](crate::producer_state::ProducerStates) implements it (with
//! Kafka's last-five-batches rule, expiry and a limit on producer ids); [`NoDedup`] is for
//! partitions that never deduplicate.

use crate::{ErrorCode, Offset};

/// The producer fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIdent {
    /// Negative: not an idempotent batch (never deduplicated).
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupCheck {
    /// Append it.
    Append,
    /// A retry of a batch already in the log: answer with its original offsets once those are
    /// committed.
    Duplicate {
        base_offset: Offset,
        last_offset: Offset,
    },
    /// Refuse it with this error, appending nothing.
    Reject(ErrorCode),
}

/// Idempotent-producer state of one partition.
pub trait ProducerDedup {
    /// Decides about a batch before it is appended as leader.
    fn check(&self, batch: &BatchIdent) -> DedupCheck;
    /// Records a batch the log now holds at `base_offset..=last_offset`, appended at `at_ms`;
    /// returns how many producer ids were forgotten to stay within the limit.
    fn record(
        &mut self,
        batch: &BatchIdent,
        base_offset: Offset,
        last_offset: Offset,
        at_ms: i64,
    ) -> usize;
    /// The log was cut at `end`. Returns true when the state is still exact (it held nothing
    /// at or above `end`, or could drop it); false when it must be rebuilt from the log (the
    /// core then asks for it with [`crate::Action::Truncate`]'s `rebuild_producers`).
    fn truncated(&mut self, end: Offset) -> bool;
}

/// Producer state for partitions that never deduplicate (e.g. internal partitions written
/// only by the broker itself): every batch is appended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoDedup;

impl ProducerDedup for NoDedup {
    fn check(&self, _batch: &BatchIdent) -> DedupCheck {
        DedupCheck::Append
    }
    fn record(&mut self, _: &BatchIdent, _: Offset, _: Offset, _: i64) -> usize {
        0
    }
    fn truncated(&mut self, _end: Offset) -> bool {
        true
    }
}

//! The proof that a produced batch may be acknowledged.
//!
//! A produce success answer must only ever be built for a batch that is committed at the level
//! its `acks` asks for. Making that a type makes it a compile-time rule instead of a review
//! rule: [`Committed`] has private fields and no public constructor, and the only code that
//! creates one is the replica core, at the moment its high watermark (acks=all) or its own log's
//! written end (acks=1) covers the batch. The partition facade's success answer takes a
//! `Committed` (and checks [`Committed::covers`] for its last offset), so a path that forgets to
//! wait cannot compile.

use crate::Offset;

/// What a [`Committed`] proof vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommitScope {
    /// acks=1: the leader's own log has the offset written to the device (as in Kafka, where
    /// acks=1 waits for the leader's log write and not for a flush; under `EveryBatch` the
    /// fdatasync follows the write, whatever the acks).
    Leader,
    /// acks=all: the high watermark covers the offset: every member of the ISR has it (each
    /// under its own flush policy), with at least `min.insync.replicas` members.
    Replicated,
}

/// Proof that every offset up to and including [`through`](Committed::through) is committed
/// at [`scope`](Committed::scope). Only the replica core creates one: outside the crate it
/// cannot be built.
///
/// ```compile_fail,E0451
/// use shardlog_replica::{CommitScope, Committed};
/// let forged = Committed { through: 10, scope: CommitScope::Replicated };
/// ```
///
/// ```compile_fail,E0624
/// let forged = shardlog_replica::Committed::mint(10, shardlog_replica::CommitScope::Leader);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    through: Offset,
    scope: CommitScope,
}

impl Committed {
    /// Only the core mints proofs (`pub(crate)`), after checking its bound covers `through`.
    pub(crate) fn mint(through: Offset, scope: CommitScope) -> Committed {
        Committed { through, scope }
    }

    /// The last offset covered.
    pub fn through(&self) -> Offset {
        self.through
    }

    pub fn scope(&self) -> CommitScope {
        self.scope
    }

    /// True when the proof covers `last_offset` (the last offset of the batch being answered).
    pub fn covers(&self, last_offset: Offset) -> bool {
        last_offset <= self.through
    }
}

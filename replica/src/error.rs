//! Kafka error codes the replica core answers with, mapped to their wire numbers in exactly one
//! place ([`ErrorCode::code`]), and the typed error for inputs the core refuses.
//!
//! The core builds no protocol messages, so it does not depend on a protocol crate; a unit test
//! checks every number against `kafka-protocol`'s `ResponseError` so the two cannot drift apart.

/// The Kafka errors a replica decision can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: a follower fetched beyond the leader's log end, or from an epoch the leader cannot
    /// place.
    OffsetOutOfRange,
    /// 6: this replica is not the leader (or was, in an earlier epoch).
    NotLeaderOrFollower,
    /// 7: the partition holds as many acknowledgement waiters as it may; nothing was appended,
    /// the client retries.
    RequestTimedOut,
    /// 19: acks=all refused before the append: the ISR is smaller than `min.insync.replicas`.
    NotEnoughReplicas,
    /// 20: appended, but the ISR shrank below `min.insync.replicas` before the batch was
    /// committed.
    NotEnoughReplicasAfterAppend,
    /// 45: an idempotent producer's sequence has a gap.
    OutOfOrderSequenceNumber,
    /// 47: an idempotent producer's epoch is older than the one the partition knows.
    InvalidProducerEpoch,
    /// 56: the local log failed; the partition is offline on this broker.
    KafkaStorageError,
    /// 74: the request's leader epoch is older than this replica's (KIP-320).
    FencedLeaderEpoch,
    /// 75: the request's leader epoch is newer than this replica's, or the replica id is not
    /// known in this epoch (KIP-320).
    UnknownLeaderEpoch,
    /// 87: a batch this partition refuses (e.g. an idempotent batch with a negative sequence).
    InvalidRecord,
}

impl ErrorCode {
    /// The Kafka wire code of this error.
    pub const fn code(self) -> i16 {
        match self {
            ErrorCode::OffsetOutOfRange => 1,
            ErrorCode::NotLeaderOrFollower => 6,
            ErrorCode::RequestTimedOut => 7,
            ErrorCode::NotEnoughReplicas => 19,
            ErrorCode::NotEnoughReplicasAfterAppend => 20,
            ErrorCode::OutOfOrderSequenceNumber => 45,
            ErrorCode::InvalidProducerEpoch => 47,
            ErrorCode::KafkaStorageError => 56,
            ErrorCode::FencedLeaderEpoch => 74,
            ErrorCode::UnknownLeaderEpoch => 75,
            ErrorCode::InvalidRecord => 87,
        }
    }

    /// Every variant, for exhaustive tests.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::OffsetOutOfRange,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::RequestTimedOut,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::OutOfOrderSequenceNumber,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::KafkaStorageError,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::InvalidRecord,
    ];
}

/// An input the core refuses: a controller decision that contradicts what the replica knows,
/// or local log positions that break the log's invariants. Nothing changes when one is
/// returned; the caller logs it (one line) and carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("leader epoch {got} is older than the current {current}")]
    StaleLeaderEpoch { current: i32, got: i32 },
    #[error("partition epoch {got} is not newer than the current {current}")]
    StalePartitionEpoch { current: i32, got: i32 },
    #[error("this replica ({id}) is not in the assigned replicas")]
    NotAReplica { id: i32 },
    #[error("the ISR must hold the leader and only assigned replicas, each once")]
    InvalidIsr,
    #[error("the assigned replicas name replica {id} twice")]
    DuplicateReplica { id: i32 },
    #[error("log positions out of order: start {log_start} durable {durable_end} written {written_end} end {log_end}")]
    EndsOutOfOrder {
        log_start: i64,
        durable_end: i64,
        written_end: i64,
        log_end: i64,
    },
    #[error("log positions went back without a truncation ({what}: {from} -> {to})")]
    EndsWentBack {
        what: &'static str,
        from: i64,
        to: i64,
    },
    #[error("truncation to {to} moved a position forward")]
    TruncationForward { to: i64 },
    #[error("not the leader")]
    NotLeader,
    #[error("not a follower")]
    NotFollower,
    #[error("answer for leader epoch {got}, current {current}")]
    WrongEpoch { current: i32, got: i32 },
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;
    use kafka_protocol::ResponseError as R;

    #[test]
    fn codes_match_kafka_protocol() {
        let expected = [
            (ErrorCode::OffsetOutOfRange, R::OffsetOutOfRange),
            (ErrorCode::NotLeaderOrFollower, R::NotLeaderOrFollower),
            (ErrorCode::RequestTimedOut, R::RequestTimedOut),
            (ErrorCode::NotEnoughReplicas, R::NotEnoughReplicas),
            (
                ErrorCode::NotEnoughReplicasAfterAppend,
                R::NotEnoughReplicasAfterAppend,
            ),
            (
                ErrorCode::OutOfOrderSequenceNumber,
                R::OutOfOrderSequenceNumber,
            ),
            (ErrorCode::InvalidProducerEpoch, R::InvalidProducerEpoch),
            (ErrorCode::KafkaStorageError, R::KafkaStorageError),
            (ErrorCode::FencedLeaderEpoch, R::FencedLeaderEpoch),
            (ErrorCode::UnknownLeaderEpoch, R::UnknownLeaderEpoch),
            (ErrorCode::InvalidRecord, R::InvalidRecord),
        ];
        assert_eq!(expected.len(), ErrorCode::ALL.len());
        for (ours, theirs) in expected {
            assert_eq!(ours.code(), theirs.code(), "{ours:?}");
        }
    }
}

//! Every Kafka error code the broker sends, and the one place engine errors become codes.
//!
//! Codes are Kafka's (`org.apache.kafka.common.protocol.Errors`); a code is never reused for a
//! different meaning. [`log_error_code`] is the only mapping from [`LogError`] to the wire, and
//! it logs each failure once, at a level that matches whose fault it is (client: debug/info,
//! storage: error).

use shardlog_engine::{BatchError, LogError};

pub const NONE: i16 = 0;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const RECORD_LIST_TOO_LARGE: i16 = 18;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const INVALID_REQUEST: i16 = 42;
pub const POLICY_VIOLATION: i16 = 44;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_CONFIG: i16 = 40;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const UNKNOWN_PRODUCER_ID: i16 = 59;
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const INVALID_RECORD: i16 = 87;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
pub const PRODUCER_FENCED: i16 = 90;
pub const INVALID_TXN_STATE: i16 = 48;
pub const RESOURCE_NOT_FOUND: i16 = 91;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const NOT_CONTROLLER: i16 = 41;
// The controller's answers to broker registration, heartbeats and AlterPartition.
pub const STALE_BROKER_EPOCH: i16 = 77;
pub const INVALID_UPDATE_VERSION: i16 = 95;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
pub const BROKER_ID_NOT_REGISTERED: i16 = 102;
pub const INELIGIBLE_REPLICA: i16 = 107;

/// Maps an engine error to its Kafka code, logging it with the partition it concerns.
pub fn log_error_code(err: &LogError, topic: &str, partition: i32) -> i16 {
    match err {
        LogError::InvalidBatch(BatchError::Crc { .. }) => {
            tracing::info!(topic, partition, error = %err, "refused batch: CORRUPT_MESSAGE");
            CORRUPT_MESSAGE
        }
        LogError::InvalidBatch(BatchError::TooLarge { .. }) => {
            tracing::info!(topic, partition, error = %err, "refused batch: MESSAGE_TOO_LARGE");
            MESSAGE_TOO_LARGE
        }
        LogError::InvalidBatch(BatchError::Magic(_)) => {
            tracing::info!(topic, partition, error = %err, "refused batch: UNSUPPORTED_FOR_MESSAGE_FORMAT");
            UNSUPPORTED_FOR_MESSAGE_FORMAT
        }
        LogError::InvalidBatch(_) => {
            tracing::info!(topic, partition, error = %err, "refused batch: CORRUPT_MESSAGE");
            CORRUPT_MESSAGE
        }
        LogError::OffsetOutOfRange { .. } => {
            tracing::debug!(topic, partition, error = %err, "OFFSET_OUT_OF_RANGE");
            OFFSET_OUT_OF_RANGE
        }
        LogError::Io { .. }
        | LogError::StorageFull(_)
        | LogError::Failed(_)
        | LogError::Corrupt { .. }
        | LogError::UnsupportedFormat { .. } => {
            tracing::error!(topic, partition, error = %err, "storage error: KAFKA_STORAGE_ERROR");
            KAFKA_STORAGE_ERROR
        }
        // Follower-path errors (a fetch answer that does not continue the log): no client
        // request reaches them.
        LogError::NonContiguous { .. }
        | LogError::EpochRegression { .. }
        | LogError::Truncated { .. } => {
            tracing::error!(topic, partition, error = %err, "replication error: UNKNOWN_SERVER_ERROR");
            UNKNOWN_SERVER_ERROR
        }
    }
}

/// Kafka's name for a code, for log lines and tests.
pub fn name(code: i16) -> &'static str {
    match code {
        NONE => "NONE",
        OFFSET_OUT_OF_RANGE => "OFFSET_OUT_OF_RANGE",
        CORRUPT_MESSAGE => "CORRUPT_MESSAGE",
        UNKNOWN_TOPIC_OR_PARTITION => "UNKNOWN_TOPIC_OR_PARTITION",
        MESSAGE_TOO_LARGE => "MESSAGE_TOO_LARGE",
        INVALID_TOPIC_EXCEPTION => "INVALID_TOPIC_EXCEPTION",
        NOT_ENOUGH_REPLICAS => "NOT_ENOUGH_REPLICAS",
        NOT_ENOUGH_REPLICAS_AFTER_APPEND => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        NOT_LEADER_OR_FOLLOWER => "NOT_LEADER_OR_FOLLOWER",
        FENCED_LEADER_EPOCH => "FENCED_LEADER_EPOCH",
        UNKNOWN_LEADER_EPOCH => "UNKNOWN_LEADER_EPOCH",
        REQUEST_TIMED_OUT => "REQUEST_TIMED_OUT",
        INVALID_REQUIRED_ACKS => "INVALID_REQUIRED_ACKS",
        INVALID_REQUEST => "INVALID_REQUEST",
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED => "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        UNSUPPORTED_VERSION => "UNSUPPORTED_VERSION",
        TOPIC_ALREADY_EXISTS => "TOPIC_ALREADY_EXISTS",
        INVALID_PARTITIONS => "INVALID_PARTITIONS",
        INVALID_REPLICATION_FACTOR => "INVALID_REPLICATION_FACTOR",
        INVALID_REPLICA_ASSIGNMENT => "INVALID_REPLICA_ASSIGNMENT",
        INVALID_CONFIG => "INVALID_CONFIG",
        POLICY_VIOLATION => "POLICY_VIOLATION",
        OUT_OF_ORDER_SEQUENCE_NUMBER => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        INVALID_PRODUCER_EPOCH => "INVALID_PRODUCER_EPOCH",
        KAFKA_STORAGE_ERROR => "KAFKA_STORAGE_ERROR",
        LEADER_NOT_AVAILABLE => "LEADER_NOT_AVAILABLE",
        UNKNOWN_PRODUCER_ID => "UNKNOWN_PRODUCER_ID",
        INVALID_RECORD => "INVALID_RECORD",
        PRODUCER_FENCED => "PRODUCER_FENCED",
        DUPLICATE_SEQUENCE_NUMBER => "DUPLICATE_SEQUENCE_NUMBER",
        UNKNOWN_SERVER_ERROR => "UNKNOWN_SERVER_ERROR",
        NOT_CONTROLLER => "NOT_CONTROLLER",
        STALE_BROKER_EPOCH => "STALE_BROKER_EPOCH",
        INVALID_UPDATE_VERSION => "INVALID_UPDATE_VERSION",
        UNKNOWN_TOPIC_ID => "UNKNOWN_TOPIC_ID",
        DUPLICATE_BROKER_REGISTRATION => "DUPLICATE_BROKER_REGISTRATION",
        BROKER_ID_NOT_REGISTERED => "BROKER_ID_NOT_REGISTERED",
        INELIGIBLE_REPLICA => "INELIGIBLE_REPLICA",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn engine_errors_map_to_distinct_kafka_codes() {
        let crc = LogError::InvalidBatch(BatchError::Crc {
            stored: 1,
            computed: 2,
        });
        assert_eq!(log_error_code(&crc, "t", 0), CORRUPT_MESSAGE);
        let big = LogError::InvalidBatch(BatchError::TooLarge { size: 2, max: 1 });
        assert_eq!(log_error_code(&big, "t", 0), MESSAGE_TOO_LARGE);
        let oor = LogError::OffsetOutOfRange {
            offset: 5,
            start: 0,
            end: 1,
        };
        assert_eq!(log_error_code(&oor, "t", 0), OFFSET_OUT_OF_RANGE);
        let full = LogError::StorageFull(PathBuf::from("/x"));
        assert_eq!(log_error_code(&full, "t", 0), KAFKA_STORAGE_ERROR);
        assert_eq!(name(UNSUPPORTED_VERSION), "UNSUPPORTED_VERSION");
    }
}

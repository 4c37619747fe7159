//! The version range of each API this client implements.
//!
//! The upper bounds stop before versions whose semantics the client does not implement
//! (e.g. Produce v13 and Fetch v13 address topics by id only).

use kafka_protocol::messages::ApiKey;

/// `(min, max)` version of `api` that this client can encode and decode with full meaning.
pub fn client_range(api: ApiKey) -> (i16, i16) {
    match api {
        ApiKey::Produce => (3, 12),
        ApiKey::Fetch => (4, 12),
        ApiKey::ListOffsets => (1, 9),
        ApiKey::Metadata => (1, 12),
        ApiKey::ApiVersions => (0, 3),
        ApiKey::CreateTopics => (2, 7),
        ApiKey::DeleteTopics => (1, 5),
        ApiKey::InitProducerId => (0, 4),
        ApiKey::FindCoordinator => (0, 3),
        ApiKey::JoinGroup => (0, 7),
        ApiKey::SyncGroup => (0, 5),
        ApiKey::Heartbeat => (0, 4),
        ApiKey::LeaveGroup => (0, 4),
        ApiKey::OffsetCommit => (2, 8),
        ApiKey::OffsetFetch => (1, 7),
        // Admin APIs used by the `shardlog` CLI (request/response structs filled by the caller).
        ApiKey::DescribeGroups => (0, 5),
        ApiKey::ListGroups => (0, 4),
        ApiKey::DeleteGroups => (0, 2),
        ApiKey::DescribeConfigs => (1, 4),
        ApiKey::IncrementalAlterConfigs => (0, 1),
        ApiKey::CreatePartitions => (0, 3),
        ApiKey::DescribeLogDirs => (1, 4),
        ApiKey::DescribeCluster => (0, 2),
        ApiKey::DeleteRecords => (0, 2),
        _ => (0, -1),
    }
}

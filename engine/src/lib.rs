//! shardlog's storage engine: one segmented, append-only partition log per partition, owned by
//! the shard (core) that owns the partition.
//!
//! * [`batch`]: the RecordBatch v2 format, stored verbatim; validation and offset assignment.
//! * [`io`]: the single narrow door to the disk, with a glommio O_DIRECT back end and a
//!   fault-injecting simulator.
//! * [`index`]: sparse offset and time indexes per segment.
//! * [`files`]: the shard-wide bound on open sealed-segment files.
//! * [`disk_ops`]: timing of the log's writes and fdatasyncs (metrics hook, slow-disk warnings).
//! * [`log`]: [`PartitionLog`]: append with group commit, reads, retention, recovery.
//!
//! See `docs/ARCHITECTURE.md` for the on-disk format and the durability contract.

pub mod batch;
pub mod cache;
pub mod config;
pub mod disk_ops;
pub mod error;
pub mod files;
pub mod index;
pub mod io;
pub mod log;

/// A Kafka offset.
pub type Offset = i64;

pub use batch::{BatchError, BatchInfo, StoredBatch};
pub use cache::CacheBudget;
pub use config::{FlushPolicy, LogConfig, TimestampType};
pub use disk_ops::DiskOp;
pub use error::LogError;
pub use files::{SegmentFiles, SegmentFilesStats};
pub use io::{BrokerStorage, GlommioStorage, SimStorage, Storage, StorageFile};
pub use log::{
    AppendInfo, Committed, PartitionLog, ReadResult, RecoveryReport, ReplicatedAppend,
    RetentionReport,
};

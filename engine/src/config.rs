//! Per-log configuration. Names carry their units; defaults follow Kafka where Kafka has one.

/// When appended data is fsynced, and therefore when an acks=all produce may be acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fdatasync before any append counts as committed (Kafka `flush.messages=1`). Appends that
    /// arrive while an fdatasync is in flight share the next one (group commit).
    EveryBatch,
    /// Committed once written to the device; fdatasync after `bytes` unsynced bytes or `ms`
    /// milliseconds, whichever first (0 disables that trigger).
    Interval { bytes: u64, ms: u64 },
    /// Committed once written to the device; fdatasync only when a segment is sealed or the log
    /// is closed. Durability against power loss comes from replication.
    Never,
}

/// Which timestamp a batch keeps (Kafka `message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
    pub max_batch_bytes: usize,
    pub flush: FlushPolicy,
    pub index_interval_bytes: u32,
    pub cache_bytes: usize,
    pub preallocate_bytes: u64,
    /// Keep the file of (at most) one segment that retention deletes and reuse it as the next
    /// segment: writes into already-written blocks need no extent conversion, so each
    /// fdatasync is a device flush instead of a journal commit (see docs/ARCHITECTURE.md).
    pub recycle_segments: bool,
    pub max_pending_bytes: usize,
    pub timestamp_type: TimestampType,
}

pub const DAY_MS: i64 = 24 * 3600 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            max_batch_bytes: 1_048_588,
            flush: FlushPolicy::EveryBatch,
            index_interval_bytes: 4096,
            cache_bytes: 16 << 20,
            preallocate_bytes: 32 << 20,
            recycle_segments: true,
            max_pending_bytes: 64 << 20,
            timestamp_type: TimestampType::CreateTime,
        }
    }
}

impl LogConfig {
    /// Clamps values the on-disk format cannot represent (positions are u32 in the index).
    pub fn normalized(mut self) -> Self {
        self.segment_bytes = self.segment_bytes.clamp(4096, u64::from(u32::MAX));
        self.index_interval_bytes = self.index_interval_bytes.max(1);
        self.preallocate_bytes = self.preallocate_bytes.max(1 << 20);
        self.max_pending_bytes = self.max_pending_bytes.max(self.max_batch_bytes * 2);
        self
    }
}

//! The broker's wall clock, chosen at start-up like its storage (see `broker::Broker::start_with`).
//!
//! Time-based log and producer work reads it: retention (`retention.ms` against a segment's
//! newest timestamp), producer-id expiry and the per-partition cap on producer ids, and the
//! periodic `flush.ms` tick. A simulation sets a [`ManualClock`] and moves it forward to make
//! hours pass in a test. The *cadence* of that work stays on glommio's timers (real time: they
//! cannot be driven by another clock), and so do request deadlines, long polls and group
//! session timeouts, which measure durations with `Instant`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Milliseconds since the Unix epoch, from the system or from a test.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// `SystemTime::now()`.
    #[default]
    System,
    /// Time that moves only when the test moves it.
    Manual(ManualClock),
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        match self {
            Self::System => now_ms(),
            Self::Manual(m) => m.now_ms(),
        }
    }
}

/// A clock shared by a test and the broker's shards (clones share the time).
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }

    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Wall-clock milliseconds since the Unix epoch (what [`Clock::System`] reads).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds on a monotonic clock since its first use in this process (the controller's
/// broker-session times: heartbeats, expiry, refused connections).
pub(crate) fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

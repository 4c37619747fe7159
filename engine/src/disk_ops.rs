//! Timing of the log's device operations: every direct write of appended data and every
//! fdatasync that makes it durable.
//!
//! A produce request's latency includes these operations, but from the request alone an
//! operator cannot tell a busy broker from a device that stopped answering. (On the development
//! VM the virtual disk once completed no request at all for 100 ms while requests were in
//! flight; see docs/ARCHITECTURE.md.) So each operation's duration goes to an observer the
//! embedding program installs (the broker feeds its `/metrics` histogram), and one slower than
//! the threshold is logged as a warning naming the file, at most one line per second per
//! thread with a count of the slow operations not logged since.
//!
//! Settings are per thread, as everything on a shard is: each shard installs them when it
//! starts. A thread that installs nothing still gets warnings at [`DEFAULT_SLOW`].

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

/// A device operation of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOp {
    /// A direct (O_DIRECT) write of appended batches.
    Write,
    /// The fdatasync (with the directory's fsync after a roll) that makes writes durable.
    Fdatasync,
}

impl DiskOp {
    pub const ALL: [DiskOp; 2] = [DiskOp::Write, DiskOp::Fdatasync];

    pub fn name(self) -> &'static str {
        match self {
            DiskOp::Write => "write",
            DiskOp::Fdatasync => "fdatasync",
        }
    }
}

/// Operations slower than this are logged unless a thread sets its own threshold.
pub const DEFAULT_SLOW: Duration = Duration::from_millis(100);

/// Warnings about slow operations on one thread are at least this far apart.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Receives every timed operation of the thread it is installed on.
pub type Observer = fn(DiskOp, Duration);

thread_local! {
    static OBSERVER: Cell<Option<Observer>> = const { Cell::new(None) };
    static SLOW: Cell<Duration> = const { Cell::new(DEFAULT_SLOW) };
    static LIMITER: Cell<WarnLimiter> = const { Cell::new(WarnLimiter::new()) };
}

/// Sends every timed operation on this thread to `f` (`None`: to nobody).
pub fn set_observer(f: Option<Observer>) {
    OBSERVER.with(|o| o.set(f));
}

/// Operations on this thread that take longer than `d` are logged; `Duration::ZERO` logs none.
pub fn set_slow_threshold(d: Duration) {
    SLOW.with(|s| s.set(d));
}

/// Times `fut`, a device operation on `path` (`bytes` long for a write), and reports it.
pub(crate) async fn timed<T>(
    op: DiskOp,
    path: &Path,
    bytes: usize,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let start = Instant::now();
    let out = fut.await;
    let took = start.elapsed();
    if let Some(f) = OBSERVER.with(Cell::get) {
        f(op, took);
    }
    let slow = SLOW.with(Cell::get);
    if !slow.is_zero() && took > slow {
        let decision = LIMITER.with(|l| {
            let mut lim = l.get();
            let d = lim.on_slow(start + took);
            l.set(lim);
            d
        });
        if let Some(not_logged) = decision {
            tracing::warn!(
                op = op.name(),
                path = %path.display(),
                bytes,
                took_ms = took.as_millis() as u64,
                threshold_ms = slow.as_millis() as u64,
                slow_ops_not_logged = not_logged,
                "slow disk operation: a write or fdatasync took longer than slow_disk_op_ms (the device, or the queue in front of it)"
            );
        }
    }
    out
}

/// At most one warning per [`WARN_EVERY`]; counts the slow operations in between.
#[derive(Clone, Copy, Debug)]
struct WarnLimiter {
    last: Option<Instant>,
    not_logged: u64,
}

impl WarnLimiter {
    const fn new() -> Self {
        Self {
            last: None,
            not_logged: 0,
        }
    }

    /// A slow operation at `now`: `Some(n)` to log it (with `n` slow operations since the last
    /// line that were not logged), `None` to count it instead.
    fn on_slow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < WARN_EVERY => {
                self.not_logged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.not_logged))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_skipped() {
        let t0 = Instant::now();
        let mut l = WarnLimiter::new();
        assert_eq!(l.on_slow(t0), Some(0));
        assert_eq!(l.on_slow(t0 + Duration::from_millis(10)), None);
        assert_eq!(l.on_slow(t0 + Duration::from_millis(999)), None);
        assert_eq!(l.on_slow(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(l.on_slow(t0 + Duration::from_millis(1500)), None);
        assert_eq!(l.on_slow(t0 + Duration::from_millis(2600)), Some(1));
    }

    thread_local! {
        static SEEN: std::cell::RefCell<Vec<(DiskOp, Duration)>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn collect(op: DiskOp, d: Duration) {
        SEEN.with(|s| s.borrow_mut().push((op, d)));
    }

    #[test]
    fn the_observer_sees_each_operation_with_its_duration() {
        set_observer(Some(collect));
        let v = futures_lite::future::block_on(timed(
            DiskOp::Fdatasync,
            Path::new("x.log"),
            0,
            async {
                std::thread::sleep(Duration::from_millis(20));
                7
            },
        ));
        set_observer(None);
        futures_lite::future::block_on(timed(DiskOp::Write, Path::new("x.log"), 1, async {}));
        assert_eq!(v, 7);
        let seen = SEEN.with(|s| s.borrow().clone());
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].0, DiskOp::Fdatasync);
        assert!(seen[0].1 >= Duration::from_millis(20), "{seen:?}");
    }
}

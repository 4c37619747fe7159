//! Measurement: latency histograms (µs), counters, per-interval snapshots.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded (one hour, in µs); larger values saturate.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Minimum.
    pub min_ms: f64,
    /// 50th percentile.
    pub p50_ms: f64,
    /// 90th.
    pub p90_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// 99.9th.
    pub p999_ms: f64,
    /// 99.99th.
    pub p9999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl LatencySummary {
    /// Summarizes a µs histogram (all zeros when empty).
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            min_ms: ms(h.min()),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            p9999_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Percentile spectrum points `(percentile, ms)` for plotting, up to 99.999.
pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let qs = [
        0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97,
        0.98, 0.99, 0.993, 0.995, 0.997, 0.999, 0.9993, 0.9995, 0.9997, 0.9999, 0.99993, 0.99995,
        0.99997, 0.99999,
    ];
    for q in qs {
        out.push((q * 100.0, h.value_at_quantile(q) as f64 / 1000.0));
    }
    out
}

/// Counters of one direction (produce or consume).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Records.
    pub records: u64,
    /// Value + key bytes.
    pub bytes: u64,
}

impl Counts {
    fn add(&mut self, records: u64, bytes: u64) {
        self.records += records;
        self.bytes += bytes;
    }
}

/// Which phase the run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Preloading data (not measured).
    Preload,
    /// Warming up (not measured).
    Warmup,
    /// Measured window.
    Measure,
    /// After the window: producers flush, consumers catch up.
    Drain,
}

/// One point of the time series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalPoint {
    /// End of the interval, seconds since the run started.
    pub t_s: f64,
    /// Length of the interval.
    pub dt_s: f64,
    /// Phase at the end of the interval.
    pub phase: Phase,
    /// Produce records/s (acknowledged).
    pub produce_rps: f64,
    /// Produce MB/s (10^6 bytes of keys and values).
    pub produce_mbps: f64,
    /// Consume records/s.
    pub consume_rps: f64,
    /// Consume MB/s.
    pub consume_mbps: f64,
    /// Publish latency this interval.
    pub publish: LatencySummary,
    /// End-to-end latency this interval.
    pub e2e: LatencySummary,
    /// Errors this interval.
    pub errors: u64,
}

/// One acknowledged record's publish latency in µs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordLatency {
    /// From the due time (coordinated-omission corrected; the send call in closed loop).
    pub corrected: u64,
    /// From the actual send call.
    pub raw: u64,
    /// The part of `corrected` before the record's Produce request was queued.
    pub queue: u64,
}

/// Everything measured; shared by the producer and consumer tasks behind a mutex (locked once
/// per batch or fetched partition, not per record).
pub struct Recorder {
    /// Current phase.
    pub phase: Phase,
    /// Publish latency from the due time (coordinated-omission corrected), measured window.
    pub publish: Histogram<u64>,
    /// Publish latency from the actual send call, measured window.
    pub publish_raw: Histogram<u64>,
    /// End-to-end latency, measured window.
    pub e2e: Histogram<u64>,
    /// Per record, from its due time to its Produce request being queued on the connection
    /// (linger, waiting for the sender and for an in-flight slot), measured window.
    pub publish_queue: Histogram<u64>,
    /// Per batch, from its Produce request being queued to its outcome (socket, broker,
    /// response), measured window.
    pub produce_request: Histogram<u64>,
    /// Acknowledged in the measured window.
    pub produced: Counts,
    /// Consumed in the measured window.
    pub consumed: Counts,
    /// Acknowledged over the whole run (all phases).
    pub produced_total: Counts,
    /// Consumed over the whole run.
    pub consumed_total: Counts,
    /// Records whose batch failed (all phases).
    pub failed_total: u64,
    /// Errors by name (all phases).
    pub errors: BTreeMap<String, u64>,
    /// Highest acknowledged offset + 1 per (topic, partition).
    pub acked_end: HashMap<(String, i32), i64>,
    /// Records acknowledged per (topic, partition), all phases.
    pub acked_per_partition: HashMap<(String, i32), u64>,
    iv_publish: Histogram<u64>,
    iv_e2e: Histogram<u64>,
    iv_produced: Counts,
    iv_consumed: Counts,
    iv_errors: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder in the warm-up phase.
    pub fn new() -> Recorder {
        Recorder {
            phase: Phase::Warmup,
            publish: new_histogram(),
            publish_raw: new_histogram(),
            e2e: new_histogram(),
            publish_queue: new_histogram(),
            produce_request: new_histogram(),
            produced: Counts::default(),
            consumed: Counts::default(),
            produced_total: Counts::default(),
            consumed_total: Counts::default(),
            failed_total: 0,
            errors: BTreeMap::new(),
            acked_end: HashMap::new(),
            acked_per_partition: HashMap::new(),
            iv_publish: new_histogram(),
            iv_e2e: new_histogram(),
            iv_produced: Counts::default(),
            iv_consumed: Counts::default(),
            iv_errors: 0,
        }
    }

    fn measuring(&self) -> bool {
        self.phase == Phase::Measure
    }

    /// Records an acknowledged batch: latencies (µs) of each record (corrected, raw, and the
    /// corrected one's queueing part) and of its Produce request.
    pub fn acked(
        &mut self,
        topic: &str,
        partition: i32,
        base_offset: i64,
        latencies_us: impl Iterator<Item = RecordLatency>,
        request_us: u64,
        bytes: u64,
    ) {
        let mut n = 0u64;
        let measuring = self.measuring();
        for l in latencies_us {
            n += 1;
            self.iv_publish.saturating_record(l.corrected.max(1));
            if measuring {
                self.publish.saturating_record(l.corrected.max(1));
                self.publish_raw.saturating_record(l.raw.max(1));
                self.publish_queue.saturating_record(l.queue.max(1));
            }
        }
        if measuring {
            self.produce_request.saturating_record(request_us.max(1));
        }
        self.iv_produced.add(n, bytes);
        self.produced_total.add(n, bytes);
        if measuring {
            self.produced.add(n, bytes);
        }
        let key = (topic.to_string(), partition);
        *self.acked_per_partition.entry(key.clone()).or_insert(0) += n;
        if base_offset >= 0 {
            let end = base_offset + n as i64;
            let e = self.acked_end.entry(key).or_insert(end);
            *e = (*e).max(end);
        }
    }

    /// Records a failed batch of `records` records.
    pub fn failed(&mut self, error: &str, records: u64) {
        self.failed_total += records;
        self.iv_errors += 1;
        *self.errors.entry(error.to_string()).or_insert(0) += 1;
    }

    /// Records consumed records with their end-to-end latencies (µs).
    pub fn consumed(&mut self, e2e_us: impl Iterator<Item = u64>, records: u64, bytes: u64) {
        let measuring = self.measuring();
        for l in e2e_us {
            self.iv_e2e.saturating_record(l.max(1));
            if measuring {
                self.e2e.saturating_record(l.max(1));
            }
        }
        self.iv_consumed.add(records, bytes);
        self.consumed_total.add(records, bytes);
        if measuring {
            self.consumed.add(records, bytes);
        }
    }

    /// Moves to a phase; entering [`Phase::Measure`] clears the measured window.
    pub fn set_phase(&mut self, phase: Phase) {
        if phase == Phase::Measure && self.phase != Phase::Measure {
            self.publish.reset();
            self.publish_raw.reset();
            self.e2e.reset();
            self.publish_queue.reset();
            self.produce_request.reset();
            self.produced = Counts::default();
            self.consumed = Counts::default();
        }
        self.phase = phase;
    }

    /// Closes an interval of `dt_s` seconds ending at `t_s`: its point and its two histograms
    /// (publish, e2e), which are reset.
    pub fn take_interval(
        &mut self,
        t_s: f64,
        dt_s: f64,
    ) -> (IntervalPoint, Histogram<u64>, Histogram<u64>) {
        let dt = dt_s.max(1e-9);
        let p = IntervalPoint {
            t_s,
            dt_s,
            phase: self.phase,
            produce_rps: self.iv_produced.records as f64 / dt,
            produce_mbps: self.iv_produced.bytes as f64 / dt / 1e6,
            consume_rps: self.iv_consumed.records as f64 / dt,
            consume_mbps: self.iv_consumed.bytes as f64 / dt / 1e6,
            publish: LatencySummary::of(&self.iv_publish),
            e2e: LatencySummary::of(&self.iv_e2e),
            errors: self.iv_errors,
        };
        let hp = std::mem::replace(&mut self.iv_publish, new_histogram());
        let he = std::mem::replace(&mut self.iv_e2e, new_histogram());
        self.iv_produced = Counts::default();
        self.iv_consumed = Counts::default();
        self.iv_errors = 0;
        (p, hp, he)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_data() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).expect("record");
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 10_000);
        // 3 significant digits: within 0.1%.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(s.p50_ms, 5.0), "p50 {}", s.p50_ms);
        assert!(close(s.p90_ms, 9.0), "p90 {}", s.p90_ms);
        assert!(close(s.p99_ms, 9.9), "p99 {}", s.p99_ms);
        assert!(close(s.p999_ms, 9.99), "p999 {}", s.p999_ms);
        assert!(close(s.max_ms, 10.0), "max {}", s.max_ms);
        assert!(close(s.min_ms, 0.001));
        assert!((s.mean_ms - 5.0005).abs() < 0.01);
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn outlier_shows_only_in_the_tail() {
        let mut h = new_histogram();
        for _ in 0..99_980 {
            h.record(1000).expect("record");
        }
        for _ in 0..20 {
            h.record(500_000).expect("record");
        }
        let s = LatencySummary::of(&h);
        assert!((s.p999_ms - 1.0).abs() < 0.01);
        assert!((s.p9999_ms - 500.0).abs() < 1.0, "p9999 {}", s.p9999_ms);
        // Saturation instead of failure for huge values.
        h.saturating_record(u64::MAX);
        assert!(h.max() >= MAX_LATENCY_US);
    }

    #[test]
    fn warmup_is_not_measured_and_intervals_reset() {
        let mut r = Recorder::new();
        let lat = |corrected, raw, queue| RecordLatency {
            corrected,
            raw,
            queue,
        };
        r.acked(
            "t",
            0,
            0,
            [lat(5000, 4000, 3000), lat(6000, 5000, 3000)].into_iter(),
            2000,
            2048,
        );
        assert_eq!(r.produced.records, 0);
        assert_eq!(r.produced_total.records, 2);
        r.set_phase(Phase::Measure);
        r.acked("t", 0, 2, [lat(1000, 900, 300)].into_iter(), 700, 1024);
        r.consumed([2000u64, 3000].into_iter(), 2, 2048);
        r.failed("NotLeaderOrFollower", 7);
        assert_eq!(r.produced.records, 1);
        assert_eq!(r.publish.len(), 1);
        assert_eq!(r.publish.max(), r.publish.highest_equivalent(1000));
        // The breakdown, measured window only: queueing per record, the request per batch.
        assert_eq!(r.publish_queue.len(), 1);
        assert_eq!(
            r.publish_queue.max(),
            r.publish_queue.highest_equivalent(300)
        );
        assert_eq!(r.produce_request.len(), 1);
        assert_eq!(
            r.produce_request.max(),
            r.produce_request.highest_equivalent(700)
        );
        assert_eq!(r.acked_end[&("t".to_string(), 0)], 3);
        assert_eq!(r.acked_per_partition[&("t".to_string(), 0)], 3);
        assert_eq!(r.failed_total, 7);
        let (p, hp, he) = r.take_interval(2.0, 2.0);
        assert_eq!(p.produce_rps, 1.5); // 3 records over 2 s (warm-up included in intervals)
        assert!((p.produce_mbps - 3072.0 / 2.0 / 1e6).abs() < 1e-12);
        assert_eq!(p.consume_rps, 1.0);
        assert_eq!(p.errors, 1);
        assert_eq!(hp.len(), 3);
        assert_eq!(he.len(), 2);
        let (p2, hp2, _) = r.take_interval(3.0, 1.0);
        assert_eq!(p2.produce_rps, 0.0);
        assert!(hp2.is_empty());
        // Re-entering Measure does not clear; entering it from another phase does.
        r.set_phase(Phase::Measure);
        assert_eq!(r.produced.records, 1);
        r.set_phase(Phase::Drain);
        r.set_phase(Phase::Measure);
        assert_eq!(r.produced.records, 0);
        assert!(r.publish_queue.is_empty() && r.produce_request.is_empty());
    }

    #[test]
    fn spectrum_is_monotonic() {
        let mut h = new_histogram();
        for v in 1..=100_000u64 {
            h.record(v).expect("record");
        }
        let s = spectrum(&h);
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!((s.last().map_or(0.0, |x| x.0) - 99.999).abs() < 1e-9);
    }
}

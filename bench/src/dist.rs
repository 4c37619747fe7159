//! Workload distributions: message sizes, keys (uniform, zipf) and the open-loop pacer.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Message (value) size: a fixed number of bytes or a distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SizeDist {
    /// Every message has this size.
    Fixed(usize),
    /// A distribution.
    Dist(SizeSpec),
}

/// A size distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum SizeSpec {
    /// Uniform in `[min, max]`.
    Uniform {
        /// Smallest size.
        min: usize,
        /// Largest size.
        max: usize,
    },
    /// Normal with `mean` and `stddev`, clamped to `[min, max]`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        stddev: f64,
        /// Lower clamp.
        min: usize,
        /// Upper clamp.
        max: usize,
    },
}

impl SizeDist {
    /// Draws a size.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> usize {
        match self {
            SizeDist::Fixed(n) => *n,
            SizeDist::Dist(SizeSpec::Uniform { min, max }) => rng.gen_range(*min..=*max.max(min)),
            SizeDist::Dist(SizeSpec::Normal {
                mean,
                stddev,
                min,
                max,
            }) => {
                // Box-Muller.
                let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                let u2: f64 = rng.gen();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let v = (mean + stddev * z).round();
                (v.max(*min as f64).min(*max as f64)) as usize
            }
        }
    }

    /// Mean size (for converting a MB/s target into records/s).
    pub fn mean(&self) -> f64 {
        match self {
            SizeDist::Fixed(n) => *n as f64,
            SizeDist::Dist(SizeSpec::Uniform { min, max }) => (*min + *max) as f64 / 2.0,
            SizeDist::Dist(SizeSpec::Normal { mean, .. }) => *mean,
        }
    }

    /// Smallest size that can be drawn.
    pub fn min(&self) -> usize {
        match self {
            SizeDist::Fixed(n) => *n,
            SizeDist::Dist(SizeSpec::Uniform { min, .. }) => *min,
            SizeDist::Dist(SizeSpec::Normal { min, .. }) => *min,
        }
    }
}

/// Record keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum KeyDist {
    /// Null keys (sticky partitioning).
    None,
    /// `count` distinct keys, equally likely.
    Uniform {
        /// Distinct keys.
        count: u64,
    },
    /// `count` distinct keys, key `k` (1-based rank) with probability ∝ 1/k^exponent.
    Zipf {
        /// Distinct keys.
        count: u64,
        /// Skew (1.0 is classic Zipf).
        exponent: f64,
    },
}

/// Draws keys by a [`KeyDist`].
#[derive(Debug, Clone)]
pub struct KeyGen {
    dist: KeyDist,
    cdf: Vec<f64>,
}

impl KeyGen {
    /// Prepares the sampler (Zipf: a cumulative table of `count` entries).
    pub fn new(dist: &KeyDist) -> anyhow::Result<KeyGen> {
        let cdf = match dist {
            KeyDist::Zipf { count, exponent } => {
                anyhow::ensure!(
                    (1..=10_000_000).contains(count),
                    "zipf key count must be 1..=10000000"
                );
                anyhow::ensure!(*exponent > 0.0, "zipf exponent must be > 0");
                let mut acc = 0.0;
                let mut cdf = Vec::with_capacity(*count as usize);
                for k in 1..=*count {
                    acc += 1.0 / (k as f64).powf(*exponent);
                    cdf.push(acc);
                }
                for v in &mut cdf {
                    *v /= acc;
                }
                cdf
            }
            KeyDist::Uniform { count } => {
                anyhow::ensure!(*count >= 1, "uniform key count must be >= 1");
                Vec::new()
            }
            KeyDist::None => Vec::new(),
        };
        Ok(KeyGen {
            dist: dist.clone(),
            cdf,
        })
    }

    /// The index (0-based rank) of the next key, or None for null keys.
    pub fn next_index<R: Rng>(&self, rng: &mut R) -> Option<u64> {
        match &self.dist {
            KeyDist::None => None,
            KeyDist::Uniform { count } => Some(rng.gen_range(0..*count)),
            KeyDist::Zipf { .. } => {
                let u: f64 = rng.gen();
                let i = self.cdf.partition_point(|&c| c < u);
                Some(i.min(self.cdf.len() - 1) as u64)
            }
        }
    }

    /// Appends the key of `index` to `out` (no allocation once `out` has room).
    pub fn write_key(index: u64, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = write!(out, "key-{index}");
    }
}

/// Open-loop schedule: record `i` is due at `start + i / rate`. Latency is measured from the
/// due time, so a stalled producer accrues the waiting time of every record it should have sent
/// (coordinated-omission correction).
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start_ns: u64,
    interval_ns: f64,
}

impl Pacer {
    /// `rate` records per second from `start_ns`.
    pub fn new(start_ns: u64, rate: f64) -> anyhow::Result<Pacer> {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "rate must be > 0");
        Ok(Pacer {
            start_ns,
            interval_ns: 1e9 / rate,
        })
    }

    /// When record `i` is due (ns on the bench clock).
    pub fn due(&self, i: u64) -> u64 {
        self.start_ns + (i as f64 * self.interval_ns) as u64
    }

    /// How many records are due by `now_ns`.
    pub fn due_by(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        ((now_ns - self.start_ns) as f64 / self.interval_ns).floor() as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn pacer_schedule() {
        let p = Pacer::new(1_000, 1000.0).expect("pacer");
        assert_eq!(p.due(0), 1_000);
        assert_eq!(p.due(1), 1_001_000);
        assert_eq!(p.due(1000), 1_000_001_000);
        assert_eq!(p.due_by(999), 0);
        assert_eq!(p.due_by(1_000), 1);
        assert_eq!(p.due_by(1_000_999), 1);
        assert_eq!(p.due_by(1_001_000), 2);
        // One second at 1000/s: records 0..=1000 are due at t = 1 s exactly.
        assert_eq!(p.due_by(1_000_001_000), 1001);
        assert!(Pacer::new(0, 0.0).is_err());
    }

    #[test]
    fn zipf_is_skewed_and_uniform_is_not() {
        let mut rng = StdRng::seed_from_u64(7);
        let z = KeyGen::new(&KeyDist::Zipf {
            count: 100,
            exponent: 1.0,
        })
        .expect("zipf");
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[z.next_index(&mut rng).expect("key") as usize] += 1;
        }
        // P(rank 1) = 1/H(100) ≈ 0.1928; P(rank 2) half of it.
        let p1 = counts[0] as f64 / 100_000.0;
        assert!((p1 - 0.1928).abs() < 0.01, "p1 = {p1}");
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((ratio - 2.0).abs() < 0.15, "ratio = {ratio}");
        let u = KeyGen::new(&KeyDist::Uniform { count: 100 }).expect("uniform");
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[u.next_index(&mut rng).expect("key") as usize] += 1;
        }
        let max = *counts.iter().max().expect("max") as f64;
        let min = *counts.iter().min().expect("min") as f64;
        assert!(max / min < 1.4, "uniform spread {min}..{max}");
        assert_eq!(
            KeyGen::new(&KeyDist::None)
                .expect("none")
                .next_index(&mut rng),
            None
        );
    }

    #[test]
    fn sizes() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(SizeDist::Fixed(1024).sample(&mut rng), 1024);
        let u = SizeDist::Dist(SizeSpec::Uniform { min: 10, max: 20 });
        for _ in 0..1000 {
            let s = u.sample(&mut rng);
            assert!((10..=20).contains(&s));
        }
        assert_eq!(u.mean(), 15.0);
        let n = SizeDist::Dist(SizeSpec::Normal {
            mean: 1000.0,
            stddev: 100.0,
            min: 100,
            max: 1500,
        });
        let mean: f64 = (0..20_000).map(|_| n.sample(&mut rng) as f64).sum::<f64>() / 20_000.0;
        assert!((mean - 1000.0).abs() < 5.0, "mean {mean}");
    }
}

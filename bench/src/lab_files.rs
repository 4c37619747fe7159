//! The tuning lab's result folder, shared by the runner ([`crate::lab`]) and the report
//! generator ([`crate::lab_report`]): where each repetition's JSON lives, the machine's limits
//! and the session records, and the date arithmetic both print with.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The JSON of repetition `rep` (1-based) of `cell`.
pub fn rep_path(out: &Path, cell_id: &str, rep: u32) -> PathBuf {
    out.join("raw")
        .join(cell_id)
        .join(format!("rep-{rep}.json"))
}

/// The machine's limits, measured in the same run as the cells.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// iperf3 over loopback, one stream, MB/s (None: not measured).
    pub iperf3_mb_per_s: Option<f64>,
    /// Why iperf3 was not measured, or how it was.
    pub iperf3_note: String,
    /// fio 1 MiB O_DIRECT sequential writes with fdatasync after each, MB/s.
    pub fio_mb_per_s: Option<f64>,
    /// fio's fdatasync latency p99, ms.
    pub fio_fdatasync_p99_ms: Option<f64>,
    /// Why fio was not measured, or how it was.
    pub fio_note: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// MemTotal in GiB.
    pub memory_gib: Option<f64>,
    /// Kernel release.
    pub kernel: String,
    /// When measured, ms since the Unix epoch.
    pub measured_unix_ms: u64,
}

/// One `tune` session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// End (0 while running or when interrupted).
    pub finished_unix_ms: u64,
    /// `git rev-parse --short HEAD` where run ("" when unknown).
    pub commit: String,
    /// The command line.
    pub command: String,
    /// Brokers: "local" or the bootstrap.
    pub target: String,
    /// Repetitions run in this session (finished or failed).
    pub runs: u32,
}

//! `shardlog check`: verifies that this host can run a broker well, and says what to change.
//!
//! Each check gives `ok`, `warn` (works, but not as recommended) or `FAIL` (the broker will not
//! start, loses durability or performs badly enough to matter); the exit status is 1 when any
//! check fails.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use crate::error::{CliError, CliResult};
use crate::output::{emit, human_bytes, Format, Table};
use shardlog_server::config::{BrokerConfig, Overrides};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Data directory to check (default: the config's data_dir, else ./data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Broker configuration file (data_dir, cores and io_memory_bytes are taken from it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// The outcome of one check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to change (empty when nothing needs to).
    pub fix: String,
}

fn finding(check: &'static str, status: Status, detail: String, fix: &str) -> Finding {
    Finding {
        check,
        status,
        detail,
        fix: if status == Status::Ok {
            String::new()
        } else {
            fix.to_string()
        },
    }
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const NFS_MAGIC: i64 = 0x6969;
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;
const XFS_MAGIC: i64 = 0x5846_5342;
const EXT4_MAGIC: i64 = 0xef53;
const BTRFS_MAGIC: i64 = 0x9123_683e;

/// Name of a filesystem type from `statfs.f_type`.
pub fn fs_name(magic: i64) -> &'static str {
    match magic {
        TMPFS_MAGIC => "tmpfs",
        RAMFS_MAGIC => "ramfs",
        NFS_MAGIC => "nfs",
        OVERLAYFS_MAGIC => "overlayfs",
        XFS_MAGIC => "xfs",
        EXT4_MAGIC => "ext4",
        BTRFS_MAGIC => "btrfs",
        _ => "other",
    }
}

/// Judges a filesystem type for the data directory.
pub fn judge_fs(magic: i64) -> (Status, &'static str) {
    match magic {
        TMPFS_MAGIC | RAMFS_MAGIC => (
            Status::Fail,
            "the data directory is on a memory filesystem: it has no O_DIRECT, and the data would not survive a reboot; use a directory on a real disk (xfs or ext4)",
        ),
        NFS_MAGIC => (
            Status::Fail,
            "network filesystems are not supported (O_DIRECT and fsync semantics); use a local disk",
        ),
        OVERLAYFS_MAGIC => (
            Status::Warn,
            "overlayfs (a container's root filesystem): mount a volume for the data directory",
        ),
        XFS_MAGIC | EXT4_MAGIC => (Status::Ok, ""),
        _ => (Status::Warn, "xfs or ext4 are the tested filesystems"),
    }
}

/// The locked-memory the broker wants (as `broker::ensure_memlock`), and its hard minimum.
pub fn memlock_need(cfg: &BrokerConfig) -> (u64, u64) {
    let min = 512u64 << 10;
    let want = (cfg.io_memory_bytes as u64 * cfg.cores.max(1) as u64 * 2).max(min * 2);
    (want, min)
}

/// Judges RLIMIT_MEMLOCK (soft, hard) against what the broker needs.
pub fn judge_memlock(soft: u64, hard: u64, want: u64, min: u64) -> Status {
    let inf = libc::RLIM_INFINITY;
    if soft == inf || soft >= want {
        Status::Ok
    } else if hard == inf || hard >= min {
        // The broker raises its soft limit itself (up to the hard limit); below `want` it
        // falls back to unregistered buffers.
        Status::Warn
    } else {
        Status::Fail
    }
}

/// Judges RLIMIT_NOFILE against `max_connections`.
pub fn judge_nofile(soft: u64, max_connections: usize) -> Status {
    let need = max_connections as u64 + 1024;
    if soft == libc::RLIM_INFINITY || (soft >= need && soft >= 65_536) {
        Status::Ok
    } else if soft >= 4096 {
        Status::Warn
    } else {
        Status::Fail
    }
}

/// Judges free space on the data directory's filesystem.
pub fn judge_free(avail: u64, total: u64) -> Status {
    if avail < (1 << 30) {
        Status::Fail
    } else if total > 0 && avail * 10 < total {
        Status::Warn
    } else {
        Status::Ok
    }
}

fn rlimit(res: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid `l`.
    (unsafe { libc::getrlimit(res, &mut l) } == 0).then_some((l.rlim_cur, l.rlim_max))
}

fn show_limit(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        human_bytes(v)
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn check_io_uring() -> Finding {
    let disabled = read_trim("/proc/sys/kernel/io_uring_disabled");
    // struct io_uring_params is 120 bytes; zeroed asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes `params` (120 bytes, the kernel's struct size).
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: closing the ring we just created.
        unsafe { libc::close(fd as i32) };
        let kernel = read_trim("/proc/sys/kernel/osrelease").unwrap_or_default();
        return finding(
            "io_uring",
            Status::Ok,
            format!("available (kernel {kernel})"),
            "",
        );
    }
    let e = std::io::Error::last_os_error();
    let fix = match disabled.as_deref() {
        Some("1") | Some("2") => "sysctl -w kernel.io_uring_disabled=0 (and persist it in /etc/sysctl.d/)",
        _ => "use Linux 5.10 or newer with io_uring enabled; in containers allow io_uring_setup in the seccomp profile",
    };
    finding(
        "io_uring",
        Status::Fail,
        format!(
            "io_uring_setup failed: {e} (kernel.io_uring_disabled={})",
            disabled.as_deref().unwrap_or("n/a")
        ),
        fix,
    )
}

fn check_memlock(cfg: &BrokerConfig) -> Finding {
    let (want, min) = memlock_need(cfg);
    match rlimit(libc::RLIMIT_MEMLOCK) {
        None => finding(
            "locked memory",
            Status::Warn,
            "getrlimit failed".into(),
            "check `ulimit -l`",
        ),
        Some((soft, hard)) => {
            let st = judge_memlock(soft, hard, want, min);
            finding(
                "locked memory",
                st,
                format!(
                    "RLIMIT_MEMLOCK soft {} hard {}; the broker wants {} ({} cores x io_memory_bytes x 2)",
                    show_limit(soft),
                    show_limit(hard),
                    human_bytes(want),
                    cfg.cores
                ),
                "LimitMEMLOCK=infinity in the systemd unit, or `ulimit -l unlimited`, or memlock in /etc/security/limits.conf",
            )
        }
    }
}

fn check_nofile(cfg: &BrokerConfig) -> Finding {
    match rlimit(libc::RLIMIT_NOFILE) {
        None => finding(
            "open files",
            Status::Warn,
            "getrlimit failed".into(),
            "check `ulimit -n`",
        ),
        Some((soft, hard)) => {
            finding(
                "open files",
                judge_nofile(soft, cfg.max_connections),
                format!(
                "RLIMIT_NOFILE soft {} hard {}; max_connections = {} plus segment and index files",
                if soft == libc::RLIM_INFINITY { "unlimited".into() } else { soft.to_string() },
                if hard == libc::RLIM_INFINITY { "unlimited".into() } else { hard.to_string() },
                cfg.max_connections
            ),
                "LimitNOFILE=1048576 in the systemd unit, or `ulimit -n 1048576`",
            )
        }
    }
}

/// What a data directory asks of the descriptor limit: partitions (each holds its active
/// segment open) and sealed segments (opened on demand, at most `max_open_segment_files`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataFiles {
    pub partitions: u64,
    pub segments: u64,
}

/// Counts the partitions and segment files under `data_dir` (topic logs and the internal
/// `__consumer_offsets` log; directories being deleted are skipped).
pub fn count_data_files(data_dir: &Path) -> DataFiles {
    fn dirs(p: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter(|e| !e.file_name().to_string_lossy().contains(".deleted"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }
    let mut parts = dirs(&shardlog_server::groups::offsets_log::offsets_dir(data_dir));
    for topic in dirs(&data_dir.join("logs")) {
        parts.extend(dirs(&topic));
    }
    let mut out = DataFiles::default();
    for p in parts {
        out.partitions += 1;
        out.segments += std::fs::read_dir(&p).map_or(0, |rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .count() as u64
        });
    }
    out
}

/// Descriptors the broker needs besides partitions and segment files: listeners, the metadata
/// and lock files, io_uring rings and event descriptors of each shard, and some connections.
pub const NOFILE_BASE_RESERVE: u64 = 256;

/// Judges RLIMIT_NOFILE against the data: every partition's active segment, the sealed
/// segments kept open (up to `max_open_segment_files`), and a reserve. Below the partitions
/// plus a small base some partitions cannot open at all (they would be offline).
pub fn judge_nofile_for_data(soft: u64, data: DataFiles, max_open_segment_files: u64) -> Status {
    let sealed = data.segments.saturating_sub(data.partitions);
    let need = data.partitions + sealed.min(max_open_segment_files) + NOFILE_BASE_RESERVE;
    if soft == libc::RLIM_INFINITY || soft >= need {
        Status::Ok
    } else if soft >= data.partitions + 64 {
        Status::Warn
    } else {
        Status::Fail
    }
}

fn check_nofile_for_data(cfg: &BrokerConfig, data_dir: &Path) -> Finding {
    let data = count_data_files(data_dir);
    let soft = rlimit(libc::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft);
    let status = judge_nofile_for_data(soft, data, cfg.max_open_segment_files as u64);
    finding(
        "open files for the data",
        status,
        format!(
            "{} partitions (one open active segment each) and {} segment files (sealed ones open on demand, at most max_open_segment_files = {}) need about {} descriptors plus connections; RLIMIT_NOFILE soft is {}",
            data.partitions,
            data.segments,
            cfg.max_open_segment_files,
            data.partitions
                + data
                    .segments
                    .saturating_sub(data.partitions)
                    .min(cfg.max_open_segment_files as u64)
                + NOFILE_BASE_RESERVE,
            if soft == libc::RLIM_INFINITY { "unlimited".into() } else { soft.to_string() },
        ),
        "raise the limit (LimitNOFILE=1048576 in the systemd unit, or `ulimit -n`); partitions that cannot open a descriptor are offline (leader -1, KAFKA_STORAGE_ERROR)",
    )
}

fn statfs(dir: &Path) -> std::io::Result<libc::statfs> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has a NUL byte")
    })?;
    // SAFETY: a zeroed statfs is valid; statfs fills it from a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// Writes, fsyncs, reads back and removes one 4 KiB block with O_DIRECT in `dir`.
fn probe_direct_io(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let path = dir.join(format!(".shardlog-check-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| format!("open with O_DIRECT: {e}"))?;
    let result = (|| {
        let layout = std::alloc::Layout::from_size_align(4096, 4096).map_err(|e| e.to_string())?;
        // SAFETY: a non-zero-sized layout; the buffer is freed below.
        let buf = unsafe { std::alloc::alloc_zeroed(layout) };
        if buf.is_null() {
            return Err("out of memory".to_string());
        }
        let fd = file.as_raw_fd();
        // SAFETY: `buf` is a 4096-byte, 4096-aligned allocation owned here.
        let r = unsafe {
            std::ptr::write_bytes(buf, 0x5a, 4096);
            let w = libc::pwrite(fd, buf as *const libc::c_void, 4096, 0);
            let w_err = std::io::Error::last_os_error();
            let s = libc::fdatasync(fd);
            let s_err = std::io::Error::last_os_error();
            std::ptr::write_bytes(buf, 0, 4096);
            let rd = libc::pread(fd, buf as *mut libc::c_void, 4096, 0);
            let rd_err = std::io::Error::last_os_error();
            let ok = *buf == 0x5a && *buf.add(4095) == 0x5a;
            std::alloc::dealloc(buf, layout);
            if w != 4096 {
                Err(format!("O_DIRECT write: {w_err}"))
            } else if s != 0 {
                Err(format!("fdatasync: {s_err}"))
            } else if rd != 4096 {
                Err(format!("O_DIRECT read: {rd_err}"))
            } else if !ok {
                Err("O_DIRECT read returned other bytes than written".to_string())
            } else {
                Ok(())
            }
        };
        r
    })();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result
}

fn check_data_dir(dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Err(e) = std::fs::create_dir_all(dir) {
        out.push(finding(
            "data directory",
            Status::Fail,
            format!("{}: cannot create: {e}", dir.display()),
            "create it and give the broker's user write access (chown shardlog: DIR)",
        ));
        return out;
    }
    let fs = match statfs(dir) {
        Ok(st) => st,
        Err(e) => {
            out.push(finding(
                "data directory",
                Status::Fail,
                format!("{}: statfs: {e}", dir.display()),
                "check the path",
            ));
            return out;
        }
    };
    let magic = fs.f_type as i64;
    let (st, fix) = judge_fs(magic);
    out.push(finding(
        "filesystem",
        st,
        format!(
            "{} is on {} (f_type {:#x})",
            dir.display(),
            fs_name(magic),
            magic
        ),
        fix,
    ));
    if matches!(magic, TMPFS_MAGIC | RAMFS_MAGIC) {
        out.push(finding(
            "O_DIRECT",
            Status::Fail,
            format!(
                "{} is on {}, which has no direct I/O (refused)",
                dir.display(),
                fs_name(magic)
            ),
            "point data_dir at a directory on a real disk (xfs or ext4)",
        ));
    } else {
        match probe_direct_io(dir) {
            Ok(()) => out.push(finding("O_DIRECT", Status::Ok, "4 KiB O_DIRECT write + fdatasync + read back work".into(), "")),
            Err(e) => out.push(finding(
                "O_DIRECT",
                Status::Fail,
                format!("{}: {e}", dir.display()),
                "the data directory must be writable by the broker's user and on a filesystem with O_DIRECT (xfs, ext4)",
            )),
        }
    }
    let avail = fs.f_bavail as u64 * fs.f_bsize as u64;
    let total = fs.f_blocks as u64 * fs.f_bsize as u64;
    out.push(finding(
        "free disk",
        judge_free(avail, total),
        format!("{} free of {}", human_bytes(avail), human_bytes(total)),
        "free space or grow the volume; retention (retention.ms / retention.bytes) bounds what topics keep",
    ));
    out
}

fn check_clock() -> Finding {
    match read_trim("/sys/devices/system/clocksource/clocksource0/current_clocksource") {
        None => finding(
            "clock source",
            Status::Warn,
            "cannot read the current clocksource".into(),
            "check /sys/devices/system/clocksource",
        ),
        Some(c) => {
            let st = match c.as_str() {
                "tsc" | "kvm-clock" | "arch_sys_counter" | "hyperv_clocksource_tsc_page" => {
                    Status::Ok
                }
                _ => Status::Warn,
            };
            finding(
                "clock source",
                st,
                format!("{c} (available: {})", read_trim("/sys/devices/system/clocksource/clocksource0/available_clocksource").unwrap_or_default()),
                "use tsc (clocksource=tsc tsc=reliable on the kernel command line): slow clocks (hpet, acpi_pm, xen) make every timestamp and timer expensive",
            )
        }
    }
}

fn check_overcommit() -> Finding {
    match read_trim("/proc/sys/vm/overcommit_memory") {
        Some(v) if v == "2" => finding(
            "vm.overcommit_memory",
            Status::Fail,
            "2 (strict): the broker's allocation guard reserves address space that strict accounting refuses".into(),
            "sysctl -w vm.overcommit_memory=0 (persist it in /etc/sysctl.d/)",
        ),
        Some(v) => finding("vm.overcommit_memory", Status::Ok, v, ""),
        None => finding("vm.overcommit_memory", Status::Warn, "cannot read /proc/sys/vm/overcommit_memory".into(), "check /proc is mounted"),
    }
}

fn check_swappiness() -> Finding {
    match read_trim("/proc/sys/vm/swappiness").and_then(|v| v.parse::<u32>().ok()) {
        Some(v) if v <= 10 => finding("vm.swappiness", Status::Ok, v.to_string(), ""),
        Some(v) => finding(
            "vm.swappiness",
            Status::Warn,
            format!("{v}: swapping the broker out adds latency spikes"),
            "sysctl -w vm.swappiness=1",
        ),
        None => finding("vm.swappiness", Status::Ok, "no swap settings".into(), ""),
    }
}

fn check_cores(cfg: &BrokerConfig) -> Finding {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    finding(
        "cores",
        Status::Ok,
        format!("{n} usable; the broker will run {} shard(s)", cfg.cores),
        "",
    )
}

/// Runs every check.
pub fn findings(cfg: &BrokerConfig, data_dir: &Path) -> Vec<Finding> {
    let mut out = vec![check_io_uring(), check_memlock(cfg), check_nofile(cfg)];
    out.extend(check_data_dir(data_dir));
    out.push(check_nofile_for_data(cfg, data_dir));
    out.push(check_clock());
    out.push(check_overcommit());
    out.push(check_swappiness());
    out.push(check_cores(cfg));
    out
}

pub fn run(args: &CheckArgs) -> CliResult {
    let mut cfg = match &args.config {
        Some(f) => BrokerConfig::load(Some(f), std::iter::empty(), &Overrides::default())
            .map_err(|e| CliError::Usage(format!("{}: invalid configuration: {e}", f.display())))?,
        None => {
            let mut c = BrokerConfig::default();
            c.validate()
                .map_err(|e| CliError::Usage(format!("default configuration: {e}")))?;
            c
        }
    };
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    let found = findings(&cfg, &cfg.data_dir);
    let failed = found.iter().filter(|f| f.status == Status::Fail).count();
    let warned = found.iter().filter(|f| f.status == Status::Warn).count();
    let json = json!({
        "data_dir": cfg.data_dir.display().to_string(),
        "ok": failed == 0,
        "failed": failed,
        "warnings": warned,
        "checks": found,
    });
    emit(args.format, &json, || {
        let mut t = Table::new(&["CHECK", "STATUS", "DETAIL"]);
        for f in &found {
            let st = match f.status {
                Status::Ok => "ok",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            t.row(vec![f.check.to_string(), st.to_string(), f.detail.clone()]);
        }
        let mut s = t.render();
        let fixes: Vec<&Finding> = found.iter().filter(|f| !f.fix.is_empty()).collect();
        if !fixes.is_empty() {
            s.push_str("\nWhat to change:\n");
            for f in fixes {
                s.push_str(&format!("  - {}: {}\n", f.check, f.fix));
            }
        }
        s.push_str(&format!("\n{failed} failed, {warned} warning(s)\n"));
        s
    });
    if failed > 0 {
        Err(CliError::Failed(format!("{failed} host check(s) failed")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_limit_is_judged_against_the_data() {
        let data = DataFiles {
            partitions: 1000,
            segments: 5000,
        };
        // 1000 active + min(4000 sealed, 1024) + reserve.
        assert_eq!(judge_nofile_for_data(2280, data, 1024), Status::Ok);
        assert_eq!(judge_nofile_for_data(2279, data, 1024), Status::Warn);
        assert_eq!(judge_nofile_for_data(1064, data, 1024), Status::Warn);
        assert_eq!(judge_nofile_for_data(1063, data, 1024), Status::Fail);
        assert_eq!(
            judge_nofile_for_data(libc::RLIM_INFINITY, data, 1024),
            Status::Ok
        );
        assert_eq!(
            judge_nofile_for_data(1024, DataFiles::default(), 1024),
            Status::Ok
        );
    }

    #[test]
    fn data_files_are_counted_per_partition() {
        let d = tempfile::tempdir().expect("tempdir");
        for (topic, parts, segs) in [("a~00", 3, 2), ("b~01", 1, 5)] {
            for p in 0..parts {
                let dir = d.path().join("logs").join(topic).join(p.to_string());
                std::fs::create_dir_all(&dir).expect("mkdir");
                for s in 0..segs {
                    std::fs::write(dir.join(format!("{s:020}.log")), b"").expect("write");
                    std::fs::write(dir.join(format!("{s:020}.index")), b"").expect("write");
                }
            }
        }
        std::fs::create_dir_all(d.path().join("logs").join("c~02.deleted-5").join("0"))
            .expect("mkdir");
        std::fs::create_dir_all(d.path().join("__consumer_offsets").join("0")).expect("mkdir");
        assert_eq!(
            count_data_files(d.path()),
            DataFiles {
                partitions: 5,
                segments: 11
            }
        );
    }

    #[test]
    fn judgements() {
        assert_eq!(judge_fs(TMPFS_MAGIC).0, Status::Fail);
        assert_eq!(judge_fs(XFS_MAGIC).0, Status::Ok);
        assert_eq!(judge_fs(OVERLAYFS_MAGIC).0, Status::Warn);
        let inf = libc::RLIM_INFINITY;
        assert_eq!(judge_memlock(inf, inf, 8 << 20, 512 << 10), Status::Ok);
        assert_eq!(
            judge_memlock(64 << 10, inf, 8 << 20, 512 << 10),
            Status::Warn
        );
        assert_eq!(
            judge_memlock(64 << 10, 64 << 10, 8 << 20, 512 << 10),
            Status::Fail
        );
        assert_eq!(judge_nofile(1 << 20, 10_000), Status::Ok);
        assert_eq!(judge_nofile(8192, 10_000), Status::Warn);
        assert_eq!(judge_nofile(1024, 10_000), Status::Fail);
        assert_eq!(judge_free(500 << 20, 100 << 30), Status::Fail);
        assert_eq!(judge_free(5 << 30, 100 << 30), Status::Warn);
        assert_eq!(judge_free(50 << 30, 100 << 30), Status::Ok);
    }

    #[test]
    fn a_real_directory_passes_the_data_dir_checks() {
        // tempdir lives under /tmp, which may itself be a tmpfs: then the check must refuse it.
        let dir = tempfile::tempdir().expect("tmp");
        let found = check_data_dir(dir.path());
        let fs = found
            .iter()
            .find(|f| f.check == "filesystem")
            .expect("fs finding");
        let direct = found
            .iter()
            .find(|f| f.check == "O_DIRECT")
            .expect("O_DIRECT finding");
        if fs.detail.contains("tmpfs") {
            assert_eq!(direct.status, Status::Fail);
        } else {
            assert_eq!(direct.status, Status::Ok, "{direct:?}");
        }
        assert!(
            std::fs::read_dir(dir.path()).expect("ls").next().is_none(),
            "probe file removed"
        );
    }
}

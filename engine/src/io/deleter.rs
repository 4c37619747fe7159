//! Paced removal of deleted segment files, on a thread of its own.
//!
//! Unlinking a large file frees all its extents at once. On a file system mounted with online
//! discard (ext4 `-o discard`, common on cloud VMs) the freed range is discarded inside the next
//! journal commit, and every fdatasync in the meantime waits for that commit: deleting one
//! 128 MiB segment held every acks=all produce on the machine for ~90 ms (measured: scenario 4
//! of `tuning/bench-standard.sh` at 300 MB/s, p99.9 publish 91 ms with retention deleting
//! segments, 9.2 ms with `nodiscard`). Even without discard, the unlink runs on whichever thread
//! drops the last reference, which would be a shard.
//!
//! So a segment that retention deletes is renamed to `<name>.deleted` on the shard (cheap and
//! atomic; made durable by the directory sync that follows) and handed to this thread, which
//! waits a grace period (readers that already hold the file finish), then shrinks the file
//! `chunk_bytes` at a time with `interval` between steps, so each journal commit frees (and
//! discards) at most one chunk, and finally unlinks it. The same idea as RocksDB's rate-limited
//! `DeleteScheduler` with `bytes_max_delete_chunk`.
//!
//! Bounded: at most `queue` files wait; past that the caller unlinks synchronously (and logs
//! it). Pending deletions do not survive a restart, but the `.deleted` files do and the log's
//! `open` hands them back here.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Suffix of a segment file that is being deleted in the background.
pub const DELETED_SUFFIX: &str = ".deleted";

/// How the background deleter paces itself. Process-wide; see [`configure`].
#[derive(Clone, Copy, Debug)]
pub struct DeleterConfig {
    /// Bytes freed per step (0: unlink in one step, still off the shards).
    pub chunk_bytes: u64,
    /// Pause between steps. `chunk_bytes / interval` bounds the deletion rate: keep it well
    /// above the write rate, or deleted files pile up faster than they go.
    pub interval: Duration,
    /// Wait after a file is handed over before its space is freed.
    pub grace: Duration,
    /// Files that may wait for deletion.
    pub queue: usize,
}

impl Default for DeleterConfig {
    fn default() -> Self {
        Self {
            chunk_bytes: 4 << 20,
            interval: Duration::from_millis(4),
            grace: Duration::from_millis(1000),
            queue: 4096,
        }
    }
}

static CONFIG: Mutex<Option<DeleterConfig>> = Mutex::new(None);
/// A file or a whole directory (a deleted partition) to free.
enum Job {
    File(PathBuf),
    Dir(PathBuf),
}

static QUEUE: OnceLock<Option<SyncSender<(Job, Instant)>>> = OnceLock::new();

/// Sets the deleter's pacing. Takes effect only before the first deletion starts the thread.
pub fn configure(config: DeleterConfig) {
    if let Ok(mut c) = CONFIG.lock() {
        *c = Some(config);
    }
}

fn config() -> DeleterConfig {
    CONFIG.lock().ok().and_then(|c| *c).unwrap_or_default()
}

/// Renames `path` to `<path>.deleted` (unless it already has that suffix) and queues it for
/// paced removal. The rename is durable once the caller syncs the directory. Falls back to an
/// immediate unlink when the queue is full or the thread cannot start.
pub fn remove_in_background(path: &Path) -> io::Result<()> {
    let doomed = if path.as_os_str().to_string_lossy().ends_with(DELETED_SUFFIX) {
        path.to_path_buf()
    } else {
        let doomed = with_suffix(path, DELETED_SUFFIX);
        match std::fs::rename(path, &doomed) {
            Ok(()) => doomed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    };
    enqueue(Job::File(doomed))
}

/// Renames the directory `path` to a unique `<path>.deleted-<n>` and queues its files for
/// paced removal, then the directory itself. The rename is durable once the caller syncs the
/// parent. A directory already named `*.deleted-*` (left by a process that stopped before
/// freeing it) is queued as it is. A broker hands leftover `*.deleted-*` directories back here
/// at start-up (they belong to no topic).
pub fn remove_dir_in_background(path: &Path) -> io::Result<()> {
    let renamed_already = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains(&format!("{DELETED_SUFFIX}-")));
    if renamed_already {
        return enqueue(Job::Dir(path.to_path_buf()));
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let doomed = with_suffix(path, &format!("{DELETED_SUFFIX}-{stamp}"));
    match std::fs::rename(path, &doomed) {
        Ok(()) => enqueue(Job::Dir(doomed)),
        Err(e) => already_gone(Err(e)),
    }
}

/// Longest file name (bytes) of ext4, xfs and btrfs.
const NAME_MAX: usize = 255;

/// `path` with `suffix` appended to its file name, the name first cut short (at a character
/// boundary) when the result would pass [`NAME_MAX`]: a topic directory of a 222-character
/// name is 255 bytes already, and renaming it for deletion must not fail. The suffix stays
/// whole, so a renamed name is still recognised as deleted.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut keep = name.len().min(NAME_MAX.saturating_sub(suffix.len()));
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    path.with_file_name(format!("{}{suffix}", &name[..keep]))
}

fn enqueue(job: Job) -> io::Result<()> {
    let refused = match QUEUE.get_or_init(start) {
        Some(tx) => match tx.try_send((job, Instant::now())) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full((j, _)) | TrySendError::Disconnected((j, _))) => j,
        },
        None => job,
    };
    let (Job::File(p) | Job::Dir(p)) = &refused;
    tracing::warn!(path = %p.display(), "background deleter is full; deleting in place");
    let r = match refused {
        Job::File(p) => std::fs::remove_file(p),
        Job::Dir(p) => std::fs::remove_dir_all(p),
    };
    already_gone(r)
}

fn start() -> Option<SyncSender<(Job, Instant)>> {
    let cfg = config();
    let (tx, rx) = sync_channel::<(Job, Instant)>(cfg.queue.max(1));
    let spawned = std::thread::Builder::new()
        .name("shardlog-deleter".into())
        .spawn(move || {
            block_signals();
            for (job, queued) in rx {
                if let Some(wait) = (queued + cfg.grace).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let (r, path) = match job {
                    Job::File(p) => (shrink_and_unlink(&p, &cfg), p),
                    Job::Dir(p) => (shrink_dir(&p, &cfg), p),
                };
                if let Err(e) = r {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete deleted log data");
                }
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the background deleter; deleting in place");
            None
        }
    }
}

/// Keeps process signals (SIGTERM, SIGINT, ...) away from this thread: it may be started
/// before the embedding program has set up its own signal handling, and a process-directed
/// signal is delivered to any thread that does not block it (default action: exit).
fn block_signals() {
    // SAFETY: sigset manipulation on a local set, then pthread_sigmask for this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Success when the file or directory is not there (someone else removed it first).
pub(crate) fn already_gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn shrink_dir(dir: &Path, cfg: &DeleterConfig) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_file() => shrink_and_unlink(&e.path(), cfg)?,
            // A deleted topic's directory holds its partitions' directories: free those paced
            // too (the partitions' own jobs find their old paths gone once the topic directory
            // is renamed).
            Ok(t) if t.is_dir() => shrink_dir(&e.path(), cfg)?,
            _ => {}
        }
    }
    already_gone(std::fs::remove_dir_all(dir))
}

fn shrink_and_unlink(path: &Path, cfg: &DeleterConfig) -> io::Result<()> {
    if cfg.chunk_bytes > 0 {
        match OpenOptions::new().write(true).open(path) {
            Ok(f) => {
                let mut len = f.metadata()?.len();
                // The first step also frees space reserved past the end (fallocate KEEP_SIZE).
                f.set_len(len)?;
                while len > 0 {
                    std::thread::sleep(cfg.interval);
                    len = len.saturating_sub(cfg.chunk_bytes);
                    f.set_len(len)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    already_gone(std::fs::remove_file(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_in_steps_then_unlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("00000000000000000000.log.deleted");
        std::fs::write(&p, vec![7u8; 10_000]).expect("write");
        let cfg = DeleterConfig {
            chunk_bytes: 4096,
            interval: Duration::from_millis(1),
            grace: Duration::ZERO,
            queue: 1,
        };
        shrink_and_unlink(&p, &cfg).expect("delete");
        assert!(!p.exists());
        // Gone already: not an error.
        shrink_and_unlink(&p, &cfg).expect("second delete");
    }

    #[test]
    fn directory_removal_renames_first_then_removes_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("t~id").join("0");
        std::fs::create_dir_all(&part).expect("mkdir");
        std::fs::write(part.join("00000000000000000000.log"), vec![1u8; 50_000]).expect("write");
        std::fs::write(part.join("leader-epochs"), b"x").expect("write");
        remove_dir_in_background(&dir.path().join("t~id")).expect("schedule");
        assert!(
            !dir.path().join("t~id").exists(),
            "the name is gone at once"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let left = || std::fs::read_dir(dir.path()).map_or(0, |rd| rd.count());
        while left() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            left(),
            0,
            "the renamed directory is removed after the grace period"
        );
    }

    #[test]
    fn a_directory_renamed_earlier_is_removed_without_another_rename() {
        let dir = tempfile::tempdir().expect("tempdir");
        let left = dir.path().join("t~id.deleted-42");
        std::fs::create_dir_all(left.join("0")).expect("mkdir");
        std::fs::write(
            left.join("0").join("00000000000000000000.log"),
            vec![1u8; 1000],
        )
        .expect("write");
        remove_dir_in_background(&left).expect("schedule");
        let deadline = Instant::now() + Duration::from_secs(10);
        let names = || -> Vec<String> {
            std::fs::read_dir(dir.path()).map_or(Vec::new(), |rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
        };
        while !names().is_empty() && Instant::now() < deadline {
            assert_eq!(names(), ["t~id.deleted-42"], "renamed again");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(names().is_empty(), "left: {:?}", names());
    }

    #[test]
    fn a_directory_with_a_name_of_255_bytes_is_renamed_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = dir.path().join(format!("{}~{:032x}", "t".repeat(222), 7));
        assert_eq!(long.file_name().map(|n| n.len()), Some(255));
        std::fs::create_dir_all(long.join("0")).expect("mkdir");
        std::fs::write(
            long.join("0").join("00000000000000000000.log"),
            vec![1u8; 1000],
        )
        .expect("write");
        remove_dir_in_background(&long).expect("schedule");
        assert!(!long.exists(), "the name is gone at once");
        let deadline = Instant::now() + Duration::from_secs(10);
        let left = || std::fs::read_dir(dir.path()).map_or(0, |rd| rd.count());
        while left() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(left(), 0, "removed after the grace period");
    }

    #[test]
    fn suffixes_keep_names_within_the_limit() {
        let p = Path::new("/d").join("x".repeat(250));
        let s = with_suffix(&p, ".deleted-1234567890123456789");
        let name = s.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        assert_eq!(name.len(), 255);
        assert!(name.ends_with(".deleted-1234567890123456789"));
        assert_eq!(
            with_suffix(Path::new("/d/00000000000000000042.log"), ".deleted"),
            Path::new("/d/00000000000000000042.log.deleted")
        );
    }

    #[test]
    fn background_removal_renames_first_then_removes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("00000000000000000042.log");
        std::fs::write(&p, vec![1u8; 100]).expect("write");
        remove_in_background(&p).expect("schedule");
        assert!(!p.exists(), "the segment name is gone at once");
        let doomed = dir.path().join("00000000000000000042.log.deleted");
        let deadline = Instant::now() + Duration::from_secs(10);
        while doomed.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !doomed.exists(),
            "the renamed file is removed after the grace period"
        );
    }
}

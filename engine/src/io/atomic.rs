//! Atomic, durable replacement of small control files: the one place the sequence is written.
//!
//! Every control file (a log's `log-start`, `leader-epochs`, `clean-shutdown` and segment
//! indexes; the broker's metadata store, producer-state snapshots and the internal topic's
//! `partitions` file) is replaced the same way, by [`replace`]:
//!
//! 1. write the new bytes to `<name>.tmp` (created or truncated),
//! 2. fsync the tmp file, so its data is on the device before any name points at it,
//! 3. rename it over `<name>` (atomic: readers see the old or the new file, never a mix),
//! 4. fsync the directory, so the rename itself survives a power loss.
//!
//! A crash between any two steps leaves the old file (or none, if there was none) or the new
//! one, never a torn one; the tmp file a crash leaves behind is overwritten by the next
//! replacement (and a log removes `*.tmp` when it opens).
//!
//! The steps are one trait, [`ReplaceSteps`], so both storage back ends run this same code:
//! [`GlommioStorage`](super::GlommioStorage) with `std::fs` calls, the whole sequence as one job
//! on the executor's blocking thread pool (the fsyncs wait for journal commits, milliseconds
//! under load, and a shard must not sleep in them); [`SimStorage`](super::SimStorage) on its
//! simulated namespace, where a fault can stop the sequence after any step and a crash then
//! shows what a real disk would keep. Threads that are not shards (start-up) call
//! [`write_file_atomic_blocking`]; shards call [`Storage::write_file_atomic`](super::Storage).
//!
//! The blocking directory fsync ([`sync_dir`]) lives here too, not in the glommio back end that
//! also calls it: this module depends on no back end, so the back ends and it form no cycle.

use std::io;
use std::path::{Path, PathBuf};

/// One step of [`replace`], named in its errors and in the simulator's fault counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    WriteTmp,
    SyncTmp,
    Rename,
    SyncDir,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::WriteTmp => "write",
            Step::SyncTmp => "fsync",
            Step::Rename => "rename",
            Step::SyncDir => "fsync dir",
        }
    }
}

/// The file-system operations of a replacement, as one back end performs them (synchronously:
/// the real back end runs the whole sequence on a blocking thread).
pub(crate) trait ReplaceSteps {
    /// Creates or truncates `tmp` and writes `data`; not durable yet.
    fn write_tmp(&self, tmp: &Path, data: &[u8]) -> io::Result<()>;
    /// Makes the data of `tmp` durable.
    fn sync_file(&self, tmp: &Path) -> io::Result<()>;
    /// Renames `from` over `to` (same directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The tmp file a replacement of `path` writes first: `<name>.tmp` next to it.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `data`: tmp write, fsync, rename, directory fsync. Errors name the step
/// and the file.
pub(crate) fn replace(fs: &impl ReplaceSteps, path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let ctx = |step: Step, p: &Path| {
        let p = p.display().to_string();
        move |e: io::Error| io::Error::new(e.kind(), format!("{} {p}: {e}", step.name()))
    };
    fs.write_tmp(&tmp, data)
        .map_err(ctx(Step::WriteTmp, &tmp))?;
    fs.sync_file(&tmp).map_err(ctx(Step::SyncTmp, &tmp))?;
    fs.rename(&tmp, path).map_err(ctx(Step::Rename, path))?;
    fs.sync_dir(dir).map_err(ctx(Step::SyncDir, dir))
}

/// The steps on the real file system.
pub(crate) struct StdFs;

impl ReplaceSteps for StdFs {
    fn write_tmp(&self, tmp: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(tmp, data)
    }

    fn sync_file(&self, tmp: &Path) -> io::Result<()> {
        // fsync flushes the inode's dirty data whichever descriptor asks.
        std::fs::File::open(tmp)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }
}

/// fsync of a directory (`""`, the parent of a relative name, is the current directory).
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    std::fs::File::open(path)?.sync_all()
}

/// [`replace`] on the real file system, blocking the calling thread: for threads that are not
/// shards (start-up, before the executors run). Shards use
/// [`Storage::write_file_atomic`](super::Storage::write_file_atomic), which runs the same
/// sequence off the shard.
pub fn write_file_atomic_blocking(path: &Path, data: &[u8]) -> io::Result<()> {
    replace(&StdFs, path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_name_appends_to_the_whole_name() {
        assert_eq!(
            tmp_path(Path::new("/d/cluster-metadata.json")),
            Path::new("/d/cluster-metadata.json.tmp")
        );
        assert_eq!(
            tmp_path(Path::new("d/log-start")),
            Path::new("d/log-start.tmp")
        );
        // An index and its time index no longer share one tmp name.
        assert_ne!(
            tmp_path(Path::new("0.index")),
            tmp_path(Path::new("0.timeindex"))
        );
    }

    #[test]
    fn blocking_replacement_leaves_only_the_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.json");
        write_file_atomic_blocking(&p, b"old").expect("first");
        write_file_atomic_blocking(&p, b"new").expect("second");
        assert_eq!(std::fs::read(&p).expect("read"), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["f.json"]);
    }

    #[test]
    fn a_failed_step_names_itself_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("missing-dir").join("f");
        let e = write_file_atomic_blocking(&p, b"x").expect_err("no such directory");
        assert!(e.to_string().starts_with("write "), "{e}");
        assert!(e.to_string().contains("f.tmp"), "{e}");
    }
}

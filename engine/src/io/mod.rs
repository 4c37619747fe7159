//! The engine's only door to the disk.
//!
//! Everything the log does to files goes through [`Storage`] and [`StorageFile`], so the same
//! log code runs on two back ends:
//!
//! * [`GlommioStorage`]: the real one. Segment data is written with glommio `DmaFile`
//!   (O_DIRECT, io_uring) from buffers the file allocates with the right alignment. Direct I/O
//!   keeps the page cache out of the write path: the engine already holds recent batches in its
//!   own bounded batch cache, so a second copy in the page cache would only cost memory and
//!   make write latency depend on kernel writeback. Small control files (the clean-shutdown
//!   marker, index files, checkpoints) are written rarely, with `std::fs` calls and the
//!   tmp + fsync + rename + fsync-directory sequence of [`atomic`], on glommio's blocking
//!   thread pool: those fsyncs (and directory syncs, renames, unlinks) wait for journal
//!   commits, milliseconds under load, and must not stall the shard's other partitions and
//!   connections.
//! * [`SimStorage`]: an in-memory twin for tests that keeps, per file, what a crash would leave
//!   behind (the last fsynced image plus the writes since) and injects faults: EIO on write or
//!   fsync, ENOSPC past a capacity, misaligned direct I/O, and crashes that keep any subset of
//!   unsynced writes with the last one torn at any byte. Directory entries (of files and of
//!   directories) are volatile until the directory is synced, as on a real file system.
//! * [`BrokerStorage`]: one of the two, chosen when the broker starts (see `choice`).
//!
//! The traits use `async fn` without `Send` bounds on purpose: a log lives on one shard and
//! never crosses threads.

pub mod atomic;
mod choice;
pub mod deleter;
mod glommio_impl;
pub mod sim;

pub use atomic::write_file_atomic_blocking;
pub use choice::{BrokerBuf, BrokerFile, BrokerStorage};
pub use glommio_impl::GlommioStorage;
pub use sim::SimStorage;

use std::io;
use std::ops::{Deref, DerefMut};
use std::path::Path;

use bytes::Bytes;

/// A file system as the log sees it.
#[allow(async_fn_in_trait)]
pub trait Storage: Clone + 'static {
    type File: StorageFile;

    /// Creates `path` and its missing ancestors; returns the directories it created, outermost
    /// first. Their entries are not durable until each parent is synced (see [`sync_dir`]).
    ///
    /// [`sync_dir`]: Storage::sync_dir
    async fn create_dir_all(&self, path: &Path) -> io::Result<Vec<std::path::PathBuf>>;
    /// Opens a file for direct reads and writes, creating it when `create` is set.
    async fn open_file(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a (large) file whose space may be reclaimed later: the name is gone, durably once
    /// the directory is synced; the data may be freed in the background (see [`deleter`]).
    async fn remove_file_in_background(&self, path: &Path) -> io::Result<()> {
        self.remove_file(path).await
    }
    async fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Renames a file (same directory); durable once the directory is synced.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, removals, renames) durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Sizes in bytes of existing files, in one call (a log learns its sealed segments' sizes
    /// at open without opening them).
    async fn file_sizes(&self, paths: Vec<std::path::PathBuf>) -> io::Result<Vec<u64>>;
    /// File names (not paths) in a directory.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Reads a small control file whole; `None` if it does not exist.
    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Replaces a small control file atomically and durably: both back ends run
    /// [`atomic::replace`] (tmp write, fsync, rename, directory fsync), the real one off the
    /// shard.
    async fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()>;
}

/// One open file with direct I/O semantics: writes are whole aligned blocks at aligned
/// positions from buffers the file allocated.
#[allow(async_fn_in_trait)]
pub trait StorageFile: 'static {
    type Buf: Deref<Target = [u8]> + DerefMut;

    /// Alignment of direct I/O positions and lengths (bytes).
    fn alignment(&self) -> u64;
    /// A buffer of `len` bytes (a multiple of the alignment) usable for `write_at`. Its contents
    /// are unspecified: callers zero what they write but did not fill.
    fn alloc(&self, len: usize) -> Self::Buf;
    /// Writes the first `len` bytes of `buf` at `pos`; both aligned.
    async fn write_at(&self, buf: Self::Buf, len: usize, pos: u64) -> io::Result<()>;
    /// Reads up to `len` bytes at any `pos` (fewer at end of file).
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    /// fdatasync: everything written so far survives power loss once this returns.
    async fn sync_data(&self) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// Reserves space up to `len` bytes without changing the file size (fallocate KEEP_SIZE).
    async fn preallocate(&self, len: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
}

/// Creates `path` and its missing ancestors with blocking `std::fs` calls and makes each
/// created directory's entry durable by fsyncing its parent. For directories created outside
/// the engine (the broker's data, metadata and group directories).
pub fn create_dir_all_durable(path: &Path) -> io::Result<()> {
    for dir in glommio_impl::create_dirs(path)? {
        if let Some(parent) = dir.parent() {
            atomic::sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Rounds `v` down to a multiple of `align` (a power of two).
pub fn align_down(v: u64, align: u64) -> u64 {
    v & !(align - 1)
}

/// Rounds `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

/// A heap buffer used by the simulator (no alignment needs in memory).
pub struct VecBuf(pub Vec<u8>);

impl Deref for VecBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for VecBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

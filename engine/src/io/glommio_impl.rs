//! [`Storage`] on glommio: O_DIRECT `DmaFile`s driven by the shard's io_uring.
//!
//! Must be used from inside a glommio executor. Data files are opened with `OpenOptions`
//! read + write + O_DIRECT; glommio allocates buffers aligned for the device. Reads of any
//! range are widened to aligned blocks by glommio and copied once into a `Bytes` the caller
//! owns (the glommio buffer is tied to the executor and cannot travel in a `Bytes`).

use std::io::{self, Write};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::{Storage, StorageFile};

/// The production back end. Zero-sized; clone freely.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioStorage;

/// A glommio DMA file.
pub struct GlommioFile {
    file: DmaFile,
}

/// An aligned buffer allocated by a [`GlommioFile`].
pub struct GlommioBuf(DmaBuffer);

impl Deref for GlommioBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl DerefMut for GlommioBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }
}

impl GlommioStorage {
    /// Settles, for this executor thread, whether the device under `dir` supports polled
    /// (IOPOLL) I/O, and checks that O_DIRECT works there at all.
    ///
    /// glommio decides IOPOLL support by reading block 0 of the first file it opens on a device
    /// and caches the answer per thread. When that first file is a new, empty segment the read
    /// ends at EOF without touching the device, the probe "succeeds", and every later direct
    /// read on a device without poll queues (virtio, most cloud disks) fails with ENOTSUP.
    /// Opening a file that really has a block of data first makes the probe honest. Call this
    /// once per executor before opening logs.
    pub async fn prepare(dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        // Unique per call: every shard probes the same directory at start-up.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(".shardlog-io-probe-{}-{n}", std::process::id()));
        {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(&[0x5a; 4096])?;
            f.sync_all()?;
        }
        let opened = OpenOptions::new().read(true).dma_open(&path).await;
        let result = match opened {
            Ok(f) => {
                let r = f.read_at(0, 4096).await.map(|r| r.len());
                let _ = f.close().await;
                match r {
                    Ok(4096) => Ok(()),
                    Ok(n) => Err(io::Error::other(format!(
                        "direct read of the probe file returned {n} of 4096 bytes"
                    ))),
                    Err(e) => Err(gerr(e)),
                }
            }
            Err(e) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{} does not support O_DIRECT (tmpfs?): {}",
                    dir.display(),
                    gerr(e)
                ),
            )),
        };
        let _ = std::fs::remove_file(&path);
        result
    }
}

/// `std::fs::create_dir_all` that also returns the directories it created, outermost first.
pub(super) fn create_dirs(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = path
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| {
            matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == io::ErrorKind::NotFound)
        })
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    std::fs::create_dir_all(path)?;
    Ok(missing)
}

fn gerr<T>(e: glommio::GlommioError<T>) -> io::Error {
    io::Error::from(e)
}

/// Runs a blocking file-system call on the executor's blocking thread pool, so a shard never
/// sleeps in `fsync`, `rename` or `unlink`: under a heavy fdatasync load each of those waits
/// for a journal commit (milliseconds), and rolls and retention make several of them.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

impl Storage for GlommioStorage {
    type File = GlommioFile;

    async fn create_dir_all(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let path = path.to_path_buf();
        blocking(move || create_dirs(&path)).await
    }

    async fn open_file(&self, path: &Path, create: bool) -> io::Result<GlommioFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(gerr)?;
        Ok(GlommioFile { file })
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || crate::io::deleter::already_gone(std::fs::remove_file(path))).await
    }

    async fn remove_file_in_background(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || super::deleter::remove_in_background(&path)).await
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        // A partition's segments may hold gigabytes: free them paced, off the shard.
        let path = path.to_path_buf();
        blocking(move || super::deleter::remove_dir_in_background(&path)).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        blocking(move || std::fs::rename(from, to)).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || super::atomic::sync_dir(&path)).await
    }

    async fn file_sizes(&self, paths: Vec<PathBuf>) -> io::Result<Vec<u64>> {
        blocking(move || {
            paths
                .iter()
                .map(|p| std::fs::metadata(p).map(|m| m.len()))
                .collect()
        })
        .await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = path.to_path_buf();
        blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(path)? {
                let entry = entry?;
                if let Some(name) = entry.file_name().to_str() {
                    out.push(name.to_owned());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let path = path.to_path_buf();
        blocking(move || match std::fs::read(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let (path, data) = (path.to_path_buf(), data.to_vec());
        blocking(move || super::atomic::replace(&super::atomic::StdFs, &path, &data)).await
    }
}

impl StorageFile for GlommioFile {
    type Buf = GlommioBuf;

    fn alignment(&self) -> u64 {
        self.file.alignment().max(512)
    }

    fn alloc(&self, len: usize) -> GlommioBuf {
        GlommioBuf(self.file.alloc_dma_buffer(len))
    }

    async fn write_at(&self, mut buf: GlommioBuf, len: usize, pos: u64) -> io::Result<()> {
        buf.0.trim_to_size(len);
        let n = self.file.write_at(buf.0, pos).await.map_err(gerr)?;
        if n != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short direct write: {n} of {len} bytes at {pos}"),
            ));
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let r = self.file.read_at(pos, len).await.map_err(gerr)?;
        Ok(Bytes::copy_from_slice(&r))
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(gerr)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(gerr)
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.file.pre_allocate(len, true).await.map_err(gerr)
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(gerr)
    }
}

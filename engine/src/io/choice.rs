//! [`BrokerStorage`]: the storage a broker runs on, chosen at start-up.
//!
//! The broker is written against one concrete storage type so that its ~40 types carry no type
//! parameter and one compiled broker serves both production and deterministic tests. Each call
//! dispatches statically with one `match` (a branch that always goes the same way in a
//! process, so the predictor gets it right); files and buffers are tagged the same way. A
//! buffer from one back end handed to a file of the other is a programming error, reported as
//! an `InvalidInput` I/O error rather than a panic.

use std::io;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{GlommioStorage, SimStorage, Storage, StorageFile};

/// The real disk (production) or the simulated one (tests).
#[derive(Clone)]
pub enum BrokerStorage {
    Glommio(GlommioStorage),
    Sim(SimStorage),
}

impl Default for BrokerStorage {
    fn default() -> Self {
        Self::Glommio(GlommioStorage)
    }
}

impl std::fmt::Debug for BrokerStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Glommio(_) => "BrokerStorage::Glommio",
            Self::Sim(_) => "BrokerStorage::Sim",
        })
    }
}

impl BrokerStorage {
    /// Whether this is the real disk (start-up then probes direct I/O and locks the directory).
    pub fn is_real(&self) -> bool {
        matches!(self, Self::Glommio(_))
    }
}

/// A file of a [`BrokerStorage`].
pub enum BrokerFile {
    Glommio(<GlommioStorage as Storage>::File),
    Sim(<SimStorage as Storage>::File),
}

/// A direct-I/O buffer of a [`BrokerFile`].
pub enum BrokerBuf {
    Glommio(<<GlommioStorage as Storage>::File as StorageFile>::Buf),
    Sim(<<SimStorage as Storage>::File as StorageFile>::Buf),
}

impl Deref for BrokerBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Self::Glommio(b) => b,
            Self::Sim(b) => b,
        }
    }
}

impl DerefMut for BrokerBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Glommio(b) => b,
            Self::Sim(b) => b,
        }
    }
}

/// Runs the same expression on whichever back end `$self` holds.
macro_rules! either {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            BrokerStorage::Glommio($s) => $e,
            BrokerStorage::Sim($s) => $e,
        }
    };
}

impl Storage for BrokerStorage {
    type File = BrokerFile;

    async fn create_dir_all(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        either!(self, s => s.create_dir_all(path).await)
    }
    async fn open_file(&self, path: &Path, create: bool) -> io::Result<BrokerFile> {
        match self {
            Self::Glommio(s) => s.open_file(path, create).await.map(BrokerFile::Glommio),
            Self::Sim(s) => s.open_file(path, create).await.map(BrokerFile::Sim),
        }
    }
    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        either!(self, s => s.remove_file(path).await)
    }
    async fn remove_file_in_background(&self, path: &Path) -> io::Result<()> {
        either!(self, s => s.remove_file_in_background(path).await)
    }
    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        either!(self, s => s.remove_dir_all(path).await)
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        either!(self, s => s.rename(from, to).await)
    }
    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        either!(self, s => s.sync_dir(path).await)
    }
    async fn file_sizes(&self, paths: Vec<PathBuf>) -> io::Result<Vec<u64>> {
        either!(self, s => s.file_sizes(paths).await)
    }
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        either!(self, s => s.list_dir(path).await)
    }
    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        either!(self, s => s.read_file(path).await)
    }
    async fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        either!(self, s => s.write_file_atomic(path, data).await)
    }
}

fn mixed() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a buffer of one storage back end written to a file of the other",
    )
}

impl StorageFile for BrokerFile {
    type Buf = BrokerBuf;

    #[inline]
    fn alignment(&self) -> u64 {
        match self {
            Self::Glommio(f) => f.alignment(),
            Self::Sim(f) => f.alignment(),
        }
    }
    #[inline]
    fn alloc(&self, len: usize) -> BrokerBuf {
        match self {
            Self::Glommio(f) => BrokerBuf::Glommio(f.alloc(len)),
            Self::Sim(f) => BrokerBuf::Sim(f.alloc(len)),
        }
    }
    async fn write_at(&self, buf: BrokerBuf, len: usize, pos: u64) -> io::Result<()> {
        match (self, buf) {
            (Self::Glommio(f), BrokerBuf::Glommio(b)) => f.write_at(b, len, pos).await,
            (Self::Sim(f), BrokerBuf::Sim(b)) => f.write_at(b, len, pos).await,
            _ => Err(mixed()),
        }
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        match self {
            Self::Glommio(f) => f.read_at(pos, len).await,
            Self::Sim(f) => f.read_at(pos, len).await,
        }
    }
    async fn sync_data(&self) -> io::Result<()> {
        match self {
            Self::Glommio(f) => f.sync_data().await,
            Self::Sim(f) => f.sync_data().await,
        }
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        match self {
            Self::Glommio(f) => f.truncate(len).await,
            Self::Sim(f) => f.truncate(len).await,
        }
    }
    async fn preallocate(&self, len: u64) -> io::Result<()> {
        match self {
            Self::Glommio(f) => f.preallocate(len).await,
            Self::Sim(f) => f.preallocate(len).await,
        }
    }
    async fn size(&self) -> io::Result<u64> {
        match self {
            Self::Glommio(f) => f.size().await,
            Self::Sim(f) => f.size().await,
        }
    }
}

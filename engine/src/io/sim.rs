//! An in-memory, fault-injecting [`Storage`] for tests.
//!
//! Each file keeps a *live* image (what reads see) and a *durable* image (what survives a
//! crash), plus the list of writes and truncations since the last `sync_data`. Directory
//! entries, of files and of directories, are live until the directory holding them is synced;
//! a directory whose own entry is lost takes everything under it along. [`SimStorage::crash`]
//! returns the storage a restarted process would find: the durable namespace, each file's
//! durable image, and — depending on [`CrashMode`] — any subset of the unsynced writes, the
//! last applied one torn at a random byte. Faults are armed with [`Faults`].
//!
//! The state sits behind mutexes rather than `RefCell`s so that a test can hand the storage to
//! a broker whose shards run on their own threads and keep a clone to crash it.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{Storage, StorageFile, VecBuf};

/// Interior mutability that may cross threads: a broker under test runs its shards on their
/// own executor threads while the test keeps a handle to crash the disk. A lock is never held
/// across an `.await`, so it is uncontended in practice (one shard at a time touches a file).
#[derive(Debug, Default)]
struct Shared<T>(Mutex<T>);

impl<T> Shared<T> {
    fn new(v: T) -> Self {
        Self(Mutex::new(v))
    }
    /// A poisoned lock (a panicking test thread) still gives access: the state is plain data.
    fn borrow(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn borrow_mut(&self) -> MutexGuard<'_, T> {
        self.borrow()
    }
}

/// Faults to inject. Counters count calls from when they were armed.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fail the write after this many more successful data writes with EIO.
    pub eio_write_after: Option<u64>,
    /// Fail the fsync after this many more successful fsyncs with EIO.
    pub eio_sync_after: Option<u64>,
    /// Fail every data read (`read_at`) of a file whose path contains this string with EIO:
    /// a bad sector under that file (an empty string matches every file). Writes, fsyncs and
    /// whole-file control reads are not affected.
    pub eio_read_of: Option<String>,
    /// Total bytes the "disk" holds (file lengths and reservations); past it, ENOSPC.
    pub capacity_bytes: Option<u64>,
    /// Every fsync blocks the thread this long (a slow device).
    pub sync_delay: Option<std::time::Duration>,
    /// Fail the step of an atomic control-file replacement (tmp write, fsync, rename,
    /// directory fsync: [`super::atomic::replace`]) after this many more successful steps with
    /// EIO, leaving the namespace as the steps before it left it (a crash test then crashes
    /// "between" steps).
    pub eio_control_step_after: Option<u64>,
    /// Let this many more operations that change the disk (data writes, fsyncs, truncations,
    /// file creations, renames, unlinks, directory fsyncs, each step of a control-file
    /// replacement) happen, then fail every later one with EIO and no effect: the process
    /// "died" right there. A crash test iterates this over every operation of the code under
    /// test, then calls [`SimStorage::crash`]; [`SimStorage::ops`] counts how many there are.
    pub halt_after_ops: Option<u64>,
}

/// What a crash keeps of the writes that were not yet synced.
#[derive(Clone, Copy, Debug)]
pub enum CrashMode {
    /// Only what was fsynced survives.
    LoseUnsynced,
    /// A random subset of unsynced writes survives, in any order, the last kept one torn at a
    /// random byte (seeded, reproducible).
    Torn { seed: u64 },
    /// Everything written survives (a process crash with a healthy kernel and device).
    KeepAll,
}

#[derive(Clone, Debug)]
enum Op {
    Write { pos: u64, data: Vec<u8> },
    Truncate(u64),
}

#[derive(Debug, Default)]
struct FileData {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Op>,
    reserved: u64,
}

#[derive(Default)]
struct State {
    live: HashMap<PathBuf, Arc<Shared<FileData>>>,
    durable: HashMap<PathBuf, Arc<Shared<FileData>>>,
    /// Directories created through the storage (a path whose parent is not here was there
    /// before: its entry is durable).
    live_dirs: Vec<PathBuf>,
    /// The directories whose entries were synced in their parent.
    durable_dirs: Vec<PathBuf>,
    faults: Faults,
    writes: u64,
    syncs: u64,
    /// Steps of atomic control-file replacements since faults were last armed.
    control_steps: u64,
    /// Operations that change the disk since faults were last armed (see `halt_after_ops`).
    ops: u64,
    alignment: u64,
    /// Open [`SimFile`]s (descriptors, on a real disk) and the most there ever were.
    open_files: usize,
    max_open_files: usize,
}

/// The simulated storage; clones share one state.
#[derive(Clone)]
pub struct SimStorage {
    state: Arc<Shared<State>>,
}

impl Default for SimStorage {
    fn default() -> Self {
        Self::new(4096)
    }
}

/// A file in [`SimStorage`].
pub struct SimFile {
    data: Arc<Shared<FileData>>,
    state: Arc<Shared<State>>,
    path: PathBuf,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected EIO on {what}"))
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// SplitMix64: a small seeded generator, the same on every machine, for the simulated disk's
/// crash choices and for the seeded simulations built on it (tests replay a seed exactly).
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// True with probability `p` (53 random bits against `1 - p`).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

fn apply(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { pos, data } => {
            let pos = *pos as usize;
            if buf.len() < pos + data.len() {
                buf.resize(pos + data.len(), 0);
            }
            buf[pos..pos + data.len()].copy_from_slice(data);
        }
        Op::Truncate(len) => buf.resize(*len as usize, 0),
    }
}

impl SimStorage {
    /// A fresh empty disk whose direct I/O needs `alignment`-byte blocks.
    pub fn new(alignment: u64) -> Self {
        let state = State {
            alignment,
            ..State::default()
        };
        Self {
            state: Arc::new(Shared::new(state)),
        }
    }

    /// Arms faults (replacing earlier ones) and resets their counters.
    pub fn set_faults(&self, faults: Faults) {
        let mut st = self.state.borrow_mut();
        st.faults = faults;
        st.writes = 0;
        st.syncs = 0;
        st.control_steps = 0;
        st.ops = 0;
    }

    /// Operations that changed the disk since faults were last armed (see
    /// [`Faults::halt_after_ops`]).
    pub fn ops(&self) -> u64 {
        self.state.borrow().ops
    }

    /// The storage a restarted process would see after a crash now.
    pub fn crash(&self, mode: CrashMode) -> SimStorage {
        let st = self.state.borrow();
        let mut rng = SplitMix(match mode {
            CrashMode::Torn { seed } => seed,
            _ => 0,
        });
        // A process crash (KeepAll) keeps every directory entry: the kernel still has them.
        // Otherwise a directory or file survives when its entry and every ancestor's entry are
        // durable.
        let keep_all = matches!(mode, CrashMode::KeepAll);
        let survives = |path: &Path| {
            keep_all
                || path
                    .ancestors()
                    .skip(1)
                    .take_while(|d| st.live_dirs.iter().any(|l| l == d))
                    .all(|d| st.durable_dirs.iter().any(|k| k == d))
        };
        let entries = if keep_all { &st.live } else { &st.durable };
        let mut durable = HashMap::new();
        for (path, file) in entries.iter().filter(|(p, _)| survives(p)) {
            let f = file.borrow();
            let mut image = f.durable.clone();
            match mode {
                CrashMode::LoseUnsynced => {}
                CrashMode::KeepAll => image = f.live.clone(),
                CrashMode::Torn { .. } => {
                    let kept: Vec<&Op> = f.unsynced.iter().filter(|_| rng.below(2) == 0).collect();
                    let n = kept.len();
                    for (i, op) in kept.into_iter().enumerate() {
                        if i + 1 == n {
                            if let Op::Write { pos, data } = op {
                                let cut = rng.below(data.len() as u64 + 1) as usize;
                                apply(
                                    &mut image,
                                    &Op::Write {
                                        pos: *pos,
                                        data: data[..cut].to_vec(),
                                    },
                                );
                                continue;
                            }
                        }
                        apply(&mut image, op);
                    }
                }
            }
            let data = FileData {
                live: image.clone(),
                durable: image,
                ..FileData::default()
            };
            durable.insert(path.clone(), Arc::new(Shared::new(data)));
        }
        let dirs = if keep_all {
            &st.live_dirs
        } else {
            &st.durable_dirs
        };
        let durable_dirs: Vec<PathBuf> = dirs
            .iter()
            .filter(|d| st.live_dirs.contains(d) && survives(d))
            .cloned()
            .collect();
        let state = State {
            live: durable.clone(),
            durable,
            live_dirs: durable_dirs.clone(),
            durable_dirs,
            alignment: st.alignment,
            ..State::default()
        };
        SimStorage {
            state: Arc::new(Shared::new(state)),
        }
    }

    /// Direct access to a file's live bytes (for corruption tests).
    pub fn with_file_mut<R>(&self, path: &Path, f: impl FnOnce(&mut Vec<u8>) -> R) -> Option<R> {
        let st = self.state.borrow();
        let file = st.live.get(path)?;
        let mut d = file.borrow_mut();
        let r = f(&mut d.live);
        d.durable = d.live.clone();
        d.unsynced.clear();
        Some(r)
    }

    /// Files open now (handles not dropped), as a process's descriptors would be.
    pub fn open_files(&self) -> usize {
        self.state.borrow().open_files
    }

    /// The most files that were open at once since the last [`SimStorage::reset_max_open_files`].
    pub fn max_open_files(&self) -> usize {
        self.state.borrow().max_open_files
    }

    pub fn reset_max_open_files(&self) {
        let mut st = self.state.borrow_mut();
        st.max_open_files = st.open_files;
    }

    /// (data writes, fsyncs) since faults were last armed.
    pub fn counters(&self) -> (u64, u64) {
        let st = self.state.borrow();
        (st.writes, st.syncs)
    }

    /// Paths of all live files.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.state.borrow().live.keys().cloned().collect();
        v.sort();
        v
    }

    fn used_bytes(st: &State) -> u64 {
        st.live
            .values()
            .map(|f| {
                let f = f.borrow();
                (f.live.len() as u64).max(f.reserved)
            })
            .sum()
    }
}

impl Storage for SimStorage {
    type File = SimFile;

    async fn create_dir_all(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut st = self.state.borrow_mut();
        if !st.live_dirs.iter().any(|d| d == path) {
            st.op("mkdir", path)?;
        }
        let mut created: Vec<PathBuf> = path
            .ancestors()
            .filter(|d| d.parent().is_some()) // the root is always there
            .take_while(|d| !st.live_dirs.iter().any(|l| l == d))
            .map(Path::to_path_buf)
            .collect();
        created.reverse();
        st.live_dirs.extend(created.iter().cloned());
        Ok(created)
    }

    async fn open_file(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        let mut st = self.state.borrow_mut();
        let data = match st.live.get(path) {
            Some(d) => d.clone(),
            None if create => {
                st.op("create", path)?;
                let d = Arc::new(Shared::new(FileData::default()));
                st.live.insert(path.to_path_buf(), d.clone());
                d
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        st.open_files += 1;
        st.max_open_files = st.max_open_files.max(st.open_files);
        Ok(SimFile {
            data,
            state: self.state.clone(),
            path: path.to_path_buf(),
        })
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        if st.live.contains_key(path) {
            st.op("unlink", path)?;
        }
        st.live.remove(path);
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.op("rename", from)?;
        st.rename(from, to)
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.op("remove dir", path)?;
        st.live.retain(|p, _| !p.starts_with(path));
        st.durable.retain(|p, _| !p.starts_with(path));
        st.live_dirs.retain(|d| !d.starts_with(path));
        st.durable_dirs.retain(|d| !d.starts_with(path));
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.op("fsync", path)?;
        st.sync_dir(path);
        Ok(())
    }

    async fn file_sizes(&self, paths: Vec<PathBuf>) -> io::Result<Vec<u64>> {
        let st = self.state.borrow();
        paths
            .iter()
            .map(|p| {
                st.live
                    .get(p)
                    .map(|d| d.borrow().live.len() as u64)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
            })
            .collect()
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.state.borrow();
        Ok(st
            .live
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .state
            .borrow()
            .live
            .get(path)
            .map(|d| d.borrow().live.clone()))
    }

    async fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        super::atomic::replace(self, path, data)
    }
}

impl State {
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let data = self
            .live
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        self.live.insert(to.to_path_buf(), data);
        Ok(())
    }

    fn sync_dir(&mut self, path: &Path) {
        let live: Vec<(PathBuf, Arc<Shared<FileData>>)> = self
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, d)| (p.clone(), d.clone()))
            .collect();
        self.durable.retain(|p, _| p.parent() != Some(path));
        self.durable.extend(live);
        let live_dirs: Vec<PathBuf> = self
            .live_dirs
            .iter()
            .filter(|d| d.parent() == Some(path))
            .cloned()
            .collect();
        self.durable_dirs.retain(|d| d.parent() != Some(path));
        self.durable_dirs.extend(live_dirs);
    }

    /// Counts one operation that changes the disk; EIO (and no effect) once the armed
    /// `halt_after_ops` is used up.
    fn op(&mut self, what: &str, path: &Path) -> io::Result<()> {
        if self.faults.halt_after_ops.is_some_and(|n| self.ops >= n) {
            return Err(eio(&format!("{what} of {} (halted)", path.display())));
        }
        self.ops += 1;
        Ok(())
    }

    /// Counts one control-file step; EIO when the armed fault says this one fails.
    fn control_step(&mut self, what: &str, path: &Path) -> io::Result<()> {
        self.op(what, path)?;
        if let Some(n) = self.faults.eio_control_step_after {
            if self.control_steps >= n {
                return Err(eio(&format!("{what} of {}", path.display())));
            }
        }
        self.control_steps += 1;
        Ok(())
    }
}

/// The steps of an atomic replacement on the simulated namespace: the tmp file's data is
/// unsynced until `sync_file`, its entry and the rename volatile until `sync_dir`.
impl super::atomic::ReplaceSteps for SimStorage {
    fn write_tmp(&self, tmp: &Path, data: &[u8]) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.control_step("write", tmp)?;
        let old_len = st.live.get(tmp).map_or(0, |d| d.borrow().live.len() as u64);
        if let Some(cap) = st.faults.capacity_bytes {
            if Self::used_bytes(&st) - old_len + data.len() as u64 > cap {
                return Err(enospc());
            }
        }
        let file = st.live.entry(tmp.to_path_buf()).or_default().clone();
        let mut d = file.borrow_mut();
        for op in [
            Op::Truncate(0),
            Op::Write {
                pos: 0,
                data: data.to_vec(),
            },
        ] {
            apply(&mut d.live, &op);
            d.unsynced.push(op);
        }
        Ok(())
    }

    fn sync_file(&self, tmp: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.control_step("fsync", tmp)?;
        let file = st
            .live
            .get(tmp)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut d = file.borrow_mut();
        d.durable = d.live.clone();
        d.unsynced.clear();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.control_step("rename", from)?;
        st.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.control_step("fsync", dir)?;
        st.sync_dir(dir);
        Ok(())
    }
}

impl StorageFile for SimFile {
    type Buf = VecBuf;

    fn alignment(&self) -> u64 {
        self.state.borrow().alignment
    }

    fn alloc(&self, len: usize) -> VecBuf {
        VecBuf(vec![0; len])
    }

    async fn write_at(&self, buf: VecBuf, len: usize, pos: u64) -> io::Result<()> {
        // Let other tasks run while the "device" works, as a real one would.
        futures_lite::future::yield_now().await;
        let mut st = self.state.borrow_mut();
        let align = st.alignment;
        if !pos.is_multiple_of(align) || !(len as u64).is_multiple_of(align) || len > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("misaligned direct write: {len} bytes at {pos} (alignment {align})"),
            ));
        }
        if let Some(n) = st.faults.eio_write_after {
            if st.writes >= n {
                return Err(eio(&format!("write to {}", self.path.display())));
            }
        }
        st.op("write", &self.path)?;
        if let Some(cap) = st.faults.capacity_bytes {
            // The file's lock is released before `used_bytes_of` takes every file's in turn.
            let grow = {
                let d = self.data.borrow();
                (pos + len as u64).saturating_sub((d.live.len() as u64).max(d.reserved))
            };
            if Self::used_bytes_of(&st) + grow > cap {
                return Err(enospc());
            }
        }
        st.writes += 1;
        let op = Op::Write {
            pos,
            data: buf.0[..len].to_vec(),
        };
        let mut d = self.data.borrow_mut();
        apply(&mut d.live, &op);
        d.unsynced.push(op);
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        // As a real device would, let other tasks run meanwhile (concurrent readers of the
        // bounded open-file set then really contend for it).
        futures_lite::future::yield_now().await;
        let bad = self
            .state
            .borrow()
            .faults
            .eio_read_of
            .as_deref()
            .is_some_and(|s| self.path.to_string_lossy().contains(s));
        if bad {
            return Err(eio(&format!("read of {}", self.path.display())));
        }
        let d = self.data.borrow();
        let start = (pos as usize).min(d.live.len());
        let end = start.saturating_add(len).min(d.live.len());
        Ok(Bytes::copy_from_slice(&d.live[start..end]))
    }

    async fn sync_data(&self) -> io::Result<()> {
        futures_lite::future::yield_now().await;
        let delay = self.state.borrow().faults.sync_delay;
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let mut st = self.state.borrow_mut();
        if let Some(n) = st.faults.eio_sync_after {
            if st.syncs >= n {
                return Err(eio(&format!("fsync of {}", self.path.display())));
            }
        }
        st.op("fsync", &self.path)?;
        st.syncs += 1;
        let mut d = self.data.borrow_mut();
        d.durable = d.live.clone();
        d.unsynced.clear();
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.state.borrow_mut().op("truncate", &self.path)?;
        let op = Op::Truncate(len);
        let mut d = self.data.borrow_mut();
        apply(&mut d.live, &op);
        d.unsynced.push(op);
        Ok(())
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.op("fallocate", &self.path)?;
        if let Some(cap) = st.faults.capacity_bytes {
            let grow = {
                let d = self.data.borrow();
                len.saturating_sub((d.live.len() as u64).max(d.reserved))
            };
            if Self::used_bytes_of(&st) + grow > cap {
                return Err(enospc());
            }
        }
        let mut d = self.data.borrow_mut();
        d.reserved = d.reserved.max(len);
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.data.borrow().live.len() as u64)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        // No code path drops a file while holding the state lock.
        let mut st = self.state.borrow_mut();
        st.open_files = st.open_files.saturating_sub(1);
    }
}

impl SimFile {
    fn used_bytes_of(st: &State) -> u64 {
        SimStorage::used_bytes(st)
    }
}

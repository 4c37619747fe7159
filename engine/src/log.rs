//! [`PartitionLog`]: one partition's segmented log.
//!
//! ## Write path and group commit
//!
//! `append` validates a batch, assigns its offsets by patching the header, copies it into the
//! active segment's pending buffer (an aligned DMA buffer that starts at the last partially
//! written block) and into the batch cache, and returns. Nothing waits for the disk there.
//! Callers then wait for the level they need: [`PartitionLog::wait_written`] (the bytes reached
//! the device: survives a process crash) or [`PartitionLog::wait_committed`] (the flush policy
//! is satisfied: under `EveryBatch`, fdatasync'd: survives power loss).
//!
//! Waiters drive the I/O themselves: the first one to find the device idle takes the pending
//! buffer, writes it with one O_DIRECT write, and (if the policy says so) issues one
//! fdatasync. Appends that land while that I/O is in flight go into a fresh buffer and are
//! covered by the next write and the next fdatasync: one fdatasync completes every append
//! that was waiting on it. `tick` does the same for data nobody waits on (acks=0) and for
//! interval flushes. All of it is single-threaded: a log lives on one shard, so the
//! `RefCell` is never contended and is never held across an `.await`.
//!
//! Because O_DIRECT writes whole blocks, the block holding the write position is rewritten by
//! the next write together with the new data. Writes are serialized, so that is safe.
//!
//! ## Space
//!
//! Segment files are preallocated (fallocate, KEEP_SIZE) in `preallocate_bytes` steps before
//! any batch that needs the space is accepted. A full disk is therefore reported to the one
//! append that needed the space (`StorageFull`, nothing appended) and the log keeps serving
//! reads and accepts appends again once space is freed. A failed write or fdatasync, on the
//! other hand, leaves the device state unknown (fsyncgate): the log refuses further appends
//! (`Failed`) until it is reopened and recovered from what is really on disk.
//!
//! ## Recovery
//!
//! Sealed segments were fdatasync'd and truncated to their exact length when they were
//! sealed, so opening a log only examines the last segment: if the clean-shutdown marker
//! matches it, its length and indexes are trusted; otherwise it is scanned batch by batch
//! (length, magic, CRC, contiguous offsets) and truncated after the last valid batch. Start-up
//! work is bounded by one segment, whatever the retained size. Indexes of sealed segments are
//! loaded lazily and rebuilt when missing or inconsistent.
//!
//! ## Followers
//!
//! [`PartitionLog::append_replicated`] and [`PartitionLog::truncate_to`] (in `follower.rs`)
//! are what a replica that copies a leader needs: append batches whose offsets and epochs the
//! leader assigned, and cut a tail that diverged from the leader's, crash-atomically.
//! The small control files' format (with its version byte) is in `control.rs`.

mod control;
mod follower;

pub use follower::ReplicatedAppend;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use event_listener::{Event, EventListener};

use crate::batch::{self, BatchInfo, StoredBatch, HEADER_BYTES};
use crate::cache::{BatchCache, CacheBudget};
use crate::config::{FlushPolicy, LogConfig, TimestampType};
use crate::disk_ops::{self, DiskOp};
use crate::error::LogError;
use crate::files::{HeldFile, SegmentFile, SegmentFiles};
use crate::index::SegmentIndex;
use crate::io::{align_down, align_up, Storage, StorageFile};
use crate::Offset;

const CLEAN_MARKER: &str = "clean-shutdown";
const LOG_START_FILE: &str = "log-start";
const EPOCHS_FILE: &str = "leader-epochs";
/// The intent of a truncation in progress (see `follower.rs`).
const TRUNCATION_FILE: &str = "truncation";
/// Truncations a waiter can look back over (see `Inner::truncation_ends`).
const TRUNCATION_HISTORY: usize = 16;
const MARKER_MAGIC: &[u8; 4] = b"SLCM";
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// The smallest write buffer of an active segment. Buffers grow to the batches a partition
/// gets and keep that size; a floor of 1 MiB allocated 1 MiB for every partition however small
/// its batches.
const MIN_WRITE_BUF_BYTES: usize = 64 << 10;
const MIN_READ_BYTES: usize = 64 << 10;
/// The first space reservation of a segment; later ones double up to `preallocate_bytes`.
const INITIAL_RESERVE_BYTES: u64 = 1 << 20;
/// Sealed-segment files a log that joined no shard-wide [`SegmentFiles`] keeps open.
const DEFAULT_OPEN_SEGMENT_FILES: usize = 16;

/// Result of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub record_count: i32,
    /// Set when the log stamps batches with LogAppendTime.
    pub log_append_time_ms: Option<i64>,
    pub batch: BatchInfo,
}

/// Proof that the flush policy is satisfied for every offset up to and including `through`.
/// Only the log creates it, after the I/O the policy demands has completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    through: Offset,
}

impl Committed {
    pub fn through(&self) -> Offset {
        self.through
    }
}

/// Whole batches, as stored, ready to be written to a socket unchanged.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub batches: Vec<StoredBatch>,
    pub bytes: usize,
}

/// What opening a log found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The clean-shutdown marker matched: nothing was scanned.
    pub clean: bool,
    /// Bytes cut from the tail of the last segment (torn or corrupt data, block padding).
    pub truncated_bytes: u64,
    /// Bytes of the last segment that were scanned and validated.
    pub scanned_bytes: u64,
    pub segments: usize,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    /// Of the deleted segments, those whose file was kept for reuse by a later roll.
    pub segments_recycled: usize,
}

impl RetentionReport {
    fn add(&mut self, other: RetentionReport) {
        self.segments_deleted += other.segments_deleted;
        self.bytes_deleted += other.bytes_deleted;
        self.segments_recycled += other.segments_recycled;
    }
}

/// A sealed segment. Its file is not held here: it is opened on demand through the log's
/// [`SegmentFiles`], which bounds how many are open (see `files.rs`).
struct Sealed {
    base: Offset,
    next_offset: Offset,
    size: u64,
    index: RefCell<Option<Rc<SegmentIndex>>>,
}

/// A segment file waiting to be reused (see `Inner::recycled`). Not held open: the roll that
/// reuses it opens it.
struct Recycled {
    path: PathBuf,
    /// Bytes of old data in it: blocks that are already written.
    size: u64,
}

/// Suffix of a deleted segment kept for reuse. Never a segment: `open` deletes leftovers.
const RECYCLE_SUFFIX: &str = ".log.recycle";

/// Files a log keeps for reuse. Periodic size retention runs between rolls and can get one
/// segment ahead of them (it deletes as soon as the growing active segment takes the log a
/// segment past the limit); two kept files absorb that, so in steady state every segment that
/// size retention deletes is reused and none is freed (test
/// `steady_size_retention_reuses_every_deleted_segment`).
const MAX_RECYCLED: usize = 2;

struct Active<F: StorageFile> {
    base: Offset,
    file: Rc<F>,
    next_offset: Offset,
    /// Logical bytes, including those still pending in `buf`.
    size: u64,
    /// Bytes that reached the device.
    written: u64,
    /// Bytes reserved with fallocate.
    allocated: u64,
    /// Holds the segment's bytes `[buf_start, size)`.
    buf: Option<F::Buf>,
    buf_start: u64,
    index: SegmentIndex,
    bytes_since_index: u64,
    max_timestamp: i64,
    last_batch_rel: u32,
    first_append_ms: Option<i64>,
}

struct Inner<F: StorageFile> {
    config: LogConfig,
    sealed: BTreeMap<Offset, Rc<Sealed>>,
    active: Active<F>,
    log_start: Offset,
    written_end: Offset,
    durable_end: Offset,
    /// Shared with the [`CacheBudget`] the log joined, if any (which may evict from it).
    cache: Rc<RefCell<BatchCache>>,
    epochs: Vec<(i32, Offset)>,
    epochs_dirty: bool,
    /// A write of pending data is in flight.
    write_busy: bool,
    /// An fdatasync is in flight.
    sync_busy: bool,
    /// The active segment is being sealed: appends wait.
    rolling: bool,
    failed: bool,
    unsynced_bytes: u64,
    last_sync: Instant,
    /// Sealed segments whose index files are not written yet. A roll leaves that to the next
    /// `tick` (or `close`) so appends to the new segment do not wait for two atomic file
    /// replacements; until then the indexes live in memory, and a crash only means they are
    /// rebuilt on first use (see the recovery table).
    unsaved_indexes: Vec<Offset>,
    /// Deleted segments' files kept for reuse by the next rolls (`recycle_segments`), at most
    /// [`MAX_RECYCLED`]: renamed `<base>.log.recycle`, no index files, no reader holds them.
    /// Not counted as the log's data by size retention.
    recycled: VecDeque<Recycled>,
    /// The active segment's directory entry is not known durable yet: the next fdatasync
    /// also syncs the directory, concurrently, before anything in the segment counts durable.
    dir_unsynced: bool,
    /// A DeleteRecords, a retention pass or a truncation is running: each moves a bound of
    /// the log (start or end) across awaits, and interleaved they could leave the start past
    /// the end. They take turns ([`PartitionLog::lock_bounds`]).
    bounds_busy: bool,
    /// Truncations (`truncate_to`) since the log was opened.
    truncations: u64,
    /// (truncation number, log end it left) of the last [`TRUNCATION_HISTORY`] truncations: a
    /// waiter whose offsets one of them removed gets [`LogError::Truncated`].
    truncation_ends: VecDeque<(u64, Offset)>,
}

/// One partition's log. Not `Send`: it lives on the shard that owns the partition.
pub struct PartitionLog<S: Storage> {
    storage: S,
    dir: PathBuf,
    inner: RefCell<Inner<S::File>>,
    /// Where sealed segments' files are opened and kept (a private set until the log joins
    /// its shard's with [`PartitionLog::join_segment_files`]), and this log's id in it.
    files: RefCell<Rc<SegmentFiles<S::File>>>,
    files_id: Cell<u64>,
    /// Notified whenever I/O completes (written/durable/committed ends advance or the device
    /// becomes idle).
    event: Event,
}

#[derive(Clone, Copy)]
enum Slot {
    Write,
    Sync,
    Both,
}

/// Releases an I/O slot when dropped (also on error or cancellation).
struct IoSlot<'a, S: Storage> {
    log: &'a PartitionLog<S>,
    slot: Slot,
}

impl<S: Storage> Drop for IoSlot<'_, S> {
    fn drop(&mut self) {
        let mut st = self.log.inner.borrow_mut();
        match self.slot {
            Slot::Write => st.write_busy = false,
            Slot::Sync => st.sync_busy = false,
            Slot::Both => {
                st.write_busy = false;
                st.sync_busy = false;
            }
        }
        drop(st);
        self.log.event.notify(usize::MAX);
    }
}

/// Ends a turn at moving the log's bounds (see `Inner::bounds_busy`), however it ends.
struct BoundsGuard<'a, S: Storage> {
    log: &'a PartitionLog<S>,
}

impl<S: Storage> Drop for BoundsGuard<'_, S> {
    fn drop(&mut self) {
        self.log.inner.borrow_mut().bounds_busy = false;
        self.log.event.notify(usize::MAX);
    }
}

/// Lets appends proceed again when a roll ends, however it ends.
struct RollGuard<'a, S: Storage> {
    log: &'a PartitionLog<S>,
}

impl<S: Storage> Drop for RollGuard<'_, S> {
    fn drop(&mut self) {
        self.log.inner.borrow_mut().rolling = false;
        self.log.event.notify(usize::MAX);
    }
}

enum Action {
    Wait(EventListener),
    Write,
    Sync,
}

fn segment_name(base: Offset, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

struct ScanOutcome {
    valid_end: u64,
    next_offset: Offset,
    index: SegmentIndex,
    max_timestamp: i64,
    last_batch_rel: u32,
    stop: Option<String>,
}

enum Need {
    Written(Offset),
    Durable(Offset),
}

impl<S: Storage> PartitionLog<S> {
    /// Opens (or creates) the log in `dir`, recovering its tail.
    pub async fn open(
        storage: S,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<(Self, RecoveryReport), LogError> {
        let config = config.normalized();
        let created = storage
            .create_dir_all(&dir)
            .await
            .map_err(|e| LogError::io("create dir", &dir, e))?;
        // Every directory entry on the way must be durable before anything is acknowledged:
        // the log's own (in its parent, synced in any case) and those of the ancestors this
        // call created (a new topic's directory, the first topic's `logs`).
        let mut parents: Vec<&Path> = created.iter().filter_map(|d| d.parent()).collect();
        parents.extend(dir.parent());
        parents.dedup();
        for parent in parents {
            storage
                .sync_dir(parent)
                .await
                .map_err(|e| LogError::io("sync dir", parent, e))?;
        }
        let names = storage
            .list_dir(&dir)
            .await
            .map_err(|e| LogError::io("list dir", &dir, e))?;
        let mut bases = segment_bases(&names);
        for n in names.iter().filter(|n| n.ends_with(".tmp")) {
            let p = dir.join(n);
            storage
                .remove_file(&p)
                .await
                .map_err(|e| LogError::io("remove", &p, e))?;
        }
        // Segments retention deleted whose space was not yet freed when the broker stopped,
        // and a segment file kept for reuse (not worth tracking across a restart).
        for n in names.iter().filter(|n| {
            n.ends_with(crate::io::deleter::DELETED_SUFFIX) || n.ends_with(RECYCLE_SUFFIX)
        }) {
            let p = dir.join(n);
            storage
                .remove_file_in_background(&p)
                .await
                .map_err(|e| LogError::io("remove", &p, e))?;
        }

        // A truncation that a crash interrupted is finished before anything is read.
        if follower::finish_truncation(&storage, &dir, &bases).await? {
            bases = sorted_segment_bases(&storage, &dir).await?;
        }
        let mut log_start = control::read(&storage, &dir.join(LOG_START_FILE))
            .await?
            .and_then(|b| b.try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(0);
        let mut epochs = control::read(&storage, &dir.join(EPOCHS_FILE))
            .await?
            .map(|b| decode_epochs(&b))
            .unwrap_or_default();
        let marker = control::read(&storage, &dir.join(CLEAN_MARKER)).await?;

        let mut report = RecoveryReport::default();
        let mut sealed = BTreeMap::new();
        // Sealed segments are not opened here (one descriptor each would grow with the
        // retained data): their sizes come from one stat call for all of them.
        let sealed_bases = &bases[..bases.len().saturating_sub(1)];
        let paths: Vec<PathBuf> = sealed_bases
            .iter()
            .map(|&b| dir.join(segment_name(b, "log")))
            .collect();
        let sizes = storage
            .file_sizes(paths)
            .await
            .map_err(|e| LogError::io("stat segments", &dir, e))?;
        for (i, (&base, size)) in sealed_bases.iter().zip(sizes).enumerate() {
            let seg = Sealed {
                base,
                next_offset: bases[i + 1],
                size,
                index: RefCell::new(None),
            };
            sealed.insert(base, Rc::new(seg));
        }

        let active_base = bases.last().copied().unwrap_or(log_start.max(0));
        let path = dir.join(segment_name(active_base, "log"));
        let file = storage
            .open_file(&path, true)
            .await
            .map_err(|e| LogError::io("open", &path, e))?;
        if bases.is_empty() {
            storage
                .sync_dir(&dir)
                .await
                .map_err(|e| LogError::io("sync dir", &dir, e))?;
        }
        let file_size = file
            .size()
            .await
            .map_err(|e| LogError::io("stat", &path, e))?;
        let clean = marker.as_deref().and_then(decode_marker);
        let mut active = None;
        if let Some((m_base, m_size, m_next)) = clean {
            if m_base == active_base && m_size <= file_size {
                let idx =
                    load_index(&storage, &dir, active_base, m_size, m_next - active_base).await;
                if let Some(index) = idx {
                    report.clean = true;
                    let max_timestamp = index.max_timestamp().unwrap_or(-1);
                    let last_batch_rel = index.offsets.last().map_or(0, |e| e.0);
                    active = Some((m_size, m_next, index, max_timestamp, last_batch_rel));
                }
            }
        }
        let file = Rc::new(file);
        let (size, next_offset, index, max_timestamp, last_batch_rel) = match active {
            Some(a) => a,
            None => {
                let scan = scan_segment(
                    &*file,
                    &path,
                    active_base,
                    file_size,
                    config.index_interval_bytes,
                )
                .await?;
                if let Some(reason) = &scan.stop {
                    tracing::warn!(path = %path.display(), valid_bytes = scan.valid_end, file_bytes = file_size, %reason, "recovery truncates the log tail");
                }
                report.scanned_bytes = scan.valid_end;
                (
                    scan.valid_end,
                    scan.next_offset,
                    scan.index,
                    scan.max_timestamp,
                    scan.last_batch_rel,
                )
            }
        };
        if file_size != size {
            report.truncated_bytes = file_size - size;
            file.truncate(size)
                .await
                .map_err(|e| LogError::io("truncate", &path, e))?;
            file.sync_data()
                .await
                .map_err(|e| LogError::io("fdatasync", &path, e))?;
        }
        if marker.is_some() {
            let p = dir.join(CLEAN_MARKER);
            storage
                .remove_file(&p)
                .await
                .map_err(|e| LogError::io("remove", &p, e))?;
            storage
                .sync_dir(&dir)
                .await
                .map_err(|e| LogError::io("sync dir", &dir, e))?;
        }

        if log_start > next_offset {
            // DeleteRecords moved the start past data that did not survive (possible under the
            // non-fsync policies): nothing below the start may reappear, so the log restarts
            // empty at its start offset, as Kafka does.
            tracing::warn!(dir = %dir.display(), log_start, log_end = next_offset, "log start is past the recovered end; restarting the log at its start offset");
            drop(file);
            drop(sealed);
            for &base in &bases {
                remove_segment_files(&storage, &dir, base).await?;
            }
            storage
                .sync_dir(&dir)
                .await
                .map_err(|e| LogError::io("sync dir", &dir, e))?;
            return Box::pin(Self::open(storage, dir, config)).await;
        }
        let align = file.alignment();
        let buf_start = align_down(size, align);
        let mut buf = file.alloc(MIN_WRITE_BUF_BYTES.max(align as usize));
        if size > buf_start {
            let tail = file
                .read_at(buf_start, (size - buf_start) as usize)
                .await
                .map_err(|e| LogError::io("read", &path, e))?;
            buf[..tail.len()].copy_from_slice(&tail);
        }
        let first_base = sealed.keys().next().copied().unwrap_or(active_base);
        // (Written so that no combination of files on disk can make it panic.)
        log_start = log_start.max(first_base).min(next_offset.max(first_base));
        let epochs_before = epochs.len();
        epochs.retain(|&(_, start)| start < next_offset || start == 0);
        // Entries past the recovered end are gone from memory; the file must lose them too
        // before new data reaches their offsets (rewritten with the next write).
        let epochs_dirty = epochs.len() != epochs_before;
        report.segments = sealed.len() + 1;
        report.log_start_offset = log_start;
        report.log_end_offset = next_offset;
        let bytes_since_index = if index.offsets.is_empty() {
            u64::MAX / 2
        } else {
            size - u64::from(index.offsets.last().map_or(0, |e| e.1))
        };
        let active = Active {
            base: active_base,
            file,
            next_offset,
            size,
            written: size,
            allocated: size,
            buf: Some(buf),
            buf_start,
            index,
            bytes_since_index,
            max_timestamp,
            last_batch_rel,
            first_append_ms: None,
        };
        let inner = Inner {
            cache: Rc::new(RefCell::new(BatchCache::new(config.cache_bytes))),
            config,
            sealed,
            active,
            log_start,
            written_end: next_offset,
            durable_end: next_offset,
            epochs,
            epochs_dirty,
            write_busy: false,
            sync_busy: false,
            rolling: false,
            failed: false,
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            unsaved_indexes: Vec::new(),
            recycled: VecDeque::new(),
            dir_unsynced: false,
            bounds_busy: false,
            truncations: 0,
            truncation_ends: VecDeque::new(),
        };
        inner.check_bounds("recovery");
        tracing::debug!(dir = %dir.display(), ?report, "log opened");
        let files = SegmentFiles::new(DEFAULT_OPEN_SEGMENT_FILES);
        let files_id = files.register_log();
        Ok((
            Self {
                storage,
                dir,
                inner: RefCell::new(inner),
                files: RefCell::new(files),
                files_id: Cell::new(files_id),
                event: Event::new(),
            },
            report,
        ))
    }

    /// Makes this log open its sealed segments through `files`, shared with the other logs
    /// of the shard that joined it: together they keep at most its limit of files open.
    pub fn join_segment_files(&self, files: &Rc<SegmentFiles<S::File>>) {
        let old = self.files.replace(files.clone());
        old.forget_log(self.files_id.get());
        self.files_id.set(files.register_log());
    }

    /// The open file of a sealed segment (opened on demand, see `files.rs`).
    async fn sealed_file(&self, seg: &Sealed) -> Result<HeldFile<S::File>, LogError> {
        let path = self.dir.join(segment_name(seg.base, "log"));
        let files = self.files.borrow().clone();
        match files
            .get(&self.storage, self.files_id.get(), seg.base, &path)
            .await
        {
            Ok(f) => Ok(f),
            Err(e) => {
                let st = self.inner.borrow();
                if e.kind() == std::io::ErrorKind::NotFound && !st.sealed.contains_key(&seg.base) {
                    // Retention deleted it while we waited: the data is gone, not broken.
                    return Err(LogError::OffsetOutOfRange {
                        offset: seg.base,
                        start: st.log_start,
                        end: st.active.next_offset,
                    });
                }
                Err(LogError::io("open", &path, e))
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The storage the log lives on (its owner keeps side files, such as producer snapshots,
    /// on the same disk).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn config(&self) -> LogConfig {
        self.inner.borrow().config.clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        let mut st = self.inner.borrow_mut();
        let config = config.normalized();
        st.cache.borrow_mut().set_limit(config.cache_bytes);
        st.config = config;
        drop(st);
        self.event.notify(usize::MAX);
    }

    pub fn log_start_offset(&self) -> Offset {
        self.inner.borrow().log_start
    }

    pub fn log_end_offset(&self) -> Offset {
        self.inner.borrow().active.next_offset
    }

    pub fn durable_end_offset(&self) -> Offset {
        self.inner.borrow().durable_end
    }

    pub fn written_end_offset(&self) -> Offset {
        self.inner.borrow().written_end
    }

    /// The end of what consumers may read: data that satisfies the flush policy.
    pub fn committed_end_offset(&self) -> Offset {
        let st = self.inner.borrow();
        committed_end(&st)
    }

    pub fn size_bytes(&self) -> u64 {
        let st = self.inner.borrow();
        st.sealed.values().map(|s| s.size).sum::<u64>() + st.active.size
    }

    /// Makes this log's batch cache share `budget` with the other logs that joined it: together
    /// they hold at most its limit, the oldest batches of all of them leaving first.
    pub fn join_cache_budget(&self, budget: &Rc<CacheBudget>) {
        let cache = self.inner.borrow().cache.clone();
        budget.join(&cache);
    }

    pub fn cached_bytes(&self) -> usize {
        self.inner.borrow().cache.borrow().bytes()
    }

    pub fn is_failed(&self) -> bool {
        self.inner.borrow().failed
    }

    /// Resolves on the next I/O completion; re-check offsets after it fires.
    pub fn listen(&self) -> EventListener {
        self.event.listen()
    }

    /// Validates and appends one batch; see the module docs for what it waits on.
    ///
    /// The batch cache keeps `bytes` after its header (see [`StoredBatch`]), so pass a buffer
    /// that holds little besides the batch (not a slice of a much larger one).
    pub async fn append(
        &self,
        bytes: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let max = self.inner.borrow().config.max_batch_bytes;
        let info = batch::validate_new(&bytes, max)?;
        self.await_room(bytes.len() as u64, info.last_offset_delta, now_ms)
            .await?;

        let mut st = self.inner.borrow_mut();
        let st = &mut *st;
        let base_offset = st.active.next_offset;
        // Only the header changes: patch a copy of it; the records stay where they are.
        let mut head = BytesMut::from(&bytes[..batch::HEADER_BYTES]);
        let tail = bytes.slice(batch::HEADER_BYTES..);
        batch::assign(&mut head, base_offset, leader_epoch);
        let log_append_time_ms =
            (st.config.timestamp_type == TimestampType::LogAppendTime).then(|| {
                batch::stamp_log_append_time_split(&mut head, &tail, now_ms);
                now_ms
            });
        let stored = StoredBatch::split(head.freeze(), tail);
        let info = BatchInfo {
            base_offset,
            partition_leader_epoch: leader_epoch,
            max_timestamp: log_append_time_ms.unwrap_or(info.max_timestamp),
            ..info
        };
        self.place(st, stored, &info, now_ms);
        st.check_bounds("append");
        Ok(AppendInfo {
            base_offset,
            last_offset: info.last_offset(),
            record_count: info.record_count,
            log_append_time_ms,
            batch: info,
        })
    }

    /// Waits until a batch of `len` bytes spanning `last_offset_delta + 1` offsets can be
    /// placed in the active segment without waiting again: rolls a full or old segment,
    /// drains a pending buffer that is too large, reserves space. Returns with no await left
    /// before the caller's `place` (so nothing else can change the active segment between).
    async fn await_room(
        &self,
        len: u64,
        last_offset_delta: i32,
        now_ms: i64,
    ) -> Result<(), LogError> {
        loop {
            let (roll, drain, grow) = {
                let st = self.inner.borrow();
                if st.failed {
                    return Err(LogError::Failed(self.dir.clone()));
                }
                let a = &st.active;
                let span = a.next_offset - a.base + i64::from(last_offset_delta) + 1;
                let aged = a
                    .first_append_ms
                    .is_some_and(|t| now_ms - t >= st.config.segment_ms);
                let roll = a.size > 0
                    && (a.size + len > st.config.segment_bytes
                        || aged
                        || span > i64::from(u32::MAX));
                let drain = (a.size - a.written) + len > st.config.max_pending_bytes as u64;
                let grow = a.size + len > a.allocated;
                (roll, drain, grow)
            };
            let rolling = self.inner.borrow().rolling.then(|| self.event.listen());
            if let Some(listener) = rolling {
                listener.await;
            } else if roll {
                self.roll().await?;
            } else if drain {
                let end = self.log_end_offset();
                self.pump(Need::Written(end)).await?;
            } else if grow {
                self.reserve(len).await?;
            } else {
                return Ok(());
            }
        }
    }

    /// Copies a batch whose offsets and epoch are final (`info` describes it) into the active
    /// segment's pending buffer and the batch cache, and advances the log end: the one place
    /// both the leader's `append` and a follower's `append_replicated` store a batch. The
    /// caller ran [`Self::await_room`] for it with no await since.
    fn place(&self, st: &mut Inner<S::File>, stored: StoredBatch, info: &BatchInfo, now_ms: i64) {
        let len = stored.len() as u64;
        let base_offset = info.base_offset;
        let a = &mut st.active;
        debug_assert_eq!(
            base_offset, a.next_offset,
            "batch does not continue the log"
        );
        let rel = (base_offset - a.base) as u32;
        let pos = a.size;
        let end_in_buf = (pos + len - a.buf_start) as usize;
        let need_cap = align_up(end_in_buf as u64, a.file.alignment()) as usize;
        let cap = a.buf.as_ref().map_or(0, |b| b.len());
        if need_cap > cap {
            let mut bigger = a.file.alloc(need_cap.max(cap * 2).max(MIN_WRITE_BUF_BYTES));
            if let Some(old) = &a.buf {
                let used = (pos - a.buf_start) as usize;
                bigger[..used].copy_from_slice(&old[..used]);
            }
            a.buf = Some(bigger);
        }
        if let Some(buf) = a.buf.as_mut() {
            let mut at = (pos - a.buf_start) as usize;
            for c in stored.chunks() {
                buf[at..at + c.len()].copy_from_slice(c);
                at += c.len();
            }
        }
        a.max_timestamp = a.max_timestamp.max(info.max_timestamp);
        if a.bytes_since_index >= u64::from(st.config.index_interval_bytes) {
            a.index.push(rel, pos as u32, a.max_timestamp);
            a.bytes_since_index = 0;
        }
        a.bytes_since_index += len;
        a.last_batch_rel = rel;
        a.size += len;
        a.next_offset = info.next_offset();
        a.first_append_ms.get_or_insert(now_ms);
        let epoch = info.partition_leader_epoch;
        if st.epochs.last().is_none_or(|&(e, _)| epoch > e) {
            // An epoch that has no data (recovery keeps an empty log's first entry) is
            // superseded by this one, as in Kafka's epoch cache: no two entries share a start.
            while st.epochs.last().is_some_and(|&(_, s)| s >= base_offset) {
                st.epochs.pop();
            }
            // Persisted by the next write (see `write_pending`), before the data it describes is
            // acknowledged.
            st.epochs.push((epoch, base_offset));
            st.epochs_dirty = true;
        }
        st.cache
            .borrow_mut()
            .push(base_offset, info.next_offset(), stored);
    }

    /// Returns once every offset up to and including `offset` is on the device. Under
    /// `EveryBatch` every write is fdatasync'd before it counts, whatever the acks (as Kafka
    /// does with `flush.messages=1`), so this waits for the fdatasync too.
    pub async fn wait_written(&self, offset: Offset) -> Result<(), LogError> {
        let need = match self.inner.borrow().config.flush {
            FlushPolicy::EveryBatch => Need::Durable(offset + 1),
            _ => Need::Written(offset + 1),
        };
        self.pump(need).await
    }

    /// Returns once every offset up to and including `offset` satisfies the flush policy.
    pub async fn wait_committed(&self, offset: Offset) -> Result<Committed, LogError> {
        let need = match self.inner.borrow().config.flush {
            FlushPolicy::EveryBatch => Need::Durable(offset + 1),
            _ => Need::Written(offset + 1),
        };
        self.pump(need).await?;
        Ok(Committed { through: offset })
    }

    /// Writes and fdatasyncs everything appended so far.
    pub async fn flush(&self) -> Result<(), LogError> {
        let end = self.log_end_offset();
        self.pump(Need::Durable(end)).await
    }

    /// Periodic work: write data nobody waits for, interval fsync, age-based roll.
    pub async fn tick(&self, now_ms: i64) -> Result<(), LogError> {
        if !self.inner.borrow().unsaved_indexes.is_empty() {
            self.save_indexes().await;
        }
        let (work, roll) = {
            let st = self.inner.borrow();
            if st.failed || st.write_busy || st.sync_busy {
                return Ok(());
            }
            let a = &st.active;
            let pending = a.size > a.written;
            let unsynced = st.durable_end < st.written_end || pending;
            let sync = unsynced && (st.config.flush == FlushPolicy::EveryBatch || sync_due(&st));
            let roll = a.size > 0
                && a.first_append_ms
                    .is_some_and(|t| now_ms - t >= st.config.segment_ms);
            let end = a.next_offset;
            let work = if sync {
                Some(Need::Durable(end))
            } else if pending {
                Some(Need::Written(end))
            } else {
                None
            };
            (work, roll)
        };
        if let Some(need) = work {
            self.pump(need).await?;
        }
        if roll {
            self.roll().await?;
        }
        Ok(())
    }

    /// Waits for the turn to move the log's bounds (see `Inner::bounds_busy`).
    async fn lock_bounds(&self) -> BoundsGuard<'_, S> {
        loop {
            let listener = {
                let mut st = self.inner.borrow_mut();
                if !st.bounds_busy {
                    st.bounds_busy = true;
                    return BoundsGuard { log: self };
                }
                self.event.listen()
            };
            listener.await;
        }
    }

    /// Takes both I/O slots (for sealing and closing, which must not overlap any I/O).
    async fn acquire_all_io(&self) -> Result<IoSlot<'_, S>, LogError> {
        loop {
            let listener = {
                let mut st = self.inner.borrow_mut();
                if st.failed {
                    return Err(LogError::Failed(self.dir.clone()));
                }
                if !st.write_busy && !st.sync_busy {
                    st.write_busy = true;
                    st.sync_busy = true;
                    return Ok(IoSlot {
                        log: self,
                        slot: Slot::Both,
                    });
                }
                self.event.listen()
            };
            listener.await;
        }
    }

    /// Drives I/O until `need` holds. Whoever finds a slot free does that I/O for everyone:
    /// one write carries every pending append, one fdatasync covers every write completed
    /// before it started. A write may run while an fdatasync is in flight (it is simply not
    /// covered by it), so the device is kept busy and the CPU work of new appends overlaps both.
    ///
    /// Offsets past the log end, or removed by a truncation while this waits, are an error,
    /// never a success: they are not in the log (see `truncate_to`).
    async fn pump(&self, need: Need) -> Result<(), LogError> {
        let since = self.inner.borrow().truncations;
        loop {
            let action = {
                let mut st = self.inner.borrow_mut();
                if st.failed {
                    return Err(LogError::Failed(self.dir.clone()));
                }
                let leo = st.active.next_offset;
                let (Need::Written(wanted) | Need::Durable(wanted)) = need;
                if let Some(end) = st.truncated_below(since, wanted) {
                    return Err(LogError::Truncated {
                        offset: wanted - 1,
                        end,
                    });
                }
                if wanted > leo {
                    return Err(LogError::OffsetOutOfRange {
                        offset: wanted - 1,
                        start: st.log_start,
                        end: leo,
                    });
                }
                let (written_needed, durable_needed) = match need {
                    Need::Written(end) => (end.min(leo), None),
                    Need::Durable(end) => (end.min(leo), Some(end.min(leo))),
                };
                if st.written_end < written_needed {
                    if st.write_busy {
                        Action::Wait(self.event.listen())
                    } else {
                        st.write_busy = true;
                        Action::Write
                    }
                } else if durable_needed.is_some_and(|end| st.durable_end < end) {
                    if st.sync_busy {
                        Action::Wait(self.event.listen())
                    } else {
                        st.sync_busy = true;
                        Action::Sync
                    }
                } else {
                    return Ok(());
                }
            };
            match action {
                Action::Wait(listener) => listener.await,
                Action::Write => {
                    let slot = IoSlot {
                        log: self,
                        slot: Slot::Write,
                    };
                    let r = self.write_pending().await;
                    drop(slot);
                    r?;
                    // Interval policy: the write that crosses the threshold triggers the sync.
                    let due = {
                        let st = self.inner.borrow();
                        !st.sync_busy && st.config.flush != FlushPolicy::EveryBatch && sync_due(&st)
                    };
                    if due {
                        self.inner.borrow_mut().sync_busy = true;
                        let slot = IoSlot {
                            log: self,
                            slot: Slot::Sync,
                        };
                        let r = self.sync_written().await;
                        drop(slot);
                        r?;
                    }
                }
                Action::Sync => {
                    let slot = IoSlot {
                        log: self,
                        slot: Slot::Sync,
                    };
                    let r = self.sync_written().await;
                    drop(slot);
                    r?;
                }
            }
        }
    }

    /// Writes everything pending with one direct write. Requires the write slot.
    async fn write_pending(&self) -> Result<(), LogError> {
        let path = self.active_path();
        let epochs_to_save = {
            let mut st = self.inner.borrow_mut();
            std::mem::take(&mut st.epochs_dirty).then(|| encode_epochs(&st.epochs))
        };
        if let Some(bytes) = epochs_to_save {
            let p = self.dir.join(EPOCHS_FILE);
            if let Err(e) = self
                .storage
                .write_file_atomic(&p, &control::encode(&bytes))
                .await
            {
                // Nothing was written yet: retry with the next write.
                self.inner.borrow_mut().epochs_dirty = true;
                return Err(LogError::io("write", &p, e));
            }
        }
        let taken = {
            let mut st = self.inner.borrow_mut();
            let a = &mut st.active;
            if a.size > a.written {
                let align = a.file.alignment();
                let used = (a.size - a.buf_start) as usize;
                let len = align_up(used as u64, align) as usize;
                let new_start = align_down(a.size, align);
                let tail = (a.size - new_start) as usize;
                // The next buffer is as large as this one, so a steady stream of same-sized
                // batches never reallocates.
                let cap = a
                    .buf
                    .as_ref()
                    .map_or(0, |b| b.len())
                    .max(MIN_WRITE_BUF_BYTES)
                    .max(align as usize);
                let mut fresh = a.file.alloc(cap);
                let mut old = a.buf.take();
                if let Some(old) = old.as_mut() {
                    let from = (new_start - a.buf_start) as usize;
                    fresh[..tail].copy_from_slice(&old[from..from + tail]);
                    // Direct I/O writes whole blocks: zero the padding after the data.
                    old[used..len].fill(0);
                }
                let pos = a.buf_start;
                a.buf = Some(fresh);
                a.buf_start = new_start;
                old.map(|b| (b, len, pos, a.size, a.next_offset, a.file.clone()))
            } else {
                None
            }
        };
        if let Some((buf, len, pos, end_size, end_offset, file)) = taken {
            let written = file.write_at(buf, len, pos);
            if let Err(e) = disk_ops::timed(DiskOp::Write, &path, len, written).await {
                return Err(self.fail(LogError::io("write", &path, e)));
            }
            let mut st = self.inner.borrow_mut();
            st.unsynced_bytes += end_size.saturating_sub(st.active.written);
            st.active.written = st.active.written.max(end_size);
            st.written_end = st.written_end.max(end_offset);
            st.check_bounds("write completion");
        }
        self.event.notify(usize::MAX);
        Ok(())
    }

    /// fdatasyncs what was written; everything written before the call started becomes
    /// durable. Requires the sync slot.
    async fn sync_written(&self) -> Result<(), LogError> {
        let path = self.active_path();
        let (file, target, unsynced, dir_unsynced) = {
            let st = self.inner.borrow();
            (
                st.active.file.clone(),
                st.written_end,
                st.unsynced_bytes,
                st.dir_unsynced,
            )
        };
        if self.inner.borrow().durable_end < target {
            if dir_unsynced {
                // The segment's directory entry (from the roll that created it) and its data
                // become durable together; both are needed before any of it counts.
                let both =
                    futures_lite::future::zip(self.storage.sync_dir(&self.dir), file.sync_data());
                let (d, f) = disk_ops::timed(DiskOp::Fdatasync, &path, 0, both).await;
                if let Err(e) = d {
                    return Err(self.fail(LogError::io("sync dir", &self.dir, e)));
                }
                if let Err(e) = f {
                    return Err(self.fail(LogError::io("fdatasync", &path, e)));
                }
            } else if let Err(e) =
                disk_ops::timed(DiskOp::Fdatasync, &path, 0, file.sync_data()).await
            {
                return Err(self.fail(LogError::io("fdatasync", &path, e)));
            }
            let mut st = self.inner.borrow_mut();
            // (A roll in the meantime set the flag for a newer file: leave it.)
            if dir_unsynced && Rc::ptr_eq(&st.active.file, &file) {
                st.dir_unsynced = false;
            }
            st.durable_end = st.durable_end.max(target);
            st.unsynced_bytes = st.unsynced_bytes.saturating_sub(unsynced);
            st.last_sync = Instant::now();
            st.check_bounds("fdatasync completion");
        }
        self.event.notify(usize::MAX);
        Ok(())
    }

    fn fail(&self, err: LogError) -> LogError {
        if matches!(err, LogError::StorageFull(_)) {
            // A full device during a data write leaves it in an unknown state all the same.
            tracing::error!(dir = %self.dir.display(), error = %err, "write hit a full disk; log refuses appends until reopened");
        } else {
            tracing::error!(dir = %self.dir.display(), error = %err, "I/O failed; log refuses appends until reopened");
        }
        self.inner.borrow_mut().failed = true;
        self.event.notify(usize::MAX);
        err
    }

    fn active_path(&self) -> PathBuf {
        let base = self.inner.borrow().active.base;
        self.dir.join(segment_name(base, "log"))
    }

    /// Reserves space for `len` more bytes in the active segment. Reservations grow
    /// geometrically from [`INITIAL_RESERVE_BYTES`] up to `preallocate_bytes`, so a partition
    /// that receives little data reserves little (a thousand idle partitions must not claim
    /// a thousand full steps) while a busy one quickly reaches full-size steps.
    async fn reserve(&self, len: u64) -> Result<(), LogError> {
        let (file, target) = {
            let st = self.inner.borrow();
            let a = &st.active;
            let step = st
                .config
                .preallocate_bytes
                .min(a.allocated.max(INITIAL_RESERVE_BYTES));
            let want = (a.size + len)
                .max(a.allocated + step)
                .min(st.config.segment_bytes.max(a.size + len));
            (a.file.clone(), align_up(want, a.file.alignment()))
        };
        let path = self.active_path();
        file.preallocate(target).await.map_err(|e| {
            let err = LogError::io("fallocate", &path, e);
            tracing::warn!(error = %err, "cannot reserve segment space; append refused");
            err
        })?;
        let mut st = self.inner.borrow_mut();
        if Rc::ptr_eq(&st.active.file, &file) {
            st.active.allocated = st.active.allocated.max(target);
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end.
    async fn roll(&self) -> Result<(), LogError> {
        let _slot = self.acquire_all_io().await?;
        if self.inner.borrow().active.size == 0 {
            return Ok(()); // someone else rolled while we waited
        }
        // No append may land in the old segment from here on: the seal below awaits I/O.
        self.inner.borrow_mut().rolling = true;
        let _rolling = RollGuard { log: self };
        // Seal: everything written and fdatasync'd, then cut to the exact length.
        self.write_pending().await?;
        self.sync_written().await?;
        let (old_file, old_base, size, next, mut index, last_rel, max_ts) = {
            let st = self.inner.borrow();
            let a = &st.active;
            debug_assert_eq!(a.size, a.written, "sealing a segment with unwritten data");
            (
                a.file.clone(),
                a.base,
                a.size,
                a.next_offset,
                a.index.clone(),
                a.last_batch_rel,
                a.max_timestamp,
            )
        };
        let old_path = self.dir.join(segment_name(old_base, "log"));
        let fail = |e| self.fail(LogError::io("seal", &old_path, e));
        old_file.truncate(size).await.map_err(fail)?;
        disk_ops::timed(DiskOp::Fdatasync, &old_path, 0, old_file.sync_data())
            .await
            .map_err(|e| self.fail(LogError::io("seal", &old_path, e)))?;
        index.seal_time(last_rel, max_ts);

        // Size retention at the roll: when the oldest segment is past `retention_bytes` anyway,
        // delete it now and reuse its file for the new segment (when no file is kept already).
        // Periodic retention alone would delete in bursts that the kept files cannot hold;
        // this way, under retention.bytes, every roll in steady state writes into
        // already-written blocks. The directory sync in this deletion must come before the
        // file is reused: were the old name still on disk when new data in the file became
        // durable, a crash would leave an old segment holding newer batches.
        let limit = {
            let st = self.inner.borrow();
            st.config
                .retention_bytes
                .filter(|_| st.config.recycle_segments && st.recycled.is_empty())
        };
        if let Some(limit) = limit {
            let once = std::cell::Cell::new(false);
            let r = self
                .delete_sealed_while(|seg, total| !once.replace(true) && total - seg.size >= limit)
                .await;
            if let Err(e) = r {
                tracing::warn!(dir = %self.dir.display(), error = %e, "retention at roll failed; the next retention check retries");
            }
        }

        let new_path = self.dir.join(segment_name(next, "log"));
        // The sealed segment's file joins the shard's set below: make room first, so opening
        // the next segment's file does not take the process past the set's limit.
        self.files.borrow().make_room();
        let recycled = self.inner.borrow_mut().recycled.pop_front();
        if let Some(r) = recycled {
            // Its old batches stay behind the write position until overwritten; they all have
            // offsets below the log start, so recovery, which stops at the first batch whose
            // offset does not continue the segment, never takes one for new data. Opened
            // before the rename, so a failed open leaves no segment name behind.
            let reused = match self.storage.open_file(&r.path, false).await {
                Ok(f) => self.storage.rename(&r.path, &new_path).await.map(|()| f),
                Err(e) => Err(e),
            };
            match reused {
                Ok(f) => {
                    let mut st = self.inner.borrow_mut();
                    self.install_segment(&mut st, next, size, index, Rc::new(f), r.size);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, path = %r.path.display(), "cannot reuse a deleted segment's file; creating a new one");
                    let _ = self.storage.remove_file_in_background(&r.path).await;
                }
            }
        }
        let created = async {
            let f = self.storage.open_file(&new_path, true).await?;
            let prealloc = self
                .inner
                .borrow()
                .config
                .preallocate_bytes
                .min(INITIAL_RESERVE_BYTES);
            f.preallocate(prealloc).await?;
            Ok::<_, std::io::Error>(f)
        }
        .await;
        let new_file = match created {
            Ok(f) => f,
            Err(e) => {
                let _ = self.storage.remove_file(&new_path).await;
                let mut st = self.inner.borrow_mut();
                st.active.allocated = st.active.size; // truncated: reserve again before appending
                return Err(LogError::io("create segment", &new_path, e));
            }
        };
        let mut st = self.inner.borrow_mut();
        let prealloc = st.config.preallocate_bytes.min(INITIAL_RESERVE_BYTES);
        self.install_segment(&mut st, next, size, index, Rc::new(new_file), prealloc);
        Ok(())
    }

    /// Makes `file` the active segment starting at `next` (`allocated` bytes reserved); the
    /// old active one, `size` bytes with `index`, becomes sealed.
    fn install_segment(
        &self,
        st: &mut Inner<S::File>,
        next: Offset,
        size: u64,
        index: SegmentIndex,
        file: Rc<S::File>,
        allocated: u64,
    ) {
        let align = file.alignment();
        let buf = file.alloc(MIN_WRITE_BUF_BYTES.max(align as usize));
        let new_active = Active {
            base: next,
            file,
            next_offset: next,
            size: 0,
            written: 0,
            allocated,
            buf: Some(buf),
            buf_start: 0,
            index: SegmentIndex::default(),
            bytes_since_index: u64::MAX / 2,
            max_timestamp: -1,
            last_batch_rel: 0,
            first_append_ms: None,
        };
        let old = std::mem::replace(&mut st.active, new_active);
        // Kept open in the shard's set when there is room (recent data is what lagging
        // readers want next); otherwise closed and opened again when read.
        self.files
            .borrow()
            .adopt(self.files_id.get(), old.base, old.file);
        let sealed = Sealed {
            base: old.base,
            next_offset: next,
            size,
            index: RefCell::new(Some(Rc::new(index))),
        };
        st.sealed.insert(old.base, Rc::new(sealed));
        st.unsaved_indexes.push(old.base);
        // The new file's entry is synced with the first fdatasync of its data (`sync_written`).
        st.dir_unsynced = true;
        tracing::debug!(dir = %self.dir.display(), sealed = old.base, next, "segment rolled");
    }

    /// Keeps a segment that retention deletes as the file for a later roll, when recycling is
    /// on, no file is kept yet, and nobody else holds the segment (a reader that still has it
    /// must keep seeing its old bytes). Returns whether it was kept; if not, the caller deletes
    /// it.
    async fn recycle(
        &self,
        seg: Rc<Sealed>,
        file: Option<Rc<SegmentFile<S::File>>>,
    ) -> Result<bool, LogError> {
        let wanted = {
            let st = self.inner.borrow();
            st.config.recycle_segments && st.recycled.len() < MAX_RECYCLED && !st.failed
        };
        if !wanted {
            return Ok(false);
        }
        let Ok(seg) = Rc::try_unwrap(seg) else {
            return Ok(false);
        };
        // A reader that opened the file still holds it (the set's handle is ours now).
        if file.is_some_and(|f| Rc::strong_count(&f) != 1) {
            return Ok(false);
        }
        let from = self.dir.join(segment_name(seg.base, "log"));
        let to = self.dir.join(format!("{:020}{RECYCLE_SUFFIX}", seg.base));
        if let Err(e) = self.storage.rename(&from, &to).await {
            tracing::warn!(error = %e, path = %from.display(), "cannot keep a deleted segment for reuse; deleting it");
            return Ok(false);
        }
        remove_index_files(&self.storage, &self.dir, seg.base).await?;
        self.inner.borrow_mut().recycled.push_back(Recycled {
            path: to,
            size: seg.size,
        });
        Ok(true)
    }

    /// Writes the index files of segments sealed since the last call (see `unsaved_indexes`).
    async fn save_indexes(&self) {
        let bases = std::mem::take(&mut self.inner.borrow_mut().unsaved_indexes);
        for base in bases {
            let index = {
                let st = self.inner.borrow();
                let Some(seg) = st.sealed.get(&base) else {
                    continue; // deleted by retention meanwhile
                };
                let Some(index) = seg.index.borrow().clone() else {
                    continue;
                };
                index
            };
            if let Err(e) = self.write_index(base, &index).await {
                tracing::warn!(error = %e, segment = base, "could not write index files; they will be rebuilt on use");
            }
            if !self.inner.borrow().sealed.contains_key(&base) {
                // Retention removed the segment while its index was being written.
                let _ = remove_index_files(&self.storage, &self.dir, base).await;
            }
        }
    }

    async fn write_index(&self, base: Offset, index: &SegmentIndex) -> std::io::Result<()> {
        self.storage
            .write_file_atomic(
                &self.dir.join(segment_name(base, "index")),
                &index.encode_offsets(),
            )
            .await?;
        self.storage
            .write_file_atomic(
                &self.dir.join(segment_name(base, "timeindex")),
                &index.encode_times(),
            )
            .await
    }

    /// Reads whole batches starting with the one that contains `offset`.
    pub async fn read(
        &self,
        offset: Offset,
        max_offset: Offset,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, LogError> {
        let mut out = ReadResult::default();
        let source = {
            let st = self.inner.borrow();
            let end = st.active.next_offset;
            if offset < st.log_start || offset > end {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    start: st.log_start,
                    end,
                });
            }
            let max_offset = max_offset.min(end);
            if offset >= max_offset {
                return Ok(out);
            }
            let cache = st.cache.borrow();
            if cache.covers(offset) {
                out.bytes = cache.read(offset, max_offset, max_bytes, min_one, &mut out.batches);
                return Ok(out);
            }
            drop(cache);
            if offset >= st.active.base {
                let a = &st.active;
                let pos = a.index.position_for(a.base, offset);
                Ok((a.file.clone(), a.base, a.written, pos))
            } else {
                match st.sealed.range(..=offset).next_back() {
                    Some((_, seg)) => Err(seg.clone()),
                    None => {
                        return Err(LogError::OffsetOutOfRange {
                            offset,
                            start: st.log_start,
                            end,
                        })
                    }
                }
            }
        };
        let max_offset = max_offset.min(self.log_end_offset());
        match source {
            Ok((file, base, limit, pos)) => {
                let path = self.dir.join(segment_name(base, "log"));
                read_batches(
                    &*file, &path, pos, limit, offset, max_offset, max_bytes, min_one, &mut out,
                )
                .await?;
            }
            Err(seg) => {
                let index = self.sealed_index(&seg).await?;
                let pos = index.position_for(seg.base, offset);
                let file = self.sealed_file(&seg).await?;
                let path = self.dir.join(segment_name(seg.base, "log"));
                read_batches(
                    &*file, &path, pos, seg.size, offset, max_offset, max_bytes, min_one, &mut out,
                )
                .await?;
            }
        }
        Ok(out)
    }

    async fn sealed_index(&self, seg: &Rc<Sealed>) -> Result<Rc<SegmentIndex>, LogError> {
        if let Some(idx) = seg.index.borrow().as_ref() {
            return Ok(idx.clone());
        }
        let span = seg.next_offset - seg.base;
        let file = self.sealed_file(seg).await?;
        let idx = match load_index(&self.storage, &self.dir, seg.base, seg.size, span).await {
            Some(idx) if verify_last_entry(&*file, seg.base, &idx).await => idx,
            _ => {
                let path = self.dir.join(segment_name(seg.base, "log"));
                tracing::warn!(segment = %path.display(), "index missing or inconsistent; rebuilding from the segment");
                let interval = self.inner.borrow().config.index_interval_bytes;
                let scan = scan_segment(&*file, &path, seg.base, seg.size, interval).await?;
                if let Some(reason) = scan.stop {
                    tracing::error!(segment = %path.display(), %reason, valid = scan.valid_end, "sealed segment has invalid data");
                }
                let mut idx = scan.index;
                idx.seal_time(scan.last_batch_rel, scan.max_timestamp);
                if let Err(e) = self.write_index(seg.base, &idx).await {
                    tracing::warn!(error = %e, "could not persist rebuilt index");
                }
                idx
            }
        };
        let idx = Rc::new(idx);
        *seg.index.borrow_mut() = Some(idx.clone());
        Ok(idx)
    }

    /// First offset whose record timestamp is at least `ts` (exact for uncompressed batches; for
    /// compressed ones, the batch's first offset and its max timestamp).
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(Offset, i64)>, LogError> {
        let sealed: Vec<Rc<Sealed>> = self.inner.borrow().sealed.values().cloned().collect();
        let log_start = self.log_start_offset();
        for seg in sealed {
            let idx = self.sealed_index(&seg).await?;
            if idx.max_timestamp().is_some_and(|m| m >= ts) {
                let start = idx.scan_start_for_time(seg.base, ts).max(log_start);
                if let Some(found) = self.scan_for_time(start, seg.next_offset, ts).await? {
                    return Ok(Some(found));
                }
            }
        }
        let (start, end) = {
            let st = self.inner.borrow();
            let a = &st.active;
            if a.max_timestamp < ts {
                return Ok(None);
            }
            (
                a.index.scan_start_for_time(a.base, ts).max(log_start),
                committed_end(&st),
            )
        };
        self.scan_for_time(start, end, ts).await
    }

    async fn scan_for_time(
        &self,
        mut offset: Offset,
        end: Offset,
        ts: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        while offset < end {
            let r = self.read(offset, end, SCAN_CHUNK_BYTES, true).await?;
            if r.batches.is_empty() {
                break;
            }
            for b in &r.batches {
                let info = b.info()?;
                if info.next_offset() <= offset {
                    continue;
                }
                if info.max_timestamp >= ts {
                    let exact = batch::first_record_at_or_after(&b.to_bytes(), ts)
                        .filter(|&(o, _)| o >= offset);
                    return Ok(Some(
                        exact.unwrap_or((info.base_offset.max(offset), info.max_timestamp)),
                    ));
                }
                offset = info.next_offset();
            }
        }
        Ok(None)
    }

    /// (epoch, end offset) for OffsetForLeaderEpoch: the end of the largest epoch <= `epoch`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, Offset)> {
        let st = self.inner.borrow();
        let i = st.epochs.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return None;
        }
        let (e, _) = st.epochs[i - 1];
        let end = st
            .epochs
            .get(i)
            .map_or(st.active.next_offset, |&(_, start)| start);
        Some((e, end))
    }

    /// The leader-epoch table: (epoch, first offset of that epoch), ascending.
    pub fn leader_epochs(&self) -> Vec<(i32, Offset)> {
        self.inner.borrow().epochs.clone()
    }

    /// Truncations (`truncate_to`) since the log was opened: a caller that appended, awaited
    /// something else, and is about to wait for its offsets compares this with the count at
    /// its append to know whether they may have been replaced.
    pub fn truncation_count(&self) -> u64 {
        self.inner.borrow().truncations
    }

    /// The latest leader epoch recorded in the log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.borrow().epochs.last().map(|&(e, _)| e)
    }

    /// Moves the log start forward (Kafka DeleteRecords); returns the new log start.
    pub async fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let _bounds = self.lock_bounds().await;
        let (start, committed) = {
            let st = self.inner.borrow();
            (st.log_start, committed_end(&st))
        };
        if offset > committed || offset < 0 {
            let end = self.log_end_offset();
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        if offset <= start {
            return Ok(start);
        }
        let p = self.dir.join(LOG_START_FILE);
        self.storage
            .write_file_atomic(&p, &control::encode(&offset.to_be_bytes()))
            .await
            .map_err(|e| LogError::io("write", &p, e))?;
        {
            let mut st = self.inner.borrow_mut();
            st.log_start = offset;
            st.check_bounds("DeleteRecords");
        }
        self.delete_sealed_while(|seg, _| seg.next_offset <= offset)
            .await?;
        Ok(offset)
    }

    /// Deletes whole sealed segments past retention time or size.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let _bounds = self.lock_bounds().await;
        let (retention_ms, retention_bytes) = {
            let st = self.inner.borrow();
            (st.config.retention_ms, st.config.retention_bytes)
        };
        let mut report = RetentionReport::default();
        if let Some(ms) = retention_ms {
            let sealed: Vec<Rc<Sealed>> = self.inner.borrow().sealed.values().cloned().collect();
            let mut expired_until = None;
            for seg in sealed {
                let idx = self.sealed_index(&seg).await?;
                match idx.max_timestamp() {
                    Some(t) if t >= 0 && now_ms - t > ms => expired_until = Some(seg.base),
                    _ => break,
                }
            }
            if let Some(last) = expired_until {
                let r = self.delete_sealed_while(|seg, _| seg.base <= last).await?;
                report.add(r);
            }
        }
        if let Some(limit) = retention_bytes {
            let r = self
                .delete_sealed_while(|seg, total| total - seg.size >= limit)
                .await?;
            report.add(r);
        }
        Ok(report)
    }

    /// Deletes the oldest sealed segments while `pred(segment, total_size)` holds.
    async fn delete_sealed_while(
        &self,
        pred: impl Fn(&Sealed, u64) -> bool,
    ) -> Result<RetentionReport, LogError> {
        let mut report = RetentionReport::default();
        let mut victims = Vec::new();
        {
            let mut st = self.inner.borrow_mut();
            // The log's data only, as Kafka counts it. Kept files are not data: counting them
            // made every check that kept a file delete (and free) one more segment.
            let mut total = st.sealed.values().map(|s| s.size).sum::<u64>() + st.active.size;
            while let Some((_, seg)) = st.sealed.first_key_value() {
                if !pred(seg, total) {
                    break;
                }
                total -= seg.size;
                if let Some((_, seg)) = st.sealed.pop_first() {
                    victims.push(seg);
                }
            }
            let first = st.sealed.keys().next().copied().unwrap_or(st.active.base);
            st.log_start = st.log_start.max(first);
            st.check_bounds("segment deletion");
        }
        for seg in victims {
            let (base, size) = (seg.base, seg.size);
            // Out of the open set: its descriptor closes once no reader holds it.
            let file = self.files.borrow().forget(self.files_id.get(), base);
            let kept = self.recycle(seg, file).await?;
            if kept {
                report.segments_recycled += 1;
            } else {
                remove_segment_files(&self.storage, &self.dir, base).await?;
            }
            report.segments_deleted += 1;
            report.bytes_deleted += size;
            tracing::info!(dir = %self.dir.display(), segment = base, bytes = size, kept_for_reuse = kept, "segment deleted by retention");
        }
        if report.segments_deleted > 0 {
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(|e| LogError::io("sync dir", &self.dir, e))?;
        }
        Ok(report)
    }

    /// Clean shutdown: flush, persist the active segment's indexes and the clean marker.
    pub async fn close(self) -> Result<(), LogError> {
        self.files.borrow().forget_log(self.files_id.get());
        self.flush().await?;
        self.save_indexes().await;
        let _slot = self.acquire_all_io().await?;
        self.write_pending().await?;
        self.sync_written().await?;
        let (base, size, next, index) = {
            let st = self.inner.borrow();
            let a = &st.active;
            (a.base, a.size, a.next_offset, a.index.clone())
        };
        let path = self.active_path();
        let file = self.inner.borrow().active.file.clone();
        file.truncate(size)
            .await
            .map_err(|e| LogError::io("truncate", &path, e))?;
        file.sync_data()
            .await
            .map_err(|e| LogError::io("fdatasync", &path, e))?;
        self.write_index(base, &index)
            .await
            .map_err(|e| LogError::io("write index", &path, e))?;
        let mut marker = Vec::with_capacity(28);
        marker.extend_from_slice(MARKER_MAGIC);
        marker.extend_from_slice(&base.to_be_bytes());
        marker.extend_from_slice(&size.to_be_bytes());
        marker.extend_from_slice(&next.to_be_bytes());
        let p = self.dir.join(CLEAN_MARKER);
        self.storage
            .write_file_atomic(&p, &control::encode(&marker))
            .await
            .map_err(|e| LogError::io("write", &p, e))?;
        Ok(())
    }

    /// Deletes the log's files and directory.
    pub async fn remove(self) -> Result<(), LogError> {
        self.files.borrow().forget_log(self.files_id.get());
        self.storage
            .remove_dir_all(&self.dir)
            .await
            .map_err(|e| LogError::io("remove dir", &self.dir, e))?;
        if let Some(parent) = self.dir.parent() {
            self.storage
                .sync_dir(parent)
                .await
                .map_err(|e| LogError::io("sync dir", parent, e))?;
        }
        Ok(())
    }
}

impl<S: Storage> Drop for PartitionLog<S> {
    fn drop(&mut self) {
        // Close the sealed files the shard's set keeps for this log.
        self.files.borrow().forget_log(self.files_id.get());
    }
}

/// Whether the interval policy's byte or time threshold has been crossed.
fn sync_due<F: StorageFile>(st: &Inner<F>) -> bool {
    match st.config.flush {
        FlushPolicy::EveryBatch => true,
        FlushPolicy::Interval { bytes, ms } => {
            let pending = st.active.size - st.active.written;
            (bytes > 0 && st.unsynced_bytes + pending >= bytes)
                || (ms > 0 && st.last_sync.elapsed().as_millis() as u64 >= ms)
        }
        FlushPolicy::Never => false,
    }
}

impl<F: StorageFile> Inner<F> {
    /// Panics (in release builds too) unless log start <= written end, durable end <=
    /// written end <= log end, and the committed end (durable or written, by policy) lies
    /// between the durable and written ends. A broken bound would mean acknowledging or
    /// serving offsets that are not there; stopping beats corrupting. Four comparisons, no
    /// work per byte. (Log start is not bounded by the durable end: under the non-fsync
    /// policies DeleteRecords may move it up to the written end, and a flush policy change
    /// does not move it back.)
    fn check_bounds(&self, after: &'static str) {
        let (start, durable, written, end) = (
            self.log_start,
            self.durable_end,
            self.written_end,
            self.active.next_offset,
        );
        let committed = committed_end(self);
        assert!(
            start <= written && durable <= committed && committed <= written && written <= end,
            "log bounds broken after {after}: log start {start}, durable end {durable}, \
             committed end {committed}, written end {written}, log end {end} \
             (need start <= written, durable <= committed <= written <= end)"
        );
    }
}

impl<F: StorageFile> Inner<F> {
    /// The log end a truncation after truncation number `since` left below `wanted` (the
    /// lowest such), if any: the offsets a waiter wanted are gone. When the history no longer
    /// reaches back to `since`, the current end stands in (conservative: an error, never a
    /// false success).
    fn truncated_below(&self, since: u64, wanted: Offset) -> Option<Offset> {
        if self.truncations == since {
            return None;
        }
        let complete = self
            .truncation_ends
            .front()
            .is_some_and(|&(n, _)| n <= since + 1);
        let lowest = self
            .truncation_ends
            .iter()
            .filter(|&&(n, _)| n > since)
            .map(|&(_, end)| end)
            .min();
        match lowest {
            Some(end) if end < wanted => Some(end),
            _ if !complete => Some(self.active.next_offset),
            _ => None,
        }
    }
}

fn committed_end<F: StorageFile>(st: &Inner<F>) -> Offset {
    match st.config.flush {
        FlushPolicy::EveryBatch => st.durable_end,
        _ => st.written_end,
    }
}

/// Removes a segment's data and index files (missing ones are fine).
async fn remove_segment_files<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
) -> Result<(), LogError> {
    let p = dir.join(segment_name(base, "log"));
    storage
        .remove_file_in_background(&p)
        .await
        .map_err(|e| LogError::io("remove", &p, e))?;
    remove_index_files(storage, dir, base).await
}

/// Removes a segment's offset and time index files.
async fn remove_index_files<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
) -> Result<(), LogError> {
    for ext in ["index", "timeindex"] {
        let p = dir.join(segment_name(base, ext));
        storage
            .remove_file(&p)
            .await
            .map_err(|e| LogError::io("remove", &p, e))?;
    }
    Ok(())
}

/// Segment base offsets among a directory's file names, ascending.
fn segment_bases(names: &[String]) -> Vec<Offset> {
    let mut bases: Vec<Offset> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".log"))
        .filter(|s| s.len() == 20)
        .filter_map(|s| s.parse::<Offset>().ok())
        .collect();
    bases.sort_unstable();
    bases
}

async fn sorted_segment_bases<S: Storage>(
    storage: &S,
    dir: &Path,
) -> Result<Vec<Offset>, LogError> {
    let names = storage
        .list_dir(dir)
        .await
        .map_err(|e| LogError::io("list dir", dir, e))?;
    Ok(segment_bases(&names))
}

fn decode_marker(b: &[u8]) -> Option<(Offset, u64, Offset)> {
    if b.len() != 28 || &b[..4] != MARKER_MAGIC {
        return None;
    }
    let base = i64::from_be_bytes(b[4..12].try_into().ok()?);
    let size = u64::from_be_bytes(b[12..20].try_into().ok()?);
    let next = i64::from_be_bytes(b[20..28].try_into().ok()?);
    Some((base, size, next))
}

fn encode_epochs(epochs: &[(i32, Offset)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(epochs.len() * 12);
    for &(e, o) in epochs {
        v.extend_from_slice(&e.to_be_bytes());
        v.extend_from_slice(&o.to_be_bytes());
    }
    v
}

fn decode_epochs(b: &[u8]) -> Vec<(i32, Offset)> {
    b.chunks_exact(12)
        .map(|c| {
            let e = i32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let o = i64::from_be_bytes([c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11]]);
            (e, o)
        })
        .collect()
}

async fn load_index<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
    size: u64,
    span: Offset,
) -> Option<SegmentIndex> {
    let offsets = storage
        .read_file(&dir.join(segment_name(base, "index")))
        .await
        .ok()??;
    let times = storage
        .read_file(&dir.join(segment_name(base, "timeindex")))
        .await
        .ok()??;
    match SegmentIndex::decode(&offsets, &times, size, span) {
        Ok(idx) => Some(idx),
        Err(e) => {
            tracing::warn!(segment = base, error = %e, "index file rejected");
            None
        }
    }
}

/// Checks that the last index entry points at a batch header with the offset it claims.
async fn verify_last_entry<F: StorageFile>(file: &F, base: Offset, idx: &SegmentIndex) -> bool {
    let Some(&(rel, pos)) = idx.offsets.last() else {
        return true;
    };
    match file.read_at(u64::from(pos), HEADER_BYTES).await {
        Ok(b) => batch::peek(&b)
            .is_ok_and(|h| h.base_offset == base + i64::from(rel) && b.get(16) == Some(&2)),
        Err(_) => false,
    }
}

/// Validates a segment from its start, batch by batch, and builds its index.
async fn scan_segment<F: StorageFile>(
    file: &F,
    path: &Path,
    base: Offset,
    limit: u64,
    interval: u32,
) -> Result<ScanOutcome, LogError> {
    let mut out = ScanOutcome {
        valid_end: 0,
        next_offset: base,
        index: SegmentIndex::default(),
        max_timestamp: -1,
        last_batch_rel: 0,
        stop: None,
    };
    let mut since_index = u64::MAX / 2;
    let mut chunk = Bytes::new();
    let mut chunk_pos = 0u64;
    let mut pos = 0u64;
    while pos < limit {
        let rel = (pos - chunk_pos) as usize;
        if rel + HEADER_BYTES > chunk.len() {
            let len = SCAN_CHUNK_BYTES.min((limit - pos) as usize);
            chunk = file
                .read_at(pos, len)
                .await
                .map_err(|e| LogError::io("read", path, e))?;
            chunk_pos = pos;
            if chunk.len() < HEADER_BYTES {
                out.stop = Some(format!(
                    "{} trailing bytes too short for a batch header",
                    limit - pos
                ));
                break;
            }
            continue;
        }
        let info = match batch::peek(&chunk[rel..]) {
            Ok(i) => i,
            Err(e) => {
                out.stop = Some(e.to_string());
                break;
            }
        };
        if info.size as u64 > limit - pos || info.size > (u32::MAX as usize) {
            out.stop = Some(format!(
                "batch at {pos} claims {} bytes, past the end",
                info.size
            ));
            break;
        }
        if rel + info.size > chunk.len() {
            chunk = file
                .read_at(
                    pos,
                    info.size.max(SCAN_CHUNK_BYTES.min((limit - pos) as usize)),
                )
                .await
                .map_err(|e| LogError::io("read", path, e))?;
            chunk_pos = pos;
            if chunk.len() < info.size {
                out.stop = Some(format!("batch at {pos} is cut short"));
                break;
            }
            continue;
        }
        let bytes = &chunk[rel..rel + info.size];
        if let Err(e) = batch::validate(bytes, usize::MAX) {
            out.stop = Some(format!("batch at {pos}: {e}"));
            break;
        }
        if info.base_offset != out.next_offset {
            out.stop = Some(format!(
                "batch at {pos} has offset {} where {} was expected",
                info.base_offset, out.next_offset
            ));
            break;
        }
        let rel_off = (info.base_offset - base) as u32;
        out.max_timestamp = out.max_timestamp.max(info.max_timestamp);
        if since_index >= u64::from(interval) {
            out.index.push(rel_off, pos as u32, out.max_timestamp);
            since_index = 0;
        }
        since_index += info.size as u64;
        out.last_batch_rel = rel_off;
        out.next_offset = info.next_offset();
        pos += info.size as u64;
        out.valid_end = pos;
    }
    Ok(out)
}

/// Reads batches from one segment file between `pos` and `limit`.
#[allow(clippy::too_many_arguments)]
async fn read_batches<F: StorageFile>(
    file: &F,
    path: &Path,
    mut pos: u64,
    limit: u64,
    offset: Offset,
    max_offset: Offset,
    max_bytes: usize,
    min_one: bool,
    out: &mut ReadResult,
) -> Result<(), LogError> {
    let read_ahead = max_bytes.clamp(MIN_READ_BYTES, 16 << 20);
    let mut chunk = Bytes::new();
    let mut chunk_pos = pos;
    let corrupt = |position: u64, reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        position,
        reason,
    };
    while pos < limit {
        let rel = (pos - chunk_pos) as usize;
        if rel + HEADER_BYTES > chunk.len() {
            let len = read_ahead.min((limit - pos) as usize).max(HEADER_BYTES);
            chunk = file
                .read_at(pos, len)
                .await
                .map_err(|e| LogError::io("read", path, e))?;
            chunk_pos = pos;
            if chunk.len() < HEADER_BYTES {
                return Err(corrupt(pos, "segment ends inside a batch header".into()));
            }
            continue;
        }
        let info = batch::peek(&chunk[rel..]).map_err(|e| corrupt(pos, e.to_string()))?;
        if info.size as u64 > limit - pos {
            return Err(corrupt(
                pos,
                format!("batch of {} bytes runs past the segment end", info.size),
            ));
        }
        if info.next_offset() <= offset {
            pos += info.size as u64;
            continue;
        }
        if info.base_offset >= max_offset {
            break;
        }
        if out.bytes + info.size > max_bytes && !(min_one && out.batches.is_empty()) {
            break;
        }
        if rel + info.size > chunk.len() {
            chunk = file
                .read_at(pos, info.size.max(read_ahead.min((limit - pos) as usize)))
                .await
                .map_err(|e| LogError::io("read", path, e))?;
            chunk_pos = pos;
            if chunk.len() < info.size {
                return Err(corrupt(pos, "batch cut short".into()));
            }
            continue;
        }
        let b = chunk.slice(rel..rel + info.size);
        let stored = u32::from_be_bytes([b[17], b[18], b[19], b[20]]);
        if batch::compute_crc(&b) != stored || b[16] != 2 {
            return Err(corrupt(pos, "CRC mismatch on read".into()));
        }
        out.bytes += b.len();
        out.batches.push(StoredBatch::whole(b));
        pos += info.size as u64;
    }
    Ok(())
}

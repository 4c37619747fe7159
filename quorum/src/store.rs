//! The durable raft store: raft-rs's [`raft::Storage`] over files reached through the engine's
//! [`Storage`] trait, so the same code runs on the glommio disk and on the fault-injecting
//! `SimStorage`.
//!
//! Two files live in the quorum directory:
//!
//! * `snapshot`, replaced atomically ([`Storage::write_file_atomic`]): the last state-machine
//!   snapshot (index, term, conf state, opaque bytes) and the generation of the log file that
//!   continues it. Replacing it is the commit point of a compaction.
//! * `log-<generation>`, append-only records: a header naming the generation, then raft
//!   entries and hard states (term, vote, commit) in the order raft produced them. Each record
//!   is `u32 LE body length, u32 LE CRC32C of the body, body = version byte, kind byte,
//!   fields`. Recovery reads records up to the first one that is short, oversized or fails its
//!   CRC (a torn tail); unless what follows is the zero padding of the last block, it
//!   truncates the file there and syncs the truncation, so stale bytes can never later line
//!   up as records. An entry whose index is at or below the last one replaces
//!   the conflicting suffix, as raft's overwrite did when it was written.
//!
//! Writes are direct I/O: the last partial block is kept in memory and rewritten, padded with
//! zeros, together with the next records. Compaction after a snapshot writes the surviving
//! tail (and the current hard state) to `log-<generation+1>`, syncs it and its directory,
//! then replaces `snapshot`; files of other generations are removed. Everything raft reads
//! (`entries`, `term`) comes from memory: the entries since the snapshot, which snapshots keep
//! short, so [`raft::Storage`] never blocks.
//!
//! The conf state is persisted in the snapshot only: on restart raft starts from the snapshot's
//! configuration and the driver re-applies the conf changes among the replayed entries, exactly
//! as the state machine itself is rebuilt.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};
use shardlog_engine::io::{align_down, align_up};
use shardlog_engine::{Storage, StorageFile};
use tracing::{info, warn};

use crate::error::StoreError;

/// Largest entry (data plus context) a record holds. A format constant, not a setting: a
/// smaller limit on restart would take valid records for a torn tail.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// Largest snapshot (state-machine bytes) the store writes or accepts.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;
/// Format version of log records and of the snapshot file.
pub const FORMAT_VERSION: u8 = 1;
/// Most node ids in one list of a conf state.
const MAX_CONF_IDS: usize = 1024;
/// Record header: body length and CRC.
const RECORD_HEADER: usize = 8;
/// Body bytes around an entry's data and context.
const ENTRY_FIXED: usize = 2 + 8 + 8 + 1 + 4 + 4;
const MAX_RECORD_BODY: usize = ENTRY_FIXED + MAX_ENTRY_BYTES;
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLQS";
const SNAPSHOT_FILE: &str = "snapshot";
const LOG_PREFIX: &str = "log-";
/// Reads of the log at open go in chunks of this size.
const READ_CHUNK: usize = 1024 * 1024;

const KIND_HEADER: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_HARD_STATE: u8 = 3;

fn log_name(gen: u64) -> String {
    format!("{LOG_PREFIX}{gen:020}")
}

/// A snapshot message body at `index`/`term` with `conf` and the state machine's `data`: what
/// [`RaftStore::install_snapshot`] takes (a store seeded from state kept elsewhere before).
pub fn snapshot_at(index: u64, term: u64, conf: ConfState, data: Bytes) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().set_conf_state(conf);
    s.data = data;
    s
}

/// The durable raft log and state of one quorum member.
pub struct RaftStore<S: Storage> {
    storage: S,
    dir: PathBuf,
    file: S::File,
    gen: u64,
    /// Bytes of valid records in the log file.
    len: u64,
    /// The bytes of the last partial block (`len` rounded down to the alignment, up to `len`),
    /// rewritten with the next append.
    tail: Vec<u8>,
    /// Written records not yet synced.
    dirty: bool,
    hard: HardState,
    snap_meta: SnapshotMetadata,
    snap_data: Bytes,
    /// Entries after the snapshot index, contiguous.
    entries: Vec<Entry>,
}

/// What [`RaftStore::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The store was created now (no snapshot file existed).
    pub created: bool,
    /// Bytes of torn or stale tail cut off the log file (zero padding is left alone).
    pub truncated_bytes: u64,
    pub snapshot_index: u64,
    pub last_index: u64,
}

impl<S: Storage> RaftStore<S> {
    /// Opens the store in `dir`, creating it with `initial_conf` (the bootstrap voters and
    /// learners; empty for a node that waits to be added) when it holds none yet.
    pub async fn open(
        storage: S,
        dir: &Path,
        initial_conf: ConfState,
    ) -> Result<(Self, OpenReport), StoreError> {
        for created in storage
            .create_dir_all(dir)
            .await
            .map_err(StoreError::io(dir))?
        {
            if let Some(parent) = created.parent() {
                storage
                    .sync_dir(parent)
                    .await
                    .map_err(StoreError::io(parent))?;
            }
        }
        let snap_path = dir.join(SNAPSHOT_FILE);
        let raw = storage
            .read_file(&snap_path)
            .await
            .map_err(StoreError::io(&snap_path))?;
        let mut report = OpenReport::default();
        let (meta, data, gen) = match raw {
            Some(raw) => decode_snapshot_file(&raw, &snap_path)?,
            None => {
                // A fresh store: the log file first, then the snapshot file naming it (the
                // commit point; a crash before it leaves no snapshot, so this runs again).
                let mut meta = SnapshotMetadata::default();
                meta.set_conf_state(initial_conf);
                let gen = 1;
                Self::write_new_log(&storage, dir, gen, &HardState::default(), &[]).await?;
                let file = encode_snapshot_file(&meta, &[], gen)?;
                storage
                    .write_file_atomic(&snap_path, &file)
                    .await
                    .map_err(StoreError::io(&snap_path))?;
                report.created = true;
                (meta, Bytes::new(), gen)
            }
        };
        // Files of other generations are leftovers of a compaction that crashed before or
        // after its commit point.
        let names = storage.list_dir(dir).await.map_err(StoreError::io(dir))?;
        let mut removed = false;
        for name in names {
            let stale_log = name.starts_with(LOG_PREFIX) && name != log_name(gen);
            if stale_log || name.ends_with(".tmp") {
                let p = dir.join(&name);
                storage.remove_file(&p).await.map_err(StoreError::io(&p))?;
                removed = true;
            }
        }
        if removed {
            storage.sync_dir(dir).await.map_err(StoreError::io(dir))?;
        }
        let path = dir.join(log_name(gen));
        let file = storage
            .open_file(&path, false)
            .await
            .map_err(StoreError::io(&path))?;
        let size = file.size().await.map_err(StoreError::io(&path))?;
        let mut bytes = Vec::with_capacity(size as usize);
        while (bytes.len() as u64) < size {
            let chunk = file
                .read_at(bytes.len() as u64, READ_CHUNK)
                .await
                .map_err(StoreError::io(&path))?;
            if chunk.is_empty() {
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        let replay = replay_log(&bytes, gen, meta.index, &path)?;
        // Zeros after the last record are the padding of its block; anything else is a torn
        // or stale tail, cut off durably so it can never line up behind later records.
        if bytes[replay.valid_len..].iter().any(|b| *b != 0) {
            report.truncated_bytes = size - replay.valid_len as u64;
            warn!(
                path = %path.display(),
                valid = replay.valid_len,
                size,
                "quorum log: cutting a torn or stale tail"
            );
            file.truncate(replay.valid_len as u64)
                .await
                .map_err(StoreError::io(&path))?;
            file.sync_data().await.map_err(StoreError::io(&path))?;
        }
        let align = file.alignment() as usize;
        let tail_start = align_down(replay.valid_len as u64, align as u64) as usize;
        let mut hard = replay.hard.unwrap_or_default();
        // The snapshot's index is committed by definition.
        hard.commit = hard.commit.max(meta.index);
        hard.term = hard.term.max(meta.term);
        let store = RaftStore {
            tail: bytes[tail_start..replay.valid_len].to_vec(),
            storage,
            dir: dir.to_path_buf(),
            file,
            gen,
            len: replay.valid_len as u64,
            dirty: false,
            hard,
            snap_meta: meta,
            snap_data: data,
            entries: replay.entries,
        };
        report.snapshot_index = store.snap_meta.index;
        report.last_index = store.last();
        info!(
            dir = %store.dir.display(),
            generation = gen,
            snapshot = report.snapshot_index,
            last = report.last_index,
            term = store.hard.term,
            commit = store.hard.commit,
            "quorum log opened"
        );
        Ok((store, report))
    }

    async fn write_new_log(
        storage: &S,
        dir: &Path,
        gen: u64,
        hard: &HardState,
        entries: &[Entry],
    ) -> Result<(S::File, u64, Vec<u8>), StoreError> {
        let path = dir.join(log_name(gen));
        let file = storage
            .open_file(&path, true)
            .await
            .map_err(StoreError::io(&path))?;
        file.truncate(0).await.map_err(StoreError::io(&path))?;
        let mut buf = Vec::new();
        encode_header(&mut buf, gen);
        encode_hard_state(&mut buf, hard);
        for e in entries {
            encode_entry(&mut buf, e)?;
        }
        let tail = write_records(&file, 0, &[], &buf)
            .await
            .map_err(StoreError::io(&path))?;
        file.sync_data().await.map_err(StoreError::io(&path))?;
        storage.sync_dir(dir).await.map_err(StoreError::io(dir))?;
        Ok((file, buf.len() as u64, tail))
    }

    fn path(&self) -> PathBuf {
        self.dir.join(log_name(self.gen))
    }

    fn first(&self) -> u64 {
        self.snap_meta.index + 1
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snap_meta.index, |e| e.index)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }

    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.snap_meta
    }

    pub fn snapshot_data(&self) -> &Bytes {
        &self.snap_data
    }

    /// Entries held in memory (after the snapshot).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of records in the current log file.
    pub fn log_bytes(&self) -> u64 {
        self.len
    }

    /// Appends `entries` (overwriting a conflicting suffix) and then `hard` if given, as one
    /// write; synced when `sync` is set, else left for a later [`RaftStore::sync`].
    pub async fn append(
        &mut self,
        entries: &[Entry],
        hard: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        if let Some(first) = entries.first() {
            if first.index < self.first() || first.index > self.last() + 1 {
                return Err(StoreError::NotContiguous {
                    first: first.index,
                    first_index: self.first(),
                    last_index: self.last(),
                });
            }
            if entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
                return Err(StoreError::NotContiguous {
                    first: first.index,
                    first_index: self.first(),
                    last_index: self.last(),
                });
            }
        }
        let mut buf = Vec::new();
        for e in entries {
            encode_entry(&mut buf, e)?;
        }
        if let Some(hs) = hard {
            encode_hard_state(&mut buf, hs);
        }
        if !buf.is_empty() {
            let path = self.path();
            self.tail = write_records(&self.file, self.len, &self.tail, &buf)
                .await
                .map_err(StoreError::io(&path))?;
            self.len += buf.len() as u64;
            self.dirty = true;
        }
        if let Some(first) = entries.first() {
            let keep = (first.index - self.first()) as usize;
            self.entries.truncate(keep);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard {
            self.hard = hs.clone();
        }
        if sync {
            self.sync().await?;
        }
        Ok(())
    }

    /// Makes every written record durable.
    pub async fn sync(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            let path = self.path();
            self.file.sync_data().await.map_err(StoreError::io(&path))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Installs a snapshot received from the leader: it replaces the whole log; the hard state
    /// `hard` (raft's, from the same Ready) is written with it.
    pub async fn install_snapshot(
        &mut self,
        snapshot: &Snapshot,
        hard: Option<&HardState>,
    ) -> Result<(), StoreError> {
        let meta = snapshot.get_metadata().clone();
        if meta.index < self.snap_meta.index {
            return Err(StoreError::SnapshotOutOfDate {
                index: meta.index,
                current: self.snap_meta.index,
            });
        }
        let mut hs = hard.cloned().unwrap_or_else(|| self.hard.clone());
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        self.rewrite(meta, snapshot.data.clone(), Vec::new(), hs)
            .await
    }

    /// Takes a local snapshot at `index` (applied, so committed and durable): `data` is the
    /// state machine as of `index`, `conf` the configuration then. Entries up to `index` are
    /// dropped from memory and disk.
    pub async fn compact(
        &mut self,
        index: u64,
        conf: ConfState,
        data: Bytes,
    ) -> Result<(), StoreError> {
        if index <= self.snap_meta.index {
            return Ok(());
        }
        let term = raft::Storage::term(self, index).map_err(|e| StoreError::Corrupt {
            path: self.path(),
            what: format!("no term for snapshot index {index}: {e}"),
        })?;
        // The hard state's commit must cover the snapshot on disk before the snapshot does.
        self.sync().await?;
        let mut meta = SnapshotMetadata::default();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf);
        let keep = self.entries[(index - self.snap_meta.index) as usize..].to_vec();
        let hs = self.hard.clone();
        self.rewrite(meta, data, keep, hs).await
    }

    async fn rewrite(
        &mut self,
        meta: SnapshotMetadata,
        data: Bytes,
        keep: Vec<Entry>,
        hard: HardState,
    ) -> Result<(), StoreError> {
        if data.len() > MAX_SNAPSHOT_BYTES {
            return Err(StoreError::SnapshotTooLarge {
                size: data.len(),
                max: MAX_SNAPSHOT_BYTES,
            });
        }
        let gen = self.gen + 1;
        let file_bytes = encode_snapshot_file(&meta, &data, gen)?;
        let (file, len, tail) =
            Self::write_new_log(&self.storage, &self.dir, gen, &hard, &keep).await?;
        let snap_path = self.dir.join(SNAPSHOT_FILE);
        self.storage
            .write_file_atomic(&snap_path, &file_bytes)
            .await
            .map_err(StoreError::io(&snap_path))?;
        // Committed: from here on the new generation is the log.
        let old = self.path();
        self.file = file;
        self.gen = gen;
        self.len = len;
        self.tail = tail;
        self.dirty = false;
        self.hard = hard;
        self.snap_meta = meta;
        self.snap_data = data;
        self.entries = keep;
        if let Err(e) = self.storage.remove_file(&old).await {
            // Harmless: the next open removes files of other generations.
            warn!(path = %old.display(), error = %e, "quorum log: could not remove the old generation");
        }
        Ok(())
    }
}

/// Writes `records` after `len` valid bytes whose last partial block is `tail`, as aligned
/// blocks; returns the new partial block.
async fn write_records<F: StorageFile>(
    file: &F,
    len: u64,
    tail: &[u8],
    records: &[u8],
) -> std::io::Result<Vec<u8>> {
    let align = file.alignment();
    let start = align_down(len, align);
    debug_assert_eq!((len - start) as usize, tail.len());
    let used = tail.len() + records.len();
    let total = align_up(used as u64, align) as usize;
    let mut buf = file.alloc(total);
    buf[..tail.len()].copy_from_slice(tail);
    buf[tail.len()..used].copy_from_slice(records);
    buf[used..total].fill(0);
    let end = len + records.len() as u64;
    let new_tail_start = (align_down(end, align) - start) as usize;
    let new_tail = buf[new_tail_start..used].to_vec();
    file.write_at(buf, total, start).await?;
    Ok(new_tail)
}

fn push_record(out: &mut Vec<u8>, kind: u8, fields: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    out.push(FORMAT_VERSION);
    out.push(kind);
    fields(out);
    let body = &out[at + RECORD_HEADER..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

fn encode_header(out: &mut Vec<u8>, gen: u64) {
    push_record(out, KIND_HEADER, |b| {
        b.extend_from_slice(&gen.to_le_bytes())
    });
}

fn encode_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    push_record(out, KIND_HARD_STATE, |b| {
        b.extend_from_slice(&hs.term.to_le_bytes());
        b.extend_from_slice(&hs.vote.to_le_bytes());
        b.extend_from_slice(&hs.commit.to_le_bytes());
    });
}

fn encode_entry(out: &mut Vec<u8>, e: &Entry) -> Result<(), StoreError> {
    let size = e.data.len() + e.context.len();
    if size > MAX_ENTRY_BYTES {
        return Err(StoreError::EntryTooLarge {
            index: e.index,
            size,
            max: MAX_ENTRY_BYTES,
        });
    }
    push_record(out, KIND_ENTRY, |b| {
        b.extend_from_slice(&e.index.to_le_bytes());
        b.extend_from_slice(&e.term.to_le_bytes());
        b.push(e.get_entry_type() as u8);
        b.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&e.data);
        b.extend_from_slice(&(e.context.len() as u32).to_le_bytes());
        b.extend_from_slice(&e.context);
    });
    Ok(())
}

/// A little-endian field reader over a record body or the snapshot file.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
    fn bytes(&mut self, max: usize) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        if n > max {
            return None;
        }
        self.take(n)
    }
}

struct Replay {
    valid_len: usize,
    hard: Option<HardState>,
    entries: Vec<Entry>,
}

/// Reads the records of a log file: stops at the first torn one; a valid record that
/// contradicts the log (wrong generation, an entry that leaves a gap or reaches below the
/// snapshot, an unknown version) is corruption.
fn replay_log(bytes: &[u8], gen: u64, snap_index: u64, path: &Path) -> Result<Replay, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    let mut pos = 0;
    let mut replay = Replay {
        valid_len: 0,
        hard: None,
        entries: Vec::new(),
    };
    let mut seen_header = false;
    while let Some(head) = bytes.get(pos..pos + RECORD_HEADER) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if !(2..=MAX_RECORD_BODY).contains(&len) {
            break;
        }
        let Some(body) = bytes.get(pos + RECORD_HEADER..pos + RECORD_HEADER + len) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        if body[0] != FORMAT_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                version: body[0],
                supported: FORMAT_VERSION,
            });
        }
        let mut r = Reader(&body[2..]);
        let bad = || {
            corrupt(format!(
                "malformed record of kind {} at byte {pos}",
                body[1]
            ))
        };
        match body[1] {
            KIND_HEADER => {
                let g = r.u64().ok_or_else(bad)?;
                if seen_header || g != gen {
                    return Err(corrupt(format!(
                        "header for generation {g} at byte {pos}, expected {gen} once"
                    )));
                }
                seen_header = true;
            }
            _ if !seen_header => {
                return Err(corrupt("records before the header".into()));
            }
            KIND_HARD_STATE => {
                let mut hs = HardState::default();
                hs.term = r.u64().ok_or_else(bad)?;
                hs.vote = r.u64().ok_or_else(bad)?;
                hs.commit = r.u64().ok_or_else(bad)?;
                replay.hard = Some(hs);
            }
            KIND_ENTRY => {
                let mut e = Entry::default();
                e.index = r.u64().ok_or_else(bad)?;
                e.term = r.u64().ok_or_else(bad)?;
                let ty = match r.u8().ok_or_else(bad)? {
                    0 => EntryType::EntryNormal,
                    1 => EntryType::EntryConfChange,
                    2 => EntryType::EntryConfChangeV2,
                    _ => return Err(bad()),
                };
                e.set_entry_type(ty);
                e.data = Bytes::copy_from_slice(r.bytes(MAX_ENTRY_BYTES).ok_or_else(bad)?);
                e.context = Bytes::copy_from_slice(r.bytes(MAX_ENTRY_BYTES).ok_or_else(bad)?);
                let last = replay.entries.last().map_or(snap_index, |x| x.index);
                if e.index <= snap_index || e.index > last + 1 {
                    return Err(corrupt(format!(
                        "entry {} after entry {last} (snapshot at {snap_index})",
                        e.index
                    )));
                }
                replay.entries.truncate((e.index - snap_index - 1) as usize);
                replay.entries.push(e);
            }
            k => return Err(corrupt(format!("unknown record kind {k} at byte {pos}"))),
        }
        pos += RECORD_HEADER + len;
        replay.valid_len = pos;
    }
    if !seen_header {
        return Err(corrupt("no valid header record".into()));
    }
    Ok(replay)
}

fn push_ids(out: &mut Vec<u8>, ids: &[u64]) -> Result<(), StoreError> {
    if ids.len() > MAX_CONF_IDS {
        return Err(StoreError::Corrupt {
            path: PathBuf::from(SNAPSHOT_FILE),
            what: format!("conf state lists {} ids, limit {MAX_CONF_IDS}", ids.len()),
        });
    }
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(())
}

/// `SLQS`, version, CRC32C (LE) of the rest, then index, term, log generation, the conf state
/// (voters, learners, outgoing voters, next learners as counted id lists; auto-leave byte) and
/// the state machine's bytes.
fn encode_snapshot_file(
    meta: &SnapshotMetadata,
    data: &[u8],
    gen: u64,
) -> Result<Vec<u8>, StoreError> {
    if data.len() > MAX_SNAPSHOT_BYTES {
        return Err(StoreError::SnapshotTooLarge {
            size: data.len(),
            max: MAX_SNAPSHOT_BYTES,
        });
    }
    let mut out = Vec::with_capacity(64 + data.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&meta.index.to_le_bytes());
    out.extend_from_slice(&meta.term.to_le_bytes());
    out.extend_from_slice(&gen.to_le_bytes());
    let cs = meta.get_conf_state();
    push_ids(&mut out, &cs.voters)?;
    push_ids(&mut out, &cs.learners)?;
    push_ids(&mut out, &cs.voters_outgoing)?;
    push_ids(&mut out, &cs.learners_next)?;
    out.push(cs.auto_leave as u8);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out[9..]);
    out[5..9].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn decode_snapshot_file(
    raw: &[u8],
    path: &Path,
) -> Result<(SnapshotMetadata, Bytes, u64), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        what: what.to_owned(),
    };
    if raw.len() < 9 || &raw[..4] != SNAPSHOT_MAGIC {
        return Err(corrupt("no snapshot header"));
    }
    if raw[4] != FORMAT_VERSION {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            version: raw[4],
            supported: FORMAT_VERSION,
        });
    }
    let stored = u32::from_le_bytes([raw[5], raw[6], raw[7], raw[8]]);
    if crc32c::crc32c(&raw[9..]) != stored {
        return Err(corrupt("CRC mismatch"));
    }
    let mut r = Reader(&raw[9..]);
    let short = || corrupt("truncated snapshot file");
    let mut meta = SnapshotMetadata::default();
    meta.index = r.u64().ok_or_else(short)?;
    meta.term = r.u64().ok_or_else(short)?;
    let gen = r.u64().ok_or_else(short)?;
    let ids = |r: &mut Reader| -> Result<Vec<u64>, StoreError> {
        let n = r.u32().ok_or_else(short)? as usize;
        if n > MAX_CONF_IDS {
            return Err(corrupt("conf state too long"));
        }
        (0..n).map(|_| r.u64().ok_or_else(short)).collect()
    };
    let mut cs = ConfState::default();
    cs.voters = ids(&mut r)?;
    cs.learners = ids(&mut r)?;
    cs.voters_outgoing = ids(&mut r)?;
    cs.learners_next = ids(&mut r)?;
    cs.auto_leave = r.u8().ok_or_else(short)? != 0;
    let data = r.bytes(MAX_SNAPSHOT_BYTES).ok_or_else(short)?;
    if !r.0.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    meta.set_conf_state(cs);
    Ok((meta, Bytes::copy_from_slice(data), gen))
}

impl<S: Storage> raft::Storage for RaftStore<S> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard.clone(),
            self.snap_meta.get_conf_state().clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        let off = self.first();
        let mut ents = self.entries[(low - off) as usize..(high - off) as usize].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snap_meta.index {
            return Ok(self.snap_meta.term);
        }
        if idx < self.snap_meta.index {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        match self.entries.get((idx - self.first()) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(RaftStorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snap_meta.index < request_index || self.snap_meta.index == 0 {
            return Err(raft::Error::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut s = Snapshot::default();
        s.set_metadata(self.snap_meta.clone());
        s.data = self.snap_data.clone();
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use proptest::prelude::*;
    use raft::Storage as _;
    use shardlog_engine::io::sim::{CrashMode, Faults};
    use shardlog_engine::SimStorage;

    fn dir() -> PathBuf {
        PathBuf::from("/data/quorum")
    }

    fn conf() -> ConfState {
        ConfState::from((vec![1, 2, 3], vec![4]))
    }

    fn open(disk: &SimStorage) -> (RaftStore<SimStorage>, OpenReport) {
        block_on(RaftStore::open(disk.clone(), &dir(), conf())).unwrap()
    }

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = Bytes::copy_from_slice(data.as_bytes());
        e
    }

    fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to)
            .map(|i| entry(i, term, &format!("e{i}t{term}")))
            .collect()
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        let mut h = HardState::default();
        h.term = term;
        h.vote = vote;
        h.commit = commit;
        h
    }

    fn all(s: &RaftStore<SimStorage>) -> Vec<Entry> {
        s.entries(
            s.first(),
            s.last() + 1,
            None,
            GetEntriesContext::empty(false),
        )
        .unwrap()
    }

    #[test]
    fn fresh_store_survives_reopen_with_synced_state() {
        let disk = SimStorage::new(512);
        let (mut s, rep) = open(&disk);
        assert!(rep.created);
        assert_eq!(s.initial_state().unwrap().conf_state, conf());
        block_on(s.append(&entries(1, 5, 1), Some(&hs(1, 2, 3)), true)).unwrap();
        // Unsynced: lost by a crash that keeps only synced data.
        block_on(s.append(&entries(6, 7, 1), Some(&hs(1, 2, 5)), false)).unwrap();
        assert_eq!(s.last_index().unwrap(), 7);
        drop(s);
        let disk = disk.crash(CrashMode::LoseUnsynced);
        let (s, rep) = open(&disk);
        assert!(!rep.created);
        assert_eq!(rep.last_index, 5);
        assert_eq!(all(&s), entries(1, 5, 1));
        assert_eq!(s.initial_state().unwrap().hard_state, hs(1, 2, 3));
        assert_eq!(s.initial_state().unwrap().conf_state, conf());
        assert_eq!(s.term(0).unwrap(), 0);
        assert_eq!(s.term(4).unwrap(), 1);
    }

    #[test]
    fn conflicting_suffix_is_replaced_in_memory_and_after_restart() {
        let disk = SimStorage::new(512);
        let (mut s, _) = open(&disk);
        block_on(s.append(&entries(1, 5, 1), Some(&hs(1, 0, 2)), true)).unwrap();
        block_on(s.append(&entries(3, 4, 2), Some(&hs(2, 0, 2)), true)).unwrap();
        let want: Vec<Entry> = entries(1, 2, 1)
            .into_iter()
            .chain(entries(3, 4, 2))
            .collect();
        assert_eq!(all(&s), want);
        assert_eq!(s.last_index().unwrap(), 4);
        drop(s);
        let (s, _) = open(&disk.crash(CrashMode::LoseUnsynced));
        assert_eq!(all(&s), want);
        // Appends must continue the log.
        let (mut s, _) = open(&disk.crash(CrashMode::KeepAll));
        let err = block_on(s.append(&entries(7, 7, 2), None, true)).unwrap_err();
        assert!(
            matches!(err, StoreError::NotContiguous { first: 7, .. }),
            "{err}"
        );
        let mut gap = entries(5, 5, 2);
        gap.push(entry(7, 2, "x"));
        assert!(matches!(
            block_on(s.append(&gap, None, true)),
            Err(StoreError::NotContiguous { .. })
        ));
    }

    #[test]
    fn raft_storage_reads_from_memory_with_limits_and_errors() {
        let disk = SimStorage::new(512);
        let (mut s, _) = open(&disk);
        block_on(s.append(&entries(1, 10, 1), Some(&hs(1, 0, 10)), true)).unwrap();
        block_on(s.compact(4, conf(), Bytes::from_static(b"sm@4"))).unwrap();
        let ctx = || GetEntriesContext::empty(false);
        assert_eq!(s.first_index().unwrap(), 5);
        assert_eq!(s.term(4).unwrap(), 1);
        assert!(matches!(
            s.entries(4, 6, None, ctx()),
            Err(raft::Error::Store(RaftStorageError::Compacted))
        ));
        assert!(matches!(
            s.term(3),
            Err(raft::Error::Store(RaftStorageError::Compacted))
        ));
        assert!(matches!(
            s.entries(5, 12, None, ctx()),
            Err(raft::Error::Store(RaftStorageError::Unavailable))
        ));
        assert!(matches!(
            s.term(11),
            Err(raft::Error::Store(RaftStorageError::Unavailable))
        ));
        // max_size limits the answer but always returns at least one entry.
        assert_eq!(s.entries(5, 11, Some(0), ctx()).unwrap().len(), 1);
        assert_eq!(s.entries(5, 11, None, ctx()).unwrap(), entries(5, 10, 1));
        let snap = s.snapshot(0, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 4);
        assert_eq!(&snap.data[..], b"sm@4");
        assert!(s.snapshot(5, 2).is_err());
    }

    #[test]
    fn compaction_rewrites_the_tail_and_survives_restart() {
        let disk = SimStorage::new(512);
        let (mut s, _) = open(&disk);
        block_on(s.append(&entries(1, 10, 1), Some(&hs(1, 1, 8)), true)).unwrap();
        let before = s.log_bytes();
        block_on(s.compact(6, conf(), Bytes::from_static(b"state"))).unwrap();
        assert!(s.log_bytes() < before);
        assert_eq!(all(&s), entries(7, 10, 1));
        let logs: Vec<PathBuf> = disk
            .files()
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(LOG_PREFIX))
            .collect();
        assert_eq!(logs, vec![dir().join(log_name(2))]);
        drop(s);
        let (s, rep) = open(&disk.crash(CrashMode::LoseUnsynced));
        assert_eq!(rep.snapshot_index, 6);
        assert_eq!(all(&s), entries(7, 10, 1));
        assert_eq!(&s.snapshot_data()[..], b"state");
        assert_eq!(s.snapshot_metadata().term, 1);
        assert_eq!(s.hard_state(), &hs(1, 1, 8));
    }

    #[test]
    fn a_compaction_interrupted_at_any_step_leaves_old_or_new_state() {
        for step in 0..6 {
            let disk = SimStorage::new(512);
            let (mut s, _) = open(&disk);
            block_on(s.append(&entries(1, 10, 1), Some(&hs(1, 1, 8)), true)).unwrap();
            disk.set_faults(Faults {
                eio_control_step_after: Some(step),
                ..Faults::default()
            });
            let r = block_on(s.compact(6, conf(), Bytes::from_static(b"state")));
            drop(s);
            for mode in [CrashMode::LoseUnsynced, CrashMode::KeepAll] {
                let (s, rep) = open(&disk.crash(mode));
                assert_eq!(s.last_index().unwrap(), 10, "step {step}");
                match rep.snapshot_index {
                    0 => assert_eq!(all(&s), entries(1, 10, 1)),
                    6 => assert_eq!(all(&s), entries(7, 10, 1)),
                    other => panic!("snapshot {other}"),
                }
                if r.is_ok() && matches!(mode, CrashMode::LoseUnsynced) {
                    assert_eq!(rep.snapshot_index, 6, "a completed compaction is durable");
                }
            }
        }
    }

    #[test]
    fn installed_snapshot_replaces_the_log() {
        let disk = SimStorage::new(512);
        let (mut s, _) = open(&disk);
        block_on(s.append(&entries(1, 3, 1), Some(&hs(1, 0, 1)), true)).unwrap();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 20;
        snap.mut_metadata().term = 3;
        snap.mut_metadata()
            .set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        snap.data = Bytes::from_static(b"leader state");
        block_on(s.install_snapshot(&snap, Some(&hs(3, 0, 20)))).unwrap();
        block_on(s.append(&entries(21, 22, 3), None, true)).unwrap();
        drop(s);
        let (s, rep) = open(&disk.crash(CrashMode::LoseUnsynced));
        assert_eq!((rep.snapshot_index, rep.last_index), (20, 22));
        assert_eq!(all(&s), entries(21, 22, 3));
        assert_eq!(s.hard_state(), &hs(3, 0, 20));
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        let mut old = snap.clone();
        old.mut_metadata().index = 5;
        let (mut s, _) = open(&disk.crash(CrashMode::KeepAll));
        assert!(matches!(
            block_on(s.install_snapshot(&old, None)),
            Err(StoreError::SnapshotOutOfDate {
                index: 5,
                current: 20
            })
        ));
    }

    #[test]
    fn oversized_entries_and_snapshots_are_refused() {
        let disk = SimStorage::new(512);
        let (mut s, _) = open(&disk);
        let mut big = entry(1, 1, "");
        big.data = Bytes::from(vec![0u8; MAX_ENTRY_BYTES + 1]);
        assert!(matches!(
            block_on(s.append(&[big], None, true)),
            Err(StoreError::EntryTooLarge { index: 1, .. })
        ));
        let mut max = entry(1, 1, "");
        max.data = Bytes::from(vec![0u8; MAX_ENTRY_BYTES]);
        block_on(s.append(&[max.clone()], None, true)).unwrap();
        drop(s);
        let (mut s, _) = open(&disk.crash(CrashMode::LoseUnsynced));
        assert_eq!(all(&s), vec![max]);
        block_on(s.append(&[], Some(&hs(1, 0, 1)), true)).unwrap();
        let huge = Bytes::from(vec![0u8; MAX_SNAPSHOT_BYTES + 1]);
        assert!(matches!(
            block_on(s.compact(1, conf(), huge)),
            Err(StoreError::SnapshotTooLarge { .. })
        ));
    }

    #[test]
    fn damaged_control_files_are_refused_not_guessed() {
        let disk = SimStorage::new(512);
        let (mut s, _) = open(&disk);
        block_on(s.append(&entries(1, 3, 1), Some(&hs(1, 0, 1)), true)).unwrap();
        let valid = s.log_bytes() as usize;
        drop(s);
        let snap = dir().join(SNAPSHOT_FILE);
        let d = disk.crash(CrashMode::KeepAll);
        d.with_file_mut(&snap, |b| b[12] ^= 1).unwrap();
        let err = block_on(RaftStore::open(d, &dir(), conf())).err().unwrap();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let d = disk.crash(CrashMode::KeepAll);
        d.with_file_mut(&snap, |b| b[4] = 9).unwrap();
        let err = block_on(RaftStore::open(d, &dir(), conf())).err().unwrap();
        assert!(
            matches!(err, StoreError::UnsupportedVersion { version: 9, .. }),
            "{err}"
        );
        // A log record with a valid CRC that does not continue the log is corruption too.
        let d = disk.crash(CrashMode::KeepAll);
        let log = dir().join(log_name(1));
        let mut rec = Vec::new();
        encode_entry(&mut rec, &entry(9, 1, "stray")).unwrap();
        d.with_file_mut(&log, |b| {
            b.truncate(valid);
            b.extend_from_slice(&rec);
        })
        .unwrap();
        let err = block_on(RaftStore::open(d, &dir(), conf())).err().unwrap();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_log_cut_at_any_byte_recovers_a_prefix_and_stays_writable() {
        let disk = SimStorage::new(512);
        let (mut s, _) = open(&disk);
        block_on(s.append(&entries(1, 6, 1), Some(&hs(1, 0, 6)), true)).unwrap();
        drop(s);
        let log = dir().join(log_name(1));
        let full = block_on(disk.read_file(&log)).unwrap().unwrap();
        let mut prev = 0;
        for cut in 0..=full.len() {
            let d = disk.crash(CrashMode::KeepAll);
            d.with_file_mut(&log, |b| b.truncate(cut)).unwrap();
            match block_on(RaftStore::open(d.clone(), &dir(), conf())) {
                Ok((mut s, _)) => {
                    let got = all(&s);
                    assert_eq!(got[..], entries(1, 6, 1)[..got.len()], "cut {cut}");
                    assert!(got.len() >= prev, "recovered less from a longer file");
                    prev = got.len();
                    // Appending after recovery works and survives.
                    let next = s.last_index().unwrap() + 1;
                    block_on(s.append(&entries(next, next, 2), None, true)).unwrap();
                    drop(s);
                    let (s, rep) = open(&d.crash(CrashMode::LoseUnsynced));
                    assert_eq!(rep.last_index, next, "cut {cut}");
                    assert_eq!(s.term(next).unwrap(), 2);
                }
                // Only a file cut inside its header record is refused.
                Err(StoreError::Corrupt { .. }) => assert!(cut < 18, "cut {cut}"),
                Err(e) => panic!("cut {cut}: {e}"),
            }
        }
        assert_eq!(prev, 6);
    }

    /// One write of the model: entries (from a start index) and maybe a hard state, synced or
    /// not.
    #[derive(Clone, Debug)]
    struct Op {
        back: u64,
        count: u64,
        with_hs: bool,
        sync: bool,
    }

    fn op() -> impl Strategy<Value = Op> {
        (0u64..3, 0u64..4, any::<bool>(), any::<bool>()).prop_map(|(back, count, with_hs, sync)| {
            Op {
                back,
                count,
                with_hs,
                sync,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Garbage in either file opens to a typed error or a valid prefix, never a panic.
        #[test]
        fn garbage_files_never_panic(
            log_tail in proptest::collection::vec(any::<u8>(), 0..600),
            snap in proptest::collection::vec(any::<u8>(), 0..200),
            keep_header in any::<bool>(),
            mangle_snapshot in any::<bool>(),
        ) {
            let disk = SimStorage::new(512);
            let (mut s, _) = open(&disk);
            block_on(s.append(&entries(1, 2, 1), Some(&hs(1, 0, 1)), true)).unwrap();
            let valid = s.log_bytes() as usize;
            drop(s);
            let d = disk.crash(CrashMode::KeepAll);
            d.with_file_mut(&dir().join(log_name(1)), |b| {
                b.truncate(if keep_header { valid } else { 0 });
                b.extend_from_slice(&log_tail);
            })
            .unwrap();
            if mangle_snapshot {
                d.with_file_mut(&dir().join(SNAPSHOT_FILE), |b| *b = snap.clone()).unwrap();
            }
            // Random bytes do not carry a matching CRC32C (odds 2^-32 per record).
            match block_on(RaftStore::open(d, &dir(), conf())) {
                Ok((s, _)) => {
                    prop_assert!(keep_header && !mangle_snapshot);
                    prop_assert_eq!(all(&s), entries(1, 2, 1));
                }
                Err(StoreError::Corrupt { .. } | StoreError::UnsupportedVersion { .. }) => {
                    prop_assert!(!keep_header || mangle_snapshot);
                }
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever a crash keeps (a torn, arbitrary subset of unsynced writes), the store
        /// reopens to the state after some prefix of the written records that includes every
        /// synced one.
        #[test]
        fn crashes_recover_a_prefix_of_the_records(ops in proptest::collection::vec(op(), 1..12), seed in any::<u64>()) {
            let disk = SimStorage::new(512);
            let (mut s, _) = open(&disk);
            // States after each record, as (entries, hard state).
            let mut states: Vec<(Vec<Entry>, HardState)> = vec![(Vec::new(), HardState::default())];
            let mut durable_from = 0;
            let mut term = 1;
            for op in &ops {
                term += 1;
                let (cur, cur_hs) = states.last().unwrap().clone();
                let last = cur.last().map_or(0, |e| e.index);
                let start = (last + 1).saturating_sub(op.back).max(1);
                let batch = if op.count == 0 { Vec::new() } else { entries(start, start + op.count - 1, term) };
                let new_hs = hs(term, 1, 0);
                let hard = op.with_hs.then_some(&new_hs);
                block_on(s.append(&batch, hard, op.sync)).unwrap();
                let mut model = cur;
                for e in &batch {
                    model.truncate((e.index - 1) as usize);
                    model.push(e.clone());
                    states.push((model.clone(), cur_hs.clone()));
                }
                if let Some(h) = hard {
                    states.push((model.clone(), h.clone()));
                }
                if op.sync {
                    durable_from = states.len() - 1;
                }
            }
            drop(s);
            let (s, _) = open(&disk.crash(CrashMode::Torn { seed }));
            let got = (all(&s), s.hard_state().clone());
            prop_assert!(
                states[durable_from..].contains(&got),
                "recovered {:?} is no state from {} on", got, durable_from
            );
        }
    }
}

//! What a follower replica does to its log: append the leader's batches as they are
//! ([`PartitionLog::append_replicated`]) and cut a tail that diverged from the leader's
//! ([`PartitionLog::truncate_to`]).
//!
//! ## Crash ordering of a truncation
//!
//! A truncation touches several files: the segments above the cut, the one the cut shortens,
//! its index files, the leader-epoch table. No file system replaces several files at once, so
//! the truncation is made atomic with an intent file, `truncation` (a control file, see
//! `control.rs`): the new log end, the base of the segment that keeps the cut, and that
//! segment's length at the cut.
//!
//! 1. Everything appended is written and fdatasync'd, so the old log is entirely on disk.
//! 2. The intent is written atomically (tmp, fsync, rename, fsync directory). Before its
//!    rename is durable nothing has changed: a crash recovers the old log.
//! 3. The epoch table loses the entries that start at or after the new end (atomic replace);
//!    the segments above the cut are unlinked (with their index files); the cut segment is
//!    shortened and fdatasync'd and its index files are removed (they would describe bytes
//!    that are gone; the segment is scanned at the next open, being the last); the directory
//!    is fsynced.
//! 4. The intent is removed and the directory fsynced; only then does the call return and
//!    can new appends land.
//!
//! Every action of step 3 is idempotent, so when `open` finds an intent (a crash after step
//! 2) it simply runs step 3 and 4 again before reading anything ([`finish_truncation`]):
//! the result is the truncated log, whatever subset of step 3 reached the disk. An intent
//! can never outlive step 4 with newer data behind it (step 4's directory fsync precedes the
//! next append; a failure there fails the log), so the redo never cuts data appended after
//! the truncation. The shortened segment is fdatasync'd before the intent goes, so the old
//! bytes past the cut cannot reappear behind new ones. `engine/tests/follower_sim.rs` crashes
//! at every storage operation of a truncation and checks that recovery gives exactly the old
//! or exactly the new log (data, epoch table, indexes).

use super::*;

/// What [`PartitionLog::append_replicated`] appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicatedAppend {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// Each appended batch, in order (a follower rebuilds producer state from them).
    pub batches: Vec<BatchInfo>,
}

/// Where a truncation cuts: the new log end, the segment that keeps it and that segment's
/// length at the cut. The body of the intent file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cut {
    end: Offset,
    segment: Offset,
    length: u64,
}

impl Cut {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.end.to_be_bytes());
        v.extend_from_slice(&self.segment.to_be_bytes());
        v.extend_from_slice(&self.length.to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<Cut> {
        if b.len() != 24 {
            return None;
        }
        Some(Cut {
            end: i64::from_be_bytes(b[0..8].try_into().ok()?),
            segment: i64::from_be_bytes(b[8..16].try_into().ok()?),
            length: u64::from_be_bytes(b[16..24].try_into().ok()?),
        })
    }
}

/// The cut segment's state just below the cut, for the active segment it becomes.
struct CutSegment {
    index: SegmentIndex,
    max_timestamp: i64,
    last_batch_rel: u32,
    bytes_since_index: u64,
}

impl<S: Storage> PartitionLog<S> {
    /// Appends batches that already carry their offsets and leader epochs, as a follower
    /// stores what it fetched from the leader: `bytes` holds one or more stored-format
    /// batches back to back, and they are stored as they are (one copy, into the write
    /// buffer; nothing re-encoded, no offset or timestamp assigned).
    ///
    /// Checked before anything is appended (a refused buffer appends nothing): each batch's
    /// framing, magic, CRC and record count as [`append`](Self::append) checks them; the first
    /// batch starts at the log end and each next one right after the previous one
    /// ([`LogError::NonContiguous`] for a gap or an overlap); leader epochs never decrease,
    /// within the buffer or against the log's latest ([`LogError::EpochRegression`]). The
    /// epoch table gains the start of each new epoch, exactly as on the leader's path, and is
    /// persisted before the data it describes counts as written. Durability is the leader
    /// path's: wait with [`wait_written`](Self::wait_written) /
    /// [`wait_committed`](Self::wait_committed) as after `append`.
    ///
    /// One fetcher per partition is the caller's rule: if another append lands between two
    /// of the buffer's batches, the rest is refused with `NonContiguous` (what was appended
    /// stays: a valid prefix).
    pub async fn append_replicated(
        &self,
        bytes: Bytes,
        now_ms: i64,
    ) -> Result<ReplicatedAppend, LogError> {
        let (max, mut expected, mut latest) = {
            let st = self.inner.borrow();
            if st.failed {
                return Err(LogError::Failed(self.dir.clone()));
            }
            (
                st.config.max_batch_bytes,
                st.active.next_offset,
                st.epochs.last().map(|&(e, _)| e),
            )
        };
        let mut batches: Vec<(usize, BatchInfo)> = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            let head = batch::peek(rest)?;
            if head.size > rest.len() {
                return Err(LogError::InvalidBatch(batch::BatchError::LengthMismatch {
                    declared: head.size as i64 - batch::LOG_OVERHEAD as i64,
                    actual: rest.len(),
                }));
            }
            let info = batch::validate_new(&rest[..head.size], max)?;
            if info.base_offset != expected {
                return Err(LogError::NonContiguous {
                    expected,
                    found: info.base_offset,
                });
            }
            if let Some(l) = latest.filter(|&l| info.partition_leader_epoch < l) {
                return Err(LogError::EpochRegression {
                    offset: info.base_offset,
                    epoch: info.partition_leader_epoch,
                    latest: l,
                });
            }
            latest = Some(info.partition_leader_epoch);
            expected = info.next_offset();
            batches.push((pos, info));
            pos += info.size;
        }
        let Some(&(_, first)) = batches.first() else {
            return Err(LogError::InvalidBatch(batch::BatchError::TooShort(0)));
        };
        for &(pos, info) in &batches {
            self.await_room(info.size as u64, info.last_offset_delta, now_ms)
                .await?;
            let mut st = self.inner.borrow_mut();
            let st = &mut *st;
            if st.active.next_offset != info.base_offset {
                return Err(LogError::NonContiguous {
                    expected: st.active.next_offset,
                    found: info.base_offset,
                });
            }
            if let Some(&(l, _)) = st
                .epochs
                .last()
                .filter(|&&(l, _)| info.partition_leader_epoch < l)
            {
                return Err(LogError::EpochRegression {
                    offset: info.base_offset,
                    epoch: info.partition_leader_epoch,
                    latest: l,
                });
            }
            let stored = StoredBatch::whole(bytes.slice(pos..pos + info.size));
            self.place(st, stored, &info, now_ms);
            st.check_bounds("replicated append");
        }
        let last = batches.last().map_or(first, |&(_, i)| i);
        Ok(ReplicatedAppend {
            base_offset: first.base_offset,
            last_offset: last.last_offset(),
            batches: batches.into_iter().map(|(_, i)| i).collect(),
        })
    }

    /// Forgets leader epochs starting at or above `end` (the log end: they have no records);
    /// the table file follows with the next write.
    fn drop_epochs_from(&self, end: Offset) {
        let mut st = self.inner.borrow_mut();
        let before = st.epochs.len();
        st.epochs.retain(|&(_, start)| start < end);
        if st.epochs.len() != before {
            st.epochs_dirty = true;
        }
    }

    /// Removes every offset at and above `offset`; returns the new log end.
    ///
    /// Cuts at batch boundaries only: when `offset` falls inside a batch, that whole batch
    /// goes (the log then ends at the batch's base offset, below `offset`), as Kafka's
    /// follower truncation does. `offset` must lie in `[log start, log end]`, and the batch
    /// it falls in must not begin below the log start (a cut there would move the start
    /// back over records DeleteRecords removed); otherwise [`LogError::OffsetOutOfRange`]
    /// and nothing changes. `offset == log end` changes nothing but the leader-epoch table: an
    /// entry starting at the end (an epoch with no records, left by a crash that took its
    /// data) goes, as in Kafka's `truncateTo`; otherwise a follower keeps naming that epoch as
    /// its last fetched one and the leader keeps answering with the same divergence.
    ///
    /// Unwinds, in memory and on disk: the segments above the cut (deleted), the one holding
    /// it (shortened; its preallocation goes with the tail; it becomes the active segment),
    /// their offset and time indexes, the batch cache, the leader-epoch table (entries
    /// starting at or above the new end), the written, durable and committed ends (all equal
    /// the new end afterwards). Appends wait while it runs. Waiters of `wait_written` /
    /// `wait_committed` on removed offsets get [`LogError::Truncated`] (or
    /// `OffsetOutOfRange` if they start waiting after it), never a success; a reader racing
    /// with the cut may get an error for the removed range. Files kept for reuse by later
    /// rolls stay: they hold only offsets below the log start.
    ///
    /// A crash at any point recovers the old log or the truncated one (see the module docs).
    /// A failure after the first change on disk fails the log (it refuses appends), and the
    /// next open finishes the truncation.
    ///
    /// The engine keeps no producer state: the caller rebuilds its own from the remaining
    /// log, for instance by reading back from a snapshot's offset (or the log start) up to
    /// the returned end, and takes the returned end as its new log end.
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError> {
        let in_range = |st: &Inner<S::File>| {
            let (start, end) = (st.log_start, st.active.next_offset);
            if offset < start || offset > end {
                return Err(LogError::OffsetOutOfRange { offset, start, end });
            }
            Ok(end)
        };
        if in_range(&self.inner.borrow())? == offset {
            self.drop_epochs_from(offset);
            return Ok(offset);
        }
        // No DeleteRecords or retention moves the start meanwhile (the checks below hold
        // until the end); then no I/O and no append.
        let _bounds = self.lock_bounds().await;
        let _slot = self.acquire_all_io().await?;
        self.inner.borrow_mut().rolling = true;
        let _rolling = RollGuard { log: self };
        // The old log entirely on disk (a crash before the intent then recovers all of it),
        // and no write in flight while the cut reads headers and shortens files.
        self.write_pending().await?;
        self.sync_written().await?;
        if in_range(&self.inner.borrow())? == offset {
            self.drop_epochs_from(offset);
            return Ok(offset);
        }
        let (cut, below) = self.find_cut(offset).await?;
        let start = self.log_start_offset();
        if cut.end < start {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start,
                end: self.log_end_offset(),
            });
        }

        let intent = self.dir.join(TRUNCATION_FILE);
        self.storage
            .write_file_atomic(&intent, &control::encode(&cut.encode()))
            .await
            .map_err(|e| LogError::io("write", &intent, e))?;
        // From here the disk may be between the old and the new log: a failure fails the log,
        // and the next open finishes the truncation from the intent.
        let (epochs, above) = {
            let st = self.inner.borrow();
            let mut epochs = st.epochs.clone();
            epochs.retain(|&(_, s)| s < cut.end);
            let mut above: Vec<Offset> = st
                .sealed
                .range(cut.segment + 1..)
                .map(|(&b, _)| b)
                .collect();
            if st.active.base > cut.segment {
                above.push(st.active.base);
            }
            (epochs, above)
        };
        for &base in &above {
            // Out of the open set: the descriptor closes once no reader holds it.
            drop(self.files.borrow().forget(self.files_id.get(), base));
        }
        let applied = apply_cut(&self.storage, &self.dir, cut, &above, &epochs).await;
        if let Err(e) = applied {
            return Err(self.fail(e));
        }
        let file = if self.inner.borrow().active.base == cut.segment {
            self.inner.borrow().active.file.clone()
        } else {
            drop(self.files.borrow().forget(self.files_id.get(), cut.segment));
            let path = self.dir.join(segment_name(cut.segment, "log"));
            match self.storage.open_file(&path, false).await {
                Ok(f) => Rc::new(f),
                Err(e) => return Err(self.fail(LogError::io("open", &path, e))),
            }
        };
        let align = file.alignment();
        let buf_start = align_down(cut.length, align);
        let mut buf = file.alloc(MIN_WRITE_BUF_BYTES.max(align as usize));
        if cut.length > buf_start {
            let path = self.dir.join(segment_name(cut.segment, "log"));
            match file
                .read_at(buf_start, (cut.length - buf_start) as usize)
                .await
            {
                Ok(tail) => buf[..tail.len()].copy_from_slice(&tail),
                Err(e) => return Err(self.fail(LogError::io("read", &path, e))),
            }
        }

        {
            let mut st = self.inner.borrow_mut();
            let st = &mut *st;
            let first_append_ms = st.active.first_append_ms;
            st.sealed.retain(|&b, _| b < cut.segment);
            st.active = Active {
                base: cut.segment,
                file,
                next_offset: cut.end,
                size: cut.length,
                written: cut.length,
                // Shortening the file freed its reservation past the cut.
                allocated: cut.length,
                buf: Some(buf),
                buf_start,
                index: below.index,
                bytes_since_index: below.bytes_since_index,
                max_timestamp: below.max_timestamp,
                last_batch_rel: below.last_batch_rel,
                first_append_ms,
            };
            st.cache.borrow_mut().truncate(cut.end);
            st.epochs = epochs;
            st.epochs_dirty = false;
            st.written_end = cut.end;
            st.durable_end = cut.end;
            st.unsynced_bytes = 0;
            st.dir_unsynced = false;
            st.unsaved_indexes.retain(|&b| b < cut.segment);
            st.truncations += 1;
            let n = st.truncations;
            st.truncation_ends.push_back((n, cut.end));
            if st.truncation_ends.len() > TRUNCATION_HISTORY {
                st.truncation_ends.pop_front();
            }
            st.check_bounds("truncation");
        }
        tracing::info!(dir = %self.dir.display(), offset, end = cut.end, segments_deleted = above.len(), "log truncated");
        self.event.notify(usize::MAX);
        Ok(cut.end)
    }

    /// Finds the batch holding `offset` (everything is written: the caller holds both I/O
    /// slots after a flush) and what the segment looks like just below it.
    async fn find_cut(&self, offset: Offset) -> Result<(Cut, CutSegment), LogError> {
        enum Source<F> {
            Active(Rc<F>),
            Sealed(Rc<Sealed>),
        }
        let (base, size, index, source) = {
            let st = self.inner.borrow();
            let a = &st.active;
            if offset >= a.base {
                (
                    a.base,
                    a.size,
                    a.index.clone(),
                    Source::Active(a.file.clone()),
                )
            } else {
                let Some((_, seg)) = st.sealed.range(..=offset).next_back() else {
                    return Err(LogError::OffsetOutOfRange {
                        offset,
                        start: st.log_start,
                        end: a.next_offset,
                    });
                };
                (
                    seg.base,
                    seg.size,
                    SegmentIndex::default(),
                    Source::Sealed(seg.clone()),
                )
            }
        };
        let path = self.dir.join(segment_name(base, "log"));
        match source {
            Source::Active(file) => cut_in(&*file, &path, base, size, index, offset).await,
            Source::Sealed(seg) => {
                let index = (*self.sealed_index(&seg).await?).clone();
                let file = self.sealed_file(&seg).await?;
                cut_in(&*file, &path, base, size, index, offset).await
            }
        }
    }
}

/// Reads the batch headers of `file` from `from` up to `to` (batch boundaries), one read per
/// header.
async fn headers<F: StorageFile>(
    file: &F,
    path: &Path,
    mut from: u64,
    to: u64,
    mut each: impl FnMut(u64, &BatchInfo) -> bool,
) -> Result<(), LogError> {
    while from < to {
        let h = file
            .read_at(from, HEADER_BYTES)
            .await
            .map_err(|e| LogError::io("read", path, e))?;
        let corrupt = |reason: String| LogError::Corrupt {
            path: path.to_path_buf(),
            position: from,
            reason,
        };
        let info = batch::peek(&h).map_err(|e| corrupt(e.to_string()))?;
        if info.size as u64 > to - from {
            return Err(corrupt(format!(
                "batch of {} bytes runs past {to}",
                info.size
            )));
        }
        if !each(from, &info) {
            return Ok(());
        }
        from += info.size as u64;
    }
    Ok(())
}

/// The cut for `offset` in one segment (`base`, `size` bytes, its `index`), and the segment's
/// index, largest timestamp and last batch below the cut.
async fn cut_in<F: StorageFile>(
    file: &F,
    path: &Path,
    base: Offset,
    size: u64,
    mut index: SegmentIndex,
    offset: Offset,
) -> Result<(Cut, CutSegment), LogError> {
    let mut found = None;
    headers(
        file,
        path,
        index.position_for(base, offset),
        size,
        |pos, info| {
            if info.next_offset() > offset {
                found = Some((pos, info.base_offset));
                return false;
            }
            true
        },
    )
    .await?;
    let Some((length, end)) = found else {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            position: size,
            reason: format!("no batch holds offset {offset}"),
        });
    };
    let rel_end = end - base;
    index.offsets.retain(|&(rel, _)| i64::from(rel) < rel_end);
    index.times.retain(|&(_, rel)| i64::from(rel) < rel_end);
    // Timestamps of the batches after the last kept index entry are in no entry: read them.
    let from = index.offsets.last().map_or(0, |&(_, pos)| u64::from(pos));
    let mut max_timestamp = index.max_timestamp().unwrap_or(-1);
    let mut last_batch_rel = 0;
    headers(file, path, from, length, |_, info| {
        max_timestamp = max_timestamp.max(info.max_timestamp);
        last_batch_rel = (info.base_offset - base) as u32;
        true
    })
    .await?;
    let bytes_since_index = if index.offsets.is_empty() {
        u64::MAX / 2
    } else {
        length - from
    };
    let cut = Cut {
        end,
        segment: base,
        length,
    };
    let below = CutSegment {
        index,
        max_timestamp,
        last_batch_rel,
        bytes_since_index,
    };
    Ok((cut, below))
}

/// Step 3 and 4 of a truncation (module docs): every action idempotent, so recovery can run
/// it again after a crash at any point. `above` are the segments past the cut, `epochs` the
/// epoch table below it.
async fn apply_cut<S: Storage>(
    storage: &S,
    dir: &Path,
    cut: Cut,
    above: &[Offset],
    epochs: &[(i32, Offset)],
) -> Result<(), LogError> {
    let p = dir.join(EPOCHS_FILE);
    storage
        .write_file_atomic(&p, &control::encode(&encode_epochs(epochs)))
        .await
        .map_err(|e| LogError::io("write", &p, e))?;
    // Highest first: were the directory to keep some unlinks and not others, the survivors
    // are still the lowest segments (the intent finishes the job either way).
    for &base in above.iter().rev() {
        remove_segment_files(storage, dir, base).await?;
    }
    let path = dir.join(segment_name(cut.segment, "log"));
    match storage.open_file(&path, false).await {
        Ok(file) => {
            let size = file
                .size()
                .await
                .map_err(|e| LogError::io("stat", &path, e))?;
            if size > cut.length {
                file.truncate(cut.length)
                    .await
                    .map_err(|e| LogError::io("truncate", &path, e))?;
            }
            file.sync_data()
                .await
                .map_err(|e| LogError::io("fdatasync", &path, e))?;
        }
        // Cut at its very start and never written: nothing to shorten.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && cut.length == 0 => {}
        Err(e) => return Err(LogError::io("open", &path, e)),
    }
    remove_index_files(storage, dir, cut.segment).await?;
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| LogError::io("sync dir", dir, e))?;
    let intent = dir.join(TRUNCATION_FILE);
    storage
        .remove_file(&intent)
        .await
        .map_err(|e| LogError::io("remove", &intent, e))?;
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| LogError::io("sync dir", dir, e))
}

/// At open: finishes a truncation a crash interrupted (an intent file is there); returns
/// whether it did. `bases` are the segment files present.
pub(super) async fn finish_truncation<S: Storage>(
    storage: &S,
    dir: &Path,
    bases: &[Offset],
) -> Result<bool, LogError> {
    let intent = dir.join(TRUNCATION_FILE);
    let Some(raw) = storage
        .read_file(&intent)
        .await
        .map_err(|e| LogError::io("read", &intent, e))?
    else {
        return Ok(false);
    };
    // The intent is renamed into place whole, so a corrupt one is damage, not a crash: the
    // disk may hold a half-done truncation, and guessing could serve a mix. Refuse to open.
    let Some(cut) = control::decode(&intent, raw)?
        .as_deref()
        .and_then(Cut::decode)
    else {
        return Err(LogError::Corrupt {
            path: intent,
            position: 0,
            reason: "unreadable truncation intent".into(),
        });
    };
    let mut epochs = control::read(storage, &dir.join(EPOCHS_FILE))
        .await?
        .map(|b| decode_epochs(&b))
        .unwrap_or_default();
    epochs.retain(|&(_, s)| s < cut.end);
    let above: Vec<Offset> = bases.iter().copied().filter(|&b| b > cut.segment).collect();
    tracing::warn!(dir = %dir.display(), end = cut.end, segments_deleted = above.len(), "finishing a truncation interrupted by a crash");
    apply_cut(storage, dir, cut, &above, &epochs).await?;
    Ok(true)
}

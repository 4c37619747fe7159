//! The follower primitives on the simulated disk: `append_replicated` stores the leader's
//! batches as they are and refuses what does not continue the log; `truncate_to` unwinds
//! every part of the log; a crash at every storage operation of either recovers the old or
//! the new log (truncation) or a prefix (appends), never a mix; control files written before
//! the format version existed still open, and a newer version is refused by name.

mod common;

use std::path::PathBuf;
use std::pin::pin;

use bytes::Bytes;
use common::*;
use futures_lite::future::{block_on, poll_once};
use shardlog_engine::batch;
use shardlog_engine::io::sim::{CrashMode, Faults};
use shardlog_engine::{FlushPolicy, LogConfig, LogError, PartitionLog, SimStorage, Storage};

/// A batch as a leader stored it: offsets from `base`, leader epoch `epoch`, `tag` in its
/// values, timestamp `ts`.
fn stored(base: i64, count: i32, epoch: i32, tag: u8, ts: i64) -> Vec<u8> {
    let mut b = tagged(count, 60 + usize::from(tag % 7) * 40, ts, tag);
    batch::assign(&mut b, base, epoch);
    b
}

/// Consecutive leader batches from `base`: `(count, epoch)` each; returns them and the end.
fn run_of(base: i64, shape: &[(i32, i32)], tag0: u8) -> (Vec<Vec<u8>>, i64) {
    let mut next = base;
    let mut out = Vec::new();
    for (i, &(count, epoch)) in shape.iter().enumerate() {
        let tag = tag0.wrapping_add(i as u8);
        out.push(stored(next, count, epoch, tag, 1000 + next));
        next += i64::from(count);
    }
    (out, next)
}

fn concat(batches: &[Vec<u8>]) -> Bytes {
    Bytes::from(batches.concat())
}

/// Every batch from the log start, whole (headers included).
fn whole_batches(log: &PartitionLog<SimStorage>) -> Vec<Vec<u8>> {
    block_on(async {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let r = log.read(offset, end, 1 << 20, true).await.expect("read");
            assert!(!r.batches.is_empty(), "no batch at {offset} below {end}");
            for b in r.batches {
                let b = b.to_bytes().to_vec();
                let info = batch::validate(&b, usize::MAX).expect("valid");
                assert_eq!(info.base_offset, offset, "hole or overlap at {offset}");
                offset = info.next_offset();
                out.push(b);
            }
        }
        out
    })
}

/// Reads at every offset of the log: the first batch served holds it (indexes and cache
/// agree with the data; no entry points past the end).
fn check_every_offset(log: &PartitionLog<SimStorage>) {
    block_on(async {
        let end = log.log_end_offset();
        for offset in log.log_start_offset()..end {
            let r = log.read(offset, end, 1, true).await.expect("read");
            let b = r.batches.first().expect("a batch").to_bytes();
            let info = batch::validate(&b, usize::MAX).expect("valid");
            assert!(
                info.base_offset <= offset && offset < info.next_offset(),
                "read at {offset} served [{}, {})",
                info.base_offset,
                info.next_offset()
            );
        }
        assert!(log.read(end + 1, end + 2, 1, true).await.is_err());
    })
}

/// The epoch table implied by batches: the start of each increase.
fn epochs_of(batches: &[Vec<u8>]) -> Vec<(i32, i64)> {
    let mut t: Vec<(i32, i64)> = Vec::new();
    for b in batches {
        let info = batch::peek(b).expect("header");
        if t.last()
            .is_none_or(|&(e, _)| info.partition_leader_epoch > e)
        {
            t.push((info.partition_leader_epoch, info.base_offset));
        }
    }
    t
}

fn config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::EveryBatch,
        segment_bytes: 4096,
        ..small_config()
    }
}

fn segment_files(disk: &SimStorage) -> Vec<PathBuf> {
    disk.files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect()
}

/// A follower log with `n` buffers of replicated batches over several segments and epochs
/// 1, 1, 3, 3, 4, ...; returns the disk and every batch.
fn follower_with_data(n: usize) -> (SimStorage, Vec<Vec<u8>>) {
    let disk = SimStorage::default();
    let log = open(&disk, config());
    let mut all = Vec::new();
    let mut next = 0;
    for i in 0..n {
        let epoch = [1, 1, 3, 3, 4, 4, 4, 6][i % 8] + 6 * (i / 8) as i32;
        let (bs, end) = run_of(next, &[(2, epoch), (1, epoch), (3, epoch)], i as u8 * 3);
        let a = block_on(log.append_replicated(concat(&bs), 0)).expect("replicate");
        assert_eq!((a.base_offset, a.last_offset), (next, end - 1));
        block_on(log.wait_committed(a.last_offset)).expect("commit");
        next = end;
        all.extend(bs);
    }
    block_on(log.close()).expect("close");
    (disk, all)
}

#[test]
fn replicated_batches_are_stored_verbatim_with_their_offsets_and_epochs() {
    let (disk, all) = follower_with_data(12);
    let log = open(&disk, config());
    assert!(
        segment_files(&disk).len() > 2,
        "the data spans several segments"
    );
    assert_eq!(whole_batches(&log), all, "stored byte for byte");
    assert_eq!(log.leader_epochs(), epochs_of(&all));
    let end = log.log_end_offset();
    assert_eq!(log.committed_end_offset(), end);
    check_every_offset(&log);
    // The same batches through the leader's append make the same files: rolls, indexes,
    // epoch table and size accounting follow one path.
    let leader_disk = SimStorage::default();
    let leader = open(&leader_disk, config());
    for b in &all {
        let info = batch::peek(b).expect("header");
        let a = block_on(leader.append(Bytes::copy_from_slice(b), info.partition_leader_epoch, 0))
            .expect("append");
        block_on(leader.wait_committed(a.last_offset)).expect("commit");
    }
    assert_eq!(leader.size_bytes(), log.size_bytes());
    block_on(leader.close()).expect("close");
    block_on(log.close()).expect("close");
    assert_eq!(disk.files(), leader_disk.files());
    for p in disk.files() {
        let a = block_on(disk.read_file(&p)).expect("read");
        let b = block_on(leader_disk.read_file(&p)).expect("read");
        assert_eq!(a, b, "{} differs", p.display());
    }
}

#[test]
fn replicated_appends_refuse_gaps_overlaps_regressions_and_bad_batches() {
    let disk = SimStorage::default();
    let log = open(&disk, config());
    let (first, end) = run_of(0, &[(2, 5), (3, 5)], 1);
    block_on(log.append_replicated(concat(&first), 0)).expect("first");
    let refused = |bytes: Bytes| {
        let e = block_on(log.append_replicated(bytes, 0)).expect_err("refused");
        assert_eq!(log.log_end_offset(), end, "nothing appended after {e}");
        assert_eq!(
            log.leader_epochs(),
            vec![(5, 0)],
            "epochs untouched after {e}"
        );
        e
    };
    let gap = refused(Bytes::from(stored(end + 1, 1, 5, 9, 0)));
    assert!(
        matches!(gap, LogError::NonContiguous { expected, found } if expected == end && found == end + 1),
        "{gap}"
    );
    let overlap = refused(Bytes::from(stored(end - 1, 1, 5, 9, 0)));
    assert!(
        matches!(overlap, LogError::NonContiguous { found, .. } if found == end - 1),
        "{overlap}"
    );
    // The second batch of a buffer skips an offset: the whole buffer is refused.
    let split = concat(&[stored(end, 2, 6, 1, 0), stored(end + 3, 1, 6, 2, 0)]);
    let e = refused(split);
    assert!(
        matches!(e, LogError::NonContiguous { expected, .. } if expected == end + 2),
        "{e}"
    );
    let regress = refused(Bytes::from(stored(end, 1, 4, 9, 0)));
    assert!(
        matches!(
            regress,
            LogError::EpochRegression {
                epoch: 4,
                latest: 5,
                ..
            }
        ),
        "{regress}"
    );
    // Epochs decreasing inside one buffer.
    let e = refused(concat(&[
        stored(end, 1, 7, 1, 0),
        stored(end + 1, 1, 6, 2, 0),
    ]));
    assert!(
        matches!(
            e,
            LogError::EpochRegression {
                epoch: 6,
                latest: 7,
                ..
            }
        ),
        "{e}"
    );
    let mut bad = stored(end, 1, 5, 9, 0);
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    assert!(matches!(
        refused(Bytes::from(bad)),
        LogError::InvalidBatch(_)
    ));
    let cut = stored(end, 2, 5, 9, 0);
    assert!(matches!(
        refused(Bytes::copy_from_slice(&cut[..cut.len() - 3])),
        LogError::InvalidBatch(_)
    ));
    assert!(matches!(refused(Bytes::new()), LogError::InvalidBatch(_)));
    // A good one still goes in after all that.
    let (next, _) = run_of(end, &[(1, 5), (1, 8)], 20);
    block_on(log.append_replicated(concat(&next), 0)).expect("continues");
    assert_eq!(log.leader_epochs(), vec![(5, 0), (8, end + 1)]);
}

#[test]
fn truncate_to_unwinds_segments_indexes_cache_and_epochs() {
    let (disk, all) = follower_with_data(12);
    let log = open(&disk, config());
    let segments_before = segment_files(&disk);
    // An offset inside a 3-record batch of an early (sealed) segment.
    let victim = all
        .iter()
        .map(|b| batch::peek(b).expect("header"))
        .find(|i| i.base_offset > 10 && i.record_count == 3)
        .expect("a 3-record batch");
    let end = block_on(log.truncate_to(victim.base_offset + 1)).expect("truncate");
    assert_eq!(
        end, victim.base_offset,
        "cut at the start of the batch holding the offset"
    );
    let kept: Vec<Vec<u8>> = all
        .iter()
        .filter(|b| batch::peek(b).expect("header").base_offset < end)
        .cloned()
        .collect();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.committed_end_offset(), end);
    assert_eq!(log.durable_end_offset(), end);
    assert_eq!(log.written_end_offset(), end);
    assert_eq!(whole_batches(&log), kept);
    assert_eq!(log.leader_epochs(), epochs_of(&kept));
    check_every_offset(&log);
    let segments_after = segment_files(&disk);
    assert!(
        segments_after.len() < segments_before.len(),
        "segments above the cut deleted"
    );
    let sizes: u64 = segments_after
        .iter()
        .map(|p| {
            block_on(disk.read_file(p))
                .expect("read")
                .expect("exists")
                .len() as u64
        })
        .sum();
    assert_eq!(log.size_bytes(), sizes, "size accounting follows the files");
    let last = segments_after.last().expect("a segment");
    assert!(
        !disk.files().contains(&last.with_extension("index")),
        "the cut segment (now active) has no stale index files"
    );
    assert!(
        !disk.files().iter().any(|p| p.ends_with("truncation")),
        "intent removed"
    );
    // Appends continue at the new end, on both paths, and everything survives a reopen.
    let (more, next) = run_of(end, &[(2, 40), (1, 40)], 200);
    block_on(log.append_replicated(concat(&more), 0)).expect("replicate after cut");
    let a = block_on(log.append(Bytes::from(tagged(2, 10, 5, 99)), 41, 0)).expect("append");
    assert_eq!(a.base_offset, next);
    block_on(log.wait_committed(a.last_offset)).expect("commit");
    let mut expect = kept.clone();
    expect.extend(more);
    let epochs_now = log.leader_epochs();
    assert_eq!(
        &epochs_now[epochs_now.len() - 2..],
        &[(40, end), (41, next)],
        "new epochs start where the cut left the log"
    );
    let data_now = whole_batches(&log);
    assert_eq!(&data_now[..expect.len()], &expect[..]);
    block_on(log.close()).expect("close");
    let log = open(&disk, config());
    assert_eq!(whole_batches(&log), data_now);
    assert_eq!(log.leader_epochs(), epochs_now);
    check_every_offset(&log);
    // Cutting everything leaves an empty log at its start.
    assert_eq!(block_on(log.truncate_to(0)).expect("to zero"), 0);
    assert_eq!(log.log_end_offset(), 0);
    assert!(log.leader_epochs().is_empty());
    block_on(log.close()).expect("close");
    let log = open(&disk, config());
    assert_eq!(log.log_end_offset(), 0);
    assert!(log.leader_epochs().is_empty());
}

#[test]
fn truncate_to_checks_its_range_and_the_log_start() {
    let disk = SimStorage::default();
    let log = open(&disk, config());
    let (bs, end) = run_of(0, &[(3, 1), (3, 1), (3, 2)], 1);
    block_on(log.append_replicated(concat(&bs), 0)).expect("replicate");
    block_on(log.flush()).expect("flush");
    assert!(matches!(
        block_on(log.truncate_to(end + 1)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(block_on(log.truncate_to(end)).expect("no-op"), end);
    // DeleteRecords moved the start into the second batch: a cut inside that batch would
    // take the start back, one below the start is outside the log.
    assert_eq!(block_on(log.delete_records_before(4)).expect("delete"), 4);
    for offset in [3, 4, 5] {
        assert!(
            matches!(
                block_on(log.truncate_to(offset)),
                Err(LogError::OffsetOutOfRange { .. })
            ),
            "cut at {offset}"
        );
    }
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(block_on(log.truncate_to(6)).expect("at a boundary"), 6);
    assert_eq!(log.leader_epochs(), vec![(1, 0)]);
}

#[test]
fn waiters_for_truncated_offsets_get_an_error_never_success() {
    let disk = SimStorage::default();
    let log = open(
        &disk,
        LogConfig {
            flush: FlushPolicy::Never,
            ..config()
        },
    );
    let a = block_on(log.append(Bytes::from(tagged(2, 10, 0, 1)), 0, 0)).expect("a");
    let b = block_on(log.append(Bytes::from(tagged(2, 10, 0, 2)), 0, 0)).expect("b");
    block_on(async {
        // The truncation takes the I/O slots first; the waiter then queues behind it.
        let mut cut = pin!(log.truncate_to(b.base_offset));
        assert!(poll_once(cut.as_mut()).await.is_none());
        let mut wait = pin!(log.wait_committed(b.last_offset));
        assert!(
            poll_once(wait.as_mut()).await.is_none(),
            "waits behind the cut"
        );
        assert_eq!(cut.await.expect("cut"), b.base_offset);
        match wait.await {
            Err(LogError::Truncated { offset, end }) => {
                assert_eq!((offset, end), (b.last_offset, b.base_offset));
            }
            other => panic!("waiter for a removed offset got {other:?}"),
        }
        // Waiting for a removed offset after the cut is no success either.
        let late = log.wait_committed(b.last_offset).await;
        assert!(
            matches!(late, Err(LogError::OffsetOutOfRange { .. })),
            "{late:?}"
        );
        log.wait_committed(a.last_offset)
            .await
            .expect("kept offsets still commit");
    });
}

/// Crash tests: `setup` builds a disk; `act` runs on a copy of it with the disk halted after
/// `n` operations, for every `n` until `act` completes; after a crash of every kind the log
/// must open and `judge` it.
fn crash_at_every_step(
    setup: &SimStorage,
    act: impl Fn(&PartitionLog<SimStorage>) -> bool,
    judge: impl Fn(&PartitionLog<SimStorage>, u64, &str),
) -> u64 {
    for n in 0.. {
        let disk = setup.crash(CrashMode::KeepAll);
        let log = open(&disk, config());
        disk.set_faults(Faults {
            halt_after_ops: Some(n),
            ..Faults::default()
        });
        let completed = act(&log);
        drop(log);
        for (name, mode) in [
            ("lose-unsynced", CrashMode::LoseUnsynced),
            ("torn", CrashMode::Torn { seed: n }),
            ("keep-all", CrashMode::KeepAll),
        ] {
            let after = disk.crash(mode);
            let (log, _) = block_on(PartitionLog::open(after.clone(), dir(), config()))
                .unwrap_or_else(|e| panic!("open after a {name} crash at op {n}: {e}"));
            judge(&log, n, name);
            check_every_offset(&log);
            // It keeps working: an append lands at the end and survives a clean reopen.
            let end = log.log_end_offset();
            let epoch = log.latest_epoch().unwrap_or(0).max(0);
            let b = stored(end, 1, epoch, 77, 0);
            block_on(log.append_replicated(Bytes::from(b), 0)).expect("append after recovery");
            block_on(log.close()).expect("close");
            let log = open(&after, config());
            assert_eq!(log.log_end_offset(), end + 1, "{name} crash at op {n}");
            // The epoch file lost what the crash lost before new data reached those offsets.
            let data = whole_batches(&log);
            assert_eq!(
                log.leader_epochs(),
                epochs_of(&data),
                "{name} crash at op {n}"
            );
        }
        if completed {
            return n;
        }
    }
    unreachable!()
}

#[test]
fn a_crash_at_every_step_of_a_truncation_recovers_the_old_or_the_new_log() {
    let (disk, all) = follower_with_data(10);
    let infos: Vec<_> = all
        .iter()
        .map(|b| batch::peek(b).expect("header"))
        .collect();
    let end = infos.last().expect("data").next_offset();
    // Cuts in the active segment, inside a sealed one, at a segment base, at the start.
    let log = open(&disk, config());
    let active_base = segment_files(&disk)
        .last()
        .and_then(|p| p.file_stem()?.to_str()?.parse::<i64>().ok())
        .expect("active base");
    drop(log);
    let targets = [end - 1, 11, active_base, 0];
    for target in targets {
        let new_end = infos
            .iter()
            .find(|i| i.base_offset <= target && target < i.next_offset())
            .map_or(target, |i| i.base_offset);
        let old: Vec<Vec<u8>> = all.clone();
        let new: Vec<Vec<u8>> = all
            .iter()
            .filter(|b| batch::peek(b).expect("header").base_offset < new_end)
            .cloned()
            .collect();
        let steps = crash_at_every_step(
            &disk,
            |log| block_on(log.truncate_to(target)).is_ok(),
            |log, n, mode| {
                let got = whole_batches(log);
                let epochs = log.leader_epochs();
                if got == old {
                    assert_eq!(
                        epochs,
                        epochs_of(&old),
                        "old data, other epochs ({mode} at {n})"
                    );
                } else {
                    assert_eq!(
                        got.len(),
                        new.len(),
                        "cut {target}: neither old nor new after a {mode} crash at op {n}"
                    );
                    assert_eq!(got, new, "cut {target}: {mode} crash at op {n}");
                    assert_eq!(
                        epochs,
                        epochs_of(&new),
                        "new data, other epochs ({mode} at {n})"
                    );
                }
            },
        );
        eprintln!(
            "cut at {target} (end {end}, {} segments): {steps} operations",
            segment_files(&disk).len()
        );
        assert!(steps > 8, "cut {target} took only {steps} operations");
    }
}

#[test]
fn a_crash_at_every_step_of_replicated_appends_leaves_a_prefix() {
    let (disk, all) = follower_with_data(4);
    let end0 = batch::peek(all.last().expect("data"))
        .expect("header")
        .next_offset();
    let (more, _) = run_of(
        end0,
        &[(2, 9), (1, 9), (3, 11), (2, 11), (1, 12), (2, 12)],
        100,
    );
    let mut full = all.clone();
    full.extend(more.iter().cloned());
    let acked = std::cell::RefCell::new(0i64);
    crash_at_every_step(
        &disk,
        |log| {
            *acked.borrow_mut() = end0;
            for pair in more.chunks(2) {
                let Ok(a) = block_on(log.append_replicated(concat(pair), 0)) else {
                    return false;
                };
                if block_on(log.wait_committed(a.last_offset)).is_err() {
                    return false;
                }
                *acked.borrow_mut() = a.last_offset + 1;
            }
            true
        },
        |log, n, mode| {
            let got = whole_batches(log);
            assert_eq!(
                got[..],
                full[..got.len()],
                "not a prefix after a {mode} crash at op {n}"
            );
            assert_eq!(
                log.leader_epochs(),
                epochs_of(&got),
                "{mode} crash at op {n}"
            );
            // EveryBatch: what wait_committed confirmed was fdatasync'd.
            assert!(
                log.log_end_offset() >= *acked.borrow(),
                "{mode} crash at op {n} lost committed offsets below {}",
                acked.borrow()
            );
        },
    );
}

#[test]
fn control_files_without_a_version_byte_still_open() {
    let disk = SimStorage::default();
    let log = open(&disk, config());
    let (bs, _) = run_of(0, &[(2, 3), (2, 3), (2, 7)], 1);
    block_on(log.append_replicated(concat(&bs), 0)).expect("replicate");
    block_on(log.flush()).expect("flush");
    block_on(log.delete_records_before(2)).expect("delete");
    block_on(log.close()).expect("close");
    // Rewrite each control file the way builds before the version byte wrote it: body and
    // CRC32C of the body.
    let legacy = |name: &str, body: Vec<u8>| {
        let mut v = body.clone();
        v.extend_from_slice(&shardlog_format::crc32c(&[&body]).to_be_bytes());
        block_on(disk.write_file_atomic(&dir().join(name), &v)).expect("write");
    };
    let mut epochs = Vec::new();
    for (e, o) in [(3i32, 0i64), (7, 4)] {
        epochs.extend_from_slice(&e.to_be_bytes());
        epochs.extend_from_slice(&o.to_be_bytes());
    }
    legacy("leader-epochs", epochs);
    legacy("log-start", 2i64.to_be_bytes().to_vec());
    let marker = block_on(disk.read_file(&dir().join("clean-shutdown")))
        .expect("read")
        .expect("marker");
    assert_eq!(marker[0], 1, "written with the version byte");
    legacy("clean-shutdown", marker[1..marker.len() - 4].to_vec());
    let (log, report) =
        block_on(PartitionLog::open(disk.clone(), dir(), config())).expect("legacy files open");
    assert!(report.clean, "the legacy clean-shutdown marker was read");
    assert_eq!(log.log_start_offset(), 2);
    assert_eq!(log.leader_epochs(), vec![(3, 0), (7, 4)]);
    assert_eq!(log.log_end_offset(), 6);
}

#[test]
fn a_control_file_from_a_newer_format_is_refused_by_name() {
    let disk = SimStorage::default();
    let log = open(&disk, config());
    block_on(log.append_replicated(Bytes::from(stored(0, 1, 2, 1, 0)), 0)).expect("replicate");
    block_on(log.close()).expect("close");
    let p = dir().join("leader-epochs");
    let mut file = block_on(disk.read_file(&p)).expect("read").expect("exists");
    assert_eq!(file[0], 1, "version 1");
    // Version 2 with a checksum that matches it: a newer build's file, not a corrupt one.
    let n = file.len();
    let crc = u32::from_be_bytes(file[n - 4..].try_into().expect("4 bytes"))
        ^ shardlog_format::crc32c(&[&file[..n - 4]]);
    file[0] = 2;
    let sum = shardlog_format::crc32c(&[&file[..n - 4]]) ^ crc;
    file[n - 4..].copy_from_slice(&sum.to_be_bytes());
    block_on(disk.write_file_atomic(&p, &file)).expect("write");
    match block_on(PartitionLog::open(disk.clone(), dir(), config())) {
        Err(e @ LogError::UnsupportedFormat { version: 2, .. }) => {
            assert!(e.to_string().contains("leader-epochs"), "{e}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a file of an unknown format"),
    }
}

#[test]
fn a_truncation_waits_for_a_retention_pass_and_then_respects_its_start() {
    let (disk, _) = follower_with_data(12);
    let cfg = LogConfig {
        retention_ms: Some(1),
        ..config()
    };
    let (log, _) = block_on(PartitionLog::open(disk.clone(), dir(), cfg)).expect("open");
    let end = log.log_end_offset();
    block_on(async {
        // Retention reads the sealed segments' indexes (lazily loaded): it is under way.
        let mut retention = pin!(log.apply_retention(1 << 40));
        assert!(poll_once(retention.as_mut()).await.is_none());
        let mut cut = pin!(log.truncate_to(2));
        assert!(
            poll_once(cut.as_mut()).await.is_none(),
            "waits for retention"
        );
        let report = retention.await.expect("retention");
        assert!(report.segments_deleted > 0);
        let start = log.log_start_offset();
        assert!(start > 2);
        match cut.await {
            Err(LogError::OffsetOutOfRange { offset: 2, .. }) => {}
            other => panic!("a cut below the new start: {other:?}"),
        }
        assert_eq!(log.log_end_offset(), end);
    });
    check_every_offset(&log);
}

#[test]
fn a_retention_pass_waits_for_a_truncation() {
    let (disk, all) = follower_with_data(12);
    let cfg = LogConfig {
        retention_ms: Some(1),
        ..config()
    };
    let (log, _) = block_on(PartitionLog::open(disk.clone(), dir(), cfg)).expect("open");
    let cut_end = block_on(async {
        // The cut reads headers in a sealed segment: under way when retention starts.
        let mut cut = pin!(log.truncate_to(2));
        assert!(poll_once(cut.as_mut()).await.is_none());
        let retention = log.apply_retention(1 << 40);
        let (cut, retention) = futures_lite::future::zip(cut, retention).await;
        retention.expect("retention after the cut");
        cut.expect("cut")
    });
    assert!(cut_end <= 2);
    assert_eq!(log.log_end_offset(), cut_end);
    assert!(log.log_start_offset() <= cut_end);
    let kept: Vec<Vec<u8>> = all
        .into_iter()
        .filter(|b| batch::peek(b).expect("header").base_offset < cut_end)
        .collect();
    assert_eq!(whole_batches(&log), kept);
    block_on(log.close()).expect("close");
    let log = open(&disk, config());
    assert_eq!(log.log_end_offset(), cut_end);
}

/// Found by the cluster simulation (`server/tests/cluster_sim.rs`, seed 9087 of a long run):
/// a leader appended in epoch 5 at offset 0 under flush=never and lost power; its data was
/// gone and the epoch table (written whole, atomically) kept (5, 0), so the log reopened
/// empty with latest epoch 5. As a follower it fetches with last fetched epoch 5, the leader
/// (which never had epoch 5) answers with a diverging epoch below it, and the follower cuts
/// at its own end. That cut must drop the epoch with no records (Kafka's `truncateTo` does
/// the same at the log end), else the next fetch says epoch 5 again and the follower cuts
/// forever without ever catching up.
#[test]
fn a_cut_at_the_log_end_drops_an_epoch_with_no_records() {
    let cfg = LogConfig {
        flush: FlushPolicy::Never,
        ..config()
    };
    let disk = SimStorage::default();
    let log = open(&disk, cfg.clone());
    let a = block_on(log.append(Bytes::from(tagged(1, 10, 5, 1)), 5, 0)).expect("append");
    block_on(log.wait_written(a.last_offset)).expect("written");
    drop(log);
    let disk = disk.crash(CrashMode::LoseUnsynced);
    let log = open(&disk, cfg.clone());
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(
        log.leader_epochs(),
        vec![(5, 0)],
        "the case: an empty log whose epoch table names an epoch"
    );
    assert_eq!(block_on(log.truncate_to(0)).expect("cut at the end"), 0);
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.end_offset_for_epoch(5), None);
    // The follower goes on from the leader's epochs, and the table says so after a restart.
    let (bs, _) = run_of(0, &[(2, 4), (1, 6)], 30);
    block_on(log.append_replicated(concat(&bs), 0)).expect("replicate");
    block_on(log.flush()).expect("flush");
    assert_eq!(log.leader_epochs(), vec![(4, 0), (6, 2)]);
    block_on(log.close()).expect("close");
    let log = open(&disk, cfg);
    assert_eq!(log.leader_epochs(), vec![(4, 0), (6, 2)]);
    assert_eq!(whole_batches(&log), bs);
}

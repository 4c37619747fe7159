//! Behaviour of the partition log on the simulated disk: reads, rolls, indexes, retention,
//! group commit, recovery, corruption and injected faults.

mod common;

use bytes::Bytes;
use common::*;
use futures_lite::future::block_on;
use shardlog_engine::batch;
use shardlog_engine::io::sim::{CrashMode, Faults};
use shardlog_engine::{DiskOp, FlushPolicy, LogConfig, LogError, SimStorage, TimestampType};

#[test]
fn append_assigns_contiguous_offsets_and_reads_back() {
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    block_on(async {
        for i in 0..50 {
            let a = log
                .append(
                    Bytes::copy_from_slice(&tagged(3, 100, 1000 + i, i as u8)),
                    0,
                    0,
                )
                .await
                .expect("append");
            assert_eq!(a.base_offset, i * 3);
            assert_eq!(a.last_offset, i * 3 + 2);
            let c = log.wait_committed(a.last_offset).await.expect("commit");
            assert_eq!(c.through(), a.last_offset);
        }
    });
    assert_eq!(log.log_end_offset(), 150);
    assert_eq!(log.committed_end_offset(), 150);
    let all = read_all(&log);
    assert_eq!(all.len(), 50);
    for (i, (base, next, _)) in all.iter().enumerate() {
        assert_eq!((*base, *next), (i as i64 * 3, i as i64 * 3 + 3));
    }
    // Reading from the middle of a batch returns that whole batch first.
    let r = block_on(log.read(4, 150, 1, true)).expect("read");
    assert_eq!(r.batches[0].info().expect("hdr").base_offset, 3);
    // max_bytes too small and not min_one: nothing.
    assert!(block_on(log.read(4, 150, 1, false))
        .expect("read")
        .batches
        .is_empty());
    // Past the end: out of range; at the end: empty.
    assert!(matches!(
        block_on(log.read(151, 200, 100, true)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(block_on(log.read(150, 200, 100, true))
        .expect("read")
        .batches
        .is_empty());
}

#[test]
fn invalid_batches_are_refused_and_nothing_is_written() {
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    let mut bad = tagged(2, 10, 0, 1);
    bad[40] ^= 0xff;
    let err = block_on(log.append(Bytes::copy_from_slice(&bad), 0, 0)).expect_err("corrupt");
    assert!(
        matches!(err, LogError::InvalidBatch(batch::BatchError::Crc { .. })),
        "{err}"
    );
    let huge = tagged(1, 2_000_000, 0, 1);
    let err = block_on(log.append(Bytes::copy_from_slice(&huge), 0, 0)).expect_err("too large");
    assert!(
        matches!(
            err,
            LogError::InvalidBatch(batch::BatchError::TooLarge { .. })
        ),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

thread_local! {
    static DISK_OPS: std::cell::RefCell<Vec<(DiskOp, std::time::Duration)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn record_disk_op(op: DiskOp, d: std::time::Duration) {
    DISK_OPS.with(|v| v.borrow_mut().push((op, d)));
}

#[test]
fn writes_and_fdatasyncs_are_timed_for_the_observer() {
    let disk = SimStorage::default();
    let log = open(&disk, keep_all_config());
    let delay = std::time::Duration::from_millis(30);
    disk.set_faults(Faults {
        sync_delay: Some(delay),
        ..Faults::default()
    });
    shardlog_engine::disk_ops::set_observer(Some(record_disk_op));
    append_committed(&log, &tagged(3, 100, 0, 1));
    shardlog_engine::disk_ops::set_observer(None);
    let seen = DISK_OPS.with(|v| v.take());
    let (writes, syncs) = disk.counters();
    let count = |op| seen.iter().filter(|(o, _)| *o == op).count() as u64;
    assert_eq!(count(DiskOp::Write), writes, "{seen:?}");
    assert_eq!(count(DiskOp::Fdatasync), syncs, "{seen:?}");
    assert!(syncs >= 1, "{seen:?}");
    assert!(
        seen.iter()
            .filter(|(o, _)| *o == DiskOp::Fdatasync)
            .all(|(_, d)| *d >= delay),
        "every fdatasync took the device's {delay:?}: {seen:?}"
    );
}

#[test]
fn logs_sharing_a_cache_budget_stay_within_it_and_read_evicted_data_from_disk() {
    let disk = SimStorage::default();
    let open_at = |d: &str| {
        let (log, _) = block_on(shardlog_engine::PartitionLog::open(
            disk.clone(),
            std::path::PathBuf::from(d),
            LogConfig {
                cache_bytes: 1 << 20,
                ..small_config()
            },
        ))
        .expect("open");
        log
    };
    let (a, b) = (open_at("/data/a-0"), open_at("/data/b-0"));
    let budget = shardlog_engine::CacheBudget::new(8 * 1024);
    a.join_cache_budget(&budget);
    b.join_cache_budget(&budget);
    for i in 0..20 {
        append_committed(&a, &tagged(2, 300, 0, i));
    }
    let a_before = read_all(&a);
    assert!(a.cached_bytes() > 4096, "a alone fills the budget");
    for i in 0..20 {
        append_committed(&b, &tagged(2, 300, 0, 100 + i));
        assert!(budget.used_bytes() <= 8 * 1024, "{}", budget.used_bytes());
        assert_eq!(budget.used_bytes(), a.cached_bytes() + b.cached_bytes());
    }
    // b's newer batches pushed a's older ones out; a still reads everything, from disk.
    assert!(a.cached_bytes() < 1024, "{}", a.cached_bytes());
    assert_eq!(read_all(&a), a_before);
    assert_eq!(read_all(&b).len(), 20);
    drop(a);
    assert_eq!(budget.used_bytes(), b.cached_bytes());
}

#[test]
fn group_commit_shares_fsyncs() {
    let disk = SimStorage::default();
    let log = open(&disk, keep_all_config());
    disk.set_faults(Faults::default());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let log = &log;
            async move {
                let a = log
                    .append(Bytes::copy_from_slice(&tagged(1, 100, 0, i as u8)), 0, 0)
                    .await
                    .expect("append");
                log.wait_committed(a.last_offset).await.expect("commit");
                assert!(log.durable_end_offset() > a.last_offset);
            }
        })
        .collect();
    block_on(futures::future::join_all(tasks));
    let (writes, syncs) = disk.counters();
    assert_eq!(log.durable_end_offset(), 64);
    assert!(
        syncs < 64 / 4,
        "64 concurrent appends took {syncs} fsyncs ({writes} writes)"
    );
}

#[test]
fn rolls_segments_and_reads_across_them_from_disk() {
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    block_on(async {
        for i in 0..200 {
            let a = log
                .append(Bytes::copy_from_slice(&tagged(2, 200, i, i as u8)), 0, 0)
                .await
                .expect("append");
            log.wait_committed(a.last_offset).await.expect("commit");
        }
    });
    let segs = disk
        .files()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .count();
    assert!(segs > 10, "expected many segments, got {segs}");
    assert!(log.cached_bytes() <= 2048);
    let all = read_all(&log);
    assert_eq!(all.len(), 200);
    assert_eq!(all.last().map(|b| b.1), Some(400));
}

#[test]
fn clean_reopen_trusts_marker_and_crash_reopen_scans() {
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    block_on(async {
        for i in 0..30 {
            let a = log
                .append(Bytes::copy_from_slice(&tagged(1, 300, i, i as u8)), 3, 0)
                .await
                .expect("append");
            log.wait_committed(a.last_offset).await.expect("commit");
        }
    });
    let before = read_all(&log);
    block_on(log.close()).expect("close");
    let (log, report) = block_on(shardlog_engine::PartitionLog::open(
        disk.clone(),
        dir(),
        small_config(),
    ))
    .expect("open");
    assert!(report.clean, "{report:?}");
    assert_eq!(report.scanned_bytes, 0);
    assert_eq!(read_all(&log), before);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 30)));
    // Unclean: the marker was consumed at open, so a crash now forces a scan.
    block_on(async {
        let a = log
            .append(Bytes::copy_from_slice(&tagged(1, 300, 99, 99)), 4, 0)
            .await
            .expect("append");
        log.wait_committed(a.last_offset).await.expect("commit");
    });
    let disk2 = disk.crash(CrashMode::LoseUnsynced);
    let (log2, report) = block_on(shardlog_engine::PartitionLog::open(
        disk2,
        dir(),
        small_config(),
    ))
    .expect("open");
    assert!(!report.clean);
    assert!(report.scanned_bytes > 0);
    assert_eq!(log2.log_end_offset(), 31);
    assert_eq!(log2.end_offset_for_epoch(3), Some((3, 30)));
    assert_eq!(log2.end_offset_for_epoch(4), Some((4, 31)));
    assert_eq!(log2.end_offset_for_epoch(2), None);
}

#[test]
fn retention_by_size_time_and_delete_records() {
    let disk = SimStorage::default();
    let cfg = LogConfig {
        retention_bytes: Some(20_000),
        ..small_config()
    };
    let log = open(&disk, cfg);
    block_on(async {
        for i in 0..300 {
            let a = log
                .append(Bytes::copy_from_slice(&tagged(1, 200, 1_000 + i, 0)), 0, 0)
                .await
                .expect("append");
            log.wait_committed(a.last_offset).await.expect("commit");
        }
    });
    let before = log.size_bytes();
    let r = block_on(log.apply_retention(0)).expect("retention");
    assert!(r.segments_deleted > 0);
    assert!(
        log.size_bytes() < 20_000 + 8 * 1024,
        "{} of {before}",
        log.size_bytes()
    );
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(matches!(
        block_on(log.read(start - 1, 300, 1000, true)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log).first().map(|b| b.0), Some(start));

    // Time: at now = 1_310 with retention 50 ms, segments whose newest record is older than
    // 1_260 (offset 260) go; the one holding offset 260 stays.
    log.set_config(LogConfig {
        retention_ms: Some(50),
        retention_bytes: None,
        ..small_config()
    });
    block_on(log.apply_retention(1_310)).expect("retention");
    let start2 = log.log_start_offset();
    assert!(
        start2 > start && start2 <= 260,
        "log start {start} -> {start2}"
    );

    // DeleteRecords moves the start inside a segment and persists it.
    let new_start = block_on(log.delete_records_before(250)).expect("delete");
    assert_eq!(new_start, 250);
    assert_eq!(read_all(&log).first().map(|b| b.0), Some(250));
    assert!(matches!(
        block_on(log.delete_records_before(301)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    block_on(log.close()).expect("close");
    let log = open(&disk, small_config());
    assert_eq!(log.log_start_offset(), 250);
}

/// Under size retention in steady state every segment that retention removes is reused by a
/// roll: nothing is freed (on a file system with online discard, freeing space stalls the
/// device). Holds whether retention is checked often or rarely between rolls, whatever the
/// segment sizes.
#[test]
fn steady_size_retention_reuses_every_deleted_segment() {
    let mut periodic_deletions = 0;
    for (check_every, spread) in [
        (1, 200),
        (3, 50),
        (7, 200),
        (13, 400),
        (40, 120),
        (100, 300),
    ] {
        let disk = SimStorage::default();
        let limit = 40_000;
        let cfg = LogConfig {
            retention_bytes: Some(limit),
            ..small_config()
        };
        let log = open(&disk, cfg);
        let (mut deleted, mut freed) = (0, 0);
        block_on(async {
            for i in 0..3000i64 {
                // Batch sizes vary, so segments end at different sizes.
                let value = 150 + (i * 37 % spread) as usize;
                let a = log
                    .append(
                        Bytes::copy_from_slice(&tagged(1, value, 1_000 + i, 0)),
                        0,
                        0,
                    )
                    .await
                    .expect("append");
                log.wait_committed(a.last_offset).await.expect("commit");
                // The broker ticks every log every few milliseconds.
                log.tick(0).await.expect("tick");
                if i % check_every == 0 {
                    let r = log.apply_retention(0).await.expect("retention");
                    if i > 500 {
                        deleted += r.segments_deleted;
                        freed += r.segments_deleted - r.segments_recycled;
                    }
                    // Kafka's bound right after a check: less than one segment over.
                    assert!(log.size_bytes() < limit + 8 * 1024, "{}", log.size_bytes());
                }
            }
        });
        let ctx = format!("checked every {check_every} appends, spread {spread}");
        assert_eq!(
            freed, 0,
            "{ctx}: {freed} of {deleted} deleted segments were freed"
        );
        periodic_deletions += deleted;
    }
    assert!(
        periodic_deletions > 0,
        "periodic retention never found a segment to delete"
    );
}

#[test]
fn offset_for_timestamp_across_segments() {
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    block_on(async {
        for i in 0..100i64 {
            let a = log
                .append(
                    Bytes::copy_from_slice(&batch::build(0, 2, 300, 10 * i)),
                    0,
                    0,
                )
                .await
                .expect("append");
            log.wait_committed(a.last_offset).await.expect("commit");
        }
        assert_eq!(log.offset_for_timestamp(0).await.expect("ts"), Some((0, 0)));
        assert_eq!(
            log.offset_for_timestamp(455).await.expect("ts"),
            Some((92, 460))
        );
        assert_eq!(
            log.offset_for_timestamp(990).await.expect("ts"),
            Some((198, 990))
        );
        assert_eq!(log.offset_for_timestamp(991).await.expect("ts"), None);
    });
}

#[test]
fn log_append_time_is_stamped() {
    let disk = SimStorage::default();
    let log = open(
        &disk,
        LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..small_config()
        },
    );
    let a = block_on(log.append(Bytes::copy_from_slice(&batch::build(0, 2, 10, 5)), 0, 777))
        .expect("append");
    assert_eq!(a.log_append_time_ms, Some(777));
    block_on(log.flush()).expect("flush");
    let r = block_on(log.read(0, 2, 1000, true)).expect("read");
    let info = batch::validate(&r.batches[0].to_bytes(), usize::MAX).expect("valid");
    assert!(info.is_log_append_time());
    assert_eq!(info.max_timestamp, 777);
}

#[test]
fn torn_tail_is_truncated_after_last_valid_batch() {
    let disk = SimStorage::default();
    let log = open(
        &disk,
        LogConfig {
            segment_bytes: 1 << 20,
            ..small_config()
        },
    );
    block_on(async {
        for i in 0..10 {
            let a = log
                .append(Bytes::copy_from_slice(&tagged(1, 500, i, i as u8)), 0, 0)
                .await
                .expect("append");
            log.wait_committed(a.last_offset).await.expect("commit");
        }
    });
    drop(log);
    let seg = dir().join(format!("{:020}.log", 0));
    // Tear the last batch at every byte position; recovery keeps exactly the 9 intact batches.
    let batch_len = tagged(1, 500, 0, 0).len();
    for cut in [1usize, 12, 60, 61, batch_len - 1] {
        let d = disk.crash(CrashMode::KeepAll);
        d.with_file_mut(&seg, |f| f.truncate(9 * batch_len + cut))
            .expect("segment");
        let (log, report) = block_on(shardlog_engine::PartitionLog::open(
            d,
            dir(),
            small_config(),
        ))
        .expect("open");
        assert_eq!(log.log_end_offset(), 9, "cut {cut}");
        assert_eq!(report.truncated_bytes, cut as u64);
        assert_eq!(read_all(&log).len(), 9);
    }
}

#[test]
fn flipped_bits_in_tail_truncate_and_in_sealed_segment_are_never_served() {
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    block_on(async {
        for i in 0..60 {
            let a = log
                .append(Bytes::copy_from_slice(&tagged(1, 300, i, i as u8)), 0, 0)
                .await
                .expect("append");
            log.wait_committed(a.last_offset).await.expect("commit");
        }
    });
    drop(log);
    let mut segs: Vec<_> = disk
        .files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    let last = segs.last().cloned().expect("segments");
    let last_base: i64 = last
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base");
    // Flip a bit inside the 2nd batch of the last segment: the tail from there is dropped.
    let d = disk.crash(CrashMode::KeepAll);
    let size = d.with_file_mut(&last, |f| f.len()).expect("seg");
    let per = 300 + 61 + 8;
    if size > per {
        d.with_file_mut(&last, |f| f[per + 100] ^= 0x10);
        let (log, report) = block_on(shardlog_engine::PartitionLog::open(
            d,
            dir(),
            small_config(),
        ))
        .expect("open");
        assert_eq!(log.log_end_offset(), last_base + 1);
        assert!(report.truncated_bytes > 0);
    }
    // Flip a bit in the first (sealed) segment: reads of it fail with Corrupt, never bad data.
    let d = disk.crash(CrashMode::KeepAll);
    d.with_file_mut(&segs[0], |f| f[200] ^= 0x01);
    let (log, _) = block_on(shardlog_engine::PartitionLog::open(
        d,
        dir(),
        small_config(),
    ))
    .expect("open");
    let r = block_on(log.read(0, 60, 100_000, true));
    assert!(matches!(r, Err(LogError::Corrupt { .. })), "{r:?}");
    // Data in later segments is still served.
    let later = block_on(log.read(last_base, 60, 100_000, true)).expect("read");
    assert!(!later.batches.is_empty());
}

#[test]
fn corrupt_or_missing_index_is_rebuilt() {
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    block_on(async {
        for i in 0..80 {
            let a = log
                .append(Bytes::copy_from_slice(&tagged(1, 200, i, i as u8)), 0, 0)
                .await
                .expect("append");
            log.wait_committed(a.last_offset).await.expect("commit");
        }
    });
    let expect = read_all(&log);
    block_on(log.close()).expect("close");
    let idx: Vec<_> = disk
        .files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    assert!(idx.len() > 2);
    disk.with_file_mut(&idx[0], |f| f.truncate(5));
    disk.with_file_mut(&idx[1], |f| {
        if f.len() >= 16 {
            f[12] ^= 0x7f; // position of the 2nd entry
        }
    });
    let _ = disk.with_file_mut(&idx[2], |f| f.clear());
    let log = open(&disk, small_config());
    assert_eq!(read_all(&log), expect);
}

#[test]
fn eio_on_fsync_fails_the_log_until_reopen() {
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    block_on(async {
        let a = log
            .append(Bytes::copy_from_slice(&tagged(1, 100, 0, 1)), 0, 0)
            .await
            .expect("append");
        log.wait_committed(a.last_offset).await.expect("commit");
        disk.set_faults(Faults {
            eio_sync_after: Some(0),
            ..Faults::default()
        });
        let a = log
            .append(Bytes::copy_from_slice(&tagged(1, 100, 0, 2)), 0, 0)
            .await
            .expect("append");
        let e = log
            .wait_committed(a.last_offset)
            .await
            .expect_err("fsync fails");
        assert!(
            matches!(
                e,
                LogError::Io {
                    op: "fdatasync",
                    ..
                }
            ),
            "{e}"
        );
        assert!(log.is_failed());
        assert!(matches!(
            log.append(Bytes::copy_from_slice(&tagged(1, 100, 0, 3)), 0, 0)
                .await,
            Err(LogError::Failed(_))
        ));
        // Reads of committed data still work.
        assert_eq!(
            log.read(0, 1, 1000, true)
                .await
                .expect("read")
                .batches
                .len(),
            1
        );
    });
    disk.set_faults(Faults::default());
    let d = disk.crash(CrashMode::LoseUnsynced);
    let log = open(&d, small_config());
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn eio_on_write_fails_the_waiters() {
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    disk.set_faults(Faults {
        eio_write_after: Some(2),
        ..Faults::default()
    });
    block_on(async {
        for i in 0..2 {
            let a = log
                .append(Bytes::copy_from_slice(&tagged(1, 100, 0, i)), 0, 0)
                .await
                .expect("append");
            log.wait_written(a.last_offset).await.expect("written");
        }
        let a = log
            .append(Bytes::copy_from_slice(&tagged(1, 100, 0, 9)), 0, 0)
            .await
            .expect("append");
        assert!(log.wait_written(a.last_offset).await.is_err());
        assert_eq!(log.written_end_offset(), 2);
    });
}

/// An I/O error reading a segment (a bad sector) surfaces as `LogError::Io`, from the read of
/// a sealed segment, from its index rebuild and from a timestamp lookup, never as an
/// out-of-range offset or corrupt data (the broker takes the partition offline on it); reads
/// the cache serves do not touch the disk. Once the device reads again, so does the log.
#[test]
fn eio_on_read_is_an_io_error() {
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    for i in 0..60 {
        append_committed(&log, &tagged(2, 200, 1000 + i, i as u8));
    }
    let before = read_all(&log);
    let end = log.log_end_offset();
    disk.set_faults(Faults {
        eio_read_of: Some(".log".into()),
        ..Faults::default()
    });
    block_on(async {
        let tail = log
            .read(end - 2, end, 1 << 20, true)
            .await
            .expect("cached tail");
        assert_eq!(
            tail.batches.len(),
            1,
            "the newest batch comes from the cache"
        );
        for err in [
            log.read(0, end, 1 << 20, true).await.map(|_| ()),
            log.offset_for_timestamp(1000).await.map(|_| ()),
        ] {
            let err = err.expect_err("a failed read is an error");
            assert!(matches!(err, LogError::Io { op: "read", .. }), "{err}");
        }
    });
    disk.set_faults(Faults::default());
    assert_eq!(read_all(&log), before);
}

#[test]
fn full_disk_refuses_appends_keeps_reads_and_recovers() {
    let disk = SimStorage::default();
    let cfg = LogConfig {
        preallocate_bytes: 1 << 20,
        segment_bytes: 4 << 20,
        ..small_config()
    };
    let log = open(&disk, cfg);
    disk.set_faults(Faults {
        capacity_bytes: Some((1 << 20) + 4096),
        ..Faults::default()
    });
    let mut accepted = 0;
    block_on(async {
        loop {
            match log
                .append(Bytes::copy_from_slice(&tagged(1, 8000, 0, 1)), 0, 0)
                .await
            {
                Ok(a) => {
                    log.wait_committed(a.last_offset).await.expect("commit");
                    accepted += 1;
                }
                Err(LogError::StorageFull(_)) => break,
                Err(e) => panic!("unexpected {e}"),
            }
            assert!(accepted < 1000);
        }
    });
    assert!(accepted > 50, "{accepted}");
    assert!(!log.is_failed());
    assert_eq!(read_all(&log).len(), accepted);
    disk.set_faults(Faults {
        capacity_bytes: Some(8 << 20),
        ..Faults::default()
    });
    block_on(async {
        let a = log
            .append(Bytes::copy_from_slice(&tagged(1, 8000, 0, 1)), 0, 0)
            .await
            .expect("append after space freed");
        log.wait_committed(a.last_offset).await.expect("commit");
    });
    assert_eq!(read_all(&log).len(), accepted + 1);
}

#[test]
fn unsynced_new_segment_is_not_trusted_without_dir_sync() {
    // A segment created and written but whose directory entry never became durable disappears
    // in a crash; everything the policy promised is in earlier, synced files.
    let disk = SimStorage::default();
    let log = open(
        &disk,
        LogConfig {
            flush: FlushPolicy::Never,
            ..small_config()
        },
    );
    block_on(async {
        for i in 0..100 {
            log.append(Bytes::copy_from_slice(&tagged(1, 200, i, 0)), 0, 0)
                .await
                .expect("append");
        }
        log.flush().await.expect("flush");
    });
    let durable = log.durable_end_offset();
    assert_eq!(durable, 100);
    let d = disk.crash(CrashMode::LoseUnsynced);
    let log = open(&d, small_config());
    assert_eq!(log.log_end_offset(), 100);
    assert_eq!(read_all(&log).len(), 100);
}

/// Power cut right after the first acknowledged append into a log whose directories were all
/// new: every directory entry on the path must have been synced. Before the fix only the log
/// directory's own entry was (in its parent); the new `logs/<topic>` above it, and `logs`
/// itself, were not, so the whole log could vanish with its acknowledged data.
#[test]
fn new_nested_log_directories_survive_a_power_cut() {
    let disk = SimStorage::default();
    let dir = std::path::PathBuf::from("/data/logs/new-topic~0001/0");
    let (log, _) = block_on(shardlog_engine::PartitionLog::open(
        disk.clone(),
        dir.clone(),
        small_config(),
    ))
    .expect("open");
    block_on(async {
        let a = log
            .append(Bytes::copy_from_slice(&tagged(3, 100, 1, 7)), 0, 0)
            .await
            .expect("append");
        log.wait_committed(a.last_offset).await.expect("commit");
    });
    let after = disk.crash(CrashMode::LoseUnsynced);
    let (log, _) = block_on(shardlog_engine::PartitionLog::open(
        after,
        dir,
        small_config(),
    ))
    .expect("reopen");
    assert_eq!(
        log.log_end_offset(),
        3,
        "acknowledged records lost with their directory"
    );
}

/// The simulated disk itself: a directory's entry, like a file's, survives a crash only once
/// its parent was synced, and a lost directory takes its synced files along.
#[test]
fn sim_directory_entries_are_volatile_until_the_parent_is_synced() {
    use shardlog_engine::{Storage, StorageFile};
    let disk = SimStorage::default();
    let top = std::path::Path::new("/a");
    let leaf = std::path::Path::new("/a/b/c");
    let file = leaf.join("f");
    block_on(async {
        let created = disk.create_dir_all(leaf).await.expect("mkdir");
        assert_eq!(
            created,
            vec![top.to_path_buf(), top.join("b"), leaf.to_path_buf()]
        );
        assert!(disk
            .create_dir_all(leaf)
            .await
            .expect("mkdir again")
            .is_empty());
        let f = disk.open_file(&file, true).await.expect("create");
        let mut buf = f.alloc(4096);
        buf.fill(1);
        f.write_at(buf, 4096, 0).await.expect("write");
        f.sync_data().await.expect("fsync");
        disk.sync_dir(leaf).await.expect("sync /a/b/c"); // f's entry
        disk.sync_dir(top).await.expect("sync /a"); // b's entry, not c's nor a's
    });
    assert!(
        disk.crash(CrashMode::LoseUnsynced).files().is_empty(),
        "c and a were never synced"
    );
    block_on(disk.sync_dir(&top.join("b"))).expect("sync /a/b");
    assert!(
        disk.crash(CrashMode::LoseUnsynced).files().is_empty(),
        "a was never synced in /"
    );
    block_on(disk.sync_dir(std::path::Path::new("/"))).expect("sync /");
    assert_eq!(disk.crash(CrashMode::LoseUnsynced).files(), vec![file]);
}

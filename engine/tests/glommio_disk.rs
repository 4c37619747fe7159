//! The log on a real file system through glommio's O_DIRECT files and io_uring.

use bytes::Bytes;
use futures_lite::future::yield_now;
use glommio::{LocalExecutorBuilder, Placement};
use shardlog_engine::batch;
use shardlog_engine::{GlommioStorage, LogConfig, PartitionLog};

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .spawn(move || async move { f().await })
        .expect("glommio executor (needs RLIMIT_MEMLOCK >= 512 KiB)");
    ex.join().expect("executor");
}

#[test]
fn append_flush_read_reopen_on_real_disk() {
    let tmp = tempfile::Builder::new()
        .prefix("shardlog-engine-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().join("t-0");
    run(move || async move {
        GlommioStorage::prepare(&dir)
            .await
            .expect("direct I/O works here");
        let cfg = LogConfig {
            segment_bytes: 256 << 10,
            index_interval_bytes: 4096,
            cache_bytes: 64 << 10,
            ..LogConfig::default()
        };
        let (log, report) = PartitionLog::open(GlommioStorage, dir.clone(), cfg.clone())
            .await
            .expect("open");
        assert_eq!(report.log_end_offset, 0);
        let mut expected = Vec::new();
        for i in 0..200i64 {
            let b = batch::build(0, 4, 1000 + (i as usize % 7) * 100, i);
            let a = log
                .append(Bytes::copy_from_slice(&b), 1, 0)
                .await
                .expect("append");
            if i % 3 == 0 {
                log.wait_committed(a.last_offset).await.expect("commit");
            }
            expected.push((a.base_offset, b[21..].to_vec()));
            yield_now().await;
        }
        log.flush().await.expect("flush");
        assert_eq!(log.durable_end_offset(), 800);
        let check = |log: PartitionLog<GlommioStorage>, expected: Vec<(i64, Vec<u8>)>| async move {
            let mut offset = 0;
            let mut n = 0;
            while offset < 800 {
                let r = log.read(offset, 800, 50_000, true).await.expect("read");
                for b in r.batches {
                    let b = b.to_bytes();
                    let info = batch::validate(&b, usize::MAX).expect("valid");
                    assert_eq!(info.base_offset, expected[n].0);
                    assert_eq!(&b[21..], &expected[n].1[..]);
                    offset = info.next_offset();
                    n += 1;
                }
            }
            assert_eq!(n, 200);
            log
        };
        let log = check(log, expected.clone()).await;
        assert_eq!(
            log.offset_for_timestamp(150).await.expect("ts"),
            Some((600, 150))
        );
        log.close().await.expect("close");
        let (log, report) = PartitionLog::open(GlommioStorage, dir.clone(), cfg.clone())
            .await
            .expect("reopen");
        assert!(report.clean);
        assert!(report.segments >= 4, "{report:?}");
        let log = check(log, expected.clone()).await;
        // Unclean: drop without close, then reopen scans the tail.
        drop(log);
        let (log, report) = PartitionLog::open(GlommioStorage, dir.clone(), cfg)
            .await
            .expect("reopen");
        assert!(!report.clean);
        let log = check(log, expected).await;
        log.remove().await.expect("remove");
        assert!(!dir.exists());
    });
}

/// Retention on a real disk: a deleted segment's name is gone at once (renamed
/// `.log.deleted`), its space is freed by the background deleter, and a `.deleted` file left
/// by a crash is picked up again when the log is opened.
#[test]
fn retention_frees_segments_in_the_background() {
    let tmp = tempfile::Builder::new()
        .prefix("shardlog-engine-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().join("t-0");
    shardlog_engine::io::deleter::configure(shardlog_engine::io::deleter::DeleterConfig {
        chunk_bytes: 64 << 10,
        interval: std::time::Duration::from_millis(1),
        grace: std::time::Duration::ZERO,
        queue: 16,
    });
    let segment_files = |dir: &std::path::Path, suffix: &str| -> usize {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                    .count()
            })
            .unwrap_or(0)
    };
    let d = dir.clone();
    run(move || async move {
        GlommioStorage::prepare(&d)
            .await
            .expect("direct I/O works here");
        let cfg = LogConfig {
            segment_bytes: 256 << 10,
            retention_bytes: Some(600 << 10),
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(GlommioStorage, d.clone(), cfg.clone())
            .await
            .expect("open");
        for i in 0..60i64 {
            let b = batch::build(0, 4, 4000, i);
            let a = log.append(Bytes::from(b), 1, 0).await.expect("append");
            log.wait_committed(a.last_offset).await.expect("commit");
        }
        let r = log.apply_retention(0).await.expect("retention");
        assert!(r.segments_deleted >= 1, "{r:?}");
        assert!(log.log_start_offset() > 0);
        log.close().await.expect("close");
        // A segment whose deletion a crash interrupted.
        std::fs::write(
            d.join("00000000000000000000.log.deleted"),
            vec![9u8; 100_000],
        )
        .expect("write leftover");
        let (log, report) = PartitionLog::open(GlommioStorage, d.clone(), cfg)
            .await
            .expect("reopen");
        assert_eq!(report.log_end_offset, 240);
        log.close().await.expect("close");
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while segment_files(&dir, ".deleted") > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        segment_files(&dir, ".deleted"),
        0,
        "deleted segments are freed"
    );
    assert!(segment_files(&dir, ".log") >= 1);
}

#[test]
fn truncate_and_replicate_on_real_disk() {
    let tmp = tempfile::Builder::new()
        .prefix("shardlog-engine-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().join("t-0");
    run(move || async move {
        GlommioStorage::prepare(&dir)
            .await
            .expect("direct I/O works here");
        let cfg = LogConfig {
            segment_bytes: 64 << 10,
            cache_bytes: 16 << 10,
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(GlommioStorage, dir.clone(), cfg.clone())
            .await
            .expect("open");
        let mut batches = Vec::new();
        for i in 0..100i64 {
            let mut b = batch::build(0, 2, 900 + (i as usize % 5) * 100, i);
            batch::assign(&mut b, 2 * i, 1 + (i / 40) as i32);
            batches.push(b);
        }
        for chunk in batches.chunks(4) {
            let a = log
                .append_replicated(Bytes::from(chunk.concat()), 0)
                .await
                .expect("replicate");
            log.wait_committed(a.last_offset).await.expect("commit");
        }
        assert_eq!(log.log_end_offset(), 200);
        // Inside batch 30 (offsets 60, 61), in a sealed segment: cut at 60.
        assert_eq!(log.truncate_to(61).await.expect("truncate"), 60);
        assert_eq!(log.leader_epochs(), vec![(1, 0)]);
        let more = batches[30..35]
            .iter()
            .map(|b| {
                let mut b = b.clone();
                let base = batch::peek(&b).expect("header").base_offset;
                batch::assign(&mut b, base, 9);
                b
            })
            .collect::<Vec<_>>();
        let a = log
            .append_replicated(Bytes::from(more.concat()), 0)
            .await
            .expect("replicate after the cut");
        log.wait_committed(a.last_offset).await.expect("commit");
        log.close().await.expect("close");
        let (log, _) = PartitionLog::open(GlommioStorage, dir.clone(), cfg)
            .await
            .expect("reopen");
        assert_eq!(log.log_end_offset(), 70);
        assert_eq!(log.leader_epochs(), vec![(1, 0), (9, 60)]);
        let mut offset = 0;
        let mut want = batches[..30].to_vec();
        want.extend(more);
        for w in want {
            let r = log.read(offset, 70, 1, true).await.expect("read");
            let got = r.batches[0].to_bytes();
            assert_eq!(&got[..], &w[..], "batch at {offset}");
            offset += 2;
        }
        log.close().await.expect("close");
    });
}

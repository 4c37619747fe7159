//! The bounded set of open sealed-segment files (`files.rs`) on the simulated disk: logs of a
//! shard share it, reading old segments reopens them, the limit is never exceeded, and
//! retention, reuse, close and reopen work with files that are not held open.

mod common;

use std::path::PathBuf;
use std::rc::Rc;

use common::*;
use futures_lite::future::block_on;
use shardlog_engine::io::sim::SimFile;
use shardlog_engine::{LogConfig, PartitionLog, SegmentFiles, SimStorage};

type Log = PartitionLog<SimStorage>;

fn open_at(disk: &SimStorage, d: &str, cfg: LogConfig, files: &Rc<SegmentFiles<SimFile>>) -> Log {
    let (log, _) = block_on(PartitionLog::open(disk.clone(), PathBuf::from(d), cfg)).expect("open");
    log.join_segment_files(files);
    log
}

/// A small deterministic generator (no dependency on a rand crate's stream).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn segments_on_disk(disk: &SimStorage, dir: &str) -> usize {
    disk.files()
        .iter()
        .filter(|p| p.starts_with(dir) && p.extension().is_some_and(|e| e == "log"))
        .count()
}

#[test]
fn sealed_files_stay_within_the_shared_limit_and_reopen_when_read() {
    const LIMIT: usize = 4;
    let disk = SimStorage::default();
    let files = SegmentFiles::new(LIMIT);
    let dirs = ["/data/a-0", "/data/b-0", "/data/c-0"];
    let logs: Vec<Log> = dirs
        .iter()
        .map(|d| open_at(&disk, d, small_config(), &files))
        .collect();
    // Each log holds its active segment open; sealed ones only through the shared set.
    let bound = logs.len() + LIMIT;
    for i in 0..300 {
        for (n, log) in logs.iter().enumerate() {
            append_committed(log, &tagged(2, 200, 0, (i as u8).wrapping_add(n as u8)));
            assert!(disk.open_files() <= bound, "{} open", disk.open_files());
        }
    }
    for d in dirs {
        let segs = segments_on_disk(&disk, d);
        assert!(segs > 3 * LIMIT, "{d}: only {segs} segments");
    }
    let expected: Vec<Vec<(i64, i64, Vec<u8>)>> = logs.iter().map(read_all).collect();
    assert!(expected.iter().all(|e| e.len() == 300));

    // Random reads across all logs' old segments, checked batch by batch.
    let mut rng = Rng(0x5eed);
    for _ in 0..400 {
        let n = rng.below(logs.len() as u64) as usize;
        let (log, want) = (&logs[n], &expected[n]);
        let k = rng.below(want.len() as u64) as usize;
        let (base, _, payload) = &want[k];
        let r = block_on(log.read(*base, log.log_end_offset(), 1, true)).expect("read");
        let got = r.batches[0].to_bytes();
        assert_eq!(&got[21..], &payload[..], "log {n} batch at {base}");
        assert!(disk.open_files() <= bound, "{} open", disk.open_files());
    }
    let stats = files.stats();
    assert!(stats.max_open <= LIMIT, "{stats:?}");
    assert!(disk.max_open_files() <= bound, "{}", disk.max_open_files());
    assert!(
        stats.opened > 2 * LIMIT as u64,
        "old segments were reopened on demand: {stats:?}"
    );
    for (log, want) in logs.iter().zip(&expected) {
        assert_eq!(&read_all(log), want);
    }

    // Retention deletes sealed segments, open ones (in the set) and closed ones alike; their
    // descriptors go, the rest is still read correctly.
    logs[0].set_config(LogConfig {
        retention_bytes: Some(30_000),
        ..small_config()
    });
    let open_before = files.stats().open;
    let r = block_on(logs[0].apply_retention(0)).expect("retention");
    assert!(r.segments_deleted > 3, "{r:?}");
    assert!(files.stats().open <= open_before);
    let start = logs[0].log_start_offset();
    let kept: Vec<_> = expected[0]
        .iter()
        .filter(|b| b.0 >= start)
        .cloned()
        .collect();
    assert_eq!(read_all(&logs[0]), kept);
    // Reused files are renamed and reopened by the next rolls; appends and reads go on.
    for i in 0..100 {
        append_committed(&logs[0], &tagged(2, 200, 0, i));
        if i % 10 == 0 {
            block_on(logs[0].apply_retention(0)).expect("retention");
        }
        assert!(disk.open_files() <= bound, "{} open", disk.open_files());
    }
    let after = read_all(&logs[0]);
    assert_eq!(after.last().map(|b| b.1), Some(800));
    assert!(disk.max_open_files() <= bound, "{}", disk.max_open_files());

    // Closing releases every descriptor; reopened logs have all their data.
    let before: Vec<_> = logs.iter().map(read_all).collect();
    for log in logs {
        block_on(log.close()).expect("close");
    }
    assert_eq!(disk.open_files(), 0);
    assert_eq!(files.stats().open, 0);
    let files = SegmentFiles::new(LIMIT);
    let logs: Vec<Log> = dirs
        .iter()
        .map(|d| open_at(&disk, d, small_config(), &files))
        .collect();
    assert_eq!(
        disk.open_files(),
        logs.len(),
        "open touches only active segments"
    );
    for (log, want) in logs.iter().zip(&before) {
        assert_eq!(&read_all(log), want);
    }
    assert!(files.stats().max_open <= LIMIT);
}

#[test]
fn concurrent_readers_wait_for_a_file_when_all_are_in_use() {
    let disk = SimStorage::default();
    let files = SegmentFiles::new(1);
    let logs: Vec<Log> = ["/data/x-0", "/data/y-0"]
        .iter()
        .map(|d| open_at(&disk, d, small_config(), &files))
        .collect();
    for i in 0..200 {
        for log in &logs {
            append_committed(log, &tagged(2, 200, 0, i));
        }
    }
    let expected: Vec<_> = logs.iter().map(read_all).collect();
    disk.reset_max_open_files();
    let mut rng = Rng(42);
    let reads: Vec<(usize, usize)> = (0..64)
        .map(|_| {
            let n = rng.below(2) as usize;
            (n, rng.below(expected[n].len() as u64) as usize)
        })
        .collect();
    let tasks = reads.iter().map(|&(n, k)| {
        let (log, want) = (&logs[n], &expected[n]);
        async move {
            let (base, _, payload) = &want[k];
            let r = log
                .read(*base, log.log_end_offset(), 1, true)
                .await
                .expect("read");
            assert_eq!(&r.batches[0].to_bytes()[21..], &payload[..]);
        }
    });
    block_on(futures::future::join_all(tasks));
    assert_eq!(files.stats().max_open, 1, "{:?}", files.stats());
    assert!(disk.max_open_files() <= 3, "{}", disk.max_open_files());
}

#[test]
fn a_log_on_its_own_bounds_its_open_files_too() {
    // Without a shard-wide set (engine users, tests) a log keeps a private one.
    let disk = SimStorage::default();
    let log = open(&disk, small_config());
    for i in 0..600 {
        append_committed(&log, &tagged(2, 200, 0, i as u8));
    }
    assert!(segments_on_disk(&disk, "/data/topic-0") > 30);
    let all = read_all(&log);
    assert_eq!(all.len(), 600);
    assert!(disk.max_open_files() <= 1 + 16, "{}", disk.max_open_files());
    drop(log);
    assert_eq!(disk.open_files(), 0);
}

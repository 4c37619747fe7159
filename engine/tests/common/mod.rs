#![allow(dead_code)]

use std::path::PathBuf;

use shardlog_engine::batch;
use shardlog_engine::{LogConfig, PartitionLog, SimStorage};

pub fn dir() -> PathBuf {
    PathBuf::from("/data/topic-0")
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 512,
        cache_bytes: 2048,
        preallocate_bytes: 1 << 20,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// The defaults without time retention (tests write batches with timestamp 0).
pub fn keep_all_config() -> LogConfig {
    LogConfig {
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Appends `batch` and waits until it is committed; its last offset.
pub fn append_committed(log: &PartitionLog<SimStorage>, batch: &[u8]) -> i64 {
    futures_lite::future::block_on(async {
        let a = log
            .append(bytes::Bytes::copy_from_slice(batch), 0, 0)
            .await
            .expect("append");
        log.wait_committed(a.last_offset).await.expect("commit");
        a.last_offset
    })
}

pub fn open(storage: &SimStorage, config: LogConfig) -> PartitionLog<SimStorage> {
    let (log, _) =
        futures_lite::future::block_on(PartitionLog::open(storage.clone(), dir(), config))
            .expect("open");
    log
}

/// A batch whose record values encode `tag`, so tests can tell batches apart.
pub fn tagged(count: i32, value_bytes: usize, ts: i64, tag: u8) -> Vec<u8> {
    let mut b = batch::build(0, count, value_bytes, ts);
    // Rewrite values with the tag, then fix the CRC (values sit after each record's header).
    let n = b.len();
    for x in b[batch::HEADER_BYTES..n]
        .iter_mut()
        .rev()
        .take(value_bytes.min(4))
    {
        *x = tag;
    }
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Everything from the log start, batch by batch, as (base offset, next offset, payload after the
/// header's offset-dependent fields).
pub fn read_all(log: &PartitionLog<SimStorage>) -> Vec<(i64, i64, Vec<u8>)> {
    futures_lite::future::block_on(async {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let r = log.read(offset, end, 64 * 1024, true).await.expect("read");
            assert!(
                !r.batches.is_empty(),
                "no batch at {offset} below end {end}"
            );
            for b in r.batches {
                let b = b.to_bytes();
                let info = batch::validate(&b, usize::MAX).expect("served batch is valid");
                if info.next_offset() <= offset {
                    continue;
                }
                assert!(
                    info.base_offset <= offset,
                    "hole before {} (wanted {offset})",
                    info.base_offset
                );
                out.push((info.base_offset, info.next_offset(), b[21..].to_vec()));
                offset = info.next_offset();
            }
        }
        out
    })
}

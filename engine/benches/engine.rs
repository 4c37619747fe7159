//! Criterion benches for the engine's hot paths on the real disk (glommio, O_DIRECT):
//! append (1 KiB records in 16 KiB, 64 KiB and 1 MiB batches, under each flush policy), reads
//! from the batch cache and from disk, CRC validation and index lookup.
//!
//! Run: `cargo bench -p shardlog-engine --bench engine` (data goes to $SHARDLOG_BENCH_DIR or
//! the system temp dir, which must support O_DIRECT).

use bytes::Bytes;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use shardlog_engine::batch;
use shardlog_engine::index::SegmentIndex;
use shardlog_engine::{
    BrokerStorage, FlushPolicy, GlommioStorage, LogConfig, PartitionLog, Storage,
};

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .expect("glommio executor")
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("SHARDLOG_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("shardlog-bench-")
        .tempdir_in(base)
        .expect("bench dir")
}

fn batch_of(bytes: usize) -> Vec<u8> {
    // 1 KiB records: value 1024 - per-record overhead.
    let count = (bytes / 1024).max(1) as i32;
    batch::build(0, count, 1024 - 10, 0)
}

fn append(c: &mut Criterion) {
    let ex = executor();
    let mut g = c.benchmark_group("append");
    g.measurement_time(Duration::from_secs(4)).sample_size(20);
    for (pname, policy) in [
        ("fsync_every_batch", FlushPolicy::EveryBatch),
        (
            "fsync_interval_1MiB",
            FlushPolicy::Interval {
                bytes: 1 << 20,
                ms: 0,
            },
        ),
        ("fsync_never", FlushPolicy::Never),
    ] {
        for size in [16 << 10, 64 << 10, 1 << 20] {
            let b = Bytes::from(batch_of(size));
            g.throughput(Throughput::Bytes(b.len() as u64));
            let dir = bench_dir();
            let cfg = LogConfig {
                flush: policy,
                segment_bytes: 256 << 20,
                retention_ms: None,
                ..LogConfig::default()
            };
            let log = ex.run(async {
                GlommioStorage::prepare(dir.path()).await.expect("O_DIRECT");
                PartitionLog::open(GlommioStorage, dir.path().join("p"), cfg)
                    .await
                    .expect("open")
                    .0
            });
            g.bench_with_input(BenchmarkId::new(pname, size), &b, |bencher, b| {
                bencher.iter_custom(|iters| {
                    ex.run(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let a = log.append(b.clone(), 0, 0).await.expect("append");
                            log.wait_committed(a.last_offset).await.expect("commit");
                        }
                        start.elapsed()
                    })
                })
            });
            ex.run(async { log.remove().await.expect("remove") });
        }
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let ex = executor();
    let mut g = c.benchmark_group("read");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    let dir = bench_dir();
    let b = batch_of(64 << 10);
    for (name, cache_bytes) in [("cache", 64usize << 20), ("disk", 0)] {
        let cfg = LogConfig {
            cache_bytes,
            retention_ms: None,
            ..LogConfig::default()
        };
        let log = ex.run(async {
            GlommioStorage::prepare(dir.path()).await.expect("O_DIRECT");
            let (log, _) = PartitionLog::open(GlommioStorage, dir.path().join(name), cfg)
                .await
                .expect("open");
            for _ in 0..512 {
                log.append(Bytes::copy_from_slice(&b), 0, 0)
                    .await
                    .expect("append");
            }
            log.flush().await.expect("flush");
            log
        });
        let end = log.committed_end_offset();
        g.throughput(Throughput::Bytes(1 << 20));
        g.bench_function(BenchmarkId::new("1MiB", name), |bencher| {
            let mut offset = 0;
            bencher.iter_custom(|iters| {
                ex.run(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let r = log.read(offset, end, 1 << 20, true).await.expect("read");
                        offset = (offset + 16 * 64) % (end - 16 * 64);
                        assert!(r.bytes > 0);
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn crc_and_index(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    for size in [16 << 10, 1 << 20] {
        let b = batch_of(size);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_with_input(BenchmarkId::new("crc32c", size), &b, |bencher, b| {
            bencher.iter(|| batch::validate(b, usize::MAX).expect("valid"))
        });
    }
    g.finish();
    let mut idx = SegmentIndex::default();
    for i in 0..262_144u32 {
        idx.push(i * 4, i * 4096, i64::from(i));
    }
    c.bench_function("index/position_for_262144_entries", |bencher| {
        let mut o = 0i64;
        bencher.iter(|| {
            o = (o + 7919) % 1_048_576;
            idx.position_for(0, o)
        })
    });
}

/// The cost of the broker's storage choice (`BrokerStorage`, one `match` per call) against
/// `GlommioStorage` called directly, in one run: unflushed 64 KiB appends (the write path
/// without fsync noise) and 1 MiB reads from disk (cache off).
fn storage_dispatch(c: &mut Criterion) {
    fn one<S: Storage>(c: &mut Criterion, ex: &LocalExecutor, name: &str, storage: S) {
        let mut g = c.benchmark_group("storage_dispatch");
        g.measurement_time(Duration::from_secs(4)).sample_size(30);
        let dir = bench_dir();
        let b = Bytes::from(batch_of(64 << 10));
        let cfg = LogConfig {
            flush: FlushPolicy::Never,
            cache_bytes: 0,
            segment_bytes: 256 << 20,
            retention_ms: None,
            ..LogConfig::default()
        };
        let log = ex.run(async {
            GlommioStorage::prepare(dir.path()).await.expect("O_DIRECT");
            PartitionLog::open(storage, dir.path().join("p"), cfg)
                .await
                .expect("open")
                .0
        });
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(BenchmarkId::new("append_64KiB", name), |bencher| {
            bencher.iter_custom(|iters| {
                ex.run(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        log.append(b.clone(), 0, 0).await.expect("append");
                    }
                    start.elapsed()
                })
            })
        });
        ex.run(async { log.flush().await.expect("flush") });
        let end = log.committed_end_offset();
        g.throughput(Throughput::Bytes(1 << 20));
        g.bench_function(BenchmarkId::new("read_1MiB_disk", name), |bencher| {
            let mut offset = 0;
            bencher.iter_custom(|iters| {
                ex.run(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let r = log.read(offset, end, 1 << 20, true).await.expect("read");
                        offset = (offset + 16 * 16) % (end - 16 * 16).max(1);
                        assert!(r.bytes > 0);
                    }
                    start.elapsed()
                })
            })
        });
        ex.run(async { log.remove().await.expect("remove") });
        g.finish();
    }
    let ex = executor();
    one(c, &ex, "GlommioStorage", GlommioStorage);
    one(c, &ex, "BrokerStorage", BrokerStorage::default());
}

criterion_group!(benches, crc_and_index, read, append, storage_dispatch);
criterion_main!(benches);

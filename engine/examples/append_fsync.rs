//! Sequential append throughput of one partition log with fdatasync before every
//! acknowledgement, on the real disk: the engine's side of `tuning/engine-vs-fio.sh`.
//!
//! `cargo run --release -p shardlog-engine --example append_fsync -- DIR TOTAL_MIB BATCH_KIB [INFLIGHT] [steady]`
//! prints one line: `engine_append_fsync MB_per_s=<float> batches=<n> inflight=<n> seconds=<float>
//! append_us=<mean> commit_wait_us=<mean> commit_wait_p99_us=<float> commit_wait_max_us=<float>`.
//!
//! INFLIGHT (default 1) producers append concurrently, each waiting for its own batch to be
//! fdatasync'd before sending the next, like a Kafka producer with that many requests in
//! flight. With 1 the pattern is exactly fio's: one write, one fdatasync. With more, appends that
//! arrive during an fdatasync share the next one (group commit).
//!
//! `steady`: the log as it is once retention runs (64 MiB segments, retention.bytes 128 MiB,
//! retention applied as it goes, 256 MiB written before measuring), so rolls reuse deleted
//! segments' files and writes land in already-written blocks. Compare it with fio overwriting
//! a file it wrote before, not with fio on a fresh file.

use std::time::Instant;

use glommio::{LocalExecutorBuilder, Placement};
use shardlog_engine::batch;
use shardlog_engine::{FlushPolicy, GlommioStorage, LogConfig, PartitionLog};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steady = args.last().is_some_and(|a| a == "steady");
    let args: Vec<String> = args.into_iter().filter(|a| a != "steady").collect();
    if args.len() != 4 && args.len() != 5 {
        eprintln!("usage: append_fsync DIR TOTAL_MIB BATCH_KIB [INFLIGHT] [steady]");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let total_mib: u64 = args[2]
        .parse()
        .unwrap_or_else(|_| usage("TOTAL_MIB must be an integer"));
    let batch_kib: usize = args[3]
        .parse()
        .unwrap_or_else(|_| usage("BATCH_KIB must be an integer"));
    let inflight: u64 = args
        .get(4)
        .map_or(Ok(1), |a| a.parse())
        .unwrap_or_else(|_| usage("INFLIGHT must be an integer"));
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 20)
        .spawn(move || async move {
            if let Err(e) = GlommioStorage::prepare(&dir).await {
                eprintln!("direct I/O unavailable in {}: {e}", dir.display());
                std::process::exit(1);
            }
            // 1 KiB records (1014-byte values plus record overhead) in one batch of BATCH_KIB.
            let b = bytes::Bytes::from(batch::build(0, batch_kib as i32, 1014, 0));
            let mut cfg = LogConfig { flush: FlushPolicy::EveryBatch, max_batch_bytes: b.len() + 1, retention_ms: None, ..LogConfig::default() };
            if steady {
                cfg.segment_bytes = 64 << 20;
                cfg.retention_bytes = Some(128 << 20);
            }
            let (log, _) = PartitionLog::open(GlommioStorage, dir.join("append-fsync-0"), cfg).await.unwrap_or_else(|e| {
                eprintln!("open: {e}");
                std::process::exit(1)
            });
            if steady {
                // Fill past retention so that a deleted segment's file is waiting for reuse.
                let mut recycled = 0;
                for i in 0..(256 * 1024 / batch_kib as u64) {
                    let a = log.append(b.clone(), 0, 0).await.unwrap_or_else(|e| fail(e));
                    log.wait_committed(a.last_offset).await.unwrap_or_else(|e| fail(e));
                    if i % 16 == 0 {
                        recycled += log.apply_retention(0).await.unwrap_or_else(|e| fail(e)).segments_recycled;
                    }
                }
                if recycled == 0 {
                    fail("no segment file was kept for reuse while filling");
                }
            }
            let n = total_mib * 1024 / batch_kib as u64;
            let per = n / inflight.max(1);
            let start = Instant::now();
            // Time inside `append` (validation, CRC, the copy into the write buffer), summed
            // over all batches, and each batch's wait for its commit (write + fdatasync).
            let in_append = std::cell::Cell::new(0f64);
            let waits = std::cell::RefCell::new(Vec::with_capacity(n as usize));
            let producers = (0..inflight.max(1)).map(|_| {
                let (log, b, in_append, waits) = (&log, &b, &in_append, &waits);
                async move {
                    for i in 0..per {
                        if steady && i % 16 == 0 {
                            log.apply_retention(0).await.unwrap_or_else(|e| fail(e));
                        }
                        let t0 = Instant::now();
                        let a = log.append(b.clone(), 0, 0).await.unwrap_or_else(|e| fail(e));
                        let t1 = Instant::now();
                        log.wait_committed(a.last_offset).await.unwrap_or_else(|e| fail(e));
                        in_append.set(in_append.get() + (t1 - t0).as_secs_f64());
                        waits.borrow_mut().push(t1.elapsed().as_secs_f64());
                    }
                }
            });
            futures::future::join_all(producers).await;
            let n = per * inflight.max(1);
            let secs = start.elapsed().as_secs_f64();
            let bytes = n as f64 * b.len() as f64;
            let mut waits = waits.into_inner();
            waits.sort_by(f64::total_cmp);
            let mean = waits.iter().sum::<f64>() / n as f64;
            let p99 = waits.get(waits.len() * 99 / 100).copied().unwrap_or(0.0);
            let max = waits.last().copied().unwrap_or(0.0);
            println!(
                "engine_append_fsync MB_per_s={:.1} batches={n} inflight={inflight} seconds={secs:.3} append_us={:.1} commit_wait_us={:.1} commit_wait_p99_us={:.1} commit_wait_max_us={:.1}",
                bytes / secs / 1e6,
                in_append.get() / n as f64 * 1e6,
                mean * 1e6,
                p99 * 1e6,
                max * 1e6
            );
            log.remove().await.unwrap_or_else(|e| fail(e));
        })
        .unwrap_or_else(|e| {
            eprintln!("cannot start glommio (raise ulimit -l?): {e}");
            std::process::exit(1)
        });
    if ex.join().is_err() {
        std::process::exit(1);
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(2)
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("append failed: {e}");
    std::process::exit(1)
}

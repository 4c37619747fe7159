//! Criterion bench of one metadata commit (`MetadataLog::commit` of a `ProducerIdBlock`
//! record, what InitProducerId costs once per block and every admin change costs once) on
//! the real disk (glommio, O_DIRECT): the raft-backed log of a single voter, which writes and
//! fdatasyncs the entry once per commit.
//!
//! Run: `cargo bench -p shardlog-server --bench metadata_log` (data goes to
//! $SHARDLOG_BENCH_DIR or the system temp dir, which must support O_DIRECT).

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use shardlog_engine::GlommioStorage;
use shardlog_server::controller::log::MetadataLog;
use shardlog_server::controller::raft_log::{QuorumIo, RaftLogOptions, RaftMetadataLog};
use shardlog_server::controller::records::MetadataRecord;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("SHARDLOG_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("shardlog-metalog-bench-")
        .tempdir_in(base)
        .expect("bench dir")
}

fn commits<L: MetadataLog>(ex: &LocalExecutor, log: &mut L, iters: u64) -> Duration {
    ex.run(async {
        let t0 = Instant::now();
        for _ in 0..iters {
            let block_end = log.image().producer_id_block_end + 1000;
            log.commit(MetadataRecord::ProducerIdBlock { block_end })
                .await
                .expect("commit");
        }
        t0.elapsed()
    })
}

fn metadata_commit(c: &mut Criterion) {
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .expect("executor");
    let dir = bench_dir();
    let path = dir.path().to_path_buf();
    let mut raft = ex.run(async move {
        GlommioStorage::prepare(&path).await.expect("direct I/O");
        RaftMetadataLog::open(
            GlommioStorage,
            &path.join("quorum"),
            None::<&Path>,
            RaftLogOptions::single(1),
            QuorumIo::new(),
        )
        .await
        .expect("raft log")
    });
    let mut g = c.benchmark_group("metadata_commit");
    g.bench_function("raft_single_voter", |b| {
        b.iter_custom(|iters| commits(&ex, &mut raft, iters))
    });
    // The floor: one 4 KiB O_DIRECT write and one fdatasync of the same file.
    let sync_path = dir.path().join("sync");
    let f = ex.run(async move {
        use shardlog_engine::Storage;
        GlommioStorage
            .open_file(&sync_path, true)
            .await
            .expect("file")
    });
    g.bench_function("write_4k_fdatasync", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                use shardlog_engine::StorageFile;
                let t0 = Instant::now();
                for _ in 0..iters {
                    let mut buf = f.alloc(4096);
                    buf.fill(7);
                    f.write_at(buf, 4096, 0).await.expect("write");
                    f.sync_data().await.expect("sync");
                }
                t0.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, metadata_commit);
criterion_main!(benches);

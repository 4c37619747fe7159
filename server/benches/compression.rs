//! Criterion benches for compressed batches on produce ([`shardlog_server::partition::compression`]):
//!
//! * `validate/<codec>/<size>`: what `validate_compressed_batches = true` adds to the append
//!   of one batch: [`compression::prepare`] with `compression.type=producer` (CRC check,
//!   bounded decompression, record walk); the batch is stored unchanged. `crc/<size>` is the
//!   CRC32C check every append does anyway ([`batch::validate`]), the yardstick.
//! * `recompress/<from>-<to>/<size>`: [`compression::prepare`] under a topic whose
//!   `compression.type` differs from the producer's codec (decompress, walk, compress, new
//!   header and CRC).
//!
//! Batches are what `shardlog-bench` sends: 1 KiB records whose values are half random
//! 64-byte blocks and half a repeated phrase (the bench's default `payload_entropy = 0.5`),
//! encoded by the client's batch builder; 16 records (16 KiB) and 976 records (~1 MiB, the
//! standard scenarios' batch size).
//!
//! Run: `cargo bench -p shardlog-server --bench compression` (`-- --test` runs each once).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardlog_client::records::{BatchBuilder, Compression, ProducerStamp};
use shardlog_engine::batch;
use shardlog_server::partition::compression::{self, Codec, CompressionPolicy, CompressionType};

const VALUE_BYTES: usize = 1014;

/// A deterministic pool of half-random bytes (xorshift; no extra dependency).
fn payload(len: usize) -> Vec<u8> {
    const PHRASE: &[u8] = b"shardlog benchmark payload: the quick brown fox jumps over it. ";
    let mut x: u64 = 0x5eed_1234_abcd_0001;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut v = vec![0u8; len];
    for (i, chunk) in v.chunks_mut(64).enumerate() {
        if next() % 2 == 0 {
            for b in chunk.iter_mut() {
                *b = next() as u8;
            }
        } else {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = PHRASE[(i + j) % PHRASE.len()];
            }
        }
    }
    v
}

fn client_codec(c: Codec) -> Compression {
    match c {
        Codec::None => Compression::None,
        Codec::Gzip => Compression::Gzip,
        Codec::Snappy => Compression::Snappy,
        Codec::Lz4 => Compression::Lz4,
        Codec::Zstd => Compression::Zstd,
    }
}

fn batch_of(records: usize, codec: Codec, pool: &[u8]) -> Bytes {
    let mut builder =
        BatchBuilder::with_capacity(records * BatchBuilder::record_len(0, VALUE_BYTES));
    for i in 0..records {
        let off = (i * 7919 * 64) % (pool.len() - VALUE_BYTES);
        builder
            .push(
                None,
                Some(&[&pool[off..off + VALUE_BYTES]]),
                1_795_000_000_000,
            )
            .expect("record");
    }
    builder
        .finish(client_codec(codec), ProducerStamp::NONE)
        .expect("batch")
}

fn policy(target: CompressionType) -> CompressionPolicy {
    CompressionPolicy {
        target,
        validate: true,
        max_decompressed_bytes: 8 << 20,
    }
}

const SIZES: [(&str, usize); 2] = [("16KiB", 16), ("1MiB", 976)];

fn validate(c: &mut Criterion) {
    let pool = payload(8 << 20);
    let mut g = c.benchmark_group("validate");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (size, n) in SIZES {
        let plain = batch_of(n, Codec::None, &pool);
        g.throughput(Throughput::Bytes(plain.len() as u64));
        g.bench_function(BenchmarkId::new("crc", size), |b| {
            b.iter(|| batch::validate(black_box(&plain), usize::MAX).expect("valid"))
        });
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let compressed = batch_of(n, codec, &pool);
            let p = policy(CompressionType::Producer);
            g.bench_function(BenchmarkId::new(codec.name(), size), |b| {
                b.iter(|| compression::prepare(black_box(compressed.clone()), &p).expect("valid"))
            });
        }
    }
    g.finish();
}

fn recompress(c: &mut Criterion) {
    let pool = payload(8 << 20);
    let mut g = c.benchmark_group("recompress");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    let pairs = [
        (Codec::None, Codec::Lz4),
        (Codec::None, Codec::Zstd),
        (Codec::None, Codec::Gzip),
        (Codec::None, Codec::Snappy),
        (Codec::Lz4, Codec::Zstd),
        (Codec::Zstd, Codec::Lz4),
        (Codec::Gzip, Codec::Lz4),
        (Codec::Lz4, Codec::None),
    ];
    for (size, n) in SIZES {
        let plain_len = batch_of(n, Codec::None, &pool).len();
        g.throughput(Throughput::Bytes(plain_len as u64));
        for (from, to) in pairs {
            let src = batch_of(n, from, &pool);
            let p = policy(CompressionType::Codec(to));
            let id = format!("{}-{}", from.name(), to.name());
            g.bench_function(BenchmarkId::new(id, size), |b| {
                b.iter(|| compression::prepare(black_box(src.clone()), &p).expect("recompressed"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, validate, recompress);
criterion_main!(benches);

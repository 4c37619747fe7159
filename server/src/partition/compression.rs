//! Compressed batches on produce: validation and the `compression.type` topic config.
//!
//! A RecordBatch v2 compresses only its records section (everything after the 61-byte
//! header); the records inside are the same bytes whatever the codec. So this module never
//! decodes records into values: it decompresses the section (bounded), walks the records to
//! check them, and, when the topic's `compression.type` names another codec, compresses the
//! same bytes again and writes a new header (codec bits, batchLength, CRC). Everything else in
//! the header — producer id, epoch and base sequence (so idempotent deduplication works on
//! the result as on the original), timestamps and their type, the transactional flag — is
//! kept, and the offsets stay the broker's to assign in the log.
//!
//! Why validate at all: a batch whose records cannot be decompressed (a codec id Kafka does
//! not define, or bytes that are not what the codec bit says) is stored fine, but every
//! consumer then fails at its offset and never gets past it. Kafka decompresses every
//! compressed batch on append for the same reason; here it is the broker setting
//! `validate_compressed_batches` (see docs/ARCHITECTURE.md for its cost and the default).
//!
//! Bounded: decompression stops at `max_decompressed_batch_bytes` (a decompression bomb is
//! refused with MESSAGE_TOO_LARGE after that much work and memory), and the work is
//! synchronous, so each shard holds at most one decompressed batch at a time.
//!
//! Codecs come from the crates kafka-protocol already links (flate2, snap, lz4, zstd), used
//! directly: their streaming decoders can be capped, and nothing here needs a record
//! decoded into an owned structure.

use std::io::{Read, Write};

use bytes::Bytes;
use shardlog_engine::batch::{self, get_varlong, HEADER_BYTES};

use crate::wire::errors;

/// A Kafka compression codec (the batch attributes' bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Codec {
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    pub fn from_id(id: i16) -> Option<Self> {
        Self::ALL.get(usize::try_from(id).ok()?).copied()
    }

    pub fn id(self) -> i16 {
        self as i16
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "uncompressed",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// What `compression.type` asks for: keep the producer's codec, or store with this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionType {
    Producer,
    Codec(Codec),
}

impl CompressionType {
    /// The values Kafka accepts for `compression.type` (topic and broker).
    pub const NAMES: [&'static str; 6] =
        ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "producer" => Self::Producer,
            "uncompressed" => Self::Codec(Codec::None),
            "gzip" => Self::Codec(Codec::Gzip),
            "snappy" => Self::Codec(Codec::Snappy),
            "lz4" => Self::Codec(Codec::Lz4),
            "zstd" => Self::Codec(Codec::Zstd),
            _ => return None,
        })
    }
}

/// How a partition treats the batches producers send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressionPolicy {
    pub target: CompressionType,
    /// Decompress and check every compressed batch (done anyway when recompressing).
    pub validate: bool,
    /// The most bytes a batch's records may decompress to.
    pub max_decompressed_bytes: usize,
}

impl Default for CompressionPolicy {
    fn default() -> Self {
        Self {
            target: CompressionType::Producer,
            validate: true,
            max_decompressed_bytes: 32 << 20,
        }
    }
}

/// Why a batch was refused here. Nothing is stored when any of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    #[error("unknown compression codec {0} in the batch attributes (0-4 are defined)")]
    UnknownCodec(i16),
    #[error("records do not decompress as {codec}: {reason}")]
    Decompress { codec: &'static str, reason: String },
    #[error("records decompress to more than {max} bytes")]
    TooLarge { max: usize },
    #[error("malformed records: {0}")]
    Records(String),
    #[error("cannot compress records with {codec}: {reason}")]
    Compress { codec: &'static str, reason: String },
}

impl CompressionError {
    /// The Kafka error code for the produce response.
    pub fn code(&self) -> i16 {
        match self {
            CompressionError::TooLarge { .. } => errors::MESSAGE_TOO_LARGE,
            CompressionError::Compress { .. } => errors::UNKNOWN_SERVER_ERROR,
            _ => errors::CORRUPT_MESSAGE,
        }
    }
}

/// Applies `policy` to one batch as a producer sent it: returns it unchanged, recompressed,
/// or the reason to refuse it. A batch whose header is malformed (length, magic, CRC, record
/// count) is returned unchanged: the log refuses it with the usual error.
pub fn prepare(bytes: Bytes, policy: &CompressionPolicy) -> Result<Bytes, CompressionError> {
    let Ok(info) = batch::peek(&bytes) else {
        return Ok(bytes);
    };
    let codec = Codec::from_id(info.compression())
        .ok_or(CompressionError::UnknownCodec(info.compression()))?;
    let target = match policy.target {
        CompressionType::Producer => codec,
        CompressionType::Codec(c) => c,
    };
    let decompress = codec != Codec::None && (policy.validate || target != codec);
    if !decompress && target == codec {
        return Ok(bytes);
    }
    // Recompressing writes a new CRC: a batch damaged in transit must be refused first, not
    // given a valid CRC. (The log checks it again; CRC32C costs little next to a codec.)
    if batch::validate(&bytes, usize::MAX).is_err() {
        return Ok(bytes);
    }
    let section = &bytes[HEADER_BYTES..];
    let owned;
    let records: &[u8] = if codec == Codec::None {
        section
    } else {
        owned = decompress_records(codec, section, policy.max_decompressed_bytes)?;
        &owned
    };
    check_records(records, info.record_count)?;
    if target == codec {
        return Ok(bytes);
    }
    let body = compress_records(target, records)?;
    Ok(Bytes::from(rebuild(&bytes[..HEADER_BYTES], target, &body)))
}

fn rebuild(head: &[u8], codec: Codec, body: &[u8]) -> Vec<u8> {
    batch::with_records(head, codec.id(), body)
}

/// The xerial snappy framing (snappy-java's `SnappyOutputStream`, which Kafka writes): this
/// magic, a version and a compatible version (both 1), then blocks of
/// `[u32 big-endian length][raw snappy]`. librdkafka writes plain raw snappy; both are read.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = 16;
/// snappy-java's default block size.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// Decompresses a records section, refusing output past `max` bytes.
pub fn decompress_records(
    codec: Codec,
    data: &[u8],
    max: usize,
) -> Result<Vec<u8>, CompressionError> {
    let fail = |reason: String| CompressionError::Decompress {
        codec: codec.name(),
        reason,
    };
    let capped = |r: &mut dyn Read| -> Result<Vec<u8>, CompressionError> {
        let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max));
        r.take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| fail(e.to_string()))?;
        if out.len() > max {
            return Err(CompressionError::TooLarge { max });
        }
        Ok(out)
    };
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => capped(&mut flate2::read::MultiGzDecoder::new(data)),
        Codec::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| fail(e.to_string()))?;
            capped(&mut d)
        }
        Codec::Lz4 => {
            let mut d = lz4::Decoder::new(data).map_err(|e| fail(e.to_string()))?;
            let out = capped(&mut d)?;
            // The decoder reports a frame cut short only here.
            d.finish().1.map_err(|e| fail(e.to_string()))?;
            Ok(out)
        }
        Codec::Snappy => snappy_decompress(data, max).map_err(|e| match e {
            SnappyError::TooLarge => CompressionError::TooLarge { max },
            SnappyError::Bad(reason) => fail(reason),
        }),
    }
}

enum SnappyError {
    TooLarge,
    Bad(String),
}

fn snappy_decompress(data: &[u8], max: usize) -> Result<Vec<u8>, SnappyError> {
    let mut decoder = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let mut block = |b: &[u8], out: &mut Vec<u8>| -> Result<(), SnappyError> {
        let n = snap::raw::decompress_len(b).map_err(|e| SnappyError::Bad(e.to_string()))?;
        if out.len() + n > max {
            return Err(SnappyError::TooLarge);
        }
        let at = out.len();
        out.resize(at + n, 0);
        let got = decoder
            .decompress(b, &mut out[at..])
            .map_err(|e| SnappyError::Bad(e.to_string()))?;
        out.truncate(at + got);
        Ok(())
    };
    if !data.starts_with(&XERIAL_MAGIC) {
        block(data, &mut out)?;
        return Ok(out);
    }
    let mut rest = data
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| SnappyError::Bad("xerial header cut short".into()))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| SnappyError::Bad("xerial block length cut short".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        let b = tail
            .get(..len)
            .ok_or_else(|| SnappyError::Bad("xerial block cut short".into()))?;
        block(b, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

/// Compresses a records section as Kafka's own producer would lay it out: gzip at the
/// default level, xerial-framed snappy, an LZ4 frame of independent 64 KiB blocks (Kafka's
/// reader refuses dependent blocks), zstd at level 3.
pub fn compress_records(codec: Codec, records: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let fail = |e: std::io::Error| CompressionError::Compress {
        codec: codec.name(),
        reason: e.to_string(),
    };
    match codec {
        Codec::None => Ok(records.to_vec()),
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(records.len() / 2),
                flate2::Compression::default(),
            );
            e.write_all(records).map_err(fail)?;
            e.finish().map_err(fail)
        }
        Codec::Snappy => {
            let mut out = Vec::with_capacity(
                XERIAL_HEADER_BYTES
                    + snap::raw::max_compress_len(records.len())
                    + 4 * records.len().div_ceil(XERIAL_BLOCK_BYTES),
            );
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            let mut buf = vec![0u8; snap::raw::max_compress_len(XERIAL_BLOCK_BYTES)];
            for chunk in records.chunks(XERIAL_BLOCK_BYTES) {
                let n = encoder
                    .compress(chunk, &mut buf)
                    .map_err(|e| fail(std::io::Error::other(e)))?;
                out.extend_from_slice(&(n as u32).to_be_bytes());
                out.extend_from_slice(&buf[..n]);
            }
            Ok(out)
        }
        Codec::Lz4 => {
            let mut e = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::with_capacity(records.len() / 2))
                .map_err(fail)?;
            e.write_all(records).map_err(fail)?;
            let (out, r) = e.finish();
            r.map_err(fail)?;
            Ok(out)
        }
        Codec::Zstd => zstd::bulk::compress(records, 3).map_err(fail),
    }
}

/// Walks `count` v2 records: each must fit its length prefix exactly, carry offset delta
/// 0, 1, 2, ... (what Kafka requires of a compressed batch), and the records must end the
/// section.
pub fn check_records(records: &[u8], count: i32) -> Result<(), CompressionError> {
    let bad = |i: i32, what: &str| CompressionError::Records(format!("record {i}: {what}"));
    let mut pos = 0usize;
    for i in 0..count {
        let len = get_varlong(records, &mut pos).ok_or_else(|| bad(i, "length cut short"))?;
        let end = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= records.len())
            .ok_or_else(|| bad(i, "length outside the records"))?;
        let rec = &records[..end];
        let mut p = pos + 1; // attributes
        let field = |p: &mut usize, what: &str| get_varlong(rec, p).ok_or_else(|| bad(i, what));
        // A length-prefixed byte string (-1 = null when `nullable`).
        let bytes_field = |p: &mut usize, what: &str, nullable: bool| {
            let n = field(p, what)?;
            if n == -1 && nullable {
                return Ok(());
            }
            let n = usize::try_from(n).map_err(|_| bad(i, what))?;
            *p = p
                .checked_add(n)
                .filter(|&e| e <= end)
                .ok_or_else(|| bad(i, what))?;
            Ok::<(), CompressionError>(())
        };
        if p > end {
            return Err(bad(i, "attributes cut short"));
        }
        field(&mut p, "timestamp delta")?;
        let delta = field(&mut p, "offset delta")?;
        if delta != i64::from(i) {
            return Err(bad(
                i,
                &format!("offset delta {delta}, expected {i} (offsets must be consecutive)"),
            ));
        }
        bytes_field(&mut p, "key", true)?;
        bytes_field(&mut p, "value", true)?;
        let headers = field(&mut p, "header count")?;
        if headers < 0 {
            return Err(bad(i, "negative header count"));
        }
        for _ in 0..headers {
            bytes_field(&mut p, "header key", false)?;
            bytes_field(&mut p, "header value", true)?;
        }
        if p != end {
            return Err(bad(
                i,
                &format!("{} bytes left over inside the record", end - p),
            ));
        }
        pos = end;
    }
    if pos != records.len() {
        return Err(CompressionError::Records(format!(
            "{} bytes after the {count} records the header declares",
            records.len() - pos
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(target: CompressionType, validate: bool) -> CompressionPolicy {
        CompressionPolicy {
            target,
            validate,
            max_decompressed_bytes: 1 << 20,
        }
    }

    /// An idempotent batch of `n` records with values that compress, as `codec`.
    fn batch_as(codec: Codec, n: i32) -> Vec<u8> {
        let plain = batch::build_with(0, n, 200, 1_700_000_000_000, 42, 3, 17);
        let body = compress_records(codec, &plain[HEADER_BYTES..]).expect("compress");
        rebuild(&plain[..HEADER_BYTES], codec, &body)
    }

    #[test]
    fn every_codec_round_trips_and_validates() {
        let plain = batch::build(0, 50, 300, 7);
        for codec in Codec::ALL {
            let body = compress_records(codec, &plain[HEADER_BYTES..]).expect("compress");
            let back = decompress_records(codec, &body, 1 << 20).expect("decompress");
            assert_eq!(back, &plain[HEADER_BYTES..], "{codec:?}");
            let b = Bytes::from(batch_as(codec, 50));
            batch::validate_new(&b, 1 << 20).expect("valid batch");
            let out = prepare(b.clone(), &policy(CompressionType::Producer, true)).expect("ok");
            assert_eq!(out, b, "{codec:?}: validation does not change the batch");
        }
    }

    /// Recompression keeps what Kafka keeps: producer id/epoch/sequence, timestamps,
    /// record count, offsets deltas and the records themselves; the CRC is valid.
    #[test]
    fn recompression_between_every_pair_keeps_the_batch() {
        for from in Codec::ALL {
            for to in Codec::ALL {
                let src = Bytes::from(batch_as(from, 20));
                let out = prepare(src.clone(), &policy(CompressionType::Codec(to), false))
                    .expect("recompressed");
                let a = batch::validate_new(&src, 1 << 20).expect("src");
                let b = batch::validate_new(&out, 1 << 20).expect("out is a valid batch");
                assert_eq!(b.compression(), to.id(), "{from:?} -> {to:?}");
                assert_eq!(
                    (a.producer_id, a.producer_epoch, a.base_sequence),
                    (b.producer_id, b.producer_epoch, b.base_sequence)
                );
                assert_eq!(
                    (a.first_timestamp, a.max_timestamp),
                    (b.first_timestamp, b.max_timestamp)
                );
                assert_eq!(a.record_count, b.record_count);
                assert_eq!(a.attributes & !7, b.attributes & !7);
                let records = decompress_records(to, &out[HEADER_BYTES..], 1 << 20).expect("d");
                let orig = decompress_records(from, &src[HEADER_BYTES..], 1 << 20).expect("d");
                assert_eq!(records, orig, "{from:?} -> {to:?}: same records");
            }
        }
    }

    #[test]
    fn refuses_unknown_codec_and_bytes_that_are_not_the_codec() {
        let p = policy(CompressionType::Producer, true);
        for codec in 5..=7i16 {
            let mut b = batch::build(0, 2, 10, 5);
            b[21..23].copy_from_slice(&codec.to_be_bytes());
            let crc = batch::compute_crc(&b);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            let e = prepare(Bytes::from(b), &p).expect_err("refused");
            assert_eq!(e, CompressionError::UnknownCodec(codec));
            assert_eq!(e.code(), errors::CORRUPT_MESSAGE);
        }
        // The codec bit over plain records, for every codec.
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let plain = batch::build(0, 3, 50, 5);
            let b = rebuild(&plain[..HEADER_BYTES], codec, &plain[HEADER_BYTES..]);
            let e = prepare(Bytes::from(b.clone()), &p).expect_err("refused");
            assert_eq!(e.code(), errors::CORRUPT_MESSAGE, "{codec:?}: {e}");
            // Without validation it is stored as sent (the setting's other side).
            let off = policy(CompressionType::Producer, false);
            assert_eq!(prepare(Bytes::from(b.clone()), &off).expect("kept"), b);
        }
    }

    #[test]
    fn truncated_compressed_records_are_refused() {
        let p = policy(CompressionType::Producer, true);
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let full = batch_as(codec, 30);
            let plain = batch::build_with(0, 30, 200, 1_700_000_000_000, 42, 3, 17);
            let body = &full[HEADER_BYTES..full.len() - 5];
            let b = rebuild(&plain[..HEADER_BYTES], codec, body);
            assert!(prepare(Bytes::from(b), &p).is_err(), "{codec:?}");
        }
    }

    #[test]
    fn decompression_bombs_stop_at_the_cap() {
        let zeros = vec![0u8; 4 << 20];
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let body = compress_records(codec, &zeros).expect("compress");
            assert!(body.len() < 256 << 10, "{codec:?} compresses zeros");
            assert_eq!(
                decompress_records(codec, &body, 1 << 20),
                Err(CompressionError::TooLarge { max: 1 << 20 }),
                "{codec:?}"
            );
            let plain = batch::build(0, 1, 10, 5);
            let b = rebuild(&plain[..HEADER_BYTES], codec, &body);
            let e = prepare(Bytes::from(b), &policy(CompressionType::Producer, true))
                .expect_err("refused");
            assert_eq!(e.code(), errors::MESSAGE_TOO_LARGE);
        }
    }

    #[test]
    fn record_walk_checks_counts_offsets_and_lengths() {
        let b = batch::build(0, 4, 20, 5);
        let records = &b[HEADER_BYTES..];
        check_records(records, 4).expect("valid");
        assert!(check_records(records, 3).is_err(), "bytes left over");
        assert!(check_records(records, 5).is_err(), "a record missing");
        // The second record's offset delta (zigzag 1 = 0x02) turned into 2 (0x04).
        let mut gap = records.to_vec();
        let first_len = gap[0] as usize / 2 + 1;
        assert_eq!(gap[first_len + 3], 0x02);
        gap[first_len + 3] = 0x04;
        let e = check_records(&gap, 4).expect_err("gap refused");
        assert!(e.to_string().contains("offset delta 2"), "{e}");
        // A value length running past its record.
        let mut long = records.to_vec();
        long[5] = 0x7e;
        assert!(check_records(&long, 4).is_err());
    }

    #[test]
    fn snappy_reads_raw_and_xerial_framing() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        let raw = snap::raw::Encoder::new().compress_vec(&data).expect("raw");
        assert_eq!(
            decompress_records(Codec::Snappy, &raw, 1 << 20).expect("raw"),
            data
        );
        let framed = compress_records(Codec::Snappy, &data).expect("framed");
        assert!(framed.starts_with(&XERIAL_MAGIC));
        assert_eq!(
            decompress_records(Codec::Snappy, &framed, 1 << 20).expect("x"),
            data
        );
    }

    #[test]
    fn compression_type_names() {
        for n in CompressionType::NAMES {
            assert!(CompressionType::parse(n).is_some(), "{n}");
        }
        assert_eq!(CompressionType::parse("LZ4"), None);
        assert_eq!(CompressionType::parse("none"), None);
    }
}

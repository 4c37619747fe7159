//! Kafka RecordBatch v2: the unit the log stores, verbatim.
//!
//! The log never re-encodes records. A batch arrives from a producer as bytes, is validated
//! here (size, magic, CRC32C, record count), and is stored exactly as received except for the
//! two header fields that lie *outside* the CRC: `baseOffset` and `partitionLeaderEpoch`. Both
//! are patched in place when the log assigns offsets, so appending costs one copy of the bytes
//! and no per-record work. The header is read through a `zerocopy` view ([`BatchHeader`]); no
//! field is copied out by hand.
//!
//! Layout (all integers big-endian), offsets in bytes from the batch start:
//!
//! | off | size | field                 | covered by CRC |
//! |-----|------|-----------------------|----------------|
//! | 0   | 8    | baseOffset            | no             |
//! | 8   | 4    | batchLength (= total - 12) | no        |
//! | 12  | 4    | partitionLeaderEpoch  | no             |
//! | 16  | 1    | magic (= 2)           | no             |
//! | 17  | 4    | crc (CRC32C of 21..end) | no           |
//! | 21  | 2    | attributes            | yes            |
//! | 23  | 4    | lastOffsetDelta       | yes            |
//! | 27  | 8    | baseTimestamp         | yes            |
//! | 35  | 8    | maxTimestamp          | yes            |
//! | 43  | 8    | producerId            | yes            |
//! | 51  | 2    | producerEpoch         | yes            |
//! | 53  | 4    | baseSequence          | yes            |
//! | 57  | 4    | recordsCount          | yes            |
//! | 61  | ..   | records               | yes            |

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use bytes::{Bytes, BytesMut};

use crate::Offset;

pub use shardlog_format::{get_varlong, put_varlong, HEADER_BYTES, LOG_OVERHEAD};
use shardlog_format::{
    ATTR_COMPRESSION_MASK, ATTR_CONTROL, ATTR_TIMESTAMP_TYPE, ATTR_TRANSACTIONAL, CRC_START,
};

/// The RecordBatch v2 header as it lies in memory; read it with [`BatchHeader::ref_from_prefix`].
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct BatchHeader {
    pub base_offset: I64,
    pub batch_length: I32,
    pub partition_leader_epoch: I32,
    pub magic: i8,
    pub crc: U32,
    pub attributes: I16,
    pub last_offset_delta: I32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub records_count: I32,
}

const _: () = assert!(std::mem::size_of::<BatchHeader>() == HEADER_BYTES);

/// Why a batch was refused. Nothing is written when any of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch of {0} bytes is shorter than the 61-byte RecordBatch v2 header")]
    TooShort(usize),
    #[error("batchLength {declared} does not match the {actual} bytes present")]
    LengthMismatch { declared: i64, actual: usize },
    #[error("unsupported magic {0} (only RecordBatch v2 is accepted)")]
    Magic(i8),
    #[error("CRC32C mismatch: header says {stored:#010x}, data gives {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("recordsCount {count} is inconsistent with lastOffsetDelta {delta}")]
    RecordCount { count: i32, delta: i32 },
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// Attributes bits 0-2 name a codec Kafka does not define (5, 6, 7): no consumer can read
    /// the records, so storing the batch would stall every consumer at its offset.
    #[error("unknown compression codec {0} in the batch attributes (0-4 are defined)")]
    UnknownCodec(i16),
}

/// The highest compression codec id Kafka defines (4 = zstd).
pub const MAX_CODEC: i16 = 4;

/// What the log and the broker need to know about a validated batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: Offset,
    pub size: usize,
    pub last_offset_delta: i32,
    pub record_count: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub attributes: i16,
    pub partition_leader_epoch: i32,
}

impl BatchInfo {
    pub fn last_offset(&self) -> Offset {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    pub fn next_offset(&self) -> Offset {
        self.last_offset() + 1
    }
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    /// The sequence number of the last record, wrapping as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

/// Reads the header fields without checking the CRC. `bytes` must hold at least the header.
pub fn peek(bytes: &[u8]) -> Result<BatchInfo, BatchError> {
    let (h, _) =
        BatchHeader::ref_from_prefix(bytes).map_err(|_| BatchError::TooShort(bytes.len()))?;
    let batch_len = i64::from(h.batch_length.get());
    let size = batch_len + LOG_OVERHEAD as i64;
    if batch_len < (HEADER_BYTES - LOG_OVERHEAD) as i64 {
        return Err(BatchError::LengthMismatch {
            declared: batch_len,
            actual: bytes.len(),
        });
    }
    Ok(BatchInfo {
        base_offset: h.base_offset.get(),
        size: size as usize,
        last_offset_delta: h.last_offset_delta.get(),
        record_count: h.records_count.get(),
        first_timestamp: h.base_timestamp.get(),
        max_timestamp: h.max_timestamp.get(),
        producer_id: h.producer_id.get(),
        producer_epoch: h.producer_epoch.get(),
        base_sequence: h.base_sequence.get(),
        attributes: h.attributes.get(),
        partition_leader_epoch: h.partition_leader_epoch.get(),
    })
}

/// CRC32C over the CRC-covered region of a batch (`bytes` is exactly one batch). It runs on
/// every appended batch and on every batch read from disk.
pub fn compute_crc(bytes: &[u8]) -> u32 {
    shardlog_format::batch_crc(bytes)
}

/// Full validation of exactly one batch: length, magic, CRC, record count vs lastOffsetDelta.
pub fn validate(bytes: &[u8], max_bytes: usize) -> Result<BatchInfo, BatchError> {
    if bytes.len() > max_bytes {
        return Err(BatchError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    let info = peek(bytes)?;
    if info.size != bytes.len() {
        return Err(BatchError::LengthMismatch {
            declared: info.size as i64 - LOG_OVERHEAD as i64,
            actual: bytes.len(),
        });
    }
    let (h, _) =
        BatchHeader::ref_from_prefix(bytes).map_err(|_| BatchError::TooShort(bytes.len()))?;
    if h.magic != 2 {
        return Err(BatchError::Magic(h.magic));
    }
    let stored = h.crc.get();
    let computed = compute_crc(bytes);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    // A v2 batch from a producer holds exactly lastOffsetDelta + 1 records (Kafka refuses
    // anything else as an inconsistent offset range). Only compaction, which this broker does
    // not do, would leave fewer records than the range.
    let count = info.record_count;
    let delta = info.last_offset_delta;
    if count <= 0 || delta < 0 || i64::from(count) != i64::from(delta) + 1 {
        return Err(BatchError::RecordCount { count, delta });
    }
    Ok(info)
}

/// [`validate`] for a batch a producer sends: also refuses a codec Kafka does not define.
/// (Recovery uses [`validate`] alone: a batch stored before this check existed must not
/// truncate the log behind it.)
pub fn validate_new(bytes: &[u8], max_bytes: usize) -> Result<BatchInfo, BatchError> {
    let info = validate(bytes, max_bytes)?;
    if info.compression() > MAX_CODEC {
        return Err(BatchError::UnknownCodec(info.compression()));
    }
    Ok(info)
}

/// Assigns the batch its place in the log: patches baseOffset and partitionLeaderEpoch, which
/// lie outside the CRC, so the stored CRC stays valid.
pub fn assign(bytes: &mut [u8], base_offset: Offset, leader_epoch: i32) {
    if let Ok((h, _)) = BatchHeader::mut_from_prefix(bytes) {
        h.base_offset.set(base_offset);
        h.partition_leader_epoch.set(leader_epoch);
    }
}

/// Turns a batch into a LogAppendTime batch stamped `now_ms`: sets the timestamp-type bit and
/// maxTimestamp (both inside the CRC) and recomputes the CRC over the unchanged records.
pub fn stamp_log_append_time(bytes: &mut [u8], now_ms: i64) {
    stamp_log_append_time_split(bytes, &[], now_ms);
}

/// [`stamp_log_append_time`] for a batch held as its header (`head`, at least
/// [`HEADER_BYTES`]) and the rest (`tail`); only `head` changes.
pub fn stamp_log_append_time_split(head: &mut [u8], tail: &[u8], now_ms: i64) {
    if let Ok((h, _)) = BatchHeader::mut_from_prefix(head) {
        let attrs = h.attributes.get() | ATTR_TIMESTAMP_TYPE;
        h.attributes.set(attrs);
        h.max_timestamp.set(now_ms);
    } else {
        return;
    }
    let crc = shardlog_format::crc32c(&[&head[CRC_START..], tail]);
    if let Ok((h, _)) = BatchHeader::mut_from_prefix(head) {
        h.crc.set(crc);
    }
}

/// A new batch: `head`'s header (at least [`HEADER_BYTES`]) with codec bits `compression` and
/// `records` as its records section; batchLength and CRC are recomputed, every other field is
/// kept. Used to store a batch recompressed under a topic's `compression.type`.
pub fn with_records(head: &[u8], compression: i16, records: &[u8]) -> Vec<u8> {
    let head = &head[..HEADER_BYTES.min(head.len())];
    let mut out = Vec::with_capacity(HEADER_BYTES + records.len());
    out.extend_from_slice(head);
    out.resize(HEADER_BYTES, 0);
    out.extend_from_slice(records);
    if let Ok((h, _)) = BatchHeader::mut_from_prefix(&mut out[..]) {
        let attrs =
            (h.attributes.get() & !ATTR_COMPRESSION_MASK) | (compression & ATTR_COMPRESSION_MASK);
        h.attributes.set(attrs);
        h.batch_length
            .set(i32::try_from(HEADER_BYTES - LOG_OVERHEAD + records.len()).unwrap_or(i32::MAX));
    }
    let crc = compute_crc(&out);
    if let Ok((h, _)) = BatchHeader::mut_from_prefix(&mut out[..]) {
        h.crc.set(crc);
    }
    out
}

/// Builds a valid uncompressed batch of `count` records with the given value size. Used by
/// tests, benches and fuzz seeds; it is a real encoder (varints per the v2 record format).
pub fn build(base_offset: Offset, count: i32, value_bytes: usize, timestamp_ms: i64) -> Vec<u8> {
    build_with(base_offset, count, value_bytes, timestamp_ms, -1, -1, -1)
}

/// Like [`build`] with producer id, epoch and base sequence (idempotent producer batches).
pub fn build_with(
    base_offset: Offset,
    count: i32,
    value_bytes: usize,
    timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let count = count.max(1);
    let mut records = Vec::with_capacity(count as usize * (value_bytes + 16));
    for i in 0..count {
        let mut rec = Vec::with_capacity(value_bytes + 16);
        rec.push(0u8); // attributes
        put_varlong(&mut rec, 0); // timestamp delta
        put_varlong(&mut rec, i64::from(i)); // offset delta
        put_varlong(&mut rec, -1); // null key
        put_varlong(&mut rec, value_bytes as i64);
        rec.extend((0..value_bytes).map(|j| (j as u8).wrapping_add(i as u8)));
        put_varlong(&mut rec, 0); // no headers
        put_varlong(&mut records, rec.len() as i64);
        records.extend_from_slice(&rec);
    }
    let total = HEADER_BYTES + records.len();
    let mut out = vec![0u8; total];
    if let Ok((h, _)) = BatchHeader::mut_from_prefix(&mut out[..]) {
        h.base_offset.set(base_offset);
        h.batch_length.set((total - LOG_OVERHEAD) as i32);
        h.partition_leader_epoch.set(0);
        h.magic = 2;
        h.attributes.set(0);
        h.last_offset_delta.set(count - 1);
        h.base_timestamp.set(timestamp_ms);
        h.max_timestamp.set(timestamp_ms);
        h.producer_id.set(producer_id);
        h.producer_epoch.set(producer_epoch);
        h.base_sequence.set(base_sequence);
        h.records_count.set(count);
    }
    out[HEADER_BYTES..].copy_from_slice(&records);
    let crc = compute_crc(&out);
    if let Ok((h, _)) = BatchHeader::mut_from_prefix(&mut out[..]) {
        h.crc.set(crc);
    }
    out
}

/// For an uncompressed batch, the offset and timestamp of the first record whose timestamp is
/// at least `ts`. Returns `None` if the records cannot be walked (compressed or malformed) or
/// none qualifies.
pub fn first_record_at_or_after(bytes: &[u8], ts: i64) -> Option<(Offset, i64)> {
    let info = peek(bytes).ok()?;
    if info.compression() != 0 || info.is_log_append_time() {
        return None;
    }
    let mut pos = HEADER_BYTES;
    let end = info.size.min(bytes.len());
    for _ in 0..info.record_count {
        let len = get_varlong(bytes, &mut pos)?;
        let start = pos;
        if len < 0 || start + len as usize > end {
            return None;
        }
        pos += 1; // attributes
        let ts_delta = get_varlong(bytes, &mut pos)?;
        let off_delta = get_varlong(bytes, &mut pos)?;
        let rec_ts = info.first_timestamp.saturating_add(ts_delta);
        if rec_ts >= ts {
            // An offset delta outside the batch's range (or an offset past i64::MAX) is a
            // malformed record.
            return (0..=i64::from(info.last_offset_delta))
                .contains(&off_delta)
                .then(|| info.base_offset.checked_add(off_delta))
                .flatten()
                .map(|offset| (offset, rec_ts));
        }
        pos = start + len as usize;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batch_validates_and_patching_keeps_crc() {
        let mut b = build(0, 10, 100, 1_000);
        let info = validate(&b, 1 << 20).expect("valid");
        assert_eq!(info.record_count, 10);
        assert_eq!(info.last_offset_delta, 9);
        assign(&mut b, 12_345, 7);
        let info = validate(&b, 1 << 20).expect("still valid after assign");
        assert_eq!(info.base_offset, 12_345);
        assert_eq!(info.partition_leader_epoch, 7);
        assert_eq!(info.last_offset(), 12_354);
    }

    #[test]
    fn every_flipped_bit_in_crc_region_is_detected() {
        let b = build(0, 3, 20, 5);
        for i in CRC_START..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(
                    validate(&c, 1 << 20).is_err(),
                    "flip at byte {i} bit {bit} undetected"
                );
            }
        }
    }

    #[test]
    fn refuses_bad_magic_length_count_and_size() {
        let b = build(0, 2, 10, 5);
        let mut m = b.clone();
        m[16] = 1;
        assert_eq!(validate(&m, 1 << 20), Err(BatchError::Magic(1)));
        assert!(matches!(
            validate(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert!(matches!(
            validate(&b[..30], 1 << 20),
            Err(BatchError::TooShort(30))
        ));
        assert!(matches!(validate(&b, 10), Err(BatchError::TooLarge { .. })));
        let mut c = b.clone();
        c[57..61].copy_from_slice(&5i32.to_be_bytes()); // count 5 > delta+1 = 2
        let crc = compute_crc(&c);
        c[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&c, 1 << 20),
            Err(BatchError::RecordCount { .. })
        ));
        let mut d = b.clone();
        d[23..27].copy_from_slice(&9i32.to_be_bytes()); // 2 records claiming 10 offsets
        let crc = compute_crc(&d);
        d[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&d, 1 << 20),
            Err(BatchError::RecordCount { count: 2, delta: 9 })
        ));
    }

    /// Issue 17: codecs 5-7 were stored, and every consumer then looped on "Decompression
    /// failed" at that offset.
    #[test]
    fn refuses_unknown_codec() {
        for codec in 5..=7i16 {
            let mut b = build(0, 2, 10, 5);
            b[21..23].copy_from_slice(&codec.to_be_bytes());
            let crc = compute_crc(&b);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(
                validate_new(&b, 1 << 20),
                Err(BatchError::UnknownCodec(codec))
            );
            assert!(
                validate(&b, 1 << 20).is_ok(),
                "recovery keeps stored batches"
            );
        }
    }

    #[test]
    fn log_append_time_restamps_and_revalidates() {
        let mut b = build(0, 2, 10, 5);
        stamp_log_append_time(&mut b, 99);
        let info = validate(&b, 1 << 20).expect("valid");
        assert!(info.is_log_append_time());
        assert_eq!(info.max_timestamp, 99);
    }

    #[test]
    fn finds_record_by_timestamp() {
        let b = build(100, 4, 8, 50);
        assert_eq!(first_record_at_or_after(&b, 50), Some((100, 50)));
        assert_eq!(first_record_at_or_after(&b, 51), None);
    }

    /// Found by the `batch_validate` fuzz target once built with overflow checks
    /// (`fuzz/seeds/batch_validate/crash-offset-delta-overflow`): a record whose offset delta
    /// is far outside the batch made `base + delta` overflow.
    #[test]
    fn record_offset_delta_outside_the_batch_is_malformed() {
        let input = include_bytes!("../../fuzz/seeds/batch_validate/crash-offset-delta-overflow");
        let info = peek(input).expect("a batch header");
        assert_eq!(info.base_offset, i64::MIN, "the input's base offset");
        assert_eq!(first_record_at_or_after(input, 0), None);
        // Near the top of the offset range, a valid batch is still found without overflow.
        let mut b = build(0, 4, 8, 50);
        assign(&mut b, i64::MAX - 3, 0);
        assert_eq!(first_record_at_or_after(&b, 50), Some((i64::MAX - 3, 50)));
        let mut tail = build(0, 2, 8, 50);
        assign(&mut tail, i64::MAX - 1, 0);
        let mut bytes = tail.clone();
        bytes[HEADER_BYTES + 3] = 0x02; // first record's offset delta: zigzag 1 (was 0)
        assert_eq!(first_record_at_or_after(&bytes, 50), Some((i64::MAX, 50)));
    }

    #[test]
    fn last_sequence_wraps() {
        let b = build_with(0, 3, 1, 0, 7, 0, i32::MAX - 1);
        let info = validate(&b, 1 << 20).expect("valid");
        assert_eq!(info.last_sequence(), 0);
    }
}

/// One stored batch as the log hands it out: its 61-byte header and the records after it.
///
/// A batch appended through the cache is kept as two buffers: a small copy of the header,
/// patched with the assigned offset and leader epoch (and, for LogAppendTime, the time and
/// CRC), and the records exactly as the producer sent them — the append copies the batch once,
/// into the write buffer, and not a second time for the cache. A batch read from disk is one
/// buffer. Either way the header fields are read from [`StoredBatch::header`] alone, and
/// [`StoredBatch::chunks`] are written to a socket in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    head: Bytes,
    tail: Bytes,
}

impl StoredBatch {
    /// A batch that lies in one buffer.
    pub fn whole(bytes: Bytes) -> Self {
        Self {
            head: bytes,
            tail: Bytes::new(),
        }
    }

    /// A header buffer (at least [`HEADER_BYTES`]) and the rest of the batch.
    pub fn split(head: Bytes, tail: Bytes) -> Self {
        debug_assert!(head.len() >= HEADER_BYTES || tail.is_empty());
        Self { head, tail }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first buffer: it always holds the whole header.
    pub fn header(&self) -> &[u8] {
        &self.head
    }

    /// The header fields.
    pub fn info(&self) -> Result<BatchInfo, BatchError> {
        peek(&self.head)
    }

    /// The non-empty buffers that make up the batch, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &Bytes> {
        std::iter::once(&self.head)
            .chain(std::iter::once(&self.tail))
            .filter(|c| !c.is_empty())
    }

    /// The batch in one buffer (a copy only when it is held as two).
    pub fn to_bytes(&self) -> Bytes {
        if self.tail.is_empty() {
            return self.head.clone();
        }
        let mut b = BytesMut::with_capacity(self.len());
        b.extend_from_slice(&self.head);
        b.extend_from_slice(&self.tail);
        b.freeze()
    }
}

//! RecordBatch v2 helpers on top of `kafka_protocol::records`: encoding a producer batch,
//! splitting a fetched byte range into whole batches, decoding them.

use bytes::{Buf, Bytes, BytesMut};
use indexmap::IndexMap;
pub use kafka_protocol::records::{Compression, Record, TimestampType};
use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

use crate::error::{ClientError, Result};

/// Size of the RecordBatch v2 header up to and including the record count.
pub const BATCH_HEADER_LEN: usize = 61;

/// Parses a compression name (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
pub fn parse_compression(s: &str) -> Result<Compression> {
    match s.to_ascii_lowercase().as_str() {
        "none" | "" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        other => Err(ClientError::InvalidArgument(format!(
            "compression {other:?} (none, gzip, snappy, lz4, zstd)"
        ))),
    }
}

/// Producer identity stamped into a batch (`-1`s for a non-idempotent producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id from InitProducerId, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the batch's first record, or -1.
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// No producer identity.
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// One record to put in a batch.
#[derive(Debug, Clone, Default)]
pub struct OutRecord {
    /// Key bytes (None: null key).
    pub key: Option<Bytes>,
    /// Value bytes (None: null value / tombstone).
    pub value: Option<Bytes>,
    /// Create time in ms since the epoch.
    pub timestamp_ms: i64,
}

/// Encodes records as exactly one RecordBatch v2 (offsets 0..n-1, sequences from `stamp`).
pub fn encode_batch(
    records: &[OutRecord],
    compression: Compression,
    stamp: ProducerStamp,
) -> Result<Bytes> {
    if records.is_empty() {
        return Err(ClientError::InvalidArgument("empty batch".into()));
    }
    let size: usize = records
        .iter()
        .map(|r| {
            r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + 24
        })
        .sum();
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: stamp.producer_id,
            producer_epoch: stamp.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if stamp.base_sequence < 0 {
                // The encoder derives baseSequence from the first record and starts a new
                // batch when offset - sequence changes: i - 1 gives one batch with -1.
                i as i32 - 1
            } else {
                stamp.base_sequence.wrapping_add(i as i32)
            },
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::with_capacity(BATCH_HEADER_LEN + size);
    let opts = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, recs.iter(), &opts).map_err(|e| ClientError::Encode {
        api: "RecordBatch",
        msg: e.to_string(),
    })?;
    Ok(buf.freeze())
}

/// Header fields of one batch, read without decoding its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// First offset.
    pub base_offset: i64,
    /// Bytes of the whole batch (including the 12-byte offset+length prefix).
    pub total_len: usize,
    /// Offset delta of the last record.
    pub last_offset_delta: i32,
    /// Number of records.
    pub record_count: i32,
    /// Attributes (compression, control, ...).
    pub attributes: i16,
    /// Magic byte (2 for v2).
    pub magic: i8,
}

impl BatchHeader {
    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Whether this is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & (1 << 5) != 0
    }
}

/// Reads the header of the batch at the start of `buf`; `None` if `buf` does not hold a
/// whole batch (a fetch response may end with a partial one).
pub fn peek_batch(buf: &[u8]) -> Option<BatchHeader> {
    if buf.len() < BATCH_HEADER_LEN {
        return None;
    }
    let mut b = buf;
    let base_offset = b.get_i64();
    let batch_len = b.get_i32();
    if batch_len < (BATCH_HEADER_LEN as i32 - 12) {
        return None;
    }
    let total_len = 12 + batch_len as usize;
    if buf.len() < total_len {
        return None;
    }
    let _leader_epoch = b.get_i32();
    let magic = b.get_i8();
    let _crc = b.get_u32();
    let attributes = b.get_i16();
    let last_offset_delta = b.get_i32();
    b.advance(8 + 8 + 8 + 2 + 4);
    let record_count = b.get_i32();
    Some(BatchHeader {
        base_offset,
        total_len,
        last_offset_delta,
        record_count,
        attributes,
        magic,
    })
}

/// Splits a fetched record set into whole batches (a trailing partial batch is dropped).
pub fn split_batches(mut data: Bytes) -> Vec<(BatchHeader, Bytes)> {
    let mut out = Vec::new();
    while let Some(h) = peek_batch(&data) {
        let batch = data.split_to(h.total_len);
        out.push((h, batch));
    }
    out
}

/// A record read back from a batch.
#[derive(Debug, Clone)]
pub struct InRecord {
    /// Absolute offset.
    pub offset: i64,
    /// Timestamp (create or log-append time, ms).
    pub timestamp_ms: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
}

/// Decodes one whole v2 batch (checking its CRC, decompressing as needed).
pub fn decode_batch(mut batch: Bytes) -> Result<Vec<InRecord>> {
    let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| ClientError::Decode {
        api: "RecordBatch",
        msg: e.to_string(),
    })?;
    Ok(set
        .records
        .into_iter()
        .filter(|r| !r.control)
        .map(|r| InRecord {
            offset: r.offset,
            timestamp_ms: r.timestamp,
            key: r.key,
            value: r.value,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<OutRecord> {
        (0..n)
            .map(|i| OutRecord {
                key: if i % 3 == 0 {
                    None
                } else {
                    Some(Bytes::from(format!("k{i}")))
                },
                value: Some(Bytes::from(vec![(i % 251) as u8; 100 + i])),
                timestamp_ms: 1_700_000_000_000 + i as i64,
            })
            .collect()
    }

    #[test]
    fn round_trip_every_compression() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let recs = sample(50);
            let bytes = encode_batch(&recs, c, ProducerStamp::NONE).expect("encode");
            let h = peek_batch(&bytes).expect("whole batch");
            assert_eq!(h.total_len, bytes.len(), "{c:?}");
            assert_eq!(h.record_count, 50);
            assert_eq!(h.last_offset_delta, 49);
            assert_eq!(h.magic, 2);
            assert_eq!(h.attributes & 7, c as i16);
            let back = decode_batch(bytes).expect("decode");
            assert_eq!(back.len(), recs.len());
            for (i, (a, b)) in recs.iter().zip(&back).enumerate() {
                assert_eq!(b.offset, i as i64);
                assert_eq!(a.key, b.key);
                assert_eq!(a.value, b.value);
                assert_eq!(a.timestamp_ms, b.timestamp_ms);
            }
        }
    }

    #[test]
    fn idempotent_stamp_is_in_header() {
        let stamp = ProducerStamp {
            producer_id: 77,
            producer_epoch: 3,
            base_sequence: 1000,
        };
        let bytes = encode_batch(&sample(10), Compression::None, stamp).expect("encode");
        assert!(split_batches(bytes.clone()).len() == 1, "one batch");
        // producerId at 43, epoch at 51, baseSequence at 53.
        let mut b = &bytes[43..];
        assert_eq!(b.get_i64(), 77);
        assert_eq!(b.get_i16(), 3);
        assert_eq!(b.get_i32(), 1000);
    }

    #[test]
    fn non_idempotent_stamp_is_minus_one() {
        let bytes = encode_batch(&sample(5), Compression::None, ProducerStamp::NONE).expect("e");
        assert_eq!(split_batches(bytes.clone()).len(), 1);
        let mut b = &bytes[43..];
        assert_eq!(b.get_i64(), -1);
        assert_eq!(b.get_i16(), -1);
        assert_eq!(b.get_i32(), -1);
    }

    #[test]
    fn corrupt_crc_is_rejected() {
        let bytes = encode_batch(&sample(5), Compression::None, ProducerStamp::NONE).expect("e");
        let mut v = bytes.to_vec();
        let last = v.len() - 1;
        v[last] ^= 0xff;
        assert!(decode_batch(Bytes::from(v)).is_err());
    }

    #[test]
    fn split_drops_partial_tail() {
        let a = encode_batch(&sample(3), Compression::None, ProducerStamp::NONE).expect("e");
        let b = encode_batch(&sample(4), Compression::Lz4, ProducerStamp::NONE).expect("e");
        let mut all = BytesMut::new();
        all.extend_from_slice(&a);
        all.extend_from_slice(&b);
        all.extend_from_slice(&b[..b.len() - 7]);
        let parts = split_batches(all.freeze());
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, a);
        assert_eq!(parts[1].1, b);
        assert_eq!(parts[1].0.record_count, 4);
    }

    #[test]
    fn compression_names() {
        assert_eq!(parse_compression("ZSTD").expect("ok"), Compression::Zstd);
        assert!(parse_compression("brotli").is_err());
    }
}

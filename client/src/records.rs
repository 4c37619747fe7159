//! RecordBatch v2 helpers on top of `kafka_protocol::records`: encoding a producer batch,
//! splitting a fetched byte range into whole batches, decoding them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
pub use kafka_protocol::records::Compression;

use shardlog_format::{
    batch_crc, put_varlong, take_varlong, varint_len, ATTR_COMPRESSION_MASK, ATTR_CONTROL,
    ATTR_TIMESTAMP_TYPE, CRC_AT,
};

use crate::error::{ClientError, Result};

/// Size of the RecordBatch v2 header up to and including the record count.
pub const BATCH_HEADER_LEN: usize = shardlog_format::HEADER_BYTES;

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

/// Builds one RecordBatch v2 record by record: each record is encoded into the batch's buffer
/// as it is added (one copy of its key and value), and [`BatchBuilder::finish`] fills in the
/// header in place, so an uncompressed batch is not copied again on its way to the socket
/// (batches under 4 KiB are copied into the request's own buffer). The base timestamp is the
/// first record's.
#[derive(Debug)]
pub struct BatchBuilder {
    /// The 61-byte header (filled by `finish`) followed by the encoded records.
    buf: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// An empty batch whose buffer has room for `capacity` bytes of records before it grows.
    pub fn with_capacity(capacity: usize) -> BatchBuilder {
        Self::in_buffer(BytesMut::new(), capacity)
    }

    /// Like [`BatchBuilder::with_capacity`], in a buffer that is reused (its contents are
    /// discarded; it grows only if it has less room than asked for).
    pub fn in_buffer(mut buf: BytesMut, capacity: usize) -> BatchBuilder {
        buf.clear();
        buf.reserve(BATCH_HEADER_LEN + capacity);
        buf.resize(BATCH_HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// Appends a record. `value` is given in parts that are written one after the other (None:
    /// a null value). Fails only past `i32::MAX` records or bytes.
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[&[u8]]>,
        timestamp_ms: i64,
    ) -> Result<()> {
        if self.count == 0 {
            self.base_timestamp = timestamp_ms;
        }
        let ts_delta = timestamp_ms.wrapping_sub(self.base_timestamp);
        let offset_delta = i64::from(self.count);
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let value_len = value.map_or(-1, |v| v.iter().map(|p| p.len() as i64).sum());
        let body = 1 // attributes
            + varint_len(ts_delta)
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key_len.max(0) as usize
            + varint_len(value_len)
            + value_len.max(0) as usize
            + 1; // header count 0
        let total = varint_len(body as i64) + body;
        if self.count == i32::MAX || self.buf.len() + total > i32::MAX as usize {
            return Err(ClientError::InvalidArgument("batch too large".into()));
        }
        self.buf.reserve(total);
        put_varlong(&mut self.buf, body as i64);
        self.buf.put_u8(0);
        put_varlong(&mut self.buf, ts_delta);
        put_varlong(&mut self.buf, offset_delta);
        put_varlong(&mut self.buf, key_len);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        put_varlong(&mut self.buf, value_len);
        for p in value.unwrap_or(&[]) {
            self.buf.extend_from_slice(p);
        }
        put_varlong(&mut self.buf, 0);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        Ok(())
    }

    /// Records added so far.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Bytes a record with these key and value lengths takes in the batch (at most).
    pub fn record_len(key_len: usize, value_len: usize) -> usize {
        // length, timestamp delta, offset delta, key and value lengths: 10 bytes each at most;
        // attributes and header count: 1 byte each.
        key_len + value_len + 5 * 10 + 2
    }

    /// Completes the batch: offsets 0..n-1, sequences from `stamp`, records compressed with
    /// `compression`.
    pub fn finish(self, compression: Compression, stamp: ProducerStamp) -> Result<Bytes> {
        if self.count == 0 {
            return Err(ClientError::InvalidArgument("empty batch".into()));
        }
        let mut buf = match compression {
            Compression::None => self.buf,
            c => {
                let mut buf = self.buf;
                let records = buf.split_off(BATCH_HEADER_LEN);
                buf.reserve(records.len() / 2);
                compress_into(&mut buf, records, c)?;
                buf
            }
        };
        let batch_len = i32::try_from(buf.len() - 12)
            .map_err(|_| ClientError::InvalidArgument("batch too large".into()))?;
        let mut h = &mut buf[..BATCH_HEADER_LEN];
        h.put_i64(0); // base offset
        h.put_i32(batch_len);
        h.put_i32(-1); // partition leader epoch
        h.put_i8(2); // magic
        h.put_u32(0); // crc, below
        h.put_i16(compression as i16); // attributes: create time, not transactional
        h.put_i32(self.count - 1);
        h.put_i64(self.base_timestamp);
        h.put_i64(self.max_timestamp);
        h.put_i64(stamp.producer_id);
        h.put_i16(stamp.producer_epoch);
        h.put_i32(stamp.base_sequence);
        h.put_i32(self.count);
        let crc = batch_crc(&buf);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(buf.freeze())
    }
}

/// A batch that cannot be decoded.
fn bad_batch(msg: impl std::fmt::Display) -> ClientError {
    ClientError::Decode {
        api: "RecordBatch",
        msg: msg.to_string(),
    }
}

/// Appends `records` compressed with `c` to `out`. The compressors ask for the
/// uncompressed bytes in a buffer of their own: `records` is handed over, not copied.
fn compress_into(out: &mut BytesMut, records: BytesMut, c: Compression) -> Result<()> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let give = |records: BytesMut| {
        move |tmp: &mut BytesMut| {
            *tmp = records;
            Ok(())
        }
    };
    let r = match c {
        Compression::None => {
            out.unsplit(records);
            Ok(())
        }
        Compression::Gzip => Gzip::compress(out, give(records)),
        Compression::Snappy => Snappy::compress(out, give(records)),
        Compression::Lz4 => Lz4::compress(out, give(records)),
        Compression::Zstd => Zstd::compress(out, give(records)),
    };
    r.map_err(|e| ClientError::Encode {
        api: "RecordBatch",
        msg: e.to_string(),
    })
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
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }

    /// Whether this is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
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
    /// Headers in order: key and value (no allocation for a record without headers).
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// Decodes one whole v2 batch (checking its CRC, decompressing as needed). Records are parsed
/// in place: keys and values are slices of the batch (or of its decompressed records). A
/// control batch (transaction markers) gives no records.
pub fn decode_batch(batch: Bytes) -> Result<Vec<InRecord>> {
    let h = peek_batch(&batch)
        .filter(|h| h.total_len == batch.len())
        .ok_or_else(|| bad_batch("not one whole batch"))?;
    if h.magic != 2 {
        return Err(bad_batch("not a v2 batch"));
    }
    if batch_crc(&batch) != (&batch[CRC_AT..CRC_AT + 4]).get_u32() {
        return Err(bad_batch("CRC mismatch"));
    }
    if h.attributes & ATTR_COMPRESSION_MASK > 4 {
        return Err(bad_batch("unknown compression codec"));
    }
    if h.is_control() {
        return Ok(Vec::new());
    }
    let records = batch.slice(BATCH_HEADER_LEN..);
    let records = match h.attributes & ATTR_COMPRESSION_MASK {
        0 => records,
        c => decompress(records, c)?,
    };
    parse_records(records, &batch, &h)
}

fn decompress(mut records: Bytes, codec: i16) -> Result<Bytes> {
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    let take = |b: &mut Bytes| Ok(std::mem::take(b));
    let r = match codec {
        1 => Gzip::decompress(&mut records, take),
        2 => Snappy::decompress(&mut records, take),
        3 => Lz4::decompress(&mut records, take),
        4 => Zstd::decompress(&mut records, take),
        other => return Err(bad_batch(format!("unknown compression codec {other}"))),
    };
    r.map_err(bad_batch)
}

/// The records of a v2 batch whose header is `h` (`batch` holds the header), parsed from
/// `records` (the uncompressed record bytes). Exactly `record_count` records that fill
/// `records`, each with an offset delta that fits the batch, or an error.
fn parse_records(records: Bytes, batch: &[u8], h: &BatchHeader) -> Result<Vec<InRecord>> {
    let base_timestamp = (&batch[27..35]).get_i64();
    let log_append_time = h.attributes & ATTR_TIMESTAMP_TYPE != 0;
    let max_timestamp = (&batch[35..43]).get_i64();
    let count = usize::try_from(h.record_count).map_err(|_| bad_batch("negative record count"))?;
    // A record takes at least 7 bytes: a count past that is a lie, not an allocation.
    if count > records.len() / 7 + 1 {
        return Err(bad_batch("record count larger than the records"));
    }
    let mut out = Vec::with_capacity(count);
    let mut at = 0usize;
    for _ in 0..count {
        let mut b = &records[at..];
        let len = take_varlong(&mut b).ok_or_else(|| bad_batch("record length"))?;
        let body_start = records.len() - b.len();
        let len = usize::try_from(len).map_err(|_| bad_batch("record length"))?;
        let body_end = body_start
            .checked_add(len)
            .filter(|&e| e <= records.len())
            .ok_or_else(|| bad_batch("record past the batch"))?;
        let mut r = &records[body_start..body_end];
        r = r.get(1..).ok_or_else(|| bad_batch("record attributes"))?;
        let ts_delta = take_varlong(&mut r).ok_or_else(|| bad_batch("timestamp delta"))?;
        let offset_delta = take_varlong(&mut r)
            .and_then(|d| i32::try_from(d).ok())
            .filter(|&d| (0..=h.last_offset_delta).contains(&d))
            .ok_or_else(|| bad_batch("offset delta"))?;
        let field = |r: &mut &[u8]| -> Result<Option<Bytes>> {
            let n = take_varlong(r).ok_or_else(|| bad_batch("field length"))?;
            if n == -1 {
                return Ok(None);
            }
            let n = usize::try_from(n).map_err(|_| bad_batch("field length"))?;
            if n > r.len() {
                return Err(bad_batch("field past the record"));
            }
            let start = body_end - r.len();
            *r = &r[n..];
            Ok(Some(records.slice(start..start + n)))
        };
        let key = field(&mut r)?;
        let value = field(&mut r)?;
        let header_count = take_varlong(&mut r)
            .and_then(|n| usize::try_from(n).ok())
            // A header takes at least 2 bytes: a larger count is a lie, not an allocation.
            .filter(|&n| n <= r.len() / 2)
            .ok_or_else(|| bad_batch("header count"))?;
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            let k = field(&mut r)?.ok_or_else(|| bad_batch("null header key"))?;
            headers.push((k, field(&mut r)?));
        }
        if !r.is_empty() {
            return Err(bad_batch("bytes after the record's fields"));
        }
        out.push(InRecord {
            offset: h
                .base_offset
                .checked_add(i64::from(offset_delta))
                .ok_or_else(|| bad_batch("offset past i64"))?,
            timestamp_ms: if log_append_time {
                max_timestamp
            } else {
                base_timestamp.wrapping_add(ts_delta)
            },
            key,
            value,
            headers,
        });
        at = body_end;
    }
    if at != records.len() {
        return Err(bad_batch("bytes after the last record"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

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

    const ALL_COMPRESSIONS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Makes a batch's CRC match its (altered) contents again.
    fn fix_crc(b: &mut BytesMut) {
        let c = batch_crc(b);
        b[17..21].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn round_trip_every_compression() {
        for c in ALL_COMPRESSIONS {
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

    fn build(recs: &[OutRecord], c: Compression, stamp: ProducerStamp) -> Bytes {
        let mut b = BatchBuilder::with_capacity(64);
        for r in recs {
            let v = r.value.as_deref();
            // Values in two parts, to check that parts are concatenated.
            let parts = v.map(|v| {
                let cut = v.len() / 3;
                [&v[..cut], &v[cut..]]
            });
            b.push(
                r.key.as_deref(),
                parts.as_ref().map(|p| &p[..]),
                r.timestamp_ms,
            )
            .expect("push");
        }
        assert_eq!(b.count(), recs.len());
        b.finish(c, stamp).expect("finish")
    }

    #[test]
    fn builder_matches_the_reference_encoder_byte_for_byte() {
        let mut recs = sample(300);
        recs[7].value = None;
        recs[8].key = Some(Bytes::new());
        recs[9].value = Some(Bytes::from(vec![9u8; 70_000]));
        let stamp = ProducerStamp {
            producer_id: 5,
            producer_epoch: 1,
            base_sequence: 77,
        };
        for s in [ProducerStamp::NONE, stamp] {
            let want = encode_batch(&recs, Compression::None, s).expect("encode");
            assert_eq!(build(&recs, Compression::None, s), want);
        }
    }

    #[test]
    fn builder_round_trips_every_compression_and_out_of_order_timestamps() {
        let mut recs = sample(40);
        recs[3].timestamp_ms -= 10_000;
        recs[4].timestamp_ms += 10_000;
        for c in ALL_COMPRESSIONS {
            let bytes = build(&recs, c, ProducerStamp::NONE);
            let h = peek_batch(&bytes).expect("whole batch");
            assert_eq!((h.total_len, h.record_count), (bytes.len(), 40), "{c:?}");
            assert_eq!(h.attributes & 7, c as i16);
            // Max timestamp at 35, base timestamp (the first record's) at 27.
            assert_eq!((&bytes[27..]).get_i64(), recs[0].timestamp_ms);
            assert_eq!((&bytes[35..]).get_i64(), recs[4].timestamp_ms);
            let back = decode_batch(bytes).expect("decode");
            for (a, b) in recs.iter().zip(&back) {
                assert_eq!(
                    (&a.key, &a.value, a.timestamp_ms),
                    (&b.key, &b.value, b.timestamp_ms)
                );
            }
        }
    }

    #[test]
    fn an_empty_batch_is_refused() {
        assert!(BatchBuilder::with_capacity(0)
            .finish(Compression::None, ProducerStamp::NONE)
            .is_err());
    }

    /// Record `i` of a batch for kafka-protocol's encoder.
    fn crate_record(
        i: i64,
        stamp: ProducerStamp,
        r: &OutRecord,
        headers: IndexMap<StrBytes, Option<Bytes>>,
    ) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: stamp.producer_id,
            producer_epoch: stamp.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i,
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
            headers,
        }
    }

    /// The reference: kafka-protocol's encoder, as exactly one RecordBatch v2 (offsets 0..n-1,
    /// sequences from `stamp`).
    fn encode_batch(
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
            .map(|(i, r)| crate_record(i as i64, stamp, r, IndexMap::new()))
            .collect();
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_LEN + size);
        let opts = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, recs.iter(), &opts).map_err(|e| {
            ClientError::Encode {
                api: "RecordBatch",
                msg: e.to_string(),
            }
        })?;
        Ok(buf.freeze())
    }

    /// The reference: kafka-protocol's decoder.
    fn decode_with_crate(mut batch: Bytes) -> Result<Vec<InRecord>> {
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch).map_err(|e| {
            ClientError::Decode {
                api: "RecordBatch",
                msg: e.to_string(),
            }
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
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), v))
                    .collect(),
            })
            .collect())
    }

    fn same(a: &[InRecord], b: &[InRecord]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                (x.offset, x.timestamp_ms, &x.key, &x.value, &x.headers)
                    == (y.offset, y.timestamp_ms, &y.key, &y.value, &y.headers)
            })
    }

    #[test]
    fn decoder_agrees_with_the_crate_decoder_for_every_compression() {
        let mut recs = sample(200);
        recs[5].value = None;
        recs[6].key = Some(Bytes::new());
        recs[7].timestamp_ms -= 50_000;
        for c in ALL_COMPRESSIONS {
            let mut bytes = BytesMut::from(&build(&recs, c, ProducerStamp::NONE)[..]);
            bytes[..8].copy_from_slice(&1000i64.to_be_bytes());
            let batch = bytes.freeze();
            let ours = decode_batch(batch.clone()).expect("ours");
            assert!(
                same(&ours, &decode_with_crate(batch).expect("crate")),
                "{c:?}"
            );
            assert_eq!(ours[0].offset, 1000);
            assert_eq!(ours[5].value, None);
            assert_eq!(ours[7].timestamp_ms, recs[7].timestamp_ms);
        }
    }

    /// Headers come back in order (a null value stays null), as the crate's decoder reads them;
    /// a LogAppendTime batch gives every record the batch's max timestamp (the time the
    /// broker stamped), not the producer's.
    #[test]
    fn headers_and_log_append_time_are_decoded() {
        let mut headers = IndexMap::new();
        headers.insert(
            StrBytes::from_static_str("trace"),
            Some(Bytes::from_static(b"t-1")),
        );
        headers.insert(StrBytes::from_static_str("empty"), None);
        let recs: Vec<Record> = (0..3)
            .map(|i| {
                let r = OutRecord {
                    key: None,
                    value: Some(Bytes::from_static(b"v")),
                    timestamp_ms: 1_000 + i,
                };
                let h = if i == 1 {
                    IndexMap::new()
                } else {
                    headers.clone()
                };
                crate_record(i, ProducerStamp::NONE, &r, h)
            })
            .collect();
        let mut buf = BytesMut::new();
        let opts = RecordEncodeOptions {
            version: 2,
            compression: kafka_protocol::records::Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, recs.iter(), &opts).expect("encode");
        let ours = decode_batch(buf.clone().freeze()).expect("decode");
        assert!(same(
            &ours,
            &decode_with_crate(buf.clone().freeze()).expect("crate")
        ));
        let want = vec![
            (
                Bytes::from_static(b"trace"),
                Some(Bytes::from_static(b"t-1")),
            ),
            (Bytes::from_static(b"empty"), None),
        ];
        assert_eq!(ours[0].headers, want);
        assert!(ours[1].headers.is_empty());
        assert_eq!(ours[2].headers, want);
        assert_eq!(ours[2].timestamp_ms, 1_002);

        // The broker's LogAppendTime stamp: attribute bit 3, max timestamp = append time.
        let attributes = (&buf[21..23]).get_i16() | 0x08;
        buf[21..23].copy_from_slice(&attributes.to_be_bytes());
        buf[35..43].copy_from_slice(&77_777i64.to_be_bytes());
        fix_crc(&mut buf);
        let stamped = decode_batch(buf.freeze()).expect("decode");
        assert!(stamped.iter().all(|r| r.timestamp_ms == 77_777));
    }

    #[test]
    fn damaged_headers_are_errors_not_panics_or_huge_allocations() {
        let good = build(&sample(3), Compression::Lz4, ProducerStamp::NONE);
        let damaged = |at: usize, bytes: &[u8]| {
            let mut b = BytesMut::from(&good[..]);
            b[at..at + bytes.len()].copy_from_slice(bytes);
            fix_crc(&mut b);
            decode_batch(b.freeze())
        };
        // Base offset at i64::MAX: the records' offsets would overflow.
        assert!(damaged(0, &i64::MAX.to_be_bytes()).is_err());
        // A record count far beyond the bytes.
        assert!(damaged(57, &i32::MAX.to_be_bytes()).is_err());
        assert!(damaged(57, &(-1i32).to_be_bytes()).is_err());
        // Unknown codec.
        assert!(damaged(22, &[0x07]).is_err());
        // A control batch gives no records.
        assert!(damaged(22, &[0x23]).expect("control").is_empty());
        // An offset delta of i64::MAX (10-byte varint) in an uncompressed record.
        let mut v = BytesMut::from(&build(&sample(1), Compression::None, ProducerStamp::NONE)[..]);
        let rec_at = BATCH_HEADER_LEN;
        let len = v[rec_at] as usize / 2; // one-byte length varint for a short record
        let mut body = v[rec_at + 1..rec_at + 1 + len].to_vec();
        // attributes(1) + timestamp delta (1 byte: 0) then the offset delta (1 byte: 0).
        body.splice(
            2..3,
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        );
        v.truncate(rec_at);
        v.put_u8((body.len() * 2) as u8);
        v.extend_from_slice(&body);
        let total = (v.len() - 12) as i32;
        v[8..12].copy_from_slice(&total.to_be_bytes());
        fix_crc(&mut v);
        assert!(decode_batch(v.freeze()).is_err());
    }

    #[test]
    fn log_append_time_batches_give_every_record_the_batch_time() {
        let recs = sample(10);
        let mut b = BytesMut::from(&build(&recs, Compression::None, ProducerStamp::NONE)[..]);
        b[22] |= 0x08; // attributes (low byte): log-append time
        b[35..43].copy_from_slice(&42i64.to_be_bytes());
        fix_crc(&mut b);
        let back = decode_batch(b.freeze()).expect("decode");
        assert!(back.iter().all(|r| r.timestamp_ms == 42));
    }

    #[test]
    fn damaged_batches_are_errors_or_decode_like_the_crate() {
        let good = build(&sample(20), Compression::None, ProducerStamp::NONE);
        let mut seed = 0x1234_5678_u64;
        let mut errors = 0;
        for _ in 0..5000 {
            let mut b = BytesMut::from(&good[..]);
            // Damage 1-4 bytes after the header, then make the CRC match again so the parser
            // (not the CRC check) sees the damage.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for k in 0..1 + seed % 4 {
                // Anywhere the CRC covers: the header fields from the attributes on, and the
                // records.
                let at = 21 + ((seed >> (8 * k)) as usize) % (b.len() - 21);
                b[at] = (seed >> (16 + k)) as u8;
            }
            fix_crc(&mut b);
            let b = b.freeze();
            // The crate gives log-append-time records their own timestamps, and decodes control
            // batches (this decoder returns none of their records): compare the rest.
            let log_append_time = b[22] & 0x08 != 0;
            let control = b[22] & 0x20 != 0;
            // The crate is asked only about batches this decoder accepts: on a record count it
            // cannot hold it tries to allocate anyway and aborts.
            match decode_batch(b.clone()) {
                Ok(ours) if control => assert!(ours.is_empty()),
                Ok(ours) => match decode_with_crate(b) {
                    Ok(theirs) => assert!(log_append_time || same(&ours, &theirs)),
                    Err(e) => panic!("accepted a batch the crate rejects: {e}"),
                },
                Err(_) => errors += 1,
            }
        }
        assert!(
            errors > 100,
            "only {errors} of 5000 damaged batches were rejected"
        );
    }

    #[test]
    fn compression_names() {
        assert_eq!(parse_compression("ZSTD").expect("ok"), Compression::Zstd);
        assert!(parse_compression("brotli").is_err());
    }
}

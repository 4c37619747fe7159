//! The layout of `__consumer_offsets` on the broker: its name, directory and partition count,
//! which shard a group lives on, the log configuration, and the batches group records are
//! written in (pure: no shard, no I/O).

use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use shardlog_coordinator::{offsets_partition_for_group, shard_for_offsets_partition};
use shardlog_engine::batch::{self, HEADER_BYTES, LOG_OVERHEAD};
use shardlog_engine::{FlushPolicy, LogConfig};

use crate::clock::now_ms;
use crate::config::BrokerConfig;

/// Name of the internal topic holding group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Largest batch the internal log is written with (a Persist is split into batches this size).
pub(crate) const BATCH_BYTES_TARGET: usize = 1 << 20;
/// Segment size of the internal log: small, so moving the log start frees space soon.
pub(crate) const OFFSETS_SEGMENT_BYTES: u64 = 16 << 20;
/// Longest the timer sleeps between looks at the coordinator.
pub(crate) const TICK_MAX_MS: u64 = 1000;

pub(crate) fn now_u64() -> u64 {
    now_ms().max(0) as u64
}

/// Directory holding the internal log partitions and the `partitions` file.
pub fn offsets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(OFFSETS_TOPIC)
}

/// The number of internal-log partitions: remembered from the first start (it decides where
/// every group's records are, so it must never change), else `offsets_topic_partitions` or
/// `2 × cores`. Written durably on first use (called at start-up, before the shards run).
pub fn resolve_offsets_partitions(cfg: &BrokerConfig) -> std::io::Result<usize> {
    let dir = offsets_dir(&cfg.data_dir);
    let file = dir.join("partitions");
    if let Ok(text) = std::fs::read_to_string(&file) {
        return match text.trim().parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => {
                if n % cfg.cores.max(1) != 0 {
                    tracing::warn!(
                        partitions = n,
                        shards = cfg.cores,
                        "__consumer_offsets partitions are not a multiple of the shard count; groups follow their partition's shard"
                    );
                }
                Ok(n)
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a partition count: {text:?}", file.display()),
            )),
        };
    }
    let n = if cfg.offsets_topic_partitions == 0 {
        2 * cfg.cores.max(1)
    } else {
        cfg.offsets_topic_partitions
    };
    shardlog_engine::io::create_dir_all_durable(&dir)?;
    // Start-up, before the shards run: blocking is fine here.
    shardlog_engine::io::write_file_atomic_blocking(&file, format!("{n}\n").as_bytes())?;
    Ok(n)
}

/// The shard owning `group_id` when the internal topic has `partitions` partitions.
pub fn group_shard(group_id: &str, partitions: usize, shards: usize) -> usize {
    shard_for_offsets_partition(offsets_partition_for_group(group_id, partitions), shards)
}

/// Log configuration of an internal partition: fsync before acknowledging, no time or size
/// retention (the snapshot scheme above moves the log start), small segments.
pub fn offsets_log_config(cfg: &BrokerConfig) -> LogConfig {
    LogConfig {
        segment_bytes: OFFSETS_SEGMENT_BYTES,
        segment_ms: i64::MAX / 4,
        retention_ms: None,
        retention_bytes: None,
        max_batch_bytes: 4 * BATCH_BYTES_TARGET,
        flush: FlushPolicy::EveryBatch,
        cache_bytes: cfg.log_cache_bytes.min(1 << 20),
        preallocate_bytes: cfg.log_preallocate_bytes.min(1 << 20),
        ..LogConfig::default()
    }
    .normalized()
}

// ---- the internal log's batch encoding ------------------------------------------------------

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OffsetsBatchError {
    #[error("batch is not valid: {0}")]
    Batch(String),
    #[error("compressed internal batch (attributes {0:#x})")]
    Compressed(i16),
    #[error("record {index} is malformed: {what}")]
    Record { index: i32, what: &'static str },
}

/// Encodes `values` as one RecordBatch v2 (magic 2, uncompressed, CreateTime, no producer,
/// base offset 0: the log assigns it). Each record: null key, the value, no headers.
pub fn encode_offsets_batch(values: &[Bytes], timestamp_ms: i64) -> Bytes {
    assert!(
        !values.is_empty(),
        "an internal batch holds at least one record"
    );
    let mut records = BytesMut::with_capacity(values.iter().map(|v| v.len() + 16).sum());
    let mut rec = BytesMut::new();
    for (i, v) in values.iter().enumerate() {
        rec.clear();
        rec.put_u8(0); // attributes
        batch::put_varlong(&mut rec, 0); // timestamp delta
        batch::put_varlong(&mut rec, i as i64); // offset delta
        batch::put_varlong(&mut rec, -1); // null key
        batch::put_varlong(&mut rec, v.len() as i64);
        rec.extend_from_slice(v);
        batch::put_varlong(&mut rec, 0); // no headers
        batch::put_varlong(&mut records, rec.len() as i64);
        records.extend_from_slice(&rec);
    }
    let total = HEADER_BYTES + records.len();
    let mut out = BytesMut::with_capacity(total);
    out.put_i64(0); // base offset (assigned by the log)
    out.put_i32((total - LOG_OVERHEAD) as i32);
    out.put_i32(0); // partition leader epoch (assigned by the log)
    out.put_i8(2); // magic
    out.put_u32(0); // crc, below
    out.put_i16(0); // attributes
    out.put_i32(values.len() as i32 - 1);
    out.put_i64(timestamp_ms);
    out.put_i64(timestamp_ms);
    out.put_i64(-1); // producer id
    out.put_i16(-1);
    out.put_i32(-1);
    out.put_i32(values.len() as i32);
    out.extend_from_slice(&records);
    let crc = batch::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(batch::validate(&out, usize::MAX).is_ok());
    out.freeze()
}

/// Splits encoded records into batches of about [`BATCH_BYTES_TARGET`] bytes, in order.
pub fn encode_offsets_batches(values: &[Bytes], timestamp_ms: i64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, v) in values.iter().enumerate() {
        if i > start && bytes + v.len() + 32 > BATCH_BYTES_TARGET {
            out.push(encode_offsets_batch(&values[start..i], timestamp_ms));
            start = i;
            bytes = 0;
        }
        bytes += v.len() + 32;
    }
    if start < values.len() {
        out.push(encode_offsets_batch(&values[start..], timestamp_ms));
    }
    out
}

/// Decodes one stored internal batch into (offset, value) pairs. Checks the CRC and every
/// length against the bytes present; never panics on bad input.
pub fn decode_offsets_batch(bytes: &[u8]) -> Result<Vec<(i64, Bytes)>, OffsetsBatchError> {
    let info =
        batch::validate(bytes, usize::MAX).map_err(|e| OffsetsBatchError::Batch(e.to_string()))?;
    if info.compression() != 0 {
        return Err(OffsetsBatchError::Compressed(info.attributes));
    }
    let mut out = Vec::with_capacity((info.record_count.max(0) as usize).min(bytes.len() / 8));
    let mut pos = HEADER_BYTES;
    for index in 0..info.record_count {
        let bad = |what| OffsetsBatchError::Record { index, what };
        let len = batch::get_varlong(bytes, &mut pos).ok_or(bad("length"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= bytes.len())
            .ok_or(bad("length past the batch"))?;
        let rec = &bytes[..end];
        pos += 1; // attributes
        batch::get_varlong(rec, &mut pos).ok_or(bad("timestamp delta"))?;
        let delta = batch::get_varlong(rec, &mut pos).ok_or(bad("offset delta"))?;
        let key_len = batch::get_varlong(rec, &mut pos).ok_or(bad("key length"))?;
        if key_len > 0 {
            pos = pos
                .checked_add(key_len as usize)
                .filter(|&p| p <= end)
                .ok_or(bad("key past the record"))?;
        }
        let value_len = batch::get_varlong(rec, &mut pos).ok_or(bad("value length"))?;
        let value_len = usize::try_from(value_len).map_err(|_| bad("null value"))?;
        let value_end = pos
            .checked_add(value_len)
            .filter(|&p| p <= end)
            .ok_or(bad("value past the record"))?;
        let value = Bytes::copy_from_slice(&rec[pos..value_end]);
        // Offset deltas run from 0 to the batch's last offset delta; anything else (and an
        // offset past i64::MAX) is a malformed record, not an offset.
        let offset = (0..=i64::from(info.last_offset_delta))
            .contains(&delta)
            .then(|| info.base_offset.checked_add(delta))
            .flatten()
            .ok_or(bad("offset delta outside the batch"))?;
        out.push((offset, value));
        pos = end; // headers are ignored
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog_coordinator::{OffsetValue, Record};

    fn rec(group: &str, p: i32, off: i64) -> Record {
        Record::Offset {
            group_id: group.into(),
            topic: "t".into(),
            partition: p,
            value: Some(OffsetValue {
                offset: off,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_timestamp_ms: 5,
            }),
        }
    }

    #[test]
    fn batch_round_trip_is_valid_for_the_engine() {
        let records: Vec<Record> = (0..50).map(|i| rec("g", i, i64::from(i) * 7)).collect();
        let values: Vec<Bytes> = records
            .iter()
            .map(|r| r.encode().expect("encode"))
            .collect();
        let b = encode_offsets_batch(&values, 1234);
        let info = batch::validate(&b, usize::MAX).expect("engine accepts the batch");
        assert_eq!(info.record_count, 50);
        assert_eq!(info.producer_id, -1);
        // Pretend the log placed it at offset 100.
        let mut placed = b.to_vec();
        batch::assign(&mut placed, 100, 3);
        let decoded = decode_offsets_batch(&placed).expect("decode");
        assert_eq!(decoded.len(), 50);
        for (i, (off, v)) in decoded.iter().enumerate() {
            assert_eq!(*off, 100 + i as i64);
            assert_eq!(Record::decode(v).expect("record"), records[i]);
        }
    }

    #[test]
    fn corrupt_or_truncated_batches_are_errors() {
        let values = vec![rec("g", 0, 1).encode().expect("encode")];
        let b = encode_offsets_batch(&values, 0).to_vec();
        for cut in 0..b.len() {
            assert!(decode_offsets_batch(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = b.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        assert!(matches!(
            decode_offsets_batch(&flipped),
            Err(OffsetsBatchError::Batch(_))
        ));
        // A record length that lies (CRC recomputed so only the record walk can catch it).
        let mut lying = b.clone();
        lying[HEADER_BYTES] = 0x7e; // varint 63: past the batch
        let crc = batch::compute_crc(&lying);
        lying[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_offsets_batch(&lying),
            Err(OffsetsBatchError::Record { .. })
        ));
    }

    #[test]
    fn large_persists_split_into_bounded_batches_in_order() {
        let values: Vec<Bytes> = (0..3000)
            .map(|i| Bytes::from(vec![(i % 251) as u8; 1000]))
            .collect();
        let batches = encode_offsets_batches(&values, 0);
        assert!(batches.len() >= 3, "{}", batches.len());
        let mut all = Vec::new();
        for b in &batches {
            assert!(b.len() <= BATCH_BYTES_TARGET + 64);
            all.extend(
                decode_offsets_batch(b)
                    .expect("decode")
                    .into_iter()
                    .map(|(_, v)| v),
            );
        }
        assert_eq!(all, values);
    }

    #[test]
    fn groups_live_with_their_partition() {
        for shards in 1..=4 {
            for n in [shards, 2 * shards, 3 * shards + 1] {
                for i in 0..200 {
                    let g = format!("group-{i}");
                    let p = offsets_partition_for_group(&g, n);
                    assert_eq!(group_shard(&g, n, shards), p % shards);
                    if n % shards == 0 {
                        assert_eq!(
                            group_shard(&g, n, shards),
                            shardlog_coordinator::shard_for_group(&g, shards)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, i64::MAX, i64::MIN] {
            let mut b = BytesMut::new();
            batch::put_varlong(&mut b, v);
            let mut pos = 0;
            assert_eq!(batch::get_varlong(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
        }
        assert_eq!(batch::get_varlong(&[0xff; 11], &mut 0), None);
    }
}

//! Kafka RecordBatch v2 wire-format primitives shared by the storage engine and the client:
//! the header's layout, the batch CRC32C and the record format's zigzag varints. No I/O and no
//! runtime, so the client can use them without the engine's io_uring stack.

use bytes::BufMut;

/// Size of the fixed RecordBatch v2 header (up to and including the record count).
pub const HEADER_BYTES: usize = 61;
/// Bytes before the `batchLength` field's coverage starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// Position of the CRC field.
pub const CRC_AT: usize = 17;
/// Start of the CRC-covered region (the attributes).
pub const CRC_START: usize = 21;

/// Attribute bits.
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;

/// CRC32C (Castagnoli) of the concatenation of `parts`, for batch-sized inputs. `crc-fast`
/// folds with VPCLMULQDQ where the CPU has it (it picks its code path at run time, per its
/// documentation): 18.5 us per MiB on this machine's EPYC against ~40 us for the `crc32c`
/// crate's SSE4.2 path, with the same values (test `fast_crc_matches_crc32c`).
pub fn crc32c(parts: &[&[u8]]) -> u32 {
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    for p in parts {
        d.update(p);
    }
    d.finalize() as u32
}

/// The CRC a batch carries: CRC32C of everything from the attributes on (`batch` is exactly
/// one batch of at least [`CRC_START`] bytes).
pub fn batch_crc(batch: &[u8]) -> u32 {
    crc32c(&[&batch[CRC_START..]])
}

/// Bytes of `v` as a zigzag varint.
pub fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends `v` as a zigzag varint (the record format's varint/varlong encoding).
pub fn put_varlong(out: &mut impl BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// Reads a zigzag varint at `*pos`, advancing it; `None` if truncated or longer than 64 bits.
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
}

/// [`get_varlong`] from the front of a slice, which is advanced past it.
pub fn take_varlong(buf: &mut &[u8]) -> Option<i64> {
    let mut pos = 0;
    let v = get_varlong(buf, &mut pos)?;
    *buf = &buf[pos..];
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_with_their_length() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            8191,
            8192,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut b = Vec::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(get_varlong(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
            let mut s = &b[..];
            assert_eq!(take_varlong(&mut s), Some(v));
            assert!(s.is_empty());
            // Truncated: no value, no panic.
            assert_eq!(get_varlong(&b[..b.len() - 1], &mut 0), None);
        }
        // Eleven continuation bytes: longer than 64 bits.
        assert_eq!(get_varlong(&[0xff; 11], &mut 0), None);
    }

    #[test]
    fn fast_crc_matches_crc32c() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [
            0, 1, 7, 15, 16, 63, 64, 255, 256, 4095, 4096, 65_537, 70_000,
        ] {
            for split in [0, len / 3, len] {
                let (a, b) = data[..len].split_at(split);
                assert_eq!(
                    crc32c(&[a, b]),
                    crc32c::crc32c(&data[..len]),
                    "len {len} split {split}"
                );
            }
        }
        let mut batch = vec![0u8; 100];
        batch[CRC_START..].copy_from_slice(&data[..100 - CRC_START]);
        assert_eq!(batch_crc(&batch), crc32c::crc32c(&data[..100 - CRC_START]));
    }
}

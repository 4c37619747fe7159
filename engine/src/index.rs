//! Sparse per-segment indexes: offset → file position, and timestamp → offset.
//!
//! An entry is added for the first batch of a segment and then whenever at least
//! `index_interval_bytes` were appended since the last entry, so a lookup lands within one
//! interval of the target and a short forward scan finishes the job. The active segment keeps
//! its index in memory only; it is written to disk when the segment is sealed (rolled) or the
//! log is closed cleanly. Sealed segments load their index lazily on first use, validate it
//! against the segment, and rebuild it from the segment when it is missing or inconsistent.
//!
//! On-disk formats (big-endian, no header; the entry count is the file length / entry size):
//!
//! * `<base>.index`: entries of `relative_offset: u32, position: u32` (8 bytes).
//! * `<base>.timeindex`: entries of `max_timestamp_so_far: i64, relative_offset: u32` (12 bytes).
//!   A time entry says every record before `relative_offset`'s batch has a timestamp at most
//!   `max_timestamp_so_far`, and the last entry holds the segment's largest timestamp.

use crate::Offset;

const OFFSET_ENTRY: usize = 8;
const TIME_ENTRY: usize = 12;

/// One segment's sparse indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// (relative offset of a batch's base, file position of that batch)
    pub offsets: Vec<(u32, u32)>,
    /// (max timestamp of all batches up to and including this one, relative base offset)
    pub times: Vec<(i64, u32)>,
}

/// Why an index file was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("index length {0} is not a whole number of entries")]
    Length(usize),
    #[error("index entry {0} is not strictly increasing")]
    NotMonotonic(usize),
    #[error("index entry {0} points past the segment ({1} bytes)")]
    OutOfBounds(usize, u64),
}

impl SegmentIndex {
    /// The position to start scanning for `offset` (relative to `base`): the greatest indexed
    /// batch at or before it, or the segment start.
    pub fn position_for(&self, base: Offset, offset: Offset) -> u64 {
        let rel = offset.saturating_sub(base).clamp(0, i64::from(u32::MAX)) as u32;
        let i = self.offsets.partition_point(|&(r, _)| r <= rel);
        if i == 0 {
            0
        } else {
            u64::from(self.offsets[i - 1].1)
        }
    }

    /// The offset to start scanning from for the first record with timestamp >= `ts`.
    pub fn scan_start_for_time(&self, base: Offset, ts: i64) -> Offset {
        let i = self.times.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            base
        } else {
            base + i64::from(self.times[i - 1].1)
        }
    }

    /// The largest timestamp recorded, if any.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.times.last().map(|&(t, _)| t)
    }

    pub fn push(&mut self, rel: u32, pos: u32, max_ts_so_far: i64) {
        self.offsets.push((rel, pos));
        if self.times.last().is_none_or(|&(t, _)| max_ts_so_far > t) {
            self.times.push((max_ts_so_far, rel));
        }
    }

    /// Records the segment's final largest timestamp (at seal) so the last time entry holds it.
    pub fn seal_time(&mut self, rel_of_last_batch: u32, max_ts: i64) {
        if self.times.last().is_none_or(|&(t, _)| max_ts > t) {
            self.times.push((max_ts, rel_of_last_batch));
        }
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY);
        for &(rel, pos) in &self.offsets {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY);
        for &(ts, rel) in &self.times {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
        out
    }

    /// Decodes both files and checks them against the segment's size and offset span.
    pub fn decode(
        offsets: &[u8],
        times: &[u8],
        segment_bytes: u64,
        span: Offset,
    ) -> Result<Self, IndexError> {
        if !offsets.len().is_multiple_of(OFFSET_ENTRY) {
            return Err(IndexError::Length(offsets.len()));
        }
        if !times.len().is_multiple_of(TIME_ENTRY) {
            return Err(IndexError::Length(times.len()));
        }
        let mut idx = SegmentIndex::default();
        for (i, e) in offsets.chunks_exact(OFFSET_ENTRY).enumerate() {
            let rel = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let pos = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
            if let Some(&(pr, pp)) = idx.offsets.last() {
                if rel <= pr || pos <= pp {
                    return Err(IndexError::NotMonotonic(i));
                }
            }
            if u64::from(pos) >= segment_bytes || i64::from(rel) >= span.max(1) {
                return Err(IndexError::OutOfBounds(i, segment_bytes));
            }
            idx.offsets.push((rel, pos));
        }
        for (i, e) in times.chunks_exact(TIME_ENTRY).enumerate() {
            let ts = i64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            let rel = u32::from_be_bytes([e[8], e[9], e[10], e[11]]);
            if let Some(&(pt, pr)) = idx.times.last() {
                if ts <= pt || rel < pr {
                    return Err(IndexError::NotMonotonic(i));
                }
            }
            if i64::from(rel) >= span.max(1) {
                return Err(IndexError::OutOfBounds(i, segment_bytes));
            }
            idx.times.push((ts, rel));
        }
        if segment_bytes > 0 && idx.offsets.first().is_none_or(|&(r, p)| r != 0 || p != 0) {
            // Every non-empty segment indexes its first batch.
            return Err(IndexError::OutOfBounds(0, segment_bytes));
        }
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_roundtrip() {
        let mut idx = SegmentIndex::default();
        idx.push(0, 0, 10);
        idx.push(5, 4100, 20);
        idx.push(9, 8300, 15); // timestamp went down: no new time entry
        idx.seal_time(12, 30);
        assert_eq!(idx.position_for(100, 100), 0);
        assert_eq!(idx.position_for(100, 104), 0);
        assert_eq!(idx.position_for(100, 105), 4100);
        assert_eq!(idx.position_for(100, 200), 8300);
        assert_eq!(idx.scan_start_for_time(100, 5), 100);
        assert_eq!(idx.scan_start_for_time(100, 21), 105);
        assert_eq!(idx.max_timestamp(), Some(30));
        let back = SegmentIndex::decode(&idx.encode_offsets(), &idx.encode_times(), 9000, 13)
            .expect("valid");
        assert_eq!(back, idx);
    }

    #[test]
    fn rejects_inconsistent_files() {
        let mut idx = SegmentIndex::default();
        idx.push(0, 0, 1);
        idx.push(5, 4100, 2);
        let o = idx.encode_offsets();
        assert!(matches!(
            SegmentIndex::decode(&o[..7], &[], 9000, 10),
            Err(IndexError::Length(7))
        ));
        assert!(matches!(
            SegmentIndex::decode(&o, &[], 4000, 10),
            Err(IndexError::OutOfBounds(..))
        ));
        assert!(matches!(
            SegmentIndex::decode(&o, &[], 9000, 3),
            Err(IndexError::OutOfBounds(..))
        ));
        let mut swapped = o[8..].to_vec();
        swapped.extend_from_slice(&o[..8]);
        assert!(SegmentIndex::decode(&swapped, &[], 9000, 10).is_err());
        assert!(
            SegmentIndex::decode(&[], &[], 9000, 10).is_err(),
            "non-empty segment needs entries"
        );
    }
}

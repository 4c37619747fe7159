//! Idempotent-producer state of one partition: a pure state machine, no I/O.
//!
//! For each producer id the partition remembers the epoch and the last
//! [`MAX_REMEMBERED_BATCHES`] batches it appended (first/last sequence and base offset), which
//! is what Kafka keeps and what clients rely on: with up to five requests in flight, any of
//! the last five batches may be retried after a lost response, and the retry must get the
//! original offsets back with error NONE (the Java broker answers a duplicate that is still in
//! its cache exactly so). A sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch
//! INVALID_PRODUCER_EPOCH. The appender task of the partition checks before and records after
//! each append, one batch at a time, so check-then-append is never interleaved.
//!
//! The state is serialised to a small JSON snapshot at clean shutdown (and periodically), and
//! rebuilt after an unclean stop by replaying batch headers from the snapshot's offset: see
//! `partition.rs`.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::errors;

/// How many recent batches per producer are remembered for duplicate detection (Kafka: 5).
pub const MAX_REMEMBERED_BATCHES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
}

/// What to do with an incoming batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCheck {
    /// Append it.
    Append,
    /// A retry of a batch already in the log: answer with its original offsets, error NONE.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// Refuse with this Kafka error code.
    Reject(i16),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    pub producers: HashMap<i64, ProducerEntry>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStates {
    /// Decides what to do with a batch from `pid` (negative = not idempotent).
    pub fn check(&self, pid: i64, epoch: i16, first_seq: i32, last_seq: i32) -> SeqCheck {
        if pid < 0 {
            return SeqCheck::Append;
        }
        if first_seq < 0 {
            return SeqCheck::Reject(errors::INVALID_RECORD);
        }
        let Some(entry) = self.producers.get(&pid) else {
            // A producer we have no state for must start at sequence 0.
            return if first_seq == 0 {
                SeqCheck::Append
            } else {
                SeqCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        };
        if epoch < entry.epoch {
            return SeqCheck::Reject(errors::INVALID_PRODUCER_EPOCH);
        }
        if epoch > entry.epoch {
            // A bumped epoch restarts the sequence.
            return if first_seq == 0 {
                SeqCheck::Append
            } else {
                SeqCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return SeqCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            };
        }
        match entry.batches.back() {
            Some(last) if first_seq == next_seq(last.last_seq) => SeqCheck::Append,
            None if first_seq == 0 => SeqCheck::Append,
            Some(_) | None => SeqCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER),
        }
    }

    /// Records an appended batch (after `check` said `Append`, or while replaying the log).
    pub fn record(&mut self, pid: i64, epoch: i16, meta: BatchMeta) {
        if pid < 0 {
            return;
        }
        let entry = self.producers.entry(pid).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(meta);
        while entry.batches.len() > MAX_REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

/// Snapshot written beside the log: the state as of `end_offset` (the log end when taken).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub end_offset: i64,
    pub state: ProducerStates,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first: i32, last: i32, base: i64) -> BatchMeta {
        BatchMeta {
            first_seq: first,
            last_seq: last,
            base_offset: base,
            last_offset: base + i64::from(last - first),
        }
    }

    #[test]
    fn non_idempotent_always_appends() {
        let s = ProducerStates::default();
        assert_eq!(s.check(-1, -1, -1, -1), SeqCheck::Append);
    }

    #[test]
    fn in_order_sequences_append_and_gaps_are_refused() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 4), SeqCheck::Append);
        s.record(7, 0, meta(0, 4, 100));
        assert_eq!(s.check(7, 0, 5, 9), SeqCheck::Append);
        s.record(7, 0, meta(5, 9, 105));
        assert_eq!(
            s.check(7, 0, 11, 12),
            SeqCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(
            s.check(8, 0, 3, 4),
            SeqCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER),
            "unknown producer must start at 0"
        );
    }

    #[test]
    fn retries_of_the_last_five_batches_get_their_original_offsets() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            let first = i * 10;
            s.record(1, 0, meta(first, first + 9, i64::from(first) + 1000));
        }
        // The last five (i = 2..=6) are remembered.
        assert_eq!(
            s.check(1, 0, 20, 29),
            SeqCheck::Duplicate {
                base_offset: 1020,
                last_offset: 1029
            }
        );
        assert_eq!(
            s.check(1, 0, 60, 69),
            SeqCheck::Duplicate {
                base_offset: 1060,
                last_offset: 1069
            }
        );
        assert_eq!(
            s.check(1, 0, 10, 19),
            SeqCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER),
            "older than the remembered window"
        );
        assert_eq!(s.check(1, 0, 70, 79), SeqCheck::Append);
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut s = ProducerStates::default();
        s.record(1, 3, meta(0, 0, 0));
        assert_eq!(
            s.check(1, 2, 1, 1),
            SeqCheck::Reject(errors::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            s.check(1, 4, 5, 5),
            SeqCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(s.check(1, 4, 0, 0), SeqCheck::Append);
        s.record(1, 4, meta(0, 0, 1));
        assert_eq!(s.producers[&1].epoch, 4);
        assert_eq!(s.producers[&1].batches.len(), 1);
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut s = ProducerStates::default();
        s.record(1, 0, meta(i32::MAX - 1, i32::MAX, 0));
        assert_eq!(s.check(1, 0, 0, 3), SeqCheck::Append);
    }

    #[test]
    fn snapshot_round_trips() {
        let mut s = ProducerStates::default();
        s.record(9, 1, meta(0, 3, 10));
        let snap = Snapshot {
            end_offset: 14,
            state: s.clone(),
        };
        let text = serde_json::to_string(&snap).expect("ser");
        let back: Snapshot = serde_json::from_str(&text).expect("de");
        assert_eq!(back.state, s);
        assert_eq!(back.end_offset, 14);
    }
}

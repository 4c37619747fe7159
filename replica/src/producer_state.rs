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
//! rebuilt after an unclean stop by replaying batch headers from the snapshot's offset: that
//! I/O is the partition facade's (`server/src/partition`); this module is pure, which is why it
//! lives in the replica core's crate, behind [`ProducerDedup`].
//!
//! **Expiry and bounds.** A producer id costs memory for as long as it is remembered, and ids
//! are cheap to make (one InitProducerId each): 300,000 of them once added 138 MiB that was
//! never given back. As in Kafka (`producer.id.expiration.ms`, KIP-854), a producer that has
//! not appended for `producer_id_expiration_ms` is forgotten ([`ProducerStates::expire`]),
//! and its next batch is accepted with whatever sequence it carries (Kafka's rule for a
//! producer it holds no state for, so a producer that merely paused does not fail). Each entry
//! remembers when it last appended (`last_ms`): the broker's clock for live appends, the
//! batch's max timestamp when rebuilt from the log, and it is part of the snapshot, so state
//! that has expired stays expired after a restart. Expiry alone bounds memory only by the
//! producer-creation rate, so each partition also keeps at most `max_producer_ids_per_partition`
//! ids: past it the least recently used are dropped (in steps of 1/16 of the limit, so the
//! cost per new producer stays constant).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::{BatchIdent, DedupCheck, ErrorCode, ProducerDedup};

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
    /// When this producer last appended (ms since the epoch). Snapshots written before this
    /// field existed load as 0 and are given the load time (see [`ProducerStates::loaded`]).
    #[serde(default)]
    pub last_ms: i64,
}

/// What to do with an incoming batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCheck {
    /// Append it.
    Append,
    /// A retry of a batch already in the log: answer with its original offsets, error NONE.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// Refuse with this Kafka error.
    Reject(ErrorCode),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    pub producers: HashMap<i64, ProducerEntry>,
    /// At most this many producer ids (0: no limit); see [`ProducerStates::set_max_ids`].
    #[serde(skip)]
    max_ids: usize,
    /// Producer ids dropped for the limit by appends through the replica core (whose
    /// [`ProducerDedup::record`] answer it does not pass on); see
    /// [`ProducerStates::take_evicted`].
    #[serde(skip)]
    evicted_unreported: usize,
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
            return SeqCheck::Reject(ErrorCode::InvalidRecord);
        }
        let Some(entry) = self.producers.get(&pid) else {
            // No state for this producer: new, or expired (or its batches removed by
            // retention). Kafka accepts any sequence then, and so do we: a producer that was
            // idle longer than producer_id_expiration_ms carries on without a fatal error.
            return SeqCheck::Append;
        };
        if epoch < entry.epoch {
            return SeqCheck::Reject(ErrorCode::InvalidProducerEpoch);
        }
        if epoch > entry.epoch {
            // A bumped epoch restarts the sequence.
            return if first_seq == 0 {
                SeqCheck::Append
            } else {
                SeqCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
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
            Some(_) | None => SeqCheck::Reject(ErrorCode::OutOfOrderSequenceNumber),
        }
    }

    /// Records an appended batch (after `check` said `Append`, or while replaying the log)
    /// made at `at_ms`; returns how many other producers were dropped to stay within the
    /// limit on producer ids.
    pub fn record(&mut self, pid: i64, epoch: i16, meta: BatchMeta, at_ms: i64) -> usize {
        if pid < 0 {
            return 0;
        }
        let evicted = if self.producers.contains_key(&pid) {
            0
        } else {
            self.make_room()
        };
        let entry = self.producers.entry(pid).or_insert_with(|| ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(MAX_REMEMBERED_BATCHES),
            last_ms: at_ms,
        });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(meta);
        while entry.batches.len() > MAX_REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
        entry.last_ms = entry.last_ms.max(at_ms);
        evicted
    }

    /// Forgets every producer that has not appended for `expiration_ms` (Kafka: expired when
    /// `now - last >= producer.id.expiration.ms`); returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_ms) < expiration_ms);
        before - self.producers.len()
    }

    /// Limits the number of producer ids (0: none), dropping the least recently used ones
    /// now if there are more; returns how many were dropped.
    pub fn set_max_ids(&mut self, max_ids: usize) -> usize {
        self.max_ids = max_ids;
        if max_ids == 0 || self.producers.len() <= max_ids {
            return 0;
        }
        let excess = self.producers.len() - max_ids;
        self.drop_oldest(excess)
    }

    /// After loading a snapshot: entries from before `last_ms` was recorded count as active
    /// at `now_ms` (a snapshot from an older version does not expire everything at once).
    pub fn loaded(&mut self, now_ms: i64) {
        for e in self.producers.values_mut() {
            if e.last_ms <= 0 {
                e.last_ms = now_ms;
            }
        }
    }

    /// Called before a new producer id is added: at the limit, drops the least recently
    /// used 1/16 of it (at least one).
    fn make_room(&mut self) -> usize {
        if self.max_ids == 0 || self.producers.len() < self.max_ids {
            return 0;
        }
        let n = (self.max_ids / 16).max(1) + (self.producers.len() + 1 - self.max_ids) - 1;
        self.drop_oldest(n)
    }

    /// Drops the `n` producers with the oldest `last_ms`.
    fn drop_oldest(&mut self, n: usize) -> usize {
        let n = n.min(self.producers.len());
        if n == 0 {
            return 0;
        }
        let mut ages: Vec<(i64, i64)> = self
            .producers
            .iter()
            .map(|(&pid, e)| (e.last_ms, pid))
            .collect();
        ages.select_nth_unstable(n - 1);
        for &(_, pid) in &ages[..n] {
            self.producers.remove(&pid);
        }
        n
    }

    /// Producer ids dropped for the limit by appends since the last call (for the metric and
    /// the log line the appender gives them).
    pub fn take_evicted(&mut self) -> usize {
        std::mem::take(&mut self.evicted_unreported)
    }

    /// The log was cut at `end`: forgets batches at or beyond it. True when the state is still
    /// exact; false when an entry lost all its batches or its epoch may have come from a
    /// dropped batch (the state must then be rebuilt from the log).
    pub fn truncate(&mut self, end: i64) -> bool {
        let mut exact = true;
        self.producers.retain(|_, e| {
            let before = e.batches.len();
            e.batches.retain(|b| b.last_offset < end);
            if e.batches.len() == before {
                return true;
            }
            // The epoch was set by the newest batch, which is gone: whether an older batch
            // had it too is unknown here; so is anything about an entry with no batch left.
            exact = false;
            !e.batches.is_empty()
        });
        exact
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

/// The replica core's view: it checks before and records after each leader append, in log
/// order, and tells the state when the log is cut.
impl ProducerDedup for ProducerStates {
    fn check(&self, b: &BatchIdent) -> DedupCheck {
        match ProducerStates::check(
            self,
            b.producer_id,
            b.producer_epoch,
            b.first_seq,
            b.last_seq,
        ) {
            SeqCheck::Append => DedupCheck::Append,
            SeqCheck::Duplicate {
                base_offset,
                last_offset,
            } => DedupCheck::Duplicate {
                base_offset,
                last_offset,
            },
            SeqCheck::Reject(e) => DedupCheck::Reject(e),
        }
    }

    fn record(&mut self, b: &BatchIdent, base_offset: i64, last_offset: i64, at_ms: i64) -> usize {
        let meta = BatchMeta {
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            base_offset,
            last_offset,
        };
        let evicted = ProducerStates::record(self, b.producer_id, b.producer_epoch, meta, at_ms);
        self.evicted_unreported += evicted;
        evicted
    }

    fn truncated(&mut self, end: i64) -> bool {
        self.truncate(end)
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
    fn the_core_sees_the_same_decisions_with_its_error_codes() {
        let mut s = ProducerStates::default();
        let id = |epoch, first, last| BatchIdent {
            producer_id: 7,
            producer_epoch: epoch,
            first_seq: first,
            last_seq: last,
        };
        assert_eq!(ProducerDedup::check(&s, &id(0, 0, 1)), DedupCheck::Append);
        ProducerDedup::record(&mut s, &id(0, 0, 1), 10, 11, 5);
        assert_eq!(
            ProducerDedup::check(&s, &id(0, 0, 1)),
            DedupCheck::Duplicate {
                base_offset: 10,
                last_offset: 11
            }
        );
        assert_eq!(
            ProducerDedup::check(&s, &id(0, 5, 5)),
            DedupCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        ProducerDedup::record(&mut s, &id(1, 0, 0), 12, 12, 6);
        assert_eq!(
            ProducerDedup::check(&s, &id(0, 2, 2)),
            DedupCheck::Reject(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(
            ProducerDedup::check(&s, &id(1, -1, 0)),
            DedupCheck::Reject(ErrorCode::InvalidRecord)
        );
    }

    #[test]
    fn truncation_keeps_what_is_exact_and_asks_for_a_rebuild_otherwise() {
        let mut s = ProducerStates::default();
        s.record(1, 0, meta(0, 0, 0), 1);
        s.record(1, 0, meta(1, 1, 1), 1);
        s.record(2, 0, meta(0, 0, 2), 1);
        assert!(s.truncate(3), "nothing at or past 3");
        assert_eq!(s.len(), 2);
        assert!(!s.truncate(2), "producer 2 lost its only batch");
        assert_eq!(s.len(), 1);
        assert!(
            !s.truncate(1),
            "producer 1 lost its newest batch (its epoch's source)"
        );
        assert_eq!(s.producers[&1].batches.len(), 1);
        assert!(ProducerDedup::truncated(&mut s, 1));
    }

    #[test]
    fn evictions_through_the_core_are_counted_once() {
        let mut s = ProducerStates::default();
        s.set_max_ids(16);
        for pid in 0..17i64 {
            let b = BatchIdent {
                producer_id: pid,
                producer_epoch: 0,
                first_seq: 0,
                last_seq: 0,
            };
            ProducerDedup::record(&mut s, &b, pid, pid, pid);
        }
        assert_eq!(s.take_evicted(), 1);
        assert_eq!(s.take_evicted(), 0);
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
        s.record(7, 0, meta(0, 4, 100), 1);
        assert_eq!(s.check(7, 0, 5, 9), SeqCheck::Append);
        s.record(7, 0, meta(5, 9, 105), 1);
        assert_eq!(
            s.check(7, 0, 11, 12),
            SeqCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            s.check(8, 0, 3, 4),
            SeqCheck::Append,
            "a producer without state (new or expired) may start at any sequence, as in Kafka"
        );
    }

    #[test]
    fn retries_of_the_last_five_batches_get_their_original_offsets() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            let first = i * 10;
            s.record(1, 0, meta(first, first + 9, i64::from(first) + 1000), 1);
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
            SeqCheck::Reject(ErrorCode::OutOfOrderSequenceNumber),
            "older than the remembered window"
        );
        assert_eq!(s.check(1, 0, 70, 79), SeqCheck::Append);
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut s = ProducerStates::default();
        s.record(1, 3, meta(0, 0, 0), 1);
        assert_eq!(
            s.check(1, 2, 1, 1),
            SeqCheck::Reject(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(
            s.check(1, 4, 5, 5),
            SeqCheck::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(s.check(1, 4, 0, 0), SeqCheck::Append);
        s.record(1, 4, meta(0, 0, 1), 1);
        assert_eq!(s.producers[&1].epoch, 4);
        assert_eq!(s.producers[&1].batches.len(), 1);
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut s = ProducerStates::default();
        s.record(1, 0, meta(i32::MAX - 1, i32::MAX, 0), 1);
        assert_eq!(s.check(1, 0, 0, 3), SeqCheck::Append);
    }

    #[test]
    fn producers_idle_for_the_expiration_are_forgotten() {
        let mut s = ProducerStates::default();
        s.record(1, 0, meta(0, 0, 0), 1_000);
        s.record(2, 0, meta(0, 0, 1), 1_000);
        s.record(2, 0, meta(1, 1, 2), 5_000);
        assert_eq!(s.expire(5_999, 5_000), 0, "idle for 4999 ms");
        assert_eq!(s.expire(6_000, 5_000), 1, "idle for exactly the expiration");
        assert!(!s.producers.contains_key(&1));
        assert!(s.producers.contains_key(&2));
        // The expired producer's next batch is accepted whatever its sequence.
        assert_eq!(s.check(1, 0, 1, 1), SeqCheck::Append);
        assert_eq!(s.expire(10_000, 5_000), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn the_number_of_producer_ids_is_bounded_least_recently_used_first() {
        let mut s = ProducerStates::default();
        s.set_max_ids(32);
        let mut evicted = 0;
        for pid in 0..1000i64 {
            evicted += s.record(pid, 0, meta(0, 0, pid), pid);
            assert!(s.len() <= 32);
        }
        assert_eq!(evicted + s.len(), 1000);
        // The most recent ones are kept.
        assert!(s.producers.contains_key(&999) && s.producers.contains_key(&990));
        assert!(!s.producers.contains_key(&0));
        // A known producer appending again is not a new id: nothing is dropped.
        assert_eq!(s.record(999, 0, meta(1, 1, 2000), 2000), 0);
        // Lowering the limit drops the excess at once.
        let n = s.len();
        assert_eq!(s.set_max_ids(10), n - 10);
        assert!(s.producers.contains_key(&999));
    }

    #[test]
    fn old_snapshots_without_last_use_count_as_active_at_load() {
        let text = r#"{"end_offset":3,"state":{"producers":{"7":{"epoch":0,"batches":[{"first_seq":0,"last_seq":2,"base_offset":0,"last_offset":2}]}}}}"#;
        let mut snap: Snapshot = serde_json::from_str(text).expect("old snapshot");
        assert_eq!(snap.state.producers[&7].last_ms, 0);
        snap.state.loaded(50_000);
        assert_eq!(snap.state.expire(50_001, 1_000), 0);
        assert_eq!(snap.state.producers[&7].last_ms, 50_000);
    }

    #[test]
    fn snapshot_round_trips() {
        let mut s = ProducerStates::default();
        s.record(9, 1, meta(0, 3, 10), 1);
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

//! The batch cache: the most recent batches of one log, as the bytes that were stored.
//!
//! Tailing consumers read here and never touch the disk; it also serves data that is appended
//! but not yet written. It is a FIFO window `[first_offset, log end)` bounded in bytes: the
//! oldest batches fall out first, which is exactly the order tailing consumers stop needing
//! them.

use std::collections::VecDeque;

use crate::batch::StoredBatch;

use crate::Offset;

pub(crate) struct CachedBatch {
    pub base: Offset,
    pub next: Offset,
    pub batch: StoredBatch,
}

pub(crate) struct BatchCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
    limit_bytes: usize,
}

impl BatchCache {
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            batches: VecDeque::new(),
            bytes: 0,
            limit_bytes,
        }
    }

    pub fn set_limit(&mut self, limit_bytes: usize) {
        self.limit_bytes = limit_bytes;
        self.evict();
    }

    pub fn push(&mut self, base: Offset, next: Offset, batch: StoredBatch) {
        debug_assert!(self.batches.back().is_none_or(|b| b.next == base));
        self.bytes += batch.len();
        self.batches.push_back(CachedBatch { base, next, batch });
        self.evict();
    }

    fn evict(&mut self) {
        while self.bytes > self.limit_bytes {
            match self.batches.pop_front() {
                Some(b) => self.bytes -= b.batch.len(),
                None => break,
            }
        }
    }

    /// Whether the cache holds the batch containing `offset`.
    pub fn covers(&self, offset: Offset) -> bool {
        self.batches.front().is_some_and(|b| b.base <= offset)
            && self.batches.back().is_some_and(|b| offset < b.next)
    }

    /// Batches from the one containing `offset`, below `max_offset`, within `max_bytes`
    /// (the first one regardless when `min_one`).
    pub fn read(
        &self,
        offset: Offset,
        max_offset: Offset,
        max_bytes: usize,
        min_one: bool,
        out: &mut Vec<StoredBatch>,
    ) -> usize {
        let start = self.batches.partition_point(|b| b.next <= offset);
        let mut total = 0;
        for b in self.batches.iter().skip(start) {
            if b.base >= max_offset {
                break;
            }
            if total + b.batch.len() > max_bytes && !(min_one && out.is_empty()) {
                break;
            }
            total += b.batch.len();
            out.push(b.batch.clone());
        }
        total
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

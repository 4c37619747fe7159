//! The batch cache: the most recent batches of one log, as the bytes that were stored, and the
//! budget that bounds the caches of all logs on a shard together.
//!
//! Tailing consumers read here and never touch the disk. Each log's cache is a FIFO window
//! `[first_offset, log end)` bounded in bytes (`cache_bytes`): the oldest batches fall out
//! first, which is exactly the order tailing consumers stop needing them.
//!
//! A per-log bound alone does not bound memory: a thousand partitions with 16 MiB each may hold
//! 16 GiB. So the logs of a shard can share a [`CacheBudget`]: when their caches together exceed
//! it, the oldest batches of the shard are evicted, whichever log holds them (every cached batch
//! carries a shard-wide sequence number, and a heap of each cache's oldest batch finds the
//! oldest). Busy partitions therefore keep their recent data and idle ones give theirs up.
//! Eviction never loses data: a batch leaves the cache only after it was appended to the log, and
//! readers never need a batch that is not yet written (they read up to the committed end, which
//! is at most the written end); evicted batches are read from disk.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::rc::{Rc, Weak};

use crate::batch::StoredBatch;

use crate::Offset;

pub(crate) struct CachedBatch {
    pub base: Offset,
    pub next: Offset,
    pub batch: StoredBatch,
    /// Order of insertion among all caches of the budget (0 without one).
    seq: u64,
}

/// One log's cache.
pub(crate) struct BatchCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
    limit_bytes: usize,
    /// The shared budget and this cache's id in it.
    budget: Option<(Rc<CacheBudget>, u64)>,
}

impl BatchCache {
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            batches: VecDeque::new(),
            bytes: 0,
            limit_bytes,
            budget: None,
        }
    }

    pub fn set_limit(&mut self, limit_bytes: usize) {
        self.limit_bytes = limit_bytes;
        while self.bytes > self.limit_bytes && self.pop_front() {}
    }

    pub fn push(&mut self, base: Offset, next: Offset, batch: StoredBatch) {
        debug_assert!(self.batches.back().is_none_or(|b| b.next == base));
        let len = batch.len();
        let seq = self.budget.as_ref().map_or(0, |(b, _)| b.next_seq());
        self.bytes += len;
        self.batches.push_back(CachedBatch {
            base,
            next,
            batch,
            seq,
        });
        if let Some((b, id)) = &self.budget {
            b.used.set(b.used.get() + len);
            if self.batches.len() == 1 {
                b.note_front(seq, *id);
            }
        }
        while self.bytes > self.limit_bytes && self.pop_front() {}
        if let Some((b, _)) = self.budget.clone() {
            b.enforce(self);
        }
    }

    /// Drops the oldest batch; false when there is none.
    fn pop_front(&mut self) -> bool {
        let Some(b) = self.batches.pop_front() else {
            return false;
        };
        let len = b.batch.len();
        self.bytes -= len;
        if let Some((budget, id)) = &self.budget {
            budget.used.set(budget.used.get() - len);
            if let Some(front) = self.batches.front() {
                budget.note_front(front.seq, *id);
            }
        }
        true
    }

    /// Drops the batches at and above `end` (a truncation; `end` is a batch boundary).
    pub fn truncate(&mut self, end: Offset) {
        while self.batches.back().is_some_and(|b| b.base >= end) {
            if self.batches.len() == 1 {
                // The front changes too: let the budget forget it.
                self.pop_front();
                continue;
            }
            if let Some(b) = self.batches.pop_back() {
                let len = b.batch.len();
                self.bytes -= len;
                if let Some((budget, _)) = &self.budget {
                    budget.used.set(budget.used.get() - len);
                }
            }
        }
    }

    fn front_seq(&self) -> Option<u64> {
        self.batches.front().map(|b| b.seq)
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

impl Drop for BatchCache {
    fn drop(&mut self) {
        if let Some((b, id)) = &self.budget {
            b.used.set(b.used.get() - self.bytes);
            b.members.borrow_mut().remove(id);
        }
    }
}

/// The byte budget that the caches of several logs (one shard's) share. Not `Send`: it lives on
/// the shard whose logs use it.
pub struct CacheBudget {
    limit_bytes: usize,
    used: Cell<usize>,
    next_id: Cell<u64>,
    next_seq: Cell<u64>,
    members: RefCell<HashMap<u64, Weak<RefCell<BatchCache>>>>,
    /// `(seq, cache id)` of each cache's oldest batch, oldest first. Entries go stale when that
    /// batch leaves by other means (the log's own limit, the log closing); they are skipped when
    /// they surface and dropped when the heap is rebuilt.
    fronts: RefCell<BinaryHeap<Reverse<(u64, u64)>>>,
}

impl CacheBudget {
    pub fn new(limit_bytes: usize) -> Rc<Self> {
        Rc::new(Self {
            limit_bytes,
            used: Cell::new(0),
            next_id: Cell::new(0),
            next_seq: Cell::new(1),
            members: RefCell::new(HashMap::new()),
            fronts: RefCell::new(BinaryHeap::new()),
        })
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// Bytes cached by all member logs together.
    pub fn used_bytes(&self) -> usize {
        self.used.get()
    }

    /// Makes `cache` a member; what it holds already counts from now on (renumbered as the
    /// newest data of the budget) and may be evicted at once if the budget is full.
    pub(crate) fn join(self: &Rc<Self>, cache: &Rc<RefCell<BatchCache>>) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.members.borrow_mut().insert(id, Rc::downgrade(cache));
        let mut c = cache.borrow_mut();
        if let Some((old, old_id)) = c.budget.take() {
            old.used.set(old.used.get() - c.bytes);
            old.members.borrow_mut().remove(&old_id);
        }
        for b in c.batches.iter_mut() {
            b.seq = self.next_seq();
        }
        self.used.set(self.used.get() + c.bytes);
        if let Some(s) = c.front_seq() {
            self.note_front(s, id);
        }
        c.budget = Some((self.clone(), id));
        self.enforce(&mut c);
    }

    fn next_seq(&self) -> u64 {
        let s = self.next_seq.get();
        self.next_seq.set(s + 1);
        s
    }

    fn note_front(&self, seq: u64, id: u64) {
        self.fronts.borrow_mut().push(Reverse((seq, id)));
    }

    /// Evicts the oldest batches of the member caches until the budget holds. `me` is the
    /// calling member (already borrowed by the caller).
    fn enforce(&self, me: &mut BatchCache) {
        let my_id = me.budget.as_ref().map(|(_, id)| *id);
        self.compact(me, my_id);
        while self.used.get() > self.limit_bytes {
            let Some(Reverse((seq, id))) = self.fronts.borrow_mut().pop() else {
                break;
            };
            if Some(id) == my_id {
                if me.front_seq() == Some(seq) {
                    me.pop_front();
                }
                continue;
            }
            let member = self.members.borrow().get(&id).and_then(Weak::upgrade);
            let Some(member) = member else { continue };
            let Ok(mut c) = member.try_borrow_mut() else {
                // In use further up this call stack (cannot happen on the paths that push); keep
                // its entry and leave the excess to the next push.
                self.note_front(seq, id);
                break;
            };
            if c.front_seq() == Some(seq) {
                c.pop_front();
            }
        }
    }

    /// Rebuilds the heap from the members' current oldest batches once stale entries make up
    /// most of it, so it stays within about twice the number of members.
    fn compact(&self, me: &BatchCache, my_id: Option<u64>) {
        let members = self.members.borrow();
        if self.fronts.borrow().len() <= 2 * members.len() + 64 {
            return;
        }
        let mut heap = BinaryHeap::with_capacity(members.len());
        for (&id, w) in members.iter() {
            let front = if Some(id) == my_id {
                me.front_seq()
            } else {
                w.upgrade()
                    .and_then(|c| c.try_borrow().ok().and_then(|c| c.front_seq()))
            };
            if let Some(seq) = front {
                heap.push(Reverse((seq, id)));
            }
        }
        *self.fronts.borrow_mut() = heap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch(len: usize) -> StoredBatch {
        StoredBatch::whole(Bytes::from(vec![0u8; len]))
    }

    fn cache(limit: usize, budget: &Rc<CacheBudget>) -> Rc<RefCell<BatchCache>> {
        let c = Rc::new(RefCell::new(BatchCache::new(limit)));
        budget.join(&c);
        c
    }

    fn offsets(c: &Rc<RefCell<BatchCache>>) -> Vec<Offset> {
        c.borrow().batches.iter().map(|b| b.base).collect()
    }

    #[test]
    fn the_shared_budget_evicts_the_oldest_batches_of_any_log() {
        let budget = CacheBudget::new(1000);
        let a = cache(10_000, &budget);
        let b = cache(10_000, &budget);
        for i in 0..4 {
            a.borrow_mut().push(i, i + 1, batch(200));
        }
        assert_eq!(budget.used_bytes(), 800);
        // b's pushes go past the budget: a's oldest batches leave, not b's new ones.
        b.borrow_mut().push(0, 1, batch(200));
        b.borrow_mut().push(1, 2, batch(200));
        assert_eq!(offsets(&a), vec![1, 2, 3]);
        assert_eq!(offsets(&b), vec![0, 1]);
        assert_eq!(budget.used_bytes(), 1000);
        // Interleaved: always the oldest overall.
        a.borrow_mut().push(4, 5, batch(200));
        b.borrow_mut().push(2, 3, batch(200));
        assert_eq!(offsets(&a), vec![3, 4]);
        assert_eq!(offsets(&b), vec![0, 1, 2]);
        assert_eq!(budget.used_bytes(), 1000);
        b.borrow_mut().push(3, 4, batch(200));
        assert_eq!(offsets(&a), vec![4]);
    }

    #[test]
    fn a_log_keeps_its_own_limit_and_a_closed_log_gives_its_bytes_back() {
        let budget = CacheBudget::new(10_000);
        let a = cache(500, &budget);
        let b = cache(10_000, &budget);
        for i in 0..10 {
            a.borrow_mut().push(i, i + 1, batch(200));
        }
        assert_eq!(offsets(&a), vec![8, 9]);
        b.borrow_mut().push(0, 1, batch(300));
        assert_eq!(budget.used_bytes(), 700);
        drop(a);
        assert_eq!(budget.used_bytes(), 300);
        // The closed log's heap entries are skipped.
        for i in 1..60 {
            b.borrow_mut().push(i, i + 1, batch(300));
        }
        assert_eq!(budget.used_bytes(), 9900);
        assert_eq!(offsets(&b).len(), 33);
    }

    #[test]
    fn the_heap_stays_small_without_pressure() {
        let budget = CacheBudget::new(usize::MAX);
        let logs: Vec<_> = (0..10).map(|_| cache(400, &budget)).collect();
        for i in 0..10_000 {
            logs[i as usize % 10]
                .borrow_mut()
                .push(i / 10, i / 10 + 1, batch(100));
        }
        assert_eq!(budget.used_bytes(), 10 * 400);
        assert!(budget.fronts.borrow().len() <= 2 * 10 + 64 + 1);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push { log: usize, len: usize },
        SetLimit { log: usize, limit: usize },
        Close { log: usize },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            8 => (0..4usize, 1..600usize).prop_map(|(log, len)| Op::Push { log, len }),
            1 => (0..4usize, 0..3000usize).prop_map(|(log, limit)| Op::SetLimit { log, limit }),
            1 => (0..4usize).prop_map(|log| Op::Close { log }),
        ]
    }

    /// The reference: per log a FIFO of (base, len, seq) under its own limit; then, while the
    /// total is over the budget, the batch with the smallest seq of any log leaves.
    /// A log in the model: its batches (base, len, seq) and its own limit.
    type ModelLog = (VecDeque<(Offset, usize, u64)>, usize);

    #[derive(Default)]
    struct Model {
        logs: Vec<Option<ModelLog>>,
        seq: u64,
    }

    impl Model {
        fn total(&self) -> usize {
            self.logs
                .iter()
                .flatten()
                .map(|(q, _)| q.iter().map(|b| b.1).sum::<usize>())
                .sum()
        }

        fn trim(q: &mut VecDeque<(Offset, usize, u64)>, limit: usize) {
            while q.iter().map(|b| b.1).sum::<usize>() > limit {
                q.pop_front();
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_budget_agrees_with_a_global_fifo_model(
            budget_bytes in 0..4000usize,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let budget = CacheBudget::new(budget_bytes);
            let mut caches: Vec<Option<Rc<RefCell<BatchCache>>>> =
                (0..4).map(|_| Some(cache(1500, &budget))).collect();
            let mut next_base: Vec<Offset> = vec![0; 4];
            let mut m = Model { logs: (0..4).map(|_| Some((VecDeque::new(), 1500))).collect(), seq: 0 };
            for op in ops {
                match op {
                    Op::Push { log, len } => {
                        let (Some(c), Some((q, limit))) = (&caches[log], &mut m.logs[log]) else { continue };
                        let base = next_base[log];
                        next_base[log] += 1;
                        c.borrow_mut().push(base, base + 1, batch(len));
                        m.seq += 1;
                        q.push_back((base, len, m.seq));
                        let limit = *limit;
                        Model::trim(q, limit);
                        while m.total() > budget_bytes {
                            let oldest = m.logs.iter().enumerate()
                                .filter_map(|(i, l)| l.as_ref().and_then(|(q, _)| q.front()).map(|b| (b.2, i)))
                                .min();
                            let Some((_, i)) = oldest else { break };
                            if let Some((q, _)) = &mut m.logs[i] {
                                q.pop_front();
                            }
                        }
                    }
                    Op::SetLimit { log, limit } => {
                        let (Some(c), Some((q, l))) = (&caches[log], &mut m.logs[log]) else { continue };
                        c.borrow_mut().set_limit(limit);
                        *l = limit;
                        Model::trim(q, limit);
                    }
                    Op::Close { log } => {
                        caches[log] = None;
                        m.logs[log] = None;
                    }
                }
                for (c, l) in caches.iter().zip(&m.logs) {
                    if let (Some(c), Some((q, _))) = (c, l) {
                        let want: Vec<Offset> = q.iter().map(|b| b.0).collect();
                        proptest::prop_assert_eq!(offsets(c), want);
                    }
                }
                proptest::prop_assert_eq!(budget.used_bytes(), m.total());
                proptest::prop_assert!(budget.used_bytes() <= budget_bytes);
            }
        }
    }

    #[test]
    fn joining_a_full_budget_evicts_at_once() {
        let budget = CacheBudget::new(1000);
        let a = cache(10_000, &budget);
        for i in 0..5 {
            a.borrow_mut().push(i, i + 1, batch(200));
        }
        let b = Rc::new(RefCell::new(BatchCache::new(10_000)));
        b.borrow_mut().push(0, 1, batch(400));
        budget.join(&b);
        // b's data counts as the newest: a's two oldest batches make room.
        assert_eq!(offsets(&a), vec![2, 3, 4]);
        assert_eq!(offsets(&b), vec![0]);
        assert_eq!(budget.used_bytes(), 1000);
    }
}

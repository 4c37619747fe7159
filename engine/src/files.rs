//! [`SegmentFiles`]: a shard-wide bound on open sealed-segment files.
//!
//! Why: a log used to hold every segment file open from `open` to `close`, so descriptors grew
//! with the retained data (one per segment). With the process's RLIMIT_NOFILE reached, new
//! partitions failed to open and the accept loop could not take connections. Now only the
//! active segment of each log is always open; a sealed segment is opened when something reads
//! it (a lagging consumer, an index rebuild, time retention) and kept in this least recently
//! used set, which all logs of a shard share (like the batch cache's `CacheBudget`).
//!
//! The bound is strict for the files the set hands out: at most `limit` sealed-segment files
//! are open at any moment, counting those a reader still holds after they left the set. A
//! reader that needs a file while every open one is in use waits until one is released (each
//! operation holds at most one sealed file at a time, so waiting cannot deadlock). Entries a
//! reader still holds are never closed under it; retention and reuse of a segment check that
//! nobody holds its file (see `PartitionLog::recycle`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::rc::{Rc, Weak};

use event_listener::Event;

use crate::io::Storage;
use crate::Offset;

/// (log id within the set, segment base offset)
type Key = (u64, Offset);

/// An open sealed-segment file handed out by [`SegmentFiles`]; counted as open until the last
/// holder drops it.
pub struct SegmentFile<F> {
    file: Rc<F>,
    owner: Weak<SegmentFiles<F>>,
}

impl<F> Deref for SegmentFile<F> {
    type Target = F;
    fn deref(&self) -> &F {
        &self.file
    }
}

impl<F> Drop for SegmentFile<F> {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade() {
            let mut st = owner.state.borrow_mut();
            st.open = st.open.saturating_sub(1);
            drop(st);
            owner.released.notify(usize::MAX);
        }
    }
}

/// A reader's hold on an open sealed-segment file. Dropping it wakes readers waiting for a
/// file (the set's own reference then may be evicted for them).
pub struct HeldFile<F> {
    file: Rc<SegmentFile<F>>,
    owner: Weak<SegmentFiles<F>>,
}

impl<F> Deref for HeldFile<F> {
    type Target = F;
    fn deref(&self) -> &F {
        &self.file.file
    }
}

impl<F> Drop for HeldFile<F> {
    fn drop(&mut self) {
        // The reference goes right after this; a woken reader runs later (a shard is one
        // thread), when the set may evict the file for it.
        if let Some(owner) = self.owner.upgrade() {
            owner.released.notify(usize::MAX);
        }
    }
}

struct Entry<F> {
    file: Rc<SegmentFile<F>>,
    used: u64,
}

struct State<F> {
    /// Files open now: cached ones and those still held after leaving the cache.
    open: usize,
    /// The most that were ever open at once.
    max_open: usize,
    clock: u64,
    entries: HashMap<Key, Entry<F>>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, Key>,
    next_log: u64,
    /// Files opened on demand (not counting active segments adopted at a roll).
    opened: u64,
}

/// Counters for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentFilesStats {
    pub limit: usize,
    pub open: usize,
    pub max_open: usize,
    pub opened: u64,
}

/// A least recently used set of open sealed-segment files, shared by the logs of a shard.
pub struct SegmentFiles<F> {
    limit: usize,
    state: RefCell<State<F>>,
    released: Event,
    me: Weak<SegmentFiles<F>>,
}

impl<F> SegmentFiles<F> {
    /// A set that keeps at most `limit` (at least 1) sealed-segment files open.
    pub fn new(limit: usize) -> Rc<Self> {
        Rc::new_cyclic(|me| Self {
            limit: limit.max(1),
            state: RefCell::new(State {
                open: 0,
                max_open: 0,
                clock: 0,
                entries: HashMap::new(),
                order: BTreeMap::new(),
                next_log: 0,
                opened: 0,
            }),
            released: Event::new(),
            me: me.clone(),
        })
    }

    pub fn stats(&self) -> SegmentFilesStats {
        let st = self.state.borrow();
        SegmentFilesStats {
            limit: self.limit,
            open: st.open,
            max_open: st.max_open,
            opened: st.opened,
        }
    }

    /// A fresh id for a log joining the set.
    pub(crate) fn register_log(&self) -> u64 {
        let mut st = self.state.borrow_mut();
        st.next_log += 1;
        st.next_log
    }

    fn touch(st: &mut State<F>, key: Key) -> Option<Rc<SegmentFile<F>>> {
        st.clock += 1;
        let now = st.clock;
        let e = st.entries.get_mut(&key)?;
        let old = std::mem::replace(&mut e.used, now);
        let file = e.file.clone();
        st.order.remove(&old);
        st.order.insert(now, key);
        Some(file)
    }

    fn insert(st: &mut State<F>, key: Key, file: Rc<SegmentFile<F>>) {
        st.clock += 1;
        let now = st.clock;
        st.order.insert(now, key);
        if let Some(old) = st.entries.insert(key, Entry { file, used: now }) {
            st.order.remove(&old.used);
        }
    }

    /// Takes the least recently used entry nobody else holds out of the set (the caller drops
    /// it outside the borrow, which closes it).
    fn take_victim(st: &mut State<F>) -> Option<Rc<SegmentFile<F>>> {
        let key = st
            .order
            .values()
            .find(|k| {
                st.entries
                    .get(k)
                    .is_some_and(|e| Rc::strong_count(&e.file) == 1)
            })
            .copied()?;
        let e = st.entries.remove(&key)?;
        st.order.remove(&e.used);
        Some(e.file)
    }

    fn reserve(&self, st: &mut State<F>) {
        st.open += 1;
        st.max_open = st.max_open.max(st.open);
    }

    /// The open file of segment `base` of log `log` at `path`, opening it (and closing the
    /// least recently used unheld one, or waiting for one to be released) when needed.
    pub(crate) async fn get<S: Storage<File = F>>(
        &self,
        storage: &S,
        log: u64,
        base: Offset,
        path: &Path,
    ) -> io::Result<HeldFile<F>> {
        let held = |file| HeldFile {
            file,
            owner: self.me.clone(),
        };
        let key = (log, base);
        loop {
            let (victim, listener) = {
                let mut st = self.state.borrow_mut();
                if let Some(f) = Self::touch(&mut st, key) {
                    return Ok(held(f));
                }
                if st.open < self.limit {
                    self.reserve(&mut st);
                    break;
                }
                match Self::take_victim(&mut st) {
                    Some(v) => (Some(v), None),
                    None => (None, Some(self.released.listen())),
                }
            };
            drop(victim);
            if let Some(l) = listener {
                l.await;
            }
        }
        // One slot is reserved for us: give it back if the open fails.
        let opened = storage.open_file(path, false).await;
        let file = match opened {
            Ok(f) => Rc::new(SegmentFile {
                file: Rc::new(f),
                owner: self.me.clone(),
            }),
            Err(e) => {
                let mut st = self.state.borrow_mut();
                st.open = st.open.saturating_sub(1);
                drop(st);
                self.released.notify(usize::MAX);
                return Err(e);
            }
        };
        let mut st = self.state.borrow_mut();
        st.opened += 1;
        // Another reader may have opened the same file meanwhile: keep the one in the set.
        if let Some(existing) = Self::touch(&mut st, key) {
            drop(st);
            drop(file);
            return Ok(held(existing));
        }
        Self::insert(&mut st, key, file.clone());
        Ok(held(file))
    }

    /// Keeps a segment's file that is open already (the active segment a roll just sealed),
    /// when there is room or an unheld entry can make room; otherwise it is closed (dropped)
    /// and opened again on demand. Never waits.
    pub(crate) fn adopt(&self, log: u64, base: Offset, file: Rc<F>) {
        self.make_room();
        let mut st = self.state.borrow_mut();
        if st.open < self.limit {
            self.reserve(&mut st);
            let f = Rc::new(SegmentFile {
                file,
                owner: self.me.clone(),
            });
            Self::insert(&mut st, (log, base), f);
        }
    }

    /// Closes unheld files until one more can be opened within the limit (a roll calls this
    /// before it creates the next segment, whose predecessor it then hands to [`adopt`], so
    /// the roll itself never takes the process past the limit). Never waits.
    ///
    /// [`adopt`]: SegmentFiles::adopt
    pub(crate) fn make_room(&self) {
        let victims = {
            let mut st = self.state.borrow_mut();
            let mut victims = Vec::new();
            while st.open - victims.len() >= self.limit {
                match Self::take_victim(&mut st) {
                    Some(v) => victims.push(v),
                    None => break,
                }
            }
            victims
        };
        drop(victims);
    }

    /// Takes segment `base` of `log` out of the set (it is being deleted or reused). The
    /// caller learns from the handle's reference count whether a reader still holds it, and
    /// closes it by dropping it.
    pub(crate) fn forget(&self, log: u64, base: Offset) -> Option<Rc<SegmentFile<F>>> {
        let mut st = self.state.borrow_mut();
        let e = st.entries.remove(&(log, base))?;
        st.order.remove(&e.used);
        Some(e.file)
    }

    /// Closes every file of `log` the set keeps (the log is closing).
    pub(crate) fn forget_log(&self, log: u64) {
        let gone: Vec<Entry<F>> = {
            let mut st = self.state.borrow_mut();
            let keys: Vec<Key> = st.entries.keys().filter(|k| k.0 == log).copied().collect();
            let mut gone = Vec::with_capacity(keys.len());
            for k in keys {
                if let Some(e) = st.entries.remove(&k) {
                    st.order.remove(&e.used);
                    gone.push(e);
                }
            }
            gone
        };
        drop(gone);
    }
}

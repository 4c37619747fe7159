//! A global allocator that keeps allocation sizes chosen by the network from aborting the
//! broker.
//!
//! kafka-protocol 0.18 decodes every array by reading its element count from the wire and
//! calling `Vec::with_capacity(count)` before reading a single element. A 20-byte frame can
//! claim 2^31 elements; the system allocator refuses the hundreds of GiB that asks for, and Rust
//! answers a refused allocation by aborting the process. Decoding itself is safe: the decoder
//! stops with an error as soon as the frame runs out of bytes, so at most as many elements as
//! the frame has bytes are ever written.
//!
//! This allocator serves every allocation of at least [`HUGE_BYTES`] from an anonymous
//! `MAP_NORESERVE` mapping: address space, not memory. The kernel backs pages only when they
//! are touched, and the decoder touches only what the (size-capped) frame can fill, so a lying
//! count costs a few page faults and an `mmap`/`munmap` pair instead of the process. Smaller
//! allocations go to the system allocator unchanged. Nothing in the broker legitimately
//! allocates 1 GiB at once (frames are capped far below that), so the normal path never sees
//! the mapping.
//!
//! Limits: with `vm.overcommit_memory=2` (strict accounting) the kernel ignores
//! `MAP_NORESERVE` and still refuses; `shardlog check` reports that setting.
//!
//! ## Giving freed memory back
//!
//! glibc keeps freed memory in its arenas for reuse: after a burst of large fetch answers the
//! process kept its peak RSS for good although every buffer had been freed (its mmap
//! threshold adapts upwards, so later multi-MiB buffers come from the arenas, not from
//! mappings returned on free). [`release_freed_memory`] asks glibc (`malloc_trim`) to return
//! the free pages of every arena; a connection whose answers held at least
//! [`RELEASE_AFTER_BYTES`] at once calls it when it closes. It runs on a short-lived thread of
//! its own, at most once a second (a request made sooner is carried out by the next shard tick
//! after that), as it walks every arena.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A connection whose queued answers reached this many bytes at once releases freed memory
/// when it closes.
pub const RELEASE_AFTER_BYTES: u64 = 1 << 20;
/// Releases are at least this far apart.
const RELEASE_EVERY: Duration = Duration::from_secs(1);

static RELEASE_PENDING: AtomicBool = AtomicBool::new(false);
/// Milliseconds since [`epoch`] of the last release, plus one (0: never).
static LAST_RELEASE: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Asks for the allocator's free memory to be returned to the system: now, or at the next
/// [`release_pending`] once a second has passed since the last release.
pub fn release_freed_memory() {
    RELEASE_PENDING.store(true, Ordering::Relaxed);
    release_pending();
}

/// Carries out a requested release if the last one is at least a second old (every shard
/// calls it from its periodic tick; one of them wins).
pub fn release_pending() {
    if !RELEASE_PENDING.load(Ordering::Relaxed) {
        return;
    }
    let now = epoch().elapsed().as_millis() as u64 + 1;
    let last = LAST_RELEASE.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < RELEASE_EVERY.as_millis() as u64 {
        return;
    }
    if LAST_RELEASE
        .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    RELEASE_PENDING.store(false, Ordering::Relaxed);
    // Off the shard: a trim after a few hundred MiB of answers took 65-115 ms here, which
    // would stall every connection of the calling shard.
    let spawned = std::thread::Builder::new()
        .name("mem-release".into())
        .spawn(|| {
            let started = Instant::now();
            let released = trim();
            tracing::debug!(released, took = ?started.elapsed(), "returned freed memory to the system");
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the thread that returns freed memory");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim has no preconditions; it only takes glibc's own arena locks.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

/// Allocations at least this large are mapped with `MAP_NORESERVE`.
pub const HUGE_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

/// See the module documentation.
pub struct GuardedAlloc;

fn is_huge(layout: Layout) -> bool {
    layout.size() >= HUGE_BYTES && layout.align() <= PAGE_BYTES
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every pointer handed out is either the system allocator's (freed by it) or a fresh
// anonymous mapping of at least `layout.size()` bytes, page-aligned (>= any align we accept),
// zero-filled, and unmapped exactly once with the same size.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout) {
            unsafe { map(layout.size()) } // anonymous mappings are zero-filled
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout) {
            // SAFETY: `ptr` came from `map(layout.size())`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        match (is_huge(layout), is_huge(new_layout)) {
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => {
                // Move the mapping without touching (and so backing) its pages.
                // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `map`.
                let p = unsafe {
                    libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                if p == libc::MAP_FAILED {
                    ptr::null_mut()
                } else {
                    p.cast()
                }
            }
            _ => {
                // Crossing the threshold: copy the smaller of the two sizes.
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both regions are valid for `min` bytes and do not overlap.
                    unsafe { ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
                    unsafe { self.dealloc(ptr, layout) };
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::{MetadataRequest, ProduceRequest};
    use kafka_protocol::protocol::Decodable;

    /// Without the guard each of these aborts the test process ("memory allocation of
    /// 154618822584 bytes failed"); with it the decoder returns an error.
    #[test]
    fn lying_array_counts_fail_to_decode_instead_of_aborting() {
        for (version, body) in [
            (1i16, &[0x7f, 0xff, 0xff, 0xff][..]),
            (9, &[0xff, 0xff, 0xff, 0x7f, 0x00][..]),
            (12, &[0xff, 0xff, 0xff, 0x7f, 0x00][..]),
        ] {
            let mut b = Bytes::copy_from_slice(body);
            assert!(
                MetadataRequest::decode(&mut b, version).is_err(),
                "v{version}"
            );
        }
        // Produce v3: transactional id null, acks, timeout, then a topic count of 2^31 - 1.
        let mut body = vec![0xff, 0xff, 0x00, 0x01, 0x00, 0x00, 0x75, 0x30];
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        let mut b = Bytes::from(body);
        assert!(ProduceRequest::decode(&mut b, 3).is_err());
    }

    #[test]
    fn huge_allocations_round_trip_through_the_mapping() {
        let mut v: Vec<u8> = Vec::with_capacity(super::HUGE_BYTES);
        v.extend_from_slice(&[1, 2, 3]);
        v.reserve(super::HUGE_BYTES); // huge -> huge: mremap
        assert_eq!(&v[..], &[1, 2, 3]);
        v.shrink_to_fit(); // huge -> small: copy
        assert_eq!(&v[..], &[1, 2, 3]);
        let z = vec![0u64; super::HUGE_BYTES / 8 + 1]; // alloc_zeroed
        assert_eq!((z[0], z[z.len() / 2], z[z.len() - 1]), (0, 0, 0));
    }
}

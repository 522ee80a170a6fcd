//! [`StatsAlloc`]: sqlalloc's counters for the Rust heap (a `#[global_allocator]` wrapper).

use crate::counters::{Counters, HIST_BUCKETS};
use crate::Stats;
use std::alloc::{GlobalAlloc, Layout};

/// A `#[global_allocator]` wrapper that counts every allocation of the inner allocator `A` with
/// sqlalloc's counters.
///
/// Wrap the program's global allocator in it and one report shows the Rust heap next to SQLite's:
///
/// ```
/// use sqlalloc::StatsAlloc;
/// use std::alloc::System;
///
/// #[global_allocator]
/// static RUST_HEAP: StatsAlloc<System> = StatsAlloc::new(System);
///
/// let v = vec![0u8; 1000];
/// let s = RUST_HEAP.stats();
/// assert!(s.current_bytes >= 1000);
/// assert!(s.malloc_calls >= 1);
/// drop(v);
/// ```
///
/// The counters are [`Counters`]: per-thread slots updated with plain stores, so the wrapper adds
/// no lock and no shared cache line to the allocation path. Bytes are counted as Rust asks for
/// them (`Layout::size()`): `GlobalAlloc` has no way to ask the inner allocator for the usable
/// size. `alloc`/`alloc_zeroed` count as `malloc_calls`, `dealloc` as `free_calls`, `realloc`
/// as `realloc_calls`; a null result counts in `failed_calls`.
///
/// The peak follows the rules of [`counters`](crate::counters) with one difference: the small
/// pending delta of a thread that exits is flushed into the installed SQLite allocator's peak, not
/// this one's, so with several threads this peak may differ from the true one by the bound
/// documented there (current bytes and counts are always exact).
pub struct StatsAlloc<A> {
    inner: A,
    counters: Counters,
}

impl<A> StatsAlloc<A> {
    /// Wrap `inner`. A `const fn`, so it can initialize a `static`.
    pub const fn new(inner: A) -> Self {
        StatsAlloc {
            inner,
            counters: Counters::new(),
        }
    }

    /// The wrapped allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The counters, read now.(the same fields as [`crate::stats()`]).
    pub fn stats(&self) -> Stats {
        self.counters.stats()
    }

    /// Request-size histogram (see [`HIST_BUCKETS`]).
    pub fn histogram(&self) -> [u64; HIST_BUCKETS] {
        self.counters.histogram()
    }

    /// Start a new peak from the current value.
    pub fn reset_peak(&self) {
        self.counters.reset_peak()
    }

    /// The counters themselves.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl<A: Default> Default for StatsAlloc<A> {
    fn default() -> Self {
        Self::new(A::default())
    }
}

// SAFETY: every method forwards to the inner allocator with the caller's arguments and returns
// its result unchanged; the counters neither allocate nor touch the blocks.
unsafe impl<A: GlobalAlloc> GlobalAlloc for StatsAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc(layout) };
        self.counters
            .on_malloc(layout.size(), (!p.is_null()).then_some(layout.size()));
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        self.counters
            .on_malloc(layout.size(), (!p.is_null()).then_some(layout.size()));
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.counters.on_free(layout.size());
        // SAFETY: forwarded contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        self.counters
            .on_realloc(new_size, layout.size(), (!p.is_null()).then_some(new_size));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    /// The other tests of this binary allocate on their own threads at the same time, so the
    /// counters may not be solo (see `counters`: the peak is then exact only at the flush
    /// points). Every step here moves the bytes by at least `PEAK_FLUSH_BYTES`, so each one
    /// flushes and the peak is exact in both regimes.
    #[test]
    fn counts_a_private_instance() {
        const K: usize = 1024;
        assert!(100 * K as i64 >= crate::counters::PEAK_FLUSH_BYTES);
        let a = StatsAlloc::new(System);
        let l = Layout::from_size_align(100 * K, 8).unwrap();
        // SAFETY: non-zero layout; each block is freed once with its layout.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            let q = a.realloc(p, l, 300 * K);
            assert!(!q.is_null());
            let z = a.alloc_zeroed(l);
            assert_eq!(*z, 0);
            let s = a.stats();
            assert_eq!((s.current_bytes, s.current_count), (400 * K as i64, 2));
            assert_eq!((s.malloc_calls, s.realloc_calls), (2, 1));
            assert_eq!(s.largest_request, 300 * K as i64);
            a.dealloc(q, Layout::from_size_align(300 * K, 8).unwrap());
            a.dealloc(z, l);
        }
        let s = a.stats();
        assert_eq!((s.current_bytes, s.current_count, s.free_calls), (0, 0, 2));
        assert_eq!(s.peak_bytes, 400 * K as i64);
    }
}

//! `mimalloc`: SQLite's memory from mimalloc (cargo feature `mimalloc`, through
//! `libmimalloc-sys`, the mimalloc that the `mimalloc` crate also uses).
//!
//! # Algorithm
//! Every call goes straight to mimalloc:
//! - `xMalloc` is `mi_malloc`, `xRealloc` is `mi_realloc`, `xFree` is `mi_free`;
//! - `xSize` is `mi_usable_size`: the block's real size (its size class for small blocks);
//! - `xRoundup` is `mi_good_size`: the size a request really gets, computed without allocating,
//!   so SQLite sizes its buffers to use the slack.
//!
//! # Block layout
//! No header: the pointer SQLite gets is mimalloc's. (SQLite's `mem1.c` without
//! `malloc_usable_size` would add an 8-byte size prefix, which pushes requests of exactly a class
//! size, such as 1024, into the next class.)
//!
//! # Invariants
//! - mimalloc aligns every block to at least 8 bytes (16 for blocks of 16 bytes or more).
//! - `mi_usable_size(p) >= requested` and is fixed while the block lives.
//! - `mi_good_size(n) == mi_usable_size(mi_malloc(n))` for the sizes SQLite asks for (mimalloc
//!   documents it as the general case; for huge blocks mimalloc may hand out more than it
//!   predicts, which only makes `xRoundup` an under-estimate, never below the request).
//! - Requests above [`SQLITE_MAX_REQUEST`] fail cleanly without reaching mimalloc; a failed
//!   `mi_realloc` leaves the old block untouched.
//!
//! mimalloc is thread-safe (thread-local heaps, lock-free cross-thread frees): no lock here.
//!
//! [`Mimalloc`] is also a [`GlobalAlloc`], so the Rust heap and SQLite's heap can share it.
//!
//! # Footprint
//! [`footprint`](MemMethods::footprint) reads `mi_process_info`: `committed_bytes`, the memory
//! mimalloc has committed now (its `committed` statistic, kept whatever `MI_STAT` is), and
//! `resident_bytes`, the current resident size as mimalloc reports it, which on Linux is that
//! same committed figure (mimalloc reads no `/proc` file; it measures the resident size itself
//! only on Windows and macOS). Both cover the whole of mimalloc in the process (a Rust
//! `#[global_allocator]` of the `mimalloc` crate included), not SQLite alone. The call reads
//! mimalloc's statistics with relaxed loads and calls `getrusage`; it takes no lock.

use crate::counters::Stats;
use crate::methods::{Held, MemMethods, SQLITE_MAX_REQUEST};
use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;

/// mimalloc (SQLite's memory through `mi_malloc`/`mi_usable_size`/`mi_good_size`); also usable
/// as the program's `#[global_allocator]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mimalloc;

// SAFETY: mi_malloc/mi_realloc return blocks of at least the requested size, at least 8-aligned,
// distinct from every other live block; mi_usable_size of a live block is fixed and at least the
// request; mi_good_size(n) >= n; a failed mi_realloc leaves the block alone; mimalloc is
// thread-safe.
unsafe impl MemMethods for Mimalloc {
    fn name(&self) -> &'static str {
        "mimalloc"
    }

    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        if size > SQLITE_MAX_REQUEST {
            return None;
        }
        // SAFETY: plain mimalloc call.
        NonNull::new(unsafe { mi::mi_malloc(size) }.cast())
    }

    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: `ptr` is a live mimalloc block (caller's contract).
        unsafe { mi::mi_free(ptr.as_ptr().cast()) }
    }

    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        if new_size > SQLITE_MAX_REQUEST {
            return None;
        }
        // SAFETY: `ptr` is a live mimalloc block (caller's contract); on failure mimalloc leaves
        // it alone. A new size of 0 still returns a (minimal) block rather than freeing.
        NonNull::new(unsafe { mi::mi_realloc(ptr.as_ptr().cast(), new_size) }.cast())
    }

    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: `ptr` is a live mimalloc block (caller's contract).
        unsafe { mi::mi_usable_size(ptr.as_ptr().cast()) }
    }

    fn roundup(&self, size: usize) -> usize {
        if size > SQLITE_MAX_REQUEST {
            return size;
        }
        // SAFETY: mi_good_size only computes a size.
        unsafe { mi::mi_good_size(size) }.max(size)
    }

    fn footprint(&self, stats: &Stats, out: &mut dyn FnMut(Held)) {
        let _ = stats;
        let (mut rss, mut commit) = (0usize, 0usize);
        // SAFETY: every pointer is either null (figure not wanted, which mimalloc allows) or
        // points to a usize valid for writes during the call.
        unsafe {
            mi::mi_process_info(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut rss,
                std::ptr::null_mut(),
                &mut commit,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        out(Held {
            key: "committed_bytes",
            help: "mimalloc mi_process_info(): bytes mimalloc has committed now, for the whole process's mimalloc (shared with any other user of it, e.g. a Rust global allocator), not SQLite alone",
            bytes: commit as u64,
        });
        out(Held {
            key: "resident_bytes",
            help: "mimalloc mi_process_info(): current resident bytes as mimalloc sees them (on Linux its committed bytes), for the whole process's mimalloc, not SQLite alone",
            bytes: rss as u64,
        });
    }
}

// SAFETY: the aligned mimalloc calls honour the layout's alignment and size, return null on
// failure, and mi_realloc_aligned keeps the alignment and leaves the block alone on failure.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain mimalloc call with a valid alignment.
        unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) }.cast()
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) }.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` was allocated here (GlobalAlloc contract).
        unsafe { mi::mi_free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is live and was allocated here with `layout` (GlobalAlloc contract).
        unsafe { mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()) }.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundup_is_what_mimalloc_hands_out() {
        let m = Mimalloc;
        for n in [0usize, 1, 8, 9, 100, 1000, 1024, 1025, 4096, 4368, 65_536] {
            let p = m.malloc(n).expect("mimalloc");
            // SAFETY: `p` is live.
            let got = unsafe { m.size(p) };
            assert_eq!(m.roundup(n), got, "request {n}");
            assert!(got >= n);
            assert_eq!(p.as_ptr().align_offset(8), 0);
            // SAFETY: `p` is live and not used afterwards.
            unsafe { m.free(p) };
        }
        assert!(m.malloc(SQLITE_MAX_REQUEST + 1).is_none());
    }

    #[test]
    fn footprint_reads_process_info() {
        let m = Mimalloc;
        let p = m.malloc(4 << 20).expect("4 MiB");
        let mut got = Vec::new();
        m.footprint(&Stats::default(), &mut |h| got.push(h));
        let keys: Vec<&str> = got.iter().map(|h| h.key).collect();
        assert_eq!(keys, ["committed_bytes", "resident_bytes"]);
        assert!(got[0].bytes >= 4 << 20, "{got:?}");
        assert!(got[1].bytes > 0, "{got:?}");
        // SAFETY: `p` is live and not used afterwards.
        unsafe { m.free(p) };
    }
}

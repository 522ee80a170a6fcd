//! `rust`: SQLite's memory through the program's `#[global_allocator]` (whatever it is: the
//! system allocator, jemalloc, mimalloc, a [`StatsAlloc`](crate::StatsAlloc) wrapper, …).
//! Always built (it needs only `std`).
//!
//! # Algorithm
//! `xMalloc`, `xRealloc` and `xFree` are `std::alloc::alloc`, `realloc` and `dealloc`. Rust's
//! allocator interface needs the block's [`Layout`] again when freeing or resizing, and SQLite's
//! `xFree` passes only the pointer, so every block carries its size in a header.
//!
//! # Block layout
//! ```text
//! base (8-aligned, from the global allocator)
//! |<- 8 bytes ->|<------------- body: round8(request) bytes ------------->|
//! | body size   | memory handed to SQLite ...                             |
//!               ^ pointer SQLite gets (base + 8, so 8-aligned)
//! ```
//! The layout given to the global allocator is always `(8 + body, align 8)`.
//!
//! # Invariants
//! - `size(p)` is the body size stored in the header, `round8(request)` (8 for a request of 0),
//!   fixed while the block lives; `roundup(n) == round8(n) == size(malloc(n))`.
//! - Requests above [`SQLITE_MAX_REQUEST`] fail without reaching the allocator.
//! - A failed `realloc` leaves the old block (and its header) untouched.
//!
//! # Where it differs from the other backends
//! `GlobalAlloc` cannot say how much it really hands out, so `xRoundup` can only be `round8`:
//! whatever slack the global allocator adds is invisible to SQLite, and the 8-byte header pushes
//! a request of exactly a size class (1024) into the next class. When the global allocator is
//! jemalloc or mimalloc, the `jemalloc`/`mimalloc` backends use the same heap without either cost.
//! If the global allocator is wrapped in a [`StatsAlloc`](crate::StatsAlloc), SQLite's memory is
//! counted there too (plus the headers), besides sqlalloc's own counters.
//!
//! Thread safety is the global allocator's (every `GlobalAlloc` is `Sync`); no lock here.
//!
//! # Footprint
//! [`footprint`](MemMethods::footprint) reports `overhead_bytes`, what the headers of the live
//! blocks cost: 8 bytes each (`size` is the body, so the header is the only part of a block
//! SQLite does not count; the global allocator's own rounding is invisible here). The number of
//! live blocks is the stack's `current_count`, exact for the blocks this backend handed out
//! (every successful malloc and free of them is counted there, failed calls are not), so the
//! figure costs the allocation path nothing and takes no lock. One case where it is not this
//! backend's own count: after a re-install that retired an allocator which cannot tell its blocks
//! from libc's or the global allocator's (`system`, `jemalloc`, `mimalloc`, `rust`: see
//! `MemMethods::owns`), the frees of its blocks that reach this stack are counted here, so
//! `current_count`, `current_bytes` and this figure are all off by those blocks (a negative count
//! reads as 0).

use crate::counters::Stats;
use crate::methods::{round8, Held, MemMethods, ALIGN, SQLITE_MAX_REQUEST};
use std::alloc::Layout;
use std::ptr::NonNull;

/// SQLite's memory through the program's `#[global_allocator]`, with an 8-byte size header.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rust;

/// Bytes of the size header in front of every block.
const HEADER: usize = 8;

/// The layout of a block whose body has `body` bytes.
fn layout(body: usize) -> Option<Layout> {
    Layout::from_size_align(HEADER.checked_add(body)?, ALIGN).ok()
}

/// The body size for a request of `n` bytes, or `None` when it is refused.
fn body_for(n: usize) -> Option<usize> {
    (n <= SQLITE_MAX_REQUEST).then(|| round8(n.max(1)))
}

/// Write the header of a fresh block and return the pointer handed to SQLite.
///
/// # Safety
/// `base` must point to a block of at least `HEADER + body` writable bytes, 8-aligned.
unsafe fn finish(base: NonNull<u8>, body: usize) -> NonNull<u8> {
    // SAFETY: `base` is 8-aligned and has at least HEADER writable bytes (caller's contract).
    unsafe { base.cast::<usize>().write(body) };
    // SAFETY: HEADER < HEADER + body bytes of the same block.
    unsafe { base.add(HEADER) }
}

/// The base pointer and body size of a block handed to SQLite.
///
/// # Safety
/// `ptr` must be a live block of this backend (so `ptr - HEADER` is its base and holds its size).
unsafe fn base_of(ptr: NonNull<u8>) -> (NonNull<u8>, usize) {
    // SAFETY: `ptr` is `base + HEADER` of one allocation (caller's contract).
    let base = unsafe { ptr.sub(HEADER) };
    // SAFETY: the header was written by `finish` and is 8-aligned.
    let body = unsafe { base.cast::<usize>().read() };
    (base, body)
}

// SAFETY: blocks come from the global allocator with a layout of HEADER + body bytes, align 8, so
// the body (from base + 8) is 8-aligned, at least the request, and overlaps no other live block;
// `size` reads the fixed body size from the header; a failed std realloc leaves the block alone;
// GlobalAlloc implementations are Sync.
unsafe impl MemMethods for Rust {
    fn name(&self) -> &'static str {
        "rust"
    }

    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        let body = body_for(size)?;
        let l = layout(body)?;
        // SAFETY: the layout has a non-zero size.
        let base = NonNull::new(unsafe { std::alloc::alloc(l) })?;
        // SAFETY: `base` is a fresh block of `l.size() = HEADER + body` bytes, 8-aligned.
        Some(unsafe { finish(base, body) })
    }

    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: `ptr` is a live block of this backend (caller's contract).
        let (base, body) = unsafe { base_of(ptr) };
        if let Some(l) = layout(body) {
            // SAFETY: `base` was allocated by the global allocator with exactly this layout.
            unsafe { std::alloc::dealloc(base.as_ptr(), l) }
        }
    }

    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        let new_body = body_for(new_size)?;
        let new_total = layout(new_body)?.size();
        // SAFETY: `ptr` is a live block of this backend (caller's contract).
        let (base, body) = unsafe { base_of(ptr) };
        let old = layout(body)?;
        // SAFETY: `base` was allocated with `old`; the new size is non-zero and, rounded to 8,
        // does not overflow isize (it is below SQLITE_MAX_REQUEST + 16).
        let q = NonNull::new(unsafe { std::alloc::realloc(base.as_ptr(), old, new_total) })?;
        // SAFETY: `q` is a block of `new_total = HEADER + new_body` bytes, 8-aligned.
        Some(unsafe { finish(q, new_body) })
    }

    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: `ptr` is a live block of this backend (caller's contract).
        unsafe { base_of(ptr) }.1
    }

    fn roundup(&self, size: usize) -> usize {
        round8(size.max(1))
    }

    fn footprint(&self, stats: &Stats, out: &mut dyn FnMut(Held)) {
        out(Held {
            key: "overhead_bytes",
            help: "sqlalloc rust backend: bytes of the 8-byte size headers of SQLite's live blocks (live blocks x 8), beyond the bytes SQLite counts",
            bytes: overhead(stats.current_count),
        });
    }
}

/// Header bytes of `live` blocks (0 for a negative count, see "Footprint" above).
fn overhead(live: i64) -> u64 {
    u64::try_from(live)
        .unwrap_or(0)
        .saturating_mul(HEADER as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keeps_the_size_and_realloc_keeps_the_bytes() {
        let r = Rust;
        let p = r.malloc(13).unwrap();
        // SAFETY: `p` is live with at least 13 bytes.
        unsafe {
            assert_eq!(r.size(p), 16);
            std::ptr::copy_nonoverlapping(b"hello, sqlite".as_ptr(), p.as_ptr(), 13);
        }
        assert_eq!(r.roundup(13), 16);
        assert_eq!(r.roundup(0), 8);
        // SAFETY: `p` is live; replaced by `q`.
        let q = unsafe { r.realloc(p, 5000) }.unwrap();
        // SAFETY: `q` is live with at least 5000 bytes, the first 13 copied.
        unsafe {
            assert_eq!(r.size(q), 5000);
            assert_eq!(std::slice::from_raw_parts(q.as_ptr(), 13), b"hello, sqlite");
            assert!(r.realloc(q, SQLITE_MAX_REQUEST + 1).is_none());
            assert_eq!(r.size(q), 5000);
            r.free(q);
        }
        let z = r.malloc(0).unwrap();
        assert_eq!(overhead(-3), 0);
        // SAFETY: `z` is live.
        unsafe {
            assert_eq!(r.size(z), 8);
            r.free(z);
        }
    }

    #[test]
    fn footprint_is_the_headers_of_the_live_blocks() {
        use crate::stack::Stack;
        // A stack's counters are leaked on purpose; kept reachable for Miri's leak check.
        static KEPT: std::sync::Mutex<Vec<&'static crate::counters::Counters>> =
            std::sync::Mutex::new(Vec::new());
        let s = Stack::new(Box::new(Rust), None, "rust".into());
        KEPT.lock().unwrap().push(s.counters());
        let overhead_now = |s: &Stack| {
            let f = s.footprint();
            assert_eq!(f.len(), 1);
            assert_eq!(f[0].key, "overhead_bytes");
            f[0].bytes
        };
        assert_eq!(overhead_now(&s), 0);
        let blocks: Vec<_> = [1usize, 100, 4096]
            .iter()
            .map(|&n| s.malloc(n).unwrap())
            .collect();
        assert_eq!(overhead_now(&s), 3 * 8);
        // SAFETY: live blocks of `s`; the first is replaced by the realloc's result.
        let q = unsafe { s.realloc(blocks[0], 5000) }.unwrap();
        assert_eq!(overhead_now(&s), 3 * 8, "a realloc keeps the count");
        // SAFETY: live blocks of `s`, freed once.
        unsafe {
            s.free(q);
            s.free(blocks[1]);
        }
        assert_eq!(overhead_now(&s), 8);
        // SAFETY: as above.
        unsafe { s.free(blocks[2]) };
        assert_eq!(overhead_now(&s), 0);
    }
}

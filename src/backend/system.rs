//! `system`: libc's allocator, as SQLite's `mem1.c` uses it when `SQLITE_MALLOCSIZE` is known.
//!
//! # Algorithm
//! Every call goes straight to libc: `malloc`, `realloc`, `free`. There is no size header:
//! `xSize` is `malloc_usable_size` (what glibc really handed out, so `sqlite3_memory_used()` counts
//! the bytes the process really spends), and `xRoundup` rounds to 8 as mem1 does.
//!
//! # Invariants
//! - Every block is at least 8-aligned (glibc guarantees 16 on 64-bit).
//! - `size(p) >= requested` (glibc guarantees it).
//! - Requests above [`SQLITE_MAX_REQUEST`] fail cleanly without reaching libc; 0 bytes is served
//!   as an 8-byte request.
//!
//! glibc's allocator is thread-safe, so this backend needs no lock of its own.

use crate::methods::{round8, MemMethods, SQLITE_MAX_REQUEST};
use std::ptr::NonNull;

/// libc malloc, no header (SQLite's mem1).
#[derive(Debug, Default)]
pub struct System;

// SAFETY: libc's malloc family returns 16-aligned, non-overlapping blocks of at least the
// requested size; `malloc_usable_size` is stable for a live block; a failed `realloc` leaves the
// old block alone; libc's allocator is thread-safe.
unsafe impl MemMethods for System {
    fn name(&self) -> &'static str {
        "system"
    }

    #[inline(always)]
    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        if size > SQLITE_MAX_REQUEST {
            return None;
        }
        // SAFETY: plain libc call with a non-zero size.
        NonNull::new(unsafe { libc::malloc(size.max(1)) }.cast())
    }

    #[inline(always)]
    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: the caller guarantees `ptr` is a live block from libc malloc/realloc here.
        unsafe { libc::free(ptr.as_ptr().cast()) }
    }

    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        if new_size > SQLITE_MAX_REQUEST {
            return None;
        }
        // SAFETY: `ptr` is a live libc block (caller's contract); on failure libc leaves it alone.
        NonNull::new(unsafe { libc::realloc(ptr.as_ptr().cast(), new_size.max(1)) }.cast())
    }

    #[inline(always)]
    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: `ptr` is a live libc block (caller's contract).
        unsafe { libc::malloc_usable_size(ptr.as_ptr().cast()) }
    }

    fn roundup(&self, size: usize) -> usize {
        round8(size)
    }
}

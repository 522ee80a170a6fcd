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
//!
//! # Footprint
//! [`footprint`](MemMethods::footprint) reads glibc's `mallinfo2()` (glibc 2.33 and later; on
//! other C libraries nothing is reported): `arena_bytes`, the bytes malloc obtained from the
//! system (`arena`, its heaps, plus `hblkhd`, the chunks it mapped one by one with `mmap`), and
//! `free_bytes`, the free bytes it holds in them (`fordblks` plus `fsmblks`, the fastbin chunks).
//! Both are the whole process's malloc, of which SQLite is one user among others. `mallinfo2`
//! walks glibc's arenas taking *their* locks, never one of sqlalloc's: it is meant for a reader
//! thread, not for an allocation path.

use crate::counters::Stats;
use crate::methods::{round8, Held, MemMethods, SQLITE_MAX_REQUEST};
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

    fn footprint(&self, stats: &Stats, out: &mut dyn FnMut(Held)) {
        let _ = stats;
        #[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
        {
            // SAFETY: mallinfo2 takes no argument and returns a struct by value; it only reads
            // glibc's arenas under glibc's own locks.
            let mi = unsafe { libc::mallinfo2() };
            out(Held {
                key: "arena_bytes",
                help: "glibc mallinfo2(): bytes malloc obtained from the system (arena + hblkhd, mmapped chunks included), for the whole process's malloc, not SQLite alone",
                bytes: (mi.arena as u64).saturating_add(mi.hblkhd as u64),
            });
            out(Held {
                key: "free_bytes",
                help: "glibc mallinfo2(): free bytes malloc holds (fordblks + fsmblks), for the whole process's malloc, not SQLite alone",
                bytes: (mi.fordblks as u64).saturating_add(mi.fsmblks as u64),
            });
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu", not(miri))))]
        let _ = out;
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu", not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn footprint_reads_mallinfo2() {
        let s = System;
        let p = s.malloc(1 << 20).expect("1 MiB");
        let mut got = Vec::new();
        s.footprint(&Stats::default(), &mut |h| got.push(h));
        let keys: Vec<&str> = got.iter().map(|h| h.key).collect();
        assert_eq!(keys, ["arena_bytes", "free_bytes"]);
        // The 1 MiB block is mmapped by glibc (above its mmap threshold) or in an arena: either
        // way it is in `arena_bytes`.
        assert!(got[0].bytes >= 1 << 20, "{got:?}");
        assert!(got[1].bytes < got[0].bytes, "{got:?}");
        assert!(got.iter().all(|h| h.help.contains("whole process")));
        // SAFETY: `p` is live and not used afterwards.
        unsafe { s.free(p) };
    }
}

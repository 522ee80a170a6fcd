//! `jemalloc`: SQLite's memory from jemalloc (cargo feature `jemalloc`, through
//! `tikv-jemalloc-sys`, the jemalloc that `tikv-jemallocator` also uses).
//!
//! # Algorithm
//! Every call goes to jemalloc's non-standard API, which knows sizes without a header:
//! - `xMalloc` is `mallocx(n, 0)`, `xRealloc` is `rallocx(p, n, 0)`;
//! - `xSize` is `sallocx(p, 0)`: the usable size of the block, i.e. its size class;
//! - `xRoundup` is `nallocx(n, 0)`: the size class a request of `n` bytes gets, computed without
//!   allocating. So `roundup(n) == size(malloc(n))` exactly, and SQLite knows (and uses) the slack:
//!   a 1025-byte request reports 1280 bytes, a 4368-byte page buffer 5120;
//! - `xFree` is the sized free `sdallocx(p, sallocx(p, 0), 0)`, which spares jemalloc the lookup
//!   of the size class when it frees.
//!
//! # Block layout
//! No header: the pointer SQLite gets is the pointer jemalloc returned. This is where it differs
//! from SQLite's own `mem1.c` on a system without `malloc_usable_size`, which prepends an 8-byte
//! size: there, a 1024-byte request asks the allocator for 1032 bytes, and jemalloc rounds that up
//! to its 1280-byte class (a page buffer of 4096 + header would reach the next class, too). Here a
//! 1024-byte request costs 1024 bytes.
//!
//! # Invariants
//! - jemalloc aligns every block to at least 8 bytes (its smallest class is 8 bytes, 8-aligned;
//!   every larger class is 16-aligned), which is what SQLite needs.
//! - A request of 0 bytes is served as 1 byte (`mallocx(0)` is undefined); a request above
//!   [`SQLITE_MAX_REQUEST`] fails without reaching jemalloc.
//! - A failed `rallocx` leaves the old block untouched.
//!
//! jemalloc is thread-safe (per-thread caches, per-arena locks), so this backend has no lock of
//! its own and none is imposed by sqlalloc.
//!
//! [`Jemalloc`] is also a [`GlobalAlloc`], so one program can put its Rust heap and SQLite's
//! heap on the same jemalloc: `#[global_allocator] static A: Jemalloc = Jemalloc;`. Since
//! `tikv-jemalloc-sys` prefixes its symbols on Linux, this jemalloc never replaces libc's
//! `malloc`: what goes to jemalloc is exactly what is sent there.
//!
//! # Footprint
//! [`footprint`](MemMethods::footprint) writes `epoch` (which makes jemalloc refresh the
//! statistics it caches) and reads, with `mallctl`, `allocated_bytes` (`stats.allocated`: bytes
//! in blocks the application holds), `resident_bytes` (`stats.resident`: bytes in pages jemalloc
//! has resident, metadata included) and `retained_bytes` (`stats.retained`: virtual memory
//! jemalloc keeps mapped but gave back to the system, not resident). They are the whole of this
//! jemalloc in the process, shared with every other user of it (a Rust `#[global_allocator]` of
//! `tikv-jemallocator`, say), not SQLite alone. They need jemalloc built with statistics: the
//! `jemalloc` feature turns on `tikv-jemalloc-sys/stats` (`--enable-stats`: jemalloc then keeps
//! per-arena and per-thread-cache counters, a few increments per call, and cargo turns it on for
//! every user of this jemalloc in the build); when a `mallctl` fails nonetheless, nothing is
//! reported rather than zeros. `mallctl` takes jemalloc's own locks, never one of sqlalloc's.

use crate::counters::Stats;
use crate::methods::{Held, MemMethods, SQLITE_MAX_REQUEST};
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_int, c_void};
use std::ptr::NonNull;
use tikv_jemalloc_sys as je;

/// jemalloc (SQLite's memory through `mallocx`/`sallocx`/`nallocx`/`sdallocx`); also usable as
/// the program's `#[global_allocator]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Jemalloc;

/// What jemalloc guarantees without an explicit alignment flag on x86_64 and aarch64 (for
/// requests of at least this size).
const MIN_ALIGN: usize = 16;

// SAFETY: mallocx/rallocx return blocks of at least the requested size (1 for 0), 8-aligned
// (see the module docs), distinct from every other live block; sallocx of a live block is its
// fixed size class, at least the request; nallocx(n) is the class mallocx(n) uses, so
// roundup(n) >= n and equals size(malloc(n)); a failed rallocx leaves the block alone;
// jemalloc is thread-safe.
unsafe impl MemMethods for Jemalloc {
    fn name(&self) -> &'static str {
        "jemalloc"
    }

    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        if size > SQLITE_MAX_REQUEST {
            return None;
        }
        // SAFETY: non-zero size, no flags.
        NonNull::new(unsafe { je::mallocx(size.max(1), 0) }.cast())
    }

    unsafe fn free(&self, ptr: NonNull<u8>) {
        let p: *mut c_void = ptr.as_ptr().cast();
        // SAFETY: `ptr` is a live jemalloc block (caller's contract); its usable size is a valid
        // size argument for the sized free.
        unsafe { je::sdallocx(p, je::sallocx(p, 0), 0) }
    }

    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        if new_size > SQLITE_MAX_REQUEST {
            return None;
        }
        // SAFETY: `ptr` is a live jemalloc block (caller's contract), the size is non-zero; on
        // failure jemalloc leaves the block alone.
        NonNull::new(unsafe { je::rallocx(ptr.as_ptr().cast(), new_size.max(1), 0) }.cast())
    }

    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: `ptr` is a live jemalloc block (caller's contract).
        unsafe { je::sallocx(ptr.as_ptr().cast(), 0) }
    }

    fn malloc_and_size(&self, size: usize) -> Option<(NonNull<u8>, usize)> {
        let p = self.malloc(size)?;
        // nallocx computes the size class from the request alone (no look-up of `p`); it is what
        // `sallocx(p)` reports for a block `mallocx` returned for this request without flags.
        // SAFETY: nallocx only computes a size class; a non-zero size is given.
        Some((p, unsafe { je::nallocx(size.max(1), 0) }))
    }

    unsafe fn size_and_free(&self, ptr: NonNull<u8>) -> usize {
        let p: *mut c_void = ptr.as_ptr().cast();
        // SAFETY: `ptr` is a live jemalloc block (caller's contract).
        let n = unsafe { je::sallocx(p, 0) };
        // SAFETY: `ptr` is live and `n` its usable size, a valid size for the sized free.
        unsafe { je::sdallocx(p, n, 0) };
        n
    }

    fn roundup(&self, size: usize) -> usize {
        if size > SQLITE_MAX_REQUEST {
            return size;
        }
        // SAFETY: nallocx only computes a size class; a non-zero size is required.
        let n = unsafe { je::nallocx(size.max(1), 0) };
        // nallocx answers 0 for a size it cannot serve; never report less than asked.
        n.max(size)
    }

    fn footprint(&self, stats: &Stats, out: &mut dyn FnMut(Held)) {
        let _ = stats;
        if let Some(figures) = je_stats() {
            for h in figures {
                out(h);
            }
        }
    }
}

/// Refresh jemalloc's statistics (`epoch`) and read the three figures of "Footprint", or
/// `None` when any `mallctl` fails (jemalloc built without statistics).
fn je_stats() -> Option<[Held; 3]> {
    let mut epoch: u64 = 1;
    let mut len = std::mem::size_of::<u64>();
    let epoch_ptr: *mut u64 = &mut epoch;
    // SAFETY: "epoch" is a u64 control, read and written: `oldp`/`oldlenp` point to a u64 and
    // its size, `newp` to a u64 of `newlen` bytes, all valid for the call.
    let rc = unsafe {
        je::mallctl(
            c"epoch".as_ptr(),
            epoch_ptr.cast(),
            &mut len,
            epoch_ptr.cast(),
            std::mem::size_of::<u64>(),
        )
    };
    if rc != 0 {
        return None;
    }
    let read = |name: &std::ffi::CStr| -> Option<u64> {
        let mut v: usize = 0;
        let mut len = std::mem::size_of::<usize>();
        let v_ptr: *mut usize = &mut v;
        // SAFETY: the "stats.*" controls read are `size_t`, read only: `oldp`/`oldlenp` point
        // to a usize and its size; no new value.
        let rc = unsafe {
            je::mallctl(
                name.as_ptr(),
                v_ptr.cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        (rc == 0 && len == std::mem::size_of::<usize>()).then_some(v as u64)
    };
    Some([
        Held {
            key: "allocated_bytes",
            help: "jemalloc stats.allocated: bytes in blocks allocated by the application, for the whole jemalloc of the process (shared with any other user of it, e.g. a Rust global allocator), not SQLite alone",
            bytes: read(c"stats.allocated")?,
        },
        Held {
            key: "resident_bytes",
            help: "jemalloc stats.resident: bytes in physically resident pages mapped by jemalloc (metadata included), for the whole jemalloc of the process (shared with any other user of it), not SQLite alone",
            bytes: read(c"stats.resident")?,
        },
        Held {
            key: "retained_bytes",
            help: "jemalloc stats.retained: bytes of virtual memory jemalloc keeps mapped but returned to the system (not resident), for the whole jemalloc of the process (shared with any other user of it), not SQLite alone",
            bytes: read(c"stats.retained")?,
        },
    ])
}

/// `mallocx` flags for a Rust layout: none when jemalloc's natural alignment suffices.
fn flags(layout: &Layout) -> c_int {
    if layout.align() <= MIN_ALIGN && layout.align() <= layout.size() {
        0
    } else {
        je::MALLOCX_ALIGN(layout.align())
    }
}

// SAFETY: mallocx with MALLOCX_ALIGN(align) (or natural alignment, when it is at least `align`)
// returns a block of at least `size` bytes aligned as asked, or null; dealloc passes the same
// flags and a size within [requested, usable] to sdallocx, as jemalloc requires; rallocx keeps
// the alignment flags and leaves the block alone on failure.
unsafe impl GlobalAlloc for Jemalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: GlobalAlloc callers never pass a zero-size layout.
        unsafe { je::mallocx(layout.size(), flags(&layout)) }.cast()
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { je::mallocx(layout.size(), flags(&layout) | je::MALLOCX_ZERO) }.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated here with this layout (GlobalAlloc contract), so its
        // request size and flags are the ones given.
        unsafe { je::sdallocx(ptr.cast(), layout.size(), flags(&layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the GlobalAlloc contract guarantees that `new_size` rounded up to the
        // layout's (valid, power-of-two) alignment does not overflow isize.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `ptr` is live with `layout` and `new_size` is non-zero (GlobalAlloc contract);
        // the alignment stays the block's.
        unsafe { je::rallocx(ptr.cast(), new_size, flags(&new)) }.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundup_is_what_jemalloc_hands_out() {
        let j = Jemalloc;
        for n in [
            0usize,
            1,
            8,
            9,
            100,
            1000,
            1024,
            1025,
            4096,
            4368,
            65_536,
            1 << 20,
        ] {
            let p = j.malloc(n).expect("jemalloc");
            // SAFETY: `p` is live.
            let got = unsafe { j.size(p) };
            assert_eq!(j.roundup(n), got, "request {n}");
            assert!(got >= n.max(1));
            assert_eq!(p.as_ptr().align_offset(8), 0);
            // SAFETY: `p` is live and not used afterwards.
            unsafe { j.free(p) };
        }
        assert_eq!(j.roundup(1024), 1024);
        assert_eq!(j.roundup(1025), 1280);
        assert!(j.malloc(SQLITE_MAX_REQUEST + 1).is_none());
    }

    #[test]
    fn footprint_reads_jemalloc_stats() {
        let j = Jemalloc;
        let p = j.malloc(4 << 20).expect("4 MiB");
        let mut got = Vec::new();
        j.footprint(&Stats::default(), &mut |h| got.push(h));
        let keys: Vec<&str> = got.iter().map(|h| h.key).collect();
        assert_eq!(
            keys,
            ["allocated_bytes", "resident_bytes", "retained_bytes"],
            "jemalloc built with statistics (feature tikv-jemalloc-sys/stats)"
        );
        assert!(got[0].bytes >= 4 << 20, "{got:?}");
        assert!(got[1].bytes > 0, "{got:?}");
        assert!(got.iter().all(|h| h.help.contains("whole jemalloc")));
        // SAFETY: `p` is live and not used afterwards.
        unsafe { j.free(p) };
    }
}

//! Bench only: the Rust crate [`rlsf`]'s TLSF allocator as a `sqlite3_mem_methods` table, so
//! that bench/micro.c (`--methods-lib`) can measure it beside SQLite's and sqlalloc's allocators.
//!
//! - One fixed heap of the size micro asks for (64 MiB in bench/run.py, the heap of the other
//!   fixed-heap rows), allocated in `xInit` with the process's allocator and given to one
//!   `rlsf::Tlsf` whole; freed in `xShutdown`. Like memsys5, nothing else is ever asked for.
//! - One lock around the `Tlsf` (rlsf's methods take `&mut self`; sqlalloc's backends and C
//!   memsys5 lock too): a test-and-test-and-set spin lock on an `AtomicBool`, one locked
//!   instruction to enter and a plain release store to leave, waiters spinning then yielding.
//!   C memsys5 takes a pthread mutex through SQLite's mutex table (two locked instructions per
//!   call); sqlalloc's backends a lock biased to its first thread (none while one thread
//!   allocates). micro's trace and mix run on one thread, so this lock is never contended there.
//! - Blocks aligned to 8 bytes (what SQLite needs): rlsf puts its 16-byte header right before
//!   the payload and rounds the block (header included) up to 32 bytes. `xSize` reads the size
//!   back from that header (`Tlsf::allocation_usable_size`), `xRoundup` computes the same
//!   rounding ahead of time, so `xSize(xMalloc(n)) == xRoundup(n)`.
//! - The lists: `Tlsf<u32, u64, 28, 64>`, 28 first-level classes (a block may be up to 8 GiB, so
//!   a 64 MiB heap is one free block) and 64 second-level lists per class, the finest a `u64`
//!   bitmap holds (sqlalloc's tlsf has more).
//!
//! Nothing here can panic on the paths SQLite calls (no indexing, no unwrap of a value SQLite
//! chooses); the profile is `panic = "abort"` all the same, so no unwinding can cross into C.

use std::alloc::{self, Layout};
use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};

type Tlsf = rlsf::Tlsf<'static, u32, u64, 28, 64>;

/// SQLite's alignment for every block.
const ALIGN: usize = 8;
/// rlsf's header before each payload (half its granularity).
const HEADER: usize = rlsf::GRANULARITY / 2;
/// The heap's own alignment (a page).
const HEAP_ALIGN: usize = 4096;
/// SQLITE_OK and SQLITE_NOMEM.
const SQLITE_OK: c_int = 0;
const SQLITE_NOMEM: c_int = 7;

/// `sqlite3_mem_methods` (sqlite3.h), field for field.
#[repr(C)]
pub struct MemMethods {
    x_malloc: unsafe extern "C" fn(c_int) -> *mut c_void,
    x_free: unsafe extern "C" fn(*mut c_void),
    x_realloc: unsafe extern "C" fn(*mut c_void, c_int) -> *mut c_void,
    x_size: unsafe extern "C" fn(*mut c_void) -> c_int,
    x_roundup: extern "C" fn(c_int) -> c_int,
    x_init: extern "C" fn(*mut c_void) -> c_int,
    x_shutdown: extern "C" fn(*mut c_void),
    p_app_data: *mut c_void,
}

// SAFETY: the table is never written after it is built, and `p_app_data` is null (nothing is
// reached through it), so sharing it between threads shares only function pointers.
unsafe impl Sync for MemMethods {}

static METHODS: MemMethods = MemMethods {
    x_malloc,
    x_free,
    x_realloc,
    x_size,
    x_roundup,
    x_init,
    x_shutdown,
    p_app_data: ptr::null_mut(),
};

/// The heap and the `Tlsf` that manages it.
struct Heap {
    tlsf: Tlsf,
    base: *mut u8, // the heap, null while not initialized
    len: usize,    // its size in bytes (the size the next xInit allocates while `base` is null)
}

/// `Heap` behind the spin lock.
struct Locked {
    busy: AtomicBool,
    heap: UnsafeCell<Heap>,
}

// SAFETY: `heap` is only reached through `with_heap`, which holds `busy` (acquire on entry,
// release on exit) for the whole access, so no two threads touch it at once; the pointers in it
// point into the heap, which `Locked` owns.
unsafe impl Sync for Locked {}

static STATE: Locked = Locked {
    busy: AtomicBool::new(false),
    heap: UnsafeCell::new(Heap {
        tlsf: Tlsf::new(),
        base: ptr::null_mut(),
        len: 0,
    }),
};

/// Runs `f` on the heap with the lock held.
fn with_heap<R>(f: impl FnOnce(&mut Heap) -> R) -> R {
    let mut spins = 0u32;
    while STATE
        .busy
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        while STATE.busy.load(Ordering::Relaxed) {
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
    // SAFETY: `busy` is ours until the store below, so this is the only reference to the heap
    // (see `Sync for Locked`); `f` cannot leak it (its lifetime is this call).
    let r = f(unsafe { &mut *STATE.heap.get() });
    STATE.busy.store(false, Ordering::Release);
    r
}

/// The layout rlsf is asked for: `n` bytes aligned to 8, or None for a size SQLite never asks
/// (zero or negative).
fn layout(n: c_int) -> Option<Layout> {
    let n = usize::try_from(n).ok().filter(|&n| n > 0)?;
    Layout::from_size_align(n, ALIGN).ok()
}

unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    let Some(l) = layout(n) else {
        return ptr::null_mut();
    };
    with_heap(|h| {
        if h.base.is_null() {
            return ptr::null_mut();
        }
        h.tlsf
            .allocate(l)
            .map_or(ptr::null_mut(), |p| p.as_ptr().cast())
    })
}

unsafe extern "C" fn x_free(p: *mut c_void) {
    let Some(p) = NonNull::new(p.cast::<u8>()) else {
        return;
    };
    // SAFETY: SQLite frees only blocks this table's xMalloc/xRealloc returned and not yet freed,
    // all allocated from `h.tlsf` with alignment ALIGN (the heap cannot have been shut down under
    // a live block: SQLite frees everything before xShutdown).
    with_heap(|h| unsafe { h.tlsf.deallocate(p, ALIGN) })
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    let Some(old) = NonNull::new(p.cast::<u8>()) else {
        // SAFETY: x_malloc has no precondition.
        return unsafe { x_malloc(n) };
    };
    let Some(l) = layout(n) else {
        return ptr::null_mut();
    };
    // SAFETY: `old` is a live block of `h.tlsf` allocated with alignment ALIGN, as for x_free;
    // on failure rlsf leaves it allocated and untouched, as xRealloc must.
    with_heap(|h| {
        unsafe { h.tlsf.reallocate(old, l) }.map_or(ptr::null_mut(), |q| q.as_ptr().cast())
    })
}

unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    let Some(p) = NonNull::new(p.cast::<u8>()) else {
        return 0;
    };
    // SAFETY: `p` is a live block of this heap (SQLite asks only for those). Under the lock, as
    // a neighbour's free or realloc writes the header that holds the size.
    let n = with_heap(|_| unsafe { Tlsf::allocation_usable_size(p) });
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

/// What `xSize` will say of a block of `n` bytes: header and payload rounded up to rlsf's
/// granularity, less the header.
extern "C" fn x_roundup(n: c_int) -> c_int {
    let g = rlsf::GRANULARITY as i64;
    let total = (i64::from(n.max(1)) + HEADER as i64 + g - 1) / g * g;
    c_int::try_from(total - HEADER as i64).unwrap_or(n)
}

extern "C" fn x_init(_: *mut c_void) -> c_int {
    with_heap(|h| {
        if !h.base.is_null() {
            return SQLITE_OK;
        }
        let Ok(l) = Layout::from_size_align(h.len, HEAP_ALIGN) else {
            return SQLITE_NOMEM;
        };
        // SAFETY: `l` has a non-zero size (`sqlalloc_bench_methods` refuses less than a page).
        let base = unsafe { alloc::alloc(l) };
        if base.is_null() {
            return SQLITE_NOMEM;
        }
        let block = ptr::slice_from_raw_parts_mut(base, h.len);
        h.tlsf = Tlsf::new();
        // SAFETY: `block` is ours alone (just allocated) and stays allocated until xShutdown,
        // which replaces the `Tlsf` before freeing it.
        let used = unsafe { h.tlsf.insert_free_block_ptr(NonNull::new_unchecked(block)) };
        if used.is_none() {
            // SAFETY: allocated just above with `l`, handed to no one.
            unsafe { alloc::dealloc(base, l) };
            return SQLITE_NOMEM;
        }
        h.base = base;
        SQLITE_OK
    })
}

extern "C" fn x_shutdown(_: *mut c_void) {
    with_heap(|h| {
        if h.base.is_null() {
            return;
        }
        h.tlsf = Tlsf::new();
        if let Ok(l) = Layout::from_size_align(h.len, HEAP_ALIGN) {
            // SAFETY: `base` was allocated by x_init with this same layout (`len` does not change
            // while it is set), and the `Tlsf` that pointed into it was just replaced.
            unsafe { alloc::dealloc(h.base, l) };
        }
        h.base = ptr::null_mut();
    })
}

/// The table for bench/micro.c's `--methods-lib`, over a heap of `heap_bytes` (allocated by its
/// `xInit`). Null for a heap of less than a page or above what a `Layout` can describe, or when
/// called while a heap is initialized with another size.
#[no_mangle]
pub extern "C" fn sqlalloc_bench_methods(heap_bytes: u64) -> *const MemMethods {
    let Ok(len) = usize::try_from(heap_bytes) else {
        return ptr::null();
    };
    if len < HEAP_ALIGN || Layout::from_size_align(len, HEAP_ALIGN).is_err() {
        return ptr::null();
    }
    let ok = with_heap(|h| {
        if !h.base.is_null() && h.len != len {
            return false;
        }
        h.len = len;
        true
    });
    if ok {
        &METHODS
    } else {
        ptr::null()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, as the heap is process-wide: the table's promises on a small heap.
    #[test]
    fn table() {
        assert!(sqlalloc_bench_methods(100).is_null());
        let m = sqlalloc_bench_methods(1 << 20);
        assert!(!m.is_null());
        // SAFETY: just checked non-null; it points to the static table.
        let m = unsafe { &*m };
        assert_eq!((m.x_init)(ptr::null_mut()), SQLITE_OK);
        // SAFETY: the calls below follow SQLite's rules: every block freed once, realloc of live
        // blocks only, writes within xSize.
        unsafe {
            let mut live = Vec::new();
            for n in [1, 8, 15, 16, 17, 100, 4096, 4368, 65536] {
                let p = (m.x_malloc)(n);
                assert!(!p.is_null() && (p as usize).is_multiple_of(ALIGN), "{n}");
                assert_eq!((m.x_size)(p), (m.x_roundup)(n), "{n}");
                assert!((m.x_size)(p) >= n);
                ptr::write_bytes(p.cast::<u8>(), 0xa5, (m.x_size)(p) as usize);
                live.push(p);
            }
            let q = (m.x_realloc)(live[1], 5000);
            assert!(!q.is_null());
            assert_eq!(
                *q.cast::<u8>().add(7),
                0xa5,
                "the old bytes moved with the block"
            );
            assert_eq!((m.x_size)(q), (m.x_roundup)(5000));
            live[1] = q;
            assert!((m.x_malloc)(2 << 20).is_null(), "more than the heap");
            assert!((m.x_malloc)(0).is_null());
            for p in live {
                (m.x_free)(p);
            }
            (m.x_free)(ptr::null_mut());
            // Everything back: the heap is one free block again, so nearly all of it can be had
            // at once (rlsf serves a request from a list whose every block is large enough: the
            // request rounded up to a 1/64 step).
            let big = (m.x_malloc)(1_000_000);
            assert!(!big.is_null());
            (m.x_free)(big);
        }
        assert!(
            sqlalloc_bench_methods(2 << 20).is_null(),
            "another size while initialized"
        );
        (m.x_shutdown)(ptr::null_mut());
        assert!(!sqlalloc_bench_methods(2 << 20).is_null());
        assert_eq!((m.x_init)(ptr::null_mut()), SQLITE_OK);
        (m.x_shutdown)(ptr::null_mut());
    }
}

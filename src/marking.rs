//! Marking of the fixed heaps of `memsys3`, `memsys5` and `tlsf` for valgrind's memcheck and for
//! AddressSanitizer, so that those tools see blocks carved out of a pool the way they see blocks
//! from `malloc`.
//!
//! One word for it everywhere: *marking* (this module, the backends' `MARK` const parameter —
//! marking on — and the cargo feature `no-valgrind-marking`, which turns the valgrind half off).
//! "Poison" is ASan's own name for its half, and appears only where ASan's functions are called.
//!
//! SQLite's C pools are one big buffer as far as valgrind and ASan know: a write past the end of a
//! pool block, or a read of a block after it was freed, lands in bytes that are "allocated" and
//! goes unreported. Here each pool tells the tools what its bytes are:
//!
//! - at creation the whole buffer is registered as a memcheck *memory pool* (keyed by the heap's
//!   base address) and marked no-access;
//! - a block handed out is announced as a pool chunk of its full usable size ([`MemMethods::size`]
//!   bytes, which SQLite may use; the pools do not keep the request size), which memcheck marks
//!   addressable with undefined contents;
//! - a freed block becomes no-access again;
//! - the allocator's own metadata inside the pool (free-list links inside free blocks, `memsys3`
//!   chunk headers, `tlsf` block headers) stays no-access and is made accessible only around
//!   each access, with the pool's lock held ([`with_accessible`], which the heap view's
//!   `read_meta_u32` / `write_meta_u32` in `src/heap.rs` call).
//!
//! Which call happens when, for every fixed heap: `src/backend/fixed.rs`, "Locking and marking
//! rules" (the pool is created and destroyed with the heap there).
//!
//! Marking changes only the tools' shadow memory, never a byte of the heap, and nothing walks the
//! heap to do it: marking a 400 MB heap no-access at creation backs none of its pages
//! (src/heap.rs: a heap costs what is used of it). ASan's shadow of the range is an eighth of it.
//!
//! # How it is done
//!
//! **valgrind**: client requests, the instruction sequence of `<valgrind/valgrind.h>` written as
//! inline assembly for x86_64 and aarch64 (no header, no library, nothing at build time). Outside
//! valgrind the sequence is a few register rotations that do nothing. Whether the process runs
//! under valgrind is asked once and cached, so outside valgrind each marking call costs one
//! relaxed atomic load and a branch. On other architectures, and under Miri, every call is a no-op.
//!
//! **AddressSanitizer**: with the cargo feature `asan` (build with `-Zsanitizer=address`, nightly)
//! the same calls poison and unpoison through `__asan_poison_memory_region` /
//! `__asan_unpoison_memory_region`. ASan tracks 8-byte granules and can only express "the first
//! `k` bytes of a granule are addressable", so it is exact for `memsys5` and `tlsf` (blocks,
//! headers and links are 8-aligned multiples of 8) and coarser for the 4-byte header words of
//! `memsys3`.
//!
//! [`MemMethods::size`]: crate::methods::MemMethods::size

use std::ptr::NonNull;

/// Register the heap `[base, base + len)` as a pool whose bytes are all no-access.
pub(crate) fn pool_create(base: NonNull<u8>, len: usize) {
    if !active() {
        return;
    }
    vg::request(vg::CREATE_MEMPOOL, addr(base), 0, 0);
    mark_noaccess(base, len);
}

/// Forget the pool at `base` (before its buffer is unmapped or returned to the global allocator)
/// and make the whole buffer addressable again, so that whoever gets the memory next may use it.
pub(crate) fn pool_destroy(base: NonNull<u8>, len: usize) {
    if !active() {
        return;
    }
    vg::request(vg::DESTROY_MEMPOOL, addr(base), 0, 0);
    mark_defined(base, len);
}

/// Block `p` of `n` usable bytes was just handed out from the pool at `base`: addressable,
/// contents undefined.
pub(crate) fn block_alloc(base: NonNull<u8>, p: NonNull<u8>, n: usize) {
    if !active() {
        return;
    }
    vg::request(vg::MEMPOOL_ALLOC, addr(base), addr(p), n);
    asan::unpoison(p, n);
}

/// Block `p` of `n` usable bytes of the pool at `base` was just freed: no-access.
pub(crate) fn block_free(base: NonNull<u8>, p: NonNull<u8>, n: usize) {
    if !active() {
        return;
    }
    vg::request(vg::MEMPOOL_FREE, addr(base), addr(p), 0);
    asan::poison(p, n);
}

/// Keep `[p, p + n)` addressable and defined for good (metadata that is read without a lock).
pub(crate) fn keep_accessible(p: NonNull<u8>, n: usize) {
    if active() {
        mark_defined(p, n);
    }
}

/// Run `f` with the `n` bytes of allocator metadata at `p` accessible, then make them no-access
/// again. The caller holds the pool's lock, so no other thread marks the same bytes at the same time.
#[inline(always)]
pub(crate) fn with_accessible<R>(p: NonNull<u8>, n: usize, f: impl FnOnce() -> R) -> R {
    if !active() {
        return f();
    }
    mark_defined(p, n);
    let r = f();
    mark_noaccess(p, n);
    r
}

/// Whether marking is on: built with the `asan` feature, or running under valgrind (unless built
/// with `no-valgrind-marking`, which the benchmarks use to count instructions under callgrind
/// without the client requests).
#[inline(always)]
pub fn active() -> bool {
    cfg!(feature = "asan") || (!cfg!(feature = "no-valgrind-marking") && vg::running())
}

fn mark_noaccess(p: NonNull<u8>, n: usize) {
    vg::request(vg::MAKE_MEM_NOACCESS, addr(p), n, 0);
    asan::poison(p, n);
}

fn mark_defined(p: NonNull<u8>, n: usize) {
    vg::request(vg::MAKE_MEM_DEFINED, addr(p), n, 0);
    asan::unpoison(p, n);
}

/// The address as the tools take it (exposed only as a number to them, never turned back into a
/// pointer).
#[inline]
fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr().addr()
}

/// valgrind client requests.
mod vg {
    use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

    // Request codes from <valgrind/valgrind.h> and <valgrind/memcheck.h> (valgrind 3.x; stable
    // across versions: they are part of the client ABI).
    const RUNNING_ON_VALGRIND: usize = 0x1001;
    pub(super) const CREATE_MEMPOOL: usize = 0x1303;
    pub(super) const DESTROY_MEMPOOL: usize = 0x1304;
    pub(super) const MEMPOOL_ALLOC: usize = 0x1305;
    pub(super) const MEMPOOL_FREE: usize = 0x1306;
    /// `VG_USERREQ_TOOL_BASE('M', 'C')`: memcheck's requests.
    const MC_BASE: usize = (b'M' as usize) << 24 | (b'C' as usize) << 16;
    pub(super) const MAKE_MEM_NOACCESS: usize = MC_BASE;
    pub(super) const MAKE_MEM_DEFINED: usize = MC_BASE + 2;

    /// 0: not asked yet, 1: not under valgrind, 2: under valgrind.
    static RUNNING: AtomicU8 = AtomicU8::new(0);

    /// Whether the process runs under valgrind (asked once).
    #[inline(always)]
    pub(super) fn running() -> bool {
        match RUNNING.load(Relaxed) {
            1 => false,
            2 => true,
            _ => ask(),
        }
    }

    /// The first [`running`]: ask valgrind and remember.
    #[cold]
    #[inline(never)]
    fn ask() -> bool {
        let on = client_request(0, [RUNNING_ON_VALGRIND, 0, 0, 0, 0, 0]) != 0;
        RUNNING.store(if on { 2 } else { 1 }, Relaxed);
        on
    }

    /// Send request `code` with three arguments (callers have checked [`running`] or the
    /// `asan` feature; outside valgrind it does nothing).
    #[inline]
    pub(super) fn request(code: usize, a1: usize, a2: usize, a3: usize) {
        if running() {
            client_request(0, [code, a1, a2, a3, 0, 0]);
        }
    }

    /// The client-request instruction sequence: valgrind recognizes the four rotations (by 128
    /// bits in all, so the register is unchanged) followed by the marker instruction, reads the
    /// request from `args` and puts its answer in the result register; natively the sequence
    /// leaves every register as it was and the result is `default`.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    #[inline(always)]
    fn client_request(default: usize, args: [usize; 6]) -> usize {
        let mut result = default;
        // SAFETY: the rotations of rdi add up to 128 bits, so rdi ends unchanged (declared as an
        // input that the asm preserves); `xchg rbx, rbx` changes nothing; rax points to `args`,
        // which lives across the asm; valgrind reads (never writes) those 48 bytes and writes
        // only rdx. Flags are clobbered (the default for asm!). Not `readonly`: the marking must
        // stay ordered with the loads and stores around it.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                in("rdi") 0usize,
                inout("rdx") result,
                options(nostack),
            );
        }
        result
    }

    /// As for x86_64: aarch64's sequence (rotations of x12, marker `orr x10, x10, x10`, request
    /// pointer in x4, default and result in x3).
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    #[inline(always)]
    fn client_request(default: usize, args: [usize; 6]) -> usize {
        let mut result = default;
        // SAFETY: the rotations of x12 add up to 128 bits, so x12 ends unchanged (declared as an
        // input the asm preserves); `orr x10, x10, x10` changes nothing; x4 points to `args`,
        // which lives across the asm and which valgrind only reads; only x3 is written.
        unsafe {
            std::arch::asm!(
                "ror x12, x12, #3",
                "ror x12, x12, #13",
                "ror x12, x12, #51",
                "ror x12, x12, #61",
                "orr x10, x10, x10",
                in("x4") args.as_ptr(),
                in("x12") 0usize,
                inout("x3") result,
                options(nostack),
            );
        }
        result
    }

    /// No valgrind support here (other architectures, Miri): never "running".
    #[cfg(any(not(any(target_arch = "x86_64", target_arch = "aarch64")), miri))]
    #[inline(always)]
    fn client_request(default: usize, _args: [usize; 6]) -> usize {
        default
    }
}

/// AddressSanitizer's manual poisoning (feature `asan`).
mod asan {
    use std::ptr::NonNull;

    #[cfg(feature = "asan")]
    extern "C" {
        fn __asan_poison_memory_region(addr: *const u8, size: usize);
        fn __asan_unpoison_memory_region(addr: *const u8, size: usize);
    }

    #[cfg(feature = "asan")]
    #[inline]
    pub(super) fn poison(p: NonNull<u8>, n: usize) {
        // SAFETY: ASan's runtime (linked by -Zsanitizer=address) only updates its shadow memory
        // for the range; `p .. p + n` lies inside a heap buffer the caller owns.
        unsafe { __asan_poison_memory_region(p.as_ptr(), n) }
    }

    #[cfg(feature = "asan")]
    #[inline]
    pub(super) fn unpoison(p: NonNull<u8>, n: usize) {
        // SAFETY: as in `poison`.
        unsafe { __asan_unpoison_memory_region(p.as_ptr(), n) }
    }

    #[cfg(not(feature = "asan"))]
    #[inline(always)]
    pub(super) fn poison(_p: NonNull<u8>, _n: usize) {}

    #[cfg(not(feature = "asan"))]
    #[inline(always)]
    pub(super) fn unpoison(_p: NonNull<u8>, _n: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Natively (the test suite does not run under valgrind) the client request answers its
    /// default, so marking is off without the `asan` feature, and the calls leave memory usable.
    #[test]
    fn off_outside_valgrind_and_harmless() {
        if std::env::var_os("SQLALLOC_EXPECT_VALGRIND").is_some() {
            assert!(vg::running(), "expected to run under valgrind");
        } else {
            assert_eq!(active(), cfg!(feature = "asan"));
        }
        let mut buf = [0u8; 64];
        let base = NonNull::from(&mut buf[0]);
        pool_create(base, 64);
        block_alloc(base, base, 16);
        let r = with_accessible(base, 8, || 7);
        block_free(base, base, 16);
        pool_destroy(base, 64);
        buf[63] = 1;
        assert_eq!((r, buf[63]), (7, 1));
    }
}

//! `debug`: libc's allocator wrapped in guard words, fills, a live-block set with backtraces, a
//! quarantine of freed blocks and a per-size malloc counter — SQLite's `mem2.c`
//! (`SQLITE_MEMDEBUG`), rewritten so that every misuse it can see is reported and aborts.
//!
//! # Algorithm
//! Every block is one libc `malloc` holding a header, the user bytes and a rear guard (layout
//! below). The allocator also keeps, under one [`std::sync::Mutex`]:
//! - the **live set**: a hash map from the address handed to the caller to the libc block
//!   (base pointer, length), the requested size and the allocation's serial number;
//! - the **quarantine**: the last [`QUARANTINE_BLOCKS`] freed blocks, at most
//!   [`QUARANTINE_BYTES`] of them in all (whichever bound is reached first; the newest block
//!   always stays until the next free, however large), kept allocated and filled with
//!   [`FREED_BYTE`] instead of being returned to libc at once;
//! - mem2's malloc counter: per 8-byte size class, the number of allocations, the number live
//!   and the most live at once ([`Debug::malloc_counts`], [`Debug::malloc_count`]).
//!
//! `malloc` gets `header + round8(n) + 8` bytes from libc, fills the user bytes with
//! [`FRESH_BYTE`], the pad between `n` and `round8(n)` with [`PAD_BYTE`], writes the header and
//! guards, captures the backtrace with glibc's `backtrace()`, then inserts the block in the live
//! set. `free` looks the pointer up in the live set, verifies header, guards and pad, removes the
//! block, fills all of it (header and guards too) with [`FREED_BYTE`] and puts it in the
//! quarantine; the blocks pushed out of the quarantine are verified to still hold nothing but
//! [`FREED_BYTE`] and only then returned to libc. `realloc` always moves, as mem2 does: a new
//! block, a copy of `min(old, new)` bytes (the grown part keeps its [`FRESH_BYTE`] fill), and the
//! old block goes to the quarantine like a freed one, so a stale pointer into it reads
//! [`FREED_BYTE`]s. `size` returns the requested size (as mem2 does), after the same checks as
//! `free`; `roundup` returns the request unchanged (see the differences from mem2 below).
//!
//! # Block layout
//! ```text
//!  base (from libc malloc, 16-aligned)
//!  |
//!  v  S = slots × 8 bytes           32-byte header                 user pointer (16-aligned)
//!  +------------------------------+---------+--------+-----+------+----+----+----------------+
//!  | backtrace: up to `slots`     |requested| serial | nbt |slots | FG | FG | n user bytes   |
//!  | return addresses (u64 each), |  (u64)  | (u64)  |(u32)|(u32) |u32 |u32 | (FRESH_BYTE)   |
//!  | innermost first              |         |        |     |      |    |    |                |
//!  +------------------------------+---------+--------+-----+------+----+----+----------------+
//!                                                                     ... +-------------+----+----+
//!                                                                         | pad to 8    | RG | RG |
//!                                                                         | (PAD_BYTE)  |u32 |u32 |
//!                                                                         +-------------+----+----+
//!                                                                         ^ user + n    ^ user + round8(n)
//! ```
//! `slots` is the configured backtrace depth rounded up to an even number (so that the user
//! pointer stays 16-aligned), `nbt <= slots` the frames really captured, FG = [`FOREGUARD`], RG =
//! [`REARGUARD`] (mem2's values, each written twice). Total: `S + 32 + round8(n) + 8` bytes.
//!
//! # What is detected, and when
//! | problem | where it is caught |
//! |---|---|
//! | write before the block (front guard or header modified) | `free`, `realloc`, `size`, [`Debug::check_all`] |
//! | write past the end (pad byte or rear guard modified) | `free`, `realloc`, `size`, [`Debug::check_all`] |
//! | double free; `realloc`/`size` of a freed block | while the block is in the quarantine |
//! | `free`/`realloc`/`size` of a pointer never handed out (libc's, the stack's, an interior pointer) | always (membership is checked first) |
//! | write after free | when the block leaves the quarantine, in [`Debug::check_all`], and when the allocator is dropped |
//!
//! Each is reported on stderr (the problem, the operation, the block's address, its requested
//! size and serial number, the first modified byte, and the symbolized backtraces of the
//! allocation and, for freed blocks, of the free when backtraces are kept), then the process
//! aborts with `SIGABRT`. The report is written after the mutex is released. Frame names come
//! from [`crate::report::symbolize`] (`dladdr`): functions of shared libraries (SQLite's
//! `libsqlite3.so`, libc) are named; those of an executable only when it exports them (linked
//! with `-rdynamic`), otherwise they appear as `(file+offset)` for `addr2line`.
//!
//! Limits: once a freed block has left the quarantine and libc has given its memory to someone
//! else, a second free of the old address cannot be told from misuse of the new owner's
//! pointer: it is reported as a pointer never handed out when the address is not one of ours,
//! and goes unnoticed when this allocator has reused the address for a new live block. A write
//! to freed memory is only seen if it is still in the quarantine when checked.
//! When memory for the bookkeeping itself runs out, `malloc` fails cleanly and `free` returns the
//! block to libc at once instead of quarantining it.
//!
//! # Invariants
//! - No pointer is ever dereferenced unless its address is a key of the live set or of the
//!   quarantine; the bytes are then reached through the stored libc base pointer, by offset
//!   (`Raw` is the only place where that arithmetic happens).
//! - A block is in at most one of the live set and the quarantine; a quarantined block holds
//!   [`FREED_BYTE`] in every byte unless someone wrote to freed memory.
//! - Header `requested`/`serial` equal the live-set entry's; `slots` equals the allocator's;
//!   `nbt <= slots`.
//!
//! # Differences from C mem2
//! - mem2 fills with pseudo-random bytes; this backend uses fixed, recognizable bytes
//!   ([`FRESH_BYTE`], [`FREED_BYTE`]) so that a dump shows at once what a word is.
//! - mem2 `assert`s (compiled out without `SQLITE_DEBUG`) after dereferencing whatever pointer it
//!   is given; this backend first checks membership in its live set, always reports, and aborts.
//! - mem2 frees blocks at once; the quarantine here is what lets double frees and writes after
//!   free be caught at all.
//! - mem2 links live blocks through the headers; here the live set is a hash map outside the
//!   blocks (so that a corrupted header cannot break the list or make the allocator follow a wild
//!   pointer), and the header keeps the allocation's serial number instead of links. The leak
//!   list is reported in allocation order, as mem2's list is.
//! - Guards are 8 bytes on each side (mem2: 4), so that an underrun or overrun of up to 8 bytes
//!   is reported as such, with the first modified byte, rather than as a damaged header.
//! - mem2 relies on SQLite's `STATIC_MEM` mutex (or SQLite's own serialization); this backend
//!   has its own mutex and needs no caller lock. A report is never made with it held.
//! - No title strings and no allocation types (`sqlite3MemdebugSetType` is for SQLite's own test
//!   builds); the backtrace depth is 0–64 (mem2: 0–20) and is fixed at construction.
//! - mem2 counts `realloc` as a malloc of the new size; so does this backend.
//! - mem2's `xRoundup` rounds to 8; this backend's returns `n` itself. With memstatus on (the
//!   default), SQLite passes every request through `xRoundup` before `xMalloc`/`xRealloc`
//!   (`malloc.c`), so with mem2's rounding the allocator only ever sees multiples of 8: the pad
//!   is never there to check, an overrun of a 37-byte `sqlite3_malloc` into bytes 37..39 goes
//!   unnoticed, and the leak report shows 40 bytes. Without rounding, the pad exists for every
//!   request that is not a multiple of 8 and `xSize` (= the request) still equals `xRoundup`,
//!   as the trait requires. Blocks are 16-aligned either way.
//!
//! # Footprint
//! [`footprint`](MemMethods::footprint) reports `overhead_bytes`, the bytes of the live blocks
//! beyond their requested sizes (which are what SQLite counts): backtrace slots, header, front
//! and rear guards and the pad to 8, `S + 32 + (round8(n) - n) + 8` per block (see "Block
//! layout"); and `quarantine_bytes`, the libc sizes of the freed blocks held in the quarantine.
//! Both are exact. The reader does not take the mutex: two atomics kept next to it are updated
//! only with the mutex held, by a relaxed load and a relaxed store (no locked instruction; the
//! mutex orders the updates), and read with a relaxed load. The live set's hash map and the
//! quarantine's backtraces, on the libc heap, are not counted.

use crate::counters::Stats;
use crate::methods::{round8, Held, LiveBlock, MemMethods, SQLITE_MAX_REQUEST};
use crate::report::{symbolize, FdWriter};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

/// Front guard word (mem2's value), written twice just before the user bytes.
pub const FOREGUARD: u32 = 0x80F5_E153;
/// Rear guard word (mem2's value), written twice just after the rounded-up user bytes.
pub const REARGUARD: u32 = 0xE467_6B53;
/// Fill of new user bytes (and of the grown part of a realloc).
pub const FRESH_BYTE: u8 = 0xA5;
/// Fill of the pad between the requested size and the size rounded to 8 (mem2's value).
pub const PAD_BYTE: u8 = 0x65;
/// Fill of a freed block (all of it: header, user bytes, guards) while it is in the quarantine.
pub const FREED_BYTE: u8 = 0xDD;
/// Most freed blocks held in the quarantine.
pub const QUARANTINE_BLOCKS: usize = 1024;
/// Most bytes (libc block sizes) held in the quarantine.
pub const QUARANTINE_BYTES: usize = 4 << 20;
/// Most backtrace frames kept per block.
pub const MAX_BACKTRACE: usize = 64;
/// Number of 8-byte size classes the malloc counter has (mem2's `NCSIZE`); the last one counts
/// every larger request too.
pub const NCSIZE: usize = 1000;

/// Size of the fixed part of the header.
const HDR: usize = 32;
// Offsets inside the header.
const H_REQUESTED: usize = 0;
const H_SERIAL: usize = 8;
const H_NBT: usize = 16;
const H_SLOTS: usize = 20;
const H_FG: usize = 24;
/// Size of the rear guard.
const REAR: usize = 8;

/// One block obtained from libc `malloc`: its base pointer and length. Every pointer computed into
/// a debug block is computed here, by a bounds-checked offset from `base`.
///
/// Invariant: `base` points to a live libc allocation of at least `len` bytes, owned by this
/// value (it is neither `Copy` nor `Clone`; [`Raw::release`] consumes it).
struct Raw {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Raw owns its libc allocation like a Box owns its memory; libc memory has no thread
// affinity. Access to the bytes is synchronized by the Debug allocator's mutex (or by exclusive
// ownership once a block has been taken out of the live set or the quarantine).
unsafe impl Send for Raw {}

impl Raw {
    /// A new libc block of `len` bytes (contents unspecified), or `None`.
    fn alloc(len: usize) -> Option<Raw> {
        // SAFETY: plain libc call; `len` is never 0 here (the header alone is 32 bytes).
        let base = NonNull::new(unsafe { libc::malloc(len) }.cast::<u8>())?;
        Some(Raw { base, len })
    }

    /// Pointer to byte `off`, where `off + n <= len`.
    ///
    /// # Panics
    /// When the range is outside the block (a bug in this module, never a user error: offsets
    /// come from the allocator's own layout, clamped against `len`).
    fn at(&self, off: usize, n: usize) -> NonNull<u8> {
        assert!(
            off.checked_add(n).is_some_and(|e| e <= self.len),
            "debug block offset {off}+{n} outside a block of {} bytes",
            self.len
        );
        // SAFETY: `off <= len` (checked above) and `base` points to an allocation of `len` bytes
        // (type invariant), so the result stays inside it or one past its end.
        unsafe { self.base.add(off) }
    }

    /// Address of byte `off` (for reports and as a live-set key).
    fn addr(&self, off: usize) -> usize {
        self.at(off, 0).as_ptr().addr()
    }

    // The accessors below are not folded into `src/heap.rs`'s (`HeapView`), although both read
    // and write words at offsets from a base pointer, because they promise something else:
    // - every access is bounds-checked in release builds too (through `at`): this backend exists
    //   to find programs that write where they must not, so a header it reads back may hold any
    //   value, and no offset derived from one may reach memory unchecked; a `HeapView` checks
    //   only in debug builds, so that an allocator's hot path pays for one bound it checked
    //   itself;
    // - reads and writes are unaligned, so that no layout assumption about what libc returns or
    //   about the header's offsets can turn into undefined behaviour;
    // - the bytes are a libc block owned by this value (freed by `release`), not a part of a
    //   fixed heap's `HeapBuf`, which a `HeapView` borrows, and no pool marking applies to them.

    /// # Safety
    /// No other thread writes these bytes meanwhile (the caller holds the mutex or owns the block).
    unsafe fn read_u32(&self, off: usize) -> u32 {
        // SAFETY: in bounds (`at` checks); unaligned read, so no alignment requirement; no
        // concurrent writer by the caller's contract.
        unsafe { self.at(off, 4).cast::<u32>().as_ptr().read_unaligned() }
    }

    /// # Safety
    /// As [`read_u32`](Self::read_u32).
    unsafe fn read_u64(&self, off: usize) -> u64 {
        // SAFETY: as in `read_u32`.
        unsafe { self.at(off, 8).cast::<u64>().as_ptr().read_unaligned() }
    }

    /// # Safety
    /// No other thread accesses these bytes meanwhile.
    unsafe fn write_u32(&self, off: usize, v: u32) {
        // SAFETY: in bounds (`at` checks); unaligned write; exclusive by the caller's contract.
        unsafe { self.at(off, 4).cast::<u32>().as_ptr().write_unaligned(v) }
    }

    /// # Safety
    /// As [`write_u32`](Self::write_u32).
    unsafe fn write_u64(&self, off: usize, v: u64) {
        // SAFETY: as in `write_u32`.
        unsafe { self.at(off, 8).cast::<u64>().as_ptr().write_unaligned(v) }
    }

    /// Set `n` bytes from `off` to `byte`.
    ///
    /// # Safety
    /// As [`write_u32`](Self::write_u32).
    unsafe fn fill(&self, off: usize, n: usize, byte: u8) {
        // SAFETY: in bounds (`at` checks); exclusive by the caller's contract.
        unsafe { self.at(off, n).as_ptr().write_bytes(byte, n) }
    }

    /// Offset of the first byte in `off..off + n` that differs from `expected[i % len]` (the
    /// expected bytes repeat), if any.
    ///
    /// # Safety
    /// As [`read_u32`](Self::read_u32).
    unsafe fn first_diff(&self, off: usize, n: usize, expected: &[u8]) -> Option<usize> {
        let p = self.at(off, n);
        // SAFETY: `n` bytes from `p` are inside the block (`at` checks), initialized (every byte
        // of a block is written when it is made), and not written meanwhile by the caller's
        // contract.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), n) };
        if let &[e] = expected {
            // One repeated byte (the fills of new and freed blocks): compare 8 bytes at a time
            // and look for the byte only in the first word that differs.
            let word = u64::from_ne_bytes([e; 8]);
            let mut chunks = bytes.chunks_exact(8);
            let mut at = 0;
            for c in chunks.by_ref() {
                let w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
                if w != word {
                    return c.iter().position(|&b| b != e).map(|i| off + at + i);
                }
                at += 8;
            }
            return chunks
                .remainder()
                .iter()
                .position(|&b| b != e)
                .map(|i| off + at + i);
        }
        bytes
            .iter()
            .zip(expected.iter().cycle())
            .position(|(b, e)| b != e)
            .map(|i| off + i)
    }

    /// The byte at `off`.
    ///
    /// # Safety
    /// As [`read_u32`](Self::read_u32).
    unsafe fn byte(&self, off: usize) -> u8 {
        // SAFETY: in bounds (`at` checks); no concurrent writer by the caller's contract.
        unsafe { self.at(off, 1).as_ptr().read() }
    }

    /// Give the block back to libc.
    fn release(self) {
        // SAFETY: `base` came from libc malloc and is owned by `self` (type invariant), which is
        // consumed, so it is freed exactly once.
        unsafe { libc::free(self.base.as_ptr().cast()) }
    }
}

/// Where the parts of a block lie, for a given number of backtrace slots and request.
#[derive(Clone, Copy)]
struct Layout {
    /// Offset of the header.
    hdr: usize,
    /// Offset of the user bytes.
    user: usize,
    /// Requested size.
    n: usize,
    /// Offset of the rear guard.
    rear: usize,
    /// Total libc size.
    len: usize,
}

impl Layout {
    fn new(slots: usize, n: usize) -> Layout {
        let hdr = slots * 8;
        let user = hdr + HDR;
        let rear = user + round8(n);
        Layout {
            hdr,
            user,
            n,
            rear,
            len: rear + REAR,
        }
    }
}

/// A live block, as the live set records it.
struct Live {
    raw: Raw,
    requested: usize,
    serial: u64,
}

/// A block in the quarantine.
struct Freed {
    raw: Raw,
    /// Offset of the user bytes in `raw`.
    user: usize,
    requested: usize,
    serial: u64,
    alloc_bt: Vec<usize>,
    free_bt: Vec<usize>,
}

/// One 8-byte size class of the malloc counter (mem2's `nAlloc`/`nCurrent`/`mxCurrent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeClassCount {
    /// Requests of `size - 7 ..= size` bytes (0 for 0-byte requests); the last class,
    /// `(NCSIZE - 1) * 8`, also counts every larger request.
    pub size: usize,
    /// Successful allocations (including reallocs) in this class so far.
    pub allocs: u64,
    /// Blocks of this class live now.
    pub current: u64,
    /// Most blocks of this class live at once.
    pub max_current: u64,
}

/// Everything behind the mutex.
struct State {
    /// Address handed to the caller → block.
    live: HashMap<usize, Live>,
    /// User address → freed block, for the blocks in the quarantine.
    quarantine: HashMap<usize, Freed>,
    /// Quarantined user addresses, oldest first.
    fifo: VecDeque<usize>,
    /// Sum of the libc sizes of the quarantined blocks.
    quarantine_bytes: usize,
    /// Allocations per size class (index `round8(n) / 8`, clamped to `NCSIZE - 1`).
    n_alloc: Vec<u64>,
    /// Live blocks per size class.
    n_current: Vec<u64>,
    /// Most live blocks per size class.
    mx_current: Vec<u64>,
}

/// A misuse found; turned into a report once the mutex is released.
struct Problem {
    /// What went wrong, e.g. "double free".
    what: &'static str,
    /// The operation during which it was found.
    op: &'static str,
    /// Address the caller passed (or the block's user address).
    addr: usize,
    /// Requested size and serial number, when the block is known.
    block: Option<(usize, u64)>,
    /// First modified byte: offset from the user pointer, what was found, what was expected,
    /// which part of the block it is in.
    bad: Option<(isize, u8, u8, &'static str)>,
    alloc_bt: Vec<usize>,
    free_bt: Vec<usize>,
}

/// SQLite's mem2: libc malloc with guards, fills, a live set with backtraces, a quarantine and a
/// malloc counter. See the module documentation.
pub struct Debug {
    /// Frames kept per block (0..=64).
    depth: usize,
    /// Backtrace slots reserved per block: `depth` rounded up to even.
    slots: usize,
    /// Serial number of the next allocation.
    next_serial: AtomicU64,
    state: Mutex<State>,
    /// Bytes of the live blocks beyond their requested sizes; written only with the mutex held
    /// ([`add_under_mutex`]), read by `footprint` without it.
    overhead: AtomicU64,
    /// `State::quarantine_bytes`, published the same way.
    quarantined: AtomicU64,
}

/// Add `d` (two's complement for a subtraction) to `a`, which is only ever written with the
/// allocator's mutex held: a relaxed load and store, no locked instruction.
fn add_under_mutex(a: &AtomicU64, d: u64) {
    a.store(a.load(Relaxed).wrapping_add(d), Relaxed);
}

impl Debug {
    /// A debug allocator keeping `backtrace` frames per block (clamped to 0..=64).
    pub fn new(backtrace: usize) -> Debug {
        let depth = backtrace.min(MAX_BACKTRACE);
        Debug {
            depth,
            slots: (depth + 1) & !1,
            next_serial: AtomicU64::new(1),
            state: Mutex::new(State {
                live: HashMap::new(),
                quarantine: HashMap::new(),
                fifo: VecDeque::new(),
                quarantine_bytes: 0,
                n_alloc: vec![0; NCSIZE],
                n_current: vec![0; NCSIZE],
                mx_current: vec![0; NCSIZE],
            }),
            overhead: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
        }
    }

    /// Bytes of a block of `n` requested bytes beyond those `n`: see "Footprint".
    fn overhead_of(&self, n: usize) -> u64 {
        (Layout::new(self.slots, n).len - n) as u64
    }

    /// Frames kept per block.
    pub fn backtrace_depth(&self) -> usize {
        self.depth
    }

    /// Total number of successful allocations so far, reallocs included (mem2's
    /// `sqlite3MemdebugMallocCount`).
    pub fn malloc_count(&self) -> u64 {
        self.lock().n_alloc.iter().sum()
    }

    /// The malloc counter: every size class that saw at least one allocation, smallest first.
    pub fn malloc_counts(&self) -> Vec<SizeClassCount> {
        let (a, c, m) = {
            let st = self.lock();
            (
                st.n_alloc.clone(),
                st.n_current.clone(),
                st.mx_current.clone(),
            )
        };
        (0..NCSIZE)
            .filter(|&i| a[i] != 0)
            .map(|i| SizeClassCount {
                size: i * 8,
                allocs: a[i],
                current: c[i],
                max_current: m[i],
            })
            .collect()
    }

    /// Write the malloc counter as a table (like the `COUNTS:` part of mem2's dump): size class,
    /// allocations, live now, most live at once.
    pub fn write_counts(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{:>6} {:>12} {:>12} {:>12}",
            "size", "allocs", "current", "max"
        )?;
        for c in self.malloc_counts() {
            writeln!(
                out,
                "{:>6} {:>12} {:>12} {:>12}",
                c.size, c.allocs, c.current, c.max_current
            )?;
        }
        Ok(())
    }

    /// Number of blocks and of bytes (libc sizes) in the quarantine.
    pub fn quarantined(&self) -> (usize, usize) {
        let st = self.lock();
        (st.fifo.len(), st.quarantine_bytes)
    }

    /// Verify every live block (front guard, header, pad, rear guard) and every quarantined block
    /// (still all [`FREED_BYTE`]); report and abort on the first problem.
    pub fn check_all(&self) {
        let r = {
            let st = self.lock();
            self.check_all_locked(&st)
        };
        if let Err(p) = r {
            die(&p);
        }
    }

    fn check_all_locked(&self, st: &State) -> Result<(), Box<Problem>> {
        // Allocation order, so that the first problem reported is the oldest one.
        let mut live: Vec<(&usize, &Live)> = st.live.iter().collect();
        live.sort_by_key(|(_, b)| b.serial);
        for (&addr, b) in live {
            // SAFETY: the mutex is held, so no free/realloc of ours touches the block; the block
            // is live, its bytes belong to the caller only between our guards.
            unsafe { self.verify_live(b, addr, "check_all") }?;
        }
        for addr in &st.fifo {
            if let Some(f) = st.quarantine.get(addr) {
                // SAFETY: quarantined blocks are only touched by us, under the mutex.
                unsafe { verify_freed(f, "check_all") }?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (only in tests: the library aborts on panic) leaves
        // the state consistent enough to go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `depth` return addresses of the calling stack, skipping this function and its
    /// caller (one of the public methods), so the first frame is the code that called the
    /// allocator.
    #[inline(never)]
    fn capture(&self, out: &mut [usize; MAX_BACKTRACE]) -> usize {
        if self.depth == 0 {
            return 0;
        }
        capture_frames(self.depth, 2, out)
    }

    /// Make a new block of `n` bytes with `frames` as its backtrace and add it to the live set.
    fn alloc_block(&self, n: usize, frames: &[usize]) -> Option<NonNull<u8>> {
        let lay = Layout::new(self.slots, n);
        let raw = Raw::alloc(lay.len)?;
        let serial = self.next_serial.fetch_add(1, Relaxed);
        let nbt = frames.len().min(self.slots);
        // SAFETY: the block was just allocated and is known to nobody else.
        unsafe {
            for (i, &f) in frames[..nbt].iter().enumerate() {
                raw.write_u64(i * 8, f as u64);
            }
            // Unused slots get a recognizable value rather than libc's leftovers.
            raw.fill(nbt * 8, (self.slots - nbt) * 8, 0);
            raw.write_u64(lay.hdr + H_REQUESTED, n as u64);
            raw.write_u64(lay.hdr + H_SERIAL, serial);
            raw.write_u32(lay.hdr + H_NBT, nbt as u32);
            raw.write_u32(lay.hdr + H_SLOTS, self.slots as u32);
            raw.write_u32(lay.hdr + H_FG, FOREGUARD);
            raw.write_u32(lay.hdr + H_FG + 4, FOREGUARD);
            raw.fill(lay.user, n, FRESH_BYTE);
            raw.fill(lay.user + n, lay.rear - lay.user - n, PAD_BYTE);
            raw.write_u32(lay.rear, REARGUARD);
            raw.write_u32(lay.rear + 4, REARGUARD);
        }
        let user = raw.at(lay.user, 0);
        let addr = user.as_ptr().addr();
        let mut st = self.lock();
        if st.live.try_reserve(1).is_err() {
            drop(st);
            raw.release();
            return None;
        }
        st.live.insert(
            addr,
            Live {
                raw,
                requested: n,
                serial,
            },
        );
        add_under_mutex(&self.overhead, self.overhead_of(n));
        let i = class(n);
        st.n_alloc[i] += 1;
        st.n_current[i] += 1;
        if st.n_current[i] > st.mx_current[i] {
            st.mx_current[i] = st.n_current[i];
        }
        Some(user)
    }

    /// Check a live block's header, guards and pad.
    ///
    /// # Safety
    /// `b` is in the live set and the mutex is held (or the block was just removed from the live
    /// set by the caller, who therefore owns it).
    unsafe fn verify_live(
        &self,
        b: &Live,
        addr: usize,
        op: &'static str,
    ) -> Result<(), Box<Problem>> {
        let lay = Layout::new(self.slots, b.requested);
        let raw = &b.raw;
        let problem = |what, bad| {
            Box::new(Problem {
                what,
                op,
                addr,
                block: Some((b.requested, b.serial)),
                bad,
                // SAFETY: forwarded contract.
                alloc_bt: unsafe { self.frames_of(raw, lay.hdr) },
                free_bt: Vec::new(),
            })
        };
        let at = |off: usize, expected: u8, part| {
            // SAFETY: forwarded contract; `off` is inside the block.
            let found = unsafe { raw.byte(off) };
            Some((off as isize - lay.user as isize, found, expected, part))
        };
        // The front guard first: it is what a small underrun hits.
        let fg = FOREGUARD.to_le_bytes();
        // SAFETY: forwarded contract.
        if let Some(off) = unsafe { raw.first_diff(lay.hdr + H_FG, 8, &fg) } {
            let e = fg[(off - lay.hdr - H_FG) % 4];
            return Err(problem(
                "front guard corrupted (memory written before the start of the block)",
                at(off, e, "front guard"),
            ));
        }
        // SAFETY: forwarded contract.
        let (req, serial, nbt, slots) = unsafe {
            (
                raw.read_u64(lay.hdr + H_REQUESTED),
                raw.read_u64(lay.hdr + H_SERIAL),
                raw.read_u32(lay.hdr + H_NBT),
                raw.read_u32(lay.hdr + H_SLOTS),
            )
        };
        if req != b.requested as u64
            || serial != b.serial
            || slots as usize != self.slots
            || nbt as usize > self.slots
        {
            return Err(problem(
                "block header corrupted (memory written before the start of the block)",
                None,
            ));
        }
        // SAFETY: forwarded contract.
        if let Some(off) =
            unsafe { raw.first_diff(lay.user + lay.n, lay.rear - lay.user - lay.n, &[PAD_BYTE]) }
        {
            return Err(problem(
                "rear guard corrupted (memory written past the end of the block)",
                at(off, PAD_BYTE, "pad after the requested size"),
            ));
        }
        let rg = REARGUARD.to_le_bytes();
        // SAFETY: forwarded contract.
        if let Some(off) = unsafe { raw.first_diff(lay.rear, REAR, &rg) } {
            return Err(problem(
                "rear guard corrupted (memory written past the end of the block)",
                at(off, rg[(off - lay.rear) % 4], "rear guard"),
            ));
        }
        Ok(())
    }

    /// The backtrace stored in a block's header (the count clamped to the slots, in case the
    /// header is damaged).
    ///
    /// # Safety
    /// As [`verify_live`](Self::verify_live).
    unsafe fn frames_of(&self, raw: &Raw, hdr: usize) -> Vec<usize> {
        // SAFETY: forwarded contract.
        let nbt = (unsafe { raw.read_u32(hdr + H_NBT) } as usize).min(self.slots);
        // SAFETY: forwarded contract; slot `i < slots` lies before the header.
        (0..nbt)
            .map(|i| unsafe { raw.read_u64(i * 8) } as usize)
            .collect()
    }

    /// What to report about `addr`, which is not in the live set.
    fn not_live(st: &State, addr: usize, op: &'static str) -> Box<Problem> {
        Box::new(match st.quarantine.get(&addr) {
            Some(f) => Problem {
                what: match op {
                    "free" => "double free",
                    "realloc" => "realloc of a freed block (use after free)",
                    _ => "size asked of a freed block (double free or use after free)",
                },
                op,
                addr,
                block: Some((f.requested, f.serial)),
                bad: None,
                alloc_bt: f.alloc_bt.clone(),
                free_bt: f.free_bt.clone(),
            },
            None => Problem {
                what: match op {
                    "free" => "free of a pointer this allocator never handed out (or freed long ago)",
                    "realloc" => {
                        "realloc of a pointer this allocator never handed out (or freed long ago)"
                    }
                    _ => {
                        "size asked of a pointer this allocator never handed out (or freed long ago)"
                    }
                },
                op,
                addr,
                block: None,
                bad: None,
                alloc_bt: Vec::new(),
                free_bt: Vec::new(),
            },
        })
    }

    /// Look `ptr` up and verify it; its requested size.
    fn checked_size(&self, ptr: NonNull<u8>, op: &'static str) -> usize {
        let addr = ptr.as_ptr().addr();
        let r = {
            let st = self.lock();
            match st.live.get(&addr) {
                // SAFETY: the block is live and the mutex is held.
                Some(b) => unsafe { self.verify_live(b, addr, op) }.map(|()| b.requested),
                None => Err(Self::not_live(&st, addr, op)),
            }
        };
        r.unwrap_or_else(|p| die(&p))
    }

    /// Free the block at `ptr` into the quarantine; report and abort on any misuse.
    fn free_block(&self, ptr: NonNull<u8>, op: &'static str, free_bt: Vec<usize>) {
        let addr = ptr.as_ptr().addr();
        let r = {
            let mut st = self.lock();
            self.free_locked(&mut st, addr, op, free_bt)
        };
        match r {
            Ok(evicted) => {
                // Taken out of the quarantine under the mutex: owned here, nobody else sees them.
                for f in evicted {
                    // SAFETY: `f` is owned here (removed from the quarantine).
                    if let Err(p) = unsafe { verify_freed(&f, "free (leaving the quarantine)") } {
                        die(&p);
                    }
                    f.raw.release();
                }
            }
            Err(p) => die(&p),
        }
    }

    fn free_locked(
        &self,
        st: &mut State,
        addr: usize,
        op: &'static str,
        free_bt: Vec<usize>,
    ) -> Result<Vec<Freed>, Box<Problem>> {
        let Some(b) = st.live.get(&addr) else {
            return Err(Self::not_live(st, addr, op));
        };
        // SAFETY: the block is live and the mutex is held.
        unsafe { self.verify_live(b, addr, op) }?;
        // Make room first, so that nothing can fail once the block has left the live set.
        if st.quarantine.try_reserve(1).is_err() || st.fifo.try_reserve(1).is_err() {
            // Out of memory for the bookkeeping: skip the quarantine, free at once.
            let b = st.live.remove(&addr).expect("looked up above");
            uncount(st, b.requested);
            add_under_mutex(&self.overhead, self.overhead_of(b.requested).wrapping_neg());
            b.raw.release();
            return Ok(Vec::new());
        }
        let b = st.live.remove(&addr).expect("looked up above");
        uncount(st, b.requested);
        add_under_mutex(&self.overhead, self.overhead_of(b.requested).wrapping_neg());
        let lay = Layout::new(self.slots, b.requested);
        // SAFETY: removed from the live set under the mutex: this thread owns it now.
        let alloc_bt = unsafe { self.frames_of(&b.raw, lay.hdr) };
        // SAFETY: as above.
        unsafe { b.raw.fill(0, b.raw.len, FREED_BYTE) };
        st.quarantine_bytes += b.raw.len;
        st.fifo.push_back(addr);
        st.quarantine.insert(
            addr,
            Freed {
                raw: b.raw,
                user: lay.user,
                requested: b.requested,
                serial: b.serial,
                alloc_bt,
                free_bt,
            },
        );
        let mut evicted = Vec::new();
        while st.fifo.len() > 1
            && (st.fifo.len() > QUARANTINE_BLOCKS || st.quarantine_bytes > QUARANTINE_BYTES)
        {
            let old = st.fifo.pop_front().expect("len > 1");
            if let Some(f) = st.quarantine.remove(&old) {
                st.quarantine_bytes -= f.raw.len;
                evicted.push(f);
            }
        }
        // With the mutex held: the only writer.
        self.quarantined.store(st.quarantine_bytes as u64, Relaxed);
        Ok(evicted)
    }
}

/// Size-class index of a request of `n` bytes (mem2's `adjustStats`).
fn class(n: usize) -> usize {
    (round8(n) / 8).min(NCSIZE - 1)
}

fn uncount(st: &mut State, n: usize) {
    let i = class(n);
    st.n_current[i] = st.n_current[i].saturating_sub(1);
}

/// Check that a quarantined block still holds only [`FREED_BYTE`].
///
/// # Safety
/// `f` is in the quarantine and the mutex is held, or `f` was taken out of it by the caller.
unsafe fn verify_freed(f: &Freed, op: &'static str) -> Result<(), Box<Problem>> {
    // SAFETY: forwarded contract.
    match unsafe { f.raw.first_diff(0, f.raw.len, &[FREED_BYTE]) } {
        None => Ok(()),
        Some(off) => Err(Box::new(Problem {
            what: "write after free (a freed block was modified while in the quarantine)",
            op,
            addr: f.raw.addr(f.user),
            block: Some((f.requested, f.serial)),
            // SAFETY: forwarded contract; `off` is inside the block.
            bad: Some((
                off as isize - f.user as isize,
                unsafe { f.raw.byte(off) },
                FREED_BYTE,
                "freed block",
            )),
            alloc_bt: f.alloc_bt.clone(),
            free_bt: f.free_bt.clone(),
        })),
    }
}

/// Up to `depth` return addresses of the calling stack, innermost first, skipping this function
/// and `skip` more frames.
#[inline(never)]
fn capture_frames(depth: usize, skip: usize, out: &mut [usize; MAX_BACKTRACE]) -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const CAP: usize = MAX_BACKTRACE + 4;
        let mut buf = [std::ptr::null_mut::<libc::c_void>(); CAP];
        let want = (depth + skip + 1).min(CAP);
        // SAFETY: `buf` has room for `want` pointers; backtrace writes at most that many.
        let got = unsafe { libc::backtrace(buf.as_mut_ptr(), want as libc::c_int) };
        let got = usize::try_from(got).unwrap_or(0).min(want);
        let first = (skip + 1).min(got);
        let n = (got - first).min(depth).min(MAX_BACKTRACE);
        for (o, p) in out.iter_mut().zip(&buf[first..first + n]) {
            *o = p.addr();
        }
        n
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (depth, skip, out);
        0
    }
}

/// Write the report for `p` to stderr and abort. Called with the mutex released.
fn die(p: &Problem) -> ! {
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(s, "sqlalloc debug allocator: {}", p.what);
    match p.block {
        Some((req, serial)) => {
            let _ = writeln!(
                s,
                "  in {} of block {:#x} (requested {} bytes, allocation #{})",
                p.op, p.addr, req, serial
            );
        }
        None => {
            let _ = writeln!(
                s,
                "  in {} of pointer {:#x} (not a block of this allocator; size unknown)",
                p.op, p.addr
            );
        }
    }
    if let Some((off, found, expected, part)) = p.bad {
        let _ = writeln!(
            s,
            "  first modified byte: offset {off} from the block start ({part}): found {found:#04x}, expected {expected:#04x}"
        );
    }
    for (title, bt) in [("allocated at", &p.alloc_bt), ("freed at", &p.free_bt)] {
        if bt.is_empty() {
            continue;
        }
        let _ = writeln!(s, "  {title}:");
        for (i, pc) in bt.iter().enumerate() {
            let _ = writeln!(s, "    #{i} {pc:#x} {}", symbolize(*pc));
        }
    }
    let _ = writeln!(s, "  aborting.");
    let _ = FdWriter(2).write_all(s.as_bytes());
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

// SAFETY: blocks come from libc malloc (16-aligned) with a header that is a multiple of 16 bytes,
// so user pointers are 16-aligned; each user region lies in its own libc block, so blocks never
// overlap; `size` returns the requested size, which is exactly the usable size promised and never
// changes while the block lives; `roundup(n)` is `n`, the size `size` reports for such a block; a
// failed realloc returns before touching the old block; all state is behind a mutex.
unsafe impl MemMethods for Debug {
    fn name(&self) -> &'static str {
        "debug"
    }

    #[inline(never)]
    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        if size > SQLITE_MAX_REQUEST {
            return None;
        }
        let mut frames = [0usize; MAX_BACKTRACE];
        let nbt = self.capture(&mut frames);
        self.alloc_block(size, &frames[..nbt])
    }

    #[inline(never)]
    unsafe fn free(&self, ptr: NonNull<u8>) {
        let mut frames = [0usize; MAX_BACKTRACE];
        let nbt = self.capture(&mut frames);
        self.free_block(ptr, "free", frames[..nbt].to_vec());
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        let old = self.checked_size(ptr, "realloc");
        if new_size > SQLITE_MAX_REQUEST {
            return None;
        }
        let mut frames = [0usize; MAX_BACKTRACE];
        let nbt = self.capture(&mut frames);
        let new = self.alloc_block(new_size, &frames[..nbt])?;
        // SAFETY: `ptr` is a live block of `old` readable bytes (checked above; the caller owns
        // it), `new` a fresh block of `new_size` writable bytes; distinct libc blocks never
        // overlap.
        unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old.min(new_size)) };
        self.free_block(ptr, "realloc", frames[..nbt].to_vec());
        Some(new)
    }

    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        self.checked_size(ptr, "size")
    }

    /// The request itself: see "Differences from C mem2" in the module documentation.
    fn roundup(&self, size: usize) -> usize {
        size
    }

    /// Exact: whether `ptr` is in the live set (the pointer is not dereferenced).
    fn owns(&self, ptr: NonNull<u8>) -> Option<bool> {
        Some(self.lock().live.contains_key(&ptr.as_ptr().addr()))
    }

    fn live_blocks(&self, out: &mut dyn FnMut(LiveBlock<'_>)) {
        // Copy under the mutex, report without it (the callback may allocate, print, …).
        let mut blocks: Vec<(u64, usize, usize, Vec<usize>)> = {
            let st = self.lock();
            st.live
                .iter()
                .map(|(&addr, b)| {
                    let hdr = Layout::new(self.slots, b.requested).hdr;
                    // SAFETY: the block is live and the mutex is held.
                    let bt = unsafe { self.frames_of(&b.raw, hdr) };
                    (b.serial, addr, b.requested, bt)
                })
                .collect()
        };
        blocks.sort_by_key(|b| b.0);
        for (_, addr, requested, bt) in &blocks {
            out(LiveBlock {
                addr: *addr,
                requested: *requested,
                backtrace: bt,
            });
        }
    }

    /// Read without the mutex: see "Footprint" in the module documentation.
    fn footprint(&self, stats: &Stats, out: &mut dyn FnMut(Held)) {
        let _ = stats;
        out(Held {
            key: "overhead_bytes",
            help: "sqlalloc debug backend: bytes of the live blocks beyond their requested sizes (backtrace slots, header, guards, pad to 8)",
            bytes: self.overhead.load(Relaxed),
        });
        out(Held {
            key: "quarantine_bytes",
            help: "sqlalloc debug backend: bytes of freed blocks held in the quarantine (not yet returned to libc)",
            bytes: self.quarantined.load(Relaxed),
        });
    }
}

impl Drop for Debug {
    /// Quarantined blocks are verified and returned to libc. Live blocks are left alone: whoever
    /// holds them may still use them.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        st.fifo.clear();
        st.quarantine_bytes = 0;
        let mut q: Vec<Freed> = st.quarantine.drain().map(|(_, f)| f).collect();
        q.sort_by_key(|f| f.serial);
        for f in q {
            // SAFETY: taken out of the quarantine; `&mut self` means no other user.
            if let Err(p) = unsafe { verify_freed(&f, "drop of the allocator") } {
                die(&p);
            }
            f.raw.release();
        }
        // Dropping a `Raw` does not free its block: live blocks stay valid.
        st.live.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::Stack;

    fn bytes(p: NonNull<u8>, n: usize) -> Vec<u8> {
        // SAFETY: test helper, called on blocks of at least `n` bytes that this test owns (live,
        // or quarantined and therefore still allocated).
        unsafe { std::slice::from_raw_parts(p.as_ptr(), n) }.to_vec()
    }

    #[test]
    fn fresh_fill_guards_and_sizes() {
        let d = Debug::new(0);
        for n in [0usize, 1, 7, 8, 13, 16, 100, 4096] {
            let p = d.malloc(n).unwrap();
            assert_eq!(p.as_ptr().addr() % 16, 0, "alignment of a {n}-byte block");
            assert!(bytes(p, n).iter().all(|&b| b == FRESH_BYTE));
            // SAFETY: `p` is live.
            assert_eq!(unsafe { d.size(p) }, n);
            assert_eq!(
                d.roundup(n),
                n,
                "no rounding: SQLite's requests keep their pad"
            );
            // The pad and rear guard, seen through the user pointer (same libc block).
            let all = bytes(p, round8(n) + 8);
            assert!(all[n..round8(n)].iter().all(|&b| b == PAD_BYTE));
            assert_eq!(&all[round8(n)..round8(n) + 4], &REARGUARD.to_le_bytes());
            d.check_all();
            // SAFETY: `p` is live, not used again.
            unsafe { d.free(p) };
        }
        assert!(d.malloc(SQLITE_MAX_REQUEST + 1).is_none());
        d.check_all();
    }

    #[test]
    fn footprint_counts_headers_guards_pads_and_the_quarantine() {
        let figures = |d: &Debug| {
            let mut v = Vec::new();
            d.footprint(&Stats::default(), &mut |h| v.push((h.key, h.bytes)));
            v
        };
        for depth in [0usize, 3, 8] {
            let d = Debug::new(depth);
            let slots = (depth + 1) & !1;
            // Backtrace slots, 32-byte header, 8-byte rear guard.
            let per_block = (slots * 8 + 32 + 8) as u64;
            assert_eq!(
                figures(&d),
                [("overhead_bytes", 0), ("quarantine_bytes", 0)]
            );
            // Multiples of 8: no pad.
            let blocks: Vec<_> = [8usize, 64, 4096]
                .iter()
                .map(|&n| d.malloc(n).unwrap())
                .collect();
            assert_eq!(figures(&d)[0].1, 3 * per_block, "depth {depth}");
            // 13 bytes: 3 bytes of pad.
            let odd = d.malloc(13).unwrap();
            assert_eq!(figures(&d)[0].1, 4 * per_block + 3);
            // A realloc moves the block: the old one goes to the quarantine.
            // SAFETY: `odd` is live; replaced by `q`.
            let q = unsafe { d.realloc(odd, 100) }.unwrap();
            assert_eq!(figures(&d)[0].1, 4 * per_block + 4, "100 bytes: pad 4");
            let lens = |n: usize| (slots * 8 + 32 + round8(n) + 8) as u64;
            assert_eq!(figures(&d)[1], ("quarantine_bytes", lens(13)));
            // SAFETY: live blocks of `d`, freed once.
            unsafe {
                d.free(q);
                for p in blocks {
                    d.free(p);
                }
            }
            assert_eq!(figures(&d)[0].1, 0);
            let q_bytes = lens(13) + lens(100) + lens(8) + lens(64) + lens(4096);
            assert_eq!(figures(&d)[1].1, q_bytes);
            assert_eq!(d.quarantined(), (5, q_bytes as usize));
        }
    }

    #[test]
    fn freed_fill_and_quarantine() {
        let d = Debug::new(0);
        let p = d.malloc(40).unwrap();
        // SAFETY: live block of 40 bytes.
        unsafe { p.as_ptr().write_bytes(7, 40) };
        // SAFETY: live, not used again except to look at the quarantined bytes below.
        unsafe { d.free(p) };
        // The block is in the quarantine: still allocated, filled with FREED_BYTE.
        assert!(bytes(p, 40).iter().all(|&b| b == FREED_BYTE));
        assert_eq!(d.quarantined().0, 1);
        d.check_all();
        // Push it (and more) out: the quarantine stays within its bounds.
        for _ in 0..QUARANTINE_BLOCKS + 10 {
            let q = d.malloc(24).unwrap();
            // SAFETY: live.
            unsafe { d.free(q) };
        }
        let (n, b) = d.quarantined();
        assert_eq!(n, QUARANTINE_BLOCKS);
        assert!(b <= QUARANTINE_BYTES);
        // Large blocks: the byte bound applies first.
        for _ in 0..4 {
            let q = d.malloc(1 << 20).unwrap();
            // SAFETY: live.
            unsafe { d.free(q) };
        }
        let (n, b) = d.quarantined();
        assert!(b <= QUARANTINE_BYTES, "{b} bytes quarantined");
        assert!(n < QUARANTINE_BLOCKS);
        // One block larger than the bound is kept until the next free.
        let q = d.malloc(QUARANTINE_BYTES).unwrap();
        // SAFETY: live.
        unsafe { d.free(q) };
        assert_eq!(d.quarantined().0, 1);
        d.check_all();
    }

    #[test]
    fn realloc_moves_and_keeps_contents() {
        let d = Debug::new(0);
        let p = d.malloc(10).unwrap();
        // SAFETY: live block of 10 bytes.
        unsafe { std::ptr::copy_nonoverlapping(b"0123456789".as_ptr(), p.as_ptr(), 10) };
        // SAFETY: live; `p` replaced by `q`.
        let q = unsafe { d.realloc(p, 30) }.unwrap();
        assert_ne!(p, q);
        let got = bytes(q, 30);
        assert_eq!(&got[..10], b"0123456789");
        assert!(
            got[10..].iter().all(|&b| b == FRESH_BYTE),
            "grown part filled"
        );
        // SAFETY: live.
        assert_eq!(unsafe { d.size(q) }, 30);
        // The old block is quarantined and filled.
        assert!(bytes(p, 10).iter().all(|&b| b == FREED_BYTE));
        // Shrink.
        // SAFETY: live; `q` replaced by `r`.
        let r = unsafe { d.realloc(q, 4) }.unwrap();
        assert_eq!(bytes(r, 4), b"0123");
        // SAFETY: live.
        assert_eq!(unsafe { d.size(r) }, 4);
        // A failed realloc leaves the block alone.
        // SAFETY: live.
        assert!(unsafe { d.realloc(r, SQLITE_MAX_REQUEST + 1) }.is_none());
        assert_eq!(bytes(r, 4), b"0123");
        d.check_all();
        // SAFETY: live.
        unsafe { d.free(r) };
        assert_eq!(
            d.malloc_count(),
            3,
            "realloc counts as a malloc, as in mem2"
        );
    }

    #[test]
    fn malloc_counter() {
        let d = Debug::new(0);
        let a = d.malloc(1).unwrap();
        let b = d.malloc(8).unwrap();
        let c = d.malloc(9).unwrap();
        let big = d.malloc(NCSIZE * 8 + 100).unwrap();
        assert_eq!(d.malloc_count(), 4);
        let counts = d.malloc_counts();
        assert_eq!(
            counts,
            vec![
                SizeClassCount {
                    size: 8,
                    allocs: 2,
                    current: 2,
                    max_current: 2
                },
                SizeClassCount {
                    size: 16,
                    allocs: 1,
                    current: 1,
                    max_current: 1
                },
                SizeClassCount {
                    size: (NCSIZE - 1) * 8,
                    allocs: 1,
                    current: 1,
                    max_current: 1
                },
            ]
        );
        // SAFETY: all live, not used again.
        unsafe {
            d.free(a);
            d.free(b);
            d.free(c);
            d.free(big);
        }
        let counts = d.malloc_counts();
        assert_eq!(counts[0].current, 0);
        assert_eq!(counts[0].max_current, 2);
        assert_eq!(d.malloc_count(), 4);
        let mut out = Vec::new();
        d.write_counts(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("     8            2            0            2"),
            "{text}"
        );
    }

    #[test]
    fn live_list_and_backtraces() {
        let d = Debug::new(8);
        assert_eq!(d.backtrace_depth(), 8);
        let a = d.malloc(100).unwrap();
        let b = d.malloc(3).unwrap();
        let mut seen = Vec::new();
        d.live_blocks(&mut |blk| seen.push((blk.addr, blk.requested, blk.backtrace.len())));
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].0, seen[0].1), (a.as_ptr().addr(), 100));
        assert_eq!((seen[1].0, seen[1].1), (b.as_ptr().addr(), 3));
        assert!(seen.iter().all(|s| s.2 > 0 && s.2 <= 8), "{seen:?}");
        // SAFETY: live, not used again.
        unsafe { d.free(a) };
        let mut n = 0;
        d.live_blocks(&mut |blk| {
            n += 1;
            assert_eq!(blk.requested, 3);
        });
        assert_eq!(n, 1);
        // SAFETY: live.
        unsafe { d.free(b) };

        let nobt = Debug::new(0);
        let c = nobt.malloc(5).unwrap();
        nobt.live_blocks(&mut |blk| assert!(blk.backtrace.is_empty()));
        // SAFETY: live.
        unsafe { nobt.free(c) };
        assert_eq!(Debug::new(1000).backtrace_depth(), MAX_BACKTRACE);
    }

    #[test]
    fn leak_report_through_a_stack() {
        let s = Stack::new(Box::new(Debug::new(4)), None, "debug:backtrace=4".into());
        let a = s.malloc(123).unwrap();
        let b = s.malloc(77).unwrap();
        // SAFETY: live, not used again.
        unsafe { s.free(b) };
        let mut out = Vec::new();
        let n = crate::report::write_leaks(&s, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(n, 1, "{text}");
        assert!(
            text.contains(&format!("leak: 123 bytes at {:#x}", a.as_ptr().addr())),
            "{text}"
        );
        assert!(!text.contains("77 bytes"), "{text}");
        assert!(text.contains("    #0 0x"), "{text}");
        // SAFETY: live.
        unsafe { s.free(a) };
        let mut out = Vec::new();
        assert_eq!(crate::report::write_leaks(&s, &mut out).unwrap(), 0);
    }

    #[test]
    fn threads() {
        let d = std::sync::Arc::new(Debug::new(2));
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let d = d.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..2000usize {
                        let n = (i * 7 + t) % 300;
                        let p = d.malloc(n).unwrap();
                        // SAFETY: live block of `n` bytes.
                        unsafe { p.as_ptr().write_bytes(t as u8, n) };
                        held.push((p, n));
                        if i % 3 == 0 {
                            let (p, n) = held.swap_remove(i % held.len());
                            // SAFETY: live; replaced by the result.
                            let q = unsafe { d.realloc(p, n + 16) }.unwrap();
                            assert!(bytes(q, n).iter().all(|&b| b == t as u8));
                            // SAFETY: live block of `n + 16` bytes.
                            unsafe { q.as_ptr().write_bytes(t as u8, n + 16) };
                            held.push((q, n + 16));
                        }
                        if held.len() > 50 {
                            let (p, _) = held.swap_remove(0);
                            // SAFETY: live.
                            unsafe { d.free(p) };
                        }
                    }
                    for (p, _) in held {
                        // SAFETY: live.
                        unsafe { d.free(p) };
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        d.check_all();
        let mut n = 0;
        d.live_blocks(&mut |_| n += 1);
        assert_eq!(n, 0);
        assert!(d.malloc_counts().iter().all(|c| c.current == 0));
    }
}

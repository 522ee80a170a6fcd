//! `memsys5`: a binary buddy allocator over one fixed heap (SQLite's `mem5.c`).
//!
//! # When to use it
//!
//! When SQLite must live inside a fixed amount of memory that is taken once, up front, and must
//! never fail for reasons other than a provable bound being exceeded: every block is carved out of
//! one buffer given at construction, and nothing else is ever asked of the system.
//!
//! # Algorithm
//!
//! The heap is cut into `nblock` *atoms* of `atom` bytes. A block is a run of `2^k` atoms
//! (`0 <= k <= LOGMAX`, `LOGMAX = 30`) that starts at an atom index divisible by `2^k`; `k` is the
//! block's *size class*.
//!
//! - A request of `n` bytes is served by a block of the smallest class `k` with
//!   `atom << k >= n` (0 bytes counts as 1). The allocator takes the first block on the free
//!   list of class `k`; when that list is empty it takes the first block of the next non-empty
//!   larger class and halves it repeatedly, putting each upper half on the free list of its class,
//!   until a block of class `k` is left.
//! - Freeing a block of class `k` at atom `i` looks at its *buddy*, the other half of the
//!   class-`k + 1` block that contains it (atom `i - 2^k` when bit `k` of `i` is set, else
//!   `i + 2^k`). If the buddy is a free block of class `k`, it is taken off its free list and the
//!   two are joined; the test repeats on the joined block until the buddy is in use, split, or
//!   outside the heap. The result goes on the free list of its class.
//! - Each free list is doubly linked by atom index, so taking any block off a list is O(1):
//!   malloc and free cost O(`LOGMAX`), never a scan of a list. A bit mask of the non-empty
//!   lists finds the list a request is served from in one instruction. Taking the head off a
//!   list leaves the new head's `prev` link as it was (a head's `prev` is never read), so a
//!   malloc served by a list's head writes no heap line but the block it returns.
//! - `size` is the block's size (`atom << k`) and `roundup(n)` the size of the block a request
//!   of `n` bytes gets: `n` rounded up to a power of two, at least one atom.
//! - `realloc` keeps the block when the new size fits in it (shrinking never splits a block);
//!   otherwise it allocates a new block, copies the whole old block into it and frees the old
//!   one. When the new block cannot be had, the old one is left as it was.
//!
//! Initially the heap holds the largest blocks that fit, placed from atom 0 upwards in
//! decreasing size: one block for each bit set in `nblock` (for `nblock = 13`: 8 atoms at 0,
//! 4 at 8, 1 at 12). These top-level blocks have no buddy and are never joined to one another.
//!
//! # Robson's bound
//!
//! Memory lost to rounding up to powers of two is plain to see (at most half of each block).
//! Fragmentation, the other way to run out, is bounded. J. M. Robson ("Bounds for Some
//! Functions Concerning Dynamic Storage Allocation", Journal of the ACM 21, July 1974,
//! pp. 491–499) showed for this kind of
//! allocator: measure everything in atoms, let `M` be the most memory ever live at one time
//! (blocks counted at their rounded sizes) and `n` the largest block ever requested; if the
//! heap holds at least `N = M * (1 + log2(n) / 2) - n + 1` atoms, no request of at most `n`
//! atoms fails, whatever the order of mallocs and frees. For instance with 64-byte atoms and
//! requests up to 64 KiB (`n = 1024`), a heap 6 times the peak live memory is always enough.
//! The counters over the backend (`peak_bytes`, the request-size histogram) give `M` and `n`.
//!
//! # Shards (`memsys5:shards=N`)
//!
//! One lock serializes every call, so two threads allocating at once wait on each other (C
//! memsys5 with memstatus off runs 2 threads at a fraction of 1 thread's throughput). With
//! `shards=N` the atoms are cut into `N` *shards* (the spec's word; the counters' per-thread
//! *slots* are another thing), the parts of the fixed heap (`src/backend/fixed.rs`, which owns
//! the cut, the locks, which shard a thread tries first and the fallback to the others):
//! consecutive runs of `nblock / N` atoms (the last shard takes the remainder), each an
//! independent buddy heap as described above with its own lock, free lists and top-level blocks;
//! atom indices, buddies and alignment inside a shard are relative to its first atom. A thread
//! allocates from its own shard and, when that shard cannot serve the request, from the next ones
//! in turn before failing. A block is freed into the shard its address lies in, whichever thread
//! frees it. The control bytes stay one array, outside the shards, so `size` is unchanged.
//!
//! Effect on Robson's bound: it holds *per shard*. A request fails only when no shard can serve it,
//! so the guarantee above holds for the whole heap when each shard alone satisfies it: with `N`
//! shards, `heap / N` must reach `N_robson(M, n)` for the most memory `M` ever live and the largest
//! request `n`, that is up to `N` times the heap an unsharded memsys5 needs for the same
//! guarantee (worst case: all live memory lands in one shard). The largest block is a shard's
//! largest power of two, so requests above `heap / N` fail. `shards=1` (the default) is SQLite's
//! memsys5: same placement, same peak. Several shards also place blocks differently from C.
//!
//! # Heap layout
//!
//! ```text
//! offset 0                        nblock*atom                 nblock*(atom+1)        heap
//! | atom 0 | atom 1 | ... | atom nblock-1 | ctrl[0] ... ctrl[nblock-1] | unused remainder |
//! ```
//!
//! `atom` is the minimum request rounded up to a power of two and to at least 8 bytes (the size
//! of a free-list link); `min` is first clamped to `1..=4096`, as `sqlite3_config` does.
//! `nblock = heap / (atom + 1)`: each atom costs its bytes plus one control byte, and the control
//! bytes live in the same buffer, right after the atoms. A block of class `k` at atom `i`
//! occupies bytes `i*atom .. (i + 2^k)*atom`. The first 8 bytes of a *free* block hold its
//! free-list link: the next block's atom index (`u32`, `u32::MAX` for none) then the previous
//! one's. Blocks handed out are aligned to `atom` (at least 8) from the heap base, which is
//! 64-aligned.
//!
//! # What is touched when
//!
//! The buffer and its cost (fresh zero pages, backed only when written) are the fixed heap's:
//! see `src/heap.rs` and `src/backend/fixed.rs`. The layout writes what C's `memsys5Init` writes
//! and nothing more: the control
//! byte and the free-list link (the first 8 bytes) of each top-level block, at most 31 of each,
//! every other control byte being already 0, which is the control byte of an atom that starts no
//! block (see "Control bytes"). So a 400 MB heap costs at most 31 pages of atoms and one or two
//! pages of control bytes when laid out. After that, a malloc writes the control bytes of the
//! block it returns and of the halves split off it and their links (the first 8 bytes of each
//! upper half), a free those of the freed block and of the buddies joined to it; the pages of a
//! block's body are backed when the program writes them. A heap that SQLite fills to 50 MB
//! makes the process about 50 MB larger (plus one control byte per atom used), as with C.
//!
//! `init` with no live block lays the heap out again (when, and with which locks held: the fixed
//! heap's `init`): the control bytes are zeroed first by giving their whole pages back to the
//! system ([`HeapBuf::zero`], `madvise(MADV_DONTNEED)`), not by writing them. Nothing iterates
//! over the heap; the pool marking touches the tools' shadow memory only (see "Locking and
//! marking"). Only the unit tests' `check` reads every control byte.
//!
//! [`HeapBuf::zero`]: crate::heap::HeapBuf::zero
//!
//! # Locking and marking
//!
//! The rules are the fixed heap's (`src/backend/fixed.rs`, "Locking and marking rules"): each
//! shard's state is behind its own lock, held only for list and control-byte updates; the copy of
//! a moving realloc happens outside it (its `realloc_by_copy`); the pool is created with the heap
//! and destroyed with it. What is memsys5's own:
//!
//! - `size` reads a live block's control byte without the lock (nobody writes it while the block
//!   lives; see "Control bytes"), so it takes no lock at all.
//! - For valgrind and ASan the atoms are the pool: free blocks (links included) are no-access; a
//!   block handed out is addressable for its whole size (`atom << k`: the request size is not
//!   kept) with undefined contents; a free-list link is made accessible around each access. The
//!   control bytes stay accessible for good (`size` reads them without the lock, so they cannot
//!   be marked and unmarked around each access); only an overflow past the last atom into them
//!   goes unseen. The unused remainder after them is no-access.
//! - The hot paths are compiled twice (`MARK`): when marking is off (`marking::active()` false,
//!   which never changes once asked) the one-shard path without it is the short one.
//!
//! # Control bytes
//!
//! `ctrl[i]` describes the block starting at atom `i`: bits 0–4 (`CTRL_LOGSIZE`) hold its class,
//! bit 5 (`CTRL_FREE`) is set when it is free, bit 6 (`CTRL_START`) is set on the first atom of
//! every block. The control byte of every other atom is 0: it was never written (a fresh heap
//! reads as zeros) or it was cleared when the block starting there was joined to its buddy.
//! So 0 means "no block starts here", and an untouched control byte is consistent with the
//! state; `free` of a pointer to such an atom (inside a block) is ignored. The allocator itself
//! reads only control bytes of block starts: those of live blocks (`free`, `size`), of the free
//! blocks it takes off a list, and of buddies; the buddy of a block of class `k` inside a
//! top-level block is the first atom of the other half of the `2^(k+1)`-atom region holding it,
//! which is tiled by blocks, so a block starts there; the buddy of a top-level block is the
//! start of the next top-level block (top-level blocks lie at multiples of twice their size,
//! one after another) or past the last atom. Handing out a block only writes the control bytes
//! of the block itself and of the halves split off it; freeing only those of the freed block and
//! its free buddies: the control byte of a live block never changes while it lives, so
//! [`size`](MemMethods::size) reads it without taking the lock.
//!
//! # Invariants (checked after every operation of the unit tests by `check`)
//!
//! 1. Walking from atom 0 by block size (`2^class` atoms each) visits a tiling of
//!    `0..nblock`: every block starts at a multiple of its size and lies inside one top-level block.
//! 2. A block is free exactly when it is on the free list of its class, once; list links are
//!    symmetric (`prev` of a block is the block whose `next` it is), except the `prev` of a
//!    list's head, which is never read and may be stale; bit `k` of the non-empty mask is set
//!    exactly when list `k` is not empty.
//! 3. No free block has a free buddy of the same class (it would have been joined).
//! 4. The number of blocks in use equals the count kept in the state.
//! 5. The count of atoms in live blocks published for the footprint (below) is exact.
//! 6. The control byte of every atom that starts no block is 0, and that of every block start
//!    has `CTRL_START` set (and no bit but the three fields).
//!
//! # Footprint
//!
//! [`footprint`](MemMethods::footprint) reports `heap_bytes` (the buffer of `heap=`, control
//! bytes and remainder included), `free_bytes` (bytes of the atoms in no live block, so that
//! SQLite's live bytes plus `free_bytes` are `nblock * atom`), `largest_free_block_bytes` (the
//! largest request that can be served now: a free block of class `k` is never joined with a
//! free buddy, so the highest non-empty class of any shard is it, at most 1 GiB) and
//! `needed_bytes`: Robson's `N` above for `M` = the counters' `peak_bytes` (the sum of block
//! sizes, in atoms, rounded up) and `n` = their `largest_request` rounded up to a block (at most
//! 1 GiB), at least `n` atoms; times the number of shards (the bound holds per shard, and all
//! live memory may sit in one); times `atom + 1` bytes (each atom needs its control byte), so
//! that it can be given as `heap=` as it is. It inherits the counters' precision: with several
//! threads allocating at once the peak is within 64 KiB per thread of the true one.
//!
//! The reader never takes a shard's lock (the fixed heap's rule: a thread other than the owner of
//! a biased lock would revoke the bias for good). Two atomics next to each shard's lock (its
//! published figures) hold what it needs, written only with the lock held by relaxed
//! loads and stores (on x86 an ordinary `add`/`or` on memory, never a locked instruction): the
//! atoms of the shard's live blocks, updated at the end of every allocation and free, and the
//! mask of the non-empty free lists itself (the allocator keeps it there rather than in the
//! locked state, so that it need not be copied). The reader loads them relaxed; each is a value
//! it had at some moment (the two of a shard, and the shards, are read one after another). No
//! heap byte is read, so valgrind's and ASan's marking of the pool is not involved. Cost on the
//! allocation path: the update of the count, about 8 instructions per call (callgrind).
//!
//! # Differences from SQLite's `mem5.c`
//!
//! - Locking: the state is behind this value's own lock (one per shard; `src/lock.rs`, see
//!   "Locking and marking"), always, instead of `SQLITE_MUTEX_STATIC_MEM` taken only when
//!   memstatus is off. The copy of a moving realloc happens outside it, as in C.
//! - Heap sizes: C receives the heap size as an `int`. Here it may be larger; the atom count is
//!   then capped at `2^31 - 1` (the most atoms the top-level layout can use with `LOGMAX = 30`,
//!   which keeps every index in a `u32`) and the rest of the buffer is left unused.
//! - `roundup(n)` for `n` above 1 GiB returns `n` rather than C's 0: SQLite passes the rounded
//!   value to `xMalloc`, and here a 0-byte request is served with the smallest block, so 0 would
//!   turn a refused request into an undersized block. `malloc(n)` for such `n` fails, as in C.
//! - [`Memsys5::new`] lays the heap out, so the allocator works before (or without) `init`.
//! - `init` after blocks were handed out (a re-initialization after `sqlite3_shutdown`) lays
//!   the heap out again only when no block is live; otherwise it keeps the current state, since
//!   live blocks may still be referenced. C always lays it out afresh. `init` fails with
//!   `NoMem` when the heap cannot hold one atom (C initializes an empty pool and lets the first
//!   allocation fail).
//! - The control byte of a block start has `CTRL_START` set, so that 0 (what an untouched
//!   byte reads) means "no block starts here" (C's `aCtrl` has no such bit; it reads the same
//!   bytes). The buffer is fresh zero pages (`src/heap.rs`); C's is whatever SQLite was given.
//!   A re-layout by `init` zeroes the control bytes (C leaves them as they were).
//! - No `SQLITE_DEBUG` statistics, fill patterns or `sqlite3_log` call on failure (an allocation
//!   path must not call into SQLite); the counters of the stack above provide the statistics.
//! - C also sets the free flag on the last atom's control byte of a freed block; nothing reads
//!   it, so it is not reproduced.
//! - C finds the list to serve a request from by scanning the list heads upwards from the
//!   request's class, and clears the new head's `prev` link when it takes a list's head; here a
//!   bit mask of the non-empty lists replaces the scan and the new head's `prev` is left stale
//!   (see "Invariants"). The lists hold the same blocks in the same order either way.
//! - `malloc(0)` returns the smallest block (what [`MemMethods`] asks of every backend); C's
//!   `xMalloc(0)` returns NULL. SQLite itself never asks for 0 bytes.
//! - A pointer passed to `free` that is plainly not a live block of this heap (outside it, not on
//!   an atom boundary, on an atom that starts no block, or marked free) is ignored instead of
//!   tripping an `assert`.
//!
//! Everything else (atom size, block count, the initial layout, which block a request gets and
//! the order of the free lists) follows C, so a sequence of calls places blocks at the same
//! offsets and reaches the same peak as C memsys5 given the same `heap` and `min` (checked by
//! running C's `mem5.c` and this module on the same random call sequences and comparing every
//! offset; one such trace is a unit test).

use super::fixed::{fixed_heap_api, Fixed};
use crate::counters::Stats;
use crate::heap::HeapView;
use crate::lock::LockGuard;
use crate::marking;
use crate::methods::{Held, InitError, MemMethods};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};

/// Largest size class: a block has at most `2^LOGMAX` atoms.
const LOGMAX: usize = 30;
/// Control-byte bits holding a block's size class.
const CTRL_LOGSIZE: u8 = 0x1f;
/// Control-byte bit set while a block is free.
const CTRL_FREE: u8 = 0x20;
/// Control-byte bit set on the first atom of every block, free or live: the control byte of an
/// atom that starts no block is 0, the value of a byte never written (see "Control bytes").
const CTRL_START: u8 = 0x40;

/// Control byte of a free block of class `k`.
#[inline(always)]
const fn free_ctrl(k: usize) -> u8 {
    CTRL_START | CTRL_FREE | k as u8
}

/// Control byte of a live block of class `k`.
#[inline(always)]
const fn live_ctrl(k: usize) -> u8 {
    CTRL_START | k as u8
}
/// "No block" in a free-list link or list head.
const NONE: u32 = u32::MAX;
/// Bytes of a free-list link (two `u32` indices), hence the smallest atom.
const LINK_SIZE: usize = 8;
/// The minimum request is clamped to at most this (as `sqlite3_config(SQLITE_CONFIG_HEAP)`).
const MIN_REQUEST_CAP: usize = 1 << 12;
/// Largest request served (as C: 1 GiB).
const MAX_REQUEST: usize = 1 << 30;
/// Most atoms the top-level layout can use: one block of each class `0..=LOGMAX`.
const MAX_BLOCKS: usize = (1 << (LOGMAX + 1)) - 1;

/// Atom size (as its log2) and atom count for a heap of `heap` bytes and a minimum request of
/// `min` bytes, as `sqlite3_config(SQLITE_CONFIG_HEAP)` followed by `memsys5Init` compute them.
fn geometry(heap: usize, min: usize) -> (u32, usize) {
    let min = min.clamp(1, MIN_REQUEST_CAP);
    // ceil(log2(min)), and at least a link's worth of bytes.
    let atom_log = min.next_power_of_two().max(LINK_SIZE).trailing_zeros();
    // atom + 1 <= 4097: no overflow.
    let nblock = (heap / ((1usize << atom_log) + 1)).min(MAX_BLOCKS);
    (atom_log, nblock)
}

/// SQLite's memsys5: power-of-two buddy allocator over one fixed heap.
pub struct Memsys5 {
    /// The heap (atoms, then one control byte per atom) and its shards: the atoms cut into
    /// independent buddy heaps (one unless `shards=N`), each with its own lock, free lists and
    /// [`Seen`] figures (`src/backend/fixed.rs`). Inside a shard, atom and block indices
    /// (free-list links, buddies, alignment) are relative to its first atom.
    fixed: Fixed<State, Seen>,
    /// log2 of the atom size in bytes (3..=12).
    atom_log: u32,
    /// `atom - 1`: the offset bits below an atom boundary (kept, not recomputed on every call).
    atom_mask: usize,
    /// Number of atoms in the heap.
    nblock: usize,
    /// Byte offset of the control bytes (`nblock * atom`).
    ctrl: usize,
}

/// The part of a shard's state that [`footprint`](MemMethods::footprint) reads, which must not
/// take the lock (a reader thread taking it would revoke its bias). Written only with the shard's
/// lock held, by relaxed loads and stores (an ordinary read-modify-write of memory on x86, never
/// a locked instruction); read by the reader with relaxed loads. Next to the lock in the shard.
struct Seen {
    /// Atoms in the shard's live blocks, updated at the end of each allocation and free.
    used: AtomicUsize,
    /// Bit `k` set exactly when free list `k` is not empty: a request of class `k` takes the
    /// list of the lowest set bit at or above `k`, found with one instruction instead of a scan;
    /// the highest set bit is the class of the largest free block. The allocator's own copy
    /// (kept here rather than in [`State`], so that there is nothing to publish).
    nonempty: AtomicU32,
}

/// Mutable allocator state (behind the lock; the heap bytes it describes are only touched with
/// the lock held, except the control byte of a live block, which nobody writes).
struct State {
    /// `free[k]`: atom index of the first free block of class `k`, or [`NONE`]. (The mask of
    /// the non-empty lists is [`Seen::nonempty`].)
    free: [u32; LOGMAX + 1],
    /// Number of blocks handed out and not yet freed.
    live: usize,
}

impl Memsys5 {
    /// A buddy allocator over a new heap of `heap` bytes whose smallest block serves requests of
    /// `min` bytes (`sqlite3_config(SQLITE_CONFIG_HEAP, buf, heap, min)`). The heap is laid out
    /// at once, so the allocator works without [`init`](MemMethods::init). `None` only when the
    /// buffer cannot be allocated.
    pub fn new(heap: usize, min: usize) -> Option<Memsys5> {
        Memsys5::with_shards(heap, min, 1)
    }

    /// As [`new`](Self::new), with the atoms cut into `shards` independent buddy heaps (see
    /// "Shards" in the module documentation). `shards` is clamped to `1..=` the number of atoms.
    pub fn with_shards(heap: usize, min: usize, shards: usize) -> Option<Memsys5> {
        let (atom_log, nblock) = geometry(heap, min);
        let fixed = Fixed::new(heap, atom_log, nblock, shards, usize::MAX, || {
            let state = State {
                free: [NONE; LOGMAX + 1],
                live: 0,
            };
            let seen = Seen {
                used: AtomicUsize::new(0),
                nonempty: AtomicU32::new(0),
            };
            (state, seen)
        })?;
        let m = Memsys5 {
            fixed,
            atom_log,
            atom_mask: (1 << atom_log) - 1,
            nblock,
            // nblock * (atom + 1) <= heap (see `geometry`), so this does not overflow.
            ctrl: nblock << atom_log,
        };
        // `size` reads a live block's control byte without the lock (see "Locking and marking").
        m.fixed.keep_accessible(m.ctrl, nblock);
        for p in 0..m.fixed.shards() {
            // The buffer is new: every control byte is 0 (`HeapBuf::new`).
            m.lock_shard::<true>(p).layout(true);
        }
        Some(m)
    }

    /// Size of an atom (the smallest block) in bytes.
    pub fn atom(&self) -> usize {
        1 << self.atom_log
    }

    /// Number of atoms in the heap.
    pub fn atoms(&self) -> usize {
        self.nblock
    }

    /// Size in bytes of the largest block the heap can ever hand out (0 when it holds no atom).
    pub fn largest_block(&self) -> usize {
        let n = self
            .fixed
            .parts()
            .iter()
            .map(|p| p.units)
            .max()
            .unwrap_or(0);
        match n.checked_ilog2() {
            Some(k) => (self.atom() << k).min(MAX_REQUEST),
            None => 0,
        }
    }

    /// Lock shard `p`, with the marking for valgrind/ASan (`MARK`: see [`Locked`]).
    #[inline(always)]
    fn lock_shard<const MARK: bool>(&self, p: usize) -> Locked<'_, MARK> {
        let g = self.fixed.lock(p);
        // SAFETY: the shards tile the atoms `0..nblock` (the units of `fixed`), so
        // `first + units <= nblock`: the shard's control bytes end at `ctrl + nblock <= heap
        // length` at the latest (see `geometry`).
        let ctrls = unsafe {
            self.fixed
                .heap()
                .view_unchecked(self.ctrl + g.first, g.units)
        };
        Locked {
            m: self,
            atoms: g.view,
            ctrls,
            atom_log: self.atom_log,
            base: g.first,
            n: g.units,
            seen: g.seen,
            st: g.st,
        }
    }

    /// Hand out a block of class `k`: from the thread's own shard first, then the others in turn.
    #[inline(always)]
    fn malloc_class(&self, k: usize) -> Option<NonNull<u8>> {
        if self.fixed.shards() == 1 && !marking::active() {
            // SQLite's memsys5, no marking: the path to keep short (the others are calls away,
            // so that this one saves and restores few registers).
            let l = &mut self.lock_shard::<false>(0);
            let i = l.alloc(k)?;
            // SAFETY: `alloc` returns an atom index `i < n` (its control byte was set through
            // the checked `set_ctrl`), so `i << atom_log` is inside `atoms`.
            return Some(unsafe { l.atoms.ptr(i << l.atom_log) });
        }
        self.malloc_class_other(k)
    }

    /// [`malloc_class`](Self::malloc_class) with shards or with the marking on.
    #[inline(never)]
    fn malloc_class_other(&self, k: usize) -> Option<NonNull<u8>> {
        if marking::active() {
            self.malloc_class_in::<true>(k)
        } else {
            self.malloc_class_in::<false>(k)
        }
    }

    /// [`malloc_class`](Self::malloc_class) with the marking on (`MARK`) or known to be off.
    #[inline(always)]
    fn malloc_class_in<const MARK: bool>(&self, k: usize) -> Option<NonNull<u8>> {
        let i = self.fixed.try_parts(|p| {
            let mut l = self.lock_shard::<MARK>(p);
            let i = l.alloc(k)?;
            Some(l.base + i)
        })?;
        let p = self.fixed.heap().ptr(i << self.atom_log);
        if MARK {
            self.fixed.mark_alloc(p, self.atom() << k);
        }
        Some(p)
    }

    /// Size class of a request of `size` bytes, or `None` when it is above 1 GiB.
    fn class_of(&self, size: usize) -> Option<usize> {
        if size > MAX_REQUEST {
            return None;
        }
        // size <= 2^30, atom <= 4096: no overflow.
        let atoms = (size.max(1) + self.atom() - 1) >> self.atom_log;
        let k = atoms.next_power_of_two().trailing_zeros() as usize;
        (k <= LOGMAX).then_some(k)
    }

    /// Atom index of `p` when it points at the start of an atom of this heap.
    #[inline(always)]
    fn index_of(&self, p: NonNull<u8>) -> Option<usize> {
        // The atoms are the first `ctrl = nblock << atom_log` bytes of the heap.
        let off = self.fixed.heap().offset_below(p, self.ctrl)?;
        if off & self.atom_mask != 0 {
            return None;
        }
        Some(off >> self.atom_log)
    }

    /// Control byte of atom `i`, read without the lock.
    ///
    /// # Safety
    /// `i < nblock`, and either the caller holds the lock or `i` is the first atom of a live
    /// block (whose control byte nobody writes while it lives).
    #[inline(always)]
    unsafe fn ctrl_byte(&self, i: usize) -> u8 {
        debug_assert!(i < self.nblock);
        // SAFETY: the control bytes are `nblock` bytes at `ctrl`, inside the heap (see
        // `geometry`), and `i < nblock`; the control area is never handed out and was
        // initialized at layout; no concurrent writer by the caller's contract.
        unsafe {
            self.fixed
                .heap()
                .view_unchecked(self.ctrl, self.nblock)
                .read_u8(i)
        }
    }
}

/// The state with the lock held: every method here may read and write control bytes and the
/// links of free blocks.
///
/// `MARK` false: the caller has seen that no valgrind/ASan marking is wanted
/// ([`marking::active`] false, which never changes once asked), so link accesses skip even the
/// check; true: every access asks (the cold paths, and all paths under the tools).
struct Locked<'a, const MARK: bool> {
    m: &'a Memsys5,
    /// The shard's atoms and its control bytes; atom `i` of the shard is at byte `i << atom_log`
    /// of `atoms`, its control byte at byte `i` of `ctrls`. Copies, so that they stay in
    /// registers across the heap writes below.
    atoms: HeapView<'a>,
    ctrls: HeapView<'a>,
    atom_log: u32,
    /// The shard's first atom in the heap and its number of atoms: indices below are relative.
    base: usize,
    n: usize,
    /// The shard's published figures (see [`Seen`]).
    seen: &'a Seen,
    st: LockGuard<'a, State>,
}

impl<const MARK: bool> Locked<'_, MARK> {
    /// `used` atoms more in live blocks (wrapping: a free passes the two's complement), with
    /// the lock held: a relaxed load and store (see [`Seen`]).
    #[inline(always)]
    fn add_used(&self, used: usize) {
        let u = &self.seen.used;
        u.store(u.load(Relaxed).wrapping_add(used), Relaxed);
    }

    /// The mask of the non-empty free lists ([`Seen::nonempty`]).
    #[inline(always)]
    fn nonempty(&self) -> u32 {
        self.seen.nonempty.load(Relaxed)
    }

    /// Set the mask of the non-empty free lists, with the lock held.
    #[inline(always)]
    fn set_nonempty(&self, v: u32) {
        self.seen.nonempty.store(v, Relaxed);
    }

    /// Control byte of atom `i`.
    #[inline(always)]
    fn ctrl(&self, i: usize) -> u8 {
        // A fixed message: formatting `i` would make the hot paths keep it in memory.
        assert!(
            i < self.n,
            "memsys5: atom index outside the shard (corrupt heap?)"
        );
        // SAFETY: `i < n`, the length of `ctrls` (checked); the shard's lock is held (`self.st`)
        // and the control bytes of other shards are never touched under this lock; the control
        // byte of a live block, read by `size` without the lock, is not written while it lives.
        unsafe { self.ctrls.read_u8(i) }
    }

    /// Set the control byte of atom `i`.
    #[inline(always)]
    fn set_ctrl(&mut self, i: usize, v: u8) {
        assert!(
            i < self.n,
            "memsys5: atom index outside the shard (corrupt heap?)"
        );
        // SAFETY: as in `ctrl`; the control area is never handed out, so nobody else reads or
        // writes this byte meanwhile.
        unsafe { self.ctrls.write_u8(i, v) }
    }

    /// A link value read from the heap, checked to be [`NONE`] or an atom of the shard: a link is
    /// the one thing in the heap a program can overwrite (by writing into a block it has
    /// freed), and a wild index must stop the allocator rather than let it write outside the
    /// shard. Checked where it is used, so that the `prev` link of a list's head, never used
    /// (see [`unlink`](Self::unlink)), is not checked either.
    #[inline(always)]
    fn checked(&self, v: u32) -> u32 {
        assert!(
            v == NONE || (v as usize) < self.n,
            "memsys5: corrupt free list (was a freed block written to?)"
        );
        v
    }

    /// Word `w` (0: `next`, 1: `prev`) of the link of free block `i`, checked (see
    /// [`checked`](Self::checked)).
    ///
    /// # Safety
    /// `i < n` is a free block of this shard (its first 8 bytes belong to the allocator) whose
    /// link was written when it was put on its list; `w < 2`.
    #[inline(always)]
    unsafe fn link_word(&self, i: usize, w: usize) -> u32 {
        debug_assert!(i < self.n && w < 2);
        let off = (i << self.atom_log) + 4 * w;
        // SAFETY: `i < n`, so `off + 4 <= (i << atom_log) + 8 <= n << atom_log`, the length of
        // `atoms` (an atom has at least 8 bytes), and so is the link's span (its 8 bytes from
        // the block's start); `off` is a multiple of 4 from a 64-aligned heap base; the block is
        // free, so no user accesses it, and the shard's lock is held.
        let v = unsafe { self.atoms.read_meta_u32::<MARK>(off, LINK_SIZE) };
        self.checked(v)
    }

    /// The `next` link of free block `i`, checked.
    ///
    /// # Safety
    /// As [`link_word`](Self::link_word).
    #[inline(always)]
    unsafe fn next_of(&self, i: usize) -> u32 {
        // SAFETY: forwarded contract.
        unsafe { self.link_word(i, 0) }
    }

    /// The `prev` link of free block `i`, checked.
    ///
    /// # Safety
    /// As [`link_word`](Self::link_word).
    #[inline(always)]
    unsafe fn prev_of(&self, i: usize) -> u32 {
        // SAFETY: forwarded contract.
        unsafe { self.link_word(i, 1) }
    }

    /// Set the `next` link of free block `i`.
    ///
    /// # Safety
    /// `i < n` is a free block of this shard.
    #[inline(always)]
    unsafe fn set_next(&mut self, i: usize, next: u32) {
        debug_assert!(i < self.n);
        let off = i << self.atom_log;
        // SAFETY: `i < n`, so `off + 8 <= n << atom_log`, the length of `atoms` (an atom has at
        // least 8 bytes): the link's span; `off` is a multiple of 8 from a 64-aligned heap base;
        // the block is free, so no user accesses it, and the shard's lock is held (`&mut self`).
        unsafe { self.atoms.write_meta_u32::<MARK>(off, LINK_SIZE, next) }
    }

    /// Set the `prev` link of free block `i`.
    ///
    /// # Safety
    /// `i < n` is a free block of this shard.
    #[inline(always)]
    unsafe fn set_prev(&mut self, i: usize, prev: u32) {
        debug_assert!(i < self.n);
        let off = i << self.atom_log;
        // SAFETY: as in `set_next`: `off + 4` is the block's second link word, inside its first
        // 8 bytes (the span), which belong to the allocator while the block is free.
        unsafe { self.atoms.write_meta_u32::<MARK>(off + 4, LINK_SIZE, prev) }
    }

    /// Take free block `i` of class `k` off its list.
    ///
    /// The head of a list is taken off without writing its successor's `prev` link, which then
    /// still names the block just taken: the `prev` link of a list's head is never read (a head
    /// is recognised by `free[k]`), so it may be stale. This spares the most common call, a
    /// malloc served by the head of its list, a write into a second cold heap line (the
    /// successor's). Every other block's `prev` is exact: a block stops being the head only when
    /// another is put in front of it, which writes its `prev` (see [`link`](Self::link)).
    #[inline(always)]
    fn unlink(&mut self, i: usize, k: usize) {
        debug_assert_eq!(self.ctrl(i), free_ctrl(k));
        // SAFETY: `i` is a free block on list `k` (its control byte says so), so its link is
        // valid, and its neighbours are free blocks on the same list.
        unsafe {
            let next = self.next_of(i);
            if self.st.free[k] == i as u32 {
                self.st.free[k] = next;
                if next == NONE {
                    self.set_nonempty(self.nonempty() & !(1 << k));
                }
                return;
            }
            let prev = self.prev_of(i);
            self.set_next(prev as usize, next);
            if next != NONE {
                self.set_prev(next as usize, prev);
            }
        }
    }

    /// Put free block `i` of class `k` at the head of its list.
    #[inline(always)]
    fn link(&mut self, i: usize, k: usize) {
        debug_assert_eq!(self.ctrl(i), free_ctrl(k));
        let head = self.st.free[k];
        // SAFETY: `i` is a free block (control byte checked above in debug builds; callers only
        // link blocks they have just marked free); `head` is the first block of list `k`, free.
        unsafe {
            self.set_next(i, head);
            self.set_prev(i, NONE);
            if head != NONE {
                self.set_prev(head as usize, i as u32);
            }
        }
        // i < nblock <= MAX_BLOCKS < u32::MAX.
        self.st.free[k] = i as u32;
        self.set_nonempty(self.nonempty() | 1 << k);
    }

    /// Lay the shard out as free top-level blocks (forgets every block). `zeroed`: the caller
    /// knows that the shard's control bytes are all 0 (a heap just created); otherwise they are
    /// zeroed first, by giving their pages back to the system (see
    /// [`HeapBuf::zero`](crate::heap::HeapBuf::zero)). Writes nothing else but the control byte
    /// and the free-list link of each top-level block.
    fn layout(&mut self, zeroed: bool) {
        let n = self.n;
        if !zeroed {
            // SAFETY: the shard's control bytes (`n` of them from `ctrl + base`, inside the heap:
            // see `lock_shard`), never handed out; the shard's lock is held, so nobody else reads
            // or writes them.
            unsafe { self.m.fixed.heap().zero(self.m.ctrl + self.base, n) };
        }
        self.st.free = [NONE; LOGMAX + 1];
        self.set_nonempty(0);
        self.st.live = 0;
        let mut at = 0;
        for k in (0..=LOGMAX).rev() {
            if at + (1 << k) <= n {
                self.set_ctrl(at, free_ctrl(k));
                self.link(at, k);
                at += 1 << k;
            }
        }
        self.seen.used.store(0, Relaxed);
    }

    /// Hand out a block of class `k`: its atom index, or `None` when no free block is large
    /// enough.
    #[inline(always)]
    fn alloc(&mut self, k: usize) -> Option<usize> {
        // The smallest non-empty class at or above `k` (k <= LOGMAX < 32).
        let above = self.nonempty() >> k;
        if above == 0 {
            return None;
        }
        let mut bin = k + above.trailing_zeros() as usize;
        let i = self.st.free[bin] as usize;
        self.unlink(i, bin);
        while bin > k {
            bin -= 1;
            let upper = i + (1 << bin);
            self.set_ctrl(upper, free_ctrl(bin));
            self.link(upper, bin);
        }
        self.set_ctrl(i, live_ctrl(k));
        self.st.live += 1;
        self.add_used(1 << k);
        Some(i)
    }

    /// Free the live block starting at atom `i`, joining it with free buddies.
    #[inline(always)]
    fn release(&mut self, mut i: usize) {
        let mut k = (self.ctrl(i) & CTRL_LOGSIZE) as usize;
        let atoms = 1usize << k;
        self.set_ctrl(i, free_ctrl(k));
        while k < LOGMAX {
            let size = 1usize << k;
            let buddy = if (i >> k) & 1 == 1 {
                i - size
            } else {
                let b = i + size;
                if b >= self.n {
                    break;
                }
                b
            };
            if self.ctrl(buddy) != free_ctrl(k) {
                break;
            }
            self.unlink(buddy, k);
            k += 1;
            let (low, high) = if buddy < i { (buddy, i) } else { (i, buddy) };
            self.set_ctrl(low, free_ctrl(k));
            self.set_ctrl(high, 0);
            i = low;
        }
        self.link(i, k);
        self.st.live -= 1;
        self.add_used(atoms.wrapping_neg());
    }
}

impl Memsys5 {
    /// The part of [`size_and_free`](MemMethods::size_and_free) done under the lock: free the block at
    /// global atom `g` of shard `shard` (`ptr` points at it) and return its size, 0 when it is not
    /// a live block.
    #[inline(always)]
    fn release_in<const MARK: bool>(&self, ptr: NonNull<u8>, g: usize, shard: usize) -> usize {
        let mut l = self.lock_shard::<MARK>(shard);
        let i = g - l.base;
        let c = l.ctrl(i);
        // Free, or no block starts there (an atom inside a block).
        if c & (CTRL_START | CTRL_FREE) != CTRL_START {
            return 0;
        }
        let n = self.atom() << (c & CTRL_LOGSIZE);
        // Marked before `release` writes its links into the block.
        if MARK {
            self.fixed.mark_free(ptr, n);
        }
        l.release(i);
        n
    }
}

impl Memsys5 {
    /// [`size_and_free`](MemMethods::size_and_free) of the block at global atom `g` with shards
    /// or with the marking on.
    #[inline(never)]
    fn release_other(&self, ptr: NonNull<u8>, g: usize) -> usize {
        let shard = self.fixed.part_of_unit(g);
        if marking::active() {
            self.release_in::<true>(ptr, g, shard)
        } else {
            self.release_in::<false>(ptr, g, shard)
        }
    }
}

// SAFETY: every block handed out is a run of atoms taken off the free lists under the lock and
// marked in use, so live blocks never overlap; a block of class k has atom << k >= the request
// bytes and starts at a multiple of the atom (>= 8) from a 64-aligned base; its control byte (hence
// `size`) does not change while it lives; a failed realloc returns before touching the old
// block; all shared state is behind the shard's lock.
unsafe impl MemMethods for Memsys5 {
    fn name(&self) -> &'static str {
        "memsys5"
    }

    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        self.malloc_class(self.class_of(size)?)
    }

    #[inline(always)]
    fn malloc_and_size(&self, size: usize) -> Option<(NonNull<u8>, usize)> {
        let k = self.class_of(size)?;
        Some((self.malloc_class(k)?, self.atom() << k))
    }

    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded contract.
        unsafe { self.size_and_free(ptr) };
    }

    #[inline(always)]
    unsafe fn size_and_free(&self, ptr: NonNull<u8>) -> usize {
        let Some(g) = self.index_of(ptr) else {
            return 0;
        };
        if self.fixed.shards() == 1 && !marking::active() {
            // The short path, as in `malloc_class`.
            return self.release_in::<false>(ptr, g, 0);
        }
        self.release_other(ptr, g)
    }

    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        // SAFETY: `ptr` is a live block (caller's contract).
        let old = unsafe { self.size(ptr) };
        if old == 0 {
            // Not a block of this heap.
            return None;
        }
        if new_size <= old {
            return Some(ptr);
        }
        // SAFETY: `ptr` is a live block of `self` with `old < new_size` usable bytes; the caller
        // gives it up on success (realloc's contract).
        unsafe { self.fixed.realloc_by_copy(self, ptr, old, new_size) }
    }

    #[inline(always)]
    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        let Some(i) = self.index_of(ptr) else {
            return 0;
        };
        // SAFETY: `i < nblock` and `i` starts a live block (caller's contract), whose control
        // byte nobody writes while it lives.
        let c = unsafe { self.ctrl_byte(i) };
        let k = u32::from(c & CTRL_LOGSIZE).min(LOGMAX as u32);
        // atom_log <= 12 and k <= 30: at most 2^42, which a u64 holds.
        usize::try_from(1u64 << (self.atom_log + k)).unwrap_or(usize::MAX)
    }

    /// Exact: whether `ptr` points into this heap (the address is compared, never read).
    fn owns(&self, ptr: NonNull<u8>) -> Option<bool> {
        self.fixed.owns(ptr)
    }

    fn roundup(&self, size: usize) -> usize {
        if size > MAX_REQUEST {
            // Refused by malloc; see the module doc for why this is not 0.
            return size;
        }
        size.max(self.atom()).next_power_of_two()
    }

    fn init(&self) -> Result<(), InitError> {
        self.fixed.init(
            self.nblock != 0,
            |p| self.lock_shard::<true>(p),
            |l| l.st.live == 0,
            |l| l.layout(false),
        )
    }

    fn shutdown(&self) {}

    /// Read without any lock: see "Footprint" in the module documentation.
    fn footprint(&self, stats: &Stats, out: &mut dyn FnMut(Held)) {
        let (mut used, mut largest) = (0usize, 0u64);
        for p in self.fixed.parts() {
            used = used.saturating_add(p.seen.used.load(Relaxed));
            if let Some(k) = p.seen.nonempty.load(Relaxed).checked_ilog2() {
                // atom <= 2^12, k <= 30: at most 2^42.
                largest = largest.max((self.atom() as u64) << k);
            }
        }
        let free = (self.nblock.saturating_sub(used) as u64) << self.atom_log;
        out(Held {
            key: "heap_bytes",
            help: "sqlalloc memsys5: the heap as configured (heap=), control bytes included: each atom of the heap costs its bytes plus one control byte, so atom/(atom+1) of it holds blocks",
            bytes: self.fixed.heap_len() as u64,
        });
        out(Held {
            key: "free_bytes",
            help: "sqlalloc memsys5: bytes of the heap's atoms in no live block (SQLite's live bytes plus these are the atoms' bytes)",
            bytes: free,
        });
        out(Held {
            key: "largest_free_block_bytes",
            help: "sqlalloc memsys5: largest request that can be served now (the largest free buddy block of any shard, at most 1 GiB); free bytes beyond it are fragmentation",
            bytes: largest.min(MAX_REQUEST as u64),
        });
        out(Held {
            key: "needed_bytes",
            help: "sqlalloc memsys5: heap= size with which Robson's bound guarantees no allocation fails, for the peak live bytes and largest request so far (M(1 + log2(n)/2) - n + 1 atoms, times the shards, plus one control byte per atom)",
            bytes: self.needed_bytes(stats),
        });
    }
}

impl Memsys5 {
    /// `needed_bytes` of [`footprint`](MemMethods::footprint): the `heap=` size for which
    /// Robson's bound guarantees that no request fails, for the most bytes ever live and the
    /// largest request in `stats` (see "Footprint" in the module documentation); 0 before any
    /// request.
    fn needed_bytes(&self, stats: &Stats) -> u64 {
        let peak = u64::try_from(stats.peak_bytes).unwrap_or(0);
        let largest = usize::try_from(stats.largest_request).unwrap_or(0);
        if peak == 0 && largest == 0 {
            return 0;
        }
        let atom = self.atom() as u64;
        // A request above 1 GiB fails whatever the heap: the largest that can matter is 1 GiB.
        let n = self.roundup(largest.min(MAX_REQUEST)) as u64 / atom;
        let per_shard = robson_atoms(peak.div_ceil(atom), n);
        let bytes = per_shard * self.fixed.shards() as u128 * (u128::from(atom) + 1);
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// Robson's bound in atoms: the heap of `N = M·(1 + log2(n)/2) − n + 1` atoms (rounded up) in
/// which a buddy allocator never fails while at most `m` atoms are live and no request exceeds
/// `n` atoms (a power of two, at least 1); never less than `n`, the one block of `n` atoms.
fn robson_atoms(m: u64, n: u64) -> u128 {
    debug_assert!(n.is_power_of_two());
    let (m, n, log_n) = (u128::from(m), u128::from(n), u128::from(n.trailing_zeros()));
    // M·(1 + L/2) = M + M·L/2, the half rounded up: u128, so nothing overflows.
    (m + (m * log_n).div_ceil(2) + 1).saturating_sub(n).max(n)
}

fixed_heap_api!(Memsys5);

#[cfg(test)]
impl Memsys5 {
    /// Check every invariant of the module doc (panics naming the first one broken); the number
    /// of live blocks.
    fn check(&self) -> usize {
        assert_eq!(
            self.fixed.parts().iter().map(|p| p.units).sum::<usize>(),
            self.nblock,
            "the shards cover the atoms"
        );
        (0..self.fixed.shards()).map(|p| self.check_part(p)).sum()
    }

    /// Shard 0 locked (the whole heap when it is not sharded).
    fn lock(&self) -> Locked<'_, true> {
        self.lock_shard(0)
    }

    /// Check the invariants inside shard `p`; its number of live blocks.
    fn check_part(&self, p: usize) -> usize {
        let l = self.lock_shard::<true>(p);
        let n = l.n;
        // Top-level blocks, as laid out.
        let mut tops = Vec::new();
        let mut at = 0;
        for k in (0..=LOGMAX).rev() {
            if at + (1 << k) <= n {
                tops.push((at, 1usize << k));
                at += 1 << k;
            }
        }
        // 1. The tiling.
        let mut start = vec![false; n];
        let mut free_of_class = [0usize; LOGMAX + 1];
        let mut live = 0;
        let mut i = 0;
        while i < n {
            let c = l.ctrl(i);
            assert_eq!(
                c & !(CTRL_START | CTRL_FREE | CTRL_LOGSIZE),
                0,
                "stray bits in ctrl[{i}]"
            );
            assert_ne!(c & CTRL_START, 0, "block at {i} without its start bit");
            let k = usize::from(c & CTRL_LOGSIZE);
            assert!(k <= LOGMAX, "ctrl[{i}] has class {k}");
            let size = 1usize << k;
            assert_eq!(i % size, 0, "block at {i} of {size} atoms is misaligned");
            let &(t, tsize) = tops
                .iter()
                .find(|&&(t, s)| t <= i && i < t + s)
                .expect("tops cover the heap");
            assert!(
                i + size <= t + tsize,
                "block at {i} of {size} atoms crosses top-level block {t}+{tsize}"
            );
            start[i] = true;
            if c & CTRL_FREE != 0 {
                free_of_class[k] += 1;
            } else {
                live += 1;
            }
            i += size;
        }
        assert_eq!(i, n, "blocks do not end at the last atom");
        assert_eq!(live, l.st.live, "live count");
        // 2. The free lists.
        let mut listed = vec![false; n];
        for (k, &count) in free_of_class.iter().enumerate() {
            let (mut prev, mut cur, mut len) = (NONE, l.st.free[k], 0);
            while cur != NONE {
                let c = cur as usize;
                assert!(c < n && start[c], "list {k} holds {c}, not a block");
                assert_eq!(l.ctrl(c), free_ctrl(k), "list {k} holds block {c}");
                assert!(!listed[c], "block {c} listed twice");
                listed[c] = true;
                // SAFETY: `c` is a free block (checked above).
                let next = unsafe { l.next_of(c) };
                // The head's `prev` may be stale (see `unlink`).
                if prev != NONE {
                    // SAFETY: as above.
                    let p = unsafe { l.prev_of(c) };
                    assert_eq!(p, prev, "prev link of {c} on list {k}");
                }
                (prev, cur) = (cur, next);
                len += 1;
            }
            assert_eq!(len, count, "length of list {k}");
            assert_eq!(
                l.nonempty() & (1 << k) != 0,
                count != 0,
                "bit {k} of the non-empty mask"
            );
        }
        // 3. No two free buddies.
        for i in (0..n).filter(|&i| start[i]) {
            let c = l.ctrl(i);
            let k = usize::from(c & CTRL_LOGSIZE);
            if c & CTRL_FREE == 0 || k == LOGMAX {
                continue;
            }
            let buddy = i ^ (1 << k);
            if buddy < n && start[buddy] {
                assert_ne!(
                    l.ctrl(buddy),
                    c,
                    "free buddies {i} and {buddy} of class {k}"
                );
            }
        }
        // 5. The figures published for `footprint` are the state's.
        let used: usize = (0..n)
            .filter(|&i| start[i] && l.ctrl(i) & CTRL_FREE == 0)
            .map(|i| 1usize << (l.ctrl(i) & CTRL_LOGSIZE))
            .sum();
        assert_eq!(l.seen.used.load(Relaxed), used, "published used atoms");
        // 6. Every control byte that starts no block is 0 (what a byte never written reads).
        if let Some(i) = (0..n).find(|&i| !start[i] && l.ctrl(i) != 0) {
            panic!("ctrl[{i}] = {:#x} starts no block", l.ctrl(i));
        }
        live
    }

    /// Atom indices on free list `k`, in order.
    fn free_list(&self, k: usize) -> Vec<usize> {
        let l = self.lock();
        let mut v = Vec::new();
        let mut cur = l.st.free[k];
        while cur != NONE {
            v.push(cur as usize);
            // SAFETY: blocks on a free list are free.
            cur = unsafe { l.next_of(cur as usize) };
        }
        v
    }

    /// Offset of `p` in the heap.
    fn off(&self, p: NonNull<u8>) -> usize {
        self.fixed
            .heap()
            .offset_of(p)
            .expect("pointer into the heap")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_support::{self as ts, fill, holds, Rng, Sizes, TestHeap};
    use crate::heap::HeapBuf;
    use std::sync::Arc;

    const KIB: usize = 1024;

    impl TestHeap for Memsys5 {
        /// A block is exactly `roundup(n)`.
        const SLACK: usize = 0;
        fn check(&self) -> usize {
            Memsys5::check(self)
        }
        fn whole_block(&self) -> Option<usize> {
            Some(self.largest_block())
        }
        fn heap(&self) -> &HeapBuf {
            self.fixed.heap()
        }
    }

    #[test]
    fn geometry_matches_c_for_1m_min_64() {
        // memsys5Init with nHeap = 1048576, mnReq = 64: szAtom = 64,
        // nBlock = 1048576 / 65 = 16131 = 0b11_1111_0000_0011, aCtrl at 16131 * 64 = 1032384.
        let m = Memsys5::new(1 << 20, 64).unwrap();
        assert_eq!(m.atom(), 64);
        assert_eq!(m.atoms(), 16131);
        assert_eq!(m.ctrl, 1_032_384);
        assert_eq!(m.largest_block(), 512 * KIB);
        let expect: [(usize, usize); 8] = [
            (13, 0),
            (12, 8192),
            (11, 12288),
            (10, 14336),
            (9, 15360),
            (8, 15872),
            (1, 16128),
            (0, 16130),
        ];
        for k in 0..=LOGMAX {
            let want: Vec<usize> = expect.iter().filter(|e| e.0 == k).map(|e| e.1).collect();
            assert_eq!(m.free_list(k), want, "free list {k}");
        }
        m.check();
    }

    /// The footprint's figures, keys checked.
    fn figures(m: &Memsys5, stats: &Stats) -> [u64; 4] {
        let keys = [
            "heap_bytes",
            "free_bytes",
            "largest_free_block_bytes",
            "needed_bytes",
        ];
        ts::figures(m, stats, &keys).try_into().unwrap()
    }

    #[test]
    fn footprint_free_bytes_and_largest_free_block() {
        let none = Stats::default();
        let m = Memsys5::new(1 << 20, 64).unwrap();
        let atoms = (16131 * 64) as u64;
        assert_eq!(figures(&m, &none), [1 << 20, atoms, 512 * 1024, 0]);
        // The top block (512 KiB at atom 0): the largest free block is the next one, 256 KiB.
        let top = m.malloc(512 * 1024).unwrap();
        assert_eq!(m.off(top), 0);
        assert_eq!(figures(&m, &none)[1..3], [atoms - 512 * 1024, 256 * 1024]);
        // Small blocks split the smallest free blocks first; free + live sizes is the atoms.
        let small: Vec<_> = [1usize, 64, 65, 1000, 3000]
            .iter()
            .map(|&n| m.malloc(n).unwrap())
            .collect();
        // SAFETY: live blocks of `m`.
        let live: u64 = small.iter().map(|&p| unsafe { m.size(p) } as u64).sum();
        assert_eq!(live, 64 + 64 + 128 + 1024 + 4096);
        let f = figures(&m, &none);
        assert_eq!(f[1] + live + 512 * 1024, atoms);
        assert_eq!(f[2], 256 * 1024, "served from the small blocks at the end");
        m.check();
        // SAFETY: live blocks of `m`, freed once.
        unsafe { m.free(top) };
        assert_eq!(figures(&m, &none)[1..3], [atoms - live, 512 * 1024]);
        for p in small {
            // SAFETY: as above.
            unsafe { m.free(p) };
        }
        assert_eq!(figures(&m, &none)[1..3], [atoms, 512 * 1024]);
        m.check();
        // Every atom handed out: nothing free, nothing can be served.
        let m = Memsys5::new(8 * KIB, 64).unwrap();
        let mut all = Vec::new();
        while let Some(p) = m.malloc(64) {
            all.push(p);
        }
        assert_eq!(all.len(), m.atoms());
        assert_eq!(figures(&m, &none)[1..3], [0, 0]);
        for p in all {
            // SAFETY: as above.
            unsafe { m.free(p) };
        }
        assert_eq!(figures(&m, &none)[1], (m.atoms() * 64) as u64);
    }

    #[test]
    fn footprint_with_shards_sums_and_takes_the_largest() {
        let none = Stats::default();
        // 4 shards of 16 atoms of 64 bytes.
        let m = Memsys5::with_shards(64 * 65, 64, 4).unwrap();
        assert_eq!(figures(&m, &none)[1..3], [64 * 64, 16 * 64]);
        let own = m.fixed.preferred_part();
        let p = m.malloc(64).unwrap();
        assert_eq!(m.fixed.part_of_unit(m.off(p) / 64), own);
        // One shard is split, the three others still hold a 16-atom block.
        assert_eq!(figures(&m, &none)[1..3], [63 * 64, 16 * 64]);
        m.check();
        // SAFETY: live block of `m`, freed once.
        unsafe { m.free(p) };
        assert_eq!(figures(&m, &none)[1..3], [64 * 64, 16 * 64]);
    }

    #[test]
    fn needed_bytes_is_robsons_bound_by_hand() {
        let st = |peak: i64, largest: i64| Stats {
            peak_bytes: peak,
            largest_request: largest,
            ..Stats::default()
        };
        let m = Memsys5::new(1 << 20, 64).unwrap();
        // Nothing ever asked: nothing needed.
        assert_eq!(m.needed_bytes(&st(0, 0)), 0);
        // Atom 64. M = 1 MiB = 16384 atoms; n: 40000 bytes rounds up to 64 KiB = 1024 atoms,
        // log2 n = 10. N = 16384 * (1 + 10/2) - 1024 + 1 = 97281 atoms, each 64 bytes plus a
        // control byte: 97281 * 65 = 6323265 bytes.
        assert_eq!(m.needed_bytes(&st(1 << 20, 40_000)), 6_323_265);
        assert_eq!(figures(&m, &st(1 << 20, 40_000))[3], 6_323_265);
        // M = 3 atoms (192 bytes), n = 2 atoms (100 bytes -> 128), log2 n = 1:
        // N = 3 * 1.5 - 2 + 1 = 3.5, rounded up to 4 atoms: 260 bytes.
        assert_eq!(m.needed_bytes(&st(192, 100)), 260);
        // A peak that is not a whole number of atoms counts as the next one: M = 4, n = 1
        // (log2 n = 0): N = 4 - 1 + 1 = 4.
        assert_eq!(m.needed_bytes(&st(193, 10)), 260);
        // The bound cannot be below the one block of n atoms: M = 1, n = 2^24 atoms (a request
        // above 1 GiB counts as 1 GiB, the most memsys5 serves).
        assert_eq!(m.needed_bytes(&st(64, (1 << 30) + 5)), (1u64 << 24) * 65);
        // Shards: the bound per shard, times the shards.
        let two = Memsys5::with_shards(1 << 20, 64, 2).unwrap();
        assert_eq!(two.needed_bytes(&st(1 << 20, 40_000)), 2 * 6_323_265);
        // Atom 8 (min 0): M = 1000 atoms (8000 bytes), n = 4096 / 8 = 512 atoms, log2 n = 9:
        // N = 1000 + 4500 - 512 + 1 = 4989 atoms of 8 bytes and a control byte: 44901 bytes.
        let eight = Memsys5::new(1 << 16, 0).unwrap();
        assert_eq!(eight.needed_bytes(&st(8000, 4096)), 4989 * 9);
        // The figure is a heap= that gives the atoms asked for.
        assert_eq!(geometry(4989 * 9, 0), (3, 4989));
        assert_eq!(geometry(97281 * 65, 64), (6, 97281));
    }

    /// The reader must never take a shard's lock (see "Footprint").
    #[test]
    fn footprint_from_another_thread_keeps_the_bias() {
        let m = Arc::new(Memsys5::new(64 * KIB, 64).unwrap());
        let keys = [
            "heap_bytes",
            "free_bytes",
            "largest_free_block_bytes",
            "needed_bytes",
        ];
        if let Some(seen) =
            ts::reader_keeps_the_bias(Arc::clone(&m), Memsys5::lock_is_biased, &keys)
        {
            // The 100-byte request took two atoms.
            assert_eq!(seen[1], (m.atoms() * 64 - 128) as u64);
        }
    }

    #[test]
    fn atom_size_from_min() {
        for (min, atom) in [
            (0, 8),
            (1, 8),
            (8, 8),
            (9, 16),
            (64, 64),
            (65, 128),
            (4096, 4096),
            (4097, 4096),
            (1 << 30, 4096),
            ((1 << 30) + 1, 4096),
            (usize::MAX, 4096),
        ] {
            let m = Memsys5::new(64 * KIB, min).unwrap();
            assert_eq!(m.atom(), atom, "min {min}");
            assert_eq!(m.atoms(), 64 * KIB / (atom + 1), "min {min}");
            m.check();
        }
    }

    #[test]
    fn geometry_of_heaps_c_cannot_take() {
        // C's heap size is an int; past it, the atom count stops at 2^31 - 1.
        assert_eq!(geometry(i32::MAX as usize, 0), (3, i32::MAX as usize / 9));
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(geometry(9 << 30, 0), (3, 1 << 30));
            assert_eq!(geometry(18 << 30, 0), (3, MAX_BLOCKS));
        }
        assert_eq!(geometry(usize::MAX, 0), (3, MAX_BLOCKS));
        assert_eq!(geometry(usize::MAX, usize::MAX), (12, MAX_BLOCKS));
        assert_eq!(MAX_BLOCKS, u32::MAX as usize / 2);
        assert_eq!(geometry(0, 0), (3, 0));
    }

    #[test]
    fn roundup_table() {
        let m = Memsys5::new(64 * KIB, 64).unwrap();
        for (n, r) in [
            (0, 64),
            (1, 64),
            (64, 64),
            (65, 128),
            (128, 128),
            (129, 256),
            (256, 256),
            (257, 512),
            (511, 512),
            (513, 1024),
            (4368, 8192),
            (0x0fff_ffff, 0x1000_0000),
            (0x1000_0000, 0x1000_0000),
            (0x1000_0001, 0x2000_0000),
            (0x2000_0000, 0x2000_0000),
            (0x2000_0001, 0x4000_0000),
            (0x4000_0000, 0x4000_0000),
            // Above 1 GiB: refused by malloc; roundup stays >= n (C gives 0).
            (0x4000_0001, 0x4000_0001),
            (0x7fff_ff00, 0x7fff_ff00),
            (usize::MAX, usize::MAX),
        ] {
            assert_eq!(m.roundup(n), r, "roundup({n})");
        }
        let m8 = Memsys5::new(64 * KIB, 0).unwrap();
        for (n, r) in [(0, 8), (8, 8), (9, 16), (17, 32), (100, 128)] {
            assert_eq!(m8.roundup(n), r, "roundup({n}) with 8-byte atoms");
        }
    }

    #[test]
    fn sizes_and_alignment() {
        for min in [0, 16, 64] {
            let m = Memsys5::new(32 * KIB, min).unwrap();
            for n in [0, 1, 7, 8, 9, 63, 64, 65, 100, 1000, 4096, 4368, 9000] {
                let p = m.malloc(n).unwrap();
                m.check();
                assert_eq!(p.as_ptr().addr() % 8, 0, "alignment of {n}");
                assert_eq!(m.off(p) % m.atom(), 0);
                // SAFETY: live block of `m`.
                let s = unsafe { m.size(p) };
                assert_eq!(s, m.roundup(n), "size of {n} with min {min}");
                assert!(s >= n && s.is_power_of_two());
                fill(p, s, 0x5a);
                // SAFETY: live block of `m`, not used afterwards.
                unsafe { m.free(p) };
                m.check();
            }
        }
    }

    #[test]
    fn too_large_requests_fail_cleanly() {
        let m = Memsys5::new(64 * KIB, 0).unwrap();
        assert_eq!(m.largest_block(), 32 * KIB);
        ts::too_large_requests_fail_cleanly(&m, m.largest_block() + 1);
        ts::too_large_requests_fail_cleanly(&m, 1 << 30);
    }

    #[test]
    fn exhaustion_then_full_recovery() {
        // 249 atoms of 32 bytes: blocks of 128, 64, 32, 16, 8 and 1 atoms.
        let m = Memsys5::new(249 * 33, 32).unwrap();
        let n = m.atoms();
        assert_eq!(n, 249);
        let mut blocks = Vec::new();
        while let Some(p) = m.malloc(1) {
            fill(p, 32, blocks.len() as u8);
            blocks.push(p);
        }
        m.check();
        assert_eq!(blocks.len(), n, "every atom handed out");
        // The lone class-0 block at atom 248 goes first, then the class-3 block at 240 is split,
        // lowest half first (C memsys5 gives the same offsets: 7936, 7680, 7712, 7744).
        let first: Vec<usize> = blocks[..4].iter().map(|&p| m.off(p) / 32).collect();
        assert_eq!(first, [248, 240, 241, 242]);
        let mut rng = Rng(42);
        while !blocks.is_empty() {
            let p = blocks.swap_remove(rng.below(blocks.len()));
            // SAFETY: live block, freed once.
            unsafe { m.free(p) };
            m.check();
        }
        for k in 0..=LOGMAX {
            assert_eq!(
                m.free_list(k).len(),
                (n >> k) & 1,
                "list {k} after recovery"
            );
        }
        let p = m
            .malloc(m.largest_block())
            .expect("largest block after recovery");
        assert_eq!(m.off(p), 0);
        assert!(m.malloc(m.largest_block()).is_none());
        // SAFETY: live.
        unsafe { m.free(p) };
        m.check();
    }

    #[test]
    fn buddies_merge() {
        // 16 atoms of 8 bytes: heap 16 * 9 = 144 bytes, one top-level block of class 4.
        let m = Memsys5::new(144, 8).unwrap();
        assert_eq!(m.atoms(), 16);
        let p: Vec<_> = (0..4).map(|_| m.malloc(8).unwrap()).collect();
        let offs: Vec<usize> = p.iter().map(|&q| m.off(q) / 8).collect();
        assert_eq!(offs, [0, 1, 2, 3]);
        assert_eq!(m.free_list(2), [4]);
        assert_eq!(m.free_list(3), [8]);
        m.check();
        // SAFETY: each block is live and freed once.
        unsafe {
            m.free(p[1]);
            m.check();
            assert_eq!(m.free_list(0), [1]);
            m.free(p[2]);
            m.check();
            // 2 and 3 are not buddies of 1 (3 is live): both wait on list 0.
            assert_eq!(m.free_list(0), [2, 1]);
            m.free(p[0]);
            m.check();
            // 0 joins 1 into a class-1 block at 0.
            assert_eq!(m.free_list(0), [2]);
            assert_eq!(m.free_list(1), [0]);
            m.free(p[3]);
            m.check();
        }
        // 3 + 2 -> class 1 at 2, + 0 -> class 2 at 0, + 4 -> class 3, + 8 -> class 4.
        for k in 0..4 {
            assert!(m.free_list(k).is_empty(), "list {k}");
        }
        assert_eq!(m.free_list(4), [0]);
        assert_eq!(m.malloc(128).map(|q| m.off(q)), Some(0));
        m.check();
    }

    /// Byte offsets C memsys5 produced (mem5.c compiled with a stub header, heap 4096, min 16) for
    /// m(24) m(16) m(100) m(16) f(#1) m(8) f(#0) f(#2) m(300) m(16) m(40): placement and free-list
    /// order must match it call for call.
    #[test]
    fn placement_matches_c_trace() {
        let m = Memsys5::new(4096, 16).unwrap();
        assert_eq!((m.atom(), m.atoms(), m.largest_block()), (16, 240, 2048));
        let mut live: Vec<NonNull<u8>> = Vec::new();
        let mut got = Vec::new();
        let mut alloc = |m: &Memsys5, live: &mut Vec<_>, n: usize| {
            let p = m.malloc(n).unwrap();
            got.push(m.off(p));
            live.push(p);
            m.check();
        };
        alloc(&m, &mut live, 24);
        alloc(&m, &mut live, 16);
        alloc(&m, &mut live, 100);
        alloc(&m, &mut live, 16);
        // SAFETY: live blocks, each freed once.
        unsafe { m.free(live[1]) };
        m.check();
        alloc(&m, &mut live, 8);
        // SAFETY: as above.
        unsafe {
            m.free(live[0]);
            m.free(live[2]);
        }
        m.check();
        alloc(&m, &mut live, 300);
        alloc(&m, &mut live, 16);
        alloc(&m, &mut live, 40);
        assert_eq!(got, C_TRACE);
    }
    const C_TRACE: [usize; 8] = [3584, 3616, 3712, 3632, 3616, 3072, 3584, 3648];

    #[test]
    fn realloc_in_place_and_moving() {
        let m = Memsys5::new(64 * KIB, 64).unwrap();
        let p = m.malloc(40).unwrap();
        fill(p, 40, 0xa1);
        // SAFETY: `p` is live throughout; every successful realloc replaces it.
        unsafe {
            assert_eq!(m.realloc(p, 64), Some(p), "fits: same block");
            assert_eq!(m.realloc(p, 1), Some(p), "shrink: same block");
            assert_eq!(m.size(p), 64);
            let _blocker = m.malloc(64).unwrap(); // the buddy: no growth in place in C either
            let q = m.realloc(p, 65).unwrap();
            m.check();
            assert_ne!(q, p);
            assert_eq!(m.size(q), 128);
            assert!(holds(q, 40, 0xa1), "contents kept");
            fill(q, 128, 0xb2);
            let r = m.realloc(q, 5000).unwrap();
            m.check();
            assert_eq!(m.size(r), 8192);
            assert!(holds(r, 128, 0xb2));
            // The old blocks went back: 64 at p is free again.
            assert_eq!(m.malloc(64), Some(p));
            m.check();
        }
    }

    #[test]
    fn failed_realloc_keeps_the_block() {
        // 32 atoms of 64 bytes (heap 32 * 65), everything but one block taken.
        let m = Memsys5::new(32 * 65, 64).unwrap();
        assert_eq!(m.largest_block(), 2048);
        let p = m.malloc(1024).unwrap();
        let _q = m.malloc(512).unwrap();
        let _r = m.malloc(512).unwrap();
        fill(p, 1024, 0x3c);
        // SAFETY: `p` is live and stays live on failure.
        unsafe {
            assert!(m.realloc(p, 1025).is_none());
            m.check();
            assert!(holds(p, 1024, 0x3c));
            assert_eq!(m.size(p), 1024);
        }
    }

    #[test]
    fn init_like_mem5_test() {
        // mem5-1.2 / mem5-1.3: a 1-byte heap with min 2^30 (clamped to 4096) has no atom.
        for min in [1 << 30, (1 << 30) + 1] {
            let m = Memsys5::new(1, min).unwrap();
            assert_eq!(m.atoms(), 0);
            assert_eq!(m.init(), Err(InitError::NoMem), "min {min}");
            assert!(m.malloc(0).is_none());
            m.check();
        }
        // Smallest heaps around one 8-byte atom (8 bytes + 1 control byte).
        assert_eq!(Memsys5::new(8, 0).unwrap().init(), Err(InitError::NoMem));
        assert_eq!(Memsys5::new(0, 0).unwrap().init(), Err(InitError::NoMem));
        let one = Memsys5::new(9, 0).unwrap();
        assert_eq!(one.init(), Ok(()));
        let p = one.malloc(8).unwrap();
        assert!(one.malloc(1).is_none());
        one.check();
        // SAFETY: live.
        unsafe { one.free(p) };
        one.check();
        // mem5-1.1: 25000000 bytes, min 0.
        let m = Memsys5::new(25_000_000, 0).unwrap();
        assert_eq!(m.init(), Ok(()));
        assert_eq!(m.atoms(), 25_000_000 / 9);
        assert_eq!(m.largest_block(), 16 << 20);
        assert!(m.malloc(16 << 20).is_some());
    }

    #[test]
    fn reinit_keeps_live_blocks() {
        let m = Memsys5::new(16 * KIB, 64).unwrap();
        ts::init_keeps_live_blocks(&m);
        assert_eq!(m.malloc(m.largest_block()).map(|b| m.off(b)), Some(0));
    }

    #[test]
    fn foreign_pointers_are_ignored() {
        ts::foreign_pointers_are_ignored(&Memsys5::new(4 * KIB, 0).unwrap());
    }

    /// A large heap costs only the pages of its top-level blocks when laid out (C's layout: their
    /// control bytes and links), also after `init`; blocks handed out and written cost their own
    /// pages and little more: the links of the halves split off (one page each, at most LOGMAX
    /// per malloc) and a page of control bytes.
    #[test]
    #[cfg_attr(miri, ignore = "no mapping under Miri")]
    fn a_large_heap_is_touched_only_where_used() {
        let m = Memsys5::new(256 << 20, 64).unwrap();
        // One page for the link and one for the control byte of each top-level block, at most.
        let tops = m.atoms().count_ones() as usize;
        ts::touched_only_where_used(&m, 2 * tops * ts::page(), (4 * LOGMAX + 1) * ts::page());
        // All joined again: one free block per top-level block, one bit per bit of `nblock`.
        assert_eq!(
            m.fixed.parts()[0].seen.nonempty.load(Relaxed) as usize,
            m.atoms()
        );
    }

    /// `init` lays the heap out again after use by giving the control bytes' pages back, not
    /// by writing them: afterwards the heap is as new, and works.
    #[test]
    #[cfg_attr(miri, ignore = "no mapping under Miri")]
    fn relayout_gives_the_control_pages_back() {
        let m = Memsys5::new(8 << 20, 16).unwrap();
        if m.fixed.heap().resident_bytes().is_none() {
            return;
        }
        let fill_up = || {
            // 1 KiB blocks over the whole heap: a control byte written every 64 bytes.
            let v: Vec<_> = std::iter::from_fn(|| m.malloc(KIB)).collect();
            assert_eq!(v.len(), m.atoms() * m.atom() / KIB);
            m.check();
            v
        };
        for p in fill_up() {
            // SAFETY: live blocks, freed once.
            unsafe { m.free(p) };
        }
        let full = m.fixed.heap().resident_bytes().unwrap();
        m.init().unwrap();
        let after = m.fixed.heap().resident_bytes().unwrap();
        // The whole pages of control bytes went back, but for those of the top-level blocks.
        let (from, to) = (
            m.ctrl.next_multiple_of(ts::page()),
            (m.ctrl + m.atoms()) / ts::page(),
        );
        let gone = (to * ts::page()).saturating_sub(from) / ts::page();
        let tops = m.atoms().count_ones() as usize;
        assert!(
            after <= full - (gone - tops) * ts::page(),
            "init: {full} -> {after} bytes resident ({gone} pages of control bytes)"
        );
        m.check();
        for p in fill_up() {
            // SAFETY: as above.
            unsafe { m.free(p) };
        }
        m.check();
    }

    #[test]
    #[should_panic(expected = "live count")]
    fn checker_catches_a_corrupt_control_byte() {
        let m = Memsys5::new(4 * KIB, 0).unwrap();
        let p = m.malloc(8).unwrap();
        m.check();
        let i = m.off(p) / m.atom();
        // Forget that the block is in use: the checker must notice.
        m.lock().set_ctrl(i, free_ctrl(0));
        m.check();
    }

    #[test]
    #[should_panic(expected = "free buddies")]
    fn checker_catches_unjoined_buddies() {
        let m = Memsys5::new(144, 8).unwrap();
        let a = m.malloc(8).unwrap();
        let b = m.malloc(8).unwrap();
        assert_eq!((m.off(a), m.off(b)), (0, 8));
        {
            // Free atoms 0 and 1 by hand, without joining the two buddies.
            let mut l = m.lock();
            for i in [0, 1] {
                l.set_ctrl(i, free_ctrl(0));
                l.link(i, 0);
                l.st.live -= 1;
            }
        }
        m.check();
    }

    /// Seeded random sequences of malloc / free / realloc, contents tagged and the invariants
    /// checked after every step, for three minimum requests.
    #[test]
    fn random_sequence() {
        // (steps, heap, medium and large request sizes, most live blocks); smaller under Miri.
        let (steps, heap, mid, big, cap) = if cfg!(miri) {
            (200, 4 * KIB, 256, 2 * KIB, 12)
        } else {
            (5_000, 64 * KIB, 512, 4 * KIB, 60)
        };
        let sizes = Sizes {
            small: 64,
            mid,
            big,
        };
        for (seed, min) in [(1u64, 0usize), (2, 64), (3, 24)] {
            let m = Memsys5::new(heap, min).unwrap();
            ts::random_sequence(&m, seed, steps, &sizes, cap, |_| {}).assert_exercised(steps);
            ts::assert_recovered(&m);
        }
    }

    proptest::proptest! {
        #![proptest_config(ts::proptest_config())]
        /// Any sequence keeps the invariants and the contents of live blocks, and everything is
        /// recovered at the end.
        #[test]
        fn any_sequence(ops in ts::ops(120), min in 0usize..100) {
            let m = Memsys5::new(if cfg!(miri) { 2 * KIB } else { 8 * KIB }, min).unwrap();
            ts::any_sequence(&m, ops)?;
        }
    }

    #[test]
    fn two_threads() {
        let m = Memsys5::new(if cfg!(miri) { 8 * KIB } else { KIB * KIB }, 0).unwrap();
        ts::two_threads(Arc::new(m), if cfg!(miri) { 200 } else { 50_000 }, 300);
    }

    #[test]
    fn shards_cut_the_heap_and_fall_back() {
        // 4 shards of 16 atoms of 64 bytes (plus control bytes).
        let m = Memsys5::with_shards(64 * 65, 64, 4).unwrap();
        assert_eq!((m.shards(), m.atoms(), m.largest_block()), (4, 64, 16 * 64));
        m.check();
        // A block larger than a shard can never be had.
        assert!(m.malloc(16 * 64 + 1).is_none());
        // Every atom can be handed out: the thread's own shard first, then the others.
        let own = m.fixed.preferred_part();
        let mut blocks = Vec::new();
        while let Some(p) = m.malloc(64) {
            blocks.push(p);
            m.check();
        }
        assert_eq!(blocks.len(), 64, "all four shards used");
        let shard_of = |p: NonNull<u8>| m.fixed.part_of_unit(m.off(p) / 64);
        assert!(
            blocks[..16].iter().all(|&p| shard_of(p) == own),
            "the own shard is used first"
        );
        let mut offs: Vec<usize> = blocks.iter().map(|&p| m.off(p)).collect();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), 64, "no block handed out twice");
        // Freed blocks go back to their own shard and join up again.
        for p in blocks {
            // SAFETY: live blocks of `m`, freed once.
            unsafe { m.free(p) };
        }
        m.check();
        for p in 0..4 {
            let l = m.lock_shard::<true>(p);
            assert_eq!(
                (l.st.live, l.st.free[4]),
                (0, 0),
                "shard {p} is one free block again"
            );
        }
    }

    #[test]
    fn shards_are_clamped_to_the_atoms() {
        let m = Memsys5::with_shards(3 * 9, 8, 64).unwrap();
        assert_eq!((m.atoms(), m.shards()), (3, 3));
        m.check();
        let m = Memsys5::with_shards(100 * 65, 64, 3).unwrap();
        // 100 atoms: 33 + 33 + 34.
        assert_eq!(
            m.fixed.parts().iter().map(|p| p.units).collect::<Vec<_>>(),
            [33, 33, 34]
        );
        m.check();
        let one = Memsys5::with_shards(1 << 20, 64, 1).unwrap();
        let plain = Memsys5::new(1 << 20, 64).unwrap();
        assert_eq!((one.shards(), one.atoms()), (1, plain.atoms()));
    }

    #[test]
    fn shards_with_threads_freeing_each_others_blocks() {
        let m = Memsys5::with_shards(4 << 20, 64, 2).unwrap();
        ts::freed_by_another_thread(Arc::new(m), if cfg!(miri) { 200 } else { 2000 });
    }
}

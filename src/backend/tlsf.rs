//! `tlsf`: a Two-Level Segregated Fit allocator over one fixed heap (no counterpart in SQLite).
//!
//! # When to use it
//!
//! Like [`memsys5`](super::memsys5), when SQLite must live inside a fixed amount of memory taken
//! once, up front, with nothing asked of the system afterwards; unlike it, a request costs its
//! size rounded up by less than 1/256 (plus an 8-byte header) rather than up to a power of two, so
//! the same heap holds up to about twice as many bytes of SQLite's data. The price: no proven
//! bound on fragmentation (see "Fragmentation"). Choose `memsys5` when a request must provably
//! never fail below a computable heap size, `tlsf` when memory is tight and a measured margin is
//! enough.
//!
//! # Algorithm
//!
//! The algorithm of M. Masmano, I. Ripoll, A. Crespo and J. Real ("TLSF: a New Dynamic Memory
//! Allocator for Real-Time Systems", ECRTS 2004), with one change to the request rounding.
//!
//! - The heap is a sequence of *blocks* that tile it, each free or in use. Every block starts
//!   with an 8-byte header; its *usable size* `u` is its size minus the header.
//! - Free blocks are filed by usable size into *size classes*, two levels deep. Below 2048
//!   bytes a class is one exact multiple of 8 (first-level index 0, second-level index `u / 8`).
//!   From 2048 up, the first level is the power of two `2^f <= u < 2^(f+1)` (index `f - 10`)
//!   and the second level cuts that range into `SL = 256` equal classes of `2^(f-8)` bytes
//!   (index `(u >> (f - 8)) & 255`). Classes are numbered in size order, `c = 256 · fl + sl`
//!   (5632 of them). Each class has a doubly linked free list; one bit per class, in 88 64-bit
//!   words in class order, says which lists are non-empty, and one bit per word in two summary
//!   words says which of those words are not zero.
//! - A request of `n` bytes is rounded up to the lower boundary of a class (the *class rounding*
//!   below: to a multiple of 8, at least 8, and from 4096 bytes up to a multiple of `2^(f-8)`).
//!   Every free block on that class's list, and on every list above it, is large enough; two
//!   find-first-set instructions on the bitmaps find the first non-empty list at or above the
//!   class (good fit), without any search of a list. The head of that list is taken; when what
//!   is left after the request is at least a minimal block (16 bytes), it is split off as a new
//!   free block and filed by its own size.
//! - Freeing a block joins it at once with its physical neighbours when they are free (the
//!   previous one is found through the offset kept in the header, the next one by adding the
//!   size), and files the result. So no two free blocks are ever adjacent.
//! - In front of that core, one change of ours: freed blocks under 1 KiB are first kept, unjoined,
//!   in small per-class *quick caches* for the next request of the same size (see "Quick
//!   caches"; `cache=0` turns them off).
//! - Every operation is O(1): a bounded number of bitmap and list operations, no loop over blocks
//!   or lists; with the quick caches, all but one: the flush of the caches by a request that
//!   finds no free block large enough (at most `128 × cache` blocks joined).
//!
//! **The change: requests rounded to their class boundary.** Plain TLSF rounds a request only
//! to the next class when searching, so that any block found is large enough, and then hands out
//! just the request: a freed block of exactly the request's size sits in the request's *own*
//! class, which the search skips; it is found again only by a smaller request. SQLite's page
//! cache is exactly that pattern (4360-byte lines for 4096-byte pages, allocated and freed over
//! and over): the holes left by freed lines would stay unused while new lines are cut from the
//! rest of the heap. Here a request gets the whole class boundary, so a block freed by a request
//! of some size has at least that class's lower boundary as usable size and is on a list the
//! next request of the same size searches: it is found again (the unit test
//! `page_cache_lines_reuse_their_holes` shows the same place coming back).
//!
//! **Cost of the rounding.** Below 4096 bytes a request is rounded to a multiple of 8 only
//! (classes are 8 bytes wide up to there). From `2^f` (`f >= 12`) up, classes are `2^(f-8)`
//! bytes wide, so the rounding adds at most `2^(f-8) - 1` bytes to a request of more than `2^f`
//! bytes: strictly less than 1/256 of the request (0.39%), at most 15 bytes on requests of
//! 4–8 KiB. A 4360-byte request (a page-cache line for 4096-byte pages) gets 4368 usable bytes
//! (0.18%). Measured on speedtest1 (`bench/smallest_heap.py`, `--size 25`, bisection to 0.1%),
//! the smallest heap that runs it, as a multiple of the bytes SQLite really needs:
//!
//! | `SL` | `--memdb` | tmpfs file |
//! |---|---|---|
//! | 64 | 1.023 | 1.060 |
//! | 128 | 1.015 | 1.051 |
//! | 256 | 1.011 | 1.049 |
//!
//! (the first row bisected to 1%). The file workload holds about a thousand page-cache lines at
//! its peak, each rounded by `2^(12-log2 SL)` bytes at most: that rounding is what `SL` buys
//! back. The price of 256: 22 KiB of list heads per part, and a second summary word (looked at
//! only when a request finds nothing in its own word of the class bitmap). Add the 8-byte
//! header, and up to 8 more bytes when a split would leave less than a minimal block (see
//! `roundup` below).
//!
//! # Quick caches (`tlsf:cache=N`)
//!
//! Why: SQLite frees and allocates small blocks of the same few sizes over and over. With every
//! free joined at once, most of TLSF's time goes to joining a freed block with its free
//! neighbours and, at the next request of that size, to splitting the same bytes off again:
//! replaying speedtest1's calls (`bench/micro.c --trace`), a build whose free never joins takes
//! 0.67 × C memsys5's time, plain TLSF 0.94–1.1 × (bench/notes.md, 2026-12-06). The caches are
//! the answer of glibc's and jemalloc's thread caches, kept here inside each part (under its
//! lock, not per thread) and bounded.
//!
//! - Each class below 1 KiB of usable size (128 classes of 8 bytes) has a cache: a LIFO stack of
//!   at most `N` blocks (`cache=N`, default 16, at most 64; 0: no caching). A cached block keeps
//!   its place and size; it is on no free list, its neighbours are not joined with it, and it
//!   counts as free in the part's figures (`used`, `free_bytes`).
//! - `free` of a block under 1 KiB pushes it on its class's cache when the cache is not full and
//!   the part's live bytes are below 7/8 of its length. Otherwise the block is joined at once,
//!   as in plain TLSF; and when the part is that full, one cached block (of the smallest class
//!   that has one) is joined too, so that the caches drain as the part fills up.
//! - `malloc` of a class that has a cached block pops the one cached last: an exact fit (a class
//!   below 2 KiB holds one size), with no bitmap search, no split and no list change.
//! - A request that finds no free block large enough first joins every cached block (the
//!   flush) and searches again: a request fails only when no free block is large enough with
//!   every free block joined. The flush is the one operation that is not O(1): up to
//!   `128 × N` blocks (2048 by default; none while the part has room, see above). With
//!   `cache=0` every call is O(1).
//! - A `realloc` that would grow into a cached next neighbour takes it out of its cache and joins
//!   it first (and the cached blocks after it, as far as the growth needs), so a block grows in
//!   place whenever it would have with every free joined at once. Finding a cached block in its
//!   cache is a walk of at most `N` links, taken only there.
//!
//! Measured (`make bench`, docs/BENCHMARKS.md; by hand, bench/notes.md): the trace replay in
//! 0.82–0.85 × C memsys5's time with the caches (77% of its mallocs served from one), 0.94–1.1 ×
//! without; the smallest heap that runs speedtest1 `--size 25` on a file is 4.384 MiB with them,
//! 4.381 MiB without (bisection to 0.02%): the caches change where later blocks are placed, not
//! how much the heap must hold.
//!
//! # `size` and `roundup`
//!
//! `size` is the block's usable size, read from its header: exact. `roundup(n)` is the class
//! rounding of `n` (for `n` above 2 GiB, `n` itself: such requests fail, as in `memsys5`).
//! `malloc(n)` gives a block whose `size` is `roundup(n)`, except when the free block it is
//! cut from would leave a remainder of 8 bytes (less than a minimal block of 16): then the block
//! keeps those 8 bytes and `size` is `roundup(n) + 8`. So `roundup(n) <= size <= roundup(n) + 8`.
//!
//! # `realloc`
//!
//! - A new size up to the current usable size keeps the block; when what is past the new size's
//!   class rounding is a minimal block or more, it is split off as a free block (joined with a
//!   free next neighbour).
//! - A larger size grows the block in place when the next physical block is free and the two
//!   together are large enough (splitting off the rest when it can stand alone).
//! - Otherwise a new block is allocated, the old usable bytes copied (outside the lock), the
//!   old block freed. A realloc that cannot be served leaves the block untouched.
//! - With the valgrind/ASan marking on, the block is never resized in place (only kept as it is
//!   or moved), so that the tools' view of a live block is always one whole pool chunk.
//!
//! # Block layout
//!
//! Offsets are bytes from the start of the block's part (see "Shards"), multiples of 8, kept in
//! `u32`. A block of `s` bytes at offset `o`:
//!
//! ```text
//!  o         o+4        o+8                                              o+s
//!  | prev|P  | size|F   | user bytes (usable size s - 8) ...............|   in use
//!  | prev|P  | size|F   | next free | prev free | (unused) ............|   free
//!  | prev|P  | size|Q   | next cached | (unused) .....................|   cached
//!    word 0    word 1     o+8           o+12
//! ```
//!
//! - word 0: the offset of the previous physical block (0 for the first block), bit 0 (`P`,
//!   `PREV_FREE`) set when that block is free. Written whenever the previous block changes,
//!   so it is always exact (not only while the previous block is free).
//! - word 1: the block's size in bytes (header included, a multiple of 8, at least 16), bit 0
//!   (`F`, `FREE`) set when the block is free. Word 1 of a block in use changes only through an
//!   operation on that block itself (free, realloc), which its owner calls.
//! - in a free block, bytes 8–15: the next and previous blocks on its free list, as *links*:
//!   offset / 8 (so that a link read from the heap needs only a bound check), `u32::MAX` for
//!   none. The list heads are links too.
//! - a cached block (see "Quick caches") has bit 1 (`Q`, `QUICK`) of word 1 set and `F` clear:
//!   to its neighbours it is a block in use (their `P` flag is clear, nothing joins with it), to
//!   `free`, `size` and `realloc` it is not a live block (a double free of it is ignored). Bytes
//!   8–11: the next block in its cache, as a link (a cache is singly linked: a free into it
//!   writes only the block's own line; a cached block is looked for down its cache only when a
//!   `realloc` grows into it).
//!
//! The pointer handed out is `o + 8` from the part's start: 8-aligned (the heap base is
//! 64-aligned, parts start at multiples of 8). The last block ends at the end of its part; there
//! is no sentinel block (a block is the last one when `o + s` is the part's length).
//!
//! # Limits
//!
//! A part is at most `4 GiB - 8` bytes (offsets and sizes in `u32`): with `heap` above
//! `shards × 4 GiB` the rest of the buffer is left unused. A request above 2 GiB fails. Part
//! lengths are rounded down to a multiple of 8; a part shorter than 16 bytes holds no block.
//!
//! # Shards (`tlsf:shards=N`)
//!
//! The heap is cut into parts by the fixed heap that `memsys5` and `memsys3` use too
//! (`src/backend/fixed.rs`, in 8-byte units): `N` consecutive parts of `heap / N` bytes (rounded
//! down to 8; the last takes the remainder), each an independent TLSF heap with its own lock,
//! lists and bitmaps. A thread allocates from the part of its counters slot
//! (`thread_index() % N`) and, when that part cannot serve the request, from the next ones in
//! turn. A block is freed into the part its address lies in. Requests larger than a part fail.
//! `N` is clamped so that every part has at least 64 bytes.
//!
//! # What is touched when
//!
//! The buffer is fresh zero pages backed only when written (`src/heap.rs`). Laying a part out
//! writes the 16 bytes of header and links of its one free block; nothing else. A malloc writes
//! the header of the block it returns, of the remainder it splits off (and its links) and
//! word 0 of the next block (from a quick cache: word 1 of the block); a free the headers and
//! links of the blocks it joins and word 0 of the next block (into a quick cache: words 1 and 2
//! of the block). `init` with no block live lays every
//! part out again (16 bytes each; old headers in the heap are unreachable and need not be
//! cleared).
//!
//! # Invariants (checked after every operation of the unit tests by `check`)
//!
//! 1. Walking each part from offset 0 by block size visits blocks of at least 16 bytes,
//!    multiples of 8, ending exactly at the part's length (or no block in a part under 16 bytes).
//! 2. Word 0 of each block holds the previous block's offset and its free flag (0 and clear for
//!    the first block).
//! 3. No two adjacent blocks are free.
//! 4. A block is free exactly when it is on the list of the class of its usable size, once;
//!    list links are symmetric and the head's `prev` is none; bit `c` of the class bitmap is set
//!    exactly when list `c` is not empty, bit `w` of the summary exactly when word `w` of the
//!    class bitmap is not 0; `top` is one more than the highest class whose bit is set (0: none).
//! 5. The bytes of live blocks recorded for the part (`Seen::used`, which `footprint` reads) are
//!    exact, so they are 0 exactly when no block is live (what `init` asks); the published
//!    largest request is the lower boundary of the class `top - 1`.
//! 6. A block is cached exactly when it is in the quick cache of the class of its usable size
//!    (below 1 KiB), once; a cache holds at most `cache` blocks, and its count and the part's
//!    total of cached blocks agree with the caches. No block is both free and cached. The room
//!    below which frees are cached is 7/8 of the part.
//!
//! # Fragmentation
//!
//! Internal: the 8-byte header, the class rounding (under 1/256 of the request, 8-byte
//! granularity below 4 KiB), and at most 8 bytes of a remainder too small to split.
//!
//! The quick caches hold freed blocks back from joining, but never make a request fail: they
//! are flushed before one would. What they change is where later blocks go (see "Quick
//! caches" for the measured cost: under 0.1% of the smallest heap).
//!
//! External: TLSF joins free neighbours at once and takes the first block of the smallest
//! non-empty class that fits (good fit, close to best fit). Masmano et al. measure low
//! fragmentation on real and synthetic workloads, but give no worst-case bound, and none is known
//! for this policy: an adversarial sequence of mallocs and frees can leave the free memory in
//! holes that are each too small for the next request, so in the worst case the heap a workload
//! needs is not bounded by its peak live bytes. J. M. Robson (JACM 1974) showed that every
//! allocator that does not move blocks can be forced, in the worst case, to use a heap of the
//! order of `M · log2(n)` for peak live memory `M` and largest request `n`; `memsys5`'s buddy
//! system comes with a matching *upper* bound (`M · (1 + log2(n) / 2)`, reported as
//! `needed_bytes` in its footprint), which is a guarantee, at the price of up to 50% lost to
//! power-of-two rounding on every block. `tlsf` reports no `needed_bytes`: there is nothing to
//! compute it from. Watch `largest_free_block_bytes` against the largest request instead.
//!
//! # Footprint
//!
//! [`footprint`](MemMethods::footprint) reports `heap_bytes` (the buffer of `heap=`),
//! `free_bytes` (bytes of free blocks, their headers included: the parts' lengths minus the
//! sizes of the live blocks, headers included; cached blocks count as free) and
//! `largest_free_block_bytes` (the largest request that can be served now: the lower boundary
//! of the highest non-empty class of any part, which every block on that list reaches, and
//! which a request above it would exceed since it is rounded to a higher class; cached blocks,
//! each under 1 KiB, are left out of it, so it can be low by what a flush would join). As in
//! `memsys5`, both are published under each part's lock with relaxed stores of two atomics next
//! to it and read without any lock.
//!
//! # Locking and marking
//!
//! tlsf follows the fixed heap's "Locking and marking rules" (`src/backend/fixed.rs`): each part's
//! state behind its own lock (biased to the first thread that takes it unless the spec says
//! `bias=off`), the pool marking for valgrind and ASan, `init`'s re-layout when no block is live,
//! and the copy of a moving realloc with no lock held. What is tlsf's own:
//!
//! - Whether the tools are marking is asked once per call (`Locked<MARK>`); with them, a block in
//!   use is addressable for its usable size, and headers and links stay no-access, made
//!   accessible around each access with the lock held. A cached block is a freed chunk to the
//!   tools (it is marked free before it is cached): a use after free of it is reported. A write
//!   past a block's usable size hits the next block's header and is reported.
//! - `size` reads the block's header without the lock when nothing is marked (word 1 of a live
//!   block changes only through calls on that block), and under the lock when the tools are
//!   marking (another thread's call on the previous block marks the header's word 0 around its
//!   write).
//!
//! A pointer given to `free`, `size` or `realloc` that is plainly not a live block (outside the
//! heap's parts, misaligned, or whose header is not that of a block in use that fits in its part)
//! is ignored (`size` 0, realloc `None`). A corrupt link or offset read from the heap (a program
//! writing into a block it freed) stops the process with a panic rather than letting the
//! allocator write outside its part.

use super::fixed::{fixed_heap_api, Fixed, Part, PartGuard};
use crate::counters::Stats;
use crate::marking;
use crate::methods::{round8, Held, InitError, MemMethods};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// log2 of the number of second-level classes per first-level range.
const SL_LOG: u32 = 8;
/// Second-level classes per first-level range.
const SL: usize = 1 << SL_LOG;
/// Below this usable size, classes are exact multiples of 8 (first-level index 0).
const SMALL: usize = SL << 3;
/// First-level ranges: index 0 below [`SMALL`], then one per power of two from `SMALL` to
/// `2^31`.
const FL_COUNT: usize = 30 - SL_LOG as usize;
/// Size classes, numbered `SL · fl + sl` in size order.
const CLASSES: usize = FL_COUNT * SL;
/// 64-bit words of the class bitmap.
const WORDS: usize = CLASSES / 64;
/// 64-bit words of the summary bitmap (one bit per word of the class bitmap).
const SUMMARY: usize = WORDS.div_ceil(64);
/// Header bytes in front of every block.
const HEADER: usize = 8;
/// Smallest block: a header and the two free-list links.
const MIN_BLOCK: usize = 16;
/// Flag in word 0: the previous physical block is free.
const PREV_FREE: u32 = 1;
/// Flag in word 1: this block is free.
const FREE: u32 = 1;
/// "No block" in a free-list link.
const NONE: u32 = u32::MAX;
/// Flag in word 1: this block is in a quick cache (freed by its owner, not joined, on no list).
const QUICK: u32 = 2;
/// Classes with a quick cache: usable sizes below [`QUICK_BELOW`] (1 KiB), one multiple of 8
/// each, class `u / 8`.
const QUICK_CLASSES: usize = 128;
/// Usable sizes below this are cached.
const QUICK_BELOW: usize = QUICK_CLASSES << 3;
// The caches are indexed by `u / 8` on the hot paths and by `class_of(u)` elsewhere: the same
// below SMALL, where classes are the multiples of 8.
const _: () = assert!(QUICK_BELOW <= SMALL);
/// Blocks a quick cache of one class holds by default (`tlsf:cache=N`).
pub const DEFAULT_CACHE: usize = 16;
/// Most blocks a quick cache of one class may hold (`cache=` is checked against it).
pub const MAX_CACHE: usize = 64;
/// Largest part: offsets and sizes fit in a `u32` with the low bits for flags.
const MAX_PART: usize = (u32::MAX as usize) & !7;
/// Largest request served.
const MAX_REQUEST: usize = 1 << 31;
/// Smallest part when the heap is cut into shards.
const MIN_SHARD: usize = 64;

/// Class `SL · fl + sl` of a usable size `u` (`u < 2^32`), rounding down: where a free block of
/// usable size `u` is filed. From [`SMALL`] up, `u >> (f - 7)` is `SL + sl`, so adding
/// `SL · (f - 10)` gives `SL · (f - 9) + sl`.
#[inline(always)]
fn class_of(u: usize) -> usize {
    if u < SMALL {
        u >> 3
    } else {
        let f = u.ilog2();
        (((f - SL_LOG - 3) as usize) << SL_LOG) + (u >> (f - SL_LOG))
    }
}

/// Lower boundary (usable bytes) of class `c`.
#[inline(always)]
const fn class_start(c: usize) -> usize {
    if c < SL {
        c << 3
    } else {
        (SL + (c & (SL - 1))) << ((c >> SL_LOG) + 2)
    }
}

/// The class rounding of a request of `n` bytes: the smallest class boundary at least `n` (and
/// at least 8), or `None` above [`MAX_REQUEST`].
#[inline(always)]
fn round_class(n: usize) -> Option<usize> {
    if n > MAX_REQUEST {
        return None;
    }
    let u = round8(n).max(8);
    if u < SMALL {
        return Some(u);
    }
    let w = 1usize << (u.ilog2() - SL_LOG);
    Some((u + w - 1) & !(w - 1))
}

/// A Two-Level Segregated Fit allocator over one fixed heap.
pub struct Tlsf {
    /// The heap cut into parts of 8-byte units (one unless `shards=N`), each an independent
    /// TLSF heap with its own lock, state and published figures (`src/backend/fixed.rs`). A
    /// part's bytes past [`MAX_PART`] and the heap's last bytes under 8 are left unused.
    fixed: Fixed<State, Seen>,
}

/// A part of the heap with its lock held (see [`Locked`]).
type Guard<'a> = PartGuard<'a, State, Seen>;

/// Figures of a part published for `footprint`: written with the part's lock held by relaxed
/// stores, read by relaxed loads without the lock (see "Footprint").
struct Seen {
    /// Bytes of the part's live blocks, headers included: the part's only record of them
    /// (written under the lock, so its relaxed load and store there are exact), 0 exactly when no
    /// block is live; the rest of the part, once laid out with a block, is in free blocks.
    used: AtomicUsize,
    /// The largest request the part can serve now, in bytes (0: none).
    largest: AtomicUsize,
}

/// Mutable state of a part (behind its lock; the part's headers and links are only touched with
/// it held).
struct State {
    /// Bit `w & 63` of `summary[w >> 6]` set when `words[w]` is not 0.
    summary: [u64; SUMMARY],
    /// Bit `c & 63` of `words[c >> 6]` set when the list of class `c` is not empty.
    words: [u64; WORDS],
    /// Head of the free list of each class: a block's link (its offset / 8), or [`NONE`].
    heads: [u32; CLASSES],
    /// One more than the highest class whose list is not empty (0: none); the figure published
    /// as `largest` is its lower boundary, stored when it changes.
    top: usize,
    /// Head of the quick cache of each class below [`QUICK_CLASSES`]: a block's link, or
    /// [`NONE`]; the blocks of a cache are linked through word 2.
    quick: [u32; QUICK_CLASSES],
    /// Blocks in each quick cache.
    quick_n: [u8; QUICK_CLASSES],
    /// Blocks in all quick caches.
    cached: usize,
    /// Blocks a quick cache holds at most (`cache=`; 0: no caching). Kept by `reset`.
    cap: u8,
    /// Frees are cached only while the part's live bytes are below this: 7/8 of its length
    /// (set by `layout`).
    room: usize,
}

impl State {
    fn empty(cap: u8) -> State {
        State {
            summary: [0; SUMMARY],
            words: [0; WORDS],
            heads: [NONE; CLASSES],
            top: 0,
            quick: [NONE; QUICK_CLASSES],
            quick_n: [0; QUICK_CLASSES],
            cached: 0,
            cap,
            room: 0,
        }
    }

    /// Back to [`empty`](Self::empty) with the same `cap`, in place (a new value would be built
    /// on the stack and copied: tens of KiB).
    fn reset(&mut self) {
        self.summary.fill(0);
        self.words.fill(0);
        self.heads.fill(NONE);
        self.top = 0;
        self.quick.fill(NONE);
        self.quick_n.fill(0);
        self.cached = 0;
    }
}

impl Tlsf {
    /// A TLSF allocator over a new heap of `heap` bytes, laid out at once (it works without
    /// [`init`](MemMethods::init)). `None` only when the buffer cannot be allocated.
    pub fn new(heap: usize) -> Option<Tlsf> {
        Tlsf::with_shards(heap, 1)
    }

    /// As [`with_cache`](Self::with_cache) with quick caches of [`DEFAULT_CACHE`] blocks.
    pub fn with_shards(heap: usize, shards: usize) -> Option<Tlsf> {
        Tlsf::with_cache(heap, shards, DEFAULT_CACHE)
    }

    /// As [`new`](Self::new), with the heap cut into `shards` independent parts (see "Shards")
    /// and quick caches of at most `cache` blocks per class (see "Quick caches"; 0: none, every
    /// free joined at once). `shards` is clamped to `1..=` the number of 64-byte pieces of the
    /// heap, `cache` to [`MAX_CACHE`].
    // Out of line: a part's state is built on the stack before it moves into the part, and a
    // caller's frame should not carry (and probe) those pages.
    #[inline(never)]
    pub fn with_cache(heap: usize, shards: usize, cache: usize) -> Option<Tlsf> {
        let cap = cache.min(MAX_CACHE) as u8;
        let n = shards.clamp(1, (heap / MIN_SHARD).max(1));
        let fixed = Fixed::new(heap, 3, heap >> 3, n, MAX_PART, || {
            let seen = Seen {
                used: AtomicUsize::new(0),
                largest: AtomicUsize::new(0),
            };
            (State::empty(cap), seen)
        })?;
        let t = Tlsf { fixed };
        for p in 0..t.fixed.shards() {
            t.lock_part::<true>(p).layout();
        }
        Some(t)
    }

    /// The largest request an empty heap can serve (0 when no part can hold a block).
    pub fn largest_block(&self) -> usize {
        let len = self.fixed.parts().iter().map(|p| p.len).max().unwrap_or(0);
        if len < MIN_BLOCK {
            return 0;
        }
        class_start(class_of(len - HEADER)).min(MAX_REQUEST)
    }

    /// Lock part `p`, with the tools' marking of headers and links when `MARK`
    /// (`marking::active()`; see "Locking and marking").
    #[inline(always)]
    fn lock_part<const MARK: bool>(&self, p: usize) -> Locked<'_, MARK> {
        let g = self.fixed.lock(p);
        Locked {
            len: g.view.len(),
            g,
        }
    }

    /// The part and in-part block offset of user pointer `ptr`, when it lies where a block's
    /// user bytes could start.
    #[inline(always)]
    fn locate(&self, ptr: NonNull<u8>) -> Option<(usize, usize)> {
        self.locate_in(ptr).map(|(p, _, o)| (p, o))
    }

    /// [`locate`](Self::locate), with the part itself.
    #[inline(always)]
    fn locate_in(&self, ptr: NonNull<u8>) -> Option<(usize, &Part<State, Seen>, usize)> {
        let off = self.fixed.heap_offset(ptr)?;
        let parts = self.fixed.parts();
        // One part: its index a constant, so no bounds check or index arithmetic (`xSize` asks
        // this about twice per malloc+free pair).
        let (p, part) = if parts.len() == 1 {
            (0, &parts[0])
        } else {
            let p = self.fixed.part_of(off);
            (p, &parts[p])
        };
        let rel = off.checked_sub(part.start + HEADER)?;
        (rel % 8 == 0 && rel + MIN_BLOCK <= part.len).then_some((p, part, rel))
    }

    /// Serve a request of class-rounded usable size `r`: the pointer and its usable size.
    #[inline(always)]
    fn alloc(&self, r: usize) -> Option<(NonNull<u8>, usize)> {
        if self.fixed.shards() == 1 && !marking::active() {
            // One part, no marking: the path to keep short (the others are a call away).
            let l = &mut self.lock_part::<false>(0);
            let (o, s) = l.alloc(r)?;
            // SAFETY: `alloc` returns a block offset `o` with `o + s <= len` (checked when the
            // block was taken off its list), so `o + HEADER < len`.
            return Some((unsafe { l.g.view.ptr(o + HEADER) }, s - HEADER));
        }
        self.alloc_other(r)
    }

    /// [`alloc`](Self::alloc) with shards or with the marking on.
    #[inline(never)]
    fn alloc_other(&self, r: usize) -> Option<(NonNull<u8>, usize)> {
        if marking::active() {
            self.alloc_in::<true>(r)
        } else {
            self.alloc_in::<false>(r)
        }
    }

    fn alloc_in<const MARK: bool>(&self, r: usize) -> Option<(NonNull<u8>, usize)> {
        let (p, o, s) = self.fixed.try_parts(|p| {
            let (o, s) = self.lock_part::<MARK>(p).alloc(r)?;
            Some((p, o, s))
        })?;
        let ptr = self
            .fixed
            .heap()
            .ptr(self.fixed.parts()[p].start + o + HEADER);
        if MARK {
            self.fixed.mark_alloc(ptr, s - HEADER);
        }
        Some((ptr, s - HEADER))
    }

    /// Free the block at in-part offset `o` of part `p` (user pointer `ptr`): its usable size,
    /// or 0 when `o` does not hold a live block.
    #[inline(always)]
    fn release_in<const MARK: bool>(&self, ptr: NonNull<u8>, p: usize, o: usize) -> usize {
        let mut l = self.lock_part::<MARK>(p);
        let Some((b, s)) = l.live_size(o) else {
            return 0;
        };
        if MARK {
            // Marked before `release` writes links into the block.
            self.fixed.mark_free(ptr, s - HEADER);
        }
        l.release(b, s);
        s - HEADER
    }

    /// [`release_in`](Self::release_in) with shards or with the marking on.
    #[inline(never)]
    fn release_other(&self, ptr: NonNull<u8>, p: usize, o: usize) -> usize {
        if marking::active() {
            self.release_in::<true>(ptr, p, o)
        } else {
            self.release_in::<false>(ptr, p, o)
        }
    }

    /// The first half of `realloc` under part `p`'s lock: `Ok` when the block at `o` was kept
    /// or resized in place (or is not live: `Ok(false)`), else `Err(old usable size)`.
    fn resize_in<const MARK: bool>(
        &self,
        p: usize,
        o: usize,
        new_size: usize,
        r: usize,
    ) -> Result<bool, usize> {
        let mut l = self.lock_part::<MARK>(p);
        let Some((b, s)) = l.live_size(o) else {
            return Ok(false);
        };
        if MARK {
            // Never resized in place under the tools (see "realloc").
            if new_size <= s - HEADER {
                return Ok(true);
            }
        } else if l.resize(b, s, new_size, r) {
            return Ok(true);
        }
        Err(s - HEADER)
    }
}

/// A part with its lock held: every method may read and write the part's headers and links.
/// With `MARK`, every header or link word is made accessible to valgrind/ASan around its access.
struct Locked<'a, const MARK: bool> {
    /// The part's lock, bytes (offset `o` of the part is byte `o` of `g.view`), state (`g.st`)
    /// and published figures (`g.seen`).
    g: Guard<'a>,
    /// The part's length (the view's).
    len: usize,
}

/// A block place in the part of the [`Locked`] that made it: an offset `o`, a multiple of 8,
/// with `o + MIN_BLOCK <= len`, so that the block's two header words (`o`, `o + 4`) and two link
/// words (`o + 8`, `o + 12`) lie inside the part. Made by [`Locked::place`] and
/// [`Locked::at_link`], which check it (every offset or link read out of the heap goes through
/// one of them), by [`Locked::next_after`] from the end of a block whose size was checked, and by
/// `alloc` for the rest of a split (8-aligned, at least MIN_BLOCK bytes ending where the checked
/// block ends); the word accessors need no check of their own.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Blk(usize);

/// The free-list link of block `b`: its offset / 8 (offsets are multiples of 8 below 4 GiB).
#[inline(always)]
fn link(b: Blk) -> u32 {
    (b.0 >> 3) as u32
}

impl<const MARK: bool> Locked<'_, MARK> {
    /// `o` as a block place of this part; panics when it is not one (an offset read from a
    /// corrupt heap: a program that wrote into a block it freed).
    #[inline(always)]
    fn place(&self, o: usize) -> Blk {
        // A fixed message: formatting would keep `o` in memory on the hot path.
        assert!(
            o % 8 == 0 && o + MIN_BLOCK <= self.len,
            "tlsf: corrupt block offset (was a freed block written to?)"
        );
        Blk(o)
    }

    /// The block place of link `l` (a free-list link or head: the block's offset / 8, not
    /// [`NONE`]); panics when it is not one (a corrupt heap, as in `place`). Kept in units of 8,
    /// a link needs no alignment check.
    #[inline(always)]
    fn at_link(&self, l: u32) -> Blk {
        let o = (l as usize) << 3;
        assert!(
            o + MIN_BLOCK <= self.len,
            "tlsf: corrupt free-list link (was a freed block written to?)"
        );
        Blk(o)
    }

    /// Word `W` of block `b` (0 and 1: the header; 2 and 3: a free block's links), made
    /// accessible to the tools meanwhile when `MARK`.
    #[inline(always)]
    fn word<const W: usize>(&self, b: Blk) -> u32 {
        const { assert!(W < 4) };
        let off = b.0 + 4 * W;
        // SAFETY: `b` is a place of this part (`b.0 + 16 <= len`, `b.0` a multiple of 8; see
        // `Blk`) and `W < 4`, so the word and its 8-byte span are inside the view, 4-aligned
        // (the view starts at a multiple of 8 from a 64-aligned base); they are allocator
        // metadata (a header or a free block's link, never a live block's user bytes), and the
        // part's lock is held (`self.g`), so nobody writes or marks them meanwhile.
        unsafe { self.g.view.read_meta_u32::<MARK>(off, 8) }
    }

    /// Write word `W` of block `b`.
    #[inline(always)]
    fn set_word<const W: usize>(&mut self, b: Blk, v: u32) {
        const { assert!(W < 4) };
        let off = b.0 + 4 * W;
        // SAFETY: as in `word`; the lock is held, so nobody reads or writes the word meanwhile.
        unsafe { self.g.view.write_meta_u32::<MARK>(off, 8, v) }
    }

    /// Size (header included) and free flag of block `b`, checked to be a block size that fits
    /// in the part from `b` (panics otherwise: a corrupt heap).
    #[inline(always)]
    fn size_of(&self, b: Blk) -> (usize, bool) {
        let w = self.word::<1>(b);
        let s = (w & !7) as usize;
        assert!(
            s >= MIN_BLOCK && b.0 + s <= self.len,
            "tlsf: corrupt block header (was a freed block written to?)"
        );
        (s, w & FREE != 0)
    }

    /// Set word 1 of block `b`.
    #[inline(always)]
    fn set_size(&mut self, b: Blk, size: usize, free: bool) {
        debug_assert!(size % 8 == 0 && size >= MIN_BLOCK && b.0 + size <= self.len);
        self.set_word::<1>(b, size as u32 | if free { FREE } else { 0 });
    }

    /// Set word 0 of block `b`: the previous block and its free flag.
    #[inline(always)]
    fn set_prev(&mut self, b: Blk, prev: Blk, free: bool) {
        self.set_word::<0>(b, prev.0 as u32 | if free { PREV_FREE } else { 0 });
    }

    /// The block after block `b` of size `s`, when there is one. `s` is a checked size (from
    /// `size_of` or `live_size`) or a sum or difference of such sizes and request roundings,
    /// all multiples of 8 with `b.0 + s <= len`: so the end is a multiple of 8 too.
    #[inline(always)]
    fn next_after(&self, b: Blk, s: usize) -> Option<Blk> {
        // `b.0 + s <= len` and both are multiples of 8 (`size_of`, `set_size`); in a heap that
        // is not corrupt a block that does not end the part is followed by one of at least
        // MIN_BLOCK bytes, so the one comparison both finds the end and checks the place.
        debug_assert!(s % 8 == 0);
        let end = b.0 + s;
        (end + MIN_BLOCK <= self.len).then_some(Blk(end))
    }

    /// The list of class `c` is not empty now (it was empty).
    #[inline(always)]
    fn mark_class(&mut self, c: usize) {
        self.g.st.words[c >> 6] |= 1 << (c & 63);
        let w = c >> 6;
        self.g.st.summary[w >> 6] |= 1 << (w & 63);
        if c >= self.g.st.top {
            self.g.st.top = c + 1;
            self.g
                .seen
                .largest
                .store(largest_of(self.g.st.top), Relaxed);
        }
    }

    /// The list of class `c` is empty now.
    #[inline(always)]
    fn unmark_class(&mut self, c: usize) {
        let w = &mut self.g.st.words[c >> 6];
        *w &= !(1 << (c & 63));
        if *w == 0 {
            let w = c >> 6;
            self.g.st.summary[w >> 6] &= !(1 << (w & 63));
        }
        if c + 1 == self.g.st.top {
            self.g.st.top = (0..SUMMARY)
                .rev()
                .find_map(|i| {
                    let w = (i << 6) + self.g.st.summary[i].checked_ilog2()? as usize;
                    Some((w << 6) + self.g.st.words[w].ilog2() as usize + 1)
                })
                .unwrap_or(0);
            self.g
                .seen
                .largest
                .store(largest_of(self.g.st.top), Relaxed);
        }
    }

    /// Put free block `b` of size `size` on the list of its class.
    #[inline(always)]
    fn insert(&mut self, b: Blk, size: usize) {
        self.insert_in(class_of(size - HEADER), b);
    }

    /// Put free block `b` on the list of class `c`, its class.
    #[inline(always)]
    fn insert_in(&mut self, c: usize, b: Blk) {
        let head = self.g.st.heads[c];
        self.set_word::<2>(b, head);
        self.set_word::<3>(b, NONE);
        self.g.st.heads[c] = link(b);
        if head != NONE {
            let h = self.at_link(head);
            self.set_word::<3>(h, link(b));
        } else {
            // A list that was not empty has its bits set already, and `top` above it.
            self.mark_class(c);
        }
    }

    /// Set the `prev` link of the block whose link is `l` to `v`, when `l` is a block (not
    /// [`NONE`]: the end of a list).
    #[inline(always)]
    fn set_prev_link(&mut self, l: u32, v: u32) {
        if l != NONE {
            let b = self.at_link(l);
            self.set_word::<3>(b, v);
        }
    }

    /// Take free block `b` of size `size` off the list of its class.
    #[inline(always)]
    fn remove(&mut self, b: Blk, size: usize) {
        self.unlink(class_of(size - HEADER), b);
    }

    /// Take free block `b` off the list of class `c`, which holds it.
    #[inline(always)]
    fn unlink(&mut self, c: usize, b: Blk) {
        let next = self.word::<2>(b);
        let prev = self.word::<3>(b);
        if prev == NONE {
            assert_eq!(
                self.g.st.heads[c],
                link(b),
                "tlsf: corrupt free list (was a freed block written to?)"
            );
            self.g.st.heads[c] = next;
            if next == NONE {
                self.unmark_class(c);
            }
        } else {
            let p = self.at_link(prev);
            self.set_word::<2>(p, next);
        }
        self.set_prev_link(next, prev);
    }

    /// Put free block `new` in the place of free block `old` on the list of class `c`, which
    /// holds `old` and is the class of `new` too: `new` takes `old`'s links, and `old`'s
    /// neighbours (or the head) point to `new`. No bitmap changes: the list keeps its length.
    /// `old`'s and `new`'s link words must not overlap (distinct blocks, or `new` a part of
    /// `old` at least 16 bytes in).
    #[inline(always)]
    fn replace(&mut self, c: usize, old: Blk, new: Blk) {
        let next = self.word::<2>(old);
        let prev = self.word::<3>(old);
        self.set_word::<2>(new, next);
        self.set_word::<3>(new, prev);
        if prev == NONE {
            assert_eq!(
                self.g.st.heads[c],
                link(old),
                "tlsf: corrupt free list (was a freed block written to?)"
            );
            self.g.st.heads[c] = link(new);
        } else {
            let p = self.at_link(prev);
            self.set_word::<2>(p, link(new));
        }
        self.set_prev_link(next, link(new));
    }

    /// Take block `b`, the head of the list of class `c`, off that list.
    #[inline(always)]
    fn remove_head(&mut self, c: usize, b: Blk) {
        let next = self.word::<2>(b);
        self.g.st.heads[c] = next;
        if next == NONE {
            self.unmark_class(c);
        }
        self.set_prev_link(next, NONE);
    }

    /// Put free block `new` in the place of block `b`, the head of the list of class `c` (the
    /// class of `new` too), with no bitmap change: [`replace`](Self::replace) for a head.
    #[inline(always)]
    fn replace_head(&mut self, c: usize, b: Blk, new: Blk) {
        let next = self.word::<2>(b);
        self.set_word::<2>(new, next);
        self.set_word::<3>(new, NONE);
        self.g.st.heads[c] = link(new);
        self.set_prev_link(next, link(new));
    }

    /// The first class at or above `c` whose list is not empty.
    #[inline(always)]
    fn find(&self, c: usize) -> Option<usize> {
        let w = c >> 6;
        let here = self.g.st.words[w] & (u64::MAX << (c & 63));
        if here != 0 {
            return Some((w << 6) + here.trailing_zeros() as usize);
        }
        // The summary bits of the words above `w`: at most SUMMARY (two) summary words.
        let w1 = w + 1;
        for i in (w1 >> 6)..SUMMARY {
            let mut above = self.g.st.summary[i];
            if i == w1 >> 6 {
                above &= u64::MAX << (w1 & 63);
            }
            if above != 0 {
                let w = (i << 6) + above.trailing_zeros() as usize;
                // `& 63`: a summary bit is set only for a word that is not 0; the mask keeps the
                // index inside `heads` without a check (were the bit wrong, the head found is
                // still checked by `alloc`: its link, its size against the request).
                return Some((w << 6) + (self.g.st.words[w].trailing_zeros() as usize & 63));
            }
        }
        None
    }

    /// Bytes of the part's live blocks (see `Seen::used`).
    #[inline(always)]
    fn used(&self) -> usize {
        self.g.seen.used.load(Relaxed)
    }

    /// Set the bytes of the part's live blocks, which `footprint` reads (the largest request is
    /// published when it changes, by `mark_class` and `unmark_class`).
    #[inline(always)]
    fn set_used(&mut self, used: usize) {
        self.g.seen.used.store(used, Relaxed);
    }

    /// Lay the part out as one free block (forgets every block). Writes 16 bytes.
    fn layout(&mut self) {
        self.g.st.reset();
        self.g.st.room = self.len - (self.len >> 3);
        self.g.seen.largest.store(0, Relaxed);
        if self.len >= MIN_BLOCK {
            let (len, b) = (self.len, self.place(0));
            self.set_prev(b, b, false);
            self.set_size(b, len, true);
            self.insert(b, len);
        }
        self.set_used(0);
    }

    /// Hand out a block of usable size at least `r` (a class boundary): its offset and size.
    #[inline(always)]
    fn alloc(&mut self, r: usize) -> Option<(usize, usize)> {
        let want = r + HEADER;
        // An exact fit: a cached block of class `r / 8` is `r + HEADER` bytes.
        if r < QUICK_BELOW && self.g.st.quick[r >> 3] != NONE {
            let (b, s) = self.pop_quick(r >> 3);
            return Some((b.0, s));
        }
        let rc = class_of(r);
        let c = match self.find(rc) {
            Some(c) => c,
            None => {
                if !self.flush_quick() {
                    return None;
                }
                self.find(rc)?
            }
        };
        let b = self.at_link(self.g.st.heads[c]);
        let (s, free) = self.size_of(b);
        assert!(
            free && s >= want,
            "tlsf: corrupt free list (was a freed block written to?)"
        );
        let size = if s - want >= MIN_BLOCK {
            // A place by construction: `want` is a multiple of 8 (`r` is a class boundary) and
            // the rest, at least MIN_BLOCK bytes, ends where `b` ends, inside the part.
            debug_assert!(want % 8 == 0 && b.0 + s <= self.len);
            let (rest, rs) = (Blk(b.0 + want), s - want);
            self.set_prev(rest, b, false);
            self.set_size(rest, rs, true);
            let rc = class_of(rs - HEADER);
            if rc == c {
                // The rest stays in `b`'s class (a large block cut from): it takes `b`'s place at
                // the head of the list, and the bitmaps do not change.
                self.replace_head(c, b, rest);
            } else {
                self.remove_head(c, b);
                self.insert_in(rc, rest);
            }
            if let Some(n) = self.next_after(b, s) {
                self.set_prev(n, rest, true);
            }
            want
        } else {
            self.remove_head(c, b);
            if let Some(n) = self.next_after(b, s) {
                self.set_prev(n, b, false);
            }
            s
        };
        self.set_size(b, size, false);
        self.set_used(self.used() + size);
        Some((b.0, size))
    }

    /// The place and size of the live block at `o` (a place: see `Tlsf::locate`), or `None`
    /// when `o` does not hold a block in use that fits in the part (a pointer that was never
    /// handed out: its header is not checked as a corrupt one would be).
    #[inline(always)]
    fn live_size(&self, o: usize) -> Option<(Blk, usize)> {
        let b = self.place(o);
        Some((b, live_block_size(self.word::<1>(b), o, self.len)?))
    }

    /// Free the live block `b` of size `s`: into its class's quick cache when the part has room
    /// and the cache is not full, else into the lists, joined with its free neighbours (and,
    /// near full, one cached block with it).
    #[inline(always)]
    fn release(&mut self, b: Blk, s: usize) {
        let u = s - HEADER;
        if self.used() < self.g.st.room {
            if u < QUICK_BELOW && self.g.st.quick_n[u >> 3] < self.g.st.cap {
                self.push_quick(u >> 3, b, s);
                return;
            }
        } else if self.g.st.cached != 0 {
            self.drain_one();
        }
        self.join_free(b, s);
    }

    /// Put live block `b` of size `s`, of class `c` (below [`QUICK_CLASSES`]), at the head of
    /// class `c`'s quick cache, which is not full. It counts as free from now on.
    #[inline(always)]
    fn push_quick(&mut self, c: usize, b: Blk, s: usize) {
        self.set_used(self.used() - s);
        self.set_word::<1>(b, s as u32 | QUICK);
        self.set_word::<2>(b, self.g.st.quick[c]);
        self.g.st.quick[c] = link(b);
        self.g.st.quick_n[c] += 1;
        self.g.st.cached += 1;
    }

    /// Take the head of class `c`'s quick cache, which is not empty: the block, in use again,
    /// and its size. Panics when the head is not a cached block of class `c` (a corrupt heap).
    #[inline(always)]
    fn pop_quick(&mut self, c: usize) -> (Blk, usize) {
        let b = self.at_link(self.g.st.quick[c]);
        let s = (c << 3) + HEADER;
        assert!(
            self.word::<1>(b) == s as u32 | QUICK && b.0 + s <= self.len,
            "tlsf: corrupt quick cache (was a freed block written to?)"
        );
        self.g.st.quick[c] = self.word::<2>(b);
        self.g.st.quick_n[c] -= 1;
        self.g.st.cached -= 1;
        self.set_word::<1>(b, s as u32);
        self.set_used(self.used() + s);
        (b, s)
    }

    /// Free one cached block, of the smallest class that has one, into the lists, joined.
    ///
    /// Inlined although rarely taken, as `flush_quick`: a call that takes the `Locked` by
    /// reference makes the compiler keep the guard's fields in memory on every path of `xMalloc`
    /// and `xFree` (eight stores a call; both inlined: 355 → 335 instructions per trace pair).
    #[inline(always)]
    fn drain_one(&mut self) {
        let Some(c) = self.g.st.quick_n.iter().position(|&n| n != 0) else {
            return;
        };
        let (b, s) = self.pop_quick(c);
        self.join_free(b, s);
    }

    /// Free every cached block into the lists, joined; whether there was one. At most
    /// `QUICK_CLASSES * cap` blocks: the one operation that is not O(1), taken only when a
    /// request finds no free block large enough. Inlined for the reason `drain_one` is.
    #[cold]
    #[inline(always)]
    fn flush_quick(&mut self) -> bool {
        let any = self.g.st.cached != 0;
        for c in 0..QUICK_CLASSES {
            while self.g.st.quick_n[c] != 0 {
                let (b, s) = self.pop_quick(c);
                self.join_free(b, s);
            }
        }
        any
    }

    /// Take cached block `b` out of its quick cache and free it into the lists, joined.
    #[cold]
    #[inline(never)]
    fn uncache(&mut self, b: Blk) {
        let s = (self.word::<1>(b) & !7) as usize;
        let c = class_of(s - HEADER);
        assert!(
            c < QUICK_CLASSES && self.g.st.quick[c] != NONE,
            "tlsf: corrupt quick cache (was a freed block written to?)"
        );
        if self.g.st.quick[c] != link(b) {
            // Not the head: found by a walk from the head (at most `cap` blocks), unlinked, and
            // put at the head, to pop it.
            let (mut p, mut n) = (self.at_link(self.g.st.quick[c]), 1);
            loop {
                let next = self.word::<2>(p);
                if next == link(b) {
                    break;
                }
                n += 1;
                assert!(
                    next != NONE && n < self.g.st.cap as usize,
                    "tlsf: corrupt quick cache (was a freed block written to?)"
                );
                p = self.at_link(next);
            }
            let after = self.word::<2>(b);
            self.set_word::<2>(p, after);
            self.set_word::<2>(b, self.g.st.quick[c]);
            self.g.st.quick[c] = link(b);
        }
        let (b, s) = self.pop_quick(c);
        self.join_free(b, s);
    }

    /// Free the live block `b` of size `s` into the lists, joined with its free neighbours.
    #[inline(always)]
    fn join_free(&mut self, b: Blk, s: usize) {
        self.set_used(self.used() - s);
        let w0 = self.word::<0>(b);
        let next = match self.next_after(b, s) {
            Some(n) => match self.size_of(n) {
                (ns, true) => Some((n, ns)),
                _ => None,
            },
            None => None,
        };
        // Where the freed block is filed: joined with a free neighbour whose class the join does
        // not change, it keeps that neighbour's place on its list (the common case of a block
        // freed next to a large free block) and the bitmaps are not touched.
        let (at, size) = if w0 & PREV_FREE != 0 {
            let prev = self.place((w0 & !7) as usize);
            let (ps, pf) = self.size_of(prev);
            assert!(
                pf && prev.0 + ps == b.0,
                "tlsf: corrupt block header (was a freed block written to?)"
            );
            let mut size = ps + s;
            if let Some((n, ns)) = next {
                self.remove(n, ns);
                size += ns;
            }
            self.set_size(prev, size, true);
            let (pc, c) = (class_of(ps - HEADER), class_of(size - HEADER));
            if c != pc {
                self.unlink(pc, prev);
                self.insert_in(c, prev);
            }
            (prev, size)
        } else if let Some((n, ns)) = next {
            let size = s + ns;
            self.set_size(b, size, true);
            let (nc, c) = (class_of(ns - HEADER), class_of(size - HEADER));
            if c == nc {
                self.replace(nc, n, b);
            } else {
                self.unlink(nc, n);
                self.insert_in(c, b);
            }
            (b, size)
        } else {
            self.set_size(b, s, true);
            self.insert(b, s);
            (b, s)
        };
        if let Some(n) = self.next_after(at, size) {
            self.set_prev(n, at, true);
        }
    }

    /// Make the `n` bytes after live block `live` (`n >= MIN_BLOCK`, starting at `o`) a free
    /// block, joined with a free next neighbour.
    fn free_tail(&mut self, live: Blk, o: usize, n: usize) {
        let t = self.place(o);
        let mut size = n;
        if let Some(next) = self.next_after(t, n) {
            let (ns, nf) = self.size_of(next);
            if nf {
                self.remove(next, ns);
                size += ns;
            }
        }
        self.set_prev(t, live, false);
        self.set_size(t, size, true);
        if let Some(nx) = self.next_after(t, size) {
            self.set_prev(nx, t, true);
        }
        self.insert(t, size);
    }

    /// Resize the live block `b` of size `s` in place to usable size `n` (class rounding `r`);
    /// whether it was done.
    fn resize(&mut self, b: Blk, s: usize, n: usize, r: usize) -> bool {
        let want = r + HEADER;
        if n <= s - HEADER {
            if s >= want + MIN_BLOCK {
                self.set_size(b, want, false);
                self.free_tail(b, b.0 + want, s - want);
                self.set_used(self.used() - (s - want));
            }
            return true;
        }
        let Some(next) = self.next_after(b, s) else {
            return false;
        };
        // Cached blocks after `b` would have been joined at their free (and with each other):
        // take them out of their caches and join them now, as far as the growth needs.
        if self.word::<1>(next) & QUICK != 0 {
            self.uncache(next);
        }
        loop {
            let (ns, nf) = self.size_of(next);
            if !nf || s + ns >= want {
                break;
            }
            match self.next_after(next, ns) {
                // Joined into `next`, its free previous block.
                Some(after) if self.word::<1>(after) & QUICK != 0 => self.uncache(after),
                _ => break,
            }
        }
        let (ns, nf) = self.size_of(next);
        if !nf || s + ns < want {
            return false;
        }
        self.remove(next, ns);
        let total = s + ns;
        let size = if total - want >= MIN_BLOCK {
            let rest = self.place(b.0 + want);
            self.set_prev(rest, b, false);
            self.set_size(rest, total - want, true);
            self.insert(rest, total - want);
            if let Some(nx) = self.next_after(b, total) {
                self.set_prev(nx, rest, true);
            }
            want
        } else {
            if let Some(nx) = self.next_after(b, total) {
                self.set_prev(nx, b, false);
            }
            total
        };
        self.set_size(b, size, false);
        self.set_used(self.used() + (size - s));
        true
    }
}

/// The size of the block at offset `o` (`o + MIN_BLOCK <= len`) of a part of `len` bytes whose
/// word 1 is `w`, when `w` is the header of a block in use that fits in the part: `None` for a
/// free block or a header no block has. Word 1 of a block in use is its size itself (`FREE`
/// clear, bits 1 and 2 always 0), so one test of the low bits and one comparison
/// (`MIN_BLOCK <= s <= len - o`, wrapping below `MIN_BLOCK`) decide it.
#[inline(always)]
fn live_block_size(w: u32, o: usize, len: usize) -> Option<usize> {
    let s = w as usize;
    (s % 8 == 0 && s.wrapping_sub(MIN_BLOCK) <= len - MIN_BLOCK - o).then_some(s)
}

/// The largest request served by a part whose highest non-empty class is `top - 1` (none for
/// `top == 0`): that class's lower boundary, which every block on its list reaches.
#[inline(always)]
fn largest_of(top: usize) -> usize {
    if top == 0 {
        0
    } else {
        class_start(top - 1).min(MAX_REQUEST)
    }
}

// SAFETY: every block handed out is taken off a free list under its part's lock and marked in
// use, and blocks tile their part, so live blocks never overlap; its usable size (header word 1,
// which only operations on the block itself change) is at least the class rounding of the
// request, hence of the request; the pointer is 8 bytes past an 8-aligned block offset inside a
// part starting at a multiple of 8 from a 64-aligned base; a failed realloc returns before
// writing anything; all shared state is behind the parts' locks.
unsafe impl MemMethods for Tlsf {
    fn name(&self) -> &'static str {
        "tlsf"
    }

    #[inline(always)]
    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        Some(self.alloc(round_class(size)?)?.0)
    }

    #[inline(always)]
    fn malloc_and_size(&self, size: usize) -> Option<(NonNull<u8>, usize)> {
        self.alloc(round_class(size)?)
    }

    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded contract.
        unsafe { self.size_and_free(ptr) };
    }

    #[inline(always)]
    unsafe fn size_and_free(&self, ptr: NonNull<u8>) -> usize {
        let Some((p, o)) = self.locate(ptr) else {
            return 0;
        };
        if self.fixed.shards() == 1 && !marking::active() {
            // The short path, as in `alloc`.
            return self.release_in::<false>(ptr, 0, o);
        }
        self.release_other(ptr, p, o)
    }

    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        let r = round_class(new_size)?;
        let (p, o) = self.locate(ptr)?;
        let kept = if marking::active() {
            self.resize_in::<true>(p, o, new_size, r)
        } else {
            self.resize_in::<false>(p, o, new_size, r)
        };
        let old = match kept {
            Ok(true) => return Some(ptr),
            Ok(false) => return None,
            Err(old) => old,
        };
        // SAFETY: `ptr` is a live block of this allocator with `old` usable bytes, and
        // `old < new_size` (it did not fit in place); the caller does not use it meanwhile.
        unsafe { self.fixed.realloc_by_copy(self, ptr, old, new_size) }
    }

    /// Without the marking, read without the lock: word 1 of a live block changes only through
    /// operations on the block itself, which its owner calls (not concurrently with this one, by
    /// the contract), and the block's other words are not read. With the marking, under the
    /// lock: another thread's operation on the previous block marks the header's first word
    /// accessible and no-access again around its write, which would race with the marking here.
    #[inline(always)]
    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        let Some((p, part, o)) = self.locate_in(ptr) else {
            return 0;
        };
        if marking::active() {
            return self
                .lock_part::<true>(p)
                .live_size(o)
                .map_or(0, |(_, s)| s - HEADER);
        }
        // SAFETY: the part lies inside the heap (`Fixed`: `start + len <= heap length`).
        let view = unsafe { self.fixed.heap().view_unchecked(part.start, part.len) };
        // SAFETY: `locate` checked `o + MIN_BLOCK <= len` with `o` a multiple of 8, so the word
        // at `o + 4` is inside the view, 4-aligned; it is word 1 of the live block the caller
        // owns, which nobody writes meanwhile (see above).
        let w = unsafe { view.read_u32(o + 4) };
        live_block_size(w, o, part.len).map_or(0, |s| s - HEADER)
    }

    /// Exact: whether `ptr` points into this heap (the address is compared, never read).
    fn owns(&self, ptr: NonNull<u8>) -> Option<bool> {
        self.fixed.owns(ptr)
    }

    fn roundup(&self, size: usize) -> usize {
        round_class(size).unwrap_or(size)
    }

    /// Lays every part out again when no block is live in any (`Fixed::init`).
    fn init(&self) -> Result<(), InitError> {
        self.fixed.init(
            self.largest_block() != 0,
            |p| self.lock_part::<true>(p),
            |l| l.used() == 0,
            |l| l.layout(),
        )
    }

    fn shutdown(&self) {}

    /// Read without any lock: see "Footprint" in the module documentation.
    fn footprint(&self, stats: &Stats, out: &mut dyn FnMut(Held)) {
        let _ = stats;
        let (mut free, mut largest) = (0u64, 0u64);
        for p in self.fixed.parts().iter() {
            let len = if p.len >= MIN_BLOCK { p.len } else { 0 };
            free += len.saturating_sub(p.seen.used.load(Relaxed)) as u64;
            largest = largest.max(p.seen.largest.load(Relaxed) as u64);
        }
        out(Held {
            key: "heap_bytes",
            help: "sqlalloc tlsf: the heap as configured (heap=), block headers (8 bytes per block) included",
            bytes: self.fixed.heap_len() as u64,
        });
        out(Held {
            key: "free_bytes",
            help: "sqlalloc tlsf: bytes of the heap in free blocks, their 8-byte headers included (the parts' bytes minus the live blocks with their headers)",
            bytes: free,
        });
        out(Held {
            key: "largest_free_block_bytes",
            help: "sqlalloc tlsf: largest request that can be served now (the lower boundary of the highest non-empty size class of any part); free bytes beyond it are fragmentation",
            bytes: largest,
        });
    }
}

fixed_heap_api!(Tlsf);

#[cfg(test)]
impl Tlsf {
    /// Check every invariant of the module doc; panics naming the first one broken. Returns the
    /// number of live blocks (found by walking the parts).
    fn check(&self) -> usize {
        let live = (0..self.shards()).map(|p| self.check_part(p)).sum();
        let parts = self.fixed.parts();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(
                p.start,
                i * parts[0].units * 8,
                "part {i} starts in its place"
            );
            assert!(p.len % 8 == 0 && p.len <= MAX_PART, "part {i} length");
            let end = parts.get(i + 1).map_or(self.heap_len(), |q| q.start);
            assert!(p.start + p.len <= end, "part {i} overlaps the next");
        }
        live
    }

    /// Check the invariants inside part `p`; its number of live blocks.
    fn check_part(&self, p: usize) -> usize {
        let l = self.lock_part::<true>(p);
        let len = l.len;
        let mut blocks = Vec::new();
        // 1.–3. The physical chain.
        let (mut o, mut prev, mut prev_free) = (0usize, 0usize, false);
        let (mut live, mut used, mut free) = (0, 0, 0);
        let mut cached = Vec::new();
        while len >= MIN_BLOCK && o < len {
            let b = l.place(o);
            let w1 = l.word::<1>(b);
            let (s, f) = ((w1 & !7) as usize, w1 & FREE != 0);
            assert!(s >= MIN_BLOCK && w1 & 4 == 0, "block at {o} has size {s}");
            assert!(!(f && w1 & QUICK != 0), "block at {o} free and cached");
            if w1 & QUICK != 0 {
                cached.push((o, class_of(s - HEADER)));
                free += s;
            }
            assert!(
                o + s <= len,
                "block at {o} of {s} bytes passes the end {len}"
            );
            let w0 = l.word::<0>(b);
            assert_eq!(
                ((w0 & !7) as usize, w0 & PREV_FREE != 0, w0 & 6),
                (prev, prev_free, 0),
                "word 0 of block {o}"
            );
            assert!(!(f && prev_free), "adjacent free blocks {prev} and {o}");
            if f {
                free += s;
            } else if w1 & QUICK == 0 {
                live += 1;
                used += s;
            }
            blocks.push((o, s, f));
            (prev, prev_free) = (o, f);
            o += s;
        }
        assert!(len < MIN_BLOCK || o == len, "blocks end at {o}, not {len}");
        // 4. The lists and bitmaps: the free blocks' classes give the bitmaps; the list of each
        // bit set holds exactly the blocks of its class; every other list is empty. (Only the
        // lists of set bits are walked, and the empty heads compared at once: this runs after
        // every operation, under Miri too.)
        let mut want = [0u64; WORDS];
        for &(_, s, f) in &blocks {
            if f {
                let c = class_of(s - HEADER);
                want[c >> 6] |= 1 << (c & 63);
            }
        }
        assert_eq!(l.g.st.words, want, "class bitmap");
        for (w, &bits) in want.iter().enumerate() {
            let bit = l.g.st.summary[w >> 6] & (1 << (w & 63)) != 0;
            assert_eq!(bit, bits != 0, "summary bit {w}");
        }
        let past = (WORDS..SUMMARY * 64).filter(|&w| l.g.st.summary[w >> 6] & (1 << (w & 63)) != 0);
        assert_eq!(past.count(), 0, "summary bits past the last word");
        // Word by word, not class by class: this runs after every operation of the unit tests,
        // under Miri too (5632 classes).
        let top = (0..WORDS)
            .rev()
            .find(|&w| want[w] != 0)
            .map(|w| (w << 6) + want[w].ilog2() as usize);
        assert_eq!(
            l.g.st.top,
            top.map_or(0, |c| c + 1),
            "highest non-empty class"
        );
        let heads = &l.g.st.heads;
        let mut listed = 0;
        for (w, &bits) in want.iter().enumerate() {
            // The lists of the classes whose bit is clear are empty (a whole word's at once).
            let word_heads = &heads[w << 6..(w + 1) << 6];
            if bits == 0 {
                assert!(
                    word_heads == [NONE; 64],
                    "a list outside the bitmap holds a block (word {w})"
                );
                continue;
            }
            for (i, &h) in word_heads.iter().enumerate() {
                assert!(
                    bits & (1 << i) != 0 || h == NONE,
                    "list {} outside the bitmap holds a block",
                    (w << 6) + i
                );
            }
            let mut bits = bits;
            while bits != 0 {
                let c = (w << 6) + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let (mut before, mut cur, mut n) = (NONE, heads[c], 0);
                while cur != NONE {
                    let o = (cur as usize) << 3;
                    let i = blocks
                        .binary_search_by_key(&o, |b| b.0)
                        .unwrap_or_else(|_| panic!("list {c} holds {o}, not a block"));
                    let (_, s, f) = blocks[i];
                    assert!(f, "list {c} holds block {o} in use");
                    assert_eq!(class_of(s - HEADER), c, "block {o} on a wrong list");
                    let b = l.place(o);
                    assert_eq!(l.word::<3>(b), before, "prev link of {o}");
                    assert_eq!(l.at_link(cur), b, "link of {o}");
                    (before, cur) = (cur, l.word::<2>(b));
                    n += 1;
                    assert!(n <= blocks.len(), "list {c} loops");
                }
                assert!(n > 0, "bit {c} set for an empty list");
                listed += n;
            }
        }
        assert_eq!(
            listed,
            blocks.iter().filter(|b| b.2).count(),
            "every free block listed once"
        );
        // 5. The counts.
        assert_eq!(l.used(), used, "used bytes");
        // 6. The quick caches hold exactly the blocks marked cached, each once, in the cache of
        // its class, at most `cap` each; their counts and bits agree.
        let mut in_caches = Vec::new();
        for c in 0..QUICK_CLASSES {
            let (mut cur, mut n) = (l.g.st.quick[c], 0);
            while cur != NONE {
                in_caches.push(((cur as usize) << 3, c));
                cur = l.word::<2>(l.at_link(cur));
                n += 1;
                assert!(n <= l.g.st.cap as usize, "quick cache {c} too long");
            }
            assert_eq!(n, l.g.st.quick_n[c] as usize, "quick cache {c} count");
        }
        in_caches.sort_unstable();
        assert_eq!(in_caches, cached, "quick caches");
        assert_eq!(l.g.st.cached, cached.len(), "cached blocks");
        assert_eq!(l.g.st.room, len - (len >> 3), "room");
        assert_eq!(
            used + free,
            if len >= MIN_BLOCK { len } else { 0 },
            "free bytes"
        );
        let largest = blocks
            .iter()
            .filter(|b| b.2)
            .map(|b| class_start(class_of(b.1 - HEADER)).min(MAX_REQUEST))
            .max()
            .unwrap_or(0);
        assert_eq!(l.g.seen.largest.load(Relaxed), largest, "published largest");
        live
    }

    /// Offset of `p` in the heap.
    fn off(&self, p: NonNull<u8>) -> usize {
        self.heap_offset(p).expect("pointer into the heap")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_support::{self as ts, fill, holds, Sizes, TestHeap};
    use crate::heap::HeapBuf;
    use std::sync::Arc;

    const KIB: usize = 1024;

    impl TestHeap for Tlsf {
        /// A remainder too small to split stays with the block (see "`size` and `roundup`").
        const SLACK: usize = 8;
        fn check(&self) -> usize {
            Tlsf::check(self)
        }
        fn whole_block(&self) -> Option<usize> {
            Some(self.largest_block())
        }
        fn heap(&self) -> &HeapBuf {
            self.fixed.heap()
        }
    }

    fn sz(m: &Tlsf, p: NonNull<u8>) -> usize {
        // SAFETY: tests pass live blocks of `m`.
        unsafe { m.size(p) }
    }

    fn free(m: &Tlsf, p: NonNull<u8>) {
        // SAFETY: tests pass live blocks of `m`, freed once.
        unsafe { m.free(p) }
    }

    /// A one-part heap of `heap` bytes with no quick caches: every free joins at once.
    fn joining(heap: usize) -> Tlsf {
        Tlsf::with_cache(heap, 1, 0).unwrap()
    }

    /// Free blocks of part `p`: (offset, size) in address order.
    fn free_blocks(m: &Tlsf, p: usize) -> Vec<(usize, usize)> {
        let l = m.lock_part::<true>(p);
        let mut v = Vec::new();
        let mut o = 0;
        while l.len >= MIN_BLOCK && o < l.len {
            let (s, f) = l.size_of(l.place(o));
            if f {
                v.push((o, s));
            }
            o += s;
        }
        v
    }

    #[test]
    fn classes_round_trip_and_cost_under_1_256() {
        for k in 0..CLASSES {
            let c = class_start(k);
            assert_eq!(c, class_start_by_levels(k / SL, k % SL), "class {k}");
            if (8..=MAX_REQUEST).contains(&c) {
                assert_eq!(class_of(c), k, "start of class {k}");
                assert_eq!(round_class(c), Some(c), "a boundary rounds to itself");
            }
            if c > 8 {
                // Just below a boundary: the class before.
                assert_eq!(class_of(c - 8), k - 1, "just below class {k}");
            }
        }
        let mut n = 0usize;
        while n < 3 << 20 {
            let r = round_class(n).unwrap();
            assert!(r >= n && r >= 8 && r % 8 == 0, "roundup({n}) = {r}");
            assert_eq!(
                class_start(class_of(r)),
                r,
                "roundup({n}) is a class boundary"
            );
            if n >= 2 * SMALL {
                // Less than 1/256 of the request.
                assert!((r - n) * SL < n, "roundup({n}) = {r} costs too much");
            } else {
                assert_eq!(r, round8(n).max(8), "exact 8-byte classes below 4 KiB");
            }
            n += 1 + n / 97;
        }
        assert_eq!((SL, SMALL), (256, 2048));
        assert_eq!(round_class(4360), Some(4368));
        assert_eq!(round_class(4095), Some(4096));
        assert_eq!(round_class(4097), Some(4112));
        assert_eq!(round_class(MAX_REQUEST), Some(MAX_REQUEST));
        assert_eq!(round_class(MAX_REQUEST + 1), None);
        assert_eq!(class_of(u32::MAX as usize), CLASSES - 1);
    }

    /// Lower boundary of class `(fl, sl)` as the module doc states it: `8 · sl` for `fl = 0`,
    /// `2^f + sl · 2^(f - 8)` for `f = fl + 10` above.
    fn class_start_by_levels(fl: usize, sl: usize) -> usize {
        if fl == 0 {
            8 * sl
        } else {
            (1 << (fl + 10)) + sl * (1 << (fl + 2))
        }
    }

    #[test]
    fn fresh_heap_is_one_free_block() {
        let m = Tlsf::new(64 * KIB).unwrap();
        m.check();
        assert_eq!(free_blocks(&m, 0), [(0, 64 * KIB)]);
        // 65528 usable bytes: class boundary 65408 (classes of 128 bytes there).
        assert_eq!(m.largest_block(), 65408);
        let p = m.malloc(m.largest_block()).unwrap();
        assert_eq!(sz(&m, p), m.largest_block());
        assert_eq!(free_blocks(&m, 0), [(65416, 120)], "the rest split off");
        assert!(m.malloc(m.largest_block() + 1).is_none());
        m.check();
        free(&m, p);
        m.check();
        assert_eq!(free_blocks(&m, 0), [(0, 64 * KIB)]);
    }

    #[test]
    fn malloc_gives_the_class_rounding() {
        let m = Tlsf::new(256 * KIB).unwrap();
        for n in [
            0, 1, 8, 9, 100, 511, 512, 1000, 1025, 4095, 4360, 9000, 70_000,
        ] {
            let (p, s) = m.malloc_and_size(n).unwrap();
            assert_eq!(s, m.roundup(n), "malloc({n})");
            assert_eq!(sz(&m, p), s);
            assert_eq!(p.as_ptr().addr() % 8, 0, "8-aligned");
            fill(p, s, 0x11);
            m.check();
        }
        assert_eq!(m.roundup(usize::MAX), usize::MAX);
        assert!(m.malloc(usize::MAX).is_none());
        assert!(m.malloc(MAX_REQUEST + 1).is_none());
    }

    #[test]
    fn a_remainder_too_small_to_split_stays_with_the_block() {
        let m = Tlsf::new(KIB).unwrap();
        // 1024 bytes: one block of 1016 usable. 1008 would leave 8 bytes: kept with the block.
        let p = m.malloc(1008).unwrap();
        assert_eq!((m.roundup(1008), sz(&m, p)), (1008, 1016));
        assert!(free_blocks(&m, 0).is_empty());
        m.check();
        free(&m, p);
        // 1000 leaves exactly a minimal block: split.
        let p = m.malloc(1000).unwrap();
        assert_eq!(sz(&m, p), 1000);
        assert_eq!(free_blocks(&m, 0), [(1008, 16)]);
        m.check();
    }

    /// SQLite's page cache: 4360-byte lines allocated and freed; a freed line's place is the next
    /// line's.
    #[test]
    fn page_cache_lines_reuse_their_holes() {
        let m = Tlsf::new(if cfg!(miri) { 64 * KIB } else { KIB * KIB }).unwrap();
        let mut lines: Vec<_> = (0..10).map(|_| m.malloc(4360).unwrap()).collect();
        m.check();
        for round in 0..if cfg!(miri) { 5 } else { 50 } {
            let i = (round * 7) % lines.len();
            let hole = lines[i];
            free(&m, hole);
            m.check();
            let again = m.malloc(4360).unwrap();
            assert_eq!(
                again, hole,
                "round {round}: the freed line's place is reused"
            );
            lines[i] = again;
        }
        // The rest of the heap was never cut into: lines are packed from offset 0.
        let mut offs: Vec<usize> = lines.iter().map(|&p| m.off(p)).collect();
        offs.sort_unstable();
        let step = m.roundup(4360) + HEADER;
        assert_eq!(offs, (0..10).map(|i| i * step + HEADER).collect::<Vec<_>>());
        // Two holes side by side join; a line still fits in their place.
        free(&m, lines[3]);
        free(&m, lines[4]);
        m.check();
        assert!(free_blocks(&m, 0).contains(&(3 * step, 2 * step)));
        assert_eq!(m.off(m.malloc(4360).unwrap()), 3 * step + HEADER);
        m.check();
    }

    #[test]
    fn free_joins_both_neighbours() {
        let m = joining(8 * KIB);
        let v: Vec<_> = (0..4).map(|_| m.malloc(100).unwrap()).collect();
        free(&m, v[0]);
        free(&m, v[2]);
        m.check();
        assert_eq!(free_blocks(&m, 0).len(), 3);
        free(&m, v[1]);
        m.check();
        assert_eq!(
            free_blocks(&m, 0),
            [(0, 3 * 112), (4 * 112, 8 * KIB - 4 * 112)],
            "a, b and c joined"
        );
        free(&m, v[3]);
        m.check();
        assert_eq!(free_blocks(&m, 0), [(0, 8 * KIB)], "and with the rest");
    }

    /// The number of blocks in the quick cache of the class of usable size `u`, in part 0.
    fn cached(m: &Tlsf, u: usize) -> usize {
        m.lock_part::<true>(0).g.st.quick_n[class_of(u)] as usize
    }

    #[test]
    fn a_small_block_freed_is_cached_and_given_back() {
        let m = Tlsf::new(8 * KIB).unwrap();
        let v: Vec<_> = (0..4).map(|_| m.malloc(100).unwrap()).collect();
        free(&m, v[1]);
        free(&m, v[2]);
        m.check();
        // Not joined: only the rest of the heap is free.
        assert_eq!(free_blocks(&m, 0), [(4 * 112, 8 * KIB - 4 * 112)]);
        assert_eq!(cached(&m, 104), 2);
        assert_eq!(
            figures(&m)[1],
            (8 * KIB - 2 * 112) as u64,
            "cached bytes count as free"
        );
        // Last in, first out; a different class is not served from that cache.
        assert_eq!(m.malloc(100), Some(v[2]));
        assert_ne!(m.malloc(90), Some(v[1]));
        assert_eq!(m.malloc(97), Some(v[1]), "97 rounds to 104 too");
        assert_eq!(cached(&m, 104), 0);
        m.check();
        // A double free of a cached block is ignored like any pointer that is not live.
        let w = m.malloc(100).unwrap();
        free(&m, w);
        free(&m, w);
        assert_eq!(cached(&m, 104), 1);
        m.check();
        // Blocks of 1 KiB and more are never cached.
        let big = m.malloc(1024).unwrap();
        let after = m.malloc(8).unwrap();
        let before = free_blocks(&m, 0).len();
        free(&m, big);
        assert_eq!(free_blocks(&m, 0).len(), before + 1, "freed at once");
        free(&m, after);
        m.check();
    }

    #[test]
    fn a_cache_holds_at_most_cap_blocks() {
        for cache in [0, 1, 5, DEFAULT_CACHE, MAX_CACHE, MAX_CACHE + 10] {
            let m = Tlsf::with_cache(64 * KIB, 1, cache).unwrap();
            let v: Vec<_> = (0..80).map(|_| m.malloc(24).unwrap()).collect();
            // Every other one, so that no two freed blocks are neighbours.
            for &p in v.iter().step_by(2) {
                free(&m, p);
            }
            m.check();
            let held = cache.min(MAX_CACHE).min(40);
            assert_eq!(cached(&m, 24), held, "cache={cache}");
            assert_eq!(
                free_blocks(&m, 0).len(),
                40 - held + 1,
                "the rest freed at once"
            );
            for &p in v.iter().skip(1).step_by(2) {
                free(&m, p);
            }
            ts::assert_recovered(&m);
        }
    }

    #[test]
    fn a_request_that_finds_nothing_flushes_the_caches() {
        let m = Tlsf::new(16 * KIB).unwrap();
        let mut v = Vec::new();
        for n in [8, 24, 100, 500] {
            for _ in 0..8 {
                v.push(m.malloc(n).unwrap());
            }
        }
        let big = m.malloc(m.largest_block() / 2).unwrap();
        for &p in &v {
            free(&m, p);
        }
        m.check();
        assert_eq!(cached(&m, 104), 8);
        free(&m, big);
        // The whole heap: found only once the cached blocks are joined with the rest.
        let all = m
            .malloc(m.largest_block())
            .expect("the caches were flushed");
        assert_eq!(cached(&m, 104), 0);
        m.check();
        free(&m, all);
        assert_eq!(free_blocks(&m, 0), [(0, 16 * KIB)]);
    }

    #[test]
    fn near_full_frees_join_and_drain_the_caches() {
        let m = Tlsf::new(4 * KIB).unwrap();
        // 33 blocks of 112 bytes fill 3696 of 4096: 7/8 of the heap is 3584, so the part is
        // full enough that frees join at once (the second leaves 3584: still full enough).
        let v: Vec<_> = (0..33).map(|_| m.malloc(104).unwrap()).collect();
        free(&m, v[0]);
        free(&m, v[2]);
        m.check();
        assert_eq!(cached(&m, 104), 0, "near full: joined at once");
        assert_eq!(free_blocks(&m, 0).len(), 3);
        // With room again, frees are cached, and the next mallocs of that size take them first.
        for i in [4, 6, 8] {
            free(&m, v[i]);
        }
        assert_eq!(cached(&m, 104), 3, "room: cached");
        let w: Vec<_> = (0..8).map(|_| m.malloc(104).unwrap()).collect();
        assert_eq!(cached(&m, 104), 0, "the cached blocks are given back first");
        // Near full again: joined at once.
        free(&m, w[0]);
        m.check();
        assert_eq!(cached(&m, 104), 0);
        for &p in v.iter().skip(1).step_by(2).chain(&w[1..]) {
            free(&m, p);
            m.check();
        }
        for &p in v.iter().skip(10).step_by(2) {
            free(&m, p);
            m.check();
        }
        ts::assert_recovered(&m);
    }

    #[test]
    fn near_full_a_free_drains_one_cached_block() {
        let m = Tlsf::new(4 * KIB).unwrap();
        let v: Vec<_> = (0..30).map(|_| m.malloc(104).unwrap()).collect();
        // 30 · 112 = 3360 live: room. Cache two.
        free(&m, v[0]);
        free(&m, v[2]);
        assert_eq!(cached(&m, 104), 2);
        // Past 7/8 (3584): 3136 live, and three 200-byte blocks of 216 bytes make 3784.
        let more: Vec<_> = (0..3).map(|_| m.malloc(200).unwrap()).collect();
        assert_eq!(cached(&m, 104), 2);
        free(&m, v[10]);
        m.check();
        assert_eq!(cached(&m, 104), 1, "a free near full drains one");
        for p in more {
            free(&m, p);
        }
        for (i, &p) in v.iter().enumerate() {
            if ![0, 2, 10].contains(&i) {
                free(&m, p);
            }
        }
        ts::assert_recovered(&m);
    }

    #[test]
    fn realloc_grows_into_a_cached_neighbour() {
        if marking::active() {
            return;
        }
        let m = Tlsf::new(8 * KIB).unwrap();
        let a = m.malloc(100).unwrap();
        let b = m.malloc(100).unwrap();
        let c = m.malloc(100).unwrap();
        let _d = m.malloc(100).unwrap();
        free(&m, b);
        free(&m, c);
        assert_eq!(cached(&m, 104), 2);
        fill(a, 100, 9);
        // SAFETY: `a` is live; replaced by the result.
        let a2 = unsafe { m.realloc(a, 200) }.unwrap();
        assert_eq!(a2, a, "grown in place over b");
        assert!(holds(a, 100, 9));
        assert_eq!(
            cached(&m, 104),
            1,
            "b taken out of its cache (not its head)"
        );
        m.check();
        assert_eq!(m.malloc(100), Some(c));
        m.check();
        // Two cached neighbours in a row, one of them a cache's head: both joined, in place.
        let v: Vec<_> = (0..5).map(|_| m.malloc(100).unwrap()).collect();
        free(&m, v[2]);
        free(&m, v[4]);
        free(&m, v[1]);
        assert_eq!(cached(&m, 104), 3);
        // SAFETY: `v[0]` is live; replaced by the result.
        assert_eq!(
            unsafe { m.realloc(v[0], 300) },
            Some(v[0]),
            "grown over v[1] and v[2]"
        );
        assert_eq!(cached(&m, 104), 1);
        m.check();
        assert_eq!(m.malloc(100), Some(v[4]));
        m.check();
    }

    #[test]
    fn exhaustion_fails_cleanly_and_recovers() {
        let m = Tlsf::new(if cfg!(miri) { 16 * KIB } else { 64 * KIB }).unwrap();
        for n in [24, 300, 5000] {
            let mut v = Vec::new();
            while let Some(p) = m.malloc(n) {
                fill(p, n, v.len() as u8);
                v.push(p);
            }
            m.check();
            assert!(!v.is_empty());
            assert!(m.malloc(n).is_none(), "still full");
            for (i, &p) in v.iter().enumerate() {
                assert!(holds(p, n, i as u8));
                free(&m, p);
            }
            m.check();
            let p = m.malloc(m.largest_block()).expect("recovered");
            free(&m, p);
        }
    }

    #[test]
    fn realloc_in_place_and_moving() {
        if marking::active() {
            // Never resized in place under valgrind or ASan (see "`realloc`").
            return;
        }
        let m = joining(16 * KIB);
        let a = m.malloc(100).unwrap();
        fill(a, 100, 1);
        // Grows into the free rest of the heap, in place.
        // SAFETY: `a` is live; replaced by the result.
        let a2 = unsafe { m.realloc(a, 3000) }.unwrap();
        assert_eq!(a2, a);
        assert!(holds(a, 100, 1));
        assert_eq!(sz(&m, a), m.roundup(3000));
        m.check();
        // Shrinks in place, the tail split off and joined with the free rest.
        // SAFETY: as above.
        let a3 = unsafe { m.realloc(a, 50) }.unwrap();
        assert_eq!((a3, sz(&m, a)), (a, 56));
        assert!(holds(a, 50, 1));
        assert_eq!(free_blocks(&m, 0), [(64, 16 * KIB - 64)]);
        m.check();
        // A live neighbour: growing moves and copies, the old place is freed.
        let b = m.malloc(200).unwrap();
        fill(b, 200, 2);
        fill(a, 56, 3);
        // SAFETY: as above.
        let a4 = unsafe { m.realloc(a, 500) }.unwrap();
        assert_ne!(a4, a);
        assert!(holds(a4, 56, 3) && holds(b, 200, 2));
        m.check();
        assert_eq!(free_blocks(&m, 0)[0], (0, 64));
        // Shrinking by less than a minimal block keeps the block as it is.
        // SAFETY: as above.
        assert_eq!(unsafe { m.realloc(b, 195) }, Some(b));
        assert_eq!(sz(&m, b), 200);
        // Growing into a free next block that is too small moves.
        let c = m.malloc(100).unwrap();
        let d = m.malloc(100).unwrap();
        let _e = m.malloc(100).unwrap();
        free(&m, d);
        m.check();
        fill(c, 100, 4);
        // SAFETY: as above.
        let c2 = unsafe { m.realloc(c, 150) }.unwrap();
        assert_eq!(c2, c, "c grows into d's place (112 bytes free after it)");
        // SAFETY: as above.
        let c3 = unsafe { m.realloc(c, 400) }.unwrap();
        assert_ne!(c3, c);
        assert!(holds(c3, 100, 4));
        m.check();
        // A realloc that cannot be served leaves the block as it was.
        fill(c3, 400, 5);
        // SAFETY: as above.
        assert!(unsafe { m.realloc(c3, 15 * KIB) }.is_none());
        // SAFETY: as above.
        assert!(unsafe { m.realloc(c3, usize::MAX) }.is_none());
        assert!(holds(c3, 400, 5));
        assert_eq!(sz(&m, c3), 400);
        m.check();
    }

    #[test]
    fn pointers_that_are_not_blocks_are_ignored() {
        let m = Tlsf::new(4 * KIB).unwrap();
        ts::foreign_pointers_are_ignored(&m);
        assert_eq!(free_blocks(&m, 0), [(0, 4 * KIB)]);
    }

    #[test]
    fn too_large_requests_fail_cleanly() {
        let m = Tlsf::with_shards(64 * KIB, 2).unwrap();
        ts::too_large_requests_fail_cleanly(&m, m.largest_block() + 1);
        ts::too_large_requests_fail_cleanly(&m, MAX_REQUEST + 1);
    }

    #[test]
    fn tiny_heaps() {
        for heap in [0, 8, 15] {
            let m = Tlsf::new(heap).unwrap();
            m.check();
            assert_eq!(m.largest_block(), 0);
            assert_eq!(m.init(), Err(InitError::NoMem));
            assert!(m.malloc(0).is_none());
        }
        let m = Tlsf::new(23).unwrap();
        assert_eq!(m.largest_block(), 8);
        let p = m.malloc(0).unwrap();
        assert_eq!(sz(&m, p), 8);
        m.check();
    }

    #[test]
    fn init_lays_out_again_only_when_empty() {
        let m = joining(8 * KIB);
        let a = m.malloc(100).unwrap();
        let b = m.malloc(100).unwrap();
        free(&m, a);
        m.init().unwrap();
        m.check();
        assert_eq!(free_blocks(&m, 0).len(), 2, "kept: b is live");
        free(&m, b);
        let c = m.malloc(300).unwrap();
        free(&m, c);
        m.init().unwrap();
        m.check();
        assert_eq!(free_blocks(&m, 0), [(0, 8 * KIB)]);
    }

    #[test]
    fn init_keeps_live_blocks() {
        ts::init_keeps_live_blocks(&Tlsf::with_shards(8 * KIB, 3).unwrap());
    }

    /// The footprint's figures, keys checked.
    fn figures(m: &Tlsf) -> [u64; 3] {
        let keys = ["heap_bytes", "free_bytes", "largest_free_block_bytes"];
        ts::figures(m, &Stats::default(), &keys).try_into().unwrap()
    }

    #[test]
    fn footprint_counts_free_bytes_and_the_largest_request() {
        let m = Tlsf::new(64 * KIB + 5).unwrap();
        assert_eq!(figures(&m), [64 * 1024 + 5, 64 * 1024, 65408]);
        let a = m.malloc(1000).unwrap();
        let b = m.malloc(4360).unwrap();
        let rest = 64 * KIB - 1008 - m.roundup(4360) - HEADER;
        let big = class_start(class_of(rest - 8));
        assert_eq!(figures(&m), [64 * 1024 + 5, rest as u64, big as u64]);
        let c = m.malloc(big).expect("the largest request can be served");
        assert!(m.malloc(big + 1).is_none() || figures(&m)[2] > 0);
        free(&m, c);
        free(&m, a);
        free(&m, b);
        assert_eq!(figures(&m)[1], 64 * 1024);
        m.check();
    }

    /// The footprint's reader never takes a part's lock.
    #[test]
    fn footprint_from_another_thread_keeps_the_bias() {
        let m = Arc::new(Tlsf::new(64 * KIB).unwrap());
        let keys = ["heap_bytes", "free_bytes", "largest_free_block_bytes"];
        if let Some(seen) = ts::reader_keeps_the_bias(m, Tlsf::lock_is_biased, &keys) {
            // 100 bytes: a block of 104 usable bytes and its header.
            assert_eq!(seen[1], (64 * KIB - 112) as u64);
        }
    }

    #[test]
    #[should_panic(expected = "adjacent free blocks")]
    fn checker_catches_unjoined_neighbours() {
        let m = Tlsf::new(4 * KIB).unwrap();
        let a = m.malloc(8).unwrap();
        let _b = m.malloc(8).unwrap();
        m.check();
        {
            // Mark `a` free by hand, without joining it to anything.
            let mut l = m.lock_part::<true>(0);
            let o = l.place(m.off(a) - HEADER);
            let (b16, b32) = (l.place(16), l.place(32));
            l.set_size(o, 16, true);
            l.insert(o, 16);
            l.set_prev(b16, o, true);
            l.set_used(l.used() - 16);
            // The free rest after `_b` stays; now make `_b` free too.
            l.set_size(b16, 16, true);
            l.insert(b16, 16);
            l.set_prev(b32, b16, true);
            l.set_used(l.used() - 16);
        }
        m.check();
    }

    #[test]
    #[should_panic(expected = "used bytes")]
    fn checker_catches_a_wrong_count() {
        let m = Tlsf::new(4 * KIB).unwrap();
        let _a = m.malloc(8).unwrap();
        let mut l = m.lock_part::<true>(0);
        l.set_used(l.used() + 8);
        drop(l);
        m.check();
    }

    #[test]
    #[should_panic(expected = "corrupt")]
    fn a_freed_block_written_to_stops_the_allocator() {
        let m = joining(4 * KIB);
        let a = m.malloc(64).unwrap();
        let _b = m.malloc(64).unwrap();
        free(&m, a);
        // Use after free: overwrite the links of the free block.
        fill(a, 8, 0x77);
        let _ = m.malloc(64);
    }

    #[test]
    #[should_panic(expected = "corrupt")]
    fn a_cached_block_written_to_stops_the_allocator() {
        let m = Tlsf::new(4 * KIB).unwrap();
        let a = m.malloc(64).unwrap();
        let _b = m.malloc(64).unwrap();
        free(&m, a);
        // Use after free: overwrite the cache's link in the cached block.
        fill(a, 8, 0x77);
        assert_eq!(m.malloc(64), Some(a), "the cached block comes back");
        // The cache's head is now the overwritten link.
        let _ = m.malloc(64);
    }

    /// Seeded random sequences of malloc / free / realloc, contents tagged and the invariants
    /// checked after every step, on one part and on three.
    #[test]
    fn random_sequence() {
        let (steps, heap, mid, big, cap) = if cfg!(miri) {
            (200, 2 * KIB, 256, 2 * KIB, 16)
        } else {
            (5_000, 20 * KIB, 600, 8 * KIB, 60)
        };
        let sizes = Sizes {
            small: 64,
            mid,
            big,
        };
        for (seed, shards, cache) in [(1u64, 1usize, 0), (2, 1, 16), (3, 3, 0), (4, 3, 2)] {
            let m = Tlsf::with_cache(heap, shards, cache).unwrap();
            let t = ts::random_sequence(&m, seed, steps, &sizes, cap, |_| {});
            t.assert_exercised(steps);
            // Never in place under the tools (see "`realloc`").
            assert!(t.grown_in_place > 0 || marking::active(), "{t:?}");
            if cache == 0 {
                for p in 0..m.shards() {
                    assert_eq!(free_blocks(&m, p).len(), 1, "part {p} is one block again");
                }
            }
            ts::assert_recovered(&m);
        }
    }

    proptest::proptest! {
        #![proptest_config(ts::proptest_config())]
        /// Any sequence keeps the invariants and the contents of live blocks, and everything is
        /// recovered at the end.
        #[test]
        fn any_sequence(
            ops in ts::ops(if cfg!(miri) { 40 } else { 120 }),
            shards in 1usize..4,
            cache in proptest::sample::select(&[0usize, 1, 3, DEFAULT_CACHE][..]),
        ) {
            let heap = if cfg!(miri) { 4 * KIB } else { 16 * KIB };
            let m = Tlsf::with_cache(heap, shards, cache).unwrap();
            ts::any_sequence(&m, ops)?;
        }
    }

    #[test]
    fn two_threads() {
        let m = Tlsf::new(if cfg!(miri) { 16 * KIB } else { KIB * KIB }).unwrap();
        ts::two_threads(Arc::new(m), if cfg!(miri) { 150 } else { 50_000 }, 300);
    }

    #[test]
    fn shards_cut_the_heap_and_fall_back() {
        let m = Tlsf::with_cache(4 * KIB, 4, 0).unwrap();
        assert_eq!(m.shards(), 4);
        m.check();
        assert_eq!(m.largest_block(), KIB - 8);
        assert!(m.malloc(KIB).is_none(), "larger than a part");
        let own = m.fixed.preferred_part();
        let mut blocks = Vec::new();
        while let Some(p) = m.malloc(56) {
            blocks.push(p);
            m.check();
        }
        assert_eq!(blocks.len(), 64, "all four parts used");
        assert!(
            blocks[..16]
                .iter()
                .all(|&p| m.fixed.part_of(m.off(p)) == own),
            "the own part is used first"
        );
        for p in blocks {
            free(&m, p);
        }
        m.check();
        for p in 0..4 {
            assert_eq!(
                free_blocks(&m, p),
                [(0, KIB)],
                "part {p} is one block again"
            );
        }
        // Clamped so that every part has at least 64 bytes; the last takes the remainder.
        let m = Tlsf::with_shards(200, 64).unwrap();
        assert_eq!(m.shards(), 3);
        let lens: Vec<usize> = m.fixed.parts().iter().map(|p| p.len).collect();
        assert_eq!(lens, [64, 64, 72]);
        m.check();
    }

    #[test]
    fn shards_with_threads_freeing_each_others_blocks() {
        let m = Tlsf::with_shards(if cfg!(miri) { 64 * KIB } else { 4 << 20 }, 2).unwrap();
        ts::freed_by_another_thread(Arc::new(m), if cfg!(miri) { 100 } else { 2000 });
    }

    #[test]
    fn bias_off_never_biases() {
        let m = Tlsf::new(4 * KIB).unwrap().with_bias(false);
        let p = m.malloc(8).unwrap();
        free(&m, p);
        assert!(!m.lock_is_biased());
    }

    /// A large heap costs only what is used: laying it out writes one header per part, blocks
    /// written cost their own pages (loose bounds: a huge page may back a whole 2 MiB).
    #[test]
    #[cfg_attr(miri, ignore = "no mapping under Miri")]
    fn a_large_heap_is_not_touched() {
        let m = Tlsf::with_shards(256 << 20, 4).unwrap();
        ts::touched_only_where_used(&m, 4 * 2 * (2 << 20), 4 * (2 << 20));
    }
}

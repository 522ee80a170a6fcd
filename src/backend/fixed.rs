//! What the fixed-heap backends (`memsys5`, `memsys3`, `tlsf`) share: the heap, its parts and
//! their locks, the pool marking, `init`'s re-layout and `realloc` by copy. A fixed-heap backend
//! is a [`Fixed`] plus its algorithm: a per-part state type and the operations on it.
//!
//! # What [`Fixed`] owns
//!
//! - The heap buffer ([`HeapBuf`]: fresh zero pages, backed only when written; see
//!   `src/heap.rs`), taken at construction and given back when the value is dropped.
//! - The *cut*: the heap's first `units` units of `2^unit_log` bytes (memsys5: its atoms;
//!   tlsf: 8-byte steps; memsys3: bytes) are cut into `n` consecutive *parts* of `units / n`
//!   units, the last taking the remainder (`memsys5:shards=N`, `tlsf:shards=N`; memsys3 is the
//!   one-part case). Part `p` covers units `first .. first + units`, bytes `start .. start + len`
//!   of the heap (`len` is the part's units in bytes, capped at what the algorithm can address;
//!   what is past it is left unused). Bytes of the heap after the last unit (memsys5's control
//!   bytes, remainders) belong to no part. [`part_of`](Fixed::part_of) finds the part of a heap
//!   offset without a division instruction; [`preferred_part`](Fixed::preferred_part) is where
//!   the calling thread allocates first (its counters slot modulo `n`: consecutive threads,
//!   consecutive parts) and [`try_parts`](Fixed::try_parts) tries the others in turn when that
//!   one cannot serve.
//! - Per part: the algorithm's state behind the part's own [`Lock`] (`src/lock.rs`: biased to the
//!   first thread that takes it unless the spec says `bias=off`, [`forbid_bias`](Fixed::forbid_bias)),
//!   and the figures the algorithm publishes for `footprint` next to it (read without the lock).
//!   Parts are 1 KiB apart, so that the hardware prefetchers do not pull one thread's part (its
//!   lock and list heads, written on every call) into the core of the thread using the next (see
//!   `Shard` in `src/counters.rs`).
//! - The pool marking for valgrind and ASan (`src/marking.rs`): the pool is created at
//!   construction (every byte no-access) and destroyed on drop; [`mark_alloc`](Fixed::mark_alloc)
//!   and [`mark_free`](Fixed::mark_free) are the blocks' transitions.
//!
//! # What it guarantees to the algorithms
//!
//! - Every part lies inside the heap (`start + len <= heap_len`), parts do not overlap, and
//!   `start` is a multiple of the unit from the heap's 64-aligned base; so the part's view
//!   ([`PartGuard::view`]) may be indexed by any offset below `len` without a second bounds check.
//! - A [`PartGuard`] is the part's lock held: only its holder reads or writes the part's state
//!   and the allocator's bytes inside the part (headers, links), so the algorithm's operations on
//!   one part are serialized, and operations on different parts run in parallel.
//! - [`init`](Fixed::init) takes every part's lock, in order, the only place that holds more than
//!   one; it lays the parts out again only when no block is live in any of them, so that a
//!   re-initialization (`sqlite3_shutdown` then `sqlite3_initialize`) never hands out memory a
//!   live block still uses. With a block live it changes nothing.
//! - [`realloc_by_copy`](Fixed::realloc_by_copy) allocates the new block, copies the old block's
//!   bytes into it with no lock held (each block belongs to this call meanwhile), then frees the
//!   old one. When the new block cannot be had, the old one is left as it was.
//!
//! # Locking and marking rules (what the algorithm does)
//!
//! - It touches its part's bytes only through the guard's view, with the guard alive. Nothing on
//!   an allocation path allocates (the re-layout of `init` recurses over the parts rather than
//!   collecting their guards).
//! - It never holds two parts' locks (but through `init`), and never calls back into SQLite.
//! - What `footprint` reads it publishes in the part's `seen` with relaxed stores while it holds
//!   the lock; the reader loads them relaxed and never takes a lock (a thread other than a
//!   biased lock's owner taking it would revoke the bias for good).
//! - Marking: a block handed out is marked addressable for its whole usable size before its
//!   pointer leaves the allocator ([`mark_alloc`](Fixed::mark_alloc)); a block being freed is
//!   marked no-access before the allocator writes its own data into it
//!   ([`mark_free`](Fixed::mark_free)); the allocator's data inside the pool is read and written
//!   with [`HeapView::read_meta_u32`] / [`HeapView::write_meta_u32`], which make it accessible
//!   around each access; bytes the allocator reads without its lock stay accessible for good
//!   ([`keep_accessible`](Fixed::keep_accessible): memsys5's control bytes).

use crate::heap::{HeapBuf, HeapView};
use crate::lock::{Lock, LockGuard};
use crate::marking;
use crate::methods::{InitError, MemMethods};
use std::ptr::NonNull;

/// A fixed heap cut into parts, each with the state `S` of an algorithm behind its own lock and
/// the figures `P` it publishes for `footprint`; see the [module documentation](self).
pub(crate) struct Fixed<S, P> {
    heap: HeapBuf,
    /// log2 of the bytes of a unit.
    unit_log: u32,
    /// Units of every part but the last (the divisor of [`part_of_unit`](Self::part_of_unit)).
    per_part: usize,
    /// `ceil(2^64 / per_part)` when multiplying by it divides exactly for every unit of the heap,
    /// else 0 (then `part_of_unit` divides).
    recip: u64,
    parts: Box<[Part<S, P>]>,
}

/// One part of a [`Fixed`] heap. Its geometry never changes; its state is behind its lock.
#[repr(align(1024))]
pub(crate) struct Part<S, P> {
    /// First unit of the part, and its number of units.
    pub(crate) first: usize,
    pub(crate) units: usize,
    /// First byte of the part in the heap, and its usable length in bytes.
    pub(crate) start: usize,
    pub(crate) len: usize,
    state: Lock<S>,
    /// What the algorithm publishes for `footprint`, read without the lock.
    pub(crate) seen: P,
}

/// A part with its lock held: the algorithm's state and the part's bytes.
pub(crate) struct PartGuard<'a, S, P> {
    /// The part's bytes: offset `o` of the part is byte `o` of the view. A copy, so that base and
    /// length stay in registers across the heap writes of a critical section.
    pub(crate) view: HeapView<'a>,
    /// The part's units (see [`Part`]; its bytes are the view).
    pub(crate) first: usize,
    pub(crate) units: usize,
    pub(crate) seen: &'a P,
    pub(crate) st: LockGuard<'a, S>,
}

impl<S, P> Fixed<S, P> {
    /// A new heap of `len` bytes whose first `units` units of `2^unit_log` bytes are cut into
    /// `parts` parts (clamped to `1..=units`, at least 1), each at most `max_len` bytes long
    /// (the rest of a longer part is left unused), with the state and published figures `new`
    /// makes for each; the pool is created for valgrind/ASan. The parts are not laid out: the
    /// algorithm does that. `None` when the buffer cannot be had.
    ///
    /// # Panics
    /// When the units do not fit in `len` bytes.
    pub(crate) fn new(
        len: usize,
        unit_log: u32,
        units: usize,
        parts: usize,
        max_len: usize,
        mut new: impl FnMut() -> (S, P),
    ) -> Option<Fixed<S, P>> {
        assert!(
            units
                .checked_shl(unit_log)
                .is_some_and(|b| b >> unit_log == units && b <= len),
            "{units} units of 2^{unit_log} bytes in a heap of {len}"
        );
        let heap = HeapBuf::new(len)?;
        let n = parts.clamp(1, units.max(1));
        let per_part = units / n;
        let parts = (0..n)
            .map(|p| {
                let first = p * per_part;
                let units = if p + 1 == n { units - first } else { per_part };
                let (state, seen) = new();
                Part {
                    first,
                    units,
                    start: first << unit_log,
                    len: (units << unit_log).min(max_len),
                    state: Lock::new(state),
                    seen,
                }
            })
            .collect();
        // Multiplying by ceil(2^64 / d) and keeping the high half divides u < 2^64 / d exactly
        // by d (the error, u * (ceil(2^64 / d) * d - 2^64) / 2^64, stays under 1 / d): true for
        // every heap memsys5 can have (units and parts below 2^31), checked for the others.
        let exact = per_part >= 2 && (units as u128) * (per_part as u128) < 1 << 64;
        let f = Fixed {
            heap,
            unit_log,
            per_part,
            recip: if exact {
                u64::MAX / per_part as u64 + 1
            } else {
                0
            },
            parts,
        };
        marking::pool_create(f.heap.ptr(0), f.heap.len());
        Some(f)
    }

    /// The heap buffer.
    #[inline(always)]
    pub(crate) fn heap(&self) -> &HeapBuf {
        &self.heap
    }

    /// The parts, in address order (for `footprint` and the checkers).
    #[inline(always)]
    pub(crate) fn parts(&self) -> &[Part<S, P>] {
        &self.parts
    }

    /// Number of parts (the `shards` option, after clamping).
    #[inline(always)]
    pub(crate) fn shards(&self) -> usize {
        self.parts.len()
    }

    /// Length of the heap buffer in bytes.
    pub(crate) fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// Offset of `p` from the heap's base when it points into the heap (compared, never read).
    #[inline(always)]
    pub(crate) fn heap_offset(&self, p: NonNull<u8>) -> Option<usize> {
        self.heap.offset_of(p)
    }

    /// [`MemMethods::owns`] of a fixed heap: exact, whether `p` points into the heap (the
    /// address is compared, never read; no lock is taken).
    pub(crate) fn owns(&self, p: NonNull<u8>) -> Option<bool> {
        Some(self.heap.offset_of(p).is_some())
    }

    /// Never bias the parts' locks (spec key `bias=off`; see "Turning the bias off" in
    /// `src/lock.rs`): no `membarrier` or `mprotect` call, every call takes the test-and-set lock.
    pub(crate) fn forbid_bias(&mut self) {
        for p in self.parts.iter_mut() {
            p.state.forbid_bias();
        }
    }

    /// Whether any part's lock is biased to a thread now (tests and diagnostics).
    pub(crate) fn lock_is_biased(&self) -> bool {
        self.parts.iter().any(|p| p.state.is_biased())
    }

    /// Lock part `p` (`p < shards()`).
    #[inline(always)]
    pub(crate) fn lock(&self, p: usize) -> PartGuard<'_, S, P> {
        let part = &self.parts[p];
        // SAFETY: `start + len <= heap length`: the parts cut the first `units << unit_log`
        // bytes, which `new` checked to lie inside the buffer, and `len` is at most the part's
        // units in bytes.
        let view = unsafe { self.heap.view_unchecked(part.start, part.len) };
        PartGuard {
            view,
            first: part.first,
            units: part.units,
            seen: &part.seen,
            st: part.state.lock(),
        }
    }

    /// The part holding unit `u` (any `u`; one past the last unit gives the last part).
    #[inline(always)]
    pub(crate) fn part_of_unit(&self, u: usize) -> usize {
        let n = self.parts.len();
        if n == 1 {
            return 0;
        }
        // u / per_part without a division instruction (tens of cycles, on every free) when the
        // multiply is exact (see `new`).
        let q = if self.recip != 0 {
            ((u as u128 * self.recip as u128) >> 64) as usize
        } else {
            u / self.per_part
        };
        q.min(n - 1)
    }

    /// The part holding byte `off` of the heap (when `off` is in no part, the nearest below).
    #[inline(always)]
    pub(crate) fn part_of(&self, off: usize) -> usize {
        // Before the shift: with one part nothing else is needed (the hot case).
        if self.parts.len() == 1 {
            return 0;
        }
        self.part_of_unit(off >> self.unit_log)
    }

    /// The part the calling thread tries first: threads are spread over the parts by the slot
    /// the counters gave them (consecutive threads get consecutive slots).
    #[inline]
    pub(crate) fn preferred_part(&self) -> usize {
        match self.parts.len() {
            1 => 0,
            n => {
                let t = crate::counters::thread_index();
                if t < n {
                    t
                } else {
                    t % n
                }
            }
        }
    }

    /// `f` of the calling thread's part, and when that is `None`, of the next parts in turn
    /// (wrapping around): the first answer, or `None` when no part can serve.
    #[inline(always)]
    pub(crate) fn try_parts<T>(&self, mut f: impl FnMut(usize) -> Option<T>) -> Option<T> {
        let n = self.parts.len();
        let first = self.preferred_part();
        (0..n).find_map(|d| {
            f(if first + d < n {
                first + d
            } else {
                first + d - n
            })
        })
    }

    /// `xInit` of a fixed heap: `NoMem` when it cannot hold a block (`usable` false); otherwise
    /// every part's lock is taken, in order, with `lock`, and when `idle` says of each that no
    /// block is live in it, each is laid out again with `layout` while all are held.
    pub(crate) fn init<G>(
        &self,
        usable: bool,
        lock: impl Fn(usize) -> G,
        idle: impl Fn(&G) -> bool,
        mut layout: impl FnMut(&mut G),
    ) -> Result<(), InitError> {
        if !usable {
            return Err(InitError::NoMem);
        }
        relayout_from(0, self.parts.len(), &lock, &idle, &mut layout);
        Ok(())
    }

    /// The pool block `p` of `n` usable bytes is handed out (valgrind/ASan: addressable, contents
    /// undefined).
    #[inline(always)]
    pub(crate) fn mark_alloc(&self, p: NonNull<u8>, n: usize) {
        marking::block_alloc(self.heap.ptr(0), p, n);
    }

    /// The pool block `p` of `n` usable bytes is being freed (valgrind/ASan: no-access).
    #[inline(always)]
    pub(crate) fn mark_free(&self, p: NonNull<u8>, n: usize) {
        marking::block_free(self.heap.ptr(0), p, n);
    }

    /// Keep bytes `off .. off + n` of the heap accessible for good (what the algorithm reads
    /// without its lock).
    pub(crate) fn keep_accessible(&self, off: usize, n: usize) {
        marking::keep_accessible(self.heap.ptr(off), n);
    }

    /// `realloc` of a block that must move: a new block of `new_size` bytes from `m`, the first
    /// `keep` bytes of `ptr` copied into it with no lock held, then `ptr` freed. `None`, with
    /// `ptr` left as it was, when the new block cannot be had or `ptr` is not in the heap.
    ///
    /// # Safety
    /// `m` is the allocator this heap belongs to; `ptr` is a live block of it with at least
    /// `keep` usable bytes, and `keep <= new_size`. As for any realloc, the caller does not use
    /// `ptr` during the call, nor after it when it succeeds.
    pub(crate) unsafe fn realloc_by_copy(
        &self,
        m: &impl MemMethods,
        ptr: NonNull<u8>,
        keep: usize,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        debug_assert!(keep <= new_size);
        let from = self.heap.offset_of(ptr)?;
        let q = m.malloc(new_size)?;
        let Some(to) = self.heap.offset_of(q) else {
            unreachable!("a block of this heap's allocator outside the heap");
        };
        // SAFETY: both are live blocks of this heap, distinct (`q` was just handed out while
        // `ptr` is live), the old one `keep` usable bytes long at least (caller's contract) and
        // the new one `new_size >= keep`; the caller owns the old one and this call the new one,
        // so nobody else touches them.
        unsafe { self.heap.copy_within(from, to, keep) };
        // SAFETY: `ptr` is live (caller's contract) and, per the realloc contract, not used after
        // the call.
        unsafe { m.free(ptr) };
        Some(q)
    }
}

/// The re-layout of [`Fixed::init`] from part `p` of `n` on: lock `p`; when it is idle, go on
/// with the next, and when all after it were idle too (all locks held down the recursion), lay
/// `p` out. Whether parts `p..` were laid out. A recursion rather than a vector of guards, so
/// that `init` does not allocate (at most one frame per part).
fn relayout_from<G>(
    p: usize,
    n: usize,
    lock: &impl Fn(usize) -> G,
    idle: &impl Fn(&G) -> bool,
    layout: &mut impl FnMut(&mut G),
) -> bool {
    if p == n {
        return true;
    }
    let mut g = lock(p);
    if !idle(&g) || !relayout_from(p + 1, n, lock, idle, layout) {
        return false;
    }
    layout(&mut g);
    true
}

impl<S, P> Drop for Fixed<S, P> {
    fn drop(&mut self) {
        // Before the buffer goes back (`heap` is dropped after this).
        marking::pool_destroy(self.heap.ptr(0), self.heap.len());
    }
}

/// The public methods every fixed-heap backend has, for a type with a field `fixed` of type
/// [`Fixed`]: `with_bias`, `lock_is_biased`, `shards`, `heap_len`, `heap_offset`.
macro_rules! fixed_heap_api {
    ($t:ty) => {
        impl $t {
            /// With `on` false, the locks are never biased to a thread and make no `membarrier`
            /// or `mprotect` call (spec key `bias=off`; see "Turning the bias off" in
            /// `src/lock.rs`).
            pub fn with_bias(mut self, on: bool) -> Self {
                if !on {
                    self.fixed.forbid_bias();
                }
                self
            }

            /// Whether any part's lock is biased to a thread now (tests and diagnostics).
            pub fn lock_is_biased(&self) -> bool {
                self.fixed.lock_is_biased()
            }

            /// Number of parts the heap is cut into (the `shards` option, after clamping; 1
            /// without it).
            pub fn shards(&self) -> usize {
                self.fixed.shards()
            }

            /// Bytes of the heap buffer (`heap=`, after any cap), all parts and what lies
            /// outside them included.
            pub fn heap_len(&self) -> usize {
                self.fixed.heap_len()
            }

            /// Byte offset of `p` from the start of the heap, when it points into the heap,
            /// without taking a lock (the address is compared, never read): the `scopes` layer
            /// files blocks in a side table by it.
            #[inline(always)]
            pub fn heap_offset(&self, p: std::ptr::NonNull<u8>) -> Option<usize> {
                self.fixed.heap_offset(p)
            }
        }
    };
}
pub(crate) use fixed_heap_api;

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in algorithm: a count of live blocks and of layouts.
    #[derive(Default)]
    struct Count {
        live: usize,
        layouts: usize,
    }

    fn fixed(len: usize, unit_log: u32, units: usize, parts: usize) -> Fixed<Count, ()> {
        Fixed::new(len, unit_log, units, parts, usize::MAX, || {
            (Count::default(), ())
        })
        .unwrap()
    }

    #[test]
    fn the_cut_tiles_the_units_and_clamps_the_parts() {
        // 100 units of 64 bytes in 3 parts: 33 + 33 + 34.
        let f = fixed(100 * 65, 6, 100, 3);
        let geo: Vec<_> = f
            .parts()
            .iter()
            .map(|p| (p.first, p.units, p.start, p.len))
            .collect();
        assert_eq!(
            geo,
            [
                (0, 33, 0, 33 * 64),
                (33, 33, 33 * 64, 33 * 64),
                (66, 34, 66 * 64, 34 * 64)
            ]
        );
        // More parts than units: one unit each; no unit: one empty part.
        assert_eq!(fixed(27, 3, 3, 64).shards(), 3);
        let empty = fixed(1, 3, 0, 4);
        assert_eq!((empty.shards(), empty.parts()[0].len), (1, 0));
        // A part is capped at `max_len` bytes.
        let f = Fixed::new(1000, 3, 125, 2, 256, || (Count::default(), ())).unwrap();
        let lens: Vec<_> = f.parts().iter().map(|p| p.len).collect();
        assert_eq!((lens, f.parts()[1].start), (vec![256, 256], 62 * 8));
    }

    #[test]
    #[should_panic(expected = "units of 2^3 bytes")]
    fn units_past_the_heap_are_refused() {
        let _ = fixed(100, 3, 13, 1);
    }

    #[test]
    fn part_of_divides_exactly() {
        let big = if cfg!(miri) { 1 << 10 } else { 1 << 20 };
        for (units, parts) in [(100, 3), (big, 7), (64, 4), (10, 5), (2, 2), (9, 4)] {
            let f = fixed(units * 8, 3, units, parts);
            let per = f.parts()[0].units;
            for u in 0..units {
                let want = (u / per).min(f.shards() - 1);
                assert_eq!(
                    f.part_of_unit(u),
                    want,
                    "unit {u}, {units} units in {parts}"
                );
                assert_eq!(f.part_of(u * 8 + 7), want);
                let p = &f.parts()[want];
                assert!(
                    p.first <= u && u < p.first + p.units,
                    "unit {u} in part {want}"
                );
            }
        }
        // The multiply is exact up to 2^31 units (the most memsys5 has).
        for d in [2u64, 3, 7, 1000, 65_535, (1 << 31) - 1] {
            let r = u64::MAX / d + 1;
            for g in [0u64, 1, d - 1, d, d + 1, (1 << 31) - 1, (1 << 31) - 2] {
                assert_eq!(((g as u128 * r as u128) >> 64) as u64, g / d, "{g} / {d}");
            }
        }
    }

    #[test]
    fn try_parts_starts_at_the_own_part_and_wraps() {
        let f = fixed(64 * 8, 3, 64, 4);
        let own = f.preferred_part();
        let mut order = Vec::new();
        assert_eq!(
            f.try_parts(|p| -> Option<()> {
                order.push(p);
                None
            }),
            None
        );
        assert_eq!(order, (0..4).map(|d| (own + d) % 4).collect::<Vec<_>>());
        assert_eq!(
            f.try_parts(|p| (p != own).then_some(p)),
            Some((own + 1) % 4)
        );
    }

    #[test]
    fn init_lays_out_only_when_no_part_has_a_live_block() {
        let f = fixed(64 * 8, 3, 64, 3);
        let init = || {
            f.init(
                true,
                |p| f.lock(p),
                |g| g.st.live == 0,
                |g| g.st.layouts += 1,
            )
        };
        init().unwrap();
        let layouts = || {
            f.parts()
                .iter()
                .map(|p| p.state.lock().layouts)
                .collect::<Vec<_>>()
        };
        assert_eq!(layouts(), [1, 1, 1]);
        f.lock(2).st.live = 1;
        init().unwrap();
        assert_eq!(
            layouts(),
            [1, 1, 1],
            "a live block in the last part keeps them all"
        );
        f.lock(2).st.live = 0;
        f.lock(0).st.live = 1;
        init().unwrap();
        assert_eq!(layouts(), [1, 1, 1], "and in the first");
        f.lock(0).st.live = 0;
        init().unwrap();
        assert_eq!(layouts(), [2, 2, 2]);
        assert_eq!(
            f.init(false, |p| f.lock(p), |_| true, |_| {}),
            Err(InitError::NoMem)
        );
    }

    #[test]
    fn bias_is_per_part_and_can_be_forbidden() {
        let mut f = fixed(64 * 8, 3, 64, 2);
        f.forbid_bias();
        drop(f.lock(0));
        drop(f.lock(1));
        assert!(!f.lock_is_biased());
        let mut x = 0u8;
        assert_eq!(f.owns(NonNull::from(&mut x)), Some(false));
        assert_eq!(f.owns(f.heap().ptr(511)), Some(true));
        assert_eq!(f.heap_offset(f.heap().ptr(100)), Some(100));
    }
}

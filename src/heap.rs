//! [`HeapBuf`]: the one fixed heap buffer that `memsys3`, `memsys5` and `tlsf` carve blocks
//! from, and the only place where their pointer arithmetic happens; [`HeapView`]: a part of it,
//! with the one set of byte and word accessors the allocators use (those of their own data inside
//! the pool marking it accessible to valgrind and ASan around each access). The buffer belongs to
//! the fixed heap of `src/backend/fixed.rs`, which creates and destroys its pool marking and cuts
//! it into parts.
//!
//! # Where the bytes come from, and what they cost
//!
//! A heap must cost nothing until it is used: a `memsys5:heap=400M` that SQLite fills to 50 MB
//! should make the process about 50 MB larger, not 400. So on Linux the buffer is an anonymous
//! private mapping (`mmap(MAP_PRIVATE | MAP_ANONYMOUS)`): it reads as zeros, and the kernel backs a
//! page with memory only when it is first written (a read of an untouched page maps the shared
//! zero page, which does not count in the resident size either). Not `MAP_NORESERVE`: the mapping
//! is charged against the kernel's overcommit accounting when it is made, as a `malloc`ed heap
//! would be, so a heap the machine cannot give (`memsys5:heap=1000G` on a 24 GiB machine) is
//! refused at install with `SQLITE_NOMEM`, as before, instead of being accepted and killing the
//! process at a page fault later: a fixed heap promises its memory up front. The
//! allocators over it are written to match: their layout writes only the bytes it must (see
//! "Heap layout" in `memsys5` and `memsys3`, "What is touched when" in `tlsf`), relying on
//! every other byte reading 0, and [`zero`](HeapBuf::zero) gives whole pages back to the kernel
//! rather than writing zeros into them. The pool marking for valgrind and ASan (`src/marking.rs`) changes only the tools' shadow
//! memory, never the heap's pages.
//!
//! When the mapping is refused (a sandbox that forbids `mmap`, an address-space limit) and on
//! other systems, the buffer comes from the Rust global allocator, zeroed (`alloc_zeroed`, which
//! for large sizes is `calloc`'s fresh pages too). Under Miri it always does, so that the
//! allocator cores run there with strict provenance. So it does with the `asan` feature, so that
//! AddressSanitizer's reports place an address inside the heap's allocation (its allocator
//! serves a large zeroed request with fresh pages too).
//!
//! Either way every pointer handed out is derived from the buffer's base pointer by an offset;
//! addresses are only ever turned into offsets, never back into pointers.

use crate::marking;
use std::alloc::Layout;
use std::ptr::NonNull;

/// Alignment of the heap buffer's base (a mapping is page-aligned, which is more).
pub const HEAP_ALIGN: usize = 64;

/// Where a [`HeapBuf`]'s bytes come from (and so how they are given back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// An anonymous private mapping of `len.max(1)` bytes (`munmap` on drop).
    Mapped,
    /// The Rust global allocator, `Layout(len.max(1), HEAP_ALIGN)` (`dealloc` on drop).
    Global,
}

/// A heap buffer of `len` bytes, all zero when created, owned, freed on drop.
pub struct HeapBuf {
    base: NonNull<u8>,
    len: usize,
    source: Source,
}

// SAFETY: HeapBuf owns its buffer like a Box<[u8]>; it has no thread affinity. All access to the
// bytes goes through `unsafe` methods whose callers provide the synchronization (the fixed heap
// of src/backend/fixed.rs reaches a part's bytes only with the part's lock held).
unsafe impl Send for HeapBuf {}
// SAFETY: as above: shared references only read `base`/`len`/`source`, which never change.
unsafe impl Sync for HeapBuf {}

impl HeapBuf {
    /// A new buffer of `len` bytes, every byte 0, or `None` when memory cannot be had. On Linux
    /// no page of it is resident until written (see the module documentation).
    pub fn new(len: usize) -> Option<HeapBuf> {
        if let Some(base) = map::map(len.max(1)) {
            return Some(HeapBuf {
                base,
                len,
                source: Source::Mapped,
            });
        }
        let layout = Layout::from_size_align(len.max(1), HEAP_ALIGN).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let base = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some(HeapBuf {
            base,
            len,
            source: Source::Global,
        })
    }

    /// Whether the buffer is a lazily backed mapping (else it comes from the global allocator).
    pub fn is_mapped(&self) -> bool {
        self.source == Source::Mapped
    }

    /// Set bytes `off .. off + n` to 0. In a mapping, the whole pages of the range are given back
    /// to the kernel (`madvise(MADV_DONTNEED)`: they read as zeros again and are resident no
    /// more) and only the partial pages at its ends are written; otherwise every byte is written.
    ///
    /// # Panics
    /// When the range is not inside the buffer.
    ///
    /// # Safety
    /// No other thread may access the range meanwhile, and none of it may belong to a block
    /// handed out to a user.
    pub unsafe fn zero(&self, off: usize, n: usize) {
        let end = off.checked_add(n).filter(|&e| e <= self.len);
        let end = end
            .unwrap_or_else(|| panic!("heap range {off}+{n} outside a heap of {} bytes", self.len));
        let (mut lo, mut hi) = (end, end);
        if self.source == Source::Mapped {
            let page = map::page_size();
            // The base of a mapping is page-aligned, so page boundaries are offsets too.
            let (a, b) = (off.next_multiple_of(page), end / page * page);
            // SAFETY: `off <= a < b <= end <= len`: whole pages inside the mapping, which this
            // buffer owns; nobody else uses them (caller's contract), so their contents may go.
            if a < b && unsafe { map::discard(self.ptr(a), b - a) } {
                (lo, hi) = (a, b);
            }
        }
        // SAFETY: `off <= lo <= hi <= end <= len`: both pieces are inside the buffer; exclusive
        // access by the caller's contract.
        unsafe {
            self.ptr(off).as_ptr().write_bytes(0, lo - off);
            self.ptr(hi).as_ptr().write_bytes(0, end - hi);
        }
    }

    /// Bytes of the buffer backed by memory now (resident pages, times the page size), when the
    /// buffer is a mapping and the system says (`mincore`); `None` otherwise. For tests and
    /// diagnostics: it is a system call and a vector of one byte per page.
    pub fn resident_bytes(&self) -> Option<usize> {
        if self.source != Source::Mapped {
            return None;
        }
        map::resident(self.base, self.len.max(1))
    }
}

impl HeapBuf {
    /// Size of the buffer in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty (never, in practice).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pointer to byte `off` of the buffer (`off == len` gives the one-past-the-end pointer).
    ///
    /// # Panics
    /// When `off > len`: computing such a pointer would be undefined behaviour.
    #[inline]
    pub fn ptr(&self, off: usize) -> NonNull<u8> {
        assert!(
            off <= self.len,
            "heap offset {off} outside a heap of {} bytes",
            self.len
        );
        // SAFETY: `off <= len`, so the result is within (or one past the end of) the allocation
        // `base` points to; it is derived from `base` and keeps its provenance.
        unsafe { self.base.add(off) }
    }

    /// Offset of `p` from the base when `p` points into the buffer, else `None`.
    #[inline]
    pub fn offset_of(&self, p: NonNull<u8>) -> Option<usize> {
        self.offset_below(p, self.len)
    }

    /// Offset of `p` from the base when it is below `end` (`end <= len`: a prefix of the
    /// buffer), else `None`. The address is compared, never read.
    #[inline(always)]
    pub fn offset_below(&self, p: NonNull<u8>, end: usize) -> Option<usize> {
        debug_assert!(end <= self.len);
        let off = p.as_ptr().addr().wrapping_sub(self.base.as_ptr().addr());
        (off < end).then_some(off)
    }

    /// Copy `n` bytes from offset `from` to offset `to` (the ranges may overlap).
    ///
    /// # Safety
    /// Both ranges must lie inside the buffer, and no other thread may access them meanwhile.
    #[inline]
    pub unsafe fn copy_within(&self, from: usize, to: usize, n: usize) {
        assert!(from.checked_add(n).is_some_and(|e| e <= self.len));
        assert!(to.checked_add(n).is_some_and(|e| e <= self.len));
        // SAFETY: both ranges are in bounds (checked above); `copy` allows overlap; exclusive
        // access is the caller's contract.
        unsafe { std::ptr::copy(self.ptr(from).as_ptr(), self.ptr(to).as_ptr(), n) }
    }
}

impl HeapBuf {
    /// A view of bytes `off .. off + len` of the buffer, for a hot path that checks its indices
    /// against `len` itself and then reaches the bytes without a second bounds check (see
    /// [`HeapView`]). The range is not checked here: the caller bounded it once beforehand.
    ///
    /// # Safety
    /// `off + len <= self.len()` (without overflow).
    #[inline(always)]
    pub unsafe fn view_unchecked(&self, off: usize, len: usize) -> HeapView<'_> {
        debug_assert!(off.checked_add(len).is_some_and(|e| e <= self.len));
        HeapView {
            // SAFETY: `off <= off + len <= len` of the buffer (caller's contract): within the
            // allocation, derived from `base`.
            base: unsafe { self.base.add(off) },
            len,
            _heap: std::marker::PhantomData,
        }
    }
}

/// Bytes `off .. off + len` of a [`HeapBuf`], borrowed from it: a base pointer derived from the
/// buffer's (same provenance) and a length. Its accessors are `unsafe` and check their offsets
/// only in debug builds: the caller has already bounded them (typically an atom index checked
/// against the number of atoms of a part), and the view's `Copy` fields let the compiler keep
/// base and length in registers across the heap writes of an allocator's critical section,
/// where `HeapBuf`'s own fields would have to be reloaded after every store. The allocator's own
/// words inside the pool (headers, free-list links) go through
/// [`read_meta_u32`](Self::read_meta_u32) and [`write_meta_u32`](Self::write_meta_u32), which
/// make them accessible to valgrind and ASan around each access (`src/marking.rs`).
#[derive(Clone, Copy)]
pub struct HeapView<'a> {
    base: NonNull<u8>,
    len: usize,
    _heap: std::marker::PhantomData<&'a HeapBuf>,
}

impl HeapView<'_> {
    /// Read the byte at offset `off` of the view.
    ///
    /// # Safety
    /// `off < len`, and no other thread may be writing that byte.
    #[inline(always)]
    pub unsafe fn read_u8(&self, off: usize) -> u8 {
        debug_assert!(off < self.len);
        // SAFETY: `off < len` (caller's contract) and the view lies inside the buffer (the
        // contract of `HeapBuf::view_unchecked`); no concurrent writer by the same contract.
        unsafe { self.base.add(off).as_ptr().read() }
    }

    /// Write the byte at offset `off` of the view.
    ///
    /// # Safety
    /// `off < len`, and no other thread may be reading or writing that byte.
    #[inline(always)]
    pub unsafe fn write_u8(&self, off: usize, v: u8) {
        debug_assert!(off < self.len);
        // SAFETY: as in `read_u8`.
        unsafe { self.base.add(off).as_ptr().write(v) }
    }

    /// Pointer to offset `off` of the view (with the buffer's provenance).
    ///
    /// # Safety
    /// `off <= len`.
    #[inline(always)]
    pub unsafe fn ptr(&self, off: usize) -> NonNull<u8> {
        debug_assert!(off <= self.len);
        // SAFETY: `off <= len` (caller's contract) and the view lies inside the buffer, so the
        // result is within (or one past the end of) the allocation, derived from its base.
        unsafe { self.base.add(off) }
    }

    /// Read the `u32` at offset `off` of the view.
    ///
    /// # Safety
    /// `off` is a multiple of 4 with `off + 4 <= len`, the view's start is 4-aligned, and no
    /// other thread may be writing those bytes.
    #[inline(always)]
    pub unsafe fn read_u32(&self, off: usize) -> u32 {
        debug_assert!(off % 4 == 0 && off + 4 <= self.len);
        // SAFETY: in bounds and aligned by the caller's contract; no concurrent writer.
        unsafe { self.base.add(off).cast::<u32>().as_ptr().read() }
    }

    /// Write the `u32` at offset `off` of the view.
    ///
    /// # Safety
    /// As [`read_u32`](Self::read_u32), and no other thread may be reading those bytes.
    #[inline(always)]
    pub unsafe fn write_u32(&self, off: usize, v: u32) {
        debug_assert!(off % 4 == 0 && off + 4 <= self.len);
        // SAFETY: as in `read_u32`.
        unsafe { self.base.add(off).cast::<u32>().as_ptr().write(v) }
    }

    /// Read the allocator's own `u32` at offset `off` of the view (a header word or a free-list
    /// link inside the pool), with the `span` bytes that hold it, from `off & !(span - 1)`, made
    /// accessible to valgrind and ASan for the read and no-access again after it (see
    /// `src/marking.rs`: the pool's metadata is no-access otherwise). `MARK` false: the caller has
    /// seen that no marking is wanted (`marking::active()` false, which never changes once
    /// asked), so not even that is asked again.
    ///
    /// # Safety
    /// As [`read_u32`](Self::read_u32); `span` is a power of two of at least 4, and the span's
    /// bytes lie inside the view and belong to the allocator, not to a block handed out, with the
    /// pool's lock held (so that no other thread marks them meanwhile).
    #[inline(always)]
    pub unsafe fn read_meta_u32<const MARK: bool>(&self, off: usize, span: usize) -> u32 {
        if !MARK {
            // SAFETY: forwarded contract.
            return unsafe { self.read_u32(off) };
        }
        debug_assert!(
            span.is_power_of_two() && span >= 4 && (off & !(span - 1)) + span <= self.len
        );
        // SAFETY: the span lies inside the view (caller's contract), so its start does.
        let at = unsafe { self.ptr(off & !(span - 1)) };
        // SAFETY: forwarded contract; the marking only changes the tools' shadow memory.
        marking::with_accessible(at, span, || unsafe { self.read_u32(off) })
    }

    /// Write the allocator's own `u32` at offset `off` of the view, with its span accessible
    /// meanwhile, as [`read_meta_u32`](Self::read_meta_u32) reads it.
    ///
    /// # Safety
    /// As [`read_meta_u32`](Self::read_meta_u32), and no other thread may be reading those bytes.
    #[inline(always)]
    pub unsafe fn write_meta_u32<const MARK: bool>(&self, off: usize, span: usize, v: u32) {
        if !MARK {
            // SAFETY: forwarded contract.
            return unsafe { self.write_u32(off, v) };
        }
        debug_assert!(
            span.is_power_of_two() && span >= 4 && (off & !(span - 1)) + span <= self.len
        );
        // SAFETY: as in `read_meta_u32`.
        let at = unsafe { self.ptr(off & !(span - 1)) };
        // SAFETY: forwarded contract.
        marking::with_accessible(at, span, || unsafe { self.write_u32(off, v) })
    }

    /// Length of the view in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of `p` from the start of the view when `p` points into it, else `None` (the
    /// address is compared, never read).
    #[inline(always)]
    pub fn offset_of(&self, p: NonNull<u8>) -> Option<usize> {
        let off = p.as_ptr().addr().wrapping_sub(self.base.as_ptr().addr());
        (off < self.len).then_some(off)
    }
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        match self.source {
            // SAFETY: `base` is the mapping of `len.max(1)` bytes made in `new`, unmapped once;
            // no pointer into it outlives the buffer (the backends' blocks are theirs to hand
            // out only while they own the buffer).
            Source::Mapped => unsafe { map::unmap(self.base, self.len.max(1)) },
            Source::Global => {
                let layout = Layout::from_size_align(self.len.max(1), HEAP_ALIGN)
                    .expect("layout was valid at new");
                // SAFETY: `base` was allocated in `new` with exactly this layout and is freed
                // once.
                unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) }
            }
        }
    }
}

/// A new anonymous private mapping of `len > 0` bytes, read-write, page-aligned, reading as
/// zeros and backed by memory only where written; never unmapped by anyone (for memory kept for
/// the rest of the process, as the counters of an installed allocator are). `None` where heap
/// buffers are not mapped either (see [`HeapBuf`]: off Linux, under Miri, with the `asan`
/// feature) or when the system refuses.
pub(crate) fn map_zeroed_forever(len: usize) -> Option<NonNull<u8>> {
    map::map(len)
}

/// The anonymous mapping behind a [`HeapBuf`] on Linux; elsewhere, under Miri and with the `asan`
/// feature, `map` says no and the buffer comes from the global allocator.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(miri),
    not(feature = "asan")
))]
mod map {
    use std::ptr::NonNull;

    /// A new anonymous private mapping of `len > 0` bytes, read-write, zero-filled on demand and
    /// not charged against the overcommit limit; `None` when the system refuses it.
    pub(super) fn map(len: usize) -> Option<NonNull<u8>> {
        // SAFETY: a new anonymous mapping at an address the kernel chooses: no memory in use is
        // affected. The result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(p.cast::<u8>())
    }

    /// Unmap `len` bytes at `base`.
    ///
    /// # Safety
    /// `base .. base + len` is a whole mapping made by [`map`], not used after the call.
    pub(super) unsafe fn unmap(base: NonNull<u8>, len: usize) {
        // SAFETY: the caller's contract: the range is ours and nobody uses it any more.
        let r = unsafe { libc::munmap(base.as_ptr().cast(), len) };
        debug_assert_eq!(r, 0, "munmap of a heap failed");
    }

    /// Give the pages `p .. p + len` back (`MADV_DONTNEED`: a private anonymous page reads as
    /// zeros afterwards and is no longer resident); whether it was done.
    ///
    /// # Safety
    /// `p` is page-aligned, `len` a multiple of the page size, the range inside a mapping made by
    /// [`map`], and nobody needs its contents or accesses it meanwhile.
    pub(super) unsafe fn discard(p: NonNull<u8>, len: usize) -> bool {
        // SAFETY: the caller's contract; MADV_DONTNEED on a private anonymous mapping only
        // replaces the pages' contents by zeros.
        unsafe { libc::madvise(p.as_ptr().cast(), len, libc::MADV_DONTNEED) == 0 }
    }

    /// The system's page size.
    pub(super) fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
    }

    /// Resident bytes of the mapping `base .. base + len` (`mincore`).
    pub(super) fn resident(base: NonNull<u8>, len: usize) -> Option<usize> {
        let page = page_size();
        let mut v = vec![0u8; len.div_ceil(page)];
        // SAFETY: `base` is page-aligned and `base .. base + len` is mapped (a HeapBuf's
        // mapping); `v` has one byte per page of the range, as mincore writes.
        let r = unsafe { libc::mincore(base.as_ptr().cast(), len, v.as_mut_ptr().cast()) };
        (r == 0).then(|| v.iter().filter(|&&b| b & 1 != 0).count() * page)
    }
}

/// No mapping here: the buffer comes from the global allocator.
#[cfg(not(all(
    any(target_os = "linux", target_os = "android"),
    not(miri),
    not(feature = "asan")
)))]
mod map {
    use std::ptr::NonNull;

    pub(super) fn map(_len: usize) -> Option<NonNull<u8>> {
        None
    }

    /// Never called: there is no mapping to unmap.
    ///
    /// # Safety
    /// None needed (it does nothing).
    pub(super) unsafe fn unmap(_base: NonNull<u8>, _len: usize) {}

    /// Never called: there is no mapping.
    ///
    /// # Safety
    /// None needed (it does nothing).
    pub(super) unsafe fn discard(_p: NonNull<u8>, _len: usize) -> bool {
        false
    }

    pub(super) fn page_size() -> usize {
        4096
    }

    pub(super) fn resident(_base: NonNull<u8>, _len: usize) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip() {
        let h = HeapBuf::new(4096).unwrap();
        for off in [0, 8, 4088] {
            assert_eq!(h.offset_of(h.ptr(off)), Some(off));
        }
        assert_eq!(h.offset_of(h.ptr(4096)), None);
        let mut x = 0u8;
        assert_eq!(h.offset_of(NonNull::from(&mut x)), None);
        // SAFETY: the whole buffer.
        let v = unsafe { h.view_unchecked(0, 4096) };
        assert_eq!(v.offset_of(h.ptr(8)), Some(8));
        assert_eq!(v.offset_of(h.ptr(4096)), None);
        // SAFETY: offsets in bounds, aligned, nothing handed out.
        unsafe {
            v.write_u32(16, 0xdead_beef);
            assert_eq!(v.read_u32(16), 0xdead_beef);
            h.copy_within(16, 32, 4);
            assert_eq!(v.read_meta_u32::<true>(32, 8), 0xdead_beef);
            // Marked no-access again after each access when the tools run: read it marked too.
            v.write_meta_u32::<true>(36, 4, 7);
            assert_eq!(v.read_meta_u32::<true>(36, 4), 7);
        }
    }

    /// Read byte `off` (test helper).
    fn byte(h: &HeapBuf, off: usize) -> u8 {
        // SAFETY: `ptr` checks the offset; nothing is handed out in these tests.
        unsafe { h.ptr(off).as_ptr().read() }
    }

    /// A new buffer reads as zeros; `zero` clears a range across page boundaries (whole pages
    /// given back, the partial ones written) and nothing outside it.
    #[test]
    fn new_is_zero_and_zero_clears_exactly_its_range() {
        let len = if cfg!(miri) {
            3 * 4096 + 100
        } else {
            5 * 4096 + 100
        };
        let h = HeapBuf::new(len).unwrap();
        assert_eq!(
            h.is_mapped(),
            cfg!(all(target_os = "linux", not(miri), not(feature = "asan")))
        );
        assert!((0..len).step_by(61).all(|o| byte(&h, o) == 0));
        assert_eq!(byte(&h, len - 1), 0);
        // SAFETY: in bounds, exclusive (the test owns the buffer).
        unsafe { h.ptr(0).as_ptr().write_bytes(0xa5, len) };
        let (off, n) = (100, len - 300);
        // SAFETY: as above.
        unsafe { h.zero(off, n) };
        for o in 0..len {
            let want = if (off..off + n).contains(&o) { 0 } else { 0xa5 };
            assert_eq!(byte(&h, o), want, "byte {o}");
        }
        // SAFETY: as above; an empty range and the whole buffer.
        unsafe {
            h.zero(len, 0);
            h.zero(0, len);
        }
        assert!((0..len).all(|o| byte(&h, o) == 0));
    }

    #[test]
    #[should_panic(expected = "outside a heap")]
    fn zero_out_of_range_panics() {
        let h = HeapBuf::new(64).unwrap();
        // SAFETY: the range is checked before anything is written (it panics).
        unsafe { h.zero(60, 8) };
    }

    /// A large buffer costs no memory until written, and then only the pages written; `zero`
    /// gives them back.
    #[test]
    #[cfg_attr(miri, ignore = "no mapping under Miri")]
    fn pages_are_backed_only_when_written() {
        let h = HeapBuf::new(64 << 20).unwrap();
        let Some(r0) = h.resident_bytes() else {
            eprintln!("not a mapping here: skipped");
            return;
        };
        assert_eq!(r0, 0, "a fresh 64 MiB heap has resident pages");
        if std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]"))
        {
            // A write may then back a whole 2 MiB page: the counts below do not hold.
            eprintln!("transparent huge pages always on: page counts skipped");
            return;
        }
        // SAFETY: in bounds, 4-aligned, exclusive.
        unsafe {
            let v = h.view_unchecked(0, 64 << 20);
            v.write_u32(0, 1);
            v.write_u32(32 << 20, 2);
            h.ptr(1 << 20).as_ptr().write_bytes(7, 256 << 10);
        }
        let page = map::page_size();
        let r1 = h.resident_bytes().unwrap();
        assert_eq!(r1, 2 * page + (256 << 10), "resident after writes");
        // SAFETY: exclusive, nothing handed out.
        unsafe { h.zero(1 << 20, 256 << 10) };
        assert_eq!(h.resident_bytes().unwrap(), 2 * page);
        assert_eq!(byte(&h, (1 << 20) + 5), 0);
    }

    #[test]
    #[should_panic(expected = "outside a heap")]
    fn out_of_range_pointer_panics() {
        let h = HeapBuf::new(64).unwrap();
        let _ = h.ptr(65);
    }
}

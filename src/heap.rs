//! [`HeapBuf`]: the one fixed heap buffer that `memsys3` and `memsys5` carve blocks from, and the
//! only place where their pointer arithmetic happens.
//!
//! The buffer comes from the Rust global allocator (so the allocator cores run under Miri with
//! strict provenance: every pointer handed out is derived from the buffer's base pointer by an
//! offset; addresses are only ever turned into offsets, never back into pointers).

use std::alloc::Layout;
use std::ptr::NonNull;

/// Alignment of the heap buffer's base.
pub const HEAP_ALIGN: usize = 64;

/// A heap buffer of `len` bytes, owned, freed on drop.
pub struct HeapBuf {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: HeapBuf owns its buffer like a Box<[u8]>; it has no thread affinity. All access to the
// bytes goes through `unsafe` methods whose callers provide the synchronization (each backend keeps
// its HeapBuf behind its own mutex).
unsafe impl Send for HeapBuf {}
// SAFETY: as above: shared references only read `base`/`len`, which never change.
unsafe impl Sync for HeapBuf {}

impl HeapBuf {
    /// A new buffer of `len` bytes (contents unspecified), or `None` when memory cannot be had.
    pub fn new(len: usize) -> Option<HeapBuf> {
        let layout = Layout::from_size_align(len.max(1), HEAP_ALIGN).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let base = NonNull::new(unsafe { std::alloc::alloc(layout) })?;
        Some(HeapBuf { base, len })
    }

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

    /// Read the `u32` at byte offset `off`.
    ///
    /// # Safety
    /// `off` must be a multiple of 4 with `off + 4 <= len`, and no other thread may be writing
    /// those bytes (they must not belong to a block handed out to a user).
    #[inline]
    pub unsafe fn read_u32(&self, off: usize) -> u32 {
        debug_assert!(off % 4 == 0 && off + 4 <= self.len);
        // SAFETY: in bounds and aligned (base is 64-aligned, off a multiple of 4) by the caller's
        // contract; no concurrent writer by the same contract.
        unsafe { self.ptr(off).cast::<u32>().as_ptr().read() }
    }

    /// Write the `u32` at byte offset `off`.
    ///
    /// # Safety
    /// As [`read_u32`](Self::read_u32), and no other thread may be reading those bytes.
    #[inline]
    pub unsafe fn write_u32(&self, off: usize, v: u32) {
        debug_assert!(off % 4 == 0 && off + 4 <= self.len);
        // SAFETY: as in `read_u32`.
        unsafe { self.ptr(off).cast::<u32>().as_ptr().write(v) }
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
/// where `HeapBuf`'s own fields would have to be reloaded after every store.
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

    /// Set every byte of the view to 0.
    ///
    /// # Safety
    /// No other thread may be reading or writing any byte of the view.
    #[inline]
    pub unsafe fn zero(&self) {
        // SAFETY: the view lies inside the buffer (the contract of `HeapBuf::view_unchecked`);
        // exclusive access by the caller's contract.
        unsafe { self.base.as_ptr().write_bytes(0, self.len) }
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
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        let layout =
            Layout::from_size_align(self.len.max(1), HEAP_ALIGN).expect("layout was valid at new");
        // SAFETY: `base` was allocated in `new` with exactly this layout and is freed once.
        unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) }
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
        // SAFETY: offsets in bounds, aligned, nothing handed out.
        unsafe {
            h.write_u32(16, 0xdead_beef);
            assert_eq!(h.read_u32(16), 0xdead_beef);
            h.copy_within(16, 32, 4);
            assert_eq!(h.read_u32(32), 0xdead_beef);
        }
    }

    #[test]
    #[should_panic(expected = "outside a heap")]
    fn out_of_range_pointer_panics() {
        let h = HeapBuf::new(64).unwrap();
        let _ = h.ptr(65);
    }
}

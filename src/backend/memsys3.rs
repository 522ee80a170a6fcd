//! `memsys3` (placeholder while being written).
use crate::methods::MemMethods;
use std::ptr::NonNull;
/// Placeholder.
pub struct Memsys3;
impl Memsys3 {
    /// Placeholder.
    pub fn new(_heap: usize) -> Option<Memsys3> {
        Some(Memsys3)
    }
}
// SAFETY: placeholder, never returns a block.
unsafe impl MemMethods for Memsys3 {
    fn name(&self) -> &'static str {
        "memsys3"
    }
    fn malloc(&self, _size: usize) -> Option<NonNull<u8>> {
        None
    }
    unsafe fn free(&self, _ptr: NonNull<u8>) {}
    unsafe fn realloc(&self, _ptr: NonNull<u8>, _n: usize) -> Option<NonNull<u8>> {
        None
    }
    unsafe fn size(&self, _ptr: NonNull<u8>) -> usize {
        0
    }
    fn roundup(&self, size: usize) -> usize {
        size
    }
}

//! `debug` (placeholder while being written).
use crate::methods::MemMethods;
use std::ptr::NonNull;
/// Placeholder.
pub struct Debug;
impl Debug {
    /// Placeholder.
    pub fn new(_backtrace: usize) -> Debug {
        Debug
    }
}
// SAFETY: placeholder, never returns a block.
unsafe impl MemMethods for Debug {
    fn name(&self) -> &'static str {
        "debug"
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

//! What the fixed heaps' unit tests share: a deterministic generator and the byte-pattern checks
//! of blocks.

use std::ptr::NonNull;

/// Deterministic pseudo-random numbers (splitmix64).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Write `tag` over the first `n` bytes of `p`, a live test block of at least `n` bytes.
pub(crate) fn fill(p: NonNull<u8>, n: usize, tag: u8) {
    // SAFETY: the tests call this on live blocks they own, with `n` at most their usable size.
    unsafe { p.as_ptr().write_bytes(tag, n) }
}

/// Whether the first `n` bytes of `p` (as for [`fill`]) all hold `tag`.
pub(crate) fn holds(p: NonNull<u8>, n: usize, tag: u8) -> bool {
    // SAFETY: as in `fill`: a live block of at least `n` readable bytes.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), n) }
        .iter()
        .all(|&b| b == tag)
}

//! The one trait every allocator implements: a Rust mirror of SQLite's `sqlite3_mem_methods`.
//!
//! SQLite's table has seven entries (`xMalloc`, `xFree`, `xRealloc`, `xSize`, `xRoundup`,
//! `xInit`, `xShutdown`). [`MemMethods`] has one method for each, with `&self` receivers so that an
//! implementation decides its own locking: sqlalloc imposes no global lock. The C table that
//! SQLite sees (`src/installed.rs`) and the layers (`src/stack.rs`) are thin code over this trait.

use crate::counters::Stats;
use std::ptr::NonNull;

/// Alignment of every block handed out by every sqlalloc allocator (SQLite requires 8).
pub const ALIGN: usize = 8;

/// Largest request SQLite itself ever passes to `xMalloc`/`xRealloc` (`malloc.c` refuses
/// `n >= 0x7fffff00` before calling the allocator). Requests above it still get a clean failure
/// from every sqlalloc allocator, never an overflow.
pub const SQLITE_MAX_REQUEST: usize = 0x7fff_ff00;

/// Why [`MemMethods::init`] failed. Mirrors the SQLite result code `xInit` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// `SQLITE_NOMEM`: the allocator's heap cannot hold even one block.
    NoMem,
    /// `SQLITE_ERROR`: any other reason.
    Error,
}

/// An allocator for SQLite: the methods of `sqlite3_mem_methods`.
///
/// # Safety
///
/// Implementors promise, for as long as the value lives:
/// - [`malloc`](Self::malloc) and [`realloc`](Self::realloc) return either `None` or a pointer to
///   at least the requested number of writable bytes, aligned to [`ALIGN`], that overlaps no other
///   live block of this allocator;
/// - [`size`](Self::size) of a live block is at least the size last requested for it and at most
///   the number of bytes that may be used through the pointer, and does not change while the block
///   lives;
/// - [`malloc_and_size`](Self::malloc_and_size) and [`size_and_free`](Self::size_and_free), when
///   overridden, behave exactly as their default bodies (the two calls in sequence);
/// - [`roundup`](Self::roundup)`(n)` is at least `n` and is the size [`size`](Self::size) would
///   report for a block of `n` bytes when the allocator can tell in advance (SQLite uses it to
///   size buffers so that it gets to use the slack);
/// - a failed [`realloc`](Self::realloc) leaves the old block untouched and live;
/// - all methods may be called from several threads at once (`Send + Sync`), with no lock held by
///   the caller.
pub unsafe trait MemMethods: Send + Sync {
    /// Short name of the backend, as written in a spec (`"system"`, `"memsys5"`, …).
    fn name(&self) -> &'static str;

    /// `xMalloc`: a new block of at least `size` bytes, or `None`. A request of 0 bytes gets the
    /// smallest block the allocator has.
    fn malloc(&self, size: usize) -> Option<NonNull<u8>>;

    /// `xFree`: release a block.
    ///
    /// # Safety
    /// `ptr` must be a live block returned by this allocator's `malloc` or `realloc`, and is not
    /// used again after the call.
    unsafe fn free(&self, ptr: NonNull<u8>);

    /// `xRealloc`: resize a block, moving it when needed; the first `min(old, new)` bytes are
    /// kept. On `None` the old block is unchanged and still live.
    ///
    /// # Safety
    /// `ptr` must be a live block of this allocator. On success it is no longer live (the returned
    /// pointer replaces it, possibly at the same address).
    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>>;

    /// `xSize`: the usable size of a live block, as SQLite counts it in `sqlite3_memory_used()`.
    ///
    /// # Safety
    /// `ptr` must be a live block of this allocator.
    unsafe fn size(&self, ptr: NonNull<u8>) -> usize;

    /// `xRoundup`: the size a request of `size` bytes will really get.
    fn roundup(&self, size: usize) -> usize;

    /// [`malloc`](Self::malloc) and the new block's [`size`](Self::size) in one call. The layers
    /// above count every block's size; a backend that knows it while allocating (a buddy heap, a
    /// size-class allocator) overrides this to save the second look-up.
    #[inline]
    fn malloc_and_size(&self, size: usize) -> Option<(NonNull<u8>, usize)> {
        let p = self.malloc(size)?;
        // SAFETY: `p` was just returned by `malloc`, so it is a live block of this allocator.
        Some((p, unsafe { self.size(p) }))
    }

    /// [`size`](Self::size) of a block, then [`free`](Self::free) it, in one call; returns the
    /// size. Overridden where freeing finds the size anyway (a block header, a buddy heap's
    /// control byte) or where a sized free is faster.
    ///
    /// # Safety
    /// As [`free`](Self::free).
    #[inline]
    unsafe fn size_and_free(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: `ptr` is live (caller's contract) until the `free` below.
        let n = unsafe { self.size(ptr) };
        // SAFETY: forwarded contract.
        unsafe { self.free(ptr) };
        n
    }

    /// A new block of `size` bytes that is to replace the live block `like` (a layer above does
    /// a realloc as a new block, a copy and a free). An allocator that files blocks by owner (the
    /// [`scopes`](crate::scopes) layer) files it with `like`'s; the default is
    /// [`malloc`](Self::malloc).
    ///
    /// # Safety
    /// `like` must be a live block of this allocator (it is not freed by this call).
    unsafe fn malloc_for(&self, like: NonNull<u8>, size: usize) -> Option<NonNull<u8>> {
        let _ = like;
        self.malloc(size)
    }

    /// `xInit`: called by `sqlite3_initialize()` before the first allocation.
    fn init(&self) -> Result<(), InitError> {
        Ok(())
    }

    /// `xShutdown`: called by `sqlite3_shutdown()`. Blocks still live stay valid.
    fn shutdown(&self) {}

    /// Write a description of every live block (the leak list) to `out`; backends that do not
    /// track blocks write nothing. Used by reports and by the `debug` backend's leak check.
    fn live_blocks(&self, out: &mut dyn FnMut(LiveBlock<'_>)) {
        let _ = out;
    }

    /// Whether `ptr` is a live block of this allocator: `Some(true)` or `Some(false)` when the
    /// allocator can tell (a fixed heap knows its address range, `debug` its live set), `None`
    /// when it cannot (libc and the other general-purpose allocators). Never dereferences `ptr`.
    ///
    /// Used after a re-install, while blocks of a retired allocator are still live, to send
    /// each `free`/`realloc`/`size` to the allocator that handed the block out.
    fn owns(&self, ptr: NonNull<u8>) -> Option<bool> {
        let _ = ptr;
        None
    }

    /// What the allocator holds beyond the live blocks, read without ever taking a lock the
    /// allocation path takes: a reader thread (a metrics endpoint scraped many times a second)
    /// calls it while other threads allocate, and must neither wait for them nor slow them down
    /// (taking a biased lock of `memsys3`/`memsys5` from another thread would revoke its bias for
    /// good, see `src/lock.rs`). Backends publish what it needs with relaxed atomics written
    /// under their lock, or derive it from `stats`, the counters of the stack they serve. Each
    /// figure goes to `out` once; backends that know nothing beyond the live blocks write
    /// nothing. The figures of one call may be read at slightly different moments.
    fn footprint(&self, stats: &Stats, out: &mut dyn FnMut(Held)) {
        let _ = (stats, out);
    }
}

/// One figure of what an allocator holds or costs beyond the bytes of SQLite's live blocks (a
/// report's "allocator" section): Prometheus metric `sqlite_memory_allocator_<key>`, JSON key
/// `<key>`. Written by [`MemMethods::footprint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Metric suffix and JSON key, ending in `_bytes` (for instance `free_bytes`).
    pub key: &'static str,
    /// One-line HELP text in base units, naming the source (e.g. "glibc mallinfo2(): ...") and
    /// saying when the figure covers the whole process rather than SQLite alone.
    pub help: &'static str,
    /// The figure.
    pub bytes: u64,
}

/// One live block, as reported by [`MemMethods::live_blocks`].
#[derive(Debug, Clone, Copy)]
pub struct LiveBlock<'a> {
    /// Address of the block as handed to SQLite.
    pub addr: usize,
    /// Bytes requested for it.
    pub requested: usize,
    /// Return addresses of the allocation's call stack, innermost first (may be empty).
    pub backtrace: &'a [usize],
}

/// Round `n` up to a multiple of 8, saturating instead of overflowing.
#[inline]
pub const fn round8(n: usize) -> usize {
    match n.checked_add(ALIGN - 1) {
        Some(v) => v & !(ALIGN - 1),
        None => usize::MAX & !(ALIGN - 1),
    }
}

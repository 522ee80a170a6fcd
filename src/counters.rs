//! Always-on counters that two threads can update at once without sharing a cache line.
//!
//! # Design
//!
//! Every thread that allocates claims one *slot* (a 1 KiB-aligned block of counters) from a
//! process-wide table of [`SLOTS`] slots the first time it allocates, and gives it back when it
//! exits. A thread owns its slot exclusively, so it updates it with plain loads and stores
//! (relaxed atomics, no locked instructions, no shared cache line written). A reader sums all
//! slots. Slot 0 is the shared overflow slot: threads that find no free slot (more than
//! `SLOTS - 1` allocating at once) or that allocate while their thread-local storage is being
//! torn down use it with atomic read-modify-write operations instead.
//!
//! (Words: a *slot* is one thread's block of counters here; the *shards* of `memsys5:shards=N`
//! are something else, sub-heaps of a fixed heap, see [`crate::backend::Memsys5`].)
//!
//! Slots are never cleared when a thread exits: the next owner keeps adding to them, so sums
//! stay exact. All counters are 64-bit; current bytes are signed per slot (a block freed on
//! another thread than the one that allocated it makes one slot negative) and their sum is
//! exact.
//!
//! A call stores as little as it can: a malloc adds to its size bucket of the histogram and to
//! the slot's bytes; a free adds to the free count and to the bytes. `malloc_calls` (the
//! histogram's total less the reallocs) and `current_count` (mallocs less failed mallocs less
//! frees) are derived when read.
//!
//! # Peak
//!
//! An exact peak needs the global current value after every call that can raise it (a free
//! never does: it only adds to its slot and checks the flush threshold below). Every malloc and
//! realloc reads one shared word, `STATE` (number of owned slots and an epoch that moves
//! whenever a thread claims or gives back a slot, or the shared slot or a peak reset changes
//! the picture); the word is written only on those rare events, so reading it shares nothing on
//! the hot path.
//!
//! - **One thread allocating** (one slot owned; SQLite with memstatus on is serialized anyway):
//!   every other slot is unowned, so their bytes do not move. The owner sums them once, when it
//!   sees a new epoch (a *resync*), and from then on computes the global value from its own
//!   bytes alone, keeping the slot's high-water mark `hw` with a plain store when it grows.
//!   `peak_bytes` is exact.
//! - **`T` threads allocating at once**: each slot flushes its pending delta into `flushed`
//!   (and `peak` = its maximum) when the delta reaches ±[`PEAK_FLUSH_BYTES`] (a solo owner does
//!   too, so that it has little pending when a second thread starts). The shared counter
//!   differs from the true current value by the deltas not yet flushed, less than
//!   `PEAK_FLUSH_BYTES` (64 KiB) per thread either way, so `peak_bytes` is within
//!   `T × PEAK_FLUSH_BYTES` of the true peak: below it when growth is still pending, above it
//!   when another thread's frees are (e.g. 2 threads: at most 128 KiB off).
//!
//! The owner's fast path is therefore one read of `STATE`, compared with the value it saw last,
//! and one comparison of its `bytes` with two bounds kept in its slot: above `limit_hi` (the
//! bytes at which the global value would pass `hw` while solo, or the +64 KiB flush point) or
//! below `limit_lo` (the −64 KiB flush point), the call takes a cold slow path that records the
//! new high-water mark or flushes, and computes the bounds again. A changed `STATE` also takes
//! the slow path (resync when alone; no high-water mark kept otherwise).
//!
//! A reader takes the maximum of `peak` and of every slot's `hw` recorded since the last peak
//! reset (each was the true global value at some moment). `peak_bytes` reported is never below
//! `current_bytes`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

/// Number of slots, slot 0 being the shared overflow slot.
pub const SLOTS: usize = 64;
/// A slot flushes its bytes delta into the shared peak counter when it reaches this many bytes
/// (either way) while more than one thread allocates.
pub const PEAK_FLUSH_BYTES: i64 = 64 * 1024;
/// Number of power-of-two buckets in the request-size histogram: bucket `i` counts requests of
/// `2^(i-1) < n <= 2^i` bytes (bucket 0: 0 and 1 byte); the last bucket takes everything above.
pub const HIST_BUCKETS: usize = 32;

/// Which slots are owned by a live thread (slot 0 is never owned).
static OWNED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];

/// The number of owned slots (low [`EPOCH_SHIFT`] bits) and an epoch (the bits above) that
/// moves on every event after which a solo owner must resync: a claim, a release, an update of
/// the shared slot, a peak reset. Written only on those events; read on every call.
static STATE: CacheAligned<AtomicU64> = CacheAligned(AtomicU64::new(0));
const EPOCH_SHIFT: u32 = 16;
const EPOCH: u64 = 1 << EPOCH_SHIFT;
const OWNERS_MASK: u64 = EPOCH - 1;

/// Start a new epoch (the owner count stays).
fn bump_epoch() -> u64 {
    STATE
        .0
        .fetch_add(EPOCH, Ordering::AcqRel)
        .wrapping_add(EPOCH)
        >> EPOCH_SHIFT
}

#[repr(align(128))]
struct CacheAligned<T>(T);

/// The calling thread's slot as stored: 0 before its first allocation (so that zero-initialized
/// thread-local memory means "unclaimed"), else the slot index plus one (1: the shared slot,
/// which a thread uses when it got no slot or its thread-local storage is being torn down).
mod slot {
    /// The stored value (see the module above).
    #[inline(always)]
    pub fn get() -> usize {
        imp::get()
    }

    /// Store `v`.
    #[inline(always)]
    pub fn set(v: usize) {
        imp::set(v)
    }

    /// The calling thread's scope word (see [`crate::scopes`]): 0 until it enters a scope.
    #[inline(always)]
    pub fn scope() -> u64 {
        imp::scope()
    }

    /// Store the calling thread's scope word.
    #[inline(always)]
    pub fn set_scope(v: u64) {
        imp::set_scope(v)
    }

    /// x86-64 Linux: an 8-byte variable in the static TLS block, reached with the initial-exec
    /// model (`%fs` plus an offset the dynamic linker fixes at load time), the way jemalloc and
    /// mimalloc reach their thread caches. A Rust `thread_local!` in a shared object
    /// (`libsqlalloc.so`, `libsqlalloc_preload.so`) uses the general-dynamic model instead: a call
    /// of `__tls_get_addr` on every access, about 11 instructions, on every malloc and free.
    /// The `scopes` layer's current scope (`sqlalloc_scope_current`, read on every malloc
    /// under that layer) is a second such variable, for the same reason. The cost of the
    /// initial-exec model: the library needs 16 bytes of the static TLS surplus glibc reserves
    /// for libraries loaded with `dlopen` (glibc has hundreds to spare).
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
    mod imp {
        use std::arch::{asm, global_asm};

        // One zero-initialized, 8-aligned, 8-byte thread-local variable. Global (the accessors
        // below are inlined into other crates' code) but hidden: each shared object that links
        // sqlalloc has its own, none exports it.
        global_asm!(
            ".pushsection .tbss.sqlalloc_counters_slot,\"awT\",@nobits",
            ".globl sqlalloc_counters_slot",
            ".hidden sqlalloc_counters_slot",
            ".type sqlalloc_counters_slot, @object",
            ".size sqlalloc_counters_slot, 8",
            ".p2align 3",
            "sqlalloc_counters_slot:",
            ".zero 8",
            ".popsection",
            ".pushsection .tbss.sqlalloc_scope_current,\"awT\",@nobits",
            ".globl sqlalloc_scope_current",
            ".hidden sqlalloc_scope_current",
            ".type sqlalloc_scope_current, @object",
            ".size sqlalloc_scope_current, 8",
            ".p2align 3",
            "sqlalloc_scope_current:",
            ".zero 8",
            ".popsection",
        );

        /// A reader and a writer of one of the variables above: the calling thread's own copy,
        /// found through its GOT entry (its offset from the thread pointer).
        macro_rules! tls_u64 {
            ($get:ident, $set:ident, $t:ty, $sym:literal) => {
                #[inline(always)]
                pub fn $get() -> $t {
                    let v: $t;
                    // SAFETY: the GOT entry holds the variable's offset from the thread pointer
                    // (set by the dynamic linker, or resolved by the static linker in an
                    // executable); `%fs:off` is then the calling thread's own copy, 8 bytes,
                    // 8-aligned, zero-initialized and only ever accessed by this thread through
                    // these functions. Reads no other memory.
                    unsafe {
                        asm!(
                            concat!("mov {off}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                            "mov {v}, qword ptr fs:[{off}]",
                            off = out(reg) _,
                            v = lateout(reg) v,
                            options(nostack, readonly, preserves_flags),
                        )
                    };
                    v
                }

                #[inline(always)]
                pub fn $set(v: $t) {
                    // SAFETY: as in the reader: the calling thread's own 8-byte variable,
                    // written by it only.
                    unsafe {
                        asm!(
                            concat!("mov {off}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                            "mov qword ptr fs:[{off}], {v}",
                            off = out(reg) _,
                            v = in(reg) v,
                            options(nostack, preserves_flags),
                        )
                    };
                }
            };
        }

        tls_u64!(get, set, usize, "sqlalloc_counters_slot");
        tls_u64!(scope, set_scope, u64, "sqlalloc_scope_current");
    }

    /// Elsewhere (and under Miri): a `thread_local!` without destructor.
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
    mod imp {
        use std::cell::Cell;

        thread_local! {
            static SLOT: Cell<usize> = const { Cell::new(0) };
            static SCOPE: Cell<u64> = const { Cell::new(0) };
        }

        #[inline(always)]
        pub fn scope() -> u64 {
            SCOPE.try_with(|s| s.get()).unwrap_or(0)
        }

        #[inline(always)]
        pub fn set_scope(v: u64) {
            let _ = SCOPE.try_with(|s| s.set(v));
        }

        #[inline(always)]
        pub fn get() -> usize {
            SLOT.try_with(|s| s.get()).unwrap_or(1)
        }

        #[inline(always)]
        pub fn set(v: usize) {
            let _ = SLOT.try_with(|s| s.set(v));
        }
    }
}

thread_local! {
    /// Registered by [`claim`] once a slot is taken; gives the slot back when the thread exits.
    static GUARD: SlotGuard = const { SlotGuard };
}

/// The counters of the installed allocator, flushed by each thread as it exits.
static PRIMARY: AtomicPtr<Counters> = AtomicPtr::new(std::ptr::null_mut());

/// Gives the thread's slot back when the thread exits.
struct SlotGuard;

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let stored = slot::get();
        // From now on this thread uses the shared slot.
        slot::set(1);
        if stored < 2 {
            return;
        }
        let i = stored - 1;
        let p = PRIMARY.load(Ordering::Acquire);
        // SAFETY: PRIMARY only ever holds null or a `&'static Counters` (see `make_primary`), so
        // a non-null value is valid for reads for the rest of the process.
        if let Some(c) = unsafe { p.as_ref() } {
            // This thread still owns slot `i`, so the exclusive update is sound.
            c.retire_slot(&c.slots[i]);
        }
        // One owner fewer, and a new epoch: a thread left alone must resync.
        STATE.0.fetch_add(EPOCH.wrapping_sub(1), Ordering::AcqRel);
        // Release: the next owner's Acquire claim sees every store this thread made.
        OWNED[i].store(false, Ordering::Release);
    }
}

/// The calling thread's slot index: `Some(i)` with `i > 0` for an exclusively owned slot, `None`
/// for the shared overflow slot.
#[inline(always)]
fn my_slot() -> Option<usize> {
    let stored = slot::get();
    if stored >= 2 {
        Some(stored - 1)
    } else if stored == 0 {
        claim()
    } else {
        None
    }
}

/// A small number for the calling thread, to spread threads over per-thread structures (e.g.
/// the shards of a sharded `memsys5`): its counters slot once it has one (consecutive threads get
/// consecutive slots), 0 before its first allocation.
#[inline]
pub fn thread_index() -> usize {
    slot::get().saturating_sub(1)
}

/// The calling thread's stored slot word, read once by a call that passes it to both the
/// `scopes` layer and the counters ([`Counters::on_malloc_at`]): 0 before the thread's first
/// call, 1 for the shared slot, else its slot plus one.
#[inline(always)]
pub(crate) fn slot_word() -> usize {
    slot::get()
}

/// The calling thread's current-scope word of the [`scopes`](crate::scopes) layer (0 until it
/// enters a scope), kept next to the thread's slot number: an initial-exec thread-local on
/// x86-64 Linux, no `__tls_get_addr` call (see `slot::imp`).
#[inline(always)]
pub(crate) fn scope_word() -> u64 {
    slot::scope()
}

/// Set the calling thread's current-scope word (see [`scope_word`]).
#[inline(always)]
pub(crate) fn set_scope_word(v: u64) {
    slot::set_scope(v)
}

/// Where the next thread starts looking for a free slot: threads that start one after another
/// get consecutive slots.
static NEXT_SLOT: AtomicU64 = AtomicU64::new(0);

#[cold]
#[inline(never)]
fn claim() -> Option<usize> {
    // Register the guard first: if that is no longer possible (the thread is exiting), use the
    // shared slot for good.
    if GUARD.try_with(|_| ()).is_err() {
        slot::set(1);
        return None;
    }
    // Start the search where the previous thread's ended, so that threads do not all race for
    // slot 1 and consecutive threads get consecutive slots.
    let start = (NEXT_SLOT.fetch_add(1, Relaxed) % (SLOTS as u64 - 1)) as usize;
    for k in 0..SLOTS - 1 {
        let i = 1 + (start + k) % (SLOTS - 1);
        if OWNED[i]
            .compare_exchange(false, true, Ordering::Acquire, Relaxed)
            .is_ok()
        {
            // One owner more, and a new epoch.
            STATE.0.fetch_add(EPOCH + 1, Ordering::AcqRel);
            slot::set(i + 1);
            return Some(i);
        }
    }
    slot::set(1);
    None
}

/// One thread's counters. The first group is written on the hot path; the second only by the
/// owner on a flush or a resync; `hw`/`hw_epoch` are read by readers.
///
/// Each slot takes 1 KiB although it uses under 400 bytes: the hardware prefetchers fetch lines
/// next to the ones a thread touches, so slots that share no cache line but sit close together
/// still pull a neighbour's hot lines into the other core, and they bounce between the cores as
/// if shared (bench/notes.md, "Log", has the figures that chose 1 KiB). 64 slots of 1 KiB: 64
/// KiB per installed allocator.
#[repr(align(1024))]
struct Slot {
    // One cache line (64 bytes): every field a free touches, and all a malloc touches but its
    // histogram bucket.
    /// Live bytes allocated less freed through this slot.
    bytes: AtomicI64,
    frees: AtomicU64,
    largest: AtomicU64,
    /// `STATE` as this slot's owner last saw it (0: never; `STATE` is never 0 while a slot is
    /// owned, since it counts the owners): while `STATE` still has this value, `hw_rel` and the
    /// bounds below are up to date.
    seen_state: AtomicU64,
    /// A malloc or realloc that takes `bytes` above this takes the slow path
    /// (`min(hw_rel, at_flush + PEAK_FLUSH_BYTES - 1)`): a new high-water mark or a flush is due.
    limit_hi: AtomicI64,
    /// A call that takes `bytes` below this takes the slow path: a flush is due
    /// (`at_flush - PEAK_FLUSH_BYTES`).
    limit_lo: AtomicI64,
    /// `bytes` when this slot last flushed: `bytes - at_flush` is not yet in `flushed`.
    at_flush: AtomicI64,
    /// While solo: the global current value is `offset + bytes`.
    offset: AtomicI64,
    // Second line: written on the slow path only.
    /// While solo: the value of `bytes` at which the global value equals `hw` (`hw - offset`);
    /// `i64::MAX` while other threads allocate (no high-water mark is kept then).
    hw_rel: AtomicI64,
    /// The highest global current value this slot saw while solo (exact values only).
    hw: AtomicI64,
    reallocs: AtomicU64,
    // Then the histogram, then what is rarely written.
    hist: [AtomicU64; HIST_BUCKETS],
    failed_mallocs: AtomicU64,
    failed_reallocs: AtomicU64,
    /// The epoch `hw` was started in (compared with the last peak reset's).
    hw_epoch: AtomicU64,
}

impl Slot {
    /// A slot never used: every field 0, so that counters can come from zeroed memory, whose
    /// pages stay untouched until a thread uses a slot on them (see
    /// [`Counters::new_leaked`]). What 0 means where it is not a count:
    /// - `seen_state` 0 never equals `STATE` as an owner reads it (the owner count is at least
    ///   1), so an owner's first malloc takes the slow path, which sets `hw_rel`, `hw` and the
    ///   bounds before it reads them;
    /// - `limit_lo` 0 sends a free before that to the slow path, which is always correct;
    /// - `hw` 0 with `hw_epoch` 0 adds 0 to the peak a reader computes, which never lowers it
    ///   (the peak starts at 0 and only grows).
    const fn new() -> Slot {
        Slot {
            bytes: AtomicI64::new(0),
            frees: AtomicU64::new(0),
            hist: [const { AtomicU64::new(0) }; HIST_BUCKETS],
            largest: AtomicU64::new(0),
            reallocs: AtomicU64::new(0),
            failed_mallocs: AtomicU64::new(0),
            failed_reallocs: AtomicU64::new(0),
            at_flush: AtomicI64::new(0),
            seen_state: AtomicU64::new(0),
            limit_hi: AtomicI64::new(0),
            limit_lo: AtomicI64::new(0),
            hw_rel: AtomicI64::new(0),
            offset: AtomicI64::new(0),
            hw: AtomicI64::new(0),
            hw_epoch: AtomicU64::new(0),
        }
    }
}

/// A `T` in a fresh anonymous mapping of its own, never unmapped: zero-filled pages that cost
/// nothing until written (`heap::map_zeroed_forever`). `None` where there is no such mapping
/// (the caller falls back to the heap).
///
/// # Safety
/// All-zero bytes must be a valid `T`.
unsafe fn leaked_zeroed_mapping<T>() -> Option<&'static T> {
    const PAGE: usize = 4096;
    let len = std::mem::size_of::<T>();
    if len == 0 || std::mem::align_of::<T>() > PAGE {
        return None;
    }
    let p = crate::heap::map_zeroed_forever(len)?;
    // SAFETY: the mapping is `len` bytes, readable and writable, page-aligned (so aligned for
    // `T`, whose alignment is at most a page), zero-filled (a valid `T` by the caller's contract),
    // never unmapped (so valid for `'static`), and referenced from here only.
    Some(unsafe { p.cast::<T>().as_ref() })
}

/// Adds to a counter of a slot: a plain load and store when the slot is owned by the calling
/// thread, a locked add on the shared slot.
#[inline(always)]
fn add_i(c: &AtomicI64, v: i64, owned: bool) -> i64 {
    if owned {
        let n = c.load(Relaxed).wrapping_add(v);
        c.store(n, Relaxed);
        n
    } else {
        c.fetch_add(v, Relaxed).wrapping_add(v)
    }
}

#[inline(always)]
fn add_u(c: &AtomicU64, v: u64, owned: bool) {
    if owned {
        c.store(c.load(Relaxed).wrapping_add(v), Relaxed);
    } else {
        c.fetch_add(v, Relaxed);
    }
}

#[inline(always)]
fn max_u(c: &AtomicU64, v: u64, owned: bool) {
    if c.load(Relaxed) < v {
        if owned {
            c.store(v, Relaxed);
        } else {
            c.fetch_max(v, Relaxed);
        }
    }
}

/// Histogram bucket of a request of `n` bytes.
#[inline]
pub fn bucket(n: usize) -> usize {
    // ceil(log2(n)) for n >= 2, without a branch: `n - 1` saturates to 0 for n <= 1, whose
    // leading_zeros() is usize::BITS, hence bucket 0.
    let m = n.saturating_sub(1);
    ((usize::BITS - m.leading_zeros()) as usize).min(HIST_BUCKETS - 1)
}

/// The counters of an allocator, read at one moment. All sizes are bytes as SQLite counts them
/// (the sum of `xSize` over live blocks); all fields are 64-bit.
///
/// One type for both APIs: in C it is `sqlalloc_stats`, filled by `sqlalloc_get_stats()`; in Rust
/// `sqlalloc::Stats`, returned by `sqlalloc::stats()`, `Stack::stats()` and `StatsAlloc::stats()`
/// and rendered by `Stats::to_json()` and `Stats::to_prometheus()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in live blocks; equals `sqlite3_memory_used()` while SQLite's memstatus is on.
    pub current_bytes: i64,
    /// Highest `current_bytes` since install or the last peak reset (exact while one thread
    /// allocates; see the README for the bound with several threads).
    pub peak_bytes: i64,
    /// Number of live blocks.
    pub current_count: i64,
    /// Calls of `xMalloc` (successful or not).
    pub malloc_calls: i64,
    /// Calls of `xFree`.
    pub free_calls: i64,
    /// Calls of `xRealloc` (successful or not).
    pub realloc_calls: i64,
    /// Calls of `xMalloc` or `xRealloc` that returned NULL.
    pub failed_calls: i64,
    /// Largest size passed to `xMalloc` or `xRealloc`.
    pub largest_request: i64,
}

/// The counters of one installed allocator.
pub struct Counters {
    slots: [Slot; SLOTS],
    flushed: CacheAligned<AtomicI64>,
    peak: CacheAligned<AtomicI64>,
    /// The epoch of the last [`reset_peak`](Self::reset_peak): a slot's `hw` from an older
    /// epoch no longer counts.
    reset_epoch: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

impl Counters {
    /// Fresh counters, all zero. A `const fn` (no allocation), so that counters can live in a
    /// `static`, as those of [`StatsAlloc`](crate::StatsAlloc), a global allocator, must.
    pub const fn new() -> Self {
        Counters {
            slots: [const { Slot::new() }; SLOTS],
            flushed: CacheAligned(AtomicI64::new(0)),
            peak: CacheAligned(AtomicI64::new(0)),
            reset_epoch: AtomicU64::new(0),
        }
    }

    /// New counters that live for the rest of the process: those of an installed allocator must
    /// outlive it (threads flush into them when they exit, reports may still read them), so they
    /// are leaked on purpose, 64 KiB per install. Out of line, so that the leak checkers'
    /// suppressions (c-tests/valgrind.supp, c-tests/lsan.supp) can name this function whatever
    /// its callers inline.
    ///
    /// From zeroed memory, which is what [`Counters::new`] is: on Linux a fresh anonymous
    /// mapping, whose pages stay untouched (not resident) until a thread uses a slot on them, so
    /// the 64 KiB cost a page or two. (`Box::new(Counters::new())` built the 64 KiB on the stack
    /// and copied them: 128 KiB resident in every process that installed an allocator. A zeroed
    /// heap allocation is no better here: the global allocator zeroes an allocation aligned
    /// above 16 bytes itself, touching every page.)
    #[inline(never)]
    pub fn new_leaked() -> &'static Counters {
        // SAFETY: all-zero bytes are a valid `Counters`, as below.
        if let Some(c) = unsafe { leaked_zeroed_mapping::<Counters>() } {
            return c;
        }
        let layout = std::alloc::Layout::new::<Counters>();
        // SAFETY: the layout has a non-zero size (64 slots of 1 KiB).
        let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Counters>();
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `p` is a fresh allocation with the layout of `Counters`, all bytes zero, which
        // is a valid `Counters` (every field an atomic integer, or an array or an aligned wrapper
        // of them, and all-zero is what `Counters::new()` makes: `new_is_all_zero`); the box
        // owns it (and is leaked).
        Box::leak(unsafe { Box::from_raw(p) })
    }

    #[inline(always)]
    fn slot(&self) -> (&Slot, bool) {
        match my_slot() {
            Some(i) => (&self.slots[i], true),
            None => (&self.slots[0], false),
        }
    }

    /// After the bytes of slot `s` moved by `delta` to `bytes` in a malloc or a realloc: keep
    /// the peak. The owner's fast path is one shared read (`STATE`, unchanged since the last
    /// slow path) and one comparison (`limit_hi`, `limit_lo`); everything else is in
    /// [`slow_path`](Self::slow_path).
    #[inline(always)]
    fn note_bytes(&self, s: &Slot, owned: bool, bytes: i64, delta: i64) {
        if !owned {
            self.shared_moved(delta);
            return;
        }
        if STATE.0.load(Relaxed) != s.seen_state.load(Relaxed)
            || bytes > s.limit_hi.load(Relaxed)
            || bytes < s.limit_lo.load(Relaxed)
        {
            self.slow_path(s, bytes);
        }
    }

    /// The owner of `s`, whose bytes are now `bytes`: resync after a change of `STATE`, record a
    /// new high-water mark while solo, flush when the pending delta reached ±`PEAK_FLUSH_BYTES`,
    /// and set the bounds of the fast path again.
    #[cold]
    #[inline(never)]
    fn slow_path(&self, s: &Slot, bytes: i64) {
        let state = STATE.0.load(Relaxed);
        if state != s.seen_state.load(Relaxed) {
            if state & OWNERS_MASK <= 1 {
                // Alone: start a solo window (sets `hw_rel` to the current bytes).
                self.resync(s, state >> EPOCH_SHIFT);
            } else {
                // Others allocate too: no high-water mark, the flushes bound the peak.
                s.hw_rel.store(i64::MAX, Relaxed);
            }
            s.seen_state.store(state, Relaxed);
        }
        if bytes > s.hw_rel.load(Relaxed) {
            s.hw.store(s.offset.load(Relaxed).wrapping_add(bytes), Relaxed);
            s.hw_rel.store(bytes, Relaxed);
        }
        // Solo or not, the pending delta stays under the threshold: when a second thread starts
        // allocating, its flushes must already find this thread's bytes (nearly) all in
        // `flushed`.
        let pending = bytes.wrapping_sub(s.at_flush.load(Relaxed));
        if !(-PEAK_FLUSH_BYTES..PEAK_FLUSH_BYTES).contains(&pending) {
            self.flush(s);
        }
        Self::set_limits(s);
    }

    /// The bounds of the owner's fast path, from `at_flush` and `hw_rel`.
    fn set_limits(s: &Slot) {
        let at = s.at_flush.load(Relaxed);
        s.limit_lo
            .store(at.saturating_sub(PEAK_FLUSH_BYTES), Relaxed);
        let hi = at.saturating_add(PEAK_FLUSH_BYTES - 1);
        s.limit_hi.store(hi.min(s.hw_rel.load(Relaxed)), Relaxed);
    }

    /// The owner of `s` moves its pending delta into `flushed` (every ±64 KiB, at a resync, at
    /// exit: out of the hot path).
    #[cold]
    #[inline(never)]
    fn flush(&self, s: &Slot) {
        let bytes = s.bytes.load(Relaxed);
        let pending = bytes.wrapping_sub(s.at_flush.load(Relaxed));
        s.at_flush.store(bytes, Relaxed);
        let now = self
            .flushed
            .0
            .fetch_add(pending, Relaxed)
            .wrapping_add(pending);
        if now > self.peak.0.load(Relaxed) {
            self.peak.0.fetch_max(now, Relaxed);
        }
    }

    /// The owner of `s` (alone) starts a new solo window in `epoch`: the old high-water mark goes
    /// into `peak` (unless a reset made it stale), the pending delta into `flushed`, and `offset`
    /// becomes the other slots' bytes (unchanging while this thread is alone: they are unowned,
    /// and a change of the shared slot starts a new epoch).
    #[cold]
    #[inline(never)]
    fn resync(&self, s: &Slot, epoch: u64) {
        self.fold_hw(s);
        self.flush(s);
        let now = self.current_bytes();
        s.offset
            .store(now.wrapping_sub(s.bytes.load(Relaxed)), Relaxed);
        s.hw.store(now, Relaxed);
        s.hw_rel.store(s.bytes.load(Relaxed), Relaxed);
        // Release: a reader that sees the new epoch sees the new `hw` too.
        s.hw_epoch.store(epoch, Ordering::Release);
    }

    /// Move slot `s`'s high-water mark into `peak` unless a reset came after it.
    fn fold_hw(&self, s: &Slot) {
        if s.hw_epoch.load(Relaxed) >= self.reset_epoch.load(Ordering::Acquire) {
            self.peak.0.fetch_max(s.hw.load(Relaxed), Relaxed);
        }
    }

    /// The owner of `s` is exiting: everything it has goes to the shared values.
    fn retire_slot(&self, s: &Slot) {
        self.fold_hw(s);
        self.flush(s);
        // The next owner of this slot starts with a slow path (resync or not).
        s.seen_state.store(0, Relaxed);
        s.hw_rel.store(i64::MAX, Relaxed);
        Self::set_limits(s);
    }

    /// The shared slot moved by `delta`: it flushes at once, and a solo owner must resync.
    #[cold]
    #[inline(never)]
    fn shared_moved(&self, delta: i64) {
        let now = self.flushed.0.fetch_add(delta, Relaxed).wrapping_add(delta);
        self.peak.0.fetch_max(now, Relaxed);
        bump_epoch();
    }

    /// The calling thread's own slot, when it has one (the fast path of every call), from its
    /// slot word `stored` (a load of its thread-local slot, [`slot_word`], by the caller) and one
    /// comparison.
    #[inline(always)]
    fn own_slot_at(&self, stored: usize) -> Option<&Slot> {
        // A stored slot is at most SLOTS (see `claim`), so the mask changes nothing; it only
        // lets the compiler drop the bounds check.
        (stored >= 2).then(|| &self.slots[(stored - 1) & (SLOTS - 1)])
    }

    /// Record a call of `xMalloc` for `request` bytes that returned a block of `size` bytes
    /// (`None`: the call failed).
    #[inline(always)]
    pub fn on_malloc(&self, request: usize, size: Option<usize>) {
        self.on_malloc_at(slot::get(), request, size)
    }

    /// [`on_malloc`](Self::on_malloc) with the slot word the caller read before the call
    /// ([`slot_word`]; a thread's first call, word 0, claims its slot here as always).
    #[inline(always)]
    pub(crate) fn on_malloc_at(&self, stored: usize, request: usize, size: Option<usize>) {
        match self.own_slot_at(stored) {
            Some(s) => self.malloc_in(s, true, request, size),
            None => self.on_malloc_first_or_shared(request, size),
        }
    }

    /// [`on_malloc`](Self::on_malloc) before the thread's first call (which claims its slot)
    /// or on the shared slot.
    #[cold]
    #[inline(never)]
    fn on_malloc_first_or_shared(&self, request: usize, size: Option<usize>) {
        let (s, owned) = self.slot();
        self.malloc_in(s, owned, request, size)
    }

    #[inline(always)]
    fn malloc_in(&self, s: &Slot, owned: bool, request: usize, size: Option<usize>) {
        add_u(&s.hist[bucket(request)], 1, owned);
        max_u(&s.largest, request as u64, owned);
        match size {
            Some(sz) => {
                let b = add_i(&s.bytes, sz as i64, owned);
                self.note_bytes(s, owned, b, sz as i64);
            }
            None => add_u(&s.failed_mallocs, 1, owned),
        }
    }

    /// Record a call of `xFree` of a block of `size` bytes.
    #[inline(always)]
    pub fn on_free(&self, size: usize) {
        self.on_free_at(slot::get(), size)
    }

    /// [`on_free`](Self::on_free) with the slot word the caller read ([`slot_word`]).
    #[inline(always)]
    pub(crate) fn on_free_at(&self, stored: usize, size: usize) {
        match self.own_slot_at(stored) {
            Some(s) => self.free_in(s, true, size),
            None => self.on_free_first_or_shared(size),
        }
    }

    /// [`on_free`](Self::on_free) before the thread's first call or on the shared slot.
    #[cold]
    #[inline(never)]
    fn on_free_first_or_shared(&self, size: usize) {
        let (s, owned) = self.slot();
        self.free_in(s, owned, size)
    }

    #[inline(always)]
    fn free_in(&self, s: &Slot, owned: bool, size: usize) {
        add_u(&s.frees, 1, owned);
        let b = add_i(&s.bytes, -(size as i64), owned);
        if !owned {
            self.shared_moved(-(size as i64));
            return;
        }
        // A free never raises the high-water mark, so the solo bookkeeping (a resync after a
        // change of `STATE`, `hw`) waits for the next malloc; only the flush threshold is
        // checked here (the slow path does the rest too, which is always correct).
        if b < s.limit_lo.load(Relaxed) {
            self.slow_path(s, b);
        }
    }

    /// Record a call of `xRealloc` for `request` bytes of a block of `old` bytes that now has
    /// `new` bytes (`None`: the call failed and the old block is unchanged).
    #[inline]
    pub fn on_realloc(&self, request: usize, old: usize, new: Option<usize>) {
        let (s, owned) = self.slot();
        add_u(&s.reallocs, 1, owned);
        add_u(&s.hist[bucket(request)], 1, owned);
        max_u(&s.largest, request as u64, owned);
        match new {
            Some(new) => {
                let d = new as i64 - old as i64;
                let b = add_i(&s.bytes, d, owned);
                self.note_bytes(s, owned, b, d);
            }
            None => add_u(&s.failed_reallocs, 1, owned),
        }
    }

    /// Make these the counters that threads flush their pending peak delta into when they exit,
    /// so that the peak stays exact when one thread is left allocating. Called on install.
    pub fn make_primary(&'static self) {
        PRIMARY.store(self as *const Counters as *mut Counters, Ordering::Release);
    }

    /// Exact sum of the live bytes (see the module documentation for when it is exact).
    pub fn current_bytes(&self) -> i64 {
        self.slots.iter().map(|s| s.bytes.load(Relaxed)).sum()
    }

    /// All counters at once. Each counter is read once; with other threads allocating at the same
    /// time, the values are each exact for some moment during the call.
    pub fn stats(&self) -> Stats {
        let mut out = Stats::default();
        let mut calls = 0i64;
        let mut failed_mallocs = 0i64;
        let mut hw = i64::MIN;
        let reset = self.reset_epoch.load(Ordering::Acquire);
        for s in self.slots.iter() {
            out.current_bytes += s.bytes.load(Relaxed);
            calls += s.hist.iter().map(|c| c.load(Relaxed) as i64).sum::<i64>();
            out.free_calls += s.frees.load(Relaxed) as i64;
            out.realloc_calls += s.reallocs.load(Relaxed) as i64;
            let fm = s.failed_mallocs.load(Relaxed) as i64;
            failed_mallocs += fm;
            out.failed_calls += fm + s.failed_reallocs.load(Relaxed) as i64;
            out.largest_request = out.largest_request.max(s.largest.load(Relaxed) as i64);
            // Acquire: the `hw` read next is at least the one stored with this epoch.
            if s.hw_epoch.load(Ordering::Acquire) >= reset {
                hw = hw.max(s.hw.load(Relaxed));
            }
        }
        out.malloc_calls = calls - out.realloc_calls;
        out.current_count = out.malloc_calls - failed_mallocs - out.free_calls;
        out.peak_bytes = self.peak.0.load(Relaxed).max(hw).max(out.current_bytes);
        out
    }

    /// Request-size histogram: `HIST_BUCKETS` counts (see [`HIST_BUCKETS`]).
    pub fn histogram(&self) -> [u64; HIST_BUCKETS] {
        let mut h = [0u64; HIST_BUCKETS];
        for s in self.slots.iter() {
            for (o, c) in h.iter_mut().zip(s.hist.iter()) {
                *o += c.load(Relaxed);
            }
        }
        h
    }

    /// Start a new peak from the current value: every slot's high-water mark so far stops
    /// counting, and a solo owner starts a new one at its next call.
    pub fn reset_peak(&self) {
        let epoch = bump_epoch();
        self.reset_epoch.fetch_max(epoch, Ordering::AcqRel);
        self.peak.0.store(self.current_bytes(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `new_leaked` takes zeroed memory for `Counters::new()`: every field of it must be 0.
    #[test]
    fn new_is_all_zero() {
        let c = Counters::new();
        for s in c.slots.iter() {
            let ints = [
                s.bytes.load(Relaxed),
                s.at_flush.load(Relaxed),
                s.limit_hi.load(Relaxed),
                s.limit_lo.load(Relaxed),
                s.offset.load(Relaxed),
                s.hw_rel.load(Relaxed),
                s.hw.load(Relaxed),
            ];
            let uints = [
                s.frees.load(Relaxed),
                s.largest.load(Relaxed),
                s.seen_state.load(Relaxed),
                s.reallocs.load(Relaxed),
                s.failed_mallocs.load(Relaxed),
                s.failed_reallocs.load(Relaxed),
                s.hw_epoch.load(Relaxed),
            ];
            assert!(ints.iter().all(|&v| v == 0) && uints.iter().all(|&v| v == 0));
            assert!(s.hist.iter().all(|h| h.load(Relaxed) == 0));
        }
        assert_eq!(c.flushed.0.load(Relaxed), 0);
        assert_eq!(c.peak.0.load(Relaxed), 0);
        assert_eq!(c.reset_epoch.load(Relaxed), 0);
    }

    /// Counters from `new_leaked` count like those of `new`, on this thread's slot and across
    /// threads.
    #[test]
    fn leaked_counters_count_like_new_ones() {
        // Kept in a static: memory leaked on purpose is reachable, as an installed stack's is
        // (Miri reports a leak otherwise).
        static LEAKED: std::sync::OnceLock<&'static Counters> = std::sync::OnceLock::new();
        let a = Counters::new();
        let b = *LEAKED.get_or_init(Counters::new_leaked);
        for c in [&a, b] {
            c.on_malloc(100, Some(112));
            c.on_malloc(5000, Some(5008));
            c.on_free(112);
            std::thread::scope(|sc| {
                sc.spawn(|| {
                    c.on_malloc(70_000, Some(70_008));
                    c.on_free(70_008);
                });
            });
        }
        // The peak is exact only while one thread allocates (the test harness runs others), and
        // within the flush threshold otherwise: it is checked for bounds, the rest for equality.
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(
            Stats {
                peak_bytes: 0,
                ..sa
            },
            Stats {
                peak_bytes: 0,
                ..sb
            }
        );
        assert_eq!(
            (sb.current_bytes, sb.malloc_calls, sb.free_calls),
            (5008, 3, 2)
        );
        for st in [sa, sb] {
            assert!(
                (5008..=112 + 5008 + 70_008).contains(&st.peak_bytes),
                "{st:?}"
            );
        }
    }

    #[test]
    fn buckets() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(4), 2);
        assert_eq!(bucket(5), 3);
        assert_eq!(bucket(4096), 12);
        assert_eq!(bucket(4097), 13);
        assert_eq!(bucket(usize::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn sums_are_exact_across_threads_and_past_2gib() {
        let c = Counters::new();
        let big = 3usize << 30; // 3 GiB: must not wrap like a 32-bit counter would
        c.on_malloc(big, Some(big));
        // Miri runs this too (strict provenance), where 4 × 10 000 steps would take minutes.
        const N: i64 = if cfg!(miri) { 300 } else { 10_000 };
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..N {
                        c.on_malloc(100, Some(104));
                        c.on_free(104);
                    }
                    c.on_malloc(40, Some(40));
                });
            }
        });
        let s = c.stats();
        assert_eq!(s.current_bytes, big as i64 + 4 * 40);
        assert_eq!(s.current_count, 5);
        assert_eq!(s.malloc_calls, 1 + 4 * (N + 1));
        assert_eq!(s.free_calls, 4 * N);
        assert_eq!(s.largest_request, big as i64);
        assert!(s.peak_bytes >= s.current_bytes);
        assert!(s.peak_bytes <= big as i64 + 4 * (104 + 40));
        c.on_free(big);
        assert_eq!(c.current_bytes(), 160);
        c.reset_peak();
        assert_eq!(c.stats().peak_bytes, 160);
        assert_eq!(c.histogram().iter().sum::<u64>(), 1 + 4 * (N as u64 + 1));
    }

    #[test]
    fn failures_and_reallocs() {
        let c = Counters::new();
        c.on_malloc(10, None);
        c.on_malloc(10, Some(16));
        c.on_realloc(100, 16, Some(104));
        c.on_realloc(1 << 20, 104, None);
        let s = c.stats();
        assert_eq!((s.failed_calls, s.realloc_calls, s.malloc_calls), (2, 2, 2));
        assert_eq!((s.current_bytes, s.current_count), (104, 1));
        assert_eq!(s.largest_request, 1 << 20);
    }
}

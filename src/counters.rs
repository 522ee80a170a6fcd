//! Always-on counters that two threads can update at once without sharing a cache line.
//!
//! # Design
//!
//! Every thread that allocates claims one *shard* (a cache-line-aligned block of counters) from a
//! process-wide table of [`SHARDS`] slots the first time it allocates, and gives it back when it
//! exits. A thread owns its shard exclusively, so it updates it with plain loads and stores
//! (relaxed atomics, no locked instructions, no shared cache line). A reader sums all shards.
//! Slot 0 is the shared overflow shard: threads that find no free slot (more than
//! `SHARDS - 1` allocating at once) or that allocate while their thread-local storage is being
//! torn down use it with atomic read-modify-write operations instead.
//!
//! Shards are never cleared when a thread exits: the next owner keeps adding to them, so sums
//! stay exact. All counters are 64-bit; current bytes and block count are signed per shard (a
//! block freed on another thread than the one that allocated it makes one shard negative) and
//! their sum is exact.
//!
//! # Peak
//!
//! An exact peak needs the global current value after every call, i.e. a shared cache line. So:
//! each shard accumulates its bytes delta and *flushes* it into one shared counter
//! (`flushed`, with `peak` = its maximum) when the delta reaches ±[`PEAK_FLUSH_BYTES`], or on
//! every call while at most one thread owns a shard. Therefore:
//! - while one thread allocates (SQLite with memstatus on is serialized anyway), `peak_bytes` is
//!   exact;
//! - with `T` threads allocating at once, the shared counter differs from the true current value
//!   by the deltas not yet flushed, less than `PEAK_FLUSH_BYTES` (64 KiB) per thread either way,
//!   so `peak_bytes` is within `T × PEAK_FLUSH_BYTES` of the true peak: below it when growth is
//!   still pending, above it when another thread's frees are (e.g. 2 threads: at most 128 KiB
//!   off).
//!
//! `peak_bytes` reported is `max(peak, current)`, so it is never below `current_bytes`.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Number of shard slots, slot 0 being the shared overflow shard.
pub const SHARDS: usize = 64;
/// A shard flushes its bytes delta into the shared peak counter when it reaches this many bytes
/// (either way) while more than one thread allocates.
pub const PEAK_FLUSH_BYTES: i64 = 64 * 1024;
/// Number of power-of-two buckets in the request-size histogram: bucket `i` counts requests of
/// `2^(i-1) < n <= 2^i` bytes (bucket 0: 0 and 1 byte); the last bucket takes everything above.
pub const HIST_BUCKETS: usize = 32;

/// Which slots are owned by a live thread (slot 0 is never owned).
static OWNED: [AtomicBool; SHARDS] = [const { AtomicBool::new(false) }; SHARDS];
/// Number of slots owned right now.
static OWNERS: CacheAligned<AtomicUsize> = CacheAligned(AtomicUsize::new(0));

#[repr(align(128))]
struct CacheAligned<T>(T);

/// The calling thread's slot, released when the thread exits.
struct Slot(Cell<usize>);

const UNCLAIMED: usize = usize::MAX;

/// The counters of the installed allocator, flushed by each thread as it exits.
static PRIMARY: std::sync::atomic::AtomicPtr<Counters> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

impl Drop for Slot {
    fn drop(&mut self) {
        let i = self.0.get();
        if i != UNCLAIMED && i != 0 {
            let p = PRIMARY.load(std::sync::atomic::Ordering::Acquire);
            // SAFETY: PRIMARY only ever holds null or a `&'static Counters` (see `make_primary`),
            // so a non-null value is valid for reads for the rest of the process.
            if let Some(c) = unsafe { p.as_ref() } {
                // This thread still owns slot `i`, so the exclusive update is sound.
                c.flush(&c.shards[i], true);
            }
            OWNERS.0.fetch_sub(1, Relaxed);
            // Release: the next owner's Acquire claim sees every store this thread made.
            OWNED[i].store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

thread_local! {
    static SLOT: Slot = const { Slot(Cell::new(UNCLAIMED)) };
}

/// The calling thread's shard index: `Some(i)` with `i > 0` for an exclusively owned shard, `None`
/// for the shared overflow shard.
#[inline]
fn my_slot() -> Option<usize> {
    SLOT.try_with(|s| {
        let i = s.0.get();
        if i != UNCLAIMED {
            return i;
        }
        let i = claim();
        s.0.set(i);
        i
    })
    .ok()
    .filter(|&i| i != 0)
}

#[cold]
fn claim() -> usize {
    // Start the search at a spot derived from the thread-local's address so that threads do not
    // all race for slot 1.
    let start = SLOT.with(|s| s as *const Slot as usize / 64) % (SHARDS - 1);
    for k in 0..SHARDS - 1 {
        let i = 1 + (start + k) % (SHARDS - 1);
        if OWNED[i]
            .compare_exchange(false, true, std::sync::atomic::Ordering::Acquire, Relaxed)
            .is_ok()
        {
            OWNERS.0.fetch_add(1, Relaxed);
            return i;
        }
    }
    0
}

/// One thread's counters.
#[repr(align(128))]
struct Shard {
    bytes: AtomicI64,
    count: AtomicI64,
    mallocs: AtomicU64,
    frees: AtomicU64,
    reallocs: AtomicU64,
    failed: AtomicU64,
    largest: AtomicU64,
    unflushed: AtomicI64,
    hist: [AtomicU64; HIST_BUCKETS],
}

impl Shard {
    const fn new() -> Shard {
        Shard {
            bytes: AtomicI64::new(0),
            count: AtomicI64::new(0),
            mallocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            reallocs: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            largest: AtomicU64::new(0),
            unflushed: AtomicI64::new(0),
            hist: [const { AtomicU64::new(0) }; HIST_BUCKETS],
        }
    }
}

/// Adds to a counter of a shard: a plain load and store when the shard is owned by the calling
/// thread, a locked add on the shared shard.
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
    if n <= 1 {
        0
    } else {
        ((usize::BITS - (n - 1).leading_zeros()) as usize).min(HIST_BUCKETS - 1)
    }
}

/// A snapshot of the counters (see [`Counters::snapshot`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Sum of `xSize` over live blocks.
    pub current_bytes: i64,
    /// Highest `current_bytes` seen since the allocator was installed or the peak was reset.
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
    shards: [Shard; SHARDS],
    flushed: CacheAligned<AtomicI64>,
    peak: CacheAligned<AtomicI64>,
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
            shards: [const { Shard::new() }; SHARDS],
            flushed: CacheAligned(AtomicI64::new(0)),
            peak: CacheAligned(AtomicI64::new(0)),
        }
    }

    #[inline(always)]
    fn shard(&self) -> (&Shard, bool) {
        match my_slot() {
            Some(i) => (&self.shards[i], true),
            None => (&self.shards[0], false),
        }
    }

    #[inline(always)]
    fn note_bytes(&self, s: &Shard, owned: bool, delta: i64) {
        let pending = add_i(&s.unflushed, delta, owned);
        if OWNERS.0.load(Relaxed) <= 1 || !(-PEAK_FLUSH_BYTES..PEAK_FLUSH_BYTES).contains(&pending)
        {
            self.flush(s, owned);
        }
    }

    #[inline]
    fn flush(&self, s: &Shard, owned: bool) {
        let pending = if owned {
            let p = s.unflushed.load(Relaxed);
            s.unflushed.store(0, Relaxed);
            p
        } else {
            s.unflushed.swap(0, Relaxed)
        };
        if pending != 0 {
            let now = self
                .flushed
                .0
                .fetch_add(pending, Relaxed)
                .wrapping_add(pending);
            if now > self.peak.0.load(Relaxed) {
                self.peak.0.fetch_max(now, Relaxed);
            }
        }
    }

    /// Record a call of `xMalloc` for `request` bytes that returned a block of `size` bytes
    /// (`None`: the call failed).
    #[inline]
    pub fn on_malloc(&self, request: usize, size: Option<usize>) {
        let (s, owned) = self.shard();
        add_u(&s.mallocs, 1, owned);
        max_u(&s.largest, request as u64, owned);
        add_u(&s.hist[bucket(request)], 1, owned);
        match size {
            Some(sz) => {
                add_i(&s.bytes, sz as i64, owned);
                add_i(&s.count, 1, owned);
                self.note_bytes(s, owned, sz as i64);
            }
            None => add_u(&s.failed, 1, owned),
        }
    }

    /// Record a call of `xFree` of a block of `size` bytes.
    #[inline]
    pub fn on_free(&self, size: usize) {
        let (s, owned) = self.shard();
        add_u(&s.frees, 1, owned);
        add_i(&s.bytes, -(size as i64), owned);
        add_i(&s.count, -1, owned);
        self.note_bytes(s, owned, -(size as i64));
    }

    /// Record a call of `xRealloc` for `request` bytes of a block of `old` bytes that now has
    /// `new` bytes (`None`: the call failed and the old block is unchanged).
    #[inline]
    pub fn on_realloc(&self, request: usize, old: usize, new: Option<usize>) {
        let (s, owned) = self.shard();
        add_u(&s.reallocs, 1, owned);
        max_u(&s.largest, request as u64, owned);
        add_u(&s.hist[bucket(request)], 1, owned);
        match new {
            Some(new) => {
                let d = new as i64 - old as i64;
                add_i(&s.bytes, d, owned);
                self.note_bytes(s, owned, d);
            }
            None => add_u(&s.failed, 1, owned),
        }
    }

    /// Make these the counters that threads flush their pending peak delta into when they exit,
    /// so that the peak stays exact when one thread is left allocating. Called on install.
    pub fn make_primary(&'static self) {
        PRIMARY.store(
            self as *const Counters as *mut Counters,
            std::sync::atomic::Ordering::Release,
        );
    }

    /// Exact sum of the live bytes (see the module documentation for when it is exact).
    pub fn current_bytes(&self) -> i64 {
        self.shards.iter().map(|s| s.bytes.load(Relaxed)).sum()
    }

    /// All counters at once. Each counter is read once; with other threads allocating at the same
    /// time, the values are each exact for some moment during the call.
    pub fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::default();
        for s in self.shards.iter() {
            out.current_bytes += s.bytes.load(Relaxed);
            out.current_count += s.count.load(Relaxed);
            out.malloc_calls += s.mallocs.load(Relaxed) as i64;
            out.free_calls += s.frees.load(Relaxed) as i64;
            out.realloc_calls += s.reallocs.load(Relaxed) as i64;
            out.failed_calls += s.failed.load(Relaxed) as i64;
            out.largest_request = out.largest_request.max(s.largest.load(Relaxed) as i64);
        }
        out.peak_bytes = self.peak.0.load(Relaxed).max(out.current_bytes);
        out
    }

    /// Request-size histogram: `HIST_BUCKETS` counts (see [`HIST_BUCKETS`]).
    pub fn histogram(&self) -> [u64; HIST_BUCKETS] {
        let mut h = [0u64; HIST_BUCKETS];
        for s in self.shards.iter() {
            for (o, c) in h.iter_mut().zip(s.hist.iter()) {
                *o += c.load(Relaxed);
            }
        }
        h
    }

    /// Start a new peak from the current value.
    pub fn reset_peak(&self) {
        let (s, owned) = self.shard();
        self.flush(s, owned);
        self.peak.0.store(self.current_bytes(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = c.snapshot();
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
        assert_eq!(c.snapshot().peak_bytes, 160);
        assert_eq!(c.histogram().iter().sum::<u64>(), 1 + 4 * (N as u64 + 1));
    }

    #[test]
    fn failures_and_reallocs() {
        let c = Counters::new();
        c.on_malloc(10, None);
        c.on_malloc(10, Some(16));
        c.on_realloc(100, 16, Some(104));
        c.on_realloc(1 << 20, 104, None);
        let s = c.snapshot();
        assert_eq!((s.failed_calls, s.realloc_calls, s.malloc_calls), (2, 2, 2));
        assert_eq!((s.current_bytes, s.current_count), (104, 1));
        assert_eq!(s.largest_request, 1 << 20);
    }
}

//! The `scopes` layer (`+scopes`): memory charged to names the program chooses — a tenant, a
//! request type, a pool — each with its own counters and an optional cap.
//!
//! # What it does
//!
//! A *scope* is created by name ([`Scope::create`], `sqlalloc_scope_create`), with a cap in
//! bytes or none. Scope 0, `"default"`, always exists and has no cap. Each thread has a
//! *current scope* ([`Scope::enter`], `sqlalloc_scope_enter`; 0 until it enters another):
//!
//! - every block is charged to the scope current on the thread that allocates it, and credited
//!   back to that same scope whichever thread frees it;
//! - a realloc keeps its block in the block's scope (whatever the calling thread's scope);
//! - a malloc or a growing realloc that would take a capped scope past its cap gets NULL (SQLite
//!   returns `SQLITE_NOMEM` on that statement) and changes nothing else: other scopes go on, and
//!   the same connection works again once its scope is back under the cap. A failed realloc
//!   leaves the old block as it was.
//!
//! Bytes are counted as the stack counts them, `xSize` of live blocks, so the scopes' current
//! bytes add up to [`crate::stats`]`().current_bytes` exactly at any quiescent moment.
//!
//! # Where a block's scope is kept
//!
//! A free must find the scope of its block. Two ways, chosen by backend:
//!
//! - **Side table** (`memsys3`, `memsys5`, `tlsf`): one byte per place where a block can start,
//!   indexed from the heap base — per atom for `memsys5` (the smallest block, where its control
//!   byte lives), per 8-byte unit for `memsys3` and `tlsf`. The block itself is untouched, so
//!   `xSize` and `xRoundup` are the backend's own, and a power-of-two request to `memsys5` still
//!   gets a block of its own size (a header would double it). Cost: `heap / (atom + 1)` bytes
//!   for `memsys5` (as many as its control bytes), `heap / 8` for `memsys3` and `tlsf`,
//!   allocated zeroed at start-up next to the heap: pages the program never allocates in are
//!   never touched, so the resident cost is one byte per atom (per 8 bytes) of the heap actually
//!   used. Nothing is allocated afterwards: a fixed heap stays zero-malloc.
//! - **Header** (`system`, `debug`, `rust`, `jemalloc`, `mimalloc`): 8 bytes in front of the
//!   block, holding its scope (8 keeps the blocks 8-aligned). A request of `n` bytes asks the
//!   backend for `max(n, 1) + 8`; `xSize` is the backend's size − 8 and `xRoundup(n)` the
//!   backend's `roundup(max(n, 1) + 8) − 8`. These are exact whenever the backend's are:
//!   `jemalloc` (`nallocx`), `mimalloc` (`mi_good_size`), `debug` and `rust` (the request,
//!   resp. rounded to 8) give `xRoundup(n) = xSize` of the block `malloc(n)` returns, as
//!   without the layer; `system`'s `xRoundup` is mem1's rounding to 8 with or without the
//!   layer, while its `xSize` is `malloc_usable_size − 8`. Cost: 8 bytes per block (on glibc
//!   a request of 24 bytes moves from a 32-byte to a 48-byte chunk; most of SQLite's requests
//!   are larger, where it is 8 bytes in ~100 or more). With `debug`, the guard words enclose
//!   the header: an underrun of up to 8 bytes overwrites the header first (the block is then
//!   credited to a wrong scope) before the guard sees it.
//!
//! Everything above the layer (the counters, `limit`, SQLite's own `sqlite3_memory_used`) sees
//! the adjusted `xSize`, so `limit:max=N` still bounds exactly what SQLite counts, and the
//! header is counted by nobody but the backend.
//!
//! # Counting
//!
//! Each scope has the fields of [`Stats`] (no histogram). They are kept the way
//! [`crate::counters`] keeps the stack's: one cell per (thread slot, scope), the thread's slot
//! being the counters' slot ([`crate::counters::thread_index`]), updated with plain loads and
//! stores by the thread that owns the slot (threads without a slot use slot 0 with atomic
//! read-modify-write instructions). A thread's cells are one contiguous row, 32 KiB apart from
//! the next thread's, so two threads in the same scope share no cache line. A reader sums the
//! cells: current bytes and call counts are exact at any quiescent point.
//!
//! Peak: each cell also keeps its bytes at its last *flush* and the highest it went above that
//! since; when its pending delta reaches ±64 KiB it is flushed into the scope's shared total (a
//! locked add) and the shared peak is raised to the total before the flush plus that highest
//! pending value. A reader reports the largest of the shared peak, every cell's shared total plus
//! highest pending value, and the current bytes. While one thread allocates in a scope, the
//! shared total moves only with its flushes, so the peak is exact; with `T` threads allocating
//! in one scope at once it is within `T × 64 KiB` of the true peak (as the stack's counters).
//! A capped scope's peak is the high-water mark of the cap's own total as each call leaves it,
//! settled on its block's real size (a reservation given back, for a block refused, never
//! counts): exact while one thread allocates in the scope; with several, another thread's
//! reservation still in flight may be in it.
//!
//! Cap: a capped scope keeps, besides the cells, one shared exact total of its live bytes, and a
//! malloc reserves `xRoundup(n)` in it with a compare-and-swap loop before calling the backend,
//! then corrects to the block's real size (as [`crate::stack::Limit`] does): the cap is never
//! passed, not even momentarily by two threads at once. A growing realloc in a capped scope is a
//! malloc + copy + free (the block's real size after an in-place growth is known only once it is
//! too late to refuse), so old and new block count together against the cap for its duration.
//! Uncapped scopes (the default among them) take no locked instruction on their fast path.
//!
//! Failed calls are those the scope's cap or the backend refused; a refusal by `limit` or an
//! injected `fault`, which sit above the layer, is counted by the stack's counters only. Under
//! `limit`, a growing realloc is done by the stack as a new block + copy + free: the scope
//! counts it as one malloc and one free (bytes exact either way).
//!
//! # Per-call cost
//!
//! A malloc reads the thread's current scope (an initial-exec thread-local next to the counters'
//! slot number, [`crate::counters`]: two instructions, no `__tls_get_addr` call in a shared
//! object; the slot number itself is read once by the stack and given to both this layer and the
//! counters), the scope's cap (one word of an array nobody writes after creation), writes the
//! block's tag (header word or side table byte) and updates its tally (plain stores in the
//! thread's own row, one cache line; the peak's bookkeeping is one comparison with two bounds
//! kept in the tally, everything else on a cold path). A free reads the tag and updates the
//! freeing thread's tally the same way. Indexes are masked into fixed-size arrays, so no bounds
//! check is left on these paths. Over `system` and `memsys5` the layer is a variant of the
//! stack's backend, called statically and inlined into the methods table specialised for it
//! ([`crate::stack`]); over any other backend it is a `dyn` call (the backend itself is called
//! statically from it). Measured figures: bench/notes.md, "Log".
//!
//! # Threads, ids, re-installs
//!
//! Scopes belong to the installed layer: [`MAX_SCOPES`] of them, names unique, never removed;
//! creating one takes a mutex that no allocation path takes. A scope's cap is fixed at creation.
//! A thread's current scope is a thread-local word holding the scope id and the *generation* of
//! the layer it was entered in: after a re-install (a new layer, a new generation) every thread
//! is back in the default scope until it enters a scope of the new layer. Blocks allocated under
//! an older layer are still credited to their scope in it when freed (see "Retired allocators"
//! in [`crate::installed`]).

use crate::backend::{Memsys3, Memsys5, Tlsf};
use crate::counters::{scope_word, set_scope_word, slot_word, Stats, PEAK_FLUSH_BYTES, SLOTS};
use crate::error::Error;
use crate::installed;
use crate::methods::{Held, InitError, LiveBlock, MemMethods};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
use std::sync::{Arc, Mutex};

/// Most scopes a `scopes` layer holds, the default one included (a side-table entry is one
/// byte).
pub const MAX_SCOPES: usize = 256;

/// Name of scope 0, the default scope.
pub const DEFAULT_NAME: &str = "default";

/// Bytes of the header in front of a block on the general-purpose backends.
pub const HEADER: usize = 8;

// The calling thread's current scope is a word `generation << 32 | id`, 0 (the default scope of
// no layer) until the thread enters a scope: `counters::scope_word`, an initial-exec thread-local
// next to the counters' slot number (a `thread_local!` costs a `__tls_get_addr` call in a shared
// object, on every malloc).

/// Generation of the next layer built (0 is never used, so a fresh thread's word means "default").
static NEXT_GEN: AtomicU32 = AtomicU32::new(1);

/// Per scope: its shared words (128 bytes apart: a capped scope's total is written by every call
/// in it). Its cap is in [`Scopes::caps`].
#[repr(C, align(128))]
struct Head {
    /// Exact live bytes of a capped scope (unused without a cap).
    used: AtomicU64,
    /// Sum of the deltas the cells flushed (the cells' pending deltas are not in it).
    total: AtomicI64,
    /// Highest value seen (see the module documentation, "Peak").
    peak: AtomicI64,
}

impl Head {
    const fn new() -> Head {
        Head {
            used: AtomicU64::new(0),
            total: AtomicI64::new(0),
            peak: AtomicI64::new(0),
        }
    }
}

/// One thread slot's counters for one scope: 128 bytes, the first cache line holding all that a
/// malloc or a free touches (the index is a shift, and a tally shares no line with another).
#[repr(C, align(64))]
struct Tally {
    // First line: the fast path.
    /// Bytes charged less bytes credited through this slot (signed: a block may be freed by
    /// another thread than the one that allocated it).
    bytes: AtomicI64,
    /// The owner's fast path: while `lo <= bytes <= hi`, neither `hw` nor a flush is due
    /// (`hi = mark + min(hw, PEAK_FLUSH_BYTES - 1)`, `lo = mark - PEAK_FLUSH_BYTES`; both 0 in a
    /// zeroed tally, which only sends its first call to the slow path).
    hi: AtomicI64,
    lo: AtomicI64,
    mallocs: AtomicU64,
    frees: AtomicU64,
    largest: AtomicU64,
    reallocs: AtomicU64,
    // Second line: the slow path, failures.
    /// `bytes` at the last flush.
    mark: AtomicI64,
    /// Highest `bytes - mark` since the last flush (0 right after it).
    hw: AtomicI64,
    failed_mallocs: AtomicU64,
    failed_reallocs: AtomicU64,
}

/// One thread slot's tallies, one per scope (a contiguous row, 128-aligned).
#[repr(C, align(128))]
struct Row([Tally; MAX_SCOPES]);

#[inline(always)]
fn add_u(a: &AtomicU64, v: u64, owned: bool) {
    if owned {
        a.store(a.load(Relaxed).wrapping_add(v), Relaxed);
    } else {
        a.fetch_add(v, Relaxed);
    }
}

#[inline(always)]
fn add_i(a: &AtomicI64, v: i64, owned: bool) -> i64 {
    if owned {
        let n = a.load(Relaxed).wrapping_add(v);
        a.store(n, Relaxed);
        n
    } else {
        a.fetch_add(v, Relaxed).wrapping_add(v)
    }
}

#[inline(always)]
fn max_u(a: &AtomicU64, v: u64, owned: bool) {
    if owned {
        if v > a.load(Relaxed) {
            a.store(v, Relaxed);
        }
    } else {
        a.fetch_max(v, Relaxed);
    }
}

/// [`SLOTS`] rows of zeroed tallies, from the allocator's zeroed memory (untouched pages of rows
/// and scopes never used cost no resident memory).
fn zeroed_rows() -> Box<[Row; SLOTS]> {
    let layout = std::alloc::Layout::new::<[Row; SLOTS]>();
    // SAFETY: the layout has a non-zero size (SLOTS rows of 32 KiB).
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Row>();
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `p` is a fresh allocation with the layout of `[Row; SLOTS]`, all bytes zero, which
    // is a valid `Row` (atomics of integers only, 0); the box takes ownership and frees it with
    // the same layout.
    unsafe { Box::from_raw(p.cast::<[Row; SLOTS]>()) }
}

/// The scopes of one `scopes` layer: their names, caps and counters. Shared by the layer (which
/// charges and credits) and the stack (which reads them, [`Stack::scopes`](crate::Stack::scopes)).
pub struct Scopes {
    gen: u32,
    /// Scopes created so far (ids `0..count`); only grows.
    count: AtomicUsize,
    /// Cap of each scope in bytes, 0 for none: written once, before the scope is published; read
    /// by every call (one array, so that the caps of 16 scopes share a cache line nobody writes).
    caps: [AtomicU64; MAX_SCOPES],
    /// Indexed by scope id masked with `MAX_SCOPES - 1` (a no-op for an id below
    /// `MAX_SCOPES`): a fixed-size array, so the masked index needs no bounds check.
    heads: Box<[Head; MAX_SCOPES]>,
    /// Indexed by the counters' slot masked with `SLOTS - 1` (likewise).
    rows: Box<[Row; SLOTS]>,
    /// Names by id. Taken by `create` and readers only, never on an allocation path.
    names: Mutex<Vec<String>>,
}

/// One scope as listed by [`Scopes::list`], for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeInfo {
    /// Its id (0: the default scope).
    pub id: i32,
    /// Its name.
    pub name: String,
    /// Its cap, `None` for none.
    pub max_bytes: Option<u64>,
    /// Its counters, read now.
    pub stats: Stats,
}

impl Default for Scopes {
    fn default() -> Self {
        Self::new()
    }
}

impl Scopes {
    /// A new table holding the default scope only.
    pub fn new() -> Scopes {
        let rows = zeroed_rows();
        Scopes {
            gen: NEXT_GEN.fetch_add(1, Relaxed).max(1),
            count: AtomicUsize::new(1),
            caps: [const { AtomicU64::new(0) }; MAX_SCOPES],
            // Built in place: `Box::new([..])` builds the array on the stack and copies it.
            heads: (0..MAX_SCOPES)
                .map(|_| Head::new())
                .collect::<Box<[Head]>>()
                .try_into()
                .unwrap_or_else(|_| unreachable!("MAX_SCOPES heads were made")),
            rows,
            names: Mutex::new(vec![DEFAULT_NAME.to_string()]),
        }
    }

    /// Number of scopes (the default one included).
    pub fn len(&self) -> usize {
        self.count.load(Acquire)
    }

    /// Never: the default scope is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Most scopes this layer holds ([`MAX_SCOPES`]).
    pub fn capacity(&self) -> usize {
        MAX_SCOPES
    }

    /// Create scope `name` with a cap of `max_bytes` (`None`: no cap) and return its id.
    /// [`Error::BadScope`] for an empty or duplicate name or a cap of 0, [`Error::ScopesFull`]
    /// when [`MAX_SCOPES`] exist already.
    pub fn create(&self, name: &str, max_bytes: Option<u64>) -> Result<usize, Error> {
        if name.is_empty() {
            return Err(Error::BadScope {
                reason: "the name is empty".to_string(),
            });
        }
        if max_bytes == Some(0) {
            return Err(Error::BadScope {
                reason: format!("scope '{name}': a cap of 0 bytes (use none for no cap)"),
            });
        }
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.iter().any(|n| n == name) {
            return Err(Error::BadScope {
                reason: format!("a scope named '{name}' exists already"),
            });
        }
        let id = names.len();
        if id >= MAX_SCOPES {
            return Err(Error::ScopesFull { max: MAX_SCOPES });
        }
        self.caps[id].store(max_bytes.unwrap_or(0), Relaxed);
        names.push(name.to_string());
        // Release: a thread that sees the new count (entering the scope) sees its cap.
        self.count.store(id + 1, Release);
        Ok(id)
    }

    /// The name of scope `id`, if it exists.
    pub fn name(&self, id: usize) -> Option<String> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.get(id).cloned()
    }

    /// The id of the scope named `name`, if any.
    pub fn find(&self, name: &str) -> Option<usize> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.iter().position(|n| n == name)
    }

    /// The cap of scope `id` (`None`: no cap, or no such scope).
    pub fn max_bytes(&self, id: usize) -> Option<u64> {
        (id < self.len())
            .then(|| self.caps[id].load(Relaxed))
            .filter(|&m| m != 0)
    }

    /// The counters of scope `id`, read now, if it exists. Each counter is read once; at a
    /// quiescent moment they are exact (the peak: see the module documentation).
    pub fn stats(&self, id: usize) -> Option<Stats> {
        if id >= self.len() {
            return None;
        }
        let h = &self.heads[id];
        let capped = self.caps[id].load(Relaxed) != 0;
        let total = h.total.load(Relaxed);
        let mut out = Stats::default();
        let (mut mallocs, mut failed_mallocs, mut hw) = (0i64, 0i64, i64::MIN);
        for row in self.rows.iter() {
            let t = &row.0[id];
            out.current_bytes = out.current_bytes.wrapping_add(t.bytes.load(Relaxed));
            mallocs += t.mallocs.load(Relaxed) as i64;
            failed_mallocs += t.failed_mallocs.load(Relaxed) as i64;
            out.free_calls += t.frees.load(Relaxed) as i64;
            out.realloc_calls += t.reallocs.load(Relaxed) as i64;
            out.failed_calls += t.failed_reallocs.load(Relaxed) as i64;
            out.largest_request = out.largest_request.max(t.largest.load(Relaxed) as i64);
            hw = hw.max(total.saturating_add(t.hw.load(Relaxed)));
        }
        out.malloc_calls = mallocs + failed_mallocs;
        out.failed_calls += failed_mallocs;
        out.current_count = mallocs - out.free_calls;
        let peak = h.peak.load(Relaxed);
        out.peak_bytes = if capped { peak } else { peak.max(hw) }.max(out.current_bytes);
        Some(out)
    }

    /// Every scope, in id order: `(id, name, cap, counters)`, for reports (metrics
    /// `sqlite_scope_current_bytes{scope="NAME"}`, `sqlite_scope_peak_bytes`,
    /// `sqlite_scope_limit_bytes`, `sqlite_scope_failed_calls_total`).
    pub fn list(&self) -> Vec<ScopeInfo> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        names
            .into_iter()
            .enumerate()
            .filter_map(|(id, name)| {
                Some(ScopeInfo {
                    id: i32::try_from(id).ok()?,
                    name,
                    max_bytes: self.max_bytes(id),
                    stats: self.stats(id)?,
                })
            })
            .collect()
    }

    /// Make `id` the calling thread's scope; returns the previous one (in this layer), or `None`
    /// (and no change) when there is no scope `id`.
    pub fn enter(&self, id: usize) -> Option<usize> {
        if id >= self.len() {
            return None;
        }
        let prev = scope_word();
        set_scope_word((u64::from(self.gen) << 32) | id as u64);
        Some(self.id_in(prev))
    }

    /// The scope a thread-local word names in this layer (0 for another layer's).
    #[inline(always)]
    fn id_in(&self, word: u64) -> usize {
        if (word >> 32) as u32 == self.gen {
            (word as usize) & (MAX_SCOPES - 1)
        } else {
            0
        }
    }

    /// The calling thread's current scope in this layer.
    #[inline(always)]
    pub fn current(&self) -> usize {
        self.id_in(scope_word())
    }

    /// The cap of scope `s` (0: none), on the allocation path.
    #[inline(always)]
    fn cap(&self, s: usize) -> u64 {
        self.caps[s & (MAX_SCOPES - 1)].load(Relaxed)
    }

    /// Take `n` more bytes in capped scope `s` if its cap allows: the scope's total after, or
    /// `None`. The peak is not raised here: a reservation may still be given back (see
    /// [`raise_peak`](Self::raise_peak)).
    fn reserve(&self, s: usize, n: u64) -> Option<u64> {
        let max = self.cap(s);
        self.heads[s & (MAX_SCOPES - 1)]
            .used
            .fetch_update(Relaxed, Relaxed, |u| u.checked_add(n).filter(|&v| v <= max))
            .ok()
            .map(|u| u + n)
    }

    /// Give `n` bytes back to capped scope `s`: the scope's total after.
    fn release(&self, s: usize, n: u64) -> u64 {
        self.heads[s & (MAX_SCOPES - 1)]
            .used
            .fetch_sub(n, Relaxed)
            .wrapping_sub(n)
    }

    /// Raise capped scope `s`'s peak to `total`, its total once a call has settled on its
    /// block's real size.
    fn raise_peak(&self, s: usize, total: u64) {
        let h = &self.heads[s & (MAX_SCOPES - 1)];
        let v = i64::try_from(total).unwrap_or(i64::MAX);
        if v > h.peak.load(Relaxed) {
            h.peak.fetch_max(v, Relaxed);
        }
    }

    /// The calling thread's tally for scope `s`, and whether the thread owns its slot, from the
    /// thread's slot word (`stored`, [`slot_word`]: read once per call, shared with the
    /// counters).
    #[inline(always)]
    fn tally(&self, stored: usize, s: usize) -> (&Tally, bool) {
        if stored >= 2 {
            (
                &self.rows[(stored - 1) & (SLOTS - 1)].0[s & (MAX_SCOPES - 1)],
                true,
            )
        } else {
            (&self.rows[0].0[s & (MAX_SCOPES - 1)], false)
        }
    }

    /// After the bytes of tally `t` of scope `s` moved by `delta` to `bytes`: keep the highest
    /// pending value, flush at ±64 KiB.
    #[inline(always)]
    fn moved(&self, s: usize, t: &Tally, owned: bool, bytes: i64, delta: i64) {
        if !owned {
            self.shared_moved(s, delta);
        } else if bytes > t.hi.load(Relaxed) || bytes < t.lo.load(Relaxed) {
            self.moved_slow(s, t, bytes);
        }
    }

    /// The owner of tally `t` of scope `s`, now at `bytes`, left the bounds of its fast path:
    /// keep the highest pending value, flush at ±64 KiB, and set the bounds again.
    #[cold]
    #[inline(never)]
    fn moved_slow(&self, s: usize, t: &Tally, bytes: i64) {
        let pending = bytes.wrapping_sub(t.mark.load(Relaxed));
        if pending > t.hw.load(Relaxed) {
            t.hw.store(pending, Relaxed);
        }
        if !(-PEAK_FLUSH_BYTES..PEAK_FLUSH_BYTES).contains(&pending) {
            self.flush(s, t, bytes);
        }
        let mark = t.mark.load(Relaxed);
        let hw = t.hw.load(Relaxed).min(PEAK_FLUSH_BYTES - 1);
        t.hi.store(mark.saturating_add(hw), Relaxed);
        t.lo.store(mark.saturating_sub(PEAK_FLUSH_BYTES), Relaxed);
    }

    /// Slot 0 (shared by threads without a slot of their own): every change goes to the total
    /// at once.
    #[cold]
    #[inline(never)]
    fn shared_moved(&self, s: usize, delta: i64) {
        let h = &self.heads[s & (MAX_SCOPES - 1)];
        let now = h.total.fetch_add(delta, Relaxed).wrapping_add(delta);
        h.peak.fetch_max(now, Relaxed);
    }

    /// Flush the pending delta of the owned tally `t` (now at `bytes`) into the scope's total,
    /// and its highest pending value since the last flush into the peak.
    #[cold]
    #[inline(never)]
    fn flush(&self, s: usize, t: &Tally, bytes: i64) {
        let h = &self.heads[s & (MAX_SCOPES - 1)];
        let before = h
            .total
            .fetch_add(bytes.wrapping_sub(t.mark.load(Relaxed)), Relaxed);
        h.peak
            .fetch_max(before.saturating_add(t.hw.load(Relaxed)), Relaxed);
        t.mark.store(bytes, Relaxed);
        t.hw.store(0, Relaxed);
    }

    /// A malloc of `request` bytes in scope `s` that returned a block of `size` bytes (`None`:
    /// it failed), on the thread with slot word `stored`.
    #[inline(always)]
    fn on_malloc(&self, stored: usize, s: usize, request: usize, size: Option<usize>) {
        let (t, owned) = self.tally(stored, s);
        max_u(&t.largest, request as u64, owned);
        match size {
            Some(n) => {
                add_u(&t.mallocs, 1, owned);
                let b = add_i(&t.bytes, n as i64, owned);
                if !owned {
                    self.shared_moved(s, n as i64);
                } else if b > t.hi.load(Relaxed) {
                    // A malloc never lowers the bytes: only the upper bound is checked (the
                    // slow path does the rest too, which is always correct).
                    self.moved_slow(s, t, b);
                }
            }
            None => add_u(&t.failed_mallocs, 1, owned),
        }
    }

    /// A free of a block of `size` bytes of scope `s`, on the thread with slot word `stored`.
    #[inline(always)]
    fn on_free(&self, stored: usize, s: usize, size: usize) {
        let (t, owned) = self.tally(stored, s);
        add_u(&t.frees, 1, owned);
        let b = add_i(&t.bytes, -(size as i64), owned);
        if !owned {
            self.shared_moved(s, -(size as i64));
        } else if b < t.lo.load(Relaxed) {
            // A free never raises the peak: only the flush threshold is checked (the slow path
            // does the rest too, which is always correct).
            self.moved_slow(s, t, b);
        }
    }

    /// A realloc of a block of scope `s` from `old` bytes to `new` (`None`: it failed).
    fn on_realloc(&self, s: usize, request: usize, old: usize, new: Option<usize>) {
        let (t, owned) = self.tally(slot_word(), s);
        add_u(&t.reallocs, 1, owned);
        max_u(&t.largest, request as u64, owned);
        match new {
            Some(n) => {
                let d = n as i64 - old as i64;
                let b = add_i(&t.bytes, d, owned);
                self.moved(s, t, owned, b, d);
            }
            None => add_u(&t.failed_reallocs, 1, owned),
        }
    }
}

/// The installed allocator's scopes layer: `Err(NoScopes)` when none.
fn installed_scopes() -> Result<&'static Scopes, Error> {
    installed::current()
        .and_then(|s| s.scopes())
        .ok_or(Error::NoScopes)
}

/// A scope of the installed `scopes` layer: a number (0 the default scope) with a name, an
/// optional cap and counters. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scope(u32);

impl Scope {
    /// The default scope (id 0, `"default"`, no cap), where threads start.
    pub const DEFAULT: Scope = Scope(0);

    /// Create a scope named `name` in the installed allocator's `scopes` layer, with a cap of
    /// `max_bytes` bytes (`None`: no cap).
    ///
    /// Errors: [`Error::NoScopes`] (no `scopes` layer installed), [`Error::BadScope`] (an empty
    /// or duplicate name, a cap of `Some(0)`), [`Error::ScopesFull`] (all [`MAX_SCOPES`] taken).
    pub fn create(name: &str, max_bytes: Option<u64>) -> Result<Scope, Error> {
        let id = installed_scopes()?.create(name, max_bytes)?;
        Ok(Scope(id as u32))
    }

    /// The scope `id` of the installed layer, if it exists (0 always does).
    pub fn from_id(id: i32) -> Option<Scope> {
        let id = u32::try_from(id).ok()?;
        if id == 0 {
            return Some(Scope::DEFAULT);
        }
        let n = installed_scopes().ok()?.len();
        (usize::try_from(id).ok()? < n).then_some(Scope(id))
    }

    /// The scope named `name` in the installed layer, if any.
    pub fn find(name: &str) -> Option<Scope> {
        let id = installed_scopes().ok()?.find(name)?;
        Some(Scope(id as u32))
    }

    /// The id, as the C API numbers scopes (`sqlalloc_scope`).
    pub fn id(self) -> i32 {
        self.0 as i32
    }

    /// The calling thread's current scope.
    pub fn current() -> Scope {
        let id = installed_scopes().map_or(0, |l| l.current());
        Scope(id as u32)
    }

    /// Make this scope the calling thread's current one until the guard is dropped, which
    /// restores the previous one. When the installed layer has no such scope (it was created
    /// under an allocator since re-installed), nothing changes ([`ScopeGuard::entered`] says
    /// false).
    #[must_use = "the previous scope is restored when the guard is dropped"]
    pub fn enter(self) -> ScopeGuard {
        let prev = scope_word();
        let entered = enter_id(i64::from(self.0)).is_some();
        ScopeGuard {
            prev,
            entered,
            _not_send: PhantomData,
        }
    }

    /// The scope's counters, read now (all zero when the installed allocator has no such scope).
    pub fn stats(self) -> Stats {
        installed_scopes()
            .ok()
            .and_then(|l| l.stats(self.0 as usize))
            .unwrap_or_default()
    }

    /// The scope's name, if the installed layer has it.
    pub fn name(self) -> Option<String> {
        installed_scopes().ok()?.name(self.0 as usize)
    }

    /// The scope's cap (`None`: none, or no such scope).
    pub fn max_bytes(self) -> Option<u64> {
        installed_scopes().ok()?.max_bytes(self.0 as usize)
    }
}

/// Restores the thread's previous scope when dropped (see [`Scope::enter`]). Not `Send`: it
/// belongs to the thread whose scope it changed.
#[derive(Debug)]
pub struct ScopeGuard {
    prev: u64,
    entered: bool,
    _not_send: PhantomData<*const ()>,
}

impl ScopeGuard {
    /// Whether the scope was entered (false: the installed layer has no such scope, nothing
    /// changed).
    pub fn entered(&self) -> bool {
        self.entered
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let prev = self.prev;
        set_scope_word(prev);
    }
}

/// Make scope `id` of the installed layer the calling thread's current one and return the
/// previous; `None` (no change) for an unknown id. Scope 0 is known with or without a layer.
pub(crate) fn enter_id(id: i64) -> Option<usize> {
    let layer = installed_scopes().ok();
    match (usize::try_from(id).ok(), layer) {
        (Some(id), Some(l)) => l.enter(id),
        (Some(0), None) => {
            set_scope_word(0);
            Some(0)
        }
        _ => None,
    }
}

/// The 8-byte header in front of each block (general-purpose backends).
pub(crate) struct Header;

/// A fixed heap whose blocks start on a grid from its base.
pub(crate) trait FixedHeap: MemMethods + 'static {
    /// Offset of `p` from the heap base when inside the heap (compared, never read).
    fn offset(&self, p: NonNull<u8>) -> Option<usize>;
    /// log2 of the grid's spacing.
    fn grid_log(&self) -> u32;
    /// Number of places on the grid.
    fn places(&self) -> usize;
}

impl FixedHeap for Memsys5 {
    #[inline(always)]
    fn offset(&self, p: NonNull<u8>) -> Option<usize> {
        self.heap_offset(p)
    }
    fn grid_log(&self) -> u32 {
        self.atom().trailing_zeros()
    }
    fn places(&self) -> usize {
        self.atoms()
    }
}

/// The heaps whose blocks start on 8-byte boundaries (memsys3's units, tlsf's blocks): one place
/// per 8 bytes of the heap.
macro_rules! eight_byte_grid {
    ($($t:ty),*) => {$(
        impl FixedHeap for $t {
            #[inline(always)]
            fn offset(&self, p: NonNull<u8>) -> Option<usize> {
                self.heap_offset(p)
            }
            fn grid_log(&self) -> u32 {
                3
            }
            fn places(&self) -> usize {
                self.heap_len() / 8
            }
        }
    )*};
}
eight_byte_grid!(Memsys3, Tlsf);

/// A side table of one byte per grid place of a fixed heap `B`.
pub(crate) struct Table<B> {
    grid_log: u32,
    tags: Box<[AtomicU8]>,
    _heap: PhantomData<fn(&B)>,
}

impl<B: FixedHeap> Table<B> {
    fn new(b: &B) -> Table<B> {
        // Zeroed by the allocator (calloc): pages of the heap never used are never touched.
        let bytes = vec![0u8; b.places()].into_boxed_slice();
        // SAFETY: `AtomicU8` has the size, alignment and bit validity of `u8`, so the slice's
        // allocation and length carry over; the box is rebuilt from the pointer it gave up.
        let tags = unsafe { Box::from_raw(Box::into_raw(bytes) as *mut [AtomicU8]) };
        Table {
            grid_log: b.grid_log(),
            tags,
            _heap: PhantomData,
        }
    }

    #[inline(always)]
    fn slot(&self, b: &B, q: NonNull<u8>) -> Option<&AtomicU8> {
        self.tags.get(b.offset(q)? >> self.grid_log)
    }
}

/// The scopes layer over backend `B`, keeping each block's scope in `P`.
pub(crate) struct Scoped<B, P> {
    inner: B,
    place: P,
    scopes: Arc<Scopes>,
}

/// The place of the blocks of a fixed heap: its side table.
pub(crate) struct Tabled<B>(Table<B>);

impl<B: MemMethods + 'static> Scoped<B, Header> {
    /// The layer over a general-purpose backend: an 8-byte header per block.
    pub(crate) fn with_header(inner: B, scopes: Arc<Scopes>) -> Self {
        Scoped {
            inner,
            place: Header,
            scopes,
        }
    }
}

impl<B: FixedHeap> Scoped<B, Tabled<B>> {
    /// The layer over a fixed heap: a side table of one byte per grid place.
    pub(crate) fn with_table(inner: B, scopes: Arc<Scopes>) -> Self {
        let t = Table::new(&inner);
        Scoped {
            inner,
            place: Tabled(t),
            scopes,
        }
    }
}

/// Where [`Scoped`] keeps each block's scope (see "Where a block's scope is kept"): a header
/// or a side table indexed by the backend's heap offsets.
pub(crate) trait Tagging<B>: Send + Sync + 'static {
    /// Bytes the layer puts in front of each block.
    const EXTRA: usize;

    /// The backend block of a block handed out.
    ///
    /// # Safety
    /// `p` is a live block this layer handed out, or, for `owns`, any pointer (the result is then
    /// computed with wrapping arithmetic and only compared, never dereferenced).
    unsafe fn inner(p: NonNull<u8>) -> NonNull<u8>;

    /// The block handed out for backend block `q`.
    ///
    /// # Safety
    /// `q` is a live backend block of at least `EXTRA` bytes.
    unsafe fn outer(q: NonNull<u8>) -> NonNull<u8>;

    /// Record that backend block `q` of `b` belongs to scope `s`.
    ///
    /// # Safety
    /// `q` is a live backend block of `b`, of at least `EXTRA` bytes, owned by the caller.
    unsafe fn set(&self, b: &B, q: NonNull<u8>, s: usize);

    /// The scope of backend block `q` of `b`.
    ///
    /// # Safety
    /// `q` is a live backend block of `b` whose scope was [`set`](Self::set).
    unsafe fn get(&self, b: &B, q: NonNull<u8>) -> usize;
}

impl<B> Tagging<B> for Header {
    const EXTRA: usize = HEADER;

    #[inline(always)]
    unsafe fn inner(p: NonNull<u8>) -> NonNull<u8> {
        // Wrapping: for `owns`, `p` may be any pointer; for a live block it is `HEADER` bytes
        // into the backend block, so the result is that block's start.
        NonNull::new(p.as_ptr().wrapping_sub(HEADER)).unwrap_or(p)
    }

    #[inline(always)]
    unsafe fn outer(q: NonNull<u8>) -> NonNull<u8> {
        // SAFETY: `q` has at least `HEADER` bytes (caller's contract), so `q + HEADER` is inside
        // the block or one past its end.
        unsafe { q.add(HEADER) }
    }

    #[inline(always)]
    unsafe fn set(&self, _b: &B, q: NonNull<u8>, s: usize) {
        // SAFETY: `q` is a live, 8-aligned backend block of at least 8 bytes owned by the caller.
        unsafe { q.cast::<u64>().write(s as u64) }
    }

    #[inline(always)]
    unsafe fn get(&self, _b: &B, q: NonNull<u8>) -> usize {
        // SAFETY: `q` is a live, 8-aligned backend block whose first 8 bytes `set` wrote; the
        // user's part starts after them. (Masked: a corrupt header cannot index out of range.)
        (unsafe { q.cast::<u64>().read() } as usize) & (MAX_SCOPES - 1)
    }
}

impl<B: FixedHeap> Tagging<B> for Tabled<B> {
    const EXTRA: usize = 0;
    #[inline(always)]
    unsafe fn inner(p: NonNull<u8>) -> NonNull<u8> {
        p
    }
    #[inline(always)]
    unsafe fn outer(q: NonNull<u8>) -> NonNull<u8> {
        q
    }
    #[inline(always)]
    unsafe fn set(&self, b: &B, q: NonNull<u8>, s: usize) {
        if let Some(t) = self.0.slot(b, q) {
            t.store(s as u8, Relaxed);
        }
    }
    #[inline(always)]
    unsafe fn get(&self, b: &B, q: NonNull<u8>) -> usize {
        self.0
            .slot(b, q)
            .map_or(0, |t| usize::from(t.load(Relaxed)))
    }
}

impl<B: MemMethods, P: Tagging<B>> Scoped<B, P> {
    /// The backend's request for `n` bytes: `None` when it overflows.
    #[inline(always)]
    fn request(n: usize) -> Option<usize> {
        if P::EXTRA == 0 {
            Some(n)
        } else {
            n.max(1).checked_add(P::EXTRA)
        }
    }

    /// A new block of `n` bytes filed in scope `s`, and its size, uncounted.
    #[inline(always)]
    fn raw_malloc(&self, s: usize, n: usize) -> Option<(NonNull<u8>, usize)> {
        let (q, size) = self.inner.malloc_and_size(Self::request(n)?)?;
        // SAFETY: `q` was just handed out by the backend with at least `n + EXTRA` bytes; nobody
        // else has it yet.
        unsafe { self.place.set(&self.inner, q, s) };
        // SAFETY: as above.
        Some((unsafe { P::outer(q) }, size - P::EXTRA))
    }

    /// Malloc in scope `s`, counted, on the thread with slot word `stored`.
    #[inline(always)]
    fn malloc_in(&self, stored: usize, s: usize, n: usize) -> Option<(NonNull<u8>, usize)> {
        if self.scopes.cap(s) != 0 {
            return self.malloc_capped(stored, s, n);
        }
        let r = self.raw_malloc(s, n);
        self.scopes.on_malloc(stored, s, n, r.map(|(_, size)| size));
        r
    }

    /// Malloc in capped scope `s`: reserve, allocate, correct to the real size.
    #[inline(never)]
    fn malloc_capped(&self, stored: usize, s: usize, n: usize) -> Option<(NonNull<u8>, usize)> {
        let r = self.malloc_reserved(s, n);
        self.scopes.on_malloc(stored, s, n, r.map(|(_, size)| size));
        r
    }

    /// [`MemMethods::malloc_and_size`] with the calling thread's slot word read by the caller
    /// ([`slot_word`]), which passes the same word to the counters: one thread-local read for
    /// both layers.
    #[inline(always)]
    pub(crate) fn malloc_and_size_at(
        &self,
        stored: usize,
        n: usize,
    ) -> Option<(NonNull<u8>, usize)> {
        self.malloc_in(stored, self.scopes.current(), n)
    }

    /// [`MemMethods::size_and_free`] with the slot word read by the caller (see
    /// [`malloc_and_size_at`](Self::malloc_and_size_at)).
    ///
    /// # Safety
    /// As [`MemMethods::size_and_free`].
    #[inline(always)]
    pub(crate) unsafe fn size_and_free_at(&self, stored: usize, ptr: NonNull<u8>) -> usize {
        // SAFETY: `ptr` is a live block of this layer (caller's contract).
        let q = unsafe { P::inner(ptr) };
        // SAFETY: `q` is its live backend block, tagged when it was handed out.
        let s = unsafe { self.place.get(&self.inner, q) };
        // SAFETY: `q` is live; not used after this call (caller's contract).
        let size = unsafe { self.inner.size_and_free(q) }.saturating_sub(P::EXTRA);
        if self.scopes.cap(s) != 0 {
            self.scopes.release(s, size as u64);
        }
        self.scopes.on_free(stored, s, size);
        size
    }

    /// A block of `n` bytes in capped scope `s` with its size reserved against the cap, uncounted
    /// by the tallies.
    fn malloc_reserved(&self, s: usize, n: usize) -> Option<(NonNull<u8>, usize)> {
        let est = self.roundup(n) as u64;
        let reserved = self.scopes.reserve(s, est)?;
        let Some((p, size)) = self.raw_malloc(s, n) else {
            self.scopes.release(s, est);
            return None;
        };
        let real = size as u64;
        let total = if real > est {
            let Some(t) = self.scopes.reserve(s, real - est) else {
                self.scopes.release(s, est);
                // SAFETY: `p` was just handed out by `raw_malloc` and never left this function.
                unsafe { self.inner.free(P::inner(p)) };
                return None;
            };
            t
        } else if real < est {
            self.scopes.release(s, est - real)
        } else {
            reserved
        };
        // Only now: a block refused after its reservation never raises the peak.
        self.scopes.raise_peak(s, total);
        Some((p, size))
    }

    /// Realloc of block `p` (scope `s`, `old` bytes) in a capped scope.
    ///
    /// # Safety
    /// `p` is a live block of this layer; backend block `q` is its backend block.
    unsafe fn realloc_capped(
        &self,
        s: usize,
        p: NonNull<u8>,
        q: NonNull<u8>,
        old: usize,
        n: usize,
    ) -> Option<NonNull<u8>> {
        if self.roundup(n) <= old {
            // Fits: the backend keeps it in place or moves it to a block no larger; the
            // difference is accounted exactly either way.
            // SAFETY: `q` is live (caller's contract).
            let r = unsafe { self.inner.realloc(q, Self::request(n)?) }?;
            // SAFETY: `r` is the live block that replaced `q`, owned by this call.
            unsafe { self.place.set(&self.inner, r, s) };
            // SAFETY: `r` is live.
            let new = unsafe { self.inner.size(r) } - P::EXTRA;
            if new >= old {
                // Only the reservation's bookkeeping: a block that fitted cannot grow past the
                // cap by more than its rounding.
                let grown = (new - old) as u64;
                let total = self.scopes.heads[s].used.fetch_add(grown, Relaxed) + grown;
                self.scopes.raise_peak(s, total);
            } else {
                self.scopes.release(s, (old - new) as u64);
            }
            self.scopes.on_realloc(s, n, old, Some(new));
            // SAFETY: `r` is live with `new + EXTRA` bytes.
            return Some(unsafe { P::outer(r) });
        }
        let Some((p2, new)) = self.malloc_reserved(s, n) else {
            self.scopes.on_realloc(s, n, old, None);
            return None;
        };
        // SAFETY: `p` has `old` readable bytes, `p2` at least `n` writable ones; two live blocks
        // do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), p2.as_ptr(), old.min(n)) };
        self.scopes.release(s, old as u64);
        // SAFETY: `q` is live and replaced by `p2` (the realloc contract).
        unsafe { self.inner.free(q) };
        self.scopes.on_realloc(s, n, old, Some(new));
        Some(p2)
    }
}

// SAFETY: every block comes from the backend, which upholds the contract for the backend block;
// the block handed out is the backend block itself (side table) or starts `HEADER` bytes into it
// (header: 8 keeps the 8-alignment, and the block has `size - HEADER >= n` bytes after the
// header, since the backend was asked for `n + HEADER`); `size` is the backend's minus the header,
// stable while the block lives; `roundup` is the backend's for the backend request minus the
// header; a failed realloc returns before the old block is touched (the capped path frees it only
// after the copy into the new block succeeded); the tallies and tags are atomics, so all methods
// may run on several threads at once.
unsafe impl<B: MemMethods, P: Tagging<B>> MemMethods for Scoped<B, P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    #[inline]
    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        self.malloc_and_size_at(slot_word(), size).map(|(p, _)| p)
    }

    #[inline(always)]
    fn malloc_and_size(&self, size: usize) -> Option<(NonNull<u8>, usize)> {
        self.malloc_and_size_at(slot_word(), size)
    }

    unsafe fn malloc_for(&self, like: NonNull<u8>, size: usize) -> Option<NonNull<u8>> {
        // SAFETY: `like` is a live block of this layer (caller's contract).
        let s = unsafe { self.place.get(&self.inner, P::inner(like)) };
        self.malloc_in(slot_word(), s, size).map(|(p, _)| p)
    }

    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded contract.
        unsafe { self.size_and_free(ptr) };
    }

    #[inline(always)]
    unsafe fn size_and_free(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.size_and_free_at(slot_word(), ptr) }
    }

    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        // SAFETY: `ptr` is a live block of this layer (caller's contract).
        let q = unsafe { P::inner(ptr) };
        // SAFETY: `q` is its live backend block.
        let s = unsafe { self.place.get(&self.inner, q) };
        // SAFETY: as above.
        let old = unsafe { self.inner.size(q) } - P::EXTRA;
        if self.scopes.cap(s) != 0 {
            // SAFETY: forwarded contract; `q` is `ptr`'s backend block.
            return unsafe { self.realloc_capped(s, ptr, q, old, new_size) };
        }
        let Some(m) = Self::request(new_size) else {
            self.scopes.on_realloc(s, new_size, old, None);
            return None;
        };
        // SAFETY: `q` is live (caller's contract); on failure it is untouched.
        let r = unsafe { self.inner.realloc(q, m) };
        let Some(r) = r else {
            self.scopes.on_realloc(s, new_size, old, None);
            return None;
        };
        // SAFETY: `r` replaced `q` and is owned by this call (a header moved with the contents).
        unsafe { self.place.set(&self.inner, r, s) };
        // SAFETY: `r` is live.
        let new = unsafe { self.inner.size(r) } - P::EXTRA;
        self.scopes.on_realloc(s, new_size, old, Some(new));
        // SAFETY: `r` is live with at least `m = new_size + EXTRA` bytes.
        Some(unsafe { P::outer(r) })
    }

    #[inline(always)]
    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: `ptr` is a live block of this layer, its backend block `inner(ptr)`.
        unsafe { self.inner.size(P::inner(ptr)) }.saturating_sub(P::EXTRA)
    }

    #[inline]
    fn roundup(&self, size: usize) -> usize {
        match Self::request(size) {
            Some(m) if P::EXTRA != 0 => self.inner.roundup(m).saturating_sub(P::EXTRA).max(size),
            _ => self.inner.roundup(size),
        }
    }

    fn init(&self) -> Result<(), InitError> {
        self.inner.init()
    }

    fn shutdown(&self) {
        self.inner.shutdown()
    }

    fn live_blocks(&self, out: &mut dyn FnMut(LiveBlock<'_>)) {
        self.inner.live_blocks(&mut |b| {
            out(LiveBlock {
                addr: b.addr.wrapping_add(P::EXTRA),
                requested: b.requested.saturating_sub(P::EXTRA),
                backtrace: b.backtrace,
            })
        })
    }

    fn owns(&self, ptr: NonNull<u8>) -> Option<bool> {
        // SAFETY: `inner` of any pointer is computed with wrapping arithmetic and only compared.
        self.inner.owns(unsafe { P::inner(ptr) })
    }

    fn footprint(&self, stats: &Stats, out: &mut dyn FnMut(Held)) {
        self.inner.footprint(stats, out)
    }
}

#[cfg(test)]
mod tests;

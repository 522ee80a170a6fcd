//! A [`Stack`]: one backend with the always-on counters and the optional `limit`, `fault` and
//! `scopes` layers on top. This is what gets installed into SQLite; it is itself a [`MemMethods`], so the
//! C table and the Rust API both call it through the same trait.
//!
//! Order of the layers on every call, top to bottom: counters, limit, fault, scopes, backend. The
//! limit layer counts bytes the way the counters do (`xSize` of live blocks), so `limit:max=N`
//! bounds exactly what `sqlite3_memory_used()` reports. The [`fault`](crate::fault) layer sees only
//! the calls the limit let through, and a failure it injects is counted above as a failed call.
//! The [`scopes`](crate::scopes) layer wraps the backend (its `xSize` and `xRoundup` are the
//! ones every layer above sees), so it is held as the backend: over `system` and `memsys5` as a
//! variant of its own (called statically, as those two backends are), over any other as a `dyn`
//! backend.

use crate::backend::{self, Memsys5, System, Tlsf};
use crate::counters::{slot_word, Counters, Stats};
use crate::error::Error;
use crate::fault::{Fault, FaultSpec};
use crate::methods::{Held, InitError, LiveBlock, MemMethods};
use crate::scopes::{Header, Scoped, Scopes, Tabled, Tagging};
use crate::spec::{Backend, Spec, SpecError};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The `limit` layer: a hard cap on live bytes. An allocation or growth that would pass it fails
/// (NULL) and changes nothing else; a failed realloc leaves the old block intact.
///
/// It keeps its own exact total of live bytes in one shared atomic (it must know the global total
/// at every call), so unlike the counters it costs a shared cache line per call: that is the price
/// of an exact cap.
#[repr(align(128))]
pub struct Limit {
    max: u64,
    used: AtomicU64,
}

impl Limit {
    /// A cap of `max` bytes.
    pub fn new(max: u64) -> Limit {
        Limit {
            max,
            used: AtomicU64::new(0),
        }
    }

    /// The cap in bytes.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Bytes currently counted against the cap.
    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// Take `n` more bytes if the cap allows.
    fn reserve(&self, n: u64) -> bool {
        self.used
            .fetch_update(Relaxed, Relaxed, |u| {
                u.checked_add(n).filter(|&v| v <= self.max)
            })
            .is_ok()
    }

    fn release(&self, n: u64) {
        self.used.fetch_sub(n, Relaxed);
    }

    /// Replace a reservation of `had` bytes by one of `need` bytes; false (with `had` still
    /// reserved) when growing passes the cap.
    fn adjust(&self, had: u64, need: u64) -> bool {
        if need > had {
            self.reserve(need - had)
        } else {
            self.release(had - need);
            true
        }
    }
}

impl Stack {
    /// Realloc under the cap. A request that fits in the old block's size is passed to the
    /// backend (a shrink; the usage difference is accounted exactly). A growing request is done
    /// as a capped malloc, a copy and a free, because the backend's real size after an in-place
    /// growth is only known once the old block is gone, when it is too late to refuse.
    ///
    /// # Safety
    /// `ptr` is a live block of the backend whose size is `old`.
    unsafe fn realloc_limited(
        &self,
        l: &Limit,
        ptr: NonNull<u8>,
        old: usize,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        if self.backend().roundup(new_size) <= old {
            // SAFETY: forwarded contract.
            let p = unsafe { self.lower_realloc(ptr, new_size) }?;
            // SAFETY: `p` is live.
            let new = unsafe { self.backend().size(p) };
            // Shrinking: the backends keep a shrunk block in place, so `new <= old` and the cap
            // holds; the difference is accounted either way so that the total stays exact.
            if new >= old {
                l.used.fetch_add((new - old) as u64, Relaxed);
            } else {
                l.release((old - new) as u64);
            }
            return Some(p);
        }
        let est = self.backend().roundup(new_size) as u64;
        if !l.reserve(est) {
            return None;
        }
        // SAFETY: `ptr` is live (caller's contract).
        let Some(q) = (unsafe { self.lower_malloc_for(ptr, new_size) }) else {
            l.release(est);
            return None;
        };
        // SAFETY: `q` is live.
        let real = unsafe { self.backend().size(q) } as u64;
        if !l.adjust(est, real) {
            l.release(est);
            // SAFETY: `q` is live and was never handed out.
            unsafe { self.backend().free(q) };
            return None;
        }
        // SAFETY: `ptr` has `old` readable bytes, `q` at least `new_size` writable ones; they are
        // distinct live blocks, so they do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), q.as_ptr(), old.min(new_size)) };
        l.release(old as u64);
        // SAFETY: `ptr` is live and, per the realloc contract, no longer used by the caller.
        unsafe { self.backend().free(ptr) };
        Some(q)
    }
}

/// `$call` with `$b` bound to the backend of `$stack` (a [`Stack`]) when its [`Lower`] variant
/// is the one kind `$k` names (any variant for [`kind::ANY`]), else `$other`: for a constant
/// `$k` the other variants' arms compile to nothing, so the function holds one backend's path.
/// `$b` is the backend by type for `System`, `Memsys5`, `Tlsf` and the `scopes` layer over the
/// first two (static
/// calls, inlined) and a `&Box<dyn MemMethods>` for `Dyn` (method calls go through `dyn`).
macro_rules! on_kind {
    ($stack:expr, $k:ident, $b:ident => $call:expr, _ => $other:expr) => {
        match &$stack.lower {
            Lower::System($b) if $k == kind::SYSTEM || $k == kind::ANY => $call,
            Lower::Memsys5($b) if $k == kind::MEMSYS5 || $k == kind::ANY => $call,
            Lower::Tlsf($b) if $k == kind::TLSF || $k == kind::ANY => $call,
            Lower::ScopedSystem($b) if $k == kind::SCOPED_SYSTEM || $k == kind::ANY => $call,
            Lower::ScopedMemsys5($b) if $k == kind::SCOPED_MEMSYS5 || $k == kind::ANY => $call,
            Lower::Dyn($b) if $k == kind::DYN || $k == kind::ANY => $call,
            _ => $other,
        }
    };
}

/// The backend as the stack holds it: the backends whose speed is measured against SQLite's C
/// allocators are called statically on the hot paths (`malloc`, `free`), so that their code is
/// inlined into the stack's instead of reached through a `dyn` call, and so is the `scopes` layer
/// over them (with the backend inlined into it); any other through `dyn`.
pub(crate) enum Lower {
    System(System),
    Memsys5(Memsys5),
    Tlsf(Tlsf),
    /// `system+scopes`: the layer with a header per block.
    ScopedSystem(Scoped<System, Header>),
    /// `memsys5+scopes`: the layer with its side table.
    ScopedMemsys5(Scoped<Memsys5, Tabled<Memsys5>>),
    Dyn(Box<dyn MemMethods>),
}

/// The malloc and free of a [`Lower`] variant's backend on the stack's specialised path. The
/// `scopes` layer takes the calling thread's slot word ([`slot_word`]), which the stack reads
/// once per call and also gives to the counters: one thread-local read for both layers. The
/// plain backends ignore it, and for them the stack reads nothing before the call.
trait Hot {
    /// Whether [`malloc_and_size_at`](Self::malloc_and_size_at) uses the slot word.
    const TAKES_SLOT: bool;

    /// [`MemMethods::malloc_and_size`], on the thread whose slot word is `stored`.
    fn malloc_and_size_at(&self, stored: usize, n: usize) -> Option<(NonNull<u8>, usize)>;

    /// [`MemMethods::size_and_free`], on the thread whose slot word is `stored`.
    ///
    /// # Safety
    /// As [`MemMethods::size_and_free`].
    unsafe fn size_and_free_at(&self, stored: usize, ptr: NonNull<u8>) -> usize;
}

macro_rules! hot_ignoring_the_slot {
    ($($t:ty),*) => {$(
        impl Hot for $t {
            const TAKES_SLOT: bool = false;
            #[inline(always)]
            fn malloc_and_size_at(&self, _: usize, n: usize) -> Option<(NonNull<u8>, usize)> {
                self.malloc_and_size(n)
            }
            #[inline(always)]
            unsafe fn size_and_free_at(&self, _: usize, ptr: NonNull<u8>) -> usize {
                // SAFETY: forwarded contract.
                unsafe { self.size_and_free(ptr) }
            }
        }
    )*};
}
hot_ignoring_the_slot!(System, Memsys5, Tlsf, Box<dyn MemMethods>);

impl<B: MemMethods, P: Tagging<B>> Hot for Scoped<B, P> {
    const TAKES_SLOT: bool = true;
    #[inline(always)]
    fn malloc_and_size_at(&self, stored: usize, n: usize) -> Option<(NonNull<u8>, usize)> {
        Scoped::malloc_and_size_at(self, stored, n)
    }
    #[inline(always)]
    unsafe fn size_and_free_at(&self, stored: usize, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract.
        unsafe { Scoped::size_and_free_at(self, stored, ptr) }
    }
}

/// Which backend the functions of a methods table are specialised for (see
/// `installed::methods_table`): a table made for the installed stack's [`Lower`] variant reaches its
/// backend's code without looking at the variant of any other, so each function holds one
/// backend's hot path only (fewer registers to save, nothing else in the instruction cache).
/// Whatever the table, every call still checks the variant and takes the general path when it
/// differs (a table captured by a wrapper before a re-install, a retired allocator's block).
pub(crate) mod kind {
    /// Any backend: every variant is handled inline (the [`MemMethods`](super::MemMethods)
    /// impl of `Stack`).
    pub const ANY: u8 = 0;
    /// [`Lower::System`](super::Lower::System).
    pub const SYSTEM: u8 = 1;
    /// [`Lower::Memsys5`](super::Lower::Memsys5).
    pub const MEMSYS5: u8 = 2;
    /// [`Lower::Dyn`](super::Lower::Dyn).
    pub const DYN: u8 = 3;
    /// [`Lower::ScopedSystem`](super::Lower::ScopedSystem).
    pub const SCOPED_SYSTEM: u8 = 4;
    /// [`Lower::ScopedMemsys5`](super::Lower::ScopedMemsys5).
    pub const SCOPED_MEMSYS5: u8 = 5;
    /// [`Lower::Tlsf`](super::Lower::Tlsf).
    pub const TLSF: u8 = 6;
}

/// A backend with counters and optional limit on top.
pub struct Stack {
    lower: Lower,
    counters: &'static Counters,
    limit: Option<Limit>,
    fault: Option<Fault>,
    scopes: Option<Arc<Scopes>>,
    spec: String,
}

/// `b` as the stack holds it: under the `scopes` layer (a header per block) when `scopes` is
/// given, else as it is.
fn headed<B: MemMethods + 'static>(b: B, scopes: &Option<Arc<Scopes>>) -> Lower {
    match scopes {
        None => Lower::Dyn(Box::new(b)),
        Some(sc) => Lower::Dyn(Box::new(Scoped::with_header(b, sc.clone()))),
    }
}

impl Stack {
    /// Build the allocator `spec` names (parsed with [`Spec::parse`]): the backend with its
    /// heap, the counters, and the `limit` and `fault` layers the spec asks for. Nothing is
    /// installed. [`Error::BadSpec`] names the offending part; [`Error::HeapUnavailable`] when a
    /// fixed heap cannot be had.
    pub fn from_spec(spec: &str) -> Result<Stack, Error> {
        let parsed = Spec::parse(spec)?;
        let scopes = parsed.scopes.then(|| Arc::new(Scopes::new()));
        let lower = match parsed.backend {
            Backend::System => match &scopes {
                None => Lower::System(backend::System),
                Some(sc) => Lower::ScopedSystem(Scoped::with_header(backend::System, sc.clone())),
            },
            Backend::Debug { backtrace } => headed(backend::Debug::new(backtrace), &scopes),
            Backend::Memsys3 { heap, bias } => {
                let m = backend::Memsys3::new(heap)
                    .ok_or(Error::HeapUnavailable { bytes: heap })?
                    .with_bias(bias);
                match &scopes {
                    None => Lower::Dyn(Box::new(m)),
                    Some(sc) => Lower::Dyn(Box::new(Scoped::with_table(m, sc.clone()))),
                }
            }
            Backend::Memsys5 {
                heap,
                min,
                shards,
                bias,
            } => {
                let m = backend::Memsys5::with_shards(heap, min, shards)
                    .ok_or(Error::HeapUnavailable { bytes: heap })?
                    .with_bias(bias);
                match &scopes {
                    None => Lower::Memsys5(m),
                    Some(sc) => Lower::ScopedMemsys5(Scoped::with_table(m, sc.clone())),
                }
            }
            Backend::Tlsf {
                heap,
                shards,
                bias,
                cache,
            } => {
                let m = backend::Tlsf::with_cache(heap, shards, cache)
                    .ok_or(Error::HeapUnavailable { bytes: heap })?
                    .with_bias(bias);
                match &scopes {
                    None => Lower::Tlsf(m),
                    Some(sc) => Lower::Dyn(Box::new(Scoped::with_table(m, sc.clone()))),
                }
            }
            #[cfg(feature = "jemalloc")]
            Backend::Jemalloc => headed(backend::Jemalloc, &scopes),
            #[cfg(feature = "mimalloc")]
            Backend::Mimalloc => headed(backend::Mimalloc, &scopes),
            Backend::Rust => headed(backend::Rust, &scopes),
            // Spec::parse refuses the names of backends that are not built in.
            #[allow(unreachable_patterns)]
            _ => {
                return Err(Error::BadSpec(SpecError {
                    part: spec.trim().to_string(),
                    reason: "backend is not built in".to_string(),
                }))
            }
        };
        let mut stack = Stack::with_lower(lower, parsed.limit, spec.trim().to_string())
            .with_fault(parsed.fault);
        stack.scopes = scopes;
        Ok(stack)
    }

    /// Put counters (and a limit, if `limit` is given) over `backend`. `spec` is the text shown
    /// in reports.
    pub fn new(backend: Box<dyn MemMethods>, limit: Option<u64>, spec: String) -> Stack {
        Stack::with_lower(Lower::Dyn(backend), limit, spec)
    }

    /// As [`new`](Self::new), with the backend in the form the hot paths call.
    pub(crate) fn with_lower(lower: Lower, limit: Option<u64>, spec: String) -> Stack {
        let counters = Counters::new_leaked();
        Stack {
            lower,
            counters,
            limit: limit.map(Limit::new),
            fault: None,
            scopes: None,
            spec,
        }
    }

    /// The counters.
    pub fn counters(&self) -> &'static Counters {
        self.counters
    }

    /// The counters, read now.
    pub fn stats(&self) -> Stats {
        self.counters.stats()
    }

    /// What the backend holds beyond SQLite's live bytes ([`MemMethods::footprint`], given this
    /// stack's counters), read without taking any lock of the allocation path.
    pub fn footprint(&self) -> Vec<Held> {
        let mut v = Vec::new();
        self.backend().footprint(&self.stats(), &mut |h| v.push(h));
        v
    }

    /// The spec this stack was built from.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The backend at the bottom.
    pub fn backend(&self) -> &dyn MemMethods {
        match &self.lower {
            Lower::System(b) => b,
            Lower::Memsys5(b) => b,
            Lower::Tlsf(b) => b,
            Lower::ScopedSystem(b) => b,
            Lower::ScopedMemsys5(b) => b,
            Lower::Dyn(b) => &**b,
        }
    }

    /// The limit layer, if any.
    pub fn limit(&self) -> Option<&Limit> {
        self.limit.as_ref()
    }

    /// Add a [`fault`](crate::fault) layer (armed with `spec`'s plan) under the limit, or none
    /// for `None`.
    pub fn with_fault(mut self, spec: Option<FaultSpec>) -> Stack {
        self.fault = spec.map(Fault::new);
        self
    }

    /// The fault layer, if any.
    pub fn fault(&self) -> Option<&Fault> {
        self.fault.as_ref()
    }

    /// The scopes layer, if any: every scope with its name, cap and counters
    /// ([`Scopes::list`]).
    pub fn scopes(&self) -> Option<&Scopes> {
        self.scopes.as_deref()
    }

    /// The [`kind`] of the backend, for `installed::methods_table`.
    pub(crate) fn kind(&self) -> u8 {
        match self.lower {
            Lower::System(_) => kind::SYSTEM,
            Lower::Memsys5(_) => kind::MEMSYS5,
            Lower::Tlsf(_) => kind::TLSF,
            Lower::ScopedSystem(_) => kind::SCOPED_SYSTEM,
            Lower::ScopedMemsys5(_) => kind::SCOPED_MEMSYS5,
            Lower::Dyn(_) => kind::DYN,
        }
    }

    /// No limit and no fault layer: the counters sit right on the backend.
    #[inline(always)]
    fn plain(&self) -> bool {
        self.limit.is_none() && self.fault.is_none()
    }

    /// [`MemMethods::malloc`], with the backend of kind `K` (or any, for [`kind::ANY`]) inline.
    #[inline(always)]
    pub(crate) fn malloc_as<const K: u8>(&self, size: usize) -> Option<NonNull<u8>> {
        if self.plain() {
            // The common case: counters straight over the backend, one call down.
            on_kind!(self, K, b => return self.malloc_counted(b, size), _ => {});
        }
        self.malloc_other(size)
    }

    /// A counted malloc from backend `b` (see [`Hot`]).
    #[inline(always)]
    fn malloc_counted<B: Hot>(&self, b: &B, size: usize) -> Option<NonNull<u8>> {
        if B::TAKES_SLOT {
            let stored = slot_word();
            let r = b.malloc_and_size_at(stored, size);
            self.counters.on_malloc_at(stored, size, r.map(|(_, n)| n));
            r.map(|(p, _)| p)
        } else {
            let r = b.malloc_and_size_at(0, size);
            self.counters.on_malloc(size, r.map(|(_, n)| n));
            r.map(|(p, _)| p)
        }
    }

    /// A counted free to backend `b` (see [`Hot`]); the limit is released by the caller.
    ///
    /// # Safety
    /// As [`MemMethods::free`], for a block of `b`.
    #[inline(always)]
    unsafe fn free_counted<B: Hot>(&self, b: &B, ptr: NonNull<u8>) -> usize {
        if B::TAKES_SLOT {
            let stored = slot_word();
            // SAFETY: forwarded contract.
            let size = unsafe { b.size_and_free_at(stored, ptr) };
            self.counters.on_free_at(stored, size);
            size
        } else {
            // SAFETY: forwarded contract.
            let size = unsafe { b.size_and_free_at(0, ptr) };
            self.counters.on_free(size);
            size
        }
    }

    /// [`malloc_as`](Self::malloc_as) off its specialised path: the layers, or another kind.
    #[cold]
    #[inline(never)]
    fn malloc_other(&self, size: usize) -> Option<NonNull<u8>> {
        if self.plain() {
            self.malloc_as::<{ kind::ANY }>(size)
        } else {
            self.malloc_layered(size)
        }
    }

    /// [`MemMethods::free`], with the backend of kind `K` (or any) inline.
    ///
    /// # Safety
    /// As [`MemMethods::free`].
    #[inline(always)]
    pub(crate) unsafe fn free_as<const K: u8>(&self, ptr: NonNull<u8>) {
        let size = on_kind!(self, K,
            // SAFETY: forwarded contract (`ptr` is a live block of this backend).
            b => unsafe { self.free_counted(b, ptr) },
            // SAFETY: forwarded contract.
            _ => return unsafe { self.free_other(ptr) });
        if let Some(l) = &self.limit {
            l.release(size as u64);
        }
    }

    /// [`free_as`](Self::free_as) for a backend of another kind than the table's.
    ///
    /// # Safety
    /// As [`MemMethods::free`].
    #[cold]
    #[inline(never)]
    unsafe fn free_other(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded contract.
        unsafe { self.free_as::<{ kind::ANY }>(ptr) }
    }

    /// [`MemMethods::size`], with the backend of kind `K` (or any) inline. (SQLite asks the
    /// size twice per malloc+free pair when memstatus is on.)
    ///
    /// # Safety
    /// As [`MemMethods::size`].
    #[inline(always)]
    pub(crate) unsafe fn size_as<const K: u8>(&self, ptr: NonNull<u8>) -> usize {
        on_kind!(self, K,
            // SAFETY: forwarded contract (`ptr` is a live block of this backend).
            b => unsafe { b.size(ptr) },
            // SAFETY: forwarded contract.
            _ => unsafe { self.size_other(ptr) })
    }

    /// [`size_as`](Self::size_as) for a backend of another kind than the table's.
    ///
    /// # Safety
    /// As [`MemMethods::size`].
    #[cold]
    #[inline(never)]
    unsafe fn size_other(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.size_as::<{ kind::ANY }>(ptr) }
    }

    /// [`MemMethods::roundup`], with the backend of kind `K` (or any) inline. (SQLite asks it
    /// once per malloc when memstatus is on.)
    #[inline(always)]
    pub(crate) fn roundup_as<const K: u8>(&self, size: usize) -> usize {
        on_kind!(self, K, b => b.roundup(size), _ => self.roundup_other(size))
    }

    /// [`roundup_as`](Self::roundup_as) for a backend of another kind than the table's.
    #[cold]
    #[inline(never)]
    fn roundup_other(&self, size: usize) -> usize {
        self.roundup_as::<{ kind::ANY }>(size)
    }

    /// [`MemMethods::malloc`] with a limit or a fault layer.
    #[inline(never)]
    fn malloc_layered(&self, size: usize) -> Option<NonNull<u8>> {
        let p = match &self.limit {
            None => self.lower_malloc(size),
            Some(l) => {
                let est = self.backend().roundup(size) as u64;
                if !l.reserve(est) {
                    self.counters.on_malloc(size, None);
                    return None;
                }
                match self.lower_malloc(size) {
                    None => {
                        l.release(est);
                        None
                    }
                    Some(p) => {
                        // SAFETY: `p` was just returned by the backend and is live.
                        let real = unsafe { self.backend().size(p) } as u64;
                        if l.adjust(est, real) {
                            Some(p)
                        } else {
                            l.release(est);
                            // SAFETY: `p` is live, from this backend, and not handed out.
                            unsafe { self.backend().free(p) };
                            None
                        }
                    }
                }
            }
        };
        // SAFETY: a returned `p` is live.
        self.counters
            .on_malloc(size, p.map(|p| unsafe { self.backend().size(p) }));
        p
    }

    /// The backend's malloc, under the fault layer when there is one.
    #[inline]
    fn lower_malloc(&self, size: usize) -> Option<NonNull<u8>> {
        if let Some(f) = &self.fault {
            if f.step() {
                return None;
            }
        }
        self.backend().malloc(size)
    }

    /// The backend's [`malloc_for`](MemMethods::malloc_for) (a block to replace `like`), under
    /// the fault layer when there is one.
    ///
    /// # Safety
    /// `like` is a live block of the backend.
    #[inline]
    unsafe fn lower_malloc_for(&self, like: NonNull<u8>, size: usize) -> Option<NonNull<u8>> {
        if let Some(f) = &self.fault {
            if f.step() {
                return None;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.backend().malloc_for(like, size) }
    }

    /// The backend's realloc, under the fault layer when there is one (a failure leaves `ptr`
    /// untouched).
    ///
    /// # Safety
    /// As [`MemMethods::realloc`].
    #[inline]
    unsafe fn lower_realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        if let Some(f) = &self.fault {
            if f.step() {
                return None;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.backend().realloc(ptr, new_size) }
    }
}

// SAFETY: every method forwards to the backend, which upholds the contract; the layers only ever
// refuse a request (returning None without touching the old block) or count.
unsafe impl MemMethods for Stack {
    fn name(&self) -> &'static str {
        self.backend().name()
    }

    #[inline]
    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        self.malloc_as::<{ kind::ANY }>(size)
    }
    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded contract.
        unsafe { self.free_as::<{ kind::ANY }>(ptr) }
    }

    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        // SAFETY: `ptr` is live (caller's contract).
        let old = unsafe { self.backend().size(ptr) };
        let p = match &self.limit {
            // SAFETY: forwarded contract.
            None => unsafe { self.lower_realloc(ptr, new_size) },
            // SAFETY: forwarded contract.
            Some(l) => unsafe { self.realloc_limited(l, ptr, old, new_size) },
        };
        // SAFETY: a returned `p` is live.
        self.counters
            .on_realloc(new_size, old, p.map(|p| unsafe { self.backend().size(p) }));
        p
    }

    #[inline]
    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.size_as::<{ kind::ANY }>(ptr) }
    }

    #[inline]
    fn roundup(&self, size: usize) -> usize {
        self.roundup_as::<{ kind::ANY }>(size)
    }

    fn init(&self) -> Result<(), InitError> {
        self.backend().init()
    }

    fn shutdown(&self) {
        self.backend().shutdown()
    }

    fn live_blocks(&self, out: &mut dyn FnMut(LiveBlock<'_>)) {
        self.backend().live_blocks(out)
    }

    fn owns(&self, ptr: NonNull<u8>) -> Option<bool> {
        self.backend().owns(ptr)
    }

    fn footprint(&self, stats: &Stats, out: &mut dyn FnMut(Held)) {
        self.backend().footprint(stats, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Rust;

    /// One stack of each [`Lower`] variant, and one with a limit (the layered path). Under Miri,
    /// which cannot call `malloc_usable_size`, without `system`.
    fn stacks() -> Vec<Stack> {
        let scoped = |spec: &str| {
            let s = Stack::from_spec(spec).unwrap();
            assert!(s.scopes().is_some(), "{spec}");
            s
        };
        let mut v = vec![
            Stack::with_lower(
                Lower::Memsys5(Memsys5::new(1 << 20, 64).unwrap()),
                None,
                "memsys5:heap=1M,min=64".into(),
            ),
            Stack::new(Box::new(Rust), None, "rust".into()),
            Stack::with_lower(
                Lower::Memsys5(Memsys5::new(1 << 20, 64).unwrap()),
                Some(1 << 20),
                "memsys5:heap=1M,min=64+limit:max=1M".into(),
            ),
            scoped("memsys5:heap=1M,min=64+scopes"),
            scoped("rust+scopes"),
            Stack::from_spec("tlsf:heap=1M").unwrap(),
        ];
        if !cfg!(miri) {
            v.push(Stack::with_lower(
                Lower::System(System),
                None,
                "system".into(),
            ));
            v.push(scoped("system+scopes"));
        }
        let kinds: Vec<u8> = v.iter().map(Stack::kind).collect();
        assert!(kinds.contains(&kind::SCOPED_MEMSYS5) && kinds.contains(&kind::DYN));
        assert!(kinds.contains(&kind::TLSF));
        assert!(cfg!(miri) || kinds.contains(&kind::SCOPED_SYSTEM));
        v
    }

    /// A malloc, its size, a roundup and a free through the paths specialised for kind `K`:
    /// the backend's own answers and exact counts whatever `K` is.
    fn exercise<const K: u8>(s: &Stack) {
        let before = s.stats();
        let p = s.malloc_as::<K>(100).expect("a 100-byte block");
        // SAFETY: `p` is live and from `s`; it is freed once below.
        let n = unsafe { s.size_as::<K>(p) };
        assert!(n >= 100, "{}: size {n}", s.spec());
        // SAFETY: as above.
        assert_eq!(n, unsafe { s.backend().size(p) }, "{}", s.spec());
        assert_eq!(s.roundup_as::<K>(100), s.backend().roundup(100));
        let mid = s.stats();
        assert_eq!(mid.current_count, before.current_count + 1, "{}", s.spec());
        assert_eq!(mid.current_bytes, before.current_bytes + n as i64);
        if let Some(l) = s.limit() {
            assert_eq!(l.used(), n as u64, "{}: limit usage", s.spec());
        }
        // SAFETY: `p` is live and from `s`.
        unsafe { s.free_as::<K>(p) };
        let after = s.stats();
        assert_eq!(
            (after.current_count, after.current_bytes),
            (before.current_count, before.current_bytes),
            "{}: after the free",
            s.spec()
        );
        if let Some(l) = s.limit() {
            assert_eq!(l.used(), 0, "{}: limit usage after the free", s.spec());
        }
    }

    /// A methods table made for one kind of backend must serve a stack of any other kind (a
    /// table captured before a re-install, a retired allocator's block): every specialised path
    /// falls back to the general one.
    #[test]
    fn every_kind_of_path_serves_every_backend() {
        // A stack's counters are leaked on purpose (`Counters::new_leaked`); kept reachable from a
        // static here so that Miri's leak check does not report them.
        static KEPT: std::sync::Mutex<Vec<&'static Counters>> = std::sync::Mutex::new(Vec::new());
        for s in stacks() {
            exercise::<{ kind::ANY }>(&s);
            exercise::<{ kind::SYSTEM }>(&s);
            exercise::<{ kind::MEMSYS5 }>(&s);
            exercise::<{ kind::DYN }>(&s);
            exercise::<{ kind::SCOPED_SYSTEM }>(&s);
            exercise::<{ kind::SCOPED_MEMSYS5 }>(&s);
            exercise::<{ kind::TLSF }>(&s);
            KEPT.lock().unwrap().push(s.counters());
        }
    }
}

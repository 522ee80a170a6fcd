//! The `fault` layer: allocation failures on demand, in the shipped library, for testing how a
//! program (and SQLite under it) copes with running out of memory.
//!
//! It plays the part of the fault simulator of SQLite's TCL test harness (`test_malloc.c`), which
//! wraps the configured `xMalloc`/`xRealloc` and makes chosen calls return NULL. Here it is a
//! layer of the [`Stack`], named in the spec like `limit`
//! (`system+fault:nth=100`), armed and read from C (`sqlalloc_fault_*`) and Rust
//! ([`arm`], [`injected`], [`stats`], …).
//!
//! # Which calls count
//!
//! Every call of `xMalloc` and every call of `xRealloc` that reaches the layer is one *step*, as
//! in the TCL harness (which counts both and nothing else: `xFree`, `xSize`, `xRoundup` are never
//! failed). A realloc that shrinks a block counts like any other. The layer sits under `limit`:
//! a call the cap refuses never reaches it and is not a step. A failed step returns NULL without
//! calling the backend (a failed realloc leaves the old block as it was) and the counters above
//! count it as a failed call (`failed_calls`).
//!
//! Steps are numbered from 1 since the last arm (the install arms the plan of the spec). A plan
//! says which steps fail:
//!
//! | spec keys | plan | failing steps |
//! |---|---|---|
//! | (none) | [`FaultPlan::Off`] | none: the layer only counts steps until it is armed |
//! | `nth=N` | [`FaultPlan::Nth`] `{ nth: N, repeat: 1 }` | step N only: `nth=1` is the very next call |
//! | `nth=N,repeat=K` | [`FaultPlan::Nth`] `{ nth: N, repeat: K }` | steps N … N+K−1 (K ≥ 1); `repeat=0`: step N and every step after it |
//! | `every=N` | [`FaultPlan::Every`] | steps N, 2N, 3N, … (`every=1`: all) |
//! | `rate=P[,seed=S]` | [`FaultPlan::Random`] | each step independently with probability P |
//!
//! `nth`, `every` and `rate` exclude each other; `repeat` needs `nth`, `seed` needs `rate`.
//! `N` is a whole number from 1 to 2⁶³−1 (no units), `K` from 0 to 2⁶³−1.
//!
//! **Random failures** are deterministic: step k fails when the SplitMix64 mix of `seed + k·φ`
//! (φ = 0x9E37_79B9_7F4A_7C15), shifted to 53 bits, is below `P·2⁵³`. The same seed and the same
//! sequence of calls give the same failures on every run and every machine; nothing is kept
//! between steps but the step number. `P` is a decimal fraction from 0 to 1 (`rate=0.01`) or a
//! percentage from 0 to 100 (`rate=1%`); `seed` is a whole number (default 0).
//!
//! # Benign regions
//!
//! SQLite brackets the allocations whose failure it can shrug off (a hash table that cannot grow,
//! a page-cache buffer it can do without) with `sqlite3BeginBenignMalloc()` /
//! `sqlite3EndBenignMalloc()`, which call hooks registered through
//! `sqlite3_test_control(SQLITE_TESTCTRL_BENIGN_MALLOC_HOOKS, begin, end)`. When an allocator with
//! a `fault` layer is installed, sqlalloc registers its own hooks there (the machine's SQLite
//! 3.40.1 has them: it is not built with `SQLITE_UNTESTABLE`; a SQLite that is gets no hooks and
//! [`FaultStats::hooks`] says so). Programs can mark regions of their own with
//! [`benign_begin`]/[`benign_end`] (C: `sqlalloc_fault_benign_begin`/`_end`). Regions nest and are
//! per thread (the TCL harness keeps one process-wide depth; a per-thread depth keeps another
//! thread's benign region from covering this thread's calls). `benign=` chooses what a region
//! does:
//!
//! - `benign=count` (default, as the TCL harness): steps in a region count and fail like any
//!   other; failures there are also counted in [`FaultStats::benign_injected`];
//! - `benign=skip`: calls in a region are not steps at all: they are never failed and do not move
//!   the count, so `nth=N` addresses the N-th call whose failure SQLite must report.
//!
//! Only one pair of hooks exists per SQLite: installing a `+fault` spec replaces whatever hooks
//! were registered before (e.g. those of a TCL testfixture's own fault simulator). Specs without a
//! `fault` layer never touch them.
//!
//! # Cost and threads
//!
//! A stack without the layer pays one test of an `Option` per call. With it, each step is an
//! atomic increment plus, while armed, a few loads (and a thread-local read in `skip` mode or
//! on a failure). Steps are numbered by one shared atomic counter, so with several threads the
//! plan is exact about *how many* calls pass before a failure, not about which thread gets it.
//! Arming while other threads allocate is safe; calls racing with the arm may see the old plan.

use crate::installed::current;
use crate::sqlite;
use crate::stack::Stack;
use std::cell::Cell;
use std::ffi::c_int;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

/// Which steps fail. See the [module documentation](self) for the numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultPlan {
    /// No step fails (steps are still counted).
    #[default]
    Off,
    /// Steps `nth` … `nth + repeat - 1` fail; with `repeat == 0`, step `nth` and all after it.
    Nth {
        /// First failing step, from 1.
        nth: u64,
        /// Number of failing steps; 0 for all from `nth` on.
        repeat: u64,
    },
    /// Steps `n`, `2n`, `3n`, … fail.
    Every(u64),
    /// Each step fails with a fixed probability, decided by a deterministic hash of
    /// `seed` and the step number. Build it with [`FaultPlan::random`].
    Random {
        /// The seed.
        seed: u64,
        /// Probability scaled to 2⁵³ (`rate * 2^53`): a step fails when its 53-bit hash is
        /// below this value.
        threshold: u64,
    },
}

/// 2⁵³: the scale of [`FaultPlan::Random`]'s threshold.
const SCALE: f64 = (1u64 << 53) as f64;

impl FaultPlan {
    /// Random failures with probability `rate` (0 to 1) from `seed`; `None` when `rate` is not
    /// in 0..=1 (or NaN).
    pub fn random(seed: u64, rate: f64) -> Option<FaultPlan> {
        if !(0.0..=1.0).contains(&rate) {
            return None;
        }
        Some(FaultPlan::Random {
            seed,
            threshold: (rate * SCALE) as u64,
        })
    }

    /// Check the numbers of a plan built by hand: `nth` and `every` from 1 and at most
    /// `i64::MAX` (so that C sees them as `int64_t`), `repeat` at most `i64::MAX`, a threshold
    /// at most 2⁵³.
    pub fn validate(&self) -> Result<(), String> {
        const MAX: u64 = i64::MAX as u64;
        match *self {
            FaultPlan::Off => Ok(()),
            FaultPlan::Nth { nth, repeat } => {
                if !(1..=MAX).contains(&nth) {
                    return Err(format!("nth must be from 1 to {MAX}, not {nth}"));
                }
                if repeat > MAX {
                    return Err(format!("repeat must be from 0 to {MAX}, not {repeat}"));
                }
                Ok(())
            }
            FaultPlan::Every(n) if (1..=MAX).contains(&n) => Ok(()),
            FaultPlan::Every(n) => Err(format!("every must be from 1 to {MAX}, not {n}")),
            FaultPlan::Random { threshold, .. } if threshold <= 1 << 53 => Ok(()),
            FaultPlan::Random { threshold, .. } => {
                Err(format!("threshold must be at most 2^53, not {threshold}"))
            }
        }
    }

    /// Whether step `k` (from 1) fails under this plan.
    #[inline]
    pub fn fails(&self, k: u64) -> bool {
        match *self {
            FaultPlan::Off => false,
            FaultPlan::Nth { nth, repeat } => k >= nth && (repeat == 0 || k - nth < repeat),
            FaultPlan::Every(n) => n != 0 && k % n == 0,
            FaultPlan::Random { seed, threshold } => {
                (splitmix64(seed.wrapping_add(k.wrapping_mul(PHI))) >> 11) < threshold
            }
        }
    }
}

impl fmt::Display for FaultPlan {
    /// The spec options that give this plan (`nth=3,repeat=1`, `every=10`, …; `""` for Off).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FaultPlan::Off => Ok(()),
            FaultPlan::Nth { nth, repeat } => write!(f, "nth={nth},repeat={repeat}"),
            FaultPlan::Every(n) => write!(f, "every={n}"),
            FaultPlan::Random { seed, threshold } => {
                write!(f, "seed={seed},rate={}", threshold as f64 / SCALE)
            }
        }
    }
}

/// The golden-ratio increment of SplitMix64.
const PHI: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mix.
#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a benign region does. See the [module documentation](self#benign-regions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Benign {
    /// Steps in a benign region count and fail like others; their failures are also counted
    /// apart.
    #[default]
    Count,
    /// Calls in a benign region are not steps: never failed, not counted.
    Skip,
}

/// The `fault` part of a spec: the plan armed at install and the benign mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultSpec {
    /// Armed when the allocator is installed.
    pub plan: FaultPlan,
    /// What benign regions do.
    pub benign: Benign,
}

/// What the layer has seen since it was last armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultStats {
    /// Steps (counted `xMalloc`/`xRealloc` calls) since the last arm.
    pub calls: u64,
    /// Failures injected since the last arm (benign ones included).
    pub injected: u64,
    /// Of those, failures inside a benign region.
    pub benign_injected: u64,
    /// Whether a plan other than [`FaultPlan::Off`] is armed.
    pub armed: bool,
    /// Whether SQLite's benign-malloc hooks are registered (false when SQLite has no
    /// `sqlite3_test_control`, or was built with `SQLITE_UNTESTABLE`, or no `+fault` spec was
    /// installed).
    pub hooks: bool,
}

const M_OFF: u8 = 0;
const M_NTH: u8 = 1;
const M_EVERY: u8 = 2;
const M_RANDOM: u8 = 3;

/// The layer itself, inside a [`Stack`]. All state is atomic: no lock on the allocation path.
#[derive(Debug)]
pub struct Fault {
    /// One of `M_*`: which plan, and whether `a`/`b` are meaningful. Written last by `arm`.
    mode: AtomicU8,
    /// nth / every / seed.
    a: AtomicU64,
    /// repeat / threshold.
    b: AtomicU64,
    benign: Benign,
    calls: AtomicU64,
    injected: AtomicU64,
    benign_injected: AtomicU64,
}

impl Fault {
    /// A layer with `spec`'s benign mode, armed with its plan.
    pub fn new(spec: FaultSpec) -> Fault {
        let f = Fault {
            mode: AtomicU8::new(M_OFF),
            a: AtomicU64::new(0),
            b: AtomicU64::new(0),
            benign: spec.benign,
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            benign_injected: AtomicU64::new(0),
        };
        f.arm(spec.plan);
        f
    }

    /// Replace the plan and start counting steps and failures from zero.
    pub fn arm(&self, plan: FaultPlan) {
        self.mode.store(M_OFF, Ordering::SeqCst);
        let (mode, a, b) = match plan {
            FaultPlan::Off => (M_OFF, 0, 0),
            FaultPlan::Nth { nth, repeat } => (M_NTH, nth, repeat),
            FaultPlan::Every(n) => (M_EVERY, n, 0),
            FaultPlan::Random { seed, threshold } => (M_RANDOM, seed, threshold),
        };
        self.a.store(a, Ordering::Relaxed);
        self.b.store(b, Ordering::Relaxed);
        self.calls.store(0, Ordering::Relaxed);
        self.injected.store(0, Ordering::Relaxed);
        self.benign_injected.store(0, Ordering::Relaxed);
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// Stop failing steps; the counts since the last arm are kept and steps go on being counted.
    pub fn disarm(&self) {
        self.mode.store(M_OFF, Ordering::SeqCst);
    }

    /// The armed plan.
    pub fn plan(&self) -> FaultPlan {
        let mode = self.mode.load(Ordering::Acquire);
        let (a, b) = (
            self.a.load(Ordering::Relaxed),
            self.b.load(Ordering::Relaxed),
        );
        match mode {
            M_NTH => FaultPlan::Nth { nth: a, repeat: b },
            M_EVERY => FaultPlan::Every(a),
            M_RANDOM => FaultPlan::Random {
                seed: a,
                threshold: b,
            },
            _ => FaultPlan::Off,
        }
    }

    /// The benign mode.
    pub fn benign(&self) -> Benign {
        self.benign
    }

    /// Counts since the last arm.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            calls: self.calls.load(Ordering::Relaxed),
            injected: self.injected.load(Ordering::Relaxed),
            benign_injected: self.benign_injected.load(Ordering::Relaxed),
            armed: self.mode.load(Ordering::Relaxed) != M_OFF,
            hooks: HOOKS.load(Ordering::Relaxed),
        }
    }

    /// One `xMalloc`/`xRealloc` call: count it and say whether it must fail. Never panics, never
    /// calls into SQLite, takes no lock.
    #[inline]
    pub(crate) fn step(&self) -> bool {
        if self.benign == Benign::Skip && in_benign() {
            return false;
        }
        let k = self.calls.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let plan = match self.mode.load(Ordering::Acquire) {
            M_OFF => return false,
            M_NTH => FaultPlan::Nth {
                nth: self.a.load(Ordering::Relaxed),
                repeat: self.b.load(Ordering::Relaxed),
            },
            M_EVERY => FaultPlan::Every(self.a.load(Ordering::Relaxed)),
            _ => FaultPlan::Random {
                seed: self.a.load(Ordering::Relaxed),
                threshold: self.b.load(Ordering::Relaxed),
            },
        };
        if !plan.fails(k) {
            return false;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        if in_benign() {
            self.benign_injected.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

// ---- benign regions ---------------------------------------------------------------------------

thread_local! {
    /// Depth of nested benign regions on this thread. `const`-initialized and without a
    /// destructor, so it is usable on allocation paths and during thread teardown.
    static BENIGN_DEPTH: Cell<u32> = const { Cell::new(0) };
}

fn in_benign() -> bool {
    BENIGN_DEPTH.try_with(|d| d.get() > 0).unwrap_or(false)
}

/// Enter a benign region on this thread: allocation failures until the matching [`benign_end`]
/// are harmless (see [`Benign`]). Regions nest. SQLite calls this itself through its hooks.
pub fn benign_begin() {
    let _ = BENIGN_DEPTH.try_with(|d| d.set(d.get().saturating_add(1)));
}

/// Leave the innermost benign region of this thread (no effect outside any region).
pub fn benign_end() {
    let _ = BENIGN_DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
}

/// The current depth of benign regions on this thread.
pub fn benign_depth() -> u32 {
    BENIGN_DEPTH.try_with(|d| d.get()).unwrap_or(0)
}

/// A benign region that ends when dropped.
#[must_use = "the region ends when the guard is dropped"]
pub struct BenignGuard(());

impl BenignGuard {
    /// Enter a benign region on this thread.
    pub fn new() -> BenignGuard {
        benign_begin();
        BenignGuard(())
    }
}

impl Default for BenignGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BenignGuard {
    fn drop(&mut self) {
        benign_end()
    }
}

extern "C" fn hook_begin() {
    benign_begin()
}

extern "C" fn hook_end() {
    benign_end()
}

/// Whether our hooks are registered with SQLite.
static HOOKS: AtomicBool = AtomicBool::new(false);

/// `SQLITE_TESTCTRL_BENIGN_MALLOC_HOOKS`.
const SQLITE_TESTCTRL_BENIGN_MALLOC_HOOKS: c_int = 10;

type TestControlFn = unsafe extern "C" fn(c_int, ...) -> c_int;

#[cfg(all(feature = "link", not(feature = "libsqlite3-sys")))]
extern "C" {
    /// `int sqlite3_test_control(int op, ...)`, resolved from the program like `sqlite3_config`.
    fn sqlite3_test_control(op: c_int, ...) -> c_int;
}

/// SQLite's `sqlite3_test_control`, found the way `sqlite3_config` is (see [`crate::sqlite`]):
/// the one of libsqlite3-sys, else the linked one, else (builds without `link`, such as the
/// preload library) whatever the process exports under that name, or none.
fn test_control_fn() -> Option<TestControlFn> {
    #[cfg(feature = "libsqlite3-sys")]
    {
        Some(libsqlite3_sys::sqlite3_test_control as TestControlFn)
    }
    #[cfg(all(feature = "link", not(feature = "libsqlite3-sys")))]
    {
        Some(sqlite3_test_control as TestControlFn)
    }
    #[cfg(not(any(feature = "link", feature = "libsqlite3-sys")))]
    {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the symbol up.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"sqlite3_test_control".as_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: a symbol of that name is SQLite's `int sqlite3_test_control(int, ...)`.
        Some(unsafe { std::mem::transmute::<*mut std::ffi::c_void, TestControlFn>(p) })
    }
}

/// Register the benign hooks with SQLite when the installed allocator has a `fault` layer.
/// Called by [`crate::install`] after a successful install (never on an allocation path).
/// Registering only stores two function pointers in SQLite and is allowed before
/// `sqlite3_initialize()`.
pub(crate) fn after_install() {
    if current().and_then(Stack::fault).is_none() {
        return;
    }
    let Some(tc) = test_control_fn() else {
        return;
    };
    // SAFETY: `tc` is sqlite3_test_control; BENIGN_MALLOC_HOOKS takes two `void(*)(void)`, and
    // `hook_begin`/`hook_end` are such functions, valid for the life of the process. A SQLite
    // built with SQLITE_UNTESTABLE ignores the call and returns 0.
    let _ = unsafe {
        tc(
            SQLITE_TESTCTRL_BENIGN_MALLOC_HOOKS,
            hook_begin as extern "C" fn(),
            hook_end as extern "C" fn(),
        )
    };
    // An untestable SQLite returns 0 as well: whether the hooks really fire is only known once
    // SQLite calls them, so `hooks` means "registered".
    HOOKS.store(true, Ordering::Relaxed);
}

// ---- the installed allocator's layer ----------------------------------------------------------

/// Why a fault call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultError {
    /// No sqlalloc allocator is installed.
    NotInstalled,
    /// The installed allocator has no `fault` layer (its spec is shown).
    NoFaultLayer(String),
    /// A plan with numbers out of range (the reason is given).
    BadPlan(String),
}

impl FaultError {
    /// The SQLite result code the C API returns: `SQLITE_MISUSE` for a bad plan, else
    /// `SQLITE_ERROR`.
    pub fn sqlite_code(&self) -> c_int {
        match self {
            FaultError::BadPlan(_) => sqlite::SQLITE_MISUSE,
            _ => sqlite::SQLITE_ERROR,
        }
    }
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultError::NotInstalled => f.write_str("no sqlalloc allocator is installed"),
            FaultError::NoFaultLayer(spec) => write!(
                f,
                "the installed allocator '{spec}' has no fault layer (add +fault to its spec)"
            ),
            FaultError::BadPlan(why) => write!(f, "bad fault plan: {why}"),
        }
    }
}

impl std::error::Error for FaultError {}

/// The `fault` layer of the installed allocator.
pub fn installed_layer() -> Result<&'static Fault, FaultError> {
    let s = current().ok_or(FaultError::NotInstalled)?;
    s.fault()
        .ok_or_else(|| FaultError::NoFaultLayer(s.spec().to_string()))
}

/// Arm the installed allocator's `fault` layer with `plan`; steps and failures are counted from
/// zero again. `arm(FaultPlan::Off)` is [`disarm`].
///
/// ```
/// use sqlalloc::fault::{self, FaultPlan};
/// # use libsqlite3_sys as _;
/// // Without a `+fault` layer (or without any install) arming is refused, and says why.
/// if sqlalloc::installed().is_none_or(|s| s.fault().is_none()) {
///     assert!(fault::arm(FaultPlan::Nth { nth: 1, repeat: 1 }).is_err());
/// }
/// assert!(FaultPlan::Nth { nth: 5, repeat: 2 }.fails(6));
/// ```
pub fn arm(plan: FaultPlan) -> Result<(), FaultError> {
    plan.validate().map_err(FaultError::BadPlan)?;
    installed_layer()?.arm(plan);
    Ok(())
}

/// Stop injecting failures (the counts since the last arm are kept; steps go on being counted).
pub fn disarm() -> Result<(), FaultError> {
    installed_layer()?.disarm();
    Ok(())
}

/// Failures injected since the last arm.
pub fn injected() -> Result<u64, FaultError> {
    Ok(installed_layer()?.stats().injected)
}

/// Everything the layer counted since the last arm.
pub fn stats() -> Result<FaultStats, FaultError> {
    Ok(installed_layer()?.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_and_repeat() {
        let p = FaultPlan::Nth { nth: 3, repeat: 1 };
        let fails: Vec<u64> = (1..=10).filter(|&k| p.fails(k)).collect();
        assert_eq!(fails, [3]);
        let p = FaultPlan::Nth { nth: 3, repeat: 2 };
        assert_eq!((1..=10).filter(|&k| p.fails(k)).collect::<Vec<_>>(), [3, 4]);
        let p = FaultPlan::Nth { nth: 3, repeat: 0 };
        assert_eq!((1..=6).filter(|&k| p.fails(k)).count(), 4);
        assert!(!p.fails(2));
        let p = FaultPlan::Every(4);
        assert_eq!(
            (1..=12).filter(|&k| p.fails(k)).collect::<Vec<_>>(),
            [4, 8, 12]
        );
    }

    #[test]
    fn random_is_deterministic_and_near_its_rate() {
        let p = FaultPlan::random(42, 0.1).unwrap();
        let a: Vec<bool> = (1..=100_000).map(|k| p.fails(k)).collect();
        let b: Vec<bool> = (1..=100_000).map(|k| p.fails(k)).collect();
        assert_eq!(a, b);
        let n = a.iter().filter(|&&f| f).count();
        assert!((9_000..11_000).contains(&n), "{n} failures for rate 0.1");
        let q = FaultPlan::random(43, 0.1).unwrap();
        assert_ne!(a, (1..=100_000).map(|k| q.fails(k)).collect::<Vec<_>>());
        assert!((1..1000).all(|k| FaultPlan::random(1, 1.0).unwrap().fails(k)));
        assert!((1..1000).all(|k| !FaultPlan::random(1, 0.0).unwrap().fails(k)));
        assert!(FaultPlan::random(1, 1.5).is_none());
        assert!(FaultPlan::random(1, f64::NAN).is_none());
        assert!(FaultPlan::random(1, -0.1).is_none());
    }

    #[test]
    fn layer_counts_steps_and_rearms() {
        let f = Fault::new(FaultSpec {
            plan: FaultPlan::Nth { nth: 2, repeat: 2 },
            benign: Benign::Count,
        });
        let got: Vec<bool> = (0..5).map(|_| f.step()).collect();
        assert_eq!(got, [false, true, true, false, false]);
        let s = f.stats();
        assert_eq!((s.calls, s.injected, s.armed), (5, 2, true));
        f.arm(FaultPlan::Nth { nth: 1, repeat: 1 });
        assert_eq!(f.stats().calls, 0);
        {
            let _g = BenignGuard::new();
            assert!(f.step());
        }
        assert!(!f.step());
        assert_eq!(f.stats().benign_injected, 1);
        f.arm(FaultPlan::Off);
        assert!(!f.step());
        assert_eq!(f.stats().calls, 1);
    }

    #[test]
    fn benign_skip_is_not_a_step() {
        let f = Fault::new(FaultSpec {
            plan: FaultPlan::Nth { nth: 1, repeat: 1 },
            benign: Benign::Skip,
        });
        benign_begin();
        benign_begin();
        assert!(!f.step());
        benign_end();
        assert!(!f.step());
        benign_end();
        assert_eq!(benign_depth(), 0);
        assert_eq!(f.stats().calls, 0);
        assert!(f.step());
        assert_eq!(f.stats().injected, 1);
        benign_end(); // unmatched: stays at 0
        assert_eq!(benign_depth(), 0);
    }

    #[test]
    fn validate_refuses_out_of_range() {
        assert!(FaultPlan::Nth { nth: 0, repeat: 1 }.validate().is_err());
        assert!(FaultPlan::Nth {
            nth: 1,
            repeat: u64::MAX
        }
        .validate()
        .is_err());
        assert!(FaultPlan::Every(0).validate().is_err());
        assert!(FaultPlan::Every(1).validate().is_ok());
        assert_eq!(
            FaultPlan::Nth { nth: 7, repeat: 0 }.to_string(),
            "nth=7,repeat=0"
        );
    }
}

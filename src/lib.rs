//! # sqlalloc
//!
//! SQLite's memory allocators, written in Rust, installed into an unmodified SQLite through
//! `sqlite3_config(SQLITE_CONFIG_MALLOC, ...)`:
//!
//! | backend | SQLite original | what it is for |
//! |---|---|---|
//! | [`system`](backend::System) | `mem1.c` | libc malloc, no header; the default |
//! | [`debug`](backend::Debug) | `mem2.c` | guards, fills, live-block list with backtraces, leak report |
//! | [`memsys3`](backend::Memsys3) | `mem3.c` | first fit over one fixed heap |
//! | [`memsys5`](backend::Memsys5) | `mem5.c` | power-of-two buddy over one fixed heap (Robson-bounded) |
//! | `jemalloc` (feature `jemalloc`) | — | jemalloc, sized API: exact `xSize` and `xRoundup`, no header |
//! | `mimalloc` (feature `mimalloc`) | — | mimalloc: exact `xSize` and `xRoundup`, no header |
//! | [`rust`](backend::Rust) | — | the program's `#[global_allocator]` |
//!
//! Over any backend: always-on [`counters`] (cheap, per-thread shards) and an optional
//! [`limit`](stack::Limit) layer. One [`spec`] string names a configuration:
//! `memsys5:heap=64M,min=64+limit:max=48M`.
//!
//! Every allocator implements one trait, [`MemMethods`], which mirrors `sqlite3_mem_methods`; the
//! C ABI (`include/sqlalloc.h`) and this Rust API are thin layers over it.
//!
//! # From Rust (rusqlite, sqlx)
//!
//! Enable the feature `libsqlite3-sys` so that sqlalloc configures the SQLite that rusqlite and
//! sqlx link (system or `bundled`), install before the first connection, and read the counters
//! whenever you like:
//!
//! ```no_run
//! sqlalloc::install("system+limit:max=256M")?;
//! let db = rusqlite::Connection::open_in_memory()?;
//! db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES(randomblob(100000));")?;
//! let s = sqlalloc::stats();
//! println!("SQLite: {} bytes in {} blocks", s.current_bytes, s.current_count);
//! println!("{}", s.to_prometheus());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`install`] a spec, or [`configure`] your own [`MemMethods`] (counters and an optional
//!   limit are put on top of it);
//! - [`stats`] returns [`Stats`], which renders as JSON and Prometheus text ([`render`]);
//! - [`StatsAlloc`] wraps the program's `#[global_allocator]` with the same counters, so the Rust
//!   heap and SQLite's heap show side by side.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
pub mod counters;
pub mod fault;
mod ffi;
pub mod heap;
mod lock;
pub mod methods;
mod poison;
pub mod render;
pub mod report;
pub mod spec;
pub mod sqlite;
pub mod stack;
mod stats_alloc;

// Unit tests link the machine's SQLite through libsqlite3-sys (the libraries themselves resolve
// SQLite from the host program).
#[cfg(test)]
use libsqlite3_sys as _;

pub use counters::Snapshot;
pub use fault::{Benign, FaultPlan, FaultSpec, FaultStats};
pub use ffi::sqlalloc_stats;
pub use methods::{InitError, LiveBlock, MemMethods};
pub use spec::{Backend, Spec, SpecError};
pub use stack::Stack;
pub use stats_alloc::StatsAlloc;

/// The counters of an allocator: what [`stats`], [`Stack::stats`] and [`StatsAlloc::stats`]
/// return, field for field the C `sqlalloc_stats`. Renders with [`Stats::to_json`] and
/// [`Stats::to_prometheus`].
pub type Stats = Snapshot;

use stack::Lower;
use std::ffi::c_int;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// Why an install failed. Nothing was changed in SQLite in any of these cases.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The spec was refused; the error names the offending part.
    BadSpec(SpecError),
    /// SQLite is already initialized: allocators can only be installed before
    /// `sqlite3_initialize()` or after `sqlite3_shutdown()`.
    AlreadyInitialized,
    /// The installed allocator still owns live blocks and 32 allocators with live blocks have
    /// been retired already. (A re-install normally retires an allocator that still owns blocks:
    /// it is kept forever and its blocks are freed back into it. Only that many are kept.)
    AlreadyInstalled {
        /// Live blocks of the installed allocator.
        live_blocks: i64,
    },
    /// No `sqlite3_config` to call: built without the `link` feature and
    /// [`set_sqlite3_config`] was not called.
    NoSqlite,
    /// `sqlite3_config(SQLITE_CONFIG_MALLOC)` failed with an unexpected result code.
    ConfigFailed(c_int),
    /// The heap of a `memsys3`/`memsys5` backend could not be allocated.
    HeapUnavailable {
        /// The size asked for, in bytes.
        bytes: usize,
    },
}

impl Error {
    /// The SQLite result code the C API returns for this error.
    pub fn sqlite_code(&self) -> c_int {
        match self {
            Error::BadSpec(_) => sqlite::SQLITE_ERROR,
            Error::AlreadyInitialized | Error::AlreadyInstalled { .. } => sqlite::SQLITE_MISUSE,
            Error::HeapUnavailable { .. } => sqlite::SQLITE_NOMEM,
            Error::NoSqlite | Error::ConfigFailed(_) => sqlite::SQLITE_ERROR,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadSpec(e) => e.fmt(f),
            Error::AlreadyInitialized => f.write_str(
                "SQLite is already initialized: install before sqlite3_initialize() or after sqlite3_shutdown()",
            ),
            Error::AlreadyInstalled { live_blocks } => write!(
                f,
                "the installed allocator still owns {live_blocks} live block(s) and {} \
                 allocators with live blocks are retired already: free SQLite memory first",
                ffi::MAX_RETIRED
            ),
            Error::HeapUnavailable { bytes } => write!(f, "cannot allocate a heap of {bytes} bytes"),
            Error::NoSqlite => f.write_str("no sqlite3_config to call (SQLite not loaded?)"),
            Error::ConfigFailed(rc) => {
                write!(f, "sqlite3_config(SQLITE_CONFIG_MALLOC) failed with code {rc}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Self {
        Error::BadSpec(e)
    }
}

/// Build the allocator a spec names, without installing it.
pub fn build(spec: &str) -> Result<Stack, Error> {
    let parsed = Spec::parse(spec)?;
    let lower = match parsed.backend {
        Backend::System => Lower::System(backend::System),
        Backend::Debug { backtrace } => Lower::Dyn(Box::new(backend::Debug::new(backtrace))),
        Backend::Memsys3 { heap, bias } => Lower::Dyn(Box::new(
            backend::Memsys3::new(heap)
                .ok_or(Error::HeapUnavailable { bytes: heap })?
                .with_bias(bias),
        )),
        Backend::Memsys5 {
            heap,
            min,
            shards,
            bias,
        } => Lower::Memsys5(
            backend::Memsys5::with_shards(heap, min, shards)
                .ok_or(Error::HeapUnavailable { bytes: heap })?
                .with_bias(bias),
        ),
        #[cfg(feature = "jemalloc")]
        Backend::Jemalloc => Lower::Dyn(Box::new(backend::Jemalloc)),
        #[cfg(feature = "mimalloc")]
        Backend::Mimalloc => Lower::Dyn(Box::new(backend::Mimalloc)),
        Backend::Rust => Lower::Dyn(Box::new(backend::Rust)),
        // Spec::parse refuses the names of backends that are not built in.
        #[allow(unreachable_patterns)]
        _ => {
            return Err(Error::BadSpec(SpecError {
                part: spec.trim().to_string(),
                reason: "backend is not built in".to_string(),
            }))
        }
    };
    Ok(Stack::with_lower(lower, parsed.limit, spec.trim().to_string()).with_fault(parsed.fault))
}

/// Serializes installs (never taken on an allocation path).
static INSTALL: Mutex<()> = Mutex::new(());

/// Install the allocator named by `spec` into the process's SQLite.
///
/// The spec grammar is the C API's (see [`spec`]): `system`, `memsys5:heap=64M,min=64`,
/// `jemalloc+limit:max=1G`, …
///
/// Must run before SQLite initializes (or after `sqlite3_shutdown()`); otherwise
/// [`Error::AlreadyInitialized`] and nothing changes. A bad spec ([`Error::BadSpec`], naming the
/// offending part) and a heap that cannot be had ([`Error::HeapUnavailable`]) also change
/// nothing. The allocator installed before is freed if it owns no block; otherwise it is
/// *retired*: kept for the rest of the process (its memory may still be referenced), with each
/// free or size of one of its blocks sent back to it and a realloc moving the block to the new
/// allocator. (After 32 such retirements, [`Error::AlreadyInstalled`].)
///
/// With rusqlite or sqlx, enable this crate's feature `libsqlite3-sys`, so that the SQLite
/// configured here is the one they link.
pub fn install(spec: &str) -> Result<(), Error> {
    install_stack(build(spec)?)
}

/// Install your own allocator as SQLite's, with sqlalloc's counters on top (read them with
/// [`stats`]). The same rules as [`install`] apply: before SQLite initializes, otherwise
/// [`Error::AlreadyInitialized`] and nothing changes (`a` is dropped).
///
/// `a` implements [`MemMethods`], an `unsafe trait` whose safety contract (alignment, stable
/// sizes, thread safety without any lock from sqlalloc, a failed realloc leaving the block alone)
/// is what SQLite relies on.
///
/// ```
/// use sqlalloc::MemMethods;
/// use std::ptr::NonNull;
///
/// /// libc's allocator, counting nothing itself: sqlalloc's counters are put on top.
/// struct Libc;
///
/// // SAFETY: libc's malloc family returns 16-aligned, distinct blocks of at least the size
/// // asked for; malloc_usable_size is stable for a live block and at least the request;
/// // a failed realloc leaves the block alone; libc's allocator is thread-safe.
/// unsafe impl MemMethods for Libc {
///     fn name(&self) -> &'static str {
///         "libc"
///     }
///     fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
///         // SAFETY: plain libc call.
///         NonNull::new(unsafe { libc::malloc(size.max(1)) }.cast())
///     }
///     unsafe fn free(&self, p: NonNull<u8>) {
///         // SAFETY: `p` is a live libc block (the trait's contract).
///         unsafe { libc::free(p.as_ptr().cast()) }
///     }
///     unsafe fn realloc(&self, p: NonNull<u8>, n: usize) -> Option<NonNull<u8>> {
///         // SAFETY: `p` is a live libc block (the trait's contract).
///         NonNull::new(unsafe { libc::realloc(p.as_ptr().cast(), n.max(1)) }.cast())
///     }
///     unsafe fn size(&self, p: NonNull<u8>) -> usize {
///         // SAFETY: `p` is a live libc block (the trait's contract).
///         unsafe { libc::malloc_usable_size(p.as_ptr().cast()) }
///     }
///     fn roundup(&self, n: usize) -> usize {
///         sqlalloc::methods::round8(n)
///     }
/// }
///
/// # use libsqlite3_sys as _; // links SQLite into the doctest (a program links it anyway)
/// # fn main() -> Result<(), sqlalloc::Error> {
/// # // The doctest's process may already have initialized SQLite: either outcome is valid.
/// match sqlalloc::configure(Libc) {
///     Ok(()) => assert_eq!(sqlalloc::installed().unwrap().spec(), "libc"),
///     Err(sqlalloc::Error::AlreadyInitialized) => eprintln!("SQLite was already running"),
///     Err(e) => return Err(e),
/// }
/// # Ok(())
/// # }
/// ```
pub fn configure<M: MemMethods + 'static>(a: M) -> Result<(), Error> {
    configure_with_limit(a, None)
}

/// [`configure`] with a hard cap of `limit` bytes in use (the `limit` layer of the spec,
/// `+limit:max=N`), or none for `None`. A zero cap is refused as a bad spec.
pub fn configure_with_limit<M: MemMethods + 'static>(
    a: M,
    limit: Option<u64>,
) -> Result<(), Error> {
    let name = a.name().to_string();
    let spec = match limit {
        None => name,
        Some(0) => {
            return Err(Error::BadSpec(SpecError {
                part: "limit:max=0".to_string(),
                reason: "max must be greater than 0".to_string(),
            }))
        }
        Some(max) => format!("{name}+limit:max={max}"),
    };
    install_stack(Stack::new(Box::new(a), limit, spec))
}

/// The one install path of [`install`] and [`configure`].
fn install_stack(stack: Stack) -> Result<(), Error> {
    let config = sqlite::config_fn().ok_or(Error::NoSqlite)?;
    let stack = Box::new(stack);
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    // Checked before SQLite is asked, so that a refusal leaves SQLite's configuration as it was
    // (another allocator, e.g. a fault simulator wrapping ours, may be configured by now).
    if let Some(old) = ffi::current() {
        let live_blocks = old.stats().current_count;
        if live_blocks != 0 && ffi::retired_len() == ffi::MAX_RETIRED {
            // Which refusal applies? SQLITE_CONFIG_GETMALLOC is refused while SQLite is
            // initialized and otherwise only reads the configured table (never empty here: ours,
            // or something wrapping it, is configured), so asking changes nothing.
            let mut probe = ffi::methods_table(stack.kind());
            // SAFETY: SQLITE_CONFIG_GETMALLOC writes one sqlite3_mem_methods through the pointer,
            // which points to a value of exactly that layout.
            let rc = unsafe { config(sqlite::SQLITE_CONFIG_GETMALLOC, &mut probe as *mut _) };
            if rc == sqlite::SQLITE_MISUSE {
                return Err(Error::AlreadyInitialized);
            }
            return Err(Error::AlreadyInstalled { live_blocks });
        }
    }
    let table = ffi::methods_table(stack.kind());
    // SAFETY: SQLITE_CONFIG_MALLOC takes a pointer to a sqlite3_mem_methods, which SQLite copies
    // before returning; `table` matches its layout field for field; `config` is sqlite3_config.
    // The table is the one specialised for the new stack's backend (`stack::kind`); every table
    // serves every stack correctly (the functions find the stack through CURRENT and check its
    // backend), so a free of an old block in the window before the swap below is still right.
    let rc = unsafe { config(sqlite::SQLITE_CONFIG_MALLOC, &table as *const _) };
    match rc {
        sqlite::SQLITE_OK => {}
        sqlite::SQLITE_MISUSE => return Err(Error::AlreadyInitialized),
        other => return Err(Error::ConfigFailed(other)),
    }
    stack.counters().make_primary();
    // An allocator that still has live blocks is retired (kept forever, its blocks routed back
    // to it) before the new one takes its place, so that no free of one of its blocks can reach
    // the wrong allocator; there is room (checked above).
    if let Some(old) = ffi::current() {
        if old.stats().current_count != 0 {
            ffi::retire(old);
        }
    }
    let old = ffi::CURRENT.swap(Box::into_raw(stack), Ordering::AcqRel);
    if !old.is_null() && !ffi::is_retired(old) {
        // SAFETY: `old` came from Box::into_raw in an earlier install and was just swapped out,
        // so this is its only owner; it was not retired, so it owned no block (checked under the
        // install lock, while SQLite is not initialized) and nothing can reach it any more.
        drop(unsafe { Box::from_raw(old) });
    }
    fault::after_install();
    Ok(())
}

/// Use `f` as SQLite's `sqlite3_config` (for builds without the `link` feature, such as the
/// preload library, which finds SQLite with `dlsym` at run time). The first call wins; returns
/// whether `f` is the one in use.
///
/// # Safety
/// `f` must be SQLite's `sqlite3_config` (of the SQLite the program uses), valid for the rest of
/// the process.
pub unsafe fn set_sqlite3_config(f: sqlite::ConfigFn) -> bool {
    sqlite::set_config_fn(f)
}

/// Forget the installed allocator, so that [`installed`], [`stats`] and the C API see none again.
/// For a caller that has just put another allocator back into SQLite (the preload library does
/// that when SQLite cannot initialize with the one it installed). The allocator itself is leaked,
/// not freed: a block it handed out could still be referenced.
///
/// # Safety
/// SQLite must not be using sqlalloc's methods table any more: another allocator was configured
/// (`SQLITE_CONFIG_MALLOC`) while SQLite was not initialized.
pub unsafe fn forget_installed() {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    ffi::CURRENT.store(std::ptr::null_mut(), Ordering::Release);
}

/// The installed allocator, if any.
pub fn installed() -> Option<&'static Stack> {
    ffi::current()
}

/// The counters of SQLite's allocator (the installed one): the same fields as the C
/// `sqlalloc_stats`. All zero when nothing is installed (see [`installed`]).
pub fn stats() -> Stats {
    ffi::current().map(|s| s.stats()).unwrap_or_default()
}

/// Start a new peak from the current value.
pub fn reset_peak() {
    if let Some(s) = ffi::current() {
        s.counters().reset_peak()
    }
}

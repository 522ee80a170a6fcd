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
//!
//! Over any backend: always-on [`counters`] (cheap, per-thread shards) and an optional
//! [`limit`](stack::Limit) layer. One [`spec`] string names a configuration:
//! `memsys5:heap=64M,min=64+limit:max=48M`.
//!
//! Every allocator implements one trait, [`MemMethods`], which mirrors `sqlite3_mem_methods`; the
//! C ABI (`include/sqlalloc.h`) and this Rust API are thin layers over it.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
pub mod counters;
mod ffi;
pub mod heap;
pub mod methods;
pub mod report;
pub mod spec;
pub mod sqlite;
pub mod stack;

// Unit tests link the machine's SQLite through libsqlite3-sys (the libraries themselves resolve
// SQLite from the host program).
#[cfg(test)]
use libsqlite3_sys as _;

pub use counters::Snapshot;
pub use ffi::sqlalloc_stats;
pub use methods::{InitError, LiveBlock, MemMethods};
pub use spec::{Backend, Spec, SpecError};
pub use stack::Stack;

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
            Error::AlreadyInitialized => sqlite::SQLITE_MISUSE,
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
    let backend: Box<dyn MemMethods> = match parsed.backend {
        Backend::System => Box::new(backend::System),
        Backend::Debug { backtrace } => Box::new(backend::Debug::new(backtrace)),
        Backend::Memsys3 { heap } => {
            Box::new(backend::Memsys3::new(heap).ok_or(Error::HeapUnavailable { bytes: heap })?)
        }
        Backend::Memsys5 { heap, min } => Box::new(
            backend::Memsys5::new(heap, min).ok_or(Error::HeapUnavailable { bytes: heap })?,
        ),
    };
    Ok(Stack::new(backend, parsed.limit, spec.trim().to_string()))
}

/// Serializes installs (never taken on an allocation path).
static INSTALL: Mutex<()> = Mutex::new(());

/// Install the allocator named by `spec` into the process's SQLite.
///
/// Must run before SQLite initializes (or after `sqlite3_shutdown()`); otherwise
/// [`Error::AlreadyInitialized`] and nothing changes. A bad spec or a heap that cannot be had also
/// changes nothing. The allocator installed before (if it was sqlalloc's) is retired: freed if it
/// has no live block, otherwise kept forever, since SQLite or the program may still hold its
/// memory.
pub fn install(spec: &str) -> Result<(), Error> {
    let config = sqlite::config_fn().ok_or(Error::NoSqlite)?;
    let stack = Box::new(build(spec)?);
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let table = ffi::methods_table();
    // SAFETY: SQLITE_CONFIG_MALLOC takes a pointer to a sqlite3_mem_methods, which SQLite copies
    // before returning; `table` matches its layout field for field; `config` is sqlite3_config.
    let rc = unsafe { config(sqlite::SQLITE_CONFIG_MALLOC, &table as *const _) };
    match rc {
        sqlite::SQLITE_OK => {}
        sqlite::SQLITE_MISUSE => return Err(Error::AlreadyInitialized),
        other => return Err(Error::ConfigFailed(other)),
    }
    stack.counters().make_primary();
    let old = ffi::CURRENT.swap(Box::into_raw(stack), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: `old` came from Box::into_raw in an earlier install and was just swapped out,
        // so this is its only owner.
        let old = unsafe { Box::from_raw(old) };
        if old.stats().current_count != 0 {
            // Its blocks may still be referenced: keep its heap forever.
            std::mem::forget(old);
        }
    }
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

/// The installed allocator, if any.
pub fn installed() -> Option<&'static Stack> {
    ffi::current()
}

/// Snapshot of the installed allocator's counters (`None` when none is installed).
pub fn stats() -> Option<Snapshot> {
    ffi::current().map(|s| s.stats())
}

/// Start a new peak from the current value.
pub fn reset_peak() {
    if let Some(s) = ffi::current() {
        s.counters().reset_peak()
    }
}

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
//! | [`tlsf`](backend::Tlsf) | — | Two-Level Segregated Fit over one fixed heap (O(1), rounding < 1/256) |
//! | `jemalloc` (feature `jemalloc`) | — | jemalloc, sized API: exact `xSize` and `xRoundup`, no header |
//! | `mimalloc` (feature `mimalloc`) | — | mimalloc: exact `xSize` and `xRoundup`, no header |
//! | [`rust`](backend::Rust) | — | the program's `#[global_allocator]` |
//!
//! Over any backend: always-on [`counters`] (cheap, per-thread slots) and an optional
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
pub mod connections;
pub mod counters;
mod error;
pub mod fault;
mod fdtable;
mod ffi;
mod forking;
pub mod heap;
mod installed;
mod lock;
mod marking;
pub mod methods;
pub mod periodic;
#[cfg(feature = "prometheus-client")]
pub mod prometheus_client;
pub mod render;
pub mod report;
pub mod scopes;
pub mod serve;
pub mod spec;
pub mod sqlite;
pub mod stack;
mod stats_alloc;

/// The README's Rust block, compiled and run as a doctest (its other blocks are run by
/// `scripts/readme-test.sh`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

// Unit tests link the machine's SQLite through libsqlite3-sys (the libraries themselves resolve
// SQLite from the host program).
#[cfg(test)]
use libsqlite3_sys as _;

pub use counters::Stats;
pub use error::Error;
pub use fault::{Benign, FaultPlan, FaultSpec, FaultStats};
pub use methods::{InitError, LiveBlock, MemMethods};
pub use scopes::{Scope, ScopeGuard, ScopeInfo, Scopes};
pub use spec::{Backend, Spec, SpecError};
pub use stack::Stack;
pub use stats_alloc::StatsAlloc;

/// Build the allocator a spec names, without installing it (see [`Stack::from_spec`]).
pub fn build(spec: &str) -> Result<Stack, Error> {
    Stack::from_spec(spec)
}

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
    installed::install_spec(spec)
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
    installed::install(Stack::new(Box::new(a), limit, spec))
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
    // SAFETY: the caller's contract is the one of `installed::forget`.
    unsafe { installed::forget() }
}

/// The installed allocator, if any.
pub fn installed() -> Option<&'static Stack> {
    installed::current()
}

/// The counters of SQLite's allocator (the installed one): the same fields as the C
/// `sqlalloc_stats`. All zero when nothing is installed (see [`installed`]).
pub fn stats() -> Stats {
    installed::current().map(|s| s.stats()).unwrap_or_default()
}

/// Serve the installed allocator's reports over HTTP from a background thread: `GET /metrics`
/// (Prometheus text exposition format 0.0.4, the `sqlite_memory_*` families of
/// [`report::families`]) and `GET /stats.json` (the JSON report). `addr` is `[HOST:]PORT`; the
/// host defaults to 127.0.0.1, any other address only when written out; port 0 picks a free port.
/// Returns the address bound. See [`serve`](mod@serve) for what the thread guarantees.
///
/// Errors: [`Error::BadAddress`], [`Error::CannotListen`], [`Error::AlreadyServing`].
pub fn serve(addr: &str) -> Result<std::net::SocketAddr, Error> {
    serve::serve(addr)
}

/// For tests of the fallback only: background threads started after this call share the
/// program's descriptor table, as where `unshare(CLONE_FILES)` is refused (see `src/fdtable.rs`).
#[doc(hidden)]
pub fn __share_descriptor_table_for_tests() {
    fdtable::FORCE_SHARED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Rewrite the report `target` (`json:PATH` or `prometheus:PATH`, `%p` for the process id) every
/// `seconds` seconds from a background thread, each time whole and atomically (a new file renamed
/// over the path). What the preload does for `SQLALLOC_REPORT_INTERVAL`.
///
/// Errors: [`Error::BadReport`] (a bad target or an interval of 0), [`Error::AlreadyReporting`].
pub fn report_every(target: &str, seconds: u64) -> Result<(), Error> {
    periodic::report_every(target, seconds)
}

/// Write the periodic report once more and stop its writer (for an exit hook); `None` when no
/// periodic report runs in this process. See [`report_every`].
pub fn report_final() -> Option<std::io::Result<()>> {
    periodic::final_write()
}

/// The Prometheus text exposition (0.0.4) of the installed allocator, every `sqlite_memory_*`
/// family of the scrape endpoint, to append to a service's own `/metrics` response (empty when
/// nothing is installed):
///
/// ```
/// # use libsqlite3_sys as _;
/// let mut body = String::from("# my service's own metrics\n");
/// body.push_str(&sqlalloc::metrics());
/// ```
pub fn metrics() -> String {
    report::Report::capture_installed()
        .map(|r| r.render(report::Format::Prometheus))
        .unwrap_or_default()
}

/// Show `conn` in every report's per-connection breakdown (`sqlite_connection_bytes{connection=
/// "LABEL",use="cache|schema|stmt"}`) until the returned guard drops. `label` None: the main
/// database's file name (`:memory:` for none); a label in use gets a suffix (`#2`, …). rusqlite
/// opens its connections without a mutex, so a report's reader never reads them itself: call the
/// guard's [`sample`](connections::Tracked::sample) now and then (after a batch of work, say) —
/// reports show each connection's last sample and its age. Feature `rusqlite`.
///
/// Errors: [`Error::AlreadyTracked`] (the preload library tracks every connection already),
/// [`Error::NoSqlite`].
#[cfg(feature = "rusqlite")]
pub fn track<'c>(
    conn: &'c rusqlite::Connection,
    label: Option<&str>,
) -> Result<connections::Tracked<'c>, Error> {
    connections::Tracked::new(conn, label)
}

/// Start a new peak from the current value.
pub fn reset_peak() {
    if let Some(s) = installed::current() {
        s.counters().reset_peak()
    }
}

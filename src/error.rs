//! [`Error`]: why an install was refused. One type for the Rust API ([`crate::install`],
//! [`crate::configure`]) and the C API, which returns [`Error::sqlite_code`] and puts the
//! [`Display`](fmt::Display) text in `sqlalloc_errmsg()`.

use crate::installed;
use crate::spec::SpecError;
use crate::sqlite;
use std::ffi::c_int;
use std::fmt;

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
    /// [`set_sqlite3_config`](crate::set_sqlite3_config) was not called.
    NoSqlite,
    /// `sqlite3_config(SQLITE_CONFIG_MALLOC)` failed with an unexpected result code.
    ConfigFailed(c_int),
    /// The heap of a `memsys3`/`memsys5`/`tlsf` backend could not be allocated.
    HeapUnavailable {
        /// The size asked for, in bytes.
        bytes: usize,
    },
    /// A scrape-endpoint address ([`crate::serve()`], `SQLALLOC_LISTEN`) that does not parse.
    BadAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint's address parsed but cannot be listened on (the port is in use, say).
    CannotListen {
        /// The address.
        addr: String,
        /// The system's reason.
        reason: String,
    },
    /// [`crate::serve()`] was called while this process serves already.
    AlreadyServing {
        /// The address served.
        addr: String,
    },
    /// A bad periodic report ([`crate::report_every`]): its target or its interval.
    BadReport {
        /// The offending value.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// [`crate::report_every`] was called while a periodic report runs already.
    AlreadyReporting,
    /// A connection handle that is NULL or not tracked (`sqlalloc_untrack`, `sqlalloc_sample`).
    UnknownConnection,
    /// A connection tracked already (by the preload library, or an earlier `track`).
    AlreadyTracked,
    /// A scope was refused ([`crate::Scope::create`]): an empty or duplicate name, a bad cap.
    BadScope {
        /// What is wrong, naming the scope.
        reason: String,
    },
    /// The installed allocator has no `scopes` layer (or nothing is installed).
    NoScopes,
    /// The `scopes` layer holds `max` scopes already.
    ScopesFull {
        /// Most scopes the layer holds (the default one included).
        max: usize,
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
            Error::BadAddress { .. } | Error::CannotListen { .. } | Error::BadReport { .. } => {
                sqlite::SQLITE_ERROR
            }
            Error::AlreadyServing { .. } | Error::AlreadyReporting => sqlite::SQLITE_MISUSE,
            Error::UnknownConnection | Error::AlreadyTracked => sqlite::SQLITE_MISUSE,
            Error::BadScope { .. } => sqlite::SQLITE_ERROR,
            Error::NoScopes => sqlite::SQLITE_MISUSE,
            Error::ScopesFull { .. } => sqlite::SQLITE_FULL,
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
                installed::MAX_RETIRED
            ),
            Error::HeapUnavailable { bytes } => write!(f, "cannot allocate a heap of {bytes} bytes"),
            Error::NoSqlite => f.write_str("no sqlite3_config to call (SQLite not loaded?)"),
            Error::ConfigFailed(rc) => {
                write!(f, "sqlite3_config(SQLITE_CONFIG_MALLOC) failed with code {rc}")
            }
            Error::BadAddress { reason, .. } => write!(f, "bad listen address {reason}"),
            Error::CannotListen { addr, reason } => write!(f, "cannot listen on {addr}: {reason}"),
            Error::AlreadyServing { addr } => write!(f, "already serving on {addr}"),
            Error::BadReport { what, reason } => {
                write!(f, "bad periodic report '{what}': {reason}")
            }
            Error::AlreadyReporting => f.write_str("a periodic report is already being written"),
            Error::UnknownConnection => f.write_str("the connection is NULL or not tracked"),
            Error::AlreadyTracked => f.write_str("the connection is tracked already"),
            Error::BadScope { reason } => write!(f, "bad scope: {reason}"),
            Error::NoScopes => f.write_str(
                "no scopes layer installed (add '+scopes' to the spec, e.g. 'system+scopes')",
            ),
            Error::ScopesFull { max } => write!(
                f,
                "the scopes layer is full: it holds {max} scopes (the default one included)"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Self {
        Error::BadSpec(e)
    }
}

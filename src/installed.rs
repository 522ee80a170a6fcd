//! The installed allocator: the process-wide state behind SQLite's `sqlite3_mem_methods`, and
//! the one path that installs an allocator into SQLite.
//!
//! SQLite's `xMalloc` has no context argument, so the functions of the methods table find the
//! allocator through a global: [`CURRENT`], the installed [`Stack`]. Both faces of the crate use
//! this module and nothing else to reach it: the Rust API (`src/lib.rs`: [`crate::install`],
//! [`crate::stats`], …) and the C API (`src/ffi/`: `sqlalloc_install`, `sqlalloc_get_stats`, …).
//!
//! # The route of an install
//!
//! [`install_spec`]`(spec)` → [`Stack::from_spec`] (which parses the spec with
//! [`Spec::parse`](crate::spec::Spec::parse) and builds the backend and its layers) →
//! [`install`]`(stack)`, which hands SQLite the [methods table](methods_table) with
//! `SQLITE_CONFIG_MALLOC` and, once SQLite has accepted it, makes the stack [`CURRENT`].
//! [`crate::configure`] enters at [`install`] with a stack over the program's own allocator.
//!
//! # Retired allocators
//!
//! A re-install (after `sqlite3_shutdown()`) frees the old stack only when it owns no block. If
//! SQLite or the program still holds some of its memory, the old stack is *retired* instead: kept
//! for the rest of the process in [`RETIRED`], and every `xFree`, `xSize` or `xRealloc` of one of
//! its blocks is routed back to it ([`owner`], through [`MemMethods::owns`]); a realloc moves the
//! block into the installed allocator. At most [`MAX_RETIRED`] are kept.
//!
//! # Locks
//!
//! The methods table takes no lock: it loads [`CURRENT`] (and, only while some allocator is
//! retired, the retired list) with acquire loads. [`INSTALL`] serializes installs and is never
//! taken on an allocation path.

use crate::error::Error;
use crate::fault;
use crate::methods::MemMethods;
use crate::sqlite::{self, Sqlite3MemMethods};
use crate::stack::{kind, Stack};
use std::ffi::{c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The installed stack that the methods table dispatches to (SQLite's `xMalloc` has no context
/// argument). Null before the first install. Only [`install`] stores into it, under its
/// lock, after `sqlite3_config` accepted the table (so SQLite is not initialized at that moment).
static CURRENT: AtomicPtr<Stack> = AtomicPtr::new(std::ptr::null_mut());

/// The installed stack, if any.
#[inline]
pub(crate) fn current() -> Option<&'static Stack> {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: CURRENT holds null or a pointer from `Box::into_raw` of a Stack that is freed only
    // after being swapped out while SQLite is not initialized and none of its blocks is live
    // (otherwise it is retired and kept forever; see [`install`]); SQLite calls the table
    // only while initialized or on live blocks.
    unsafe { p.as_ref() }
}

/// Most allocators that can be retired with live blocks (see [`retire`]); one more re-install
/// with blocks still live gets `Error::AlreadyInstalled`.
pub(crate) const MAX_RETIRED: usize = 32;

/// Allocators replaced by a re-install while some of their blocks were still live (SQLite or the
/// program may still hold memory they handed out, e.g. a string from `sqlite3_mprintf` kept
/// across `sqlite3_shutdown()`). They are never freed; the methods table sends each `xFree`,
/// `xRealloc` and `xSize` of one of their blocks back to them ([`owner`]). The first
/// `RETIRED_LEN` entries are set, oldest first.
static RETIRED: [AtomicPtr<Stack>; MAX_RETIRED] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_RETIRED];
static RETIRED_LEN: AtomicUsize = AtomicUsize::new(0);

/// Number of retired allocators.
fn retired_len() -> usize {
    RETIRED_LEN.load(Ordering::Acquire)
}

/// Keep `s` for the rest of the process and route its blocks back to it. Returns false (and
/// keeps nothing) when [`MAX_RETIRED`] allocators are retired already. Called under the install
/// lock.
fn retire(s: &'static Stack) -> bool {
    let n = RETIRED_LEN.load(Ordering::Acquire);
    if n == MAX_RETIRED {
        return false;
    }
    RETIRED[n].store(s as *const Stack as *mut Stack, Ordering::Release);
    RETIRED_LEN.store(n + 1, Ordering::Release);
    true
}

/// Whether `s` is one of the retired allocators.
fn is_retired(s: *const Stack) -> bool {
    RETIRED[..retired_len()]
        .iter()
        .any(|r| std::ptr::eq(r.load(Ordering::Acquire), s))
}

/// The allocator that handed out block `p`: the installed one unless allocators were retired
/// with live blocks, in which case the first that claims `p` (see [`MemMethods::owns`]), else the
/// first that cannot tell, else the installed one.
#[inline]
fn owner(p: NonNull<u8>) -> Option<&'static Stack> {
    let cur = current()?;
    match RETIRED_LEN.load(Ordering::Acquire) {
        0 => Some(cur),
        n => Some(owner_among_retired(cur, p, n)),
    }
}

#[cold]
fn owner_among_retired(cur: &'static Stack, p: NonNull<u8>, n: usize) -> &'static Stack {
    let mut unsure = None;
    match cur.owns(p) {
        Some(true) => return cur,
        None => unsure = Some(cur),
        Some(false) => {}
    }
    for slot in RETIRED[..n].iter().rev() {
        // SAFETY: the first RETIRED_LEN slots hold pointers from `retire`, i.e. `&'static Stack`s.
        let Some(r) = (unsafe { slot.load(Ordering::Acquire).as_ref() }) else {
            continue;
        };
        match r.owns(p) {
            Some(true) => return r,
            None if unsure.is_none() => unsure = Some(r),
            _ => {}
        }
    }
    unsure.unwrap_or(cur)
}

fn to_int(n: usize) -> c_int {
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn x_malloc<const K: u8>(n: c_int) -> *mut c_void {
    let (Some(s), Ok(n)) = (current(), usize::try_from(n)) else {
        return std::ptr::null_mut();
    };
    s.malloc_as::<K>(n)
        .map_or(std::ptr::null_mut(), |p| p.as_ptr().cast())
}

unsafe extern "C" fn x_free<const K: u8>(p: *mut c_void) {
    let Some(p) = NonNull::new(p.cast::<u8>()) else {
        return;
    };
    if let Some(s) = owner(p) {
        // SAFETY: SQLite only frees blocks this table handed out, and `owner` found the
        // allocator that did.
        unsafe { s.free_as::<K>(p) }
    }
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    let (Some(cur), Ok(n)) = (current(), usize::try_from(n)) else {
        return std::ptr::null_mut();
    };
    let r = match NonNull::new(p.cast::<u8>()) {
        None => cur.malloc(n),
        Some(p) => match owner(p) {
            // SAFETY: SQLite only reallocates blocks this table handed out; `cur` did.
            Some(s) if std::ptr::eq(s, cur) => unsafe { cur.realloc(p, n) },
            // SAFETY: a block of a retired allocator `s`: it moves to the installed one.
            Some(s) => unsafe { migrate(s, cur, p, n) },
            None => None,
        },
    };
    r.map_or(std::ptr::null_mut(), |p| p.as_ptr().cast())
}

/// Realloc of a block of a retired allocator: a new block from the installed one, the contents
/// copied, the old block freed. On failure the old block is untouched.
///
/// # Safety
/// `p` is a live block of `old`.
unsafe fn migrate(old: &Stack, cur: &Stack, p: NonNull<u8>, n: usize) -> Option<NonNull<u8>> {
    let q = cur.malloc(n)?;
    // SAFETY: `p` is live in `old` (caller's contract).
    let keep = unsafe { old.size(p) }.min(n);
    // SAFETY: `p` has at least `keep` readable bytes, `q` at least `n >= keep` writable ones, and
    // two live blocks do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), q.as_ptr(), keep) };
    // SAFETY: `p` is live in `old` and replaced by `q`.
    unsafe { old.free(p) };
    Some(q)
}

unsafe extern "C" fn x_size<const K: u8>(p: *mut c_void) -> c_int {
    match NonNull::new(p.cast::<u8>()).and_then(|p| owner(p).map(|s| (s, p))) {
        // SAFETY: SQLite only asks the size of live blocks this table handed out; `owner`
        // found the allocator that did.
        Some((s, p)) => to_int(unsafe { s.size_as::<K>(p) }),
        None => 0,
    }
}

unsafe extern "C" fn x_roundup<const K: u8>(n: c_int) -> c_int {
    match (current(), usize::try_from(n)) {
        (Some(s), Ok(n)) => to_int(s.roundup_as::<K>(n)),
        _ => n,
    }
}

unsafe extern "C" fn x_init(_app: *mut c_void) -> c_int {
    match current().map(|s| s.init()) {
        Some(Ok(())) => sqlite::SQLITE_OK,
        Some(Err(crate::methods::InitError::NoMem)) => sqlite::SQLITE_NOMEM,
        _ => sqlite::SQLITE_ERROR,
    }
}

unsafe extern "C" fn x_shutdown(_app: *mut c_void) {
    if let Some(s) = current() {
        s.shutdown()
    }
}

/// The methods table for `SQLITE_CONFIG_MALLOC`, with `xMalloc`, `xFree`, `xSize` and
/// `xRoundup` specialised for a backend of kind `kind` (see [`crate::stack::kind`]; any table
/// works with any stack, the specialised one is faster for its kind). SQLite copies the table;
/// the functions find the installed stack through [`CURRENT`].
pub(crate) fn methods_table(kind: u8) -> Sqlite3MemMethods {
    match kind {
        kind::SYSTEM => table_for::<{ kind::SYSTEM }>(),
        kind::MEMSYS5 => table_for::<{ kind::MEMSYS5 }>(),
        kind::TLSF => table_for::<{ kind::TLSF }>(),
        kind::SCOPED_SYSTEM => table_for::<{ kind::SCOPED_SYSTEM }>(),
        kind::SCOPED_MEMSYS5 => table_for::<{ kind::SCOPED_MEMSYS5 }>(),
        kind::DYN => table_for::<{ kind::DYN }>(),
        _ => table_for::<{ kind::ANY }>(),
    }
}

fn table_for<const K: u8>() -> Sqlite3MemMethods {
    Sqlite3MemMethods {
        x_malloc: Some(x_malloc::<K>),
        x_free: Some(x_free::<K>),
        x_realloc: Some(x_realloc),
        x_size: Some(x_size::<K>),
        x_roundup: Some(x_roundup::<K>),
        x_init: Some(x_init),
        x_shutdown: Some(x_shutdown),
        p_app_data: std::ptr::null_mut(),
    }
}

/// Serializes installs (never taken on an allocation path).
static INSTALL: Mutex<()> = Mutex::new(());

/// Install the allocator named by `spec`: parse it, build the stack, [`install`] it. The one
/// route of `sqlalloc_install` and [`crate::install`].
pub(crate) fn install_spec(spec: &str) -> Result<(), Error> {
    install(Stack::from_spec(spec)?)
}

/// Install `stack` into SQLite and make it [`CURRENT`]. The one install path of every face
/// ([`install_spec`], [`crate::configure`]). Refused, with nothing changed, when SQLite is
/// initialized ([`Error::AlreadyInitialized`]) or when the installed allocator owns live blocks
/// and [`MAX_RETIRED`] are retired already ([`Error::AlreadyInstalled`]).
pub(crate) fn install(stack: Stack) -> Result<(), Error> {
    let config = sqlite::config_fn().ok_or(Error::NoSqlite)?;
    let stack = Box::new(stack);
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    // Checked before SQLite is asked, so that a refusal leaves SQLite's configuration as it was
    // (another allocator, e.g. a fault simulator wrapping ours, may be configured by now).
    if let Some(old) = current() {
        let live_blocks = old.stats().current_count;
        if live_blocks != 0 && retired_len() == MAX_RETIRED {
            // Which refusal applies? SQLITE_CONFIG_GETMALLOC is refused while SQLite is
            // initialized and otherwise only reads the configured table (never empty here: ours,
            // or something wrapping it, is configured), so asking changes nothing.
            let mut probe = methods_table(stack.kind());
            // SAFETY: SQLITE_CONFIG_GETMALLOC writes one sqlite3_mem_methods through the pointer,
            // which points to a value of exactly that layout.
            let rc = unsafe { config(sqlite::SQLITE_CONFIG_GETMALLOC, &mut probe as *mut _) };
            if rc == sqlite::SQLITE_MISUSE {
                return Err(Error::AlreadyInitialized);
            }
            return Err(Error::AlreadyInstalled { live_blocks });
        }
    }
    let table = methods_table(stack.kind());
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
    if let Some(old) = current() {
        if old.stats().current_count != 0 {
            retire(old);
        }
    }
    let old = CURRENT.swap(Box::into_raw(stack), Ordering::AcqRel);
    if !old.is_null() && !is_retired(old) {
        // SAFETY: `old` came from Box::into_raw in an earlier install and was just swapped out,
        // so this is its only owner; it was not retired, so it owned no block (checked under the
        // install lock, while SQLite is not initialized) and nothing can reach it any more.
        drop(unsafe { Box::from_raw(old) });
    }
    fault::after_install();
    Ok(())
}

/// Forget the installed allocator (see [`crate::forget_installed`]). The stack is leaked, not
/// freed: a block it handed out could still be referenced.
///
/// # Safety
/// SQLite must not be using sqlalloc's methods table any more: another allocator was configured
/// (`SQLITE_CONFIG_MALLOC`) while SQLite was not initialized.
pub(crate) unsafe fn forget() {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    CURRENT.store(std::ptr::null_mut(), Ordering::Release);
}

//! The C ABI: the `sqlite3_mem_methods` table handed to SQLite, and the `sqlalloc_*` functions
//! of `include/sqlalloc.h` (generated from this file by cbindgen).
//!
//! Everything here is a thin layer over [`crate::install`] and the installed [`Stack`]'s
//! [`MemMethods`]. No function here can unwind: they are `extern "C"` (an unwinding panic aborts)
//! and the libraries are built with `panic = "abort"`.

use crate::methods::MemMethods;
use crate::sqlite::{self, Sqlite3MemMethods};
use crate::stack::{kind, Stack};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Counters of the installed allocator, as returned by `sqlalloc_get_stats`. All sizes are bytes
/// as SQLite counts them (the sum of `xSize` over live blocks); all fields are 64-bit.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct sqlalloc_stats {
    /// Bytes in live blocks; equals `sqlite3_memory_used()` while SQLite's memstatus is on.
    pub current_bytes: i64,
    /// Highest `current_bytes` since install or `sqlalloc_reset_peak()` (exact while one thread
    /// allocates; see the README for the bound with several threads).
    pub peak_bytes: i64,
    /// Number of live blocks.
    pub current_count: i64,
    /// Calls of xMalloc.
    pub malloc_calls: i64,
    /// Calls of xFree.
    pub free_calls: i64,
    /// Calls of xRealloc.
    pub realloc_calls: i64,
    /// Calls of xMalloc or xRealloc that returned NULL.
    pub failed_calls: i64,
    /// Largest size requested from xMalloc or xRealloc.
    pub largest_request: i64,
}

impl From<crate::counters::Snapshot> for sqlalloc_stats {
    fn from(s: crate::counters::Snapshot) -> Self {
        sqlalloc_stats {
            current_bytes: s.current_bytes,
            peak_bytes: s.peak_bytes,
            current_count: s.current_count,
            malloc_calls: s.malloc_calls,
            free_calls: s.free_calls,
            realloc_calls: s.realloc_calls,
            failed_calls: s.failed_calls,
            largest_request: s.largest_request,
        }
    }
}

/// The installed stack that the methods table dispatches to (SQLite's `xMalloc` has no context
/// argument). Null before the first install. Only [`crate::install`] stores into it, under its
/// lock, after `sqlite3_config` accepted the table (so SQLite is not initialized at that moment).
pub(crate) static CURRENT: AtomicPtr<Stack> = AtomicPtr::new(std::ptr::null_mut());

/// The installed stack, if any.
#[inline]
pub(crate) fn current() -> Option<&'static Stack> {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: CURRENT holds null or a pointer from `Box::into_raw` of a Stack that is freed only
    // after being swapped out while SQLite is not initialized and none of its blocks is live
    // (otherwise it is retired and kept forever; see `crate::install`); SQLite calls the table
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
pub(crate) fn retired_len() -> usize {
    RETIRED_LEN.load(Ordering::Acquire)
}

/// Keep `s` for the rest of the process and route its blocks back to it. Returns false (and
/// keeps nothing) when [`MAX_RETIRED`] allocators are retired already. Called under the install
/// lock.
pub(crate) fn retire(s: &'static Stack) -> bool {
    let n = RETIRED_LEN.load(Ordering::Acquire);
    if n == MAX_RETIRED {
        return false;
    }
    RETIRED[n].store(s as *const Stack as *mut Stack, Ordering::Release);
    RETIRED_LEN.store(n + 1, Ordering::Release);
    true
}

/// Whether `s` is one of the retired allocators.
pub(crate) fn is_retired(s: *const Stack) -> bool {
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

/// Size of the per-thread message buffer (longer messages are cut at a character boundary).
const ERRMSG_LEN: usize = 512;

thread_local! {
    /// The last message of this thread, NUL-terminated. A fixed buffer that is overwritten in
    /// place, so a pointer from `sqlalloc_errmsg` never dangles (it shows the newest message).
    static ERRMSG: RefCell<[u8; ERRMSG_LEN]> = const { RefCell::new([0; ERRMSG_LEN]) };
}

/// Record the outcome of a C call on this thread and return its result code.
pub(crate) fn set_result(rc: c_int, msg: &str) -> c_int {
    let mut end = msg.len().min(ERRMSG_LEN - 1);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    // A thread being torn down has no message slot; the result code still says what happened.
    let _ = ERRMSG.try_with(|m| {
        let mut m = m.borrow_mut();
        for (d, &b) in m.iter_mut().zip(msg.as_bytes()[..end].iter()) {
            *d = if b == 0 { b'?' } else { b };
        }
        m[end] = 0;
    });
    rc
}

/// Install the allocator named by `spec` (for example `"memsys5:heap=64M,min=64+limit:max=48M"`)
/// into SQLite. Must be called before SQLite initializes (or after `sqlite3_shutdown()`).
///
/// Returns SQLITE_OK; SQLITE_ERROR for a bad spec (nothing is installed, `sqlalloc_errmsg()` names
/// the offending part); SQLITE_MISUSE when SQLite is already initialized (nothing changes) or
/// `spec` is NULL; SQLITE_NOMEM when a heap cannot be had.
///
/// # Safety
/// `spec` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_install(spec: *const c_char) -> c_int {
    if spec.is_null() {
        return set_result(sqlite::SQLITE_MISUSE, "sqlalloc_install: spec is NULL");
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let spec = unsafe { CStr::from_ptr(spec) };
    let Ok(spec) = spec.to_str() else {
        return set_result(sqlite::SQLITE_ERROR, "bad spec: not valid UTF-8");
    };
    match crate::install(spec) {
        Ok(()) => set_result(sqlite::SQLITE_OK, ""),
        Err(e) => set_result(e.sqlite_code(), &e.to_string()),
    }
}

/// Why the last sqlalloc call on this thread failed, in one line; "" when it did not. The
/// pointer stays valid for the life of the thread; its text is replaced by the next sqlalloc call
/// on the same thread.
#[no_mangle]
pub extern "C" fn sqlalloc_errmsg() -> *const c_char {
    static EMPTY: &CStr = c"";
    ERRMSG
        .try_with(|m| RefCell::as_ptr(m).cast::<c_char>().cast_const())
        .unwrap_or(EMPTY.as_ptr())
}

/// Write a snapshot of the installed allocator's counters to `*out`.
///
/// Returns SQLITE_OK; SQLITE_MISUSE when `out` is NULL; SQLITE_ERROR when no sqlalloc allocator
/// has been installed (`*out` is not written).
///
/// # Safety
/// `out` must be NULL or point to writable memory for one `sqlalloc_stats`.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_get_stats(out: *mut sqlalloc_stats) -> c_int {
    let Some(out) = NonNull::new(out) else {
        return set_result(sqlite::SQLITE_MISUSE, "sqlalloc_get_stats: out is NULL");
    };
    let Some(s) = current() else {
        return set_result(sqlite::SQLITE_ERROR, "no sqlalloc allocator is installed");
    };
    // SAFETY: `out` is non-null and writable by the caller's contract.
    unsafe { out.as_ptr().write(s.stats().into()) };
    set_result(sqlite::SQLITE_OK, "")
}

/// Start a new peak (`peak_bytes`) from the current value. No effect when nothing is installed.
#[no_mangle]
pub extern "C" fn sqlalloc_reset_peak() {
    if let Some(s) = current() {
        s.counters().reset_peak();
    }
}

/// The spec of the installed allocator (normalized), or "" when none is installed. The string
/// stays valid until the next `sqlalloc_install` call.
#[no_mangle]
pub extern "C" fn sqlalloc_installed_spec() -> *const c_char {
    static EMPTY: &CStr = c"";
    current().map_or(EMPTY.as_ptr(), |s| s.spec_c().as_ptr())
}

/// Write the list of live blocks (address, requested size, backtrace when the `debug` backend
/// keeps one) to file descriptor `fd`, one line each, after a summary line. Only the `debug`
/// backend tracks blocks; for other backends only the summary line is written.
///
/// Returns the number of live blocks listed, or -1 when nothing is installed or writing failed.
#[no_mangle]
pub extern "C" fn sqlalloc_leak_report(fd: c_int) -> i64 {
    let Some(s) = current() else {
        set_result(sqlite::SQLITE_ERROR, "no sqlalloc allocator is installed");
        return -1;
    };
    let mut out = crate::report::FdWriter(fd);
    match crate::report::write_leaks(s, &mut out) {
        Ok(n) => {
            set_result(sqlite::SQLITE_OK, "");
            n as i64
        }
        Err(e) => {
            set_result(sqlite::SQLITE_ERROR, &format!("sqlalloc_leak_report: {e}"));
            -1
        }
    }
}

//! The result convention of every C function: a SQLite result code, and the reason in a
//! per-thread message that `sqlalloc_errmsg()` returns. Also the small helpers that read the
//! arguments every function checks (C strings, out-pointers), so each check and its message is
//! written once.

use crate::installed;
use crate::sqlite;
use crate::stack::Stack;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr};
use std::ptr::NonNull;

/// Size of the per-thread message buffer (longer messages are cut at a character boundary).
const ERRMSG_LEN: usize = 512;

thread_local! {
    /// The last message of this thread, NUL-terminated. A fixed buffer that is overwritten in
    /// place, so a pointer from `sqlalloc_errmsg` never dangles (it shows the newest message).
    static ERRMSG: RefCell<[u8; ERRMSG_LEN]> = const { RefCell::new([0; ERRMSG_LEN]) };
}

/// Record the outcome of a C call on this thread and return its result code.
pub(super) fn set_result(rc: c_int, msg: &str) -> c_int {
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

/// Record a success on this thread (an empty message) and return `SQLITE_OK`.
pub(super) fn ok() -> c_int {
    set_result(sqlite::SQLITE_OK, "")
}

/// Record `e` on this thread and return its result code.
pub(super) fn fail(code: c_int, e: impl std::fmt::Display) -> c_int {
    set_result(code, &e.to_string())
}

/// The string argument `arg` of function `func`: `Err(SQLITE_MISUSE)`, recorded, when it is NULL.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string that outlives `'a`.
pub(super) unsafe fn c_str<'a>(p: *const c_char, func: &str, arg: &str) -> Result<&'a CStr, c_int> {
    if p.is_null() {
        return Err(set_result(
            sqlite::SQLITE_MISUSE,
            &format!("{func}: {arg} is NULL"),
        ));
    }
    // SAFETY: non-null, NUL-terminated and alive for 'a by the caller's contract.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// The out-pointer `arg` of function `func`: `Err(SQLITE_MISUSE)`, recorded, when it is NULL.
pub(super) fn out_ptr<T>(p: *mut T, func: &str, arg: &str) -> Result<NonNull<T>, c_int> {
    NonNull::new(p)
        .ok_or_else(|| set_result(sqlite::SQLITE_MISUSE, &format!("{func}: {arg} is NULL")))
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

/// The installed allocator: `Err(SQLITE_ERROR)`, recorded, when there is none.
pub(super) fn require_installed() -> Result<&'static Stack, c_int> {
    installed::current().ok_or_else(not_installed)
}

/// Record that no allocator is installed and return `SQLITE_ERROR`.
pub(super) fn not_installed() -> c_int {
    set_result(sqlite::SQLITE_ERROR, "no sqlalloc allocator is installed")
}

//! Scopes from C: `sqlalloc_scope_create`, `sqlalloc_scope_enter`, `sqlalloc_scope_get_stats`
//! and the `sqlalloc_scope` type. The layer itself (charging, caps, counters) is
//! [`crate::scopes`]'s.

use super::result::{fail, ok, out_ptr, set_result};
use crate::counters::Stats;
use crate::error::Error;
use crate::scopes::{self, Scopes};
use crate::{installed, sqlite};
use std::ffi::{c_char, c_int, CStr};

/// A scope of the installed `scopes` layer: 0 is the default scope, always there; others come
/// from `sqlalloc_scope_create`.
#[allow(non_camel_case_types)]
pub type sqlalloc_scope = i32;

/// The installed scopes layer, or the error every function reports without one.
fn layer() -> Result<&'static Scopes, Error> {
    installed::current()
        .and_then(|s| s.scopes())
        .ok_or(Error::NoScopes)
}

/// Create a scope named `name` with a cap of `max_bytes` bytes (0: no cap) in the installed
/// allocator's `scopes` layer (`+scopes` in the spec), and write its id to `*out`.
///
/// Returns SQLITE_OK; SQLITE_ERROR for a NULL, empty, non-UTF-8 or duplicate name or a negative
/// cap (`sqlalloc_errmsg()` says which); SQLITE_MISUSE when `out` is NULL or the installed
/// allocator has no `scopes` layer (or nothing is installed); SQLITE_FULL when the layer holds
/// all the scopes it can (the message says how many). `*out` is written only on success.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string; `out` NULL or writable for one
/// `sqlalloc_scope`.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_scope_create(
    name: *const c_char,
    max_bytes: i64,
    out: *mut sqlalloc_scope,
) -> c_int {
    const F: &str = "sqlalloc_scope_create";
    if name.is_null() {
        return set_result(sqlite::SQLITE_ERROR, &format!("{F}: name is NULL"));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract; used only during this call.
    let Ok(name) = unsafe { CStr::from_ptr(name) }.to_str() else {
        return set_result(
            sqlite::SQLITE_ERROR,
            &format!("{F}: the name is not valid UTF-8"),
        );
    };
    let Ok(max) = u64::try_from(max_bytes) else {
        return fail(
            sqlite::SQLITE_ERROR,
            format_args!("{F}: scope '{name}': negative cap {max_bytes} (0 means no cap)"),
        );
    };
    let out = match out_ptr(out, F, "out") {
        Ok(p) => p,
        Err(rc) => return rc,
    };
    let created = layer().and_then(|l| l.create(name, (max != 0).then_some(max)));
    match created {
        Ok(id) => {
            // SAFETY: `out` is non-null and writable by the caller's contract. `id` is below
            // MAX_SCOPES, so it fits.
            unsafe { out.as_ptr().write(id as sqlalloc_scope) };
            ok()
        }
        Err(e) => fail(e.sqlite_code(), format_args!("{F}: {e}")),
    }
}

/// Make `s` the calling thread's scope: every block this thread allocates from now on is
/// charged to it. Returns the previous scope (pass it back to restore it), or -1 and no change
/// when the installed layer has no scope `s` (0 is always accepted, with or without a layer).
#[no_mangle]
pub extern "C" fn sqlalloc_scope_enter(s: sqlalloc_scope) -> sqlalloc_scope {
    match scopes::enter_id(i64::from(s)) {
        Some(prev) => {
            ok();
            prev as sqlalloc_scope
        }
        None => {
            let n = layer().map_or(0, |l| l.len());
            fail(
                sqlite::SQLITE_ERROR,
                format_args!(
                    "sqlalloc_scope_enter: unknown scope {s} (the installed layer has {n})"
                ),
            );
            -1
        }
    }
}

/// Write the counters of scope `s`, read now, to `*out` (the fields of `sqlalloc_stats`, as
/// `sqlalloc_get_stats` fills them for the whole allocator; `sqlalloc_reset_peak` does not reset a
/// scope's peak).
///
/// Returns SQLITE_OK; SQLITE_MISUSE when `out` is NULL or there is no `scopes` layer;
/// SQLITE_ERROR for an unknown `s` (`*out` is not written).
///
/// # Safety
/// `out` must be NULL or point to writable memory for one `sqlalloc_stats`.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_scope_get_stats(s: sqlalloc_scope, out: *mut Stats) -> c_int {
    const F: &str = "sqlalloc_scope_get_stats";
    let out = match out_ptr(out, F, "out") {
        Ok(p) => p,
        Err(rc) => return rc,
    };
    let l = match layer() {
        Ok(l) => l,
        Err(e) => return fail(e.sqlite_code(), format_args!("{F}: {e}")),
    };
    let Some(st) = usize::try_from(s).ok().and_then(|i| l.stats(i)) else {
        return fail(
            sqlite::SQLITE_ERROR,
            format_args!(
                "{F}: unknown scope {s} (the installed layer has {})",
                l.len()
            ),
        );
    };
    // SAFETY: `out` is non-null and writable by the caller's contract.
    unsafe { out.as_ptr().write(st) };
    ok()
}

//! The `fault` layer from C: `sqlalloc_fault_arm`, `_arm_every`, `_arm_random`, `_disarm`,
//! `_injected`, `_get_stats` (and the `sqlalloc_fault_stats` struct it fills),
//! `_benign_begin`, `_benign_end`. The layer itself, its plans and its counting are
//! [`crate::fault`]'s.

use super::result::{fail, ok, out_ptr, set_result};
use crate::fault::{self, FaultError};
use crate::sqlite;
use std::ffi::c_int;

/// What the `fault` layer counted since it was last armed (see `sqlalloc_fault_get_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct sqlalloc_fault_stats {
    /// Counted xMalloc/xRealloc calls (steps) since the last arm.
    pub calls: i64,
    /// Failures injected since the last arm (benign ones included).
    pub injected: i64,
    /// Of those, failures inside a benign region.
    pub benign_injected: i64,
    /// 1 while a plan is armed, 0 when disarmed.
    pub armed: c_int,
    /// 1 when SQLite's benign-malloc hooks are registered, else 0.
    pub hooks: c_int,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn c_result(r: Result<(), FaultError>) -> c_int {
    match r {
        Ok(()) => ok(),
        Err(e) => fail(e.sqlite_code(), e),
    }
}

/// Arm the installed allocator's fault layer: steps (xMalloc/xRealloc calls) are counted from
/// zero again, step `nth` fails (1: the very next call) and `repeat - 1` more after it
/// (`repeat` 0: every step from `nth` on).
///
/// Returns SQLITE_OK; SQLITE_MISUSE when `nth < 1` or `repeat < 0`; SQLITE_ERROR when nothing is
/// installed or the installed spec has no `+fault` layer. `sqlalloc_errmsg()` says why.
#[no_mangle]
pub extern "C" fn sqlalloc_fault_arm(nth: i64, repeat: i64) -> c_int {
    let (Ok(nth), Ok(repeat)) = (u64::try_from(nth), u64::try_from(repeat)) else {
        return set_result(
            sqlite::SQLITE_MISUSE,
            &format!("sqlalloc_fault_arm: nth must be >= 1 and repeat >= 0 (got {nth}, {repeat})"),
        );
    };
    c_result(fault::arm(fault::FaultPlan::Nth { nth, repeat }))
}

/// Arm the fault layer so that steps `every`, 2*`every`, 3*`every`, ... fail, counting from zero.
///
/// Returns SQLITE_OK; SQLITE_MISUSE when `every < 1`; SQLITE_ERROR as `sqlalloc_fault_arm`.
#[no_mangle]
pub extern "C" fn sqlalloc_fault_arm_every(every: i64) -> c_int {
    let Ok(n) = u64::try_from(every) else {
        return set_result(
            sqlite::SQLITE_MISUSE,
            &format!("sqlalloc_fault_arm_every: every must be >= 1 (got {every})"),
        );
    };
    c_result(fault::arm(fault::FaultPlan::Every(n)))
}

/// Arm the fault layer with seeded random failures: each step fails with probability `rate`
/// (0.0 to 1.0), decided by a deterministic hash of `seed` and the step number, so a run can be
/// repeated exactly.
///
/// Returns SQLITE_OK; SQLITE_MISUSE when `rate` is outside 0..1 or NaN; SQLITE_ERROR as
/// `sqlalloc_fault_arm`.
#[no_mangle]
pub extern "C" fn sqlalloc_fault_arm_random(seed: u64, rate: f64) -> c_int {
    let Some(plan) = fault::FaultPlan::random(seed, rate) else {
        return set_result(
            sqlite::SQLITE_MISUSE,
            &format!("sqlalloc_fault_arm_random: rate must be from 0.0 to 1.0 (got {rate})"),
        );
    };
    c_result(fault::arm(plan))
}

/// Stop injecting failures. The counts since the last arm stay readable.
///
/// Returns SQLITE_OK; SQLITE_ERROR when nothing is installed or there is no fault layer.
#[no_mangle]
pub extern "C" fn sqlalloc_fault_disarm() -> c_int {
    c_result(fault::disarm())
}

/// Failures injected since the fault layer was last armed, or -1 when nothing is installed or
/// there is no fault layer (`sqlalloc_errmsg()` says which).
#[no_mangle]
pub extern "C" fn sqlalloc_fault_injected() -> i64 {
    match fault::injected() {
        Ok(n) => {
            ok();
            to_i64(n)
        }
        Err(e) => {
            fail(e.sqlite_code(), e);
            -1
        }
    }
}

/// Write what the fault layer counted since it was last armed to `*out`.
///
/// Returns SQLITE_OK; SQLITE_MISUSE when `out` is NULL; SQLITE_ERROR when nothing is installed or
/// there is no fault layer (`*out` is not written).
///
/// # Safety
/// `out` must be NULL or point to writable memory for one `sqlalloc_fault_stats`.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_fault_get_stats(out: *mut sqlalloc_fault_stats) -> c_int {
    let out = match out_ptr(out, "sqlalloc_fault_get_stats", "out") {
        Ok(p) => p,
        Err(rc) => return rc,
    };
    match fault::stats() {
        Ok(s) => {
            let v = sqlalloc_fault_stats {
                calls: to_i64(s.calls),
                injected: to_i64(s.injected),
                benign_injected: to_i64(s.benign_injected),
                armed: c_int::from(s.armed),
                hooks: c_int::from(s.hooks),
            };
            // SAFETY: `out` is non-null and writable by the caller's contract.
            unsafe { out.as_ptr().write(v) };
            ok()
        }
        Err(e) => fail(e.sqlite_code(), e),
    }
}

/// Enter a benign region on the calling thread: allocation failures until the matching
/// `sqlalloc_fault_benign_end()` are harmless (with `benign=skip` they are never injected there;
/// with `benign=count` they are, and counted apart). Regions nest. SQLite marks its own regions
/// through its benign-malloc hooks, which sqlalloc registers when a `+fault` spec is installed.
#[no_mangle]
pub extern "C" fn sqlalloc_fault_benign_begin() {
    fault::benign_begin()
}

/// Leave the innermost benign region of the calling thread (no effect outside any region).
#[no_mangle]
pub extern "C" fn sqlalloc_fault_benign_end() {
    fault::benign_end()
}

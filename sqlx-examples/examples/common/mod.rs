//! What the sqlx examples share: their error type, their exit status, and the quiescent read of
//! sqlalloc's counters next to `sqlite3_memory_used()`. Each example uses part of it.
#![allow(dead_code)]

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

/// Any error, sendable across tokio tasks.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The exit status of example `name`: success, or failure with `name: FAILED: <why>` on stderr.
pub fn exit_code(name: &str, outcome: Result<(), BoxError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SQLite's `sqlite3_memory_used()`: the bytes SQLite counts as in use by its allocator.
pub fn memory_used() -> i64 {
    // SAFETY: a plain call into the SQLite sqlx links (the same libsqlite3-sys); it takes no
    // argument and only reads SQLite's status counters.
    unsafe { libsqlite3_sys::sqlite3_memory_used() }
}

/// sqlalloc's counters and `sqlite3_memory_used()` read at one moment. sqlx returns a
/// connection to its pool from a task of its own after the query's future has completed, so
/// SQLite may still be busy for a moment: read SQLite's figure before and after the counters
/// until nothing allocated in between and the two agree, for at most a second (a difference
/// that lasts is for the caller to report).
pub async fn counters_and_memory_used() -> (sqlalloc::Stats, i64) {
    let mut last = (sqlalloc::stats(), memory_used());
    for _ in 0..50 {
        let before = memory_used();
        let s = sqlalloc::stats();
        let after = memory_used();
        last = (s, after);
        if before == after && s.current_bytes == after {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

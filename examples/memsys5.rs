//! Zero-malloc operation: SQLite takes all its memory from one fixed 8 MiB heap (`memsys5`,
//! SQLite's power-of-two buddy allocator), allocated once at install. No SQLite allocation
//! reaches libc after that; when the heap is full, SQLite gets `SQLITE_NOMEM` and carries on.
//!
//! ```sh
//! cargo run --example memsys5
//! ```

use rusqlite::{params, Connection, ErrorCode};

const HEAP: i64 = 8 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    sqlalloc::install("memsys5:heap=8M,min=64")?;
    let db = Connection::open_in_memory()?;
    db.execute_batch("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)")?;
    let tx = db.unchecked_transaction()?;
    {
        let mut ins = tx.prepare("INSERT INTO t(v) VALUES (?1)")?;
        for i in 0..5_000 {
            ins.execute(params![format!("value {i:>8}")])?;
        }
    }
    tx.commit()?;
    let n: i64 = db.query_row("SELECT count(DISTINCT v) FROM t", [], |r| r.get(0))?;
    let s = sqlalloc::stats();
    println!(
        "{n} rows: {} allocations served from the {HEAP}-byte heap, {} live ({} bytes), \
         peak {} bytes ({:.1}% of the heap), {} failed",
        s.malloc_calls,
        s.current_count,
        s.current_bytes,
        s.peak_bytes,
        100.0 * s.peak_bytes as f64 / HEAP as f64,
        s.failed_calls
    );
    println!(
        "block sizes are powers of two: a 1000-byte request takes {} bytes, a 4368-byte page {}",
        sqlalloc::installed().map_or(0, |a| sqlalloc::MemMethods::roundup(a, 1000)),
        sqlalloc::installed().map_or(0, |a| sqlalloc::MemMethods::roundup(a, 4368)),
    );

    // Asking for more than the heap holds fails cleanly instead of growing the process.
    match db.query_row(
        "SELECT length(zeroblob(6000000) || zeroblob(6000000))",
        [],
        |r| r.get::<_, i64>(0),
    ) {
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::OutOfMemory) => {
            println!("a 12 MB value does not fit: {e}")
        }
        other => return Err(format!("expected SQLITE_NOMEM, got {other:?}").into()),
    }
    let again: i64 = db.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    println!("and the database is still there: {again} rows");
    Ok(())
}

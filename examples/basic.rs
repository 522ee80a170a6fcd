//! A rusqlite workload with SQLite's memory on sqlalloc's counters and the Rust heap on a
//! [`StatsAlloc`] wrapper: one report shows both heaps side by side.
//!
//! ```sh
//! cargo run --example basic                 # SQLite on libc malloc ("system")
//! cargo run --example basic -- memsys5:heap=16M,min=64
//! ```

use rusqlite::{params, Connection};
use sqlalloc::StatsAlloc;
use std::alloc::System;

/// Every allocation of the Rust side of the program, counted.
#[global_allocator]
static RUST_HEAP: StatsAlloc<System> = StatsAlloc::new(System);

fn sqlite_memory_used() -> i64 {
    // SAFETY: plain SQLite call with no argument.
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

fn print(name: &str, s: &sqlalloc::Stats) {
    println!(
        "{name:<7} malloc {:>7}  free {:>7}  realloc {:>6}  total allocations {:>7}  \
         active {:>5} ({} bytes, peak {} bytes)",
        s.malloc_calls,
        s.free_calls,
        s.realloc_calls,
        s.malloc_calls,
        s.current_count,
        s.current_bytes,
        s.peak_bytes
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "system".into());
    // Before the first connection: SQLite is not initialized yet.
    sqlalloc::install(&spec)?;

    let db = Connection::open_in_memory()?;
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, payload BLOB)")?;
    let tx = db.unchecked_transaction()?;
    {
        let mut ins = tx.prepare("INSERT INTO t(name, payload) VALUES (?1, randomblob(?2))")?;
        for i in 0..10_000 {
            ins.execute(params![format!("name-{i}"), i % 500])?;
        }
    }
    tx.commit()?;
    db.execute_batch("CREATE INDEX t_name ON t(name)")?;
    let names: Vec<String> = db
        .prepare("SELECT name FROM t WHERE id % 1000 = 0 ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let bytes: i64 = db.query_row("SELECT sum(length(payload)) FROM t", [], |r| r.get(0))?;
    println!(
        "workload: 10000 rows, {bytes} blob bytes, {} names read back",
        names.len()
    );

    let sq = sqlalloc::stats();
    let used = sqlite_memory_used();
    println!("allocator: {spec}");
    print("SQLite", &sq);
    print("Rust", &RUST_HEAP.stats());
    println!(
        "proof: sqlalloc counts {} live bytes, sqlite3_memory_used() says {used}: {}",
        sq.current_bytes,
        if sq.current_bytes == used && sq.malloc_calls > 0 {
            "SQLite allocates through sqlalloc"
        } else {
            "MISMATCH: SQLite is not using sqlalloc"
        }
    );

    drop(db);
    let after = sqlalloc::stats();
    println!(
        "after close: SQLite has {} active allocations ({} bytes)",
        after.current_count, after.current_bytes
    );
    println!(
        "{}",
        sqlalloc::render::json(&[("sqlite", after), ("rust", RUST_HEAP.stats())])
    );
    Ok(())
}

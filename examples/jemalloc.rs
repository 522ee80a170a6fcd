//! jemalloc as both the Rust global allocator and SQLite's allocator, and what its exact
//! `xRoundup` buys: SQLite learns the size class each request really gets, and uses the slack.
//!
//! ```sh
//! cargo run --example jemalloc --features jemalloc
//! ```

use rusqlite::{params, Connection};
use sqlalloc::backend::Jemalloc;
use sqlalloc::{MemMethods, StatsAlloc};
use std::ptr::NonNull;

/// The Rust heap: jemalloc, counted.
#[global_allocator]
static RUST_HEAP: StatsAlloc<Jemalloc> = StatsAlloc::new(Jemalloc);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    sqlalloc::install("jemalloc")?;

    println!("request  xRoundup (jemalloc class)  with an 8-byte size header (mem1 without malloc_usable_size)");
    for n in [24usize, 100, 1000, 1024, 1025, 2048, 4096, 4368, 65_536] {
        let with_header = Jemalloc.roundup(n + 8);
        println!(
            "{n:>7}  {:>25}  {:>8} (asks {}, wastes {} bytes)",
            Jemalloc.roundup(n),
            with_header,
            n + 8,
            with_header - n
        );
    }

    // The Rust side really is on jemalloc: sallocx knows this Vec's block.
    let v: Vec<u8> = Vec::with_capacity(1025);
    let p = NonNull::new(v.as_ptr().cast_mut()).ok_or("empty Vec")?;
    // SAFETY: the Vec's buffer was allocated by the global allocator, which is jemalloc, and is
    // live while `v` is.
    let class = unsafe { Jemalloc.size(p) };
    println!("a Vec of capacity 1025 sits in a jemalloc block of {class} bytes");
    drop(v);

    let db = Connection::open_in_memory()?;
    db.execute_batch("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)")?;
    let tx = db.unchecked_transaction()?;
    {
        let mut ins = tx.prepare("INSERT INTO t(v) VALUES (randomblob(?1))")?;
        for i in 0..5_000 {
            ins.execute(params![(i * 7) % 3000])?;
        }
    }
    tx.commit()?;
    let total: i64 = db.query_row("SELECT sum(length(v)) FROM t", [], |r| r.get(0))?;
    let s = sqlalloc::stats();
    // SAFETY: plain SQLite call with no argument.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    println!(
        "SQLite on jemalloc: {total} blob bytes stored; {} allocations, {} live blocks, {} bytes \
         (sqlite3_memory_used() = {used}), peak {}",
        s.malloc_calls, s.current_count, s.current_bytes, s.peak_bytes
    );
    println!(
        "{}",
        sqlalloc::render::prometheus(&[("sqlite", s), ("rust", RUST_HEAP.stats())])
    );
    Ok(())
}

//! jemalloc as both the Rust global allocator and SQLite's allocator under sqlx, and what its
//! exact `xRoundup` gives SQLite: for the request sizes SQLite asks most during a pool workload,
//! the size it asked for and the usable size it got (and may use), beside what an 8-byte size
//! header (SQLite's `mem1.c` where `malloc_usable_size` is missing) would cost on the same
//! jemalloc. Exits non-zero, naming the check, when one fails.
//!
//! ```sh
//! cargo run --manifest-path sqlx-examples/Cargo.toml --example jemalloc --features jemalloc
//! ```

use sqlalloc::backend::Jemalloc;
use sqlalloc::{MemMethods, StatsAlloc};
use sqlx::sqlite::SqlitePoolOptions;
use std::process::ExitCode;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

mod common;
use common::BoxError;

/// The Rust heap (tokio's, sqlx's, this program's): jemalloc, counted.
#[global_allocator]
static RUST_HEAP: StatsAlloc<Jemalloc> = StatsAlloc::new(Jemalloc);

/// Requests up to this many bytes are tallied one by one; larger ones together.
const TALLIED: usize = 16 * 1024;

/// How many times SQLite asked for each size up to [`TALLIED`] bytes (index = size).
static REQUESTS: [AtomicU64; TALLIED + 1] = [const { AtomicU64::new(0) }; TALLIED + 1];
/// Requests above [`TALLIED`] bytes.
static LARGER: AtomicU64 = AtomicU64::new(0);

/// jemalloc for SQLite, tallying the sizes SQLite asks for. A program would simply
/// `sqlalloc::install("jemalloc")`; this example wraps the same backend to learn the sizes.
/// SQLite passes each request to `xRoundup` first and then allocates the size it returns
/// (`malloc.c`, with memory statistics on, their default), so `roundup` sees every request
/// as SQLite made it, and everything else goes to jemalloc unchanged.
struct TallyRequests(Jemalloc);

// SAFETY: every method is `Jemalloc`'s (which keeps the trait's contract) with the same
// arguments; `roundup` only adds a relaxed counter increment, from any thread.
unsafe impl MemMethods for TallyRequests {
    fn name(&self) -> &'static str {
        "jemalloc (request sizes tallied)"
    }
    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        self.0.malloc(size)
    }
    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: `ptr` is a live block of this allocator, i.e. of jemalloc (caller's contract).
        unsafe { self.0.free(ptr) }
    }
    unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        // SAFETY: as in `free`.
        unsafe { self.0.realloc(ptr, new_size) }
    }
    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: as in `free`.
        unsafe { self.0.size(ptr) }
    }
    fn malloc_and_size(&self, size: usize) -> Option<(NonNull<u8>, usize)> {
        self.0.malloc_and_size(size)
    }
    unsafe fn size_and_free(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: as in `free`.
        unsafe { self.0.size_and_free(ptr) }
    }
    fn roundup(&self, size: usize) -> usize {
        match REQUESTS.get(size) {
            Some(c) => c.fetch_add(1, Relaxed),
            None => LARGER.fetch_add(1, Relaxed),
        };
        self.0.roundup(size)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    common::exit_code("jemalloc", run().await)
}

async fn run() -> Result<(), BoxError> {
    // Before the pool, as `install` would be.
    sqlalloc::configure(TallyRequests(Jemalloc)).map_err(|e| format!("configure: {e}"))?;

    // The Rust side really is on jemalloc: sallocx knows this Vec's block, and the block has
    // jemalloc's size class for its capacity.
    let v: Vec<u8> = Vec::with_capacity(1025);
    let p = NonNull::new(v.as_ptr().cast_mut()).ok_or("a Vec with capacity has no buffer")?;
    // SAFETY: the Vec's buffer was allocated by the global allocator, jemalloc, and lives as
    // long as `v`.
    let class = unsafe { Jemalloc.size(p) };
    drop(v);
    if class != Jemalloc.roundup(1025) {
        return Err(format!(
            "a Vec of capacity 1025 sits in a block of {class} bytes, not in jemalloc's class \
             of {}: the global allocator is not jemalloc",
            Jemalloc.roundup(1025)
        )
        .into());
    }
    println!("Rust heap: a Vec of capacity 1025 sits in a jemalloc block of {class} bytes");

    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect("sqlite::memory:")
        .await?;
    sqlx::query("CREATE TABLE t(k INTEGER PRIMARY KEY, task INTEGER, v BLOB)")
        .execute(&pool)
        .await?;
    let mut tasks = Vec::new();
    for task in 0..8i64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50i64 {
                sqlx::query("INSERT INTO t(task, v) VALUES (?1, randomblob(?2))")
                    .bind(task)
                    .bind((task * 50 + i) * 7 % 3000)
                    .execute(&pool)
                    .await?;
            }
            sqlx::query_scalar::<_, i64>("SELECT sum(length(v)) FROM t WHERE task = ?1")
                .bind(task)
                .fetch_one(&pool)
                .await
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&pool)
        .await?;
    if rows != 400 {
        return Err(format!("400 rows inserted, {rows} counted").into());
    }

    let (s, used) = common::counters_and_memory_used().await;
    // Taken before the checks below, which ask SQLite for blocks of their own.
    let tally: Vec<(usize, u64)> = REQUESTS
        .iter()
        .enumerate()
        .map(|(n, c)| (n, c.load(Relaxed)))
        .filter(|&(_, c)| c > 0)
        .collect();
    let larger = LARGER.load(Relaxed);
    println!(
        "SQLite on jemalloc: {rows} rows, {total} blob bytes; {} malloc calls, {} live blocks, \
         {} bytes (sqlite3_memory_used() = {used}), peak {}",
        s.malloc_calls, s.current_count, s.current_bytes, s.peak_bytes
    );
    if s.malloc_calls == 0 || s.current_bytes != used {
        return Err(format!(
            "sqlalloc counts {} live bytes after {} malloc calls, sqlite3_memory_used() says \
             {used}: SQLite is not allocating through sqlalloc",
            s.current_bytes, s.malloc_calls
        )
        .into());
    }
    rounding_table(&tally, larger)?;

    let r = RUST_HEAP.stats();
    println!(
        "Rust heap on jemalloc: {} allocations, {} live blocks, {} bytes, peak {}",
        r.malloc_calls, r.current_count, r.current_bytes, r.peak_bytes
    );
    pool.close().await;
    Ok(())
}

/// The sizes SQLite asked most, what jemalloc gave (read back through SQLite's own
/// `sqlite3_malloc64`/`sqlite3_msize`), and what a size header would have cost.
fn rounding_table(tally: &[(usize, u64)], larger: u64) -> Result<(), BoxError> {
    let requests: u64 = tally.iter().map(|&(_, c)| c).sum::<u64>() + larger;
    if requests == 0 {
        return Err("xRoundup never called: SQLite is not asking sqlalloc".into());
    }
    let mut top = tally.to_vec();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(10);
    println!(
        "SQLite's {requests} requests ({} distinct sizes up to {TALLIED} bytes, {larger} larger); \
         the ten it made most:",
        tally.len()
    );
    println!("request    times   usable (slack SQLite uses)   with an 8-byte header (mem1)");
    for &(n, times) in &top {
        let usable = usable_through_sqlite(n)?;
        if usable != Jemalloc.roundup(n) || usable < n {
            return Err(format!(
                "SQLite got {usable} usable bytes for a {n}-byte request, jemalloc's class is {}",
                Jemalloc.roundup(n)
            )
            .into());
        }
        // mem1.c without malloc_usable_size: 8 bytes of header before round8(n) usable bytes.
        let header_block = Jemalloc.roundup(sqlalloc::methods::round8(n) + 8);
        println!(
            "{n:>7} {times:>8}   {usable:>6} ({:>4})                 {header_block:>6} (asks {}, \
             {} bytes lost)",
            usable - n,
            sqlalloc::methods::round8(n) + 8,
            header_block - sqlalloc::methods::round8(n)
        );
    }
    // Over every tallied request: bytes jemalloc handed out beyond the request (usable by
    // SQLite), and bytes the header scheme would hand out (usable or not).
    let (mut asked, mut given, mut with_header) = (0u64, 0u64, 0u64);
    for &(n, times) in tally {
        asked += n as u64 * times;
        given += Jemalloc.roundup(n) as u64 * times;
        with_header += Jemalloc.roundup(sqlalloc::methods::round8(n) + 8) as u64 * times;
    }
    println!(
        "all tallied requests: {asked} bytes asked; jemalloc's classes hold {given} (+{:.1}%, all \
         of it usable by SQLite); with a header they would take {with_header} (+{:.1}%)",
        percent(given, asked),
        percent(with_header, asked)
    );
    Ok(())
}

fn percent(part: u64, of: u64) -> f64 {
    (part as f64 / of.max(1) as f64 - 1.0) * 100.0
}

/// The usable size SQLite gets for a request of `n` bytes: a block from `sqlite3_malloc64`,
/// measured by `sqlite3_msize` (SQLite's own view of the allocator's `xSize`).
fn usable_through_sqlite(n: usize) -> Result<usize, BoxError> {
    // SAFETY: plain SQLite allocation; the block is freed below and not used otherwise.
    let p = unsafe { libsqlite3_sys::sqlite3_malloc64(n as u64) };
    if p.is_null() {
        return Err(format!("sqlite3_malloc64({n}) failed").into());
    }
    // SAFETY: `p` is a live block from sqlite3_malloc64, freed right after.
    let usable = unsafe { libsqlite3_sys::sqlite3_msize(p) };
    // SAFETY: as above; `p` is not used again.
    unsafe { libsqlite3_sys::sqlite3_free(p) };
    Ok(usable as usize)
}

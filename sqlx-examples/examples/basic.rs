//! sqlx on tokio with SQLite's memory on sqlalloc: install before the pool, run a few hundred
//! inserts and queries from several tasks against a `SqlitePool` on `sqlite::memory:` and one on
//! a file, then show what the allocator saw: calls, live and peak bytes, the request-size
//! histogram, and a check that SQLite really allocated through it (`current_bytes` equals
//! `sqlite3_memory_used()`, calls > 0). Exits non-zero, naming the check, when one fails.
//!
//! ```sh
//! cargo run --manifest-path sqlx-examples/Cargo.toml --example basic
//! cargo run --manifest-path sqlx-examples/Cargo.toml --example basic -- memsys5:heap=32M,min=64
//! ```

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod common;
use common::BoxError;

/// Tasks that write at once, and rows each of them inserts: 400 inserts per pool.
const TASKS: i64 = 8;
const ROWS_PER_TASK: i64 = 50;
/// Connections per pool (sqlx runs each on a thread of its own).
const MAX_CONNECTIONS: u32 = 4;

#[tokio::main]
async fn main() -> ExitCode {
    common::exit_code("basic", run().await)
}

async fn run() -> Result<(), BoxError> {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "system".into());
    // Before the first pool: no connection has initialized SQLite yet.
    sqlalloc::install(&spec).map_err(|e| format!("sqlalloc::install({spec:?}): {e}"))?;
    println!("allocator: {spec}");

    let memory = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect("sqlite::memory:")
        .await?;
    workload(&memory, "sqlite::memory:").await?;

    let file = TempDb::new("basic");
    let options = SqliteConnectOptions::new()
        .filename(&file.0)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let on_disk = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(options)
        .await?;
    workload(&on_disk, &file.0.display().to_string()).await?;

    // Quiescent: every task has returned and the connection threads are idle, with both pools'
    // connections (their page caches and statement caches) still open.
    let (s, used) = common::counters_and_memory_used().await;
    println!(
        "open pools ({} + {} connections):",
        memory.size(),
        on_disk.size()
    );
    print_counters(&s);
    print_histogram(&s)?;
    prove(&s, used)?;

    memory.close().await;
    on_disk.close().await;
    let (s, used) = common::counters_and_memory_used().await;
    println!(
        "after close: {} live blocks, {} bytes (what SQLite keeps outside its connections)",
        s.current_count, s.current_bytes
    );
    prove(&s, used)?;
    Ok(())
}

/// A few hundred inserts and queries from [`TASKS`] tasks at once, each checking what it reads.
async fn workload(pool: &SqlitePool, name: &str) -> Result<(), BoxError> {
    sqlx::query(
        "CREATE TABLE events(id INTEGER PRIMARY KEY, task INTEGER NOT NULL, \
         n INTEGER NOT NULL, payload BLOB NOT NULL)",
    )
    .execute(pool)
    .await?;
    sqlx::query("CREATE INDEX events_task ON events(task)")
        .execute(pool)
        .await?;

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..ROWS_PER_TASK {
                sqlx::query("INSERT INTO events(task, n, payload) VALUES (?1, ?2, randomblob(?3))")
                    .bind(task)
                    .bind(n)
                    .bind(64 + (n * 37) % 900)
                    .execute(&pool)
                    .await?;
                if n % 10 == 9 {
                    let seen: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM events WHERE task = ?1")
                            .bind(task)
                            .fetch_one(&pool)
                            .await?;
                    if seen != n + 1 {
                        return Err(format!(
                            "task {task} reads {seen} of its rows, wrote {}",
                            n + 1
                        )
                        .into());
                    }
                }
            }
            Ok::<(), BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }

    let rows = sqlx::query(
        "SELECT task, count(*) AS rows, sum(length(payload)) AS bytes FROM events \
         GROUP BY task ORDER BY task",
    )
    .fetch_all(pool)
    .await?;
    let mut bytes = 0i64;
    for r in &rows {
        let (task, count): (i64, i64) = (r.try_get("task")?, r.try_get("rows")?);
        if count != ROWS_PER_TASK {
            return Err(
                format!("{name}: task {task} has {count} rows, wrote {ROWS_PER_TASK}").into(),
            );
        }
        bytes += r.try_get::<i64, _>("bytes")?;
    }
    if rows.len() as i64 != TASKS {
        return Err(format!("{name}: {} tasks have rows, {TASKS} wrote", rows.len()).into());
    }
    println!(
        "{name}: {} rows from {TASKS} tasks ({bytes} blob bytes) on {} connections",
        TASKS * ROWS_PER_TASK,
        pool.size()
    );
    Ok(())
}

fn print_counters(s: &sqlalloc::Stats) {
    println!(
        "  calls: malloc {}  free {}  realloc {}  failed {}",
        s.malloc_calls, s.free_calls, s.realloc_calls, s.failed_calls
    );
    println!(
        "  live: {} bytes in {} blocks, peak {} bytes, largest request {} bytes",
        s.current_bytes, s.current_count, s.peak_bytes, s.largest_request
    );
}

/// The request sizes of every `xMalloc` and `xRealloc` so far, by power-of-two bucket; read at
/// the same quiescent moment as `s`, so it holds exactly one entry per call `s` counts.
fn print_histogram(s: &sqlalloc::Stats) -> Result<(), BoxError> {
    let stack = sqlalloc::installed().ok_or("sqlalloc::installed() is None after install")?;
    let hist = stack.counters().histogram();
    let requests: u64 = hist.iter().sum();
    if requests != (s.malloc_calls + s.realloc_calls) as u64 {
        return Err(format!(
            "the histogram holds {requests} requests, the counters {} malloc and {} realloc calls",
            s.malloc_calls, s.realloc_calls
        )
        .into());
    }
    let widest = hist.iter().copied().max().unwrap_or(0).max(1);
    println!("  request size (bytes)      calls");
    for (i, &calls) in hist.iter().enumerate().filter(|&(_, &c)| c > 0) {
        let low = if i == 0 { 0 } else { (1u64 << (i - 1)) + 1 };
        let range = match sqlalloc::report::bucket_le(i) {
            Some(high) if high == low => high.to_string(),
            Some(high) => format!("{low}-{high}"),
            None => format!("{low}+"),
        };
        let bar = "#".repeat((calls * 40).div_ceil(widest) as usize);
        println!("  {range:>20} {calls:>10}  {bar}");
    }
    Ok(())
}

/// The check that SQLite really allocates through sqlalloc: it made calls, and the bytes it
/// counts as used are exactly the bytes sqlalloc counts as live.
fn prove(s: &sqlalloc::Stats, used: i64) -> Result<(), BoxError> {
    if s.malloc_calls == 0 {
        return Err("sqlalloc saw no malloc call: SQLite is not using it".into());
    }
    if s.current_bytes != used {
        return Err(format!(
            "sqlalloc counts {} live bytes but sqlite3_memory_used() says {used}: \
             SQLite is not (only) using sqlalloc",
            s.current_bytes
        )
        .into());
    }
    println!(
        "proof: sqlalloc counts {} live bytes, sqlite3_memory_used() says {used}, after {} \
         malloc calls: SQLite allocates through sqlalloc",
        s.current_bytes, s.malloc_calls
    );
    Ok(())
}

/// A database file in the temporary directory, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> TempDb {
        let path =
            std::env::temp_dir().join(format!("sqlalloc-sqlx-{name}-{}.db", std::process::id()));
        remove_db(&path);
        TempDb(path)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        remove_db(&self.0);
    }
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

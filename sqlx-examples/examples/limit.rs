//! A `SqlitePool` under a hard cap on SQLite's memory (`+limit:max=...`): one oversized query
//! gets `SQLITE_NOMEM` as an ordinary `sqlx::Error::Database` (code "7", "out of memory"), and
//! the pool goes on serving every task. Exits non-zero, naming the check, when one fails.
//!
//! ```sh
//! cargo run --manifest-path sqlx-examples/Cargo.toml --example limit
//! ```

use sqlx::sqlite::SqlitePoolOptions;
use std::process::ExitCode;

mod common;
use common::BoxError;

/// The cap on the bytes SQLite has in use, all connections together.
const CAP: i64 = 16 << 20;
/// The oversized query's blob: four times the cap.
const OVERSIZED: i64 = 64 << 20;

#[tokio::main]
async fn main() -> ExitCode {
    common::exit_code("limit", run().await)
}

async fn run() -> Result<(), BoxError> {
    sqlalloc::install(&format!("system+limit:max={CAP}"))?;
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect("sqlite::memory:")
        .await?;
    sqlx::query("CREATE TABLE kept(x TEXT)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT INTO kept VALUES ('survives')")
        .execute(&pool)
        .await?;

    // One query asks SQLite for a blob four times the cap: the allocation fails at the cap,
    // SQLite returns SQLITE_NOMEM, sqlx turns it into an error like any other.
    let oversized = sqlx::query_scalar::<_, i64>("SELECT length(randomblob(?1))")
        .bind(OVERSIZED)
        .fetch_one(&pool)
        .await;
    match oversized {
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some("7") && e.message() == "out of memory" =>
        {
            println!("oversized query ({OVERSIZED}-byte blob) refused: sqlx::Error::Database: {e}")
        }
        Err(e) => {
            return Err(
                format!("the oversized query failed, but not with SQLITE_NOMEM: {e}").into(),
            )
        }
        Ok(n) => {
            return Err(format!("the oversized query returned {n} under a {CAP}-byte cap").into())
        }
    }
    let s = sqlalloc::stats();
    println!(
        "cap {CAP} bytes: peak {} bytes, now {} bytes, {} refused allocation(s), largest request \
         {} bytes",
        s.peak_bytes, s.current_bytes, s.failed_calls, s.largest_request
    );
    if s.failed_calls < 1 || s.peak_bytes > CAP || s.largest_request < OVERSIZED {
        return Err(format!("the cap did not do its work: {s:?}").into());
    }

    // The pool goes on serving: eight tasks at once, each reading the row kept from before and
    // running a query of its own.
    let mut tasks = Vec::new();
    for task in 0..8i64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let kept: String = sqlx::query_scalar("SELECT x FROM kept")
                .fetch_one(&pool)
                .await?;
            let n: i64 = sqlx::query_scalar(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
                 SELECT count(*) FROM n",
            )
            .bind(1000 + task)
            .fetch_one(&pool)
            .await?;
            if kept != "survives" || n != 1000 + task {
                return Err(format!("task {task} read {kept:?} and {n}").into());
            }
            Ok::<i64, BoxError>(n)
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await??;
    }
    println!(
        "afterwards: 8 tasks read the kept row and counted {rows} rows on {} connection(s); \
         {} bytes in use",
        pool.size(),
        sqlalloc::stats().current_bytes
    );
    pool.close().await;
    Ok(())
}

//! A hard cap on SQLite's memory: a runaway query gets `SQLITE_NOMEM` when it reaches the cap,
//! and the program (and the connection) carry on.
//!
//! ```sh
//! cargo run --example limit
//! ```

use rusqlite::{Connection, ErrorCode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const CAP: i64 = 8 << 20;
    sqlalloc::install("system+limit:max=8M")?;
    let db = Connection::open_in_memory()?;
    db.execute_batch("CREATE TABLE kept(x); INSERT INTO kept VALUES ('survives');")?;

    // No bound: each step doubles a blob, until something stops it (SQLite's own length limit
    // would only refuse it at 1 GB).
    let runaway = "WITH RECURSIVE r(i, b) AS (SELECT 1, randomblob(1000) \
                   UNION ALL SELECT i + 1, b || b FROM r) SELECT max(length(b)) FROM r";
    match db.query_row(runaway, [], |r| r.get::<_, i64>(0)) {
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::OutOfMemory) => {
            println!("runaway query stopped: {e}")
        }
        Err(e) => return Err(e.into()),
        Ok(n) => return Err(format!("the runaway query finished with {n} bytes?").into()),
    }
    let s = sqlalloc::stats();
    println!(
        "cap {CAP} bytes: peak {} bytes, now {} bytes, {} refused allocation(s), largest request {} bytes",
        s.peak_bytes, s.current_bytes, s.failed_calls, s.largest_request
    );
    assert!(s.peak_bytes <= CAP && s.failed_calls >= 1);

    // The connection and the program are fine.
    let v: String = db.query_row("SELECT x FROM kept", [], |r| r.get(0))?;
    let n: i64 = db.query_row(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) \
         SELECT count(*) FROM n",
        [],
        |r| r.get(0),
    )?;
    println!("afterwards: SELECT x -> {v:?}, a bounded query counts {n} rows");
    Ok(())
}

//! A program with rusqlite's `bundled` SQLite compiled in and no sqlalloc call: the preload
//! library cannot reach that SQLite (its symbols are not exported), and says so at exit
//! (preload/tests/live.rs, `says_when_no_sqlite_was_reached`).

fn main() -> rusqlite::Result<()> {
    let db = rusqlite::Connection::open_in_memory()?;
    let v: i64 = db.query_row("select 6 * 7", [], |r| r.get(0))?;
    println!("{v}");
    Ok(())
}

//! The Rust API under rusqlite: every backend built into this test binary is installed in turn
//! (with `sqlite3_shutdown()` between them), runs a real rusqlite workload, and must account for
//! exactly what SQLite counts (`sqlalloc::stats().current_bytes == sqlite3_memory_used()`).
//! Installing once a connection is open must fail with `AlreadyInitialized` and change nothing.
//!
//! One test function: SQLite's configuration is process-wide, so the steps must not run in
//! parallel. The same file is compiled by `tests-bundled/` against rusqlite's `bundled` SQLite.

use rusqlite::{ffi, params, Connection};
use sqlalloc::{Error, MemMethods};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The backends built into this binary (jemalloc and mimalloc only with their features).
fn specs() -> Vec<&'static str> {
    let mut v = vec![
        "system",
        "debug:backtrace=2",
        "memsys3:heap=32M",
        "memsys5:heap=32M,min=32",
        "tlsf:heap=32M",
        "rust",
        "system+limit:max=64M",
    ];
    if cfg!(feature = "jemalloc") {
        v.extend(["jemalloc", "jemalloc+limit:max=64M"]);
    }
    if cfg!(feature = "mimalloc") {
        v.push("mimalloc");
    }
    v
}

fn memory_used() -> i64 {
    // SAFETY: plain SQLite call, no argument.
    unsafe { ffi::sqlite3_memory_used() }
}

fn shutdown() {
    // SAFETY: called only when no connection is open.
    assert_eq!(unsafe { ffi::sqlite3_shutdown() }, ffi::SQLITE_OK);
}

/// A real workload: schema, a transaction of inserts through a prepared statement, an index, an
/// aggregate, blobs read back. Checks the counters against SQLite's own while it runs.
fn workload(db: &Connection, what: &str) {
    db.execute_batch(
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c BLOB);
         CREATE TABLE u(k TEXT UNIQUE, v INTEGER);",
    )
    .unwrap();
    let tx = db.unchecked_transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO t(a, b, c) VALUES (?1, ?2, zeroblob(?3))")
            .unwrap();
        for i in 0..4000i64 {
            ins.execute(params![i, format!("row-{i:06}"), i % 900])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    db.execute_batch(
        "CREATE INDEX tb ON t(b);
         INSERT INTO u SELECT b, length(c) FROM t WHERE a % 3 = 0;",
    )
    .unwrap();
    let total: i64 = db
        .query_row(
            "SELECT sum(length(c)) FROM t JOIN u ON u.k = t.b",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(total > 0, "{what}");
    let mut st = db
        .prepare("SELECT b, c FROM t WHERE a BETWEEN ?1 AND ?2")
        .unwrap();
    let n = st
        .query_map(params![100, 600], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .unwrap()
        .filter(|r| r.is_ok())
        .count();
    assert_eq!(n, 501, "{what}");
    drop(st);

    let s = sqlalloc::stats();
    assert_eq!(
        s.current_bytes,
        memory_used(),
        "{what}: current_bytes vs sqlite3_memory_used()"
    );
    assert!(s.malloc_calls > 1000, "{what}: {s:?}");
    assert!(
        s.current_count > 0 && s.peak_bytes >= s.current_bytes,
        "{what}: {s:?}"
    );
}

#[test]
fn every_backend_under_rusqlite() {
    for spec in specs() {
        shutdown();
        sqlalloc::install(spec).unwrap_or_else(|e| panic!("install {spec}: {e}"));
        assert_eq!(sqlalloc::installed().unwrap().spec(), spec);
        let base = sqlalloc::stats();
        let db = Connection::open_in_memory().unwrap();
        workload(&db, spec);

        // With a connection open, a second install is refused and changes nothing.
        let before = sqlalloc::stats();
        assert_eq!(sqlalloc::install("system"), Err(Error::AlreadyInitialized));
        assert_eq!(
            sqlalloc::configure(sqlalloc::backend::System),
            Err(Error::AlreadyInitialized)
        );
        assert_eq!(sqlalloc::installed().unwrap().spec(), spec);
        assert_eq!(
            sqlalloc::stats(),
            before,
            "{spec}: a refused install changed the counters"
        );
        db.execute_batch("INSERT INTO t(b) VALUES ('still works')")
            .unwrap();
        assert!(
            sqlalloc::stats().malloc_calls > before.malloc_calls,
            "{spec}"
        );

        drop(db);
        let after = sqlalloc::stats();
        assert_eq!(
            after.current_count, base.current_count,
            "{spec}: blocks left after close"
        );
        assert_eq!(after.current_bytes, memory_used(), "{spec}");
    }
    shutdown();

    // A block the program still holds across a shutdown and re-install: the old allocator is
    // retired, not freed; the block's size and free go back to it, a realloc moves it over.
    sqlalloc::install("system").unwrap();
    // SAFETY: plain SQLite calls; the blocks are freed once below.
    let (p, q) = unsafe { (ffi::sqlite3_malloc(100), ffi::sqlite3_malloc(3000)) };
    assert!(!p.is_null() && !q.is_null());
    // SAFETY: `p` is a live block of 100 bytes.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0x5a, 100) };
    let old_size = unsafe { ffi::sqlite3_msize(p) };
    shutdown();
    sqlalloc::install("memsys5:heap=1M,min=64").expect("re-install with blocks still live");
    // SAFETY: `p` and `q` are live blocks of the retired allocator.
    unsafe {
        assert_eq!(
            ffi::sqlite3_msize(p),
            old_size,
            "size comes from the retired allocator"
        );
        ffi::sqlite3_free(q);
        let p2 = ffi::sqlite3_realloc(p, 200);
        assert!(!p2.is_null());
        assert_eq!(
            ffi::sqlite3_msize(p2),
            256,
            "moved into memsys5 (a 256-byte block)"
        );
        let kept = std::slice::from_raw_parts(p2.cast::<u8>(), 100);
        assert!(kept.iter().all(|&b| b == 0x5a), "contents kept by the move");
        assert_eq!(sqlalloc::stats().current_count, 1);
        ffi::sqlite3_free(p2);
    }
    assert_eq!(sqlalloc::stats().current_count, 0);
    shutdown();
    sqlalloc::install("system").unwrap();

    configure_own_allocator();
}

/// A user allocator: counts its own calls, forwards to the `system` backend.
struct Counting {
    calls: AtomicU64,
}

// SAFETY: every method forwards to `System`, which upholds the contract; the counter is atomic.
unsafe impl MemMethods for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        self.calls.fetch_add(1, Relaxed);
        sqlalloc::backend::System.malloc(size)
    }
    unsafe fn free(&self, ptr: NonNull<u8>) {
        self.calls.fetch_add(1, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { sqlalloc::backend::System.free(ptr) }
    }
    unsafe fn realloc(&self, ptr: NonNull<u8>, n: usize) -> Option<NonNull<u8>> {
        self.calls.fetch_add(1, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { sqlalloc::backend::System.realloc(ptr, n) }
    }
    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract.
        unsafe { sqlalloc::backend::System.size(ptr) }
    }
    fn roundup(&self, n: usize) -> usize {
        sqlalloc::backend::System.roundup(n)
    }
}

static CALLS: AtomicU64 = AtomicU64::new(0);

/// Forwards to `Counting` and also bumps a static, so the test can see the calls after install.
struct Probe(Counting);

// SAFETY: forwards to `Counting`.
unsafe impl MemMethods for Probe {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        CALLS.fetch_add(1, Relaxed);
        self.0.malloc(size)
    }
    unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: forwarded contract.
        unsafe { self.0.free(ptr) }
    }
    unsafe fn realloc(&self, ptr: NonNull<u8>, n: usize) -> Option<NonNull<u8>> {
        // SAFETY: forwarded contract.
        unsafe { self.0.realloc(ptr, n) }
    }
    unsafe fn size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.0.size(ptr) }
    }
    fn roundup(&self, n: usize) -> usize {
        self.0.roundup(n)
    }
}

fn configure_own_allocator() {
    // Still initialized from the end of the previous step? Make sure it is not.
    shutdown();
    assert!(matches!(
        sqlalloc::configure_with_limit(sqlalloc::backend::System, Some(0)),
        Err(Error::BadSpec(_))
    ));
    let own = Probe(Counting {
        calls: AtomicU64::new(0),
    });
    sqlalloc::configure_with_limit(own, Some(8 << 20)).unwrap();
    assert_eq!(
        sqlalloc::installed().unwrap().spec(),
        "counting+limit:max=8388608"
    );
    let db = Connection::open_in_memory().unwrap();
    workload(&db, "configure(Counting)");
    assert!(
        CALLS.load(Relaxed) > 1000,
        "SQLite did not call the user's allocator"
    );
    // The limit layer sits on top of the user's allocator: a 16 MB blob is refused as NOMEM.
    let e = db
        .query_row("SELECT length(zeroblob(16000000) || 'x')", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_err();
    assert_eq!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::OutOfMemory),
        "{e}"
    );
    assert!(sqlalloc::stats().failed_calls >= 1);
    let one: i64 = db.query_row("SELECT 1", [], |r| r.get(0)).unwrap();
    assert_eq!(one, 1, "the connection survives the refused allocation");
    drop(db);
    shutdown();
    sqlalloc::install("system").unwrap();
}

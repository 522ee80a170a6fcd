//! Installs every backend into the real SQLite (the machine's, through libsqlite3-sys) in turn,
//! with `sqlite3_shutdown()` between them, and runs a workload on each. One test function: SQLite's
//! configuration is process-wide, so the steps must not run in parallel.

use libsqlite3_sys as ffi;
use std::ffi::{CStr, CString};

fn exec(db: *mut ffi::sqlite3, sql: &str) -> i32 {
    let sql = CString::new(sql).unwrap();
    // SAFETY: `db` is an open connection; `sql` is NUL-terminated; no callback.
    unsafe {
        ffi::sqlite3_exec(
            db,
            sql.as_ptr(),
            None,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

fn workload() {
    let mut db = std::ptr::null_mut();
    // SAFETY: valid out-pointer and NUL-terminated name.
    let rc = unsafe { ffi::sqlite3_open(c":memory:".as_ptr(), &mut db) };
    assert_eq!(rc, ffi::SQLITE_OK);
    for sql in [
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c BLOB)",
        "BEGIN",
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x<20000) \
         INSERT INTO t SELECT x, hex(randomblob(20)), randomblob(x % 700) FROM n",
        "COMMIT",
        "CREATE INDEX tb ON t(b)",
        "CREATE TABLE u AS SELECT a, length(c) AS l FROM t WHERE a % 3 = 0",
        "SELECT count(*), sum(l) FROM t JOIN u USING(a) GROUP BY a % 10",
    ] {
        assert_eq!(exec(db, sql), ffi::SQLITE_OK, "{sql}");
    }
    let s = sqlalloc::stats();
    // SAFETY: plain SQLite call.
    let used = unsafe { ffi::sqlite3_memory_used() };
    assert_eq!(
        s.current_bytes, used,
        "current_bytes vs sqlite3_memory_used()"
    );
    assert!(s.malloc_calls > 1000);
    // SAFETY: open connection, closed once.
    assert_eq!(unsafe { ffi::sqlite3_close(db) }, ffi::SQLITE_OK);
}

#[test]
fn every_backend_in_real_sqlite() {
    for spec in [
        "system",
        "debug:backtrace=4",
        "memsys3:heap=32M",
        "memsys5:heap=32M,min=32",
        "tlsf:heap=32M",
        "tlsf:heap=32M,shards=2",
        "system+limit:max=64M",
    ] {
        // SAFETY: no connection is open at this point.
        assert_eq!(unsafe { ffi::sqlite3_shutdown() }, ffi::SQLITE_OK);
        sqlalloc::install(spec).unwrap_or_else(|e| panic!("install {spec}: {e}"));
        assert_eq!(sqlalloc::installed().unwrap().spec(), spec);
        // SAFETY: plain SQLite call.
        assert_eq!(
            unsafe { ffi::sqlite3_initialize() },
            ffi::SQLITE_OK,
            "{spec}"
        );
        let before = sqlalloc::stats();
        workload();
        let after = sqlalloc::stats();
        assert_eq!(
            after.current_count, before.current_count,
            "{spec}: blocks left after close"
        );
        assert_eq!(
            after.current_bytes, before.current_bytes,
            "{spec}: bytes left after close"
        );

        // Installing while SQLite is initialized is refused and changes nothing.
        assert_eq!(
            sqlalloc::install("system"),
            Err(sqlalloc::Error::AlreadyInitialized)
        );
        assert_eq!(sqlalloc::installed().unwrap().spec(), spec);
        assert_eq!(sqlalloc::stats().malloc_calls, after.malloc_calls);
        // A bad spec is refused before SQLite is even asked.
        let e = sqlalloc::install("memsys5:heap=1Q").unwrap_err();
        assert!(matches!(e, sqlalloc::Error::BadSpec(_)), "{e}");
        assert!(e.to_string().contains("memsys5:heap=1Q"), "{e}");
    }
    // SAFETY: no connection is open.
    assert_eq!(unsafe { ffi::sqlite3_shutdown() }, ffi::SQLITE_OK);
    // A block of a fixed heap still held across a re-install: the heap is kept (retired) and the
    // block's size and free go back to it, not to the new allocator.
    sqlalloc::install("memsys5:heap=1M,min=64").unwrap();
    // SAFETY: plain SQLite calls on a block freed once.
    unsafe {
        let p = ffi::sqlite3_malloc(1000);
        assert!(!p.is_null());
        std::ptr::write_bytes(p.cast::<u8>(), 7, 1000);
        assert_eq!(ffi::sqlite3_shutdown(), ffi::SQLITE_OK);
        sqlalloc::install("system").unwrap();
        assert_eq!(
            ffi::sqlite3_msize(p),
            1024,
            "memsys5's block size, from the retired heap"
        );
        assert_eq!(
            sqlalloc::stats().current_count,
            0,
            "not counted by the new allocator"
        );
        ffi::sqlite3_free(p);
        assert_eq!(
            sqlalloc::stats().free_calls,
            0,
            "the free went to the retired allocator"
        );
        assert_eq!(ffi::sqlite3_shutdown(), ffi::SQLITE_OK);
    }
    // A memsys5 heap too small for one block: installed, then sqlite3_initialize says NOMEM
    // (as SQLite's own memsys5 does; see mem5.test).
    sqlalloc::install("memsys5:heap=1,min=1G").unwrap();
    // SAFETY: plain SQLite call.
    assert_eq!(unsafe { ffi::sqlite3_initialize() }, ffi::SQLITE_NOMEM);
    sqlalloc::install("system").unwrap();
    // SAFETY: plain SQLite call.
    assert_eq!(unsafe { ffi::sqlite3_initialize() }, ffi::SQLITE_OK);
    // SAFETY: sqlite3_libversion returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(ffi::sqlite3_libversion()) };
    assert!(v.to_str().unwrap().starts_with('3'));
}

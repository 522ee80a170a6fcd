/*
 * t_nomem SMALL_SPEC TINY_SPEC
 *
 * A heap backend (memsys3 or memsys5) with a heap too small for the work asked of it:
 *  1. SMALL_SPEC (e.g. memsys5:heap=1M,min=64): filling a table in one transaction runs out of
 *     memory. SQLite must report SQLITE_NOMEM (not crash, not another code), failed_calls grows,
 *     the transaction can be rolled back, small statements still work, the connection closes
 *     with SQLITE_OK and every block is returned.
 *  2. One request larger than the whole heap (randomblob of 2 MB) gets SQLITE_NOMEM.
 *  3. After sqlite3_shutdown(), TINY_SPEC (e.g. memsys5:heap=16K) is installed: opening a
 *     connection either works or fails with SQLITE_NOMEM, and the handle can be closed.
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SMALL_SPEC TINY_SPEC\n", argv[0]);
        return 2;
    }
    ct_begin("nomem", argv[1]);
    ct_install(argv[1]);
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");
    sqlalloc_stats base = ct_stats();

    sqlite3 *db = ct_open(":memory:");
    EXEC(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    sqlite3_stmt *rb = ct_prepare_rollback(db);
    EXEC(db, "BEGIN");
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES(randomblob(1000))", -1, &st, NULL) ==
              SQLITE_OK,
          "prepare insert: %s", sqlite3_errmsg(db));
    int rc = SQLITE_DONE, inserted = 0;
    for (int i = 0; i < 100000 && rc == SQLITE_DONE; i++) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) inserted++;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    CHECK(rc != SQLITE_DONE, "100 MB of rows fit in the small heap (inserted %d rows)", inserted);
    CHECK(rc == SQLITE_NOMEM, "running out of heap gave %d (%s), expected SQLITE_NOMEM (7)", rc,
          sqlite3_errstr(rc));
    CHECK(sqlite3_errcode(db) == SQLITE_NOMEM, "sqlite3_errcode is %d, not SQLITE_NOMEM",
          sqlite3_errcode(db));
    sqlalloc_stats s = ct_stats();
    CHECK(s.failed_calls > 0, "SQLITE_NOMEM but failed_calls is 0");
    ct_note("SQLITE_NOMEM after %d rows; failed_calls %lld", inserted, (long long)s.failed_calls);
    CHECK_MEMORY_USED("after SQLITE_NOMEM");
    ROLLBACK(db, rb);
    CHECK(QUERY_INT(db, "SELECT count(*) FROM t") == 0, "rows left after the rollback");
    EXEC(db, "INSERT INTO t(v) VALUES(randomblob(100))");
    CHECK(QUERY_INT(db, "SELECT count(*) FROM t") == 1, "small insert after NOMEM was lost");

    /* One request bigger than the heap. */
    rc = ct_try(db, "SELECT length(randomblob(2000000))");
    CHECK(rc == SQLITE_NOMEM, "randomblob(2000000) in a small heap gave %d, not SQLITE_NOMEM",
          rc);
    CHECK(QUERY_INT(db, "SELECT length(randomblob(1000))") == 1000,
          "small randomblob after NOMEM failed");

    ct_close(db);
    CHECK_MEMORY_USED("after close");
    CHECK_BACK_TO(base, "after close");
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");

    /* A heap far too small: no crash, a clean code, the handle closes. */
    ct_begin("nomem", argv[2]);
    ct_install(argv[2]);
    rc = sqlite3_initialize();
    CHECK(rc == SQLITE_OK || rc == SQLITE_NOMEM, "sqlite3_initialize returned %d", rc);
    if (rc == SQLITE_OK) {
        db = NULL;
        int orc = sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                  NULL);
        CHECK(orc == SQLITE_OK || orc == SQLITE_NOMEM, "open in a tiny heap returned %d", orc);
        if (orc == SQLITE_OK) {
            rc = ct_try(db, "CREATE TABLE t(x); INSERT INTO t VALUES(randomblob(100000))");
            CHECK(rc == SQLITE_NOMEM, "100 KB blob in a tiny heap gave %d, not SQLITE_NOMEM",
                  rc);
        }
        ct_note("open in tiny heap: %d", orc);
        rc = sqlite3_close(db);
        CHECK(rc == SQLITE_OK, "sqlite3_close after a failed open returned %d", rc);
        CHECK_MEMORY_USED("tiny heap, after close");
    }
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");
    return 0;
}

/*
 * t_limit BACKEND_SPEC
 *
 * The limit layer over a backend: BACKEND_SPEC + "+limit:max=4M".
 *  - one 8 MB request (randomblob) gets SQLITE_NOMEM and failed_calls grows;
 *  - a string that grows by realloc past the cap (group_concat) gets SQLITE_NOMEM;
 *  - filling a table in one transaction stops with SQLITE_NOMEM, the transaction rolls back;
 *  - after each refusal, smaller statements on the same connection still work;
 *  - current_bytes and peak_bytes never pass 4 MiB, and current_bytes equals
 *    sqlite3_memory_used() throughout.
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

#define CAP (4LL * 1024 * 1024)

static void check_cap(const char *what) {
    sqlalloc_stats s = ct_stats();
    CHECK(s.current_bytes <= CAP, "%s: current_bytes %lld is above the cap %lld", what,
          (long long)s.current_bytes, CAP);
    CHECK(s.peak_bytes <= CAP, "%s: peak_bytes %lld is above the cap %lld", what,
          (long long)s.peak_bytes, CAP);
    CHECK_MEMORY_USED(what);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s BACKEND_SPEC\n", argv[0]);
        return 2;
    }
    char spec[300];
    snprintf(spec, sizeof spec, "%s+limit:max=4M", argv[1]);
    ct_begin("limit", spec);
    ct_install(spec);
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");
    sqlalloc_stats base = ct_stats();
    sqlite3 *db = ct_open(":memory:");

    /* One request over the cap. */
    int64_t failed0 = ct_stats().failed_calls;
    int rc = ct_try(db, "SELECT length(randomblob(8000000))");
    CHECK(rc == SQLITE_NOMEM, "an 8 MB randomblob under a 4 MiB cap gave %d, not SQLITE_NOMEM",
          rc);
    CHECK(ct_stats().failed_calls > failed0, "refused request not counted in failed_calls");
    CHECK(ct_stats().largest_request >= 8000000, "largest_request does not show the 8 MB ask");
    check_cap("after the 8 MB request");
    CHECK(QUERY_INT(db, "SELECT length(randomblob(100000))") == 100000,
          "a 100 KB statement after the refusal failed");

    /* Growth by realloc past the cap. */
    failed0 = ct_stats().failed_calls;
    rc = ct_try(db, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
                    "WHERE i < 6000) SELECT length(group_concat(hex(randomblob(500)))) FROM c");
    CHECK(rc == SQLITE_NOMEM, "a 6 MB group_concat under a 4 MiB cap gave %d, not SQLITE_NOMEM",
          rc);
    CHECK(ct_stats().failed_calls > failed0, "refused realloc not counted in failed_calls");
    check_cap("after the group_concat");
    CHECK(QUERY_INT(db, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
                        "WHERE i < 100) SELECT length(group_concat(hex(randomblob(500)))) "
                        "FROM c") == 100 * 1000 + 99,
          "a small group_concat after the refusal failed");

    /* A table filled past the cap. */
    EXEC(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    sqlite3_stmt *rb = ct_prepare_rollback(db);
    EXEC(db, "BEGIN");
    int n = 0;
    rc = SQLITE_OK;
    for (; n < 100000 && rc == SQLITE_OK; n++) rc = ct_try(db, "INSERT INTO t(v) VALUES(randomblob(300))");
    CHECK(rc == SQLITE_NOMEM, "filling past the cap gave %d after %d rows, not SQLITE_NOMEM", rc,
          n);
    check_cap("after filling the table");
    ROLLBACK(db, rb);
    EXEC(db, "INSERT INTO t(v) VALUES(randomblob(300))");
    CHECK(QUERY_INT(db, "SELECT count(*) FROM t") == 1, "small insert after the refusal lost");
    ct_note("table refused after %d rows; failed_calls %lld, peak %lld", n,
            (long long)ct_stats().failed_calls, (long long)ct_stats().peak_bytes);

    ct_close(db);
    check_cap("after close");
    CHECK_BACK_TO(base, "after close");
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");
    return 0;
}

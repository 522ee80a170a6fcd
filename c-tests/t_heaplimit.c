/*
 * t_heaplimit SPEC
 *
 * SQLite's own heap limits over our allocator (both need memstatus, which is on):
 *  - hard limit (sqlite3_hard_heap_limit64): filling an in-memory table stops with SQLITE_NOMEM;
 *    neither sqlite3_memory_used() nor our peak_bytes ever passes the limit; after removing the
 *    limit the same connection works again.
 *  - soft limit (sqlite3_soft_heap_limit64): the same insert job on an on-disk database with a
 *    64 MB page cache peaks far lower with a 2 MB soft limit than without one, because SQLite
 *    recycles and spills cache pages instead of allocating new ones.
 * Throughout, our current_bytes equals sqlite3_memory_used().
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

#define MB (1024LL * 1024)

/* Insert `n` rows of 400-byte blobs into table `tab` in one transaction; returns the rc. */
static int fill(sqlite3 *db, const char *tab, int n) {
    char sql[200];
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s(id INTEGER PRIMARY KEY, v BLOB)",
             tab);
    int rc = ct_try(db, sql);
    if (rc != SQLITE_OK) return rc;
    sqlite3_stmt *rb = ct_prepare_rollback(db);
    if ((rc = ct_try(db, "BEGIN")) != SQLITE_OK) {
        sqlite3_finalize(rb);
        return rc;
    }
    snprintf(sql, sizeof sql, "INSERT INTO %s(v) VALUES(randomblob(400))", tab);
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    for (int i = 0; i < n && rc == SQLITE_OK; i++) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK) rc = ct_try(db, "COMMIT");
    ROLLBACK(db, rb);
    return rc;
}

static void hard_limit(void) {
    sqlite3 *db = ct_open(":memory:");
    sqlite3_int64 limit = sqlite3_memory_used() + 3 * MB;
    CHECK(sqlite3_hard_heap_limit64(limit) == 0, "a hard limit was already set");
    CHECK(sqlite3_hard_heap_limit64(-1) == limit, "sqlite3_hard_heap_limit64(-1) does not "
                                                  "report the limit just set");
    sqlalloc_reset_peak();
    int rc = fill(db, "h", 100000); /* 40 MB: far past the limit */
    CHECK(rc == SQLITE_NOMEM, "filling past the hard heap limit gave %d, not SQLITE_NOMEM", rc);
    sqlite3_int64 hw = 0, cur = 0;
    sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &cur, &hw, 0);
    sqlalloc_stats s = ct_stats();
    CHECK(hw <= limit, "SQLite's high-water mark %lld passed the hard limit %lld", (long long)hw,
          (long long)limit);
    CHECK(s.peak_bytes <= limit, "our peak_bytes %lld passed the hard limit %lld",
          (long long)s.peak_bytes, (long long)limit);
    CHECK(s.peak_bytes > limit - MB, "peak_bytes %lld never came near the hard limit %lld",
          (long long)s.peak_bytes, (long long)limit);
    CHECK_MEMORY_USED("after hitting the hard limit");
    ct_note("hard limit %lld: peak %lld, SQLite high-water %lld", (long long)limit,
            (long long)s.peak_bytes, (long long)hw);
    /* Small statements still work under the limit; without it the big job succeeds. */
    CHECK(QUERY_INT(db, "SELECT length(randomblob(1000))") == 1000,
          "small statement under the hard limit failed");
    CHECK(sqlite3_hard_heap_limit64(0) == limit, "removing the hard limit");
    rc = fill(db, "h", 20000);
    CHECK(rc == SQLITE_OK, "filling 8 MB with no hard limit gave %d", rc);
    CHECK_MEMORY_USED("after removing the hard limit");
    ct_close(db);
}

/* Peak bytes of inserting 25000 400-byte rows (10 MB) into a fresh table with a 64 MB cache. */
static int64_t soft_job(const char *path, const char *tab) {
    sqlite3 *db = ct_open(path);
    EXEC(db, "PRAGMA synchronous=OFF; PRAGMA cache_size=-65536");
    sqlalloc_reset_peak();
    int rc = fill(db, tab, 25000);
    CHECK(rc == SQLITE_OK, "insert job on disk gave %d", rc);
    char sql[100];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE length(v) = 400", tab);
    CHECK(QUERY_INT(db, sql) == 25000, "table %s does not hold the 25000 rows inserted", tab);
    CHECK_MEMORY_USED("after the on-disk insert job");
    int64_t peak = ct_stats().peak_bytes;
    ct_close(db);
    return peak;
}

static void soft_limit(void) {
    char dir[512], path[600];
    ct_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/soft.db", dir);
    {
        sqlite3 *db = ct_open(path);
        EXEC(db, "CREATE TABLE t1(id INTEGER PRIMARY KEY, v BLOB);"
                 "CREATE TABLE t2(id INTEGER PRIMARY KEY, v BLOB)");
        ct_close(db);
    }
    CHECK(sqlite3_soft_heap_limit64(-1) == 0, "a soft limit was already set");
    int64_t free_peak = soft_job(path, "t1");
    sqlite3_int64 soft = sqlite3_memory_used() + 2 * MB;
    sqlite3_soft_heap_limit64(soft);
    CHECK(sqlite3_soft_heap_limit64(-1) == soft, "sqlite3_soft_heap_limit64(-1) does not report "
                                                 "the limit just set");
    int64_t soft_peak = soft_job(path, "t2");
    ct_note("soft limit: peak %lld without, %lld with a limit of %lld", (long long)free_peak,
            (long long)soft_peak, (long long)soft);
    CHECK(free_peak > 8 * MB, "without a soft limit the job peaked at only %lld bytes",
          (long long)free_peak);
    CHECK(soft_peak < free_peak / 2,
          "the soft limit did not bring the peak down: %lld with it, %lld without",
          (long long)soft_peak, (long long)free_peak);
    CHECK(soft_peak <= soft + 2 * MB, "peak %lld is far above the soft limit %lld",
          (long long)soft_peak, (long long)soft);
    sqlite3_soft_heap_limit64(0);
    ct_rmdir(dir);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SPEC\n", argv[0]);
        return 2;
    }
    ct_begin("heaplimit", argv[1]);
    ct_install(argv[1]);
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");
    sqlalloc_stats base = ct_stats();
    hard_limit();
    CHECK_BACK_TO(base, "after the hard-limit part");
    soft_limit();
    CHECK_BACK_TO(base, "after the soft-limit part");
    CHECK_MEMORY_USED("at the end");
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");
    return 0;
}

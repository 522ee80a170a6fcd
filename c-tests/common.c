/* Helpers shared by the C tests; see common.h. */
#include "common.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *ct_name = "?";
const char *ct_spec = "-";

void ct_begin(const char *name, const char *spec) {
    ct_name = name;
    ct_spec = spec ? spec : "-";
}

void ct_fail(const char *file, int line, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "FAIL %s [%s] %s:%d: %s\n", ct_name, ct_spec, file, line, msg);
    fflush(stderr);
    fflush(stdout);
    /* _exit: other threads may still be inside SQLite; do not run exit handlers under them. */
    _exit(1);
}

void ct_note(const char *fmt, ...) {
    if (!getenv("SQLALLOC_CT_VERBOSE")) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  [%s] ", ct_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void ct_install(const char *spec) {
    int rc = sqlalloc_install(spec);
    CHECK(rc == SQLITE_OK, "sqlalloc_install(\"%s\") returned %d: %s", spec, rc,
          sqlalloc_errmsg());
    CHECK(strcmp(sqlalloc_errmsg(), "") == 0, "errmsg after a good install is \"%s\", not \"\"",
          sqlalloc_errmsg());
}

sqlalloc_stats ct_stats(void) {
    sqlalloc_stats s;
    memset(&s, 0, sizeof s);
    int rc = sqlalloc_get_stats(&s);
    CHECK(rc == SQLITE_OK, "sqlalloc_get_stats returned %d: %s", rc, sqlalloc_errmsg());
    return s;
}

void ct_check_memory_used(const char *file, int line, const char *what) {
    sqlalloc_stats s = ct_stats();
    sqlite3_int64 used = sqlite3_memory_used();
    if (s.current_bytes != used)
        ct_fail(file, line, "%s: current_bytes %lld != sqlite3_memory_used() %lld", what,
                (long long)s.current_bytes, (long long)used);
}

void ct_check_back_to(const char *file, int line, sqlalloc_stats base, const char *what) {
    sqlalloc_stats s = ct_stats();
    if (s.current_count != base.current_count || s.current_bytes != base.current_bytes)
        ct_fail(file, line,
                "%s: current_count/current_bytes are %lld/%lld, expected the starting %lld/%lld",
                what, (long long)s.current_count, (long long)s.current_bytes,
                (long long)base.current_count, (long long)base.current_bytes);
}

sqlite3 *ct_open(const char *path) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        FAIL("sqlite3_open_v2(%s) returned %d (%s)", path, rc,
             db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    }
    return db;
}

void ct_close(sqlite3 *db) {
    int rc = sqlite3_close(db);
    CHECK(rc == SQLITE_OK, "sqlite3_close returned %d", rc);
}

void ct_exec(const char *file, int line, sqlite3 *db, const char *sql) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        ct_fail(file, line, "SQL failed with %d (%s): %.200s", rc, msg, sql);
    }
}

int ct_try(sqlite3 *db, const char *sql) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    sqlite3_free(err);
    return rc;
}

static sqlite3_stmt *prep(const char *file, int line, sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        ct_fail(file, line, "prepare failed with %d (%s): %.200s", rc, sqlite3_errmsg(db), sql);
    return st;
}

sqlite3_stmt *ct_prepare_rollback(sqlite3 *db) {
    return prep(__FILE__, __LINE__, db, "ROLLBACK");
}

void ct_rollback(const char *file, int line, sqlite3 *db, sqlite3_stmt *prepared) {
    if (!sqlite3_get_autocommit(db)) {
        int rc = sqlite3_step(prepared);
        if (rc != SQLITE_DONE)
            ct_fail(file, line, "ROLLBACK returned %d (%s)", rc, sqlite3_errmsg(db));
    }
    sqlite3_finalize(prepared);
}

int64_t ct_query_int(const char *file, int line, sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = prep(file, line, db, sql);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        ct_fail(file, line, "step returned %d (%s), not a row: %.200s", rc, sqlite3_errmsg(db),
                sql);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

void ct_query_text(const char *file, int line, sqlite3 *db, const char *sql, char *buf,
                   size_t len) {
    sqlite3_stmt *st = prep(file, line, db, sql);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        ct_fail(file, line, "step returned %d (%s), not a row: %.200s", rc, sqlite3_errmsg(db),
                sql);
    const unsigned char *t = sqlite3_column_text(st, 0);
    snprintf(buf, len, "%s", t ? (const char *)t : "(null)");
    sqlite3_finalize(st);
}

void ct_mkdtemp(char *out, size_t len) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(out, len, "%s/sqlalloc-ctest-XXXXXX", base);
    CHECK(mkdtemp(out) != NULL, "mkdtemp(%s) failed", out);
}

void ct_rmdir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

uint64_t ct_rand(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 2685821657736338717ULL;
}

/* ---- the workload ---------------------------------------------------------------------- */

static void step_done(sqlite3 *db, sqlite3_stmt *st, const char *what) {
    int rc = sqlite3_step(st);
    CHECK(rc == SQLITE_DONE, "%s: step returned %d (%s)", what, rc, sqlite3_errmsg(db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static uint64_t checksum(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* Text of row i of t1: "row-<i>-" then (i % 41) letters. */
static int row_text(char *buf, size_t len, int i) {
    int n = snprintf(buf, len, "row-%d-", i);
    for (int k = 0; k < i % 41; k++) buf[n++] = (char)('a' + (i + k) % 26);
    buf[n] = 0;
    return n;
}

void ct_workload(sqlite3 *db, int rows, uint64_t seed) {
    uint64_t rng = seed | 1;
    sqlite3_stmt *st;
    char buf[256];

    EXEC(db, "CREATE TABLE t1(id INTEGER PRIMARY KEY, a INTEGER NOT NULL, b TEXT, c REAL);"
             "CREATE INDEX t1a ON t1(a);"
             "CREATE TABLE t2(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT UNIQUE);"
             "CREATE TABLE blobs(id INTEGER PRIMARY KEY, sz INTEGER, sum INTEGER, data BLOB);");

    /* t2: 1000 rows in 10 groups. */
    EXEC(db, "BEGIN");
    CHECK(sqlite3_prepare_v2(db, "INSERT INTO t2 VALUES(?,?,?)", -1, &st, NULL) == SQLITE_OK,
          "prepare t2 insert: %s", sqlite3_errmsg(db));
    for (int i = 1; i <= 1000; i++) {
        snprintf(buf, sizeof buf, "g%04d", i);
        sqlite3_bind_int(st, 1, i);
        sqlite3_bind_int(st, 2, i % 10);
        sqlite3_bind_text(st, 3, buf, -1, SQLITE_TRANSIENT);
        step_done(db, st, "insert into t2");
    }
    sqlite3_finalize(st);
    EXEC(db, "COMMIT");

    /* t1: `rows` rows in transactions of 10000. */
    int64_t sum_a = 0, count_a5 = 0, total_blen = 0;
    CHECK(sqlite3_prepare_v2(db, "INSERT INTO t1 VALUES(?,?,?,?)", -1, &st, NULL) == SQLITE_OK,
          "prepare t1 insert: %s", sqlite3_errmsg(db));
    for (int i = 1; i <= rows; i++) {
        if (i % 10000 == 1) EXEC(db, "BEGIN");
        int a = (int)(((int64_t)i * 7919) % 1000);
        int n = row_text(buf, sizeof buf, i);
        sum_a += a;
        count_a5 += a == 5;
        total_blen += n;
        sqlite3_bind_int(st, 1, i);
        sqlite3_bind_int(st, 2, a);
        sqlite3_bind_text(st, 3, buf, n, SQLITE_TRANSIENT);
        sqlite3_bind_double(st, 4, i * 0.5);
        step_done(db, st, "insert into t1");
        if (i % 10000 == 0 || i == rows) EXEC(db, "COMMIT");
    }
    sqlite3_finalize(st);
    EXEC(db, "CREATE INDEX t1b ON t1(b)");

    /* Blobs: 40 small ones and a few of 100 KB and more. */
    static const int big[] = {100 * 1024, 150000, 300001, (1 << 20) + 17};
    const int nsmall = 40, nblob = nsmall + (int)(sizeof big / sizeof big[0]);
    unsigned char *data = malloc((1 << 20) + 17);
    CHECK(data != NULL, "malloc for blob data failed");
    EXEC(db, "BEGIN");
    CHECK(sqlite3_prepare_v2(db, "INSERT INTO blobs VALUES(?,?,?,?)", -1, &st, NULL) == SQLITE_OK,
          "prepare blob insert: %s", sqlite3_errmsg(db));
    for (int k = 0; k < nblob; k++) {
        int sz = k < nsmall ? 1 + (k * 997) % 8000 : big[k - nsmall];
        for (int j = 0; j < sz; j++) data[j] = (unsigned char)ct_rand(&rng);
        sqlite3_bind_int(st, 1, k + 1);
        sqlite3_bind_int(st, 2, sz);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)(checksum(data, (size_t)sz) >> 1));
        sqlite3_bind_blob(st, 4, data, sz, SQLITE_TRANSIENT);
        step_done(db, st, "insert blob");
    }
    sqlite3_finalize(st);
    EXEC(db, "COMMIT");
    free(data);
    /* Rewrite the big blobs (same bytes, new records: exercises large reallocs and frees). */
    EXEC(db, "UPDATE blobs SET data = substr(data, 1, sz / 3) || substr(data, sz / 3 + 1) "
             "WHERE sz > 50000");
    CHECK(sqlite3_prepare_v2(db, "SELECT id, sz, sum, data FROM blobs ORDER BY id", -1, &st,
                             NULL) == SQLITE_OK,
          "prepare blob read: %s", sqlite3_errmsg(db));
    int seen = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int id = sqlite3_column_int(st, 0), sz = sqlite3_column_int(st, 1);
        const unsigned char *p = sqlite3_column_blob(st, 3);
        int n = sqlite3_column_bytes(st, 3);
        CHECK(n == sz, "blob %d has %d bytes, expected %d", id, n, sz);
        CHECK(p != NULL, "blob %d read back as NULL", id);
        CHECK((sqlite3_int64)(checksum(p, (size_t)n) >> 1) == sqlite3_column_int64(st, 2),
              "blob %d (%d bytes) read back with different contents", id, sz);
        seen++;
    }
    CHECK(rc == SQLITE_DONE, "blob read ended with %d (%s)", rc, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    CHECK(seen == nblob, "read %d blobs back, expected %d", seen, nblob);

    /* Queries with results known in advance. */
    CHECK(QUERY_INT(db, "SELECT count(*) FROM t1") == rows, "count(*) of t1 is not %d", rows);
    CHECK(QUERY_INT(db, "SELECT sum(a) FROM t1") == sum_a, "sum(a) is not %lld",
          (long long)sum_a);
    CHECK(QUERY_INT(db, "SELECT count(*) FROM t1 WHERE a = 5") == count_a5,
          "indexed count(a=5) is not %lld", (long long)count_a5);
    CHECK(QUERY_INT(db, "SELECT count(*) FROM t1 JOIN t2 ON t2.id = t1.a + 1") == rows,
          "join count is not %d", rows);
    CHECK(QUERY_INT(db, "SELECT count(*) FROM (SELECT t2.grp, count(*) AS n, sum(t1.c) "
                        "FROM t1 JOIN t2 ON t2.id = t1.a + 1 GROUP BY t2.grp)") == 10,
          "group by over the join does not give 10 groups");
    CHECK(QUERY_INT(db, "SELECT sum(n) FROM (SELECT t2.grp, count(*) AS n FROM t1 JOIN t2 "
                        "ON t2.id = t1.a + 1 GROUP BY t2.grp)") == rows,
          "group counts do not add up to %d", rows);
    CHECK(QUERY_INT(db, "SELECT count(DISTINCT b) FROM t1") == rows,
          "count(DISTINCT b) is not %d", rows);
    CHECK(QUERY_INT(db, "SELECT length(group_concat(b, ',')) FROM t1") ==
              total_blen + rows - 1,
          "length of group_concat(b) is not %lld", (long long)(total_blen + rows - 1));
    CHECK(QUERY_INT(db, "SELECT CAST(c * 2 AS INTEGER) FROM t1 ORDER BY c DESC LIMIT 1") ==
              rows,
          "largest c is not %d/2", rows);
    CHECK(QUERY_INT(db, "SELECT count(*) FROM (SELECT b FROM t1 ORDER BY substr(b, 5) "
                        "LIMIT 1000000)") == rows,
          "sorted select does not return %d rows", rows);
    row_text(buf, sizeof buf, rows / 2 + 1);
    {
        char sql[400];
        snprintf(sql, sizeof sql, "SELECT id FROM t1 WHERE b = '%s'", buf);
        CHECK(QUERY_INT(db, sql) == rows / 2 + 1, "lookup through index t1b failed");
    }

    /* Updates and deletes. */
    EXEC(db, "BEGIN; UPDATE t1 SET c = c + 1, b = b || 'x' WHERE a < 100;"
             "DELETE FROM t1 WHERE id % 10 = 0; COMMIT");
    CHECK(QUERY_INT(db, "SELECT count(*) FROM t1") == rows - rows / 10,
          "count after delete is not %d", rows - rows / 10);
    EXEC(db, "DELETE FROM blobs WHERE id % 2 = 0");

    char ok[64];
    QUERY_TEXT(db, "PRAGMA integrity_check", ok, sizeof ok);
    CHECK(strcmp(ok, "ok") == 0, "integrity_check says \"%s\"", ok);
}

/*
 * oom_sweep [-n ROWS] [-a ALL] [-s STRIDE] BACKEND-SPEC
 *
 * Out-of-memory sweep through sqlalloc's `fault` layer (the idea of SQLite's own TCL
 * do_faultsim_test, over the shipped library). The program installs BACKEND-SPEC+fault and
 * runs a real workload on a fresh on-disk database: schema, ROWS inserts in one transaction, two
 * index builds, a join checked against the expected answer, a blob written through
 * sqlite3_blob_write and read back, deletes, a VACUUM and PRAGMA integrity_check.
 *
 * A first run without failures counts the allocation calls (xMalloc + xRealloc) the workload
 * makes: N. Then for k = 1 .. N (every k up to ALL, then every STRIDE-th; by default every k),
 * with the database recreated each time, allocation k fails (sqlalloc_fault_arm(k, 1)) and:
 *   - the process does not crash;
 *   - every SQLite call either succeeds (with the right answer) or returns a code of the
 *     NOMEM family: SQLITE_NOMEM, or SQLITE_IOERR_NOMEM (extended result codes are on); the
 *     workload stops at the first such code, finalizes its statements and closes;
 *   - exactly one failure was injected, and the counters saw it as a failed call (the number of
 *     calls can vary by one or two between runs: a run that ends before step k injects nothing
 *     and must succeed; such k are reported as "past the end of the run");
 *   - sqlite3_close returns SQLITE_OK and the counters are back to where they started
 *     (current_count, current_bytes; and current_bytes == sqlite3_memory_used());
 *   - the database, reopened without failures, passes PRAGMA integrity_check, and the insert
 *     transaction is all or nothing (0 or ROWS rows).
 * Prints one summary line: allocation points, points swept, how many failures reached the
 * caller as NOMEM and how many SQLite absorbed (the workload still succeeded).
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOB_ID 1000000
#define BLOB_LEN 20000

static int rows = 60;

static int nomem_family(int rc) {
    return (rc & 0xff) == SQLITE_NOMEM || rc == SQLITE_IOERR_NOMEM;
}

/* A run stops at the first failing call; this records which and with what code. */
struct outcome {
    int rc;           /* SQLITE_OK when the whole workload succeeded */
    const char *step; /* where it stopped */
};

#define TRY(o, what, expr)                                                                         \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != SQLITE_OK && rc_ != SQLITE_ROW && rc_ != SQLITE_DONE) {                         \
            (o)->rc = rc_;                                                                         \
            (o)->step = (what);                                                                    \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* One statement to completion; a row of a query is checked by the caller through *out_i. */
static int exec1(sqlite3 *db, const char *sql, sqlite3_int64 *out_i, char *out_t, size_t tl) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out_i) *out_i = sqlite3_column_int64(st, 0);
        if (out_t) {
            const unsigned char *t = sqlite3_column_text(st, 0);
            if (t == NULL && sqlite3_errcode(db) == SQLITE_NOMEM) {
                rc = SQLITE_NOMEM;
                break;
            }
            snprintf(out_t, tl, "%s", t ? (const char *)t : "(null)");
        }
    }
    int rc2 = sqlite3_finalize(st);
    if (rc == SQLITE_DONE) rc = rc2 == SQLITE_OK ? SQLITE_DONE : rc2;
    return rc;
}

static int execs(sqlite3 *db, const char *sql) {
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* The expected answer of the join. */
static void expected_join(sqlite3_int64 *count, sqlite3_int64 *sum) {
    *count = 0;
    *sum = 0;
    for (int i = 1; i <= rows; i++) {
        if (i % 3 != 0) continue;
        for (int j = 0; j < 2; j++) { /* two b rows per a row */
            char note[64];
            snprintf(note, sizeof note, "note-%d-%d", i, j);
            *count += 1;
            *sum += (sqlite3_int64)strlen(note);
        }
    }
}

static void workload(const char *path, struct outcome *o) {
    sqlite3 *db = NULL;
    sqlite3_stmt *ins_a = NULL, *ins_b = NULL;
    sqlite3_blob *blob = NULL;
    o->rc = SQLITE_OK;
    o->step = "done";

    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        o->rc = db ? sqlite3_extended_errcode(db) : rc;
        o->step = "open";
        if (db) CHECK(sqlite3_close(db) == SQLITE_OK, "close after a failed open");
        return;
    }
    sqlite3_extended_result_codes(db, 1);
    TRY(o, "pragma", execs(db, "PRAGMA synchronous=OFF"));
    TRY(o, "schema",
        execs(db, "CREATE TABLE a(id INTEGER PRIMARY KEY, name TEXT, v INT);"
                  "CREATE TABLE b(id INTEGER PRIMARY KEY, a_id INT, note TEXT, data BLOB);"));

    /* Inserts in one transaction. */
    TRY(o, "begin", execs(db, "BEGIN"));
    TRY(o, "prepare insert a",
        sqlite3_prepare_v2(db, "INSERT INTO a(id, name, v) VALUES(?1, ?2, ?3)", -1, &ins_a, NULL));
    TRY(o, "prepare insert b",
        sqlite3_prepare_v2(db, "INSERT INTO b(a_id, note, data) VALUES(?1, ?2, randomblob(?3))",
                           -1, &ins_b, NULL));
    for (int i = 1; i <= rows; i++) {
        char name[64];
        snprintf(name, sizeof name, "name-%05d-%s", (i * 7919) % 10007, i % 2 ? "odd" : "even");
        TRY(o, "bind a", sqlite3_bind_int(ins_a, 1, i));
        TRY(o, "bind a", sqlite3_bind_text(ins_a, 2, name, -1, SQLITE_TRANSIENT));
        TRY(o, "bind a", sqlite3_bind_int(ins_a, 3, i));
        TRY(o, "insert a", sqlite3_step(ins_a));
        TRY(o, "reset a", sqlite3_reset(ins_a));
        for (int j = 0; j < 2; j++) {
            char note[64];
            snprintf(note, sizeof note, "note-%d-%d", i, j);
            TRY(o, "bind b", sqlite3_bind_int(ins_b, 1, i));
            TRY(o, "bind b", sqlite3_bind_text(ins_b, 2, note, -1, SQLITE_TRANSIENT));
            TRY(o, "bind b", sqlite3_bind_int(ins_b, 3, 50 + (i * 37 + j) % 900));
            TRY(o, "insert b", sqlite3_step(ins_b));
            TRY(o, "reset b", sqlite3_reset(ins_b));
        }
    }
    TRY(o, "finalize a", sqlite3_finalize(ins_a));
    ins_a = NULL;
    TRY(o, "finalize b", sqlite3_finalize(ins_b));
    ins_b = NULL;
    TRY(o, "commit", execs(db, "COMMIT"));

    /* Index builds. */
    TRY(o, "create index",
        execs(db, "CREATE INDEX b_a ON b(a_id); CREATE INDEX a_name ON a(name, v)"));

    /* A join, checked. */
    {
        sqlite3_int64 c = -1, want_c, want_s;
        expected_join(&want_c, &want_s);
        TRY(o, "join count",
            exec1(db, "SELECT count(*) FROM a JOIN b ON b.a_id = a.id WHERE a.v % 3 = 0", &c,
                  NULL, 0));
        CHECK(c == want_c, "join count is %lld, expected %lld", (long long)c, (long long)want_c);
        sqlite3_int64 s = -1;
        TRY(o, "join sum",
            exec1(db,
                  "SELECT total(length(b.note)) FROM a JOIN b ON b.a_id = a.id "
                  "WHERE a.v % 3 = 0 ORDER BY a.name",
                  &s, NULL, 0));
        CHECK(s == want_s, "join sum is %lld, expected %lld", (long long)s, (long long)want_s);
    }

    /* A blob written incrementally, read back. */
    {
        char sql[128];
        snprintf(sql, sizeof sql,
                 "INSERT INTO b(id, a_id, note, data) VALUES(%d, 1, 'blob', zeroblob(%d))",
                 BLOB_ID, BLOB_LEN);
        TRY(o, "blob row", execs(db, sql));
        TRY(o, "blob open", sqlite3_blob_open(db, "main", "b", "data", BLOB_ID, 1, &blob));
        unsigned char chunk[1000];
        for (int off = 0; off < BLOB_LEN; off += (int)sizeof chunk) {
            for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = (unsigned char)(off / 1000 + i);
            TRY(o, "blob write", sqlite3_blob_write(blob, chunk, (int)sizeof chunk, off));
        }
        TRY(o, "blob close", sqlite3_blob_close(blob));
        blob = NULL;
        sqlite3_int64 n = -1;
        snprintf(sql, sizeof sql, "SELECT length(data) FROM b WHERE id = %d", BLOB_ID);
        TRY(o, "blob read", exec1(db, sql, &n, NULL, 0));
        CHECK(n == BLOB_LEN, "blob length read back is %lld", (long long)n);
        sqlite3_int64 b = -1;
        snprintf(sql, sizeof sql, "SELECT hex(substr(data, 2001, 2)) = '0203' FROM b WHERE id = %d",
                 BLOB_ID);
        TRY(o, "blob check", exec1(db, sql, &b, NULL, 0));
        CHECK(b == 1, "blob bytes read back are wrong");
    }

    /* Deletes, VACUUM, integrity. */
    TRY(o, "delete", execs(db, "DELETE FROM b WHERE id % 2 = 0 AND id <> 1000000"));
    TRY(o, "vacuum", execs(db, "VACUUM"));
    {
        char ok[64] = "";
        TRY(o, "integrity", exec1(db, "PRAGMA integrity_check", NULL, ok, sizeof ok));
        CHECK(strcmp(ok, "ok") == 0, "integrity_check in the run says \"%s\"", ok);
    }

out:
    if (blob) sqlite3_blob_close(blob);
    sqlite3_finalize(ins_a);
    sqlite3_finalize(ins_b);
    rc = sqlite3_close(db);
    CHECK(rc == SQLITE_OK, "sqlite3_close returned %d after stopping at '%s' (code %d)", rc,
          o->step, o->rc);
}

static void remove_db(const char *path) {
    char p[700];
    unlink(path);
    snprintf(p, sizeof p, "%s-journal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
}

/* The database after a run, reopened without failures. */
static void check_db(const char *path, int64_t k) {
    sqlite3 *db = ct_open(path);
    char ok[256] = "";
    QUERY_TEXT(db, "PRAGMA integrity_check", ok, sizeof ok);
    CHECK(strcmp(ok, "ok") == 0, "k=%lld: integrity_check after reopening says \"%s\"",
          (long long)k, ok);
    if (ct_try(db, "SELECT 1 FROM a LIMIT 0") == SQLITE_OK) {
        int64_t n = QUERY_INT(db, "SELECT count(*) FROM a");
        CHECK(n == 0 || n == rows, "k=%lld: table a has %lld rows: the transaction was split",
              (long long)k, (long long)n);
    }
    ct_close(db);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int64_t all = INT64_MAX, stride = 1;
    int i = 1;
    while (i + 1 < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "-n") == 0) rows = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-a") == 0) all = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "-s") == 0) stride = atoll(argv[i + 1]);
        else break;
        i += 2;
    }
    if (i + 1 != argc || rows < 3 || all < 0 || stride < 1) {
        fprintf(stderr, "usage: %s [-n ROWS>=3] [-a ALL] [-s STRIDE] BACKEND-SPEC\n", argv[0]);
        return 2;
    }
    char spec[512];
    snprintf(spec, sizeof spec, "%s+fault", argv[i]);
    ct_begin("oom-sweep", spec);
    ct_install(spec);
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");

    char dir[512], path[600];
    ct_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/sweep.db", dir);

    /* Count run: armed far away, so nothing fails and every step is counted. Run twice: the
     * first run also makes SQLite's one-time allocations, which stay (they are the baseline). */
    struct outcome o;
    sqlalloc_fault_stats fs;
    for (int r = 0; r < 2; r++) {
        remove_db(path);
        CHECK(sqlalloc_fault_arm(INT64_MAX, 1) == SQLITE_OK, "arm: %s", sqlalloc_errmsg());
        workload(path, &o);
        CHECK(o.rc == SQLITE_OK, "the workload fails without any injected failure: %d at '%s'",
              o.rc, o.step);
    }
    CHECK(sqlalloc_fault_get_stats(&fs) == SQLITE_OK, "%s", sqlalloc_errmsg());
    CHECK(fs.injected == 0, "failures injected in the count run");
    const int64_t n = fs.calls;
    CHECK(n > 100, "only %lld allocation calls counted", (long long)n);
    check_db(path, 0);
    sqlalloc_stats base = ct_stats();
    CHECK_MEMORY_USED("after the count run");

    int64_t swept = 0, nomem = 0, absorbed = 0, benign = 0, unreached = 0;
    int64_t first_k = 0, last_absorbed = 0;
    double t0 = now();
    for (int64_t k = 1; k <= n; k += (k < all ? 1 : stride)) {
        remove_db(path);
        sqlalloc_stats before = ct_stats();
        CHECK(sqlalloc_fault_arm(k, 1) == SQLITE_OK, "arm(%lld): %s", (long long)k,
              sqlalloc_errmsg());
        workload(path, &o);
        CHECK(sqlalloc_fault_get_stats(&fs) == SQLITE_OK, "%s", sqlalloc_errmsg());
        CHECK(sqlalloc_fault_disarm() == SQLITE_OK, "disarm: %s", sqlalloc_errmsg());
        /* The number of calls can differ by a few from run to run (SQLite's own state); a run
         * that ends before step k injects nothing and must simply succeed. */
        CHECK(fs.injected == 1 || (fs.injected == 0 && fs.calls < k && o.rc == SQLITE_OK),
              "k=%lld: %lld failures injected, expected 1 (run made %lld calls, code %d)",
              (long long)k, (long long)fs.injected, (long long)fs.calls, o.rc);
        benign += fs.benign_injected;
        if (fs.injected == 0) {
            unreached++;
        } else if (o.rc == SQLITE_OK) {
            absorbed++;
            last_absorbed = k;
        } else {
            CHECK(nomem_family(o.rc), "k=%lld: '%s' returned %d (%s), not SQLITE_NOMEM",
                  (long long)k, o.step, o.rc, sqlite3_errstr(o.rc));
            nomem++;
            if (!first_k) first_k = k;
        }
        sqlalloc_stats after = ct_stats();
        CHECK(after.failed_calls - before.failed_calls == fs.injected,
              "k=%lld: failed_calls grew by %lld, expected %lld", (long long)k,
              (long long)(after.failed_calls - before.failed_calls), (long long)fs.injected);
        char what[96];
        snprintf(what, sizeof what, "k=%lld (stopped at '%s', code %d), after close", (long long)k,
                 o.step, o.rc);
        CHECK_BACK_TO(base, what);
        CHECK_MEMORY_USED(what);
        check_db(path, k);
        CHECK_BACK_TO(base, "after the integrity check");
        swept++;
    }
    double secs = now() - t0;
    ct_rmdir(dir);
    printf("oom-sweep %-28s %lld allocation points, %lld swept (%s), %lld -> NOMEM, "
           "%lld absorbed by SQLite (%lld in benign regions), %lld past the end of the run, "
           "%.1fs\n",
           argv[i], (long long)n, (long long)swept,
           swept == n ? "every k" : "every k to the limit, then strided", (long long)nomem,
           (long long)absorbed, (long long)benign, (long long)unreached, secs);
    ct_note("first NOMEM at k=%lld, last absorbed at k=%lld", (long long)first_k,
            (long long)last_absorbed);
    CHECK(swept > 0 && nomem > 0, "no failure reached the caller");
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");
    return 0;
}

/*
 * soak [-t SECONDS] [-m 0|1] SPEC
 *
 * Two threads, each with its own connections, run a random mix of reads and writes for SECONDS
 * (default 60) under SPEC, with SQLite's memstatus on (-m 1, the default) or off (-m 0), in
 * SQLITE_CONFIG_MULTITHREAD mode. Both threads share one on-disk database in WAL mode (writes in
 * BEGIN IMMEDIATE transactions, a busy timeout) and each also has a private in-memory database
 * that grows and shrinks.
 *
 * Operations: batches of inserts (text and blobs of random sizes up to 16 KiB), updates that
 * grow or shrink rows, deletes, point reads, range aggregates, a join, a sort with
 * group_concat, a temp table, an index created and dropped, and the same kinds of statements on
 * the in-memory database.
 *
 * Checks: every call succeeds (no error of any kind); each thread's row count and byte total in
 * the shared database match what it tracked; PRAGMA integrity_check is "ok" at the end; no
 * allocation failed; after every connection is closed current_count and current_bytes are back
 * to their values after sqlite3_initialize(); with memstatus on, current_bytes equals
 * sqlite3_memory_used() (checked with all threads stopped). Prints the operation counts.
 */
#include "common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double deadline;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct worker {
    int id;
    const char *path;
    uint64_t rng;
    /* What this thread has in the shared database. */
    int64_t rows, bytes, next_id;
    /* Operation counts. */
    int64_t ops, writes, reads, mem_ops;
};

static void exec_ok(sqlite3 *db, const char *sql, struct worker *w) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        FAIL("thread %d: \"%.80s\" returned %d (%s)", w->id, sql, rc, err ? err : "");
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql, struct worker *w) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        FAIL("thread %d: prepare \"%.80s\" returned %d (%s)", w->id, sql, rc, sqlite3_errmsg(db));
    return st;
}

static void step_done(sqlite3 *db, sqlite3_stmt *st, struct worker *w) {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE)
        FAIL("thread %d: step \"%.80s\" returned %d (%s)", w->id, sqlite3_sql(st), rc,
             sqlite3_errmsg(db));
    sqlite3_reset(st);
}

static int64_t query_int(sqlite3 *db, sqlite3_stmt *st, struct worker *w) {
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        FAIL("thread %d: query \"%.80s\" returned %d (%s)", w->id, sqlite3_sql(st), rc,
             sqlite3_errmsg(db));
    int64_t v = sqlite3_column_int64(st, 0);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE)
        FAIL("thread %d: query \"%.80s\" ended with %d", w->id, sqlite3_sql(st), rc);
    sqlite3_reset(st);
    return v;
}

static int rnd(struct worker *w, int n) { return (int)(ct_rand(&w->rng) % (uint64_t)n); }

/* A size skewed towards small values, up to 16 KiB. */
static int rnd_size(struct worker *w) {
    switch (rnd(w, 8)) {
    case 0: return rnd(w, 16384) + 1;
    case 1:
    case 2: return rnd(w, 4096) + 1;
    default: return rnd(w, 200) + 1;
    }
}

/* Size of row `id` of this worker through the size query `sz`; -2 when the row is gone. */
static int64_t row_size(sqlite3_stmt *sz, int64_t id, struct worker *w) {
    sqlite3_bind_int64(sz, 1, id);
    sqlite3_bind_int(sz, 2, w->id);
    int rc = sqlite3_step(sz);
    int64_t size = rc == SQLITE_ROW ? sqlite3_column_int64(sz, 0) : -2;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) FAIL("thread %d: size query %d", w->id, rc);
    sqlite3_reset(sz);
    return size;
}

static void *run(void *arg) {
    struct worker *w = arg;
    sqlite3 *db = ct_open(w->path);
    sqlite3_busy_timeout(db, 30000);
    sqlite3 *mem = ct_open(":memory:");
    exec_ok(mem, "CREATE TABLE m(k INTEGER PRIMARY KEY, v BLOB); CREATE INDEX m_v ON m(length(v))",
            w);

    sqlite3_stmt *ins = prep(db, "INSERT INTO t(id, tid, name, data) VALUES(?1, ?2, ?3, randomblob(?4))", w);
    sqlite3_stmt *upd = prep(db, "UPDATE t SET data = randomblob(?2) WHERE id = ?1 AND tid = ?3", w);
    sqlite3_stmt *sz = prep(db, "SELECT coalesce(length(data), -1) FROM t WHERE id = ?1 AND tid = ?2", w);
    sqlite3_stmt *del = prep(db, "DELETE FROM t WHERE id = ?1 AND tid = ?2", w);
    sqlite3_stmt *point = prep(db, "SELECT count(*) FROM t WHERE id = ?1", w);
    sqlite3_stmt *range = prep(db,
        "SELECT total(length(data)) + count(*) FROM t WHERE tid = ?1 AND id BETWEEN ?2 AND ?3", w);
    sqlite3_stmt *join = prep(db,
        "SELECT count(*) FROM t AS x JOIN t AS y ON y.id = x.id + 1 WHERE x.tid = ?1 AND x.id < ?2",
        w);
    sqlite3_stmt *sort = prep(db,
        "SELECT length(group_concat(name, ',')) FROM (SELECT name FROM t WHERE tid = ?1 "
        "ORDER BY name DESC LIMIT 200)", w);
    sqlite3_stmt *mins = prep(mem, "INSERT OR REPLACE INTO m(k, v) VALUES(?1, zeroblob(?2))", w);
    sqlite3_stmt *mdel = prep(mem, "DELETE FROM m WHERE k % 7 = ?1", w);
    sqlite3_stmt *magg = prep(mem, "SELECT total(length(v)) FROM m WHERE k > ?1", w);

    while (now() < deadline) {
        int op = rnd(w, 100);
        w->ops++;
        if (op < 25) { /* a batch of inserts */
            exec_ok(db, "BEGIN IMMEDIATE", w);
            int n = 1 + rnd(w, 8);
            for (int i = 0; i < n; i++) {
                char name[48];
                int size = rnd_size(w);
                int64_t id = (int64_t)w->id * 1000000000 + w->next_id++;
                snprintf(name, sizeof name, "n%d-%lld-%d", w->id, (long long)id, rnd(w, 1000));
                sqlite3_bind_int64(ins, 1, id);
                sqlite3_bind_int(ins, 2, w->id);
                sqlite3_bind_text(ins, 3, name, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int(ins, 4, size);
                step_done(db, ins, w);
                w->rows++;
                w->bytes += size;
            }
            exec_ok(db, "COMMIT", w);
            w->writes++;
        } else if (op < 35 && w->next_id > 0) { /* update: grow or shrink one row */
            int64_t id = (int64_t)w->id * 1000000000 + rnd(w, (int)w->next_id);
            exec_ok(db, "BEGIN IMMEDIATE", w);
            int64_t old = row_size(sz, id, w);
            if (old >= 0) {
                int size = rnd_size(w);
                sqlite3_bind_int64(upd, 1, id);
                sqlite3_bind_int(upd, 2, size);
                sqlite3_bind_int(upd, 3, w->id);
                step_done(db, upd, w);
                w->bytes += size - old;
            }
            exec_ok(db, "COMMIT", w);
            w->writes++;
        } else if (op < 42 && w->next_id > 0) { /* delete one row */
            int64_t id = (int64_t)w->id * 1000000000 + rnd(w, (int)w->next_id);
            exec_ok(db, "BEGIN IMMEDIATE", w);
            int64_t old = row_size(sz, id, w);
            if (old >= 0) {
                sqlite3_bind_int64(del, 1, id);
                sqlite3_bind_int(del, 2, w->id);
                step_done(db, del, w);
                CHECK(sqlite3_changes(db) == 1, "thread %d: delete changed %d rows", w->id,
                      sqlite3_changes(db));
                w->rows--;
                w->bytes -= old;
            }
            exec_ok(db, "COMMIT", w);
            w->writes++;
        } else if (op < 60) { /* point reads */
            for (int i = 0; i < 20; i++) {
                int other = rnd(w, 2);
                sqlite3_bind_int64(point, 1, (int64_t)other * 1000000000 + rnd(w, 5000));
                int64_t c = query_int(db, point, w);
                CHECK(c == 0 || c == 1, "thread %d: point read found %lld rows", w->id,
                      (long long)c);
            }
            w->reads++;
        } else if (op < 70) { /* range aggregate */
            int64_t lo = (int64_t)w->id * 1000000000 + rnd(w, 2000);
            sqlite3_bind_int(range, 1, w->id);
            sqlite3_bind_int64(range, 2, lo);
            sqlite3_bind_int64(range, 3, lo + rnd(w, 500));
            (void)query_int(db, range, w);
            w->reads++;
        } else if (op < 75) { /* join */
            sqlite3_bind_int(join, 1, rnd(w, 2));
            sqlite3_bind_int64(join, 2, (int64_t)rnd(w, 2) * 1000000000 + rnd(w, 3000));
            (void)query_int(db, join, w);
            w->reads++;
        } else if (op < 80) { /* sort + group_concat */
            sqlite3_bind_int(sort, 1, rnd(w, 2));
            (void)query_int(db, sort, w);
            w->reads++;
        } else if (op < 82) { /* temp table and an index created and dropped (in the private db) */
            exec_ok(mem,
                    "CREATE TEMP TABLE IF NOT EXISTS tt(a, b);"
                    "INSERT INTO tt SELECT k, length(v) FROM m LIMIT 300;"
                    "CREATE INDEX IF NOT EXISTS temp.tt_b ON tt(b);"
                    "SELECT count(DISTINCT b) FROM tt;"
                    "DROP INDEX temp.tt_b; DROP TABLE tt;",
                    w);
            w->mem_ops++;
        } else { /* the private in-memory database grows and shrinks */
            for (int i = 0; i < 10; i++) {
                sqlite3_bind_int(mins, 1, rnd(w, 2000));
                sqlite3_bind_int(mins, 2, rnd_size(w));
                step_done(mem, mins, w);
            }
            if (rnd(w, 4) == 0) {
                sqlite3_bind_int(mdel, 1, rnd(w, 7));
                step_done(mem, mdel, w);
            }
            sqlite3_bind_int(magg, 1, rnd(w, 2000));
            (void)query_int(mem, magg, w);
            w->mem_ops++;
        }
    }

    /* This thread's rows in the shared database are what it tracked. */
    sqlite3_stmt *mine = prep(db, "SELECT count(*) FROM t WHERE tid = ?1", w);
    sqlite3_bind_int(mine, 1, w->id);
    int64_t n = query_int(db, mine, w);
    CHECK(n == w->rows, "thread %d: %lld rows in the database, tracked %lld", w->id,
          (long long)n, (long long)w->rows);
    sqlite3_finalize(mine);
    mine = prep(db, "SELECT total(length(data)) FROM t WHERE tid = ?1", w);
    sqlite3_bind_int(mine, 1, w->id);
    int64_t b = query_int(db, mine, w);
    CHECK(b == w->bytes, "thread %d: %lld bytes in the database, tracked %lld", w->id,
          (long long)b, (long long)w->bytes);
    sqlite3_finalize(mine);

    sqlite3_stmt *all[] = {ins, upd, sz, del, point, range, join, sort, mins, mdel, magg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sqlite3_finalize(all[i]);
    ct_close(mem);
    ct_close(db);
    return NULL;
}

int main(int argc, char **argv) {
    double secs = 60;
    int memstatus = 1, i = 1;
    while (i + 1 < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "-t") == 0) secs = atof(argv[i + 1]);
        else if (strcmp(argv[i], "-m") == 0) memstatus = atoi(argv[i + 1]);
        else break;
        i += 2;
    }
    if (i + 1 != argc || secs <= 0 || (memstatus != 0 && memstatus != 1)) {
        fprintf(stderr, "usage: %s [-t SECONDS] [-m 0|1] SPEC\n", argv[0]);
        return 2;
    }
    const char *spec = argv[i];
    ct_begin("soak", spec);
    CONFIG_OK(sqlite3_config(SQLITE_CONFIG_MULTITHREAD), "SQLITE_CONFIG_MULTITHREAD");
    CONFIG_OK(sqlite3_config(SQLITE_CONFIG_MEMSTATUS, memstatus), "SQLITE_CONFIG_MEMSTATUS");
    ct_install(spec);
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");
    sqlalloc_stats base = ct_stats();
    if (memstatus) CHECK_MEMORY_USED("after sqlite3_initialize");

    char dir[512], path[600];
    ct_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/soak.db", dir);
    sqlite3 *db = ct_open(path);
    EXEC(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
             "CREATE TABLE t(id INTEGER PRIMARY KEY, tid INT NOT NULL, name TEXT, data BLOB);"
             "CREATE INDEX t_tid ON t(tid, id); CREATE INDEX t_name ON t(name)");
    ct_close(db);

    deadline = now() + secs;
    pthread_t th[2];
    struct worker w[2];
    for (int k = 0; k < 2; k++) {
        memset(&w[k], 0, sizeof w[k]);
        w[k].id = k;
        w[k].path = path;
        w[k].rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(k + 1);
        CHECK(pthread_create(&th[k], NULL, run, &w[k]) == 0, "pthread_create failed");
    }
    for (int k = 0; k < 2; k++) CHECK(pthread_join(th[k], NULL) == 0, "pthread_join failed");

    db = ct_open(path);
    char ok[256];
    QUERY_TEXT(db, "PRAGMA integrity_check", ok, sizeof ok);
    CHECK(strcmp(ok, "ok") == 0, "integrity_check says \"%s\"", ok);
    int64_t total = QUERY_INT(db, "SELECT count(*) FROM t");
    CHECK(total == w[0].rows + w[1].rows, "%lld rows in the database, the threads tracked %lld",
          (long long)total, (long long)(w[0].rows + w[1].rows));
    ct_close(db);
    ct_rmdir(dir);

    sqlalloc_stats s = ct_stats();
    CHECK(s.failed_calls == 0, "failed_calls is %lld", (long long)s.failed_calls);
    CHECK(s.malloc_calls > base.malloc_calls && s.free_calls > base.free_calls,
          "no allocation counted during the soak");
    CHECK(s.peak_bytes >= s.current_bytes, "peak %lld below current %lld",
          (long long)s.peak_bytes, (long long)s.current_bytes);
    CHECK_BACK_TO(base, "after every connection closed");
    if (memstatus) CHECK_MEMORY_USED("at the end");
    printf("soak %-26s memstatus=%d %.0fs: %lld ops (%lld writes, %lld reads, %lld in-memory), "
           "%lld rows left, %lld mallocs, %lld reallocs, peak %lld bytes\n",
           spec, memstatus, secs, (long long)(w[0].ops + w[1].ops),
           (long long)(w[0].writes + w[1].writes), (long long)(w[0].reads + w[1].reads),
           (long long)(w[0].mem_ops + w[1].mem_ops), (long long)total,
           (long long)(s.malloc_calls - base.malloc_calls),
           (long long)(s.realloc_calls - base.realloc_calls), (long long)s.peak_bytes);
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");
    return 0;
}

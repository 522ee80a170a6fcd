/*
 * t_track
 *
 * The per-connection breakdown from C: sqlalloc_track / sqlalloc_untrack / sqlalloc_sample.
 *  - NULL and unknown connections are SQLITE_MISUSE, a connection tracked twice too;
 *  - two connections (a 4 MB file read through a cache_size of -1000, and :memory:) under
 *    labels,
 *    a third under a label in use gets "#2"; the Prometheus report shows each connection's
 *    cache, schema and stmt bytes and "other", and they add up to sqlite3_memory_used();
 *  - a connection opened with SQLITE_OPEN_NOMUTEX keeps the owner's samples (sqlalloc_sample);
 *  - after sqlalloc_untrack the connection is gone from the report.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char report[1 << 16];

static void render(void) {
    int64_t n = sqlalloc_report_to_buffer("prometheus", report, sizeof report);
    CHECK(n > 0 && (size_t)n < sizeof report, "report_to_buffer: %lld", (long long)n);
}

/* The value of the sample line starting with `prefix`, or -1. */
static long long value(const char *prefix) {
    const char *p = report;
    size_t len = strlen(prefix);
    while (p && *p) {
        if (strncmp(p, prefix, len) == 0 && p[len] == ' ') return atoll(p + len + 1);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

static long long conn_bytes(const char *label, const char *use) {
    char prefix[256];
    snprintf(prefix, sizeof prefix,
             "sqlite_connection_bytes{backend=\"system\",spec=\"system\",connection=\"%s\",use=\"%s\"}",
             label, use);
    return value(prefix);
}

int main(void) {
    ct_begin("track", "system");
    ct_install("system");
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");
    CHECK(sqlalloc_track(NULL, "x") == SQLITE_MISUSE, "track(NULL) is not SQLITE_MISUSE");
    CHECK(strstr(sqlalloc_errmsg(), "db is NULL") != NULL, "errmsg \"%s\"", sqlalloc_errmsg());
    CHECK(sqlalloc_untrack(NULL) == SQLITE_MISUSE, "untrack(NULL) is not SQLITE_MISUSE");
    CHECK(sqlalloc_sample(NULL) == SQLITE_MISUSE, "sample(NULL) is not SQLITE_MISUSE");

    char path[128];
    snprintf(path, sizeof path, "/tmp/sqlalloc-t_track-%d.db", (int)getpid());
    unlink(path);
    sqlite3 *writer = ct_open(path);
    EXEC(writer, "CREATE TABLE t(x); BEGIN; INSERT INTO t SELECT randomblob(1000) FROM "
                 "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<4000) "
                 "SELECT i FROM c); COMMIT");
    sqlite3_close(writer);
    sqlite3 *file = ct_open(path);
    sqlite3 *mem = ct_open(":memory:");
    sqlite3 *third = ct_open(":memory:");
    CHECK(sqlalloc_untrack(mem) == SQLITE_MISUSE, "untrack of an untracked connection");
    CHECK(strstr(sqlalloc_errmsg(), "not tracked") != NULL, "errmsg \"%s\"", sqlalloc_errmsg());
    CHECK(sqlalloc_track(file, "file") == SQLITE_OK, "track: %s", sqlalloc_errmsg());
    CHECK(sqlalloc_track(file, "again") == SQLITE_MISUSE, "tracking twice is not MISUSE");
    CHECK(sqlalloc_track(mem, NULL) == SQLITE_OK, "track: %s", sqlalloc_errmsg());
    CHECK(sqlalloc_track(third, "file") == SQLITE_OK, "track: %s", sqlalloc_errmsg());
    EXEC(file, "PRAGMA cache_size=-1000; SELECT sum(length(x)) FROM t");
    EXEC(mem, "CREATE TABLE u(y); INSERT INTO u VALUES (randomblob(50000))");

    render();
    long long cache = conn_bytes("file", "cache");
    CHECK(cache > 900 * 1024 && cache <= 1000 * 1024 * 105 / 100,
          "file's cache %lld bytes for cache_size -1000:\n%s", cache, report);
    CHECK(conn_bytes(":memory:", "cache") > 0, "no :memory: figures:\n%s", report);
    CHECK(conn_bytes("file#2", "schema") >= 0, "the second \"file\" is not \"file#2\":\n%s", report);
    long long sum = 0;
    const char *labels[] = {"file", ":memory:", "file#2"};
    const char *uses[] = {"cache", "schema", "stmt"};
    for (int i = 0; i < 3; i++)
        for (int u = 0; u < 3; u++) sum += conn_bytes(labels[i], uses[u]);
    long long other = conn_bytes("other", "other");
    CHECK(other >= 0, "no other:\n%s", report);
    CHECK(sum + other == sqlite3_memory_used(), "%lld + %lld != sqlite3_memory_used() %lld", sum,
          other, (long long)sqlite3_memory_used());

    sqlite3 *nomutex = NULL;
    CHECK(sqlite3_open_v2(":memory:", &nomutex, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                          NULL) == SQLITE_OK,
          "open NOMUTEX");
    CHECK(sqlalloc_track(nomutex, "nomutex") == SQLITE_OK, "track: %s", sqlalloc_errmsg());
    EXEC(nomutex, "CREATE TABLE v(z); INSERT INTO v VALUES (randomblob(100000))");
    render();
    long long before = conn_bytes("nomutex", "cache");
    CHECK(value("sqlite_connection_sampled_by_owner{backend=\"system\",spec=\"system\","
                "connection=\"nomutex\"}") == 1,
          "a connection without a mutex read by the reader:\n%s", report);
    CHECK(sqlalloc_sample(nomutex) == SQLITE_OK, "sample: %s", sqlalloc_errmsg());
    render();
    CHECK(conn_bytes("nomutex", "cache") > before, "the owner's sample is not shown (%lld)", before);

    CHECK(sqlalloc_untrack(nomutex) == SQLITE_OK, "untrack");
    CHECK(sqlalloc_untrack(third) == SQLITE_OK, "untrack");
    CHECK(sqlalloc_untrack(mem) == SQLITE_OK, "untrack");
    CHECK(sqlalloc_untrack(file) == SQLITE_OK, "untrack");
    render();
    CHECK(strstr(report, "sqlite_connection_bytes") == NULL, "untracked connections still shown");
    sqlite3_close(nomutex);
    sqlite3_close(third);
    sqlite3_close(mem);
    sqlite3_close(file);
    unlink(path);
    printf("t_track: ok\n");
    return 0;
}

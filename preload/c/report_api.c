/*
 * The report functions of the C API, from a program linked with libsqlalloc (no preload):
 * install, run a workload, then export the report the way a metrics endpoint would.
 *
 *   report_api JSON_PATH
 *
 * Writes the JSON report to JSON_PATH with sqlalloc_report, prints the Prometheus report from
 * sqlalloc_report_to_buffer, and checks the functions' argument handling. Any failed check prints
 * "FAIL: ..." and exits with status 1.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlalloc.h"

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            printf("FAIL: line %d: ", __LINE__);                                                  \
            printf(__VA_ARGS__);                                                                  \
            printf("\n");                                                                         \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

int main(int argc, char **argv) {
    CHECK(argc == 2, "usage: report_api JSON_PATH");
    /* Before any install: no report, a clear message. */
    CHECK(sqlalloc_report("stderr") == SQLITE_ERROR, "report before install");
    CHECK(strstr(sqlalloc_errmsg(), "installed") != NULL, "message: %s", sqlalloc_errmsg());

    CHECK(sqlalloc_install("system+limit:max=64M") == SQLITE_OK, "install: %s", sqlalloc_errmsg());
    sqlite3 *db;
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK, "open");
    CHECK(sqlite3_exec(db,
                       "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1"
                       " FROM c WHERE i<5000) INSERT INTO t SELECT randomblob(i % 500) FROM c;",
                       NULL, NULL, NULL) == SQLITE_OK,
          "workload");

    /* Argument checks. */
    CHECK(sqlalloc_report(NULL) == SQLITE_MISUSE, "NULL target");
    CHECK(sqlalloc_report("xml:/tmp/x") == SQLITE_ERROR, "bad target");
    CHECK(strstr(sqlalloc_errmsg(), "'xml:/tmp/x'") != NULL, "message: %s", sqlalloc_errmsg());
    CHECK(sqlalloc_report("json:/nonexistent-dir/r.json") == SQLITE_ERROR, "unwritable path");
    CHECK(strstr(sqlalloc_errmsg(), "/nonexistent-dir/r.json") != NULL, "message: %s",
          sqlalloc_errmsg());
    CHECK(sqlalloc_report_to_buffer(NULL, NULL, 0) == -1, "NULL format");
    CHECK(sqlalloc_report_to_buffer("yaml", NULL, 0) == -1, "bad format");
    char small[16];
    CHECK(sqlalloc_report_to_buffer("json", NULL, sizeof small) == -1, "NULL buf with len");

    /* A file report, and the Prometheus text into a buffer, cut and whole. */
    char target[4096];
    snprintf(target, sizeof target, "json:%s", argv[1]);
    CHECK(sqlalloc_report(target) == SQLITE_OK, "json report: %s", sqlalloc_errmsg());
    int64_t n = sqlalloc_report_to_buffer("prometheus", NULL, 0);
    CHECK(n > 100, "size %lld", (long long)n);
    CHECK(sqlalloc_report_to_buffer("prometheus", small, sizeof small) >= (int64_t)sizeof small,
          "cut report returns the full length");
    CHECK(strlen(small) == sizeof small - 1, "cut report is NUL-terminated");
    char *buf = malloc((size_t)n + 1);
    CHECK(buf != NULL, "malloc");
    int64_t m = sqlalloc_report_to_buffer("prometheus", buf, (size_t)n + 1);
    /* Nothing allocated from SQLite in between, so the same report, whole. */
    CHECK(m == n && (size_t)m == strlen(buf), "whole report: %lld vs %lld, strlen %zu",
          (long long)m, (long long)n, strlen(buf));
    sqlalloc_stats s;
    CHECK(sqlalloc_get_stats(&s) == SQLITE_OK, "stats");
    printf("stats: malloc_calls=%lld current_bytes=%lld sqlite_used=%lld\n",
           (long long)s.malloc_calls, (long long)s.current_bytes,
           (long long)sqlite3_memory_used());
    printf("--- prometheus\n%s--- end\n", buf);
    free(buf);
    return sqlite3_close(db) == SQLITE_OK ? 0 : 1;
}

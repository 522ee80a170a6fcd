/*
 * sqlalloc demo: the same SQLite workload under each allocator, one after the other in one
 * process (sqlite3_shutdown() and a new sqlalloc_install() between them), then a table of the
 * counters each allocator kept.
 *
 *   make demo                      # the default list of specs
 *   build/demo SPEC [SPEC...]      # your own
 *
 * "end bytes" is current_bytes after the connection is closed (0 when nothing is left behind,
 * or the few bytes SQLite keeps after sqlite3_initialize). The last default spec has a limit
 * smaller than the workload needs, to show refused requests in "failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <sqlalloc.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

static const char *default_specs[] = {
    "system",
    "debug",
    "memsys3:heap=32M",
    "memsys5:heap=64M,min=32",
    "system+limit:max=64M",
    "system+limit:max=2M",
};

/* Run a few statements; returns the first failing result code (SQLITE_OK if none). */
static int workload(sqlite3 *db) {
    static const char *steps[] = {
        "CREATE TABLE person(id INTEGER PRIMARY KEY, name TEXT, city INTEGER, photo BLOB)",
        "CREATE TABLE city(id INTEGER PRIMARY KEY, name TEXT UNIQUE)",
        "INSERT INTO city(id, name) WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
        "FROM c WHERE i < 200) SELECT i, 'city-' || i FROM c",
        "INSERT INTO person(name, city, photo) WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
        "SELECT i + 1 FROM c WHERE i < 30000) SELECT 'person-' || i, i % 200 + 1, "
        "CASE WHEN i % 1000 = 0 THEN randomblob(120000) ELSE randomblob(i % 300) END FROM c",
        "CREATE INDEX person_city ON person(city)",
        "SELECT city.name, count(*), sum(length(photo)) FROM person JOIN city ON "
        "city.id = person.city GROUP BY city.name ORDER BY 2 DESC",
        "SELECT length(group_concat(name)) FROM person",
        "UPDATE person SET name = upper(name) WHERE id % 3 = 0",
        "DELETE FROM person WHERE id % 7 = 0",
        "PRAGMA integrity_check",
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        int rc = sqlite3_exec(db, steps[i], NULL, NULL, NULL);
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

int main(int argc, char **argv) {
    const char **specs = default_specs;
    int n = (int)(sizeof default_specs / sizeof default_specs[0]);
    if (argc > 1) {
        specs = (const char **)(argv + 1);
        n = argc - 1;
    }
    printf("%-26s %9s %9s %8s %11s %9s %7s %10s  %s\n", "backend", "mallocs", "frees",
           "reallocs", "peak bytes", "end bytes", "failed", "largest", "result");
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const char *spec = specs[i];
        if (sqlalloc_install(spec) != SQLITE_OK) {
            printf("%-26s install failed: %s\n", spec, sqlalloc_errmsg());
            bad = 1;
            continue;
        }
        sqlite3 *db = NULL;
        int rc = sqlite3_initialize();
        if (rc == SQLITE_OK) rc = sqlite3_open(":memory:", &db);
        if (rc == SQLITE_OK) rc = workload(db);
        sqlite3_close(db);
        sqlalloc_stats s;
        if (sqlalloc_get_stats(&s) != SQLITE_OK) memset(&s, 0, sizeof s);
        printf("%-26s %9lld %9lld %8lld %11lld %9lld %7lld %10lld  %s\n", spec,
               (long long)s.malloc_calls, (long long)s.free_calls, (long long)s.realloc_calls,
               (long long)s.peak_bytes, (long long)s.current_bytes, (long long)s.failed_calls,
               (long long)s.largest_request, rc == SQLITE_OK ? "ok" : sqlite3_errstr(rc));
        sqlite3_shutdown();
    }
    return bad;
}

/*
 * A program built against an installed sqlalloc with nothing but pkg-config's flags
 * (c-tests/t_pkgconfig.sh): installs the spec in argv[1], runs SQLite and checks the counters.
 */
#include <sqlalloc.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *spec = argc > 1 ? argv[1] : "system";
    if (sqlalloc_install(spec) != SQLITE_OK) {
        fprintf(stderr, "pc_user: install(%s) failed: %s\n", spec, sqlalloc_errmsg());
        return 1;
    }
    sqlite3 *db = NULL;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
        sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t SELECT randomblob(1000) FROM "
                         "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE "
                         "i<500) SELECT i FROM c)",
                     NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "pc_user: SQLite failed: %s\n", db ? sqlite3_errmsg(db) : "open");
        return 1;
    }
    sqlalloc_stats s;
    if (sqlalloc_get_stats(&s) != SQLITE_OK || s.malloc_calls == 0 ||
        s.current_bytes != sqlite3_memory_used()) {
        fprintf(stderr, "pc_user: counters wrong\n");
        return 1;
    }
    sqlite3_close(db);
    printf("pc_user ok: %s, %lld mallocs, peak %lld bytes\n", sqlalloc_installed_spec(),
           (long long)s.malloc_calls, (long long)s.peak_bytes);
    return strcmp(sqlalloc_installed_spec(), spec) == 0 ? 0 : 1;
}

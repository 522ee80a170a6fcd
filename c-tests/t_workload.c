/*
 * t_workload [-n ROWS] SPEC [SPEC...]
 *
 * The standard workload under each SPEC, on an in-memory database and on an on-disk database in
 * a temp dir. With several specs, one process goes through all of them: sqlite3_shutdown() and a
 * new sqlalloc_install() between them (re-install after shutdown must work).
 *
 * Checked: our current_bytes equals sqlite3_memory_used() (memstatus is on, one thread) with the
 * connection open and after it is closed; integrity_check is ok (inside the workload);
 * malloc_calls > 0; after each close current_count and current_bytes are back to their values
 * right after sqlite3_initialize().
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void run_one(const char *spec, int rows) {
    ct_begin("workload", spec);
    ct_install(spec);
    CHECK(strcmp(sqlalloc_installed_spec(), spec) == 0, "installed spec is \"%s\"",
          sqlalloc_installed_spec());
    int rc = sqlite3_initialize();
    CHECK(rc == SQLITE_OK, "sqlite3_initialize returned %d", rc);
    sqlalloc_stats base = ct_stats();
    CHECK_MEMORY_USED("after sqlite3_initialize");

    /* In memory. */
    sqlite3 *db = ct_open(":memory:");
    ct_workload(db, rows, 1);
    CHECK_MEMORY_USED("in-memory database open after the workload");
    sqlalloc_stats s = ct_stats();
    CHECK(s.malloc_calls > 0, "malloc_calls is 0 after the workload");
    CHECK(s.peak_bytes >= s.current_bytes, "peak_bytes %lld < current_bytes %lld",
          (long long)s.peak_bytes, (long long)s.current_bytes);
    CHECK(s.largest_request >= (1 << 20), "largest_request %lld < the 1 MiB blob",
          (long long)s.largest_request);
    CHECK(s.failed_calls == 0, "failed_calls is %lld with a heap that is large enough",
          (long long)s.failed_calls);
    ct_note("in-memory: %lld mallocs, peak %lld bytes", (long long)s.malloc_calls,
            (long long)s.peak_bytes);
    ct_close(db);
    CHECK_MEMORY_USED("after closing the in-memory database");
    CHECK_BACK_TO(base, "after closing the in-memory database");

    /* On disk. */
    char dir[512], path[600];
    ct_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/workload.db", dir);
    db = ct_open(path);
    EXEC(db, "PRAGMA synchronous=OFF");
    ct_workload(db, rows, 2);
    CHECK_MEMORY_USED("on-disk database open after the workload");
    ct_close(db);
    /* Reopen: the data survived and reads back consistently. */
    db = ct_open(path);
    CHECK(QUERY_INT(db, "SELECT count(*) FROM t1") == rows - rows / 10,
          "on-disk table t1 lost rows after reopening");
    char ok[64];
    QUERY_TEXT(db, "PRAGMA integrity_check", ok, sizeof ok);
    CHECK(strcmp(ok, "ok") == 0, "integrity_check after reopening says \"%s\"", ok);
    CHECK_MEMORY_USED("on-disk database reopened");
    ct_close(db);
    ct_rmdir(dir);
    CHECK_MEMORY_USED("after closing the on-disk database");
    CHECK_BACK_TO(base, "after closing the on-disk database");

    rc = sqlite3_shutdown();
    CHECK(rc == SQLITE_OK, "sqlite3_shutdown returned %d", rc);
}

int main(int argc, char **argv) {
    int rows = 100000, i = 1;
    ct_begin("workload", NULL);
    if (i + 1 < argc && strcmp(argv[i], "-n") == 0) {
        rows = atoi(argv[i + 1]);
        i += 2;
    }
    if (i >= argc || rows < 10) {
        fprintf(stderr, "usage: %s [-n ROWS>=10] SPEC [SPEC...]\n", argv[0]);
        return 2;
    }
    for (; i < argc; i++) run_one(argv[i], rows);
    return 0;
}

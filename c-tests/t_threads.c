/*
 * t_threads [-n ROWS] SPEC
 *
 * SQLITE_CONFIG_MULTITHREAD and SQLITE_CONFIG_MEMSTATUS=0 (so SQLite takes no lock around
 * allocations: our allocator sees truly concurrent calls). Two threads, each with its own
 * connections, run the standard workload on an in-memory database and then on an on-disk one.
 * No crash, every check inside the workload passes, and after every connection is closed
 * current_count and current_bytes are back to their values after sqlite3_initialize().
 */
#include "common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct job {
    int id, rows;
    const char *dir;
};

static void *run(void *arg) {
    struct job *j = arg;
    sqlite3 *db = ct_open(":memory:");
    ct_workload(db, j->rows, 10 + (uint64_t)j->id);
    ct_close(db);
    char path[600];
    snprintf(path, sizeof path, "%s/thread%d.db", j->dir, j->id);
    db = ct_open(path);
    EXEC(db, "PRAGMA synchronous=OFF");
    ct_workload(db, j->rows / 2, 20 + (uint64_t)j->id);
    ct_close(db);
    return NULL;
}

int main(int argc, char **argv) {
    int rows = 100000, i = 1;
    if (i + 1 < argc && strcmp(argv[i], "-n") == 0) {
        rows = atoi(argv[i + 1]);
        i += 2;
    }
    if (i + 1 != argc || rows < 10) {
        fprintf(stderr, "usage: %s [-n ROWS>=10] SPEC\n", argv[0]);
        return 2;
    }
    const char *spec = argv[i];
    ct_begin("threads", spec);
    CONFIG_OK(sqlite3_config(SQLITE_CONFIG_MULTITHREAD), "SQLITE_CONFIG_MULTITHREAD");
    CONFIG_OK(sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0), "SQLITE_CONFIG_MEMSTATUS");
    ct_install(spec);
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");
    sqlalloc_stats base = ct_stats();

    char dir[512];
    ct_mkdtemp(dir, sizeof dir);
    pthread_t t[2];
    struct job jobs[2];
    for (int k = 0; k < 2; k++) {
        jobs[k] = (struct job){k, rows, dir};
        CHECK(pthread_create(&t[k], NULL, run, &jobs[k]) == 0, "pthread_create failed");
    }
    for (int k = 0; k < 2; k++) CHECK(pthread_join(t[k], NULL) == 0, "pthread_join failed");
    ct_rmdir(dir);

    sqlalloc_stats s = ct_stats();
    CHECK(s.malloc_calls > base.malloc_calls, "no malloc counted during the threads");
    CHECK(s.free_calls > base.free_calls, "no free counted during the threads");
    CHECK(s.failed_calls == 0, "failed_calls is %lld", (long long)s.failed_calls);
    CHECK_BACK_TO(base, "after both threads closed their connections");
    ct_note("%lld mallocs, peak %lld", (long long)s.malloc_calls, (long long)s.peak_bytes);
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");
    return 0;
}

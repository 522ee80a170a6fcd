/* Loaded with LD_PRELOAD beside libsqlalloc_preload.so by bench/live_costs.py: opens 100
 * in-memory connections (each with a table and a 1000-byte row) before the program's main, all
 * tracked by the preload's open interposer, and keeps them open. With OPEN100_UNTRACK=1 each is
 * untracked again right after its open (sqlalloc_untrack, found at run time), so that the bench
 * can tell the cost of tracking them from the cost of having opened them. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sqlite3 *dbs[100];

__attribute__((constructor)) static void open100(void) {
    const char *u = getenv("OPEN100_UNTRACK");
    int (*untrack)(sqlite3 *) = 0;
    if (u && !strcmp(u, "1")) {
        *(void **)&untrack = dlsym(RTLD_DEFAULT, "sqlalloc_untrack");
        if (!untrack) {
            fprintf(stderr, "open100: sqlalloc_untrack not found\n");
            exit(1);
        }
    }
    for (int i = 0; i < 100; i++) {
        if (sqlite3_open(":memory:", &dbs[i]) != SQLITE_OK) {
            fprintf(stderr, "open100: sqlite3_open failed\n");
            exit(1);
        }
        if (untrack && untrack(dbs[i]) != SQLITE_OK) {
            fprintf(stderr, "open100: sqlalloc_untrack failed\n");
            exit(1);
        }
        sqlite3_exec(dbs[i], "CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(1000));", 0, 0,
                     0);
    }
}

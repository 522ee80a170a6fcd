/* Loaded with LD_PRELOAD beside libsqlalloc_preload.so by bench/live_costs.py: opens 100
 * in-memory connections (each with a table and a 1000-byte row) before the program's main, all
 * tracked by the preload's open interposer, and keeps them open. */
#include <sqlite3.h>
#include <stdio.h>

static sqlite3 *dbs[100];

__attribute__((constructor)) static void open100(void) {
    for (int i = 0; i < 100; i++) {
        if (sqlite3_open(":memory:", &dbs[i]) != SQLITE_OK) {
            fprintf(stderr, "open100: sqlite3_open failed\n");
            return;
        }
        sqlite3_exec(dbs[i], "CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(1000));", 0, 0,
                     0);
    }
}

/* A library whose constructor opens SQLite connections before the preload library's constructor
 * ran (LD_PRELOAD="libsqlalloc_preload.so first_open.so": the later library is initialized
 * first), so that its first open is what initializes SQLite and installs the allocator. The
 * connections stay open to the exit report: preload/tests/preload.rs checks that both are
 * tracked. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

static sqlite3 *a, *b;

__attribute__((constructor)) static void first_open(void) {
    if (sqlite3_open(":memory:", &a) != SQLITE_OK ||
        sqlite3_open_v2("file:second?mode=memory", &b,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                        NULL) != SQLITE_OK) {
        fprintf(stderr, "first_open: open failed\n");
        exit(1);
    }
    if (sqlite3_exec(a, "CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(5000));", 0, 0, 0) ||
        sqlite3_exec(b, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", 0, 0, 0)) {
        fprintf(stderr, "first_open: exec failed\n");
        exit(1);
    }
}

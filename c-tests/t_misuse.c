/*
 * t_misuse
 *
 * The C API before and after SQLite initializes:
 *  - before any install: sqlalloc_get_stats gives SQLITE_ERROR (and NULL gives SQLITE_MISUSE),
 *    sqlalloc_installed_spec is "", sqlalloc_leak_report gives -1;
 *  - install "system", initialize, use SQLite; then sqlalloc_install of another spec returns
 *    SQLITE_MISUSE, sqlalloc_errmsg() says SQLite is already initialized, and nothing changed:
 *    the installed spec and every counter are exactly as before the call; SQLite keeps working
 *    on the allocator that was installed;
 *  - after closing the connections and sqlite3_shutdown(), installing another spec works and
 *    SQLite runs on it (re-install after shutdown).
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

int main(void) {
    ct_begin("misuse", "system");
    sqlalloc_stats s;
    memset(&s, 0x5a, sizeof s);
    CHECK(sqlalloc_get_stats(&s) == SQLITE_ERROR, "get_stats before any install is not an error");
    CHECK(s.current_bytes == 0x5a5a5a5a5a5a5a5aLL, "get_stats wrote *out although it failed");
    CHECK(strstr(sqlalloc_errmsg(), "installed") != NULL,
          "errmsg of get_stats before install is \"%s\"", sqlalloc_errmsg());
    CHECK(sqlalloc_get_stats(NULL) == SQLITE_MISUSE, "get_stats(NULL) is not SQLITE_MISUSE");
    CHECK(strcmp(sqlalloc_installed_spec(), "") == 0, "installed spec before install is \"%s\"",
          sqlalloc_installed_spec());
    CHECK(sqlalloc_leak_report(2) == -1, "leak_report before install is not -1");
    sqlalloc_reset_peak(); /* no effect, no crash */

    ct_install("system");
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");
    sqlite3 *db = ct_open(":memory:");
    EXEC(db, "CREATE TABLE t(x); INSERT INTO t VALUES(randomblob(5000))");

    sqlalloc_stats before = ct_stats();
    CHECK(before.malloc_calls > 0, "no malloc counted");
    int rc = sqlalloc_install("memsys5:heap=8M");
    CHECK(rc == SQLITE_MISUSE, "install after sqlite3_initialize returned %d, not SQLITE_MISUSE",
          rc);
    CHECK(strstr(sqlalloc_errmsg(), "already initialized") != NULL,
          "errmsg after a late install is \"%s\"", sqlalloc_errmsg());
    CHECK(strcmp(sqlalloc_installed_spec(), "system") == 0,
          "installed spec changed to \"%s\" by a refused install", sqlalloc_installed_spec());
    sqlalloc_stats after = ct_stats();
    CHECK(memcmp(&before, &after, sizeof before) == 0,
          "counters changed by a refused install (malloc_calls %lld -> %lld, current_bytes "
          "%lld -> %lld)",
          (long long)before.malloc_calls, (long long)after.malloc_calls,
          (long long)before.current_bytes, (long long)after.current_bytes);
    /* Also refused: a bad spec while initialized is a bad spec (checked first) or misuse. */
    rc = sqlalloc_install("bogus");
    CHECK(rc == SQLITE_ERROR || rc == SQLITE_MISUSE, "install(\"bogus\") while initialized gave %d",
          rc);
    CHECK(strcmp(sqlalloc_installed_spec(), "system") == 0, "installed spec changed");

    /* SQLite still runs on the old allocator. */
    EXEC(db, "INSERT INTO t SELECT randomblob(5000) FROM t");
    CHECK(ct_stats().malloc_calls > after.malloc_calls, "SQLite stopped using the allocator");
    CHECK_MEMORY_USED("after the refused install");
    ct_close(db);
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");

    /* Re-install after shutdown. */
    ct_begin("misuse", "memsys5:heap=8M");
    ct_install("memsys5:heap=8M");
    CHECK(strcmp(sqlalloc_installed_spec(), "memsys5:heap=8M") == 0,
          "installed spec after re-install is \"%s\"", sqlalloc_installed_spec());
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize after re-install failed");
    sqlalloc_stats base = ct_stats();
    db = ct_open(":memory:");
    EXEC(db, "CREATE TABLE t(x); INSERT INTO t VALUES(randomblob(5000))");
    CHECK(ct_stats().malloc_calls > base.malloc_calls, "new allocator not used after re-install");
    CHECK_MEMORY_USED("after re-install");
    ct_close(db);
    CHECK_BACK_TO(base, "after re-install and close");
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");
    return 0;
}

/*
 * t_badspec
 *
 * A table of bad specs. Each gets SQLITE_ERROR (SQLITE_MISUSE for NULL) from sqlalloc_install, a
 * message from sqlalloc_errmsg() that names the offending part, and installs nothing: first with
 * nothing installed (installed spec stays "", get_stats stays an error), then again with "system"
 * installed (installed spec stays "system", counters unchanged).
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

struct bad {
    const char *spec; /* NULL: the NULL pointer */
    int rc;
    const char *needle; /* must appear in sqlalloc_errmsg() */
    const char *why;
};

static const struct bad cases[] = {
    {"", SQLITE_ERROR, "empty", "empty spec"},
    {"   ", SQLITE_ERROR, "empty", "blank spec"},
    {"bogus", SQLITE_ERROR, "bogus", "unknown backend"},
    {"memsys4:heap=1M", SQLITE_ERROR, "memsys4", "unknown backend with options"},
    {"system:heap=1M", SQLITE_ERROR, "heap", "unknown key"},
    {"memsys5:heap=1M,mni=8", SQLITE_ERROR, "mni", "misspelt key"},
    {"memsys5:heap=12X", SQLITE_ERROR, "12X", "bad size unit"},
    {"memsys3:heap=1MB", SQLITE_ERROR, "1MB", "two-letter size unit"},
    {"memsys5:heap=0", SQLITE_ERROR, "heap=0", "zero heap"},
    {"system+limit:max=0", SQLITE_ERROR, "max=0", "zero limit"},
    {"memsys5:heap=99999999999999999999", SQLITE_ERROR, "99999999999999999999", "overflow"},
    {"memsys5:heap=17179869184G", SQLITE_ERROR, "17179869184G", "overflow after the unit"},
    {"memsys5:heap=-5", SQLITE_ERROR, "-5", "negative size"},
    {"system+limit:max=-1M", SQLITE_ERROR, "-1M", "negative limit"},
    {"system+", SQLITE_ERROR, "+", "trailing '+'"},
    {"limit:max=1M", SQLITE_ERROR, "limit:max=1M", "a layer first"},
    {"memsys5:heap=1M,heap=2M", SQLITE_ERROR, "heap", "a key twice"},
    {"system+limit:max=1M+limit:max=2M", SQLITE_ERROR, "limit", "a layer twice"},
    {"system+memsys5", SQLITE_ERROR, "memsys5", "two backends"},
    {"system+limit", SQLITE_ERROR, "max", "limit without max"},
    {"memsys5:", SQLITE_ERROR, "memsys5:", "empty options"},
    {"memsys5:heap", SQLITE_ERROR, "heap", "key without value"},
    {"debug:backtrace=65", SQLITE_ERROR, "backtrace", "backtrace too deep"},
    {"sys tem", SQLITE_ERROR, "sys tem", "space inside"},
    {"tlsf:heap=0", SQLITE_ERROR, "heap=0", "zero tlsf heap"},
    {"tlsf:shards=0", SQLITE_ERROR, "shards", "tlsf without shards"},
    {"tlsf:min=8", SQLITE_ERROR, "min", "a memsys5 key given to tlsf"},
    {NULL, SQLITE_MISUSE, "NULL", "NULL spec"},
};

static void run_table(const char *expect_spec, const sqlalloc_stats *expect_stats) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct bad *c = &cases[i];
        const char *shown = c->spec ? c->spec : "(NULL)";
        int rc = sqlalloc_install(c->spec);
        CHECK(rc == c->rc, "%s \"%s\": install returned %d, expected %d", c->why, shown, rc,
              c->rc);
        const char *msg = sqlalloc_errmsg();
        CHECK(msg != NULL && strstr(msg, c->needle) != NULL,
              "%s \"%s\": errmsg \"%s\" does not name \"%s\"", c->why, shown, msg ? msg : "(null)",
              c->needle);
        CHECK(strcmp(sqlalloc_installed_spec(), expect_spec) == 0,
              "%s \"%s\": installed spec is now \"%s\", expected \"%s\"", c->why, shown,
              sqlalloc_installed_spec(), expect_spec);
        sqlalloc_stats s;
        if (expect_stats == NULL) {
            CHECK(sqlalloc_get_stats(&s) == SQLITE_ERROR,
                  "%s \"%s\": get_stats works, so something was installed", c->why, shown);
        } else {
            s = ct_stats();
            CHECK(memcmp(&s, expect_stats, sizeof s) == 0, "%s \"%s\": counters changed", c->why,
                  shown);
        }
    }
}

int main(void) {
    ct_begin("badspec", "-");
    run_table("", NULL);
    ct_install("system");
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");
    sqlite3 *db = ct_open(":memory:");
    EXEC(db, "CREATE TABLE t(x)");
    ct_close(db);
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");
    sqlalloc_stats s = ct_stats();
    run_table("system", &s);
    return 0;
}

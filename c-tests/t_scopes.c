/*
 * t_scopes SPEC
 *
 * The scopes layer from C (SPEC must contain "+scopes"):
 *  - with "system" installed (no scopes layer): sqlalloc_scope_create and
 *    sqlalloc_scope_get_stats give SQLITE_MISUSE naming the missing layer; entering scope 0
 *    works, entering scope 1 gives -1;
 *  - under SPEC: every error of sqlalloc_scope_create (NULL, empty, duplicate name: SQLITE_ERROR;
 *    negative cap: SQLITE_ERROR; NULL out: SQLITE_MISUSE; the 257th scope: SQLITE_FULL naming
 *    256), each with its errmsg and *out untouched; sqlalloc_scope_get_stats of NULL
 *    (SQLITE_MISUSE) and unknown ids (SQLITE_ERROR, *out untouched);
 *  - sqlalloc_scope_enter returns the previous scope, -1 and no change for an unknown one;
 *  - a block is charged to the thread's scope and credited back to it; a statement past a
 *    scope's cap gets SQLITE_NOMEM, the other scope is unchanged, the connection works again;
 *  - the scopes' current_bytes add up to sqlalloc_get_stats' and to sqlite3_memory_used().
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

static sqlalloc_stats scope_stats(sqlalloc_scope s) {
    sqlalloc_stats st;
    int rc = sqlalloc_scope_get_stats(s, &st);
    CHECK(rc == SQLITE_OK, "sqlalloc_scope_get_stats(%d) returned %d: %s", (int)s, rc,
          sqlalloc_errmsg());
    return st;
}

static void errmsg_has(const char *what, const char *needle) {
    CHECK(strstr(sqlalloc_errmsg(), needle) != NULL, "%s: errmsg \"%s\" does not say \"%s\"",
          what, sqlalloc_errmsg(), needle);
}

static int64_t scopes_total(sqlalloc_scope n) {
    int64_t total = 0;
    for (sqlalloc_scope s = 0; s < n; s++) total += scope_stats(s).current_bytes;
    return total;
}

int main(int argc, char **argv) {
    if (argc != 2 || strstr(argv[1], "+scopes") == NULL) {
        fprintf(stderr, "usage: %s SPEC-WITH-+scopes\n", argv[0]);
        return 2;
    }
    const char *spec = argv[1];
    ct_begin("scopes", spec);

    /* No scopes layer. */
    ct_install("system");
    sqlalloc_scope id = 77;
    CHECK(sqlalloc_scope_create("a", 0, &id) == SQLITE_MISUSE, "create without the layer");
    errmsg_has("create without the layer", "no scopes layer");
    CHECK(id == 77, "create without the layer wrote *out");
    sqlalloc_stats st;
    CHECK(sqlalloc_scope_get_stats(0, &st) == SQLITE_MISUSE, "get_stats without the layer");
    errmsg_has("get_stats without the layer", "no scopes layer");
    CHECK(sqlalloc_scope_enter(0) == 0, "entering scope 0 without the layer");
    CHECK(sqlalloc_scope_enter(1) == -1, "entering scope 1 without the layer");
    errmsg_has("enter(1) without the layer", "unknown scope 1");

    ct_install(spec);
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");

    /* Every error of sqlalloc_scope_create. */
    CHECK(sqlalloc_scope_create(NULL, 0, &id) == SQLITE_ERROR, "NULL name");
    errmsg_has("NULL name", "name is NULL");
    CHECK(sqlalloc_scope_create("", 0, &id) == SQLITE_ERROR, "empty name");
    errmsg_has("empty name", "empty");
    CHECK(sqlalloc_scope_create("a", -1, &id) == SQLITE_ERROR, "negative cap");
    errmsg_has("negative cap", "negative cap -1");
    CHECK(sqlalloc_scope_create("a", 0, NULL) == SQLITE_MISUSE, "NULL out");
    errmsg_has("NULL out", "out is NULL");
    CHECK(sqlalloc_scope_create("default", 0, &id) == SQLITE_ERROR, "the default's name");
    errmsg_has("duplicate", "'default' exists already");
    CHECK(id == 77, "a refused create wrote *out");
    sqlalloc_scope a = -1, b = -1;
    CHECK(sqlalloc_scope_create("a", 0, &a) == SQLITE_OK && a == 1, "create a: %d %s", (int)a,
          sqlalloc_errmsg());
    CHECK(strcmp(sqlalloc_errmsg(), "") == 0, "errmsg after success is \"%s\"", sqlalloc_errmsg());
    CHECK(sqlalloc_scope_create("b", 2 * 1024 * 1024, &b) == SQLITE_OK && b == 2, "create b");
    CHECK(sqlalloc_scope_create("a", 0, &id) == SQLITE_ERROR, "duplicate name");
    errmsg_has("duplicate", "'a' exists already");

    /* sqlalloc_scope_get_stats errors. */
    CHECK(sqlalloc_scope_get_stats(0, NULL) == SQLITE_MISUSE, "get_stats(NULL)");
    memset(&st, 0x5a, sizeof st);
    CHECK(sqlalloc_scope_get_stats(3, &st) == SQLITE_ERROR, "get_stats of an unknown scope");
    errmsg_has("get_stats(3)", "unknown scope 3");
    CHECK(sqlalloc_scope_get_stats(-1, &st) == SQLITE_ERROR, "get_stats(-1)");
    CHECK(st.current_bytes == 0x5a5a5a5a5a5a5a5aLL, "a failed get_stats wrote *out");

    /* Enter: previous scope back, -1 and no change for an unknown one. */
    CHECK(sqlalloc_scope_enter(a) == 0, "enter a");
    CHECK(sqlalloc_scope_enter(3) == -1, "enter an unknown scope");
    errmsg_has("enter(3)", "unknown scope 3");
    CHECK(sqlalloc_scope_enter(-5) == -1, "enter(-5)");
    int64_t before = scope_stats(a).current_bytes;
    void *p = sqlite3_malloc(1000);
    CHECK(p != NULL, "sqlite3_malloc");
    CHECK(scope_stats(a).current_bytes >= before + 1000, "the block was not charged to a");
    CHECK(sqlalloc_scope_enter(b) == a, "enter b: the previous scope is a");
    sqlite3_free(p); /* credited to a, whatever the thread's scope is now */
    CHECK(scope_stats(a).current_bytes == before, "the free was not credited to a");
    CHECK(scope_stats(b).current_bytes == 0, "b was touched by a's block");

    /* A statement past b's cap. */
    sqlite3 *db = ct_open(":memory:");
    sqlalloc_stats a0 = scope_stats(a);
    int rc = ct_try(db, "SELECT length(randomblob(3000000))");
    CHECK(rc == SQLITE_NOMEM, "a 3 MB blob in a 2 MiB scope gave %d, not SQLITE_NOMEM", rc);
    sqlalloc_stats sb = scope_stats(b);
    CHECK(sb.failed_calls > 0, "b's refusal not counted");
    CHECK(sb.peak_bytes <= 2 * 1024 * 1024, "b's peak %lld passed its cap",
          (long long)sb.peak_bytes);
    CHECK(QUERY_INT(db, "SELECT length(randomblob(100000))") == 100000,
          "the connection does not work again under the cap");
    sqlalloc_stats a1 = scope_stats(a);
    CHECK(a1.current_bytes == a0.current_bytes && a1.malloc_calls == a0.malloc_calls &&
              a1.failed_calls == 0,
          "a changed while b was refused");
    CHECK(scopes_total(3) == ct_stats().current_bytes, "the scopes add up to %lld, not %lld",
          (long long)scopes_total(3), (long long)ct_stats().current_bytes);
    CHECK_MEMORY_USED("with scopes");

    /* Full. */
    char name[32];
    sqlalloc_scope last = b;
    for (int i = 3; i < 256; i++) {
        snprintf(name, sizeof name, "s%d", i);
        CHECK(sqlalloc_scope_create(name, 0, &last) == SQLITE_OK && last == i, "create %s: %s",
              name, sqlalloc_errmsg());
    }
    id = 77;
    CHECK(sqlalloc_scope_create("one-more", 0, &id) == SQLITE_FULL, "the 257th scope");
    errmsg_has("full", "256");
    CHECK(id == 77, "a refused create wrote *out");
    CHECK(sqlalloc_scope_enter(255) == b, "enter the last scope");
    CHECK(sqlalloc_scope_enter(0) == 255, "back to the default");

    ct_close(db);
    CHECK(scope_stats(b).current_bytes == 0, "b holds memory after close");
    CHECK(scopes_total(256) == ct_stats().current_bytes, "the scopes add up after close");
    CHECK_MEMORY_USED("after close");
    return 0;
}

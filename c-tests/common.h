/*
 * Helpers shared by the C tests of sqlalloc: failure reporting, SQLite shortcuts, the counter
 * checks and the standard workload. Every check that fails prints one line naming the test, the
 * place and what was wrong, then ends the process with status 1.
 */
#ifndef SQLALLOC_CTEST_COMMON_H
#define SQLALLOC_CTEST_COMMON_H

#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200809L
#undef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <sqlite3.h>
#include <stdint.h>
#include <stddef.h>
#include <stdarg.h>

#include "sqlalloc.h"

/* Name of the running test (set by ct_begin) and the spec it runs under, for messages. */
extern const char *ct_name;
extern const char *ct_spec;

/* Record the test name and spec used in messages. */
void ct_begin(const char *name, const char *spec);

/* Print "FAIL <test> [<spec>] file:line: message" and end the process with status 1. */
#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 3, 4)))
#endif
void ct_fail(const char *file, int line, const char *fmt, ...);

#define FAIL(...) ct_fail(__FILE__, __LINE__, __VA_ARGS__)
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) ct_fail(__FILE__, __LINE__, __VA_ARGS__);                                     \
    } while (0)

/* Print a progress note to stderr when SQLALLOC_CT_VERBOSE is set. */
void ct_note(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* sqlalloc_install(spec), failing the test when it does not return SQLITE_OK. */
void ct_install(const char *spec);

/* sqlalloc_get_stats, failing the test when it does not return SQLITE_OK. */
sqlalloc_stats ct_stats(void);

/* Fail unless our current_bytes equals sqlite3_memory_used() (memstatus must be on). */
#define CHECK_MEMORY_USED(what) ct_check_memory_used(__FILE__, __LINE__, what)
void ct_check_memory_used(const char *file, int line, const char *what);

/* Fail unless current_count and current_bytes equal those of `base`. */
#define CHECK_BACK_TO(base, what) ct_check_back_to(__FILE__, __LINE__, base, what)
void ct_check_back_to(const char *file, int line, sqlalloc_stats base, const char *what);

/* sqlite3_open_v2 (read/write/create), failing the test on error. */
sqlite3 *ct_open(const char *path);

/* sqlite3_close, failing the test unless it returns SQLITE_OK. */
void ct_close(sqlite3 *db);

/* Run SQL that must succeed. */
#define EXEC(db, sql) ct_exec(__FILE__, __LINE__, db, sql)
void ct_exec(const char *file, int line, sqlite3 *db, const char *sql);

/* Run SQL and return its result code (no check); the error message, if any, is discarded. */
int ct_try(sqlite3 *db, const char *sql);

/*
 * ROLLBACK when a transaction is open, with a statement prepared before the memory ran out
 * (`prepared`, from ct_prepare_rollback): preparing a new statement needs memory that a full
 * heap may not have. Fails the test unless the rollback succeeds. Finalizes `prepared`.
 */
sqlite3_stmt *ct_prepare_rollback(sqlite3 *db);
#define ROLLBACK(db, prepared) ct_rollback(__FILE__, __LINE__, db, prepared)
void ct_rollback(const char *file, int line, sqlite3 *db, sqlite3_stmt *prepared);

/* First column of the first row of a query that must succeed and return one row. */
#define QUERY_INT(db, sql) ct_query_int(__FILE__, __LINE__, db, sql)
int64_t ct_query_int(const char *file, int line, sqlite3 *db, const char *sql);
#define QUERY_TEXT(db, sql, buf, len) ct_query_text(__FILE__, __LINE__, db, sql, buf, len)
void ct_query_text(const char *file, int line, sqlite3 *db, const char *sql, char *buf,
                   size_t len);

/* A fresh directory under $TMPDIR (or /tmp); ct_rmdir removes it with the files in it. */
void ct_mkdtemp(char *out, size_t len);
void ct_rmdir(const char *dir);

/* Deterministic pseudo-random numbers (xorshift64*). */
uint64_t ct_rand(uint64_t *state);

/*
 * The standard workload on an open connection: tables and indexes, `rows` rows inserted in
 * transactions of 10000, blobs from 1 byte to 1 MiB (read back and verified), joins, aggregates,
 * a sort, group_concat, updates and deletes, then PRAGMA integrity_check. Every result is checked
 * against values computed here; any failure ends the process. Thread-safe (uses no globals).
 */
void ct_workload(sqlite3 *db, int rows, uint64_t seed);

/* sqlite3_config that must succeed (before initialize). */
#define CONFIG_OK(rc, what) CHECK((rc) == SQLITE_OK, "sqlite3_config(%s) returned %d", what, rc)

#endif

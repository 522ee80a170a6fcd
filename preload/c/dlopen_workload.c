/*
 * A program that, like a language binding, loads SQLite with dlopen after it started
 * (RTLD_LOCAL: its symbols are not in the global scope) and runs a workload through function
 * pointers. Used by the preload tests (preload/tests/preload.rs).
 *
 *   dlopen_workload [leak] [preinit] [close] [threads] [fork] [second=PATH]
 *
 *   leak     also allocate 123456 bytes with sqlite3_malloc and never free them
 *   preinit  call the real sqlite3_initialize (taken from the library handle) before anything
 *            else, so that SQLite is initialized without going through the preload library
 *   close    close the database before exiting (by default it stays open, so that SQLite still
 *            holds memory when the exit report is written)
 *   threads  first start 4 threads that each open a database at the same moment (so that SQLite's
 *            first initialization is raced) and run a small workload in it
 *   fork     at the end, fork a child that runs a query in the inherited SQLite and exits with
 *            exit(0) (so its exit handlers run), and wait for it
 *   second=PATH  at the end, also load a second copy of SQLite from PATH (another file, so a
 *            second library in the process) and run a small workload in it
 *
 * Prints the workload's result, then "stats: malloc_calls=N current_bytes=N sqlite_used=N" when
 * the sqlalloc C API is present in the process (under the preload library), then the Prometheus
 * report from sqlalloc_report_to_buffer between two marker lines.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sqlalloc.h"

typedef int (*init_fn)(void);
typedef int (*open_fn)(const char *, sqlite3 **);
typedef int (*exec_fn)(sqlite3 *, const char *, int (*)(void *, int, char **, char **), void *,
                       char **);
typedef int (*close_fn)(sqlite3 *);
typedef void *(*malloc_fn)(int);
typedef sqlite3_int64 (*used_fn)(void);
typedef int (*stats_fn)(sqlalloc_stats *);
typedef int64_t (*report_buf_fn)(const char *, char *, size_t);

static void *need(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "dlopen_workload: %s not found: %s\n", name, dlerror());
        exit(2);
    }
    return p;
}

static open_fn open_db;
static exec_fn exec;
static close_fn close_db;
static pthread_barrier_t start_line;

static void *thread_main(void *arg) {
    (void)arg;
    pthread_barrier_wait(&start_line);
    sqlite3 *db = NULL;
    char *err = NULL;
    int rc = open_db(":memory:", &db);
    if (rc == SQLITE_OK)
        rc = exec(db,
                  "CREATE TABLE u(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c"
                  " WHERE i<2000) INSERT INTO u SELECT randomblob(i % 300) FROM c;",
                  NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "dlopen_workload: thread: %s\n", err ? err : "open failed");
        exit(1);
    }
    close_db(db);
    return NULL;
}

static int print_row(void *arg, int n, char **vals, char **cols) {
    (void)arg;
    (void)cols;
    for (int i = 0; i < n; i++) printf("%s%s", i ? "|" : "", vals[i] ? vals[i] : "NULL");
    printf("\n");
    return 0;
}

int main(int argc, char **argv) {
    int leak = 0, preinit = 0, do_close = 0, threads = 0, do_fork = 0;
    const char *second = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "leak")) leak = 1;
        else if (!strcmp(argv[i], "preinit")) preinit = 1;
        else if (!strcmp(argv[i], "close")) do_close = 1;
        else if (!strcmp(argv[i], "threads")) threads = 4;
        else if (!strcmp(argv[i], "fork")) do_fork = 1;
        else if (!strncmp(argv[i], "second=", 7)) second = argv[i] + 7;
        else {
            fprintf(stderr, "dlopen_workload: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    void *lib = dlopen("libsqlite3.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen_workload: %s\n", dlerror());
        return 2;
    }
    if (dlsym(RTLD_DEFAULT, "sqlite3_libversion") != NULL) {
        fprintf(stderr, "dlopen_workload: SQLite is in the global scope; the test is void\n");
        return 2;
    }
    init_fn real_init = (init_fn)need(lib, "sqlite3_initialize");
    open_db = (open_fn)need(lib, "sqlite3_open");
    exec = (exec_fn)need(lib, "sqlite3_exec");
    close_db = (close_fn)need(lib, "sqlite3_close");
    malloc_fn smalloc = (malloc_fn)need(lib, "sqlite3_malloc");
    used_fn used = (used_fn)need(lib, "sqlite3_memory_used");

    if (preinit && real_init() != SQLITE_OK) {
        fprintf(stderr, "dlopen_workload: sqlite3_initialize failed\n");
        return 1;
    }
    if (threads) {
        pthread_t t[4];
        pthread_barrier_init(&start_line, NULL, (unsigned)threads);
        for (int i = 0; i < threads; i++)
            if (pthread_create(&t[i], NULL, thread_main, NULL) != 0) return 1;
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
        pthread_barrier_destroy(&start_line);
    }
    sqlite3 *db = NULL;
    if (open_db(":memory:", &db) != SQLITE_OK) {
        fprintf(stderr, "dlopen_workload: sqlite3_open failed\n");
        return 1;
    }
    char *err = NULL;
    const char *sql =
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER);"
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<20000)"
        "  INSERT INTO t SELECT i, printf('name-%05d', i), i % 37 FROM c;"
        "CREATE INDEX t_grp ON t(grp);"
        "SELECT count(*), sum(grp), max(name) FROM t;"
        "SELECT grp, count(*) FROM t WHERE grp < 3 GROUP BY grp ORDER BY grp;";
    if (exec(db, sql, print_row, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "dlopen_workload: %s\n", err ? err : "exec failed");
        return 1;
    }
    if (leak) {
        void *p = smalloc(123456);
        if (!p) return 1;
        memset(p, 1, 123456);
    }
    if (do_fork) {
        fflush(stdout);
        pid_t child = fork();
        if (child < 0) return 1;
        if (child == 0) {
            char *e2 = NULL;
            int rc = exec(db, "SELECT count(*) FROM t WHERE grp = 5;", NULL, NULL, &e2);
            exit(rc == SQLITE_OK ? 0 : 1);
        }
        int status = 0;
        if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "dlopen_workload: forked child failed\n");
            return 1;
        }
        printf("child: ok\n");
    }
    if (second) {
        void *lib2 = dlopen(second, RTLD_NOW | RTLD_LOCAL);
        if (!lib2 || lib2 == lib) {
            fprintf(stderr, "dlopen_workload: second SQLite: %s\n", lib2 ? "same library" : dlerror());
            return 2;
        }
        open_db = (open_fn)need(lib2, "sqlite3_open");
        exec = (exec_fn)need(lib2, "sqlite3_exec");
        close_db = (close_fn)need(lib2, "sqlite3_close");
        sqlite3 *db2 = NULL;
        char *e2 = NULL;
        if (open_db(":memory:", &db2) != SQLITE_OK ||
            exec(db2, "CREATE TABLE s(x); INSERT INTO s VALUES(41); SELECT x + 1 FROM s;", print_row,
                 NULL, &e2) != SQLITE_OK) {
            fprintf(stderr, "dlopen_workload: second SQLite: %s\n", e2 ? e2 : "open failed");
            return 1;
        }
        close_db(db2);
        open_db = (open_fn)need(lib, "sqlite3_open");
        exec = (exec_fn)need(lib, "sqlite3_exec");
        close_db = (close_fn)need(lib, "sqlite3_close");
    }
    if (do_close && close_db(db) != SQLITE_OK) return 1;

    stats_fn get_stats = (stats_fn)dlsym(RTLD_DEFAULT, "sqlalloc_get_stats");
    report_buf_fn report = (report_buf_fn)dlsym(RTLD_DEFAULT, "sqlalloc_report_to_buffer");
    if (get_stats && report) {
        sqlalloc_stats s;
        if (get_stats(&s) == SQLITE_OK) {
            printf("stats: malloc_calls=%lld current_bytes=%lld sqlite_used=%lld\n",
                   (long long)s.malloc_calls, (long long)s.current_bytes, (long long)used());
            int64_t n = report("prometheus", NULL, 0);
            char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
            if (!buf || report("prometheus", buf, (size_t)n + 1) != n) {
                fprintf(stderr, "dlopen_workload: sqlalloc_report_to_buffer failed\n");
                return 1;
            }
            printf("--- prometheus\n%s--- end\n", buf);
            free(buf);
        }
    }
    return 0;
}

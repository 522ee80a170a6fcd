/*
 * SQLite with T threads at once: multi-thread mode (SQLITE_CONFIG_MULTITHREAD), memstatus off
 * (SQLITE_CONFIG_MEMSTATUS 0: SQLite takes no global lock around the allocator, which must be
 * thread-safe on its own), lookaside off (SQLITE_CONFIG_LOOKASIDE 0 0: every small allocation
 * reaches the allocator), one in-memory connection per thread.
 *
 * Each thread runs the same work: ROUNDS rounds of (create a table, insert ROWS rows with an
 * index in one transaction, run grouping/sorting/LIKE queries over them, drop the table).
 * The result line gives the aggregate throughput, rounds per second over all threads (wall
 * clock from the start of the first thread to the end of the last), and rounds per second of
 * CPU time used by the process meanwhile (which does not depend on free cores: at 2 threads it
 * drops below the 1-thread figure when the threads slow each other down).
 *
 *   threads [--heap BYTES MIN] --threads T --rounds N [--rows R]
 *
 * --heap configures SQLite's memsys5 (SQLITE_CONFIG_HEAP); under libsqlalloc_preload.so with
 * SQLALLOC set, a sqlalloc allocator is installed by sqlite3_initialize instead.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sqlite3.h"

static int rounds = 20, rows = 2000;

static void die(const char *what, const char *detail) {
  fprintf(stderr, "threads: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(2);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU time (user + sys) of the whole process so far. */
static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) die(sql, err);
}

static int count_cb(void *p, int n, char **v, char **c) {
  (void)n;
  (void)v;
  (void)c;
  ++*(long *)p;
  return 0;
}

static void *worker(void *arg) {
  long *checksum = arg;
  sqlite3 *db;
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) die("sqlite3_open", sqlite3_errmsg(db));
  sqlite3_stmt *ins;
  for (int r = 0; r < rounds; r++) {
    exec(db, "CREATE TABLE t(a INTEGER PRIMARY KEY, b INTEGER, c TEXT); CREATE INDEX tb ON t(b)");
    if (sqlite3_prepare_v2(db, "INSERT INTO t(b,c) VALUES(?1, printf('row %d of %d: %.*c', ?1, ?2, ?1 % 300, 'x'))", -1, &ins,
                           NULL) != SQLITE_OK)
      die("prepare", sqlite3_errmsg(db));
    exec(db, "BEGIN");
    for (int i = 0; i < rows; i++) {
      sqlite3_bind_int(ins, 1, (i * 7919) % rows);
      sqlite3_bind_int(ins, 2, r);
      if (sqlite3_step(ins) != SQLITE_DONE) die("insert", sqlite3_errmsg(db));
      sqlite3_reset(ins);
    }
    exec(db, "COMMIT");
    sqlite3_finalize(ins);
    char *err = NULL;
    if (sqlite3_exec(db,
                     "SELECT b % 17, count(*), max(c) FROM t GROUP BY 1 ORDER BY 3;"
                     "SELECT * FROM t WHERE c LIKE '%x5%' ORDER BY c DESC LIMIT 50;"
                     "SELECT group_concat(c, ',') FROM (SELECT c FROM t WHERE b < 200);"
                     "SELECT a FROM t WHERE b BETWEEN 100 AND 300",
                     count_cb, checksum, &err) != SQLITE_OK)
      die("query", err);
    exec(db, "DROP TABLE t");
  }
  sqlite3_close(db);
  return NULL;
}

int main(int argc, char **argv) {
  long heap = 0, heap_min = 0;
  int threads = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--heap") && i + 2 < argc) {
      heap = atol(argv[++i]);
      heap_min = atol(argv[++i]);
    } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
      rounds = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--rows") && i + 1 < argc) {
      rows = atoi(argv[++i]);
    } else {
      die("unknown or incomplete argument (see the comment at the top of bench/threads.c)",
          argv[i]);
    }
  }
  if (threads < 1 || threads > 64 || rounds < 1 || rows < 1) die("bad --threads/--rounds/--rows", NULL);
  if (sqlite3_config(SQLITE_CONFIG_MULTITHREAD) != SQLITE_OK) die("MULTITHREAD refused", NULL);
  if (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) != SQLITE_OK) die("MEMSTATUS refused", NULL);
  if (sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0) != SQLITE_OK) die("LOOKASIDE refused", NULL);
  if (heap > 0) {
    void *h = malloc((size_t)heap);
    if (!h || sqlite3_config(SQLITE_CONFIG_HEAP, h, (int)heap, (int)heap_min) != SQLITE_OK)
      die("SQLITE_CONFIG_HEAP failed", NULL);
  }
  if (sqlite3_initialize() != SQLITE_OK) die("sqlite3_initialize failed", NULL);
  pthread_t tid[64];
  long sums[64] = {0};
  double c0 = cpu_s(), t0 = now_s();
  for (int t = 0; t < threads; t++)
    if (pthread_create(&tid[t], NULL, worker, &sums[t]) != 0) die("pthread_create", NULL);
  for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
  double wall = now_s() - t0, cpu = cpu_s() - c0;
  for (int t = 1; t < threads; t++)
    if (sums[t] != sums[0]) die("threads returned different results", NULL);
  printf("RESULT workload=threads threads=%d rounds=%d rows=%d result_rows=%ld "
         "rounds_per_s=%.3f rounds_per_cpu_s=%.3f wall_s=%.4f cpu_s=%.4f\n",
         threads, rounds, rows, sums[0], rounds * threads / wall, rounds * threads / cpu, wall,
         cpu);
  return 0;
}

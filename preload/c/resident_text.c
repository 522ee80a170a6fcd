/*
 * How much of the preload library's code is resident after a SQLite workload: runs 20 000
 * inserts, an index and a few queries in an in-memory database, then prints
 *
 *   text_rss_kib=N text_kib=M
 *
 * N: the resident size of the library's executable mapping (from /proc/self/smaps), M: its
 * size. Used by preload/tests/preload.rs (`running_code_is_grouped`): the kernel maps file pages
 * 64 KiB at a time around each page a process touches, so N is what the library's code layout
 * costs a process (preload/build.rs).
 */
#define _GNU_SOURCE
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int rc, sqlite3 *db, const char *what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    fprintf(stderr, "%s: %s\n", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    exit(1);
  }
}

int main(void) {
  sqlite3 *db = NULL;
  check(sqlite3_open(":memory:", &db), db, "open");
  check(sqlite3_exec(db, "CREATE TABLE t(a INTEGER, b TEXT); BEGIN", 0, 0, 0), db, "create");
  sqlite3_stmt *ins = NULL;
  check(sqlite3_prepare_v2(db, "INSERT INTO t VALUES(?1, printf('%.*c', ?1 % 300, 'x'))", -1,
                           &ins, 0),
        db, "prepare");
  for (int i = 0; i < 20000; i++) {
    sqlite3_bind_int(ins, 1, i * 7919 % 20000);
    check(sqlite3_step(ins), db, "insert");
    sqlite3_reset(ins);
  }
  sqlite3_finalize(ins);
  check(sqlite3_exec(db,
                     "COMMIT; CREATE INDEX ta ON t(a); CREATE INDEX tb ON t(b);"
                     "SELECT count(*), sum(length(b)) FROM t;"
                     "DELETE FROM t WHERE a % 3 = 0; UPDATE t SET b = b || 'y' WHERE a % 5 = 0;",
                     0, 0, 0),
        db, "workload");
  check(sqlite3_close(db), NULL, "close");

  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) {
    perror("/proc/self/smaps");
    return 1;
  }
  char line[1024];
  int in = 0;
  long rss = -1, size = -1;
  while (fgets(line, sizeof line, f)) {
    unsigned long a, b;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3) {
      in = strstr(line, "libsqlalloc_preload") && !strcmp(perms, "r-xp");
      if (in) size = (long)((b - a) / 1024);
    } else if (in && !strncmp(line, "Rss:", 4)) {
      rss = atol(line + 4);
      in = 0;
    }
  }
  fclose(f);
  if (rss < 0) {
    fprintf(stderr, "no executable mapping of libsqlalloc_preload.so in this process\n");
    return 1;
  }
  printf("text_rss_kib=%ld text_kib=%ld\n", rss, size);
  return 0;
}

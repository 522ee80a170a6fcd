/*
 * Allocation-trace recorder: LD_PRELOAD=libtrace_rec.so SQLALLOC_TRACE=FILE program ...
 *
 * It interposes sqlite3_initialize. On the first call it installs a sqlalloc allocator
 * (sqlalloc_install with $SQLALLOC, default "system"; the library is linked in statically), reads
 * the installed table back with SQLITE_CONFIG_GETMALLOC, and installs a table of its own that
 * forwards every call to it and appends one record per xMalloc, xFree and xRealloc to FILE.
 * SQLite then initializes as usual. At exit it writes the header and checks its counts against
 * sqlalloc's own counters (sqlalloc_get_stats): a mismatch is reported on stderr and makes the
 * trace invalid (the header says 0 records).
 *
 * Blocks are named by small integer ids (an id is reused once its block is freed), so the replay
 * (bench/micro.c --trace) needs no pointer lookup. Format, little-endian: "SQATRC01", u32 number
 * of records, u32 largest id; then records of two u32: (op << 30 | id) and the size
 * (op 0 = xMalloc, 1 = xFree, 2 = xRealloc, which keeps the id).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlalloc.h"
#include "sqlite3.h"

static sqlite3_mem_methods under;     /* the sqlalloc table */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;
static uint32_t nrec, nmalloc, nfree, nrealloc, maxid;
static uint32_t *freeids;             /* stack of ids free for reuse */
static uint32_t nfreeids, capfreeids;
static int broken;

/* Open-addressing map from a live block's address to its id (libc memory: not SQLite's). */
typedef struct {
  void *p;
  uint32_t id;
} Ent;
static Ent *tab;
static size_t tabcap, tablive;

static size_t hash(void *p) {
  uintptr_t x = (uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (size_t)x;
}

static void tab_put(void *p, uint32_t id);

static void tab_grow(void) {
  Ent *old = tab;
  size_t oldcap = tabcap;
  tabcap = tabcap ? tabcap * 2 : 1 << 16;
  tab = calloc(tabcap, sizeof(Ent));
  if (!tab) {
    fprintf(stderr, "trace_rec: out of memory\n");
    abort();
  }
  tablive = 0;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i].p) tab_put(old[i].p, old[i].id);
  free(old);
}

static void tab_put(void *p, uint32_t id) {
  if ((tablive + 1) * 2 > tabcap) tab_grow();
  size_t i = hash(p) & (tabcap - 1);
  while (tab[i].p) i = (i + 1) & (tabcap - 1);
  tab[i].p = p;
  tab[i].id = id;
  tablive++;
}

/* Remove p and return its id; UINT32_MAX when it is not there. */
static uint32_t tab_take(void *p) {
  if (!tabcap) return UINT32_MAX;
  size_t i = hash(p) & (tabcap - 1);
  while (tab[i].p && tab[i].p != p) i = (i + 1) & (tabcap - 1);
  if (!tab[i].p) return UINT32_MAX;
  uint32_t id = tab[i].id;
  tab[i].p = NULL;
  tablive--;
  /* Re-insert the rest of the cluster (linear probing deletion). */
  for (size_t j = (i + 1) & (tabcap - 1); tab[j].p; j = (j + 1) & (tabcap - 1)) {
    Ent e = tab[j];
    tab[j].p = NULL;
    tablive--;
    tab_put(e.p, e.id);
  }
  return id;
}

static uint32_t new_id(void) {
  if (nfreeids) return freeids[--nfreeids];
  return ++maxid;
}

static void put_rec(uint32_t op, uint32_t id, uint32_t size) {
  uint32_t r[2] = {op << 30 | id, size};
  if (fwrite(r, 4, 2, out) != 2) broken = 1;
  nrec++;
}

static void *rec_malloc(int n) {
  void *p = under.xMalloc(n);
  pthread_mutex_lock(&mu);
  nmalloc++;
  if (p) {
    uint32_t id = new_id();
    tab_put(p, id);
    put_rec(0, id, (uint32_t)n);
  }
  pthread_mutex_unlock(&mu);
  return p;
}

static void rec_free(void *p) {
  if (!p) return;
  pthread_mutex_lock(&mu);
  nfree++;
  uint32_t id = tab_take(p);
  if (id == UINT32_MAX) {
    broken = 1;
  } else {
    put_rec(1, id, 0);
    if (nfreeids == capfreeids) {
      capfreeids = capfreeids ? capfreeids * 2 : 4096;
      freeids = realloc(freeids, capfreeids * sizeof(uint32_t));
      if (!freeids) abort();
    }
    freeids[nfreeids++] = id;
  }
  pthread_mutex_unlock(&mu);
  under.xFree(p);
}

static void *rec_realloc(void *p, int n) {
  pthread_mutex_lock(&mu);
  void *q = under.xRealloc(p, n);
  nrealloc++;
  if (q) {
    uint32_t id = tab_take(p);
    if (id == UINT32_MAX) {
      broken = 1;
    } else {
      tab_put(q, id);
      put_rec(2, id, (uint32_t)n);
    }
  }
  pthread_mutex_unlock(&mu);
  return q;
}

static int rec_size(void *p) { return under.xSize(p); }
static int rec_roundup(int n) { return under.xRoundup(n); }
static int rec_init(void *a) { return under.xInit(a); }
static void rec_shutdown(void *a) { under.xShutdown(a); }

static void finish(void) {
  if (!out) return;
  pthread_mutex_lock(&mu);
  sqlalloc_stats st;
  if (sqlalloc_get_stats(&st) != SQLITE_OK) {
    fprintf(stderr, "trace_rec: no sqlalloc counters\n");
    broken = 1;
  } else if (st.malloc_calls != nmalloc || st.free_calls != nfree ||
             st.realloc_calls != nrealloc) {
    fprintf(stderr,
            "trace_rec: counts differ from sqlalloc's: malloc %u/%lld free %u/%lld realloc "
            "%u/%lld\n",
            nmalloc, (long long)st.malloc_calls, nfree, (long long)st.free_calls, nrealloc,
            (long long)st.realloc_calls);
    broken = 1;
  }
  uint32_t hdr[2] = {broken ? 0 : nrec, maxid};
  if (fseek(out, 8, SEEK_SET) != 0 || fwrite(hdr, 4, 2, out) != 2) broken = 1;
  if (fclose(out) != 0) broken = 1;
  out = NULL;
  fprintf(stderr,
          "trace_rec: %u records (%u malloc, %u free, %u realloc), %u ids, %zu blocks live at "
          "exit, sqlalloc peak %lld bytes%s\n",
          nrec, nmalloc, nfree, nrealloc, maxid, tablive, (long long)st.peak_bytes,
          broken ? " -- TRACE INVALID" : "");
  pthread_mutex_unlock(&mu);
}

static int (*real_init)(void);
static int setup_rc = SQLITE_OK;

static void setup(void) {
  real_init = (int (*)(void))dlsym(RTLD_NEXT, "sqlite3_initialize");
  const char *path = getenv("SQLALLOC_TRACE");
  const char *spec = getenv("SQLALLOC");
  if (!spec || !*spec) spec = "system";
  if (!real_init || !path) {
    fprintf(stderr, "trace_rec: %s\n", real_init ? "set SQLALLOC_TRACE=FILE" : "no SQLite");
    setup_rc = SQLITE_ERROR;
    return;
  }
  if (sqlalloc_install(spec) != SQLITE_OK) {
    fprintf(stderr, "trace_rec: sqlalloc_install(%s): %s\n", spec, sqlalloc_errmsg());
    setup_rc = SQLITE_ERROR;
    return;
  }
  sqlite3_config(SQLITE_CONFIG_GETMALLOC, &under);
  static const sqlite3_mem_methods rec = {rec_malloc,  rec_free, rec_realloc,  rec_size,
                                          rec_roundup, rec_init, rec_shutdown, NULL};
  out = fopen(path, "wb");
  if (!out || fwrite("SQATRC01\0\0\0\0\0\0\0\0", 1, 16, out) != 16) {
    fprintf(stderr, "trace_rec: cannot write %s\n", path);
    setup_rc = SQLITE_ERROR;
    return;
  }
  static char buf[1 << 20];
  setvbuf(out, buf, _IOFBF, sizeof buf);
  if (sqlite3_config(SQLITE_CONFIG_MALLOC, &rec) != SQLITE_OK) {
    fprintf(stderr, "trace_rec: SQLITE_CONFIG_MALLOC refused\n");
    setup_rc = SQLITE_ERROR;
    return;
  }
  atexit(finish);
}

int sqlite3_initialize(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, setup);
  if (setup_rc != SQLITE_OK) return setup_rc;
  return real_init();
}

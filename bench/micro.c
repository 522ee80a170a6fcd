/*
 * Microbenchmark of an allocator as SQLite calls it: through the function pointers of a
 * sqlite3_mem_methods table, so that SQLite's C allocators and sqlalloc's Rust ones pay the same
 * indirect call.
 *
 * The table is whatever SQLite ends up with after sqlite3_initialize():
 *   - SQLite's default (mem1 over the process's malloc: glibc, or an LD_PRELOADed jemalloc or
 *     mimalloc);
 *   - SQLite's memsys5 with --heap BYTES MIN (SQLITE_CONFIG_HEAP);
 *   - a sqlalloc allocator, when the program runs under libsqlalloc_preload.so with SQLALLOC set
 *     (the preload library installs it from its sqlite3_initialize).
 * It is read back with SQLITE_CONFIG_GETMALLOC, which SQLite only answers while it is not
 * initialized: so the program initializes SQLite, shuts it down, reads the table and calls its
 * xInit itself. SQLite's memstatus is turned off first, so that every allocator is on its own to
 * be thread-safe (C memsys5 then takes its mutex, as sqlalloc's backends always do).
 *
 * Workloads (one per run; the result is one line "RESULT key=value ..." on stdout):
 *   --mix STEPS      the synthetic mix: 1000 live slots; each step frees the block in a random
 *                    slot and allocates a new one there (one malloc+free pair), or with
 *                    probability 2% grows the slot's block with xRealloc. Sizes: 50% 8-64 bytes,
 *                    43% 257-512, 5% 4096-8192 (page buffers), 2% 65-256.
 *   --trace FILE     replays a trace written by libtrace_rec.so (see bench/trace_rec.c).
 *   --passes P       replays the trace P times (default 2, at least 1) and times the last: the
 *                    instruction count of one pass is the difference between P = 3 and P = 2.
 *   --threads T      runs the mix in T threads at once, each on its own slots, and reports the
 *                    aggregate pairs per second (wall clock).
 * ns_per_pair is time / (malloc+free pairs); a realloc counts as one pair. Single-thread figures
 * use the thread's CPU time (robust to other load on the machine); multi-thread ones the wall
 * clock (contention shows up as waiting).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sqlite3.h"

#define NSLOT 1000

static sqlite3_mem_methods M;

static void die(const char *fmt, const char *arg) {
  fprintf(stderr, "micro: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  exit(2);
}

static double now_ns(clockid_t clk) {
  struct timespec ts;
  clock_gettime(clk, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* xorshift64*: deterministic, the same steps for every allocator. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ULL;
}

static int mix_size(uint64_t *s) {
  unsigned r = (unsigned)(rnd(s) % 100);
  unsigned u = (unsigned)(rnd(s) >> 11);
  if (r < 50) return 8 + (int)(u % 57);          /* 8..64 */
  if (r < 93) return 257 + (int)(u % 256);       /* 257..512 */
  if (r < 98) return 4096 + (int)(u % 4097);     /* 4096..8192 */
  return 65 + (int)(u % 192);                    /* 65..256 */
}

/* One precomputed step of the mix: slot, size, and whether it grows the block instead. */
typedef struct {
  uint16_t slot;
  uint8_t grow;
  int size;
} Step;

static Step *make_steps(long n, uint64_t seed) {
  Step *st = malloc(sizeof(Step) * (size_t)n);
  if (!st) die("%s", "out of memory for the steps");
  uint64_t s = seed;
  for (long i = 0; i < n; i++) {
    st[i].slot = (uint16_t)(rnd(&s) % NSLOT);
    st[i].grow = rnd(&s) % 100 < 2;
    st[i].size = mix_size(&s);
  }
  return st;
}

typedef struct {
  const Step *steps;
  long n;
  uint64_t seed;
  double cpu_ns, wall_ns;
  long failed;
} MixArg;

static void *run_mix(void *vp) {
  MixArg *a = vp;
  void *slot[NSLOT];
  int size[NSLOT];
  uint64_t s = a->seed;
  for (int i = 0; i < NSLOT; i++) {
    size[i] = mix_size(&s);
    slot[i] = M.xMalloc(size[i]);
    if (!slot[i]) a->failed++;
  }
  double c0 = now_ns(CLOCK_THREAD_CPUTIME_ID), w0 = now_ns(CLOCK_MONOTONIC);
  for (long i = 0; i < a->n; i++) {
    const Step *st = &a->steps[i];
    void *p = slot[st->slot];
    if (st->grow && p) {
      /* A growing realloc, as SQLite's string and array buffers grow: to twice the size,
       * kept under 16 KiB. */
      int ns = size[st->slot] * 2;
      if (ns > 16384) ns = st->size;
      void *q = M.xRealloc(p, ns);
      if (q) {
        slot[st->slot] = q;
        size[st->slot] = ns;
      } else {
        a->failed++;
      }
    } else {
      if (p) M.xFree(p);
      slot[st->slot] = M.xMalloc(st->size);
      size[st->slot] = st->size;
      if (!slot[st->slot]) a->failed++;
    }
  }
  a->cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
  a->wall_ns = now_ns(CLOCK_MONOTONIC) - w0;
  for (int i = 0; i < NSLOT; i++)
    if (slot[i]) M.xFree(slot[i]);
  return NULL;
}

/* Trace format (written by trace_rec.c), little-endian:
 *   header: "SQATRC01", u32 number of records, u32 number of ids (most blocks live at once)
 *   records: u32 (op << 30 | id), u32 size; op 0 = xMalloc into id, 1 = xFree id,
 *            2 = xRealloc id to size. */
static int replay(const char *path, int passes) {
  FILE *f = fopen(path, "rb");
  if (!f) die("cannot open trace %s", path);
  char magic[8];
  uint32_t n, nid;
  if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "SQATRC01", 8) != 0 ||
      fread(&n, 4, 1, f) != 1 || fread(&nid, 4, 1, f) != 1)
    die("%s is not a trace written by libtrace_rec.so", path);
  uint32_t *rec = malloc(8 * (size_t)n);
  void **slot = calloc(nid + 1, sizeof(void *));
  if (!rec || !slot) die("%s", "out of memory for the trace");
  if (fread(rec, 8, n, f) != n) die("trace %s is truncated", path);
  fclose(f);
  long pairs = 0, failed = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t op = rec[2 * i] >> 30, id = rec[2 * i] & 0x3fffffff;
    if (op > 2 || id > nid) die("trace %s has a bad record", path);
    if (op != 1) pairs++;
  }
  /* The first passes warm up (the allocator's heap grows to the trace's peak, pages are
   * faulted in); the last is timed. */
  double cpu = 0;
  for (int pass = 0; pass < passes; pass++) {
    double c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    for (uint32_t i = 0; i < n; i++) {
      uint32_t op = rec[2 * i] >> 30, id = rec[2 * i] & 0x3fffffff;
      int sz = (int)rec[2 * i + 1];
      switch (op) {
        case 0:
          slot[id] = M.xMalloc(sz);
          if (!slot[id]) failed++;
          break;
        case 1:
          M.xFree(slot[id]);
          slot[id] = NULL;
          break;
        default: {
          void *q = slot[id] ? M.xRealloc(slot[id], sz) : M.xMalloc(sz);
          if (q) slot[id] = q;
          else failed++;
        }
      }
    }
    /* Blocks the program never freed (live at exit) are freed here, inside the timing. */
    for (uint32_t i = 0; i <= nid; i++)
      if (slot[i]) M.xFree(slot[i]);
    for (uint32_t i = 0; i <= nid; i++) slot[i] = NULL;
    cpu = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
  }
  printf("RESULT workload=trace pairs=%ld failed=%ld ns_per_pair=%.2f\n", pairs, failed,
         cpu / (double)pairs);
  free(rec);
  free(slot);
  return failed ? 1 : 0;
}

int main(int argc, char **argv) {
  long heap = 0, heap_min = 0, steps = 0;
  int threads = 0, passes = 2;
  const char *trace = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--heap") && i + 2 < argc) {
      heap = atol(argv[++i]);
      heap_min = atol(argv[++i]);
    } else if (!strcmp(argv[i], "--mix") && i + 1 < argc) {
      steps = atol(argv[++i]);
    } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--trace") && i + 1 < argc) {
      trace = argv[++i];
    } else if (!strcmp(argv[i], "--passes") && i + 1 < argc) {
      passes = atoi(argv[++i]);
      if (passes < 1) die("--passes must be at least 1, not '%s'", argv[i]);
    } else {
      die("unknown or incomplete argument '%s' (see the comment at the top of bench/micro.c)",
          argv[i]);
    }
  }
  if (!trace && steps <= 0) die("%s", "give --mix STEPS (> 0) or --trace FILE");
  if (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) != SQLITE_OK) die("%s", "MEMSTATUS refused");
  if (heap > 0) {
    void *h = malloc((size_t)heap);
    if (!h || sqlite3_config(SQLITE_CONFIG_HEAP, h, (int)heap, (int)heap_min) != SQLITE_OK)
      die("%s", "SQLITE_CONFIG_HEAP failed (was SQLite built with SQLITE_ENABLE_MEMSYS5?)");
  }
  if (sqlite3_initialize() != SQLITE_OK) die("%s", "sqlite3_initialize failed");
  sqlite3_shutdown();
  if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &M) != SQLITE_OK) die("%s", "GETMALLOC refused");
  if (M.xInit(M.pAppData) != SQLITE_OK) die("%s", "the allocator's xInit failed");

  int rc = 0;
  if (trace) {
    rc = replay(trace, passes);
  } else if (threads <= 0) {
    Step *st = make_steps(steps, 42);
    /* The first pass warms up (heap growth, page faults); the second is timed. */
    MixArg a = {st, steps, 7, 0, 0, 0};
    run_mix(&a);
    a = (MixArg){st, steps, 7, 0, 0, a.failed};
    run_mix(&a);
    printf("RESULT workload=mix pairs=%ld failed=%ld ns_per_pair=%.2f\n", steps, a.failed,
           a.cpu_ns / (double)steps);
    rc = a.failed ? 1 : 0;
  } else {
    pthread_t tid[64];
    MixArg a[64];
    if (threads > 64) die("%s", "at most 64 threads");
    Step *st[64];
    for (int t = 0; t < threads; t++) {
      st[t] = make_steps(steps, 42 + (uint64_t)t);
      a[t] = (MixArg){st[t], steps, 7 + (uint64_t)t, 0, 0, 0};
    }
    double w0 = now_ns(CLOCK_MONOTONIC);
    for (int t = 0; t < threads; t++)
      if (pthread_create(&tid[t], NULL, run_mix, &a[t]) != 0) die("%s", "pthread_create failed");
    long failed = 0;
    for (int t = 0; t < threads; t++) {
      pthread_join(tid[t], NULL);
      failed += a[t].failed;
    }
    double wall = now_ns(CLOCK_MONOTONIC) - w0, cpu = 0;
    for (int t = 0; t < threads; t++) cpu += a[t].cpu_ns;
    /* mpairs_per_cpu_s: pairs per second of CPU time summed over the threads. At 2 threads it
     * falls below the 1-thread figure when the threads slow each other down (a shared cache line,
     * a spinning lock), and it does not depend on whether the machine had 2 free cores. */
    printf("RESULT workload=mix-threads threads=%d pairs=%ld failed=%ld mpairs_per_s=%.3f "
           "mpairs_per_cpu_s=%.3f\n",
           threads, steps * threads, failed, (double)steps * threads / wall * 1e3,
           (double)steps * threads / cpu * 1e3);
    rc = failed ? 1 : 0;
  }
  M.xShutdown(M.pAppData);
  return rc;
}

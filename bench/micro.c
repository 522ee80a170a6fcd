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
 *     (the preload library installs it from its sqlite3_initialize);
 *   - with --methods-lib PATH, the table of another library: micro dlopen()s PATH, calls its
 *     `const sqlite3_mem_methods *sqlalloc_bench_methods(uint64_t heap_bytes)` with the heap of
 *     --lib-heap BYTES (default 64 MiB, the heap of bench/run.py) and installs the table with
 *     SQLITE_CONFIG_MALLOC before the steps below, so that it goes the same way as the others.
 *     bench/rlsf_shim (the Rust crate rlsf over one fixed heap) is such a library. Not to be
 *     combined with --heap or with the preload library (each would replace the table).
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
 *   --touch          with --trace: replays as a program that uses its blocks would, writing the
 *                    first 8 bytes of each block it gets (xMalloc, xRealloc) and reading them
 *                    before it gives the block back (xFree, xRealloc). Without it the replay
 *                    touches no block, so every allocator metadata kept inside the blocks
 *                    (boundary tags, free-list links) is read cold, as it rarely is in a program.
 *                    (The timed calls of --latency do not touch.)
 *   --passes P       replays the trace P times (default 2, at least 1) and times the last: the
 *                    instruction count of one pass is the difference between P = 3 and P = 2.
 *   --threads T      runs the mix in T threads at once, each on its own slots, and reports the
 *                    aggregate pairs per second (wall clock).
 *   --latency        with --trace: after the passes above (whose RESULT line is unchanged), more
 *                    passes in which every xMalloc, xFree and xRealloc call is timed on its own,
 *                    and one more line:
 *                      RESULT workload=trace-latency calls=.. failed=.. passes=K clock=tsc
 *                        tsc_per_ns=.. resolution_ns=.. overhead_ns=.. mean_ns=.. p50_ns=..
 *                        p99_ns=.. p999_ns=.. max_ns=.. tail=16 counts [max_of_min_ns=..
 *                        slowest_op=.. slowest_size=..]
 *                    mean, p50/p99/p99.9 (nearest rank) and max are over every call of the first
 *                    of these passes, all operations together, in ns with the timer's own cost
 *                    taken off (at least 0). tail=.. says which calls took the p99.9 time or
 *                    longer in that pass: 16 counts, for malloc, free, realloc and the final
 *                    frees (in that order), each by the size asked (for a free, the block's):
 *                    at most 1 KiB, at most 4 KiB, at most 8 KiB (a page-cache line of a
 *                    4 KiB page is 4360 bytes), larger.
 *   --latency-passes K  (default 1) K timed passes; with K >= 2 also max_of_min_ns: the largest,
 *                    over the calls of a pass, of each call's smallest time over the K passes.
 *                    The replay is the same every pass (the heap is empty between passes), so
 *                    call i does the same work each time, while an interrupt or a preemption
 *                    lands on a different call in each pass: the max of one pass is mostly the
 *                    machine (an interrupt, tens of microseconds; a preemption, milliseconds),
 *                    max_of_min_ns is the allocator's own slowest call.
 *                    The clock: the TSC, read with rdtsc between two lfence (the first waits
 *                    for the call being timed to finish, the second keeps the call from
 *                    starting before the first reading; on AMD, lfence does so where the kernel
 *                    made it dispatch-serializing, as Linux does). The calls timed take 10-100
 *                    ns; an empty timing costs 20-30 ns this way, where clock_gettime(MONOTONIC)
 *                    costs about 25 ns per reading (two per call) and reads the same TSC
 *                    through the vDSO, adding its own jitter. The TSC is used only where cpuid
 *                    says it runs at a constant rate whatever the core's clock (invariant TSC);
 *                    elsewhere, and off x86-64, CLOCK_MONOTONIC is the clock. Ticks become ns
 *                    by a calibration against CLOCK_MONOTONIC over 20 ms (tsc_per_ns), and
 *                    overhead_ns, the mean cost of an empty timing, is taken off every call.
 *                    resolution_ns is the clock's smallest step: on the AMD EPYC virtual
 *                    machines of this project the TSC moves 10 ns at a time, so the
 *                    percentiles come in steps of 10 ns (mean_ns, over all calls, does not).
 *                    max_of_min_ns also names the slowest call: slowest_op (malloc, free,
 *                    realloc, or final-free for the blocks still live at the end) and
 *                    slowest_size (the size asked; for a free, the block's).
 *                    The durations go to arrays allocated with the process's malloc before the
 *                    passes, never through the allocator under test.
 * ns_per_pair is time / (malloc+free pairs); a realloc counts as one pair. Single-thread figures
 * use the thread's CPU time (robust to other load on the machine); multi-thread ones the wall
 * clock (contention shows up as waiting).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <x86intrin.h>
#endif

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

/* ---- per-call timing (--latency) ---------------------------------------------------------- */

static int use_tsc; /* 1: ticks are TSC cycles; 0: ticks are CLOCK_MONOTONIC ns */

static int tsc_invariant(void) {
#if defined(__x86_64__)
  unsigned a, b, c, d;
  if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u) return 0;
  __get_cpuid(0x80000007u, &a, &b, &c, &d);
  return (d >> 8) & 1;
#else
  return 0;
#endif
}

/* One reading of the clock. With the TSC: the first lfence waits until everything before has
 * completed (the call being timed, for the second reading), the second keeps what follows (the
 * call, for the first reading) from starting before the TSC is read. */
static inline uint64_t tick(void) {
#if defined(__x86_64__)
  if (use_tsc) {
    _mm_lfence();
    uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
  }
#endif
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Ticks per ns: the TSC against CLOCK_MONOTONIC over about 20 ms (1 for CLOCK_MONOTONIC). */
static double calibrate(void) {
  if (!use_tsc) return 1.0;
  double m0 = now_ns(CLOCK_MONOTONIC), m1;
  uint64_t t0 = tick(), t1;
  do {
    m1 = now_ns(CLOCK_MONOTONIC);
    t1 = tick();
  } while (m1 - m0 < 20e6);
  return (double)(t1 - t0) / (m1 - m0);
}

static uint32_t clamp32(uint64_t t) { return t > UINT32_MAX ? UINT32_MAX : (uint32_t)t; }

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* The cost of a reading pair with nothing between, in ticks: the mean of the fastest 99% of
 * 20000 (the slowest 1% are interrupts). A mean, not a median: where the clock advances in steps
 * (the TSC of some virtual machines moves by 10 ns at a time), an empty pair reads one or two
 * steps about half the time each, and a median would jump by a whole step from run to run.
 * *res: the clock's step, the greatest common divisor of the empty timings (1 tick where the
 * clock counts every tick). */
static uint64_t gcd64(uint64_t a, uint64_t b) {
  while (b) {
    uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

static double timer_overhead(double *res) {
  enum { N = 20000 };
  uint32_t *d = malloc(sizeof(uint32_t) * N);
  if (!d) die("%s", "out of memory for the timer calibration");
  uint64_t step = 0;
  for (int i = 0; i < N; i++) {
    uint64_t t0 = tick();
    uint64_t t1 = tick();
    d[i] = clamp32(t1 - t0);
    step = gcd64(step, t1 - t0);
  }
  qsort(d, N, sizeof(uint32_t), cmp_u32);
  double sum = 0;
  for (int i = 0; i < N * 99 / 100; i++) sum += d[i];
  free(d);
  *res = (double)step;
  return sum / (N * 99 / 100);
}

/* A duration in ns, the timer's cost taken off (at least 0). */
static double ticks_ns(uint32_t t, double over, double tpn) {
  return (double)t > over ? ((double)t - over) / tpn : 0.0;
}

/* The value at quantile q of n sorted durations (nearest rank), in ns without the overhead. */
static double quantile_ns(const uint32_t *sorted, long n, double q, double over, double tpn) {
  long k = (long)(q * (double)n + 0.999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return ticks_ns(sorted[k - 1], over, tpn);
}

/* The size band of a call for tail= (see --latency at the top): 0..3. */
static int size_band(uint32_t size) {
  return size <= 1024 ? 0 : size <= 4096 ? 1 : size <= 8192 ? 2 : 3;
}

/* K passes of the trace with every call timed alone (see --latency at the top). `cap` is the
 * most calls a pass can make: one per record, and one xFree per block left live at the end. */
static void replay_latency(const uint32_t *rec, uint32_t n, void **slot, uint32_t nid, int passes,
                           long *failed) {
  use_tsc = tsc_invariant();
  double tpn = calibrate();
  double res;
  double over = timer_overhead(&res);
  size_t cap = (size_t)n + nid + 1;
  /* first[k]: call k of the first pass; least[k]: call k's smallest time over the passes. */
  uint32_t *first = calloc(cap, sizeof(uint32_t));
  uint32_t *least = passes > 1 ? calloc(cap, sizeof(uint32_t)) : NULL;
  /* kind[k]: call k's operation * 4 + size band (for tail=); bsize[id]: the size last asked for
   * block id (a free's band is its block's). */
  uint8_t *kind = calloc(cap, 1);
  uint32_t *bsize = calloc((size_t)nid + 1, sizeof(uint32_t));
  if (!first || (passes > 1 && !least) || !kind || !bsize)
    die("%s", "out of memory for the latency arrays");
  /* Fault the arrays' pages in now: calloc's fresh pages would otherwise be faulted by the first
   * pass's stores, one every 1024 calls, each fault evicting what the next timed call needs (as
   * many calls as the p99.9 ranks above). Not zeros, which the compiler may drop after calloc;
   * every element is written before it is read. */
  memset(first, 0xff, cap * sizeof(uint32_t));
  if (least) memset(least, 0xff, cap * sizeof(uint32_t));
  for (uint32_t i = 0; i < n; i++) {
    uint32_t op = rec[2 * i] >> 30, id = rec[2 * i] & 0x3fffffff;
    if (op != 1) bsize[id] = rec[2 * i + 1];
    kind[i] = (uint8_t)(op * 4 + size_band(bsize[id]));
  }
  long calls = 0;
#define KEEP(t)                                         \
  do {                                                  \
    if (pass == 0) {                                    \
      first[k] = (t);                                   \
    } else {                                            \
      uint32_t prev_ = pass == 1 ? first[k] : least[k]; \
      least[k] = (t) < prev_ ? (t) : prev_;             \
    }                                                   \
  } while (0)
  for (int pass = 0; pass < passes; pass++) {
    long k = 0;
    uint64_t t0, t1;
    for (uint32_t i = 0; i < n; i++) {
      uint32_t op = rec[2 * i] >> 30, id = rec[2 * i] & 0x3fffffff;
      int sz = (int)rec[2 * i + 1];
      void *p = slot[id], *q;
      switch (op) {
        case 0:
          t0 = tick();
          q = M.xMalloc(sz);
          t1 = tick();
          slot[id] = q;
          if (!q) (*failed)++;
          break;
        case 1:
          t0 = tick();
          M.xFree(p);
          t1 = tick();
          slot[id] = NULL;
          break;
        default:
          t0 = tick();
          q = p ? M.xRealloc(p, sz) : M.xMalloc(sz);
          t1 = tick();
          if (q) slot[id] = q;
          else (*failed)++;
      }
      KEEP(clamp32(t1 - t0));
      k++;
    }
    /* The blocks left live at the end: freed, and timed, too (at most nid + 1 of them). */
    for (uint32_t i = 0; i <= nid; i++) {
      if (!slot[i]) continue;
      t0 = tick();
      M.xFree(slot[i]);
      t1 = tick();
      KEEP(clamp32(t1 - t0));
      if (pass == 0) kind[k] = (uint8_t)(3 * 4 + size_band(bsize[i]));
      k++;
      slot[i] = NULL;
    }
    /* A pass whose calls differ in number from the first (an allocation failed in one) cannot
     * be matched call by call. */
    if (pass == 0) calls = k;
    else if (k != calls) die("%s", "the latency passes made different numbers of calls");
  }
#undef KEEP
  double total = 0;
  for (long i = 0; i < calls; i++) total += first[i];
  /* The p99.9 duration (nearest rank, as quantile_ns), then the calls that took it or longer. */
  uint32_t *sorted = malloc((size_t)calls * sizeof(uint32_t));
  if (!sorted) die("%s", "out of memory for the latency arrays");
  memcpy(sorted, first, (size_t)calls * sizeof(uint32_t));
  qsort(sorted, (size_t)calls, sizeof(uint32_t), cmp_u32);
  long k999 = (long)(0.999 * (double)calls + 0.999999);
  if (k999 < 1) k999 = 1;
  if (k999 > calls) k999 = calls;
  long tail[16] = {0};
  for (long i = 0; i < calls; i++)
    if (first[i] >= sorted[k999 - 1]) tail[kind[i]]++;
  memcpy(first, sorted, (size_t)calls * sizeof(uint32_t));
  free(sorted);
  printf("RESULT workload=trace-latency calls=%ld failed=%ld passes=%d clock=%s tsc_per_ns=%.4f "
         "resolution_ns=%.1f overhead_ns=%.1f mean_ns=%.2f p50_ns=%.1f p99_ns=%.1f p999_ns=%.1f "
         "max_ns=%.1f",
         calls, *failed, passes, use_tsc ? "tsc" : "monotonic", tpn, res / tpn, over / tpn,
         (total / (double)calls - over) / tpn, quantile_ns(first, calls, 0.50, over, tpn),
         quantile_ns(first, calls, 0.99, over, tpn), quantile_ns(first, calls, 0.999, over, tpn),
         quantile_ns(first, calls, 1.0, over, tpn));
  printf(" tail=");
  for (int i = 0; i < 16; i++) printf("%s%ld", i ? "," : "", tail[i]);
  if (least) {
    /* The slowest call once interference is filtered out, and which record it was (an index
     * past the records is one of the final frees). */
    long at = 0;
    for (long i = 1; i < calls; i++)
      if (least[i] > least[at]) at = i;
    static const char *const ops[] = {"malloc", "free", "realloc", "final-free"};
    uint32_t op = 3, size = 0;
    if (at < (long)n) {
      op = rec[2 * at] >> 30;
      size = rec[2 * at + 1];
      /* A free record carries no size: the block's is that of its id's last malloc/realloc. */
      uint32_t id = rec[2 * at] & 0x3fffffff;
      for (long j = at - 1; op == 1 && j >= 0; j--)
        if ((rec[2 * j] & 0x3fffffff) == id && rec[2 * j] >> 30 != 1) {
          size = rec[2 * j + 1];
          break;
        }
    }
    printf(" max_of_min_ns=%.1f slowest_op=%s slowest_size=%u", ticks_ns(least[at], over, tpn),
           ops[op], size);
  }
  printf("\n");
  free(first);
  free(least);
  free(kind);
  free(bsize);
}

/* Trace format (written by trace_rec.c), little-endian:
 *   header: "SQATRC01", u32 number of records, u32 number of ids (most blocks live at once)
 *   records: u32 (op << 30 | id), u32 size; op 0 = xMalloc into id, 1 = xFree id,
 *            2 = xRealloc id to size. */
/* --touch (see the top): the first 8 bytes of a block are written when it is handed out and read
 * back before it is given back; the reads go into `touch_sink`, so none is optimized away. */
static int touch;
static volatile uint64_t touch_sink;

static inline void touch_new(void *p, uint64_t v) {
  if (touch && p) memcpy(p, &v, 8);
}

static inline void touch_old(const void *p) {
  if (touch && p) {
    uint64_t v;
    memcpy(&v, p, 8);
    touch_sink += v;
  }
}

static int replay(const char *path, int passes, int lat_passes) {
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
          touch_new(slot[id], i);
          break;
        case 1:
          touch_old(slot[id]);
          M.xFree(slot[id]);
          slot[id] = NULL;
          break;
        default: {
          touch_old(slot[id]);
          void *q = slot[id] ? M.xRealloc(slot[id], sz) : M.xMalloc(sz);
          if (q) slot[id] = q;
          else failed++;
          touch_new(q, i);
        }
      }
    }
    /* Blocks the program never freed (live at exit) are freed here, inside the timing. */
    for (uint32_t i = 0; i <= nid; i++)
      if (slot[i]) {
        touch_old(slot[i]);
        M.xFree(slot[i]);
      }
    for (uint32_t i = 0; i <= nid; i++) slot[i] = NULL;
    cpu = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
  }
  printf("RESULT workload=trace pairs=%ld failed=%ld ns_per_pair=%.2f\n", pairs, failed,
         cpu / (double)pairs);
  if (lat_passes > 0) {
    fflush(stdout);
    replay_latency(rec, n, slot, nid, lat_passes, &failed);
  }
  free(rec);
  free(slot);
  return failed ? 1 : 0;
}

int main(int argc, char **argv) {
  long heap = 0, heap_min = 0, steps = 0;
  int threads = 0, passes = 2, latency = 0, lat_passes = 1;
  long lib_heap = 64L * 1024 * 1024;
  const char *trace = NULL, *methods_lib = NULL;
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
    } else if (!strcmp(argv[i], "--touch")) {
      touch = 1;
    } else if (!strcmp(argv[i], "--latency")) {
      latency = 1;
    } else if (!strcmp(argv[i], "--latency-passes") && i + 1 < argc) {
      lat_passes = atoi(argv[++i]);
      if (lat_passes < 1) die("--latency-passes must be at least 1, not '%s'", argv[i]);
    } else if (!strcmp(argv[i], "--methods-lib") && i + 1 < argc) {
      methods_lib = argv[++i];
    } else if (!strcmp(argv[i], "--lib-heap") && i + 1 < argc) {
      lib_heap = atol(argv[++i]);
      if (lib_heap <= 0) die("--lib-heap must be a number of bytes, not '%s'", argv[i]);
    } else {
      die("unknown or incomplete argument '%s' (see the comment at the top of bench/micro.c)",
          argv[i]);
    }
  }
  if (!trace && steps <= 0) die("%s", "give --mix STEPS (> 0) or --trace FILE");
  if (latency && !trace) die("%s", "--latency times the calls of a trace replay: give --trace");
  if (touch && !trace) die("%s", "--touch applies to a trace replay: give --trace");
  if (methods_lib && heap > 0) die("%s", "--methods-lib and --heap each set the allocator");
  if (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) != SQLITE_OK) die("%s", "MEMSTATUS refused");
  if (methods_lib) {
    void *lib = dlopen(methods_lib, RTLD_NOW | RTLD_LOCAL);
    if (!lib) die("--methods-lib: %s", dlerror());
    typedef const sqlite3_mem_methods *(*GetMethods)(uint64_t);
    GetMethods get = (GetMethods)dlsym(lib, "sqlalloc_bench_methods");
    if (!get) die("--methods-lib: no sqlalloc_bench_methods in %s", methods_lib);
    const sqlite3_mem_methods *t = get((uint64_t)lib_heap);
    if (!t) die("--methods-lib: %s gave no table for that heap", methods_lib);
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, t) != SQLITE_OK) die("%s", "CONFIG_MALLOC refused");
  }
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
    rc = replay(trace, passes, latency ? lat_passes : 0);
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

/*
 * sqlalloc_tcl.c: puts sqlalloc's allocators under SQLite's own TCL test harness.
 *
 * Linked into an otherwise unmodified `testfixture` (SQLite 3.40.1's test program) and called
 * through the tree's TCLSH_INIT_PROC hook in place of sqlite3TestInit, which it calls itself.
 * It:
 *
 *  1. installs the sqlalloc allocator named by the environment variable SQLALLOC (a spec such as
 *     "system", "debug" or "memsys5:heap=64M"; "system" when unset) before any test script runs,
 *     so that tester.tcl's `install_malloc_faultsim 1` wraps the fault injector around it;
 *  2. replaces the harness commands `sqlite3_config_heap NBYTE NMINALLOC` and
 *     `sqlite3_install_memsys3` with versions that install sqlalloc's memsys5 and memsys3
 *     (and, for `sqlite3_config_heap 0 0`, the SQLALLOC allocator again) instead of SQLite's C
 *     allocators;
 *  3. declares the `mem3` capability (SQLite 3.40.1 compiles mem3.c out when mem5.c is in, so its
 *     own testfixture cannot have both; ours has sqlalloc's memsys3 behind the command);
 *  4. adds `sqlalloc_counters` (a dict of the counters summed over every allocator installed in
 *     this process) and prints them when the process exits, and prints those of each allocator
 *     it retires.
 *
 * Where the commands differ from test_malloc.c's, on purpose: SQLite's versions call
 * sqlite3_config(SQLITE_CONFIG_HEAP / SQLITE_CONFIG_MALLOC), which replaces the whole methods
 * table, so the fault injector that tester.tcl installed is silently dropped (and
 * `install_malloc_faultsim 1` afterwards is a no-op because the injector thinks it is still
 * installed). Under SQLite's memsys5 permutation every OOM test therefore runs without a single
 * injected fault. These versions keep the injector in place over the new allocator, so the
 * permutations inject faults into sqlalloc's memsys5 and memsys3 at every allocation point.
 * Everything else (arguments, checks, result strings, MISUSE while SQLite is initialized)
 * follows test_malloc.c.
 */
#include <sqlite3.h>
#include <tcl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlalloc.h"

/* Provided by the testfixture: the harness's own init (test_tclsh.c) and SQLite's result-code
 * names (main.c; the testfixture is built with SQLITE_PRIVATE empty, so it is visible). */
extern const char *sqlite3TestInit(Tcl_Interp *interp);
extern const char *sqlite3ErrName(int rc);

/* The spec from SQLALLOC: what `sqlite3_config_heap 0 0` goes back to. */
static char g_default_spec[512];
/* The backend `sqlite3_config_heap` installs: memsys5 (what SQLITE_CONFIG_HEAP gives), or tlsf
 * when the environment variable SQLALLOC_TCL_HEAP is "tlsf" (tcl/run.sh's perm-memsys5-tlsf
 * cell: permutations.test memsys5 with every heap it configures on sqlalloc's tlsf). */
static int g_heap_tlsf;
/* Heap size of the last non-zero `sqlite3_config_heap` (what memsys3 gets, as mem3.c takes
 * sqlite3GlobalConfig.nHeap); 0 when none or after `sqlite3_config_heap 0 0`. */
static long long g_heap_bytes;
/* Counters of the allocators retired so far in this process. */
static sqlalloc_stats g_retired;
/* Number of allocators installed in this process. */
static int g_installs;

static void add_stats(sqlalloc_stats *acc, const sqlalloc_stats *s) {
  acc->malloc_calls += s->malloc_calls;
  acc->free_calls += s->free_calls;
  acc->realloc_calls += s->realloc_calls;
  acc->failed_calls += s->failed_calls;
  acc->current_count += s->current_count;
  acc->current_bytes += s->current_bytes;
  if (s->peak_bytes > acc->peak_bytes) acc->peak_bytes = s->peak_bytes;
  if (s->largest_request > acc->largest_request) acc->largest_request = s->largest_request;
}

/* One line of counters. While the interpreter runs it goes through Tcl's stdout channel (so it
 * lands in order with the test output) on a line of its own; at exit, through stdio. */
static void print_stats(const char *what, const char *spec, const sqlalloc_stats *s, int via_tcl) {
  char line[1024];
  Tcl_Channel out = via_tcl ? Tcl_GetStdChannel(TCL_STDOUT) : NULL;
  snprintf(line, sizeof line,
           "sqlalloc-%s: spec=%s installs=%d malloc_calls=%lld free_calls=%lld "
           "realloc_calls=%lld failed_calls=%lld live_blocks=%lld live_bytes=%lld "
           "peak_bytes=%lld largest_request=%lld\n",
           what, spec, g_installs, (long long)s->malloc_calls, (long long)s->free_calls,
           (long long)s->realloc_calls, (long long)s->failed_calls, (long long)s->current_count,
           (long long)s->current_bytes, (long long)s->peak_bytes, (long long)s->largest_request);
  if (out != NULL) {
    Tcl_WriteChars(out, "\n", -1);
    Tcl_WriteChars(out, line, -1);
    Tcl_Flush(out);
  } else {
    fputs(line, stdout);
    fflush(stdout);
  }
}

/* Totals over every allocator installed so far, the current one included. */
static sqlalloc_stats totals(void) {
  sqlalloc_stats t = g_retired, cur;
  if (sqlalloc_get_stats(&cur) == SQLITE_OK) add_stats(&t, &cur);
  return t;
}

static void print_totals_at_exit(void) {
  sqlalloc_stats t = totals();
  print_stats("total", g_default_spec, &t, 0);
}

/* The xMalloc and xFree of every methods table sqlalloc gave SQLite in this process. sqlalloc's
 * tables are specialised per kind of backend (system, memsys5, the others), so an install can
 * change them; every one of them serves whatever allocator is installed last. */
#define MAX_TABLES 8
static void *(*g_our_malloc[MAX_TABLES])(int);
static void (*g_our_free[MAX_TABLES])(void *);
static int g_our_tables;

static void remember_table(const sqlite3_mem_methods *m) {
  for (int i = 0; i < g_our_tables; i++) {
    if (g_our_malloc[i] == m->xMalloc && g_our_free[i] == m->xFree) return;
  }
  if (g_our_tables == MAX_TABLES) {
    fprintf(stderr, "sqlalloc-tcl: more than %d distinct methods tables\n", MAX_TABLES);
    exit(2);
  }
  g_our_malloc[g_our_tables] = m->xMalloc;
  g_our_free[g_our_tables] = m->xFree;
  g_our_tables++;
}

static int is_our_malloc(void *(*f)(int)) {
  for (int i = 0; i < g_our_tables; i++) {
    if (g_our_malloc[i] == f) return 1;
  }
  return 0;
}

static int is_our_free(void (*f)(void *)) {
  for (int i = 0; i < g_our_tables; i++) {
    if (g_our_free[i] == f) return 1;
  }
  return 0;
}

/*
 * Install `spec` while SQLite is shut down, keeping the fault injector: when the methods table in
 * use is the injector's wrapper over one of sqlalloc's tables (one of our xFree, an xMalloc that
 * is not ours), that wrapper is put back after the install. Every sqlalloc table dispatches to
 * whatever allocator was installed last, so the wrapper now drives the new one. Returns an SQLite
 * result code; nothing changes unless it is SQLITE_OK.
 */
static int install_spec(const char *spec) {
  sqlite3_mem_methods before, ours;
  sqlalloc_stats old;
  int have_old, rc;
  char old_spec[512];

  /* Like every sqlite3_config call, GETMALLOC is refused while SQLite is initialized. */
  rc = sqlite3_config(SQLITE_CONFIG_GETMALLOC, &before);
  if (rc != SQLITE_OK) return rc;
  have_old = sqlalloc_get_stats(&old) == SQLITE_OK;
  snprintf(old_spec, sizeof old_spec, "%s", sqlalloc_installed_spec());

  rc = sqlalloc_install(spec);
  if (rc != SQLITE_OK) {
    fprintf(stderr, "sqlalloc-tcl: cannot install \"%s\": %s\n", spec, sqlalloc_errmsg());
    return rc;
  }
  g_installs++;
  if (have_old) {
    if (old.current_count != 0) {
      fprintf(stderr,
              "sqlalloc-tcl: warning: %s retired with %lld live block(s) (%lld bytes)\n",
              old_spec, (long long)old.current_count, (long long)old.current_bytes);
    }
    add_stats(&g_retired, &old);
    print_stats("retired", old_spec, &old, 1);
  }
  rc = sqlite3_config(SQLITE_CONFIG_GETMALLOC, &ours);
  if (rc != SQLITE_OK) return rc;
  remember_table(&ours);
  if (is_our_free(before.xFree) && !is_our_malloc(before.xMalloc)) {
    rc = sqlite3_config(SQLITE_CONFIG_MALLOC, &before);
  }
  return rc;
}

/* sqlite3_config_heap NBYTE NMINALLOC: sqlalloc's memsys5 over NBYTE bytes with smallest block
 * NMINALLOC (clamped to 1..4096 as SQLITE_CONFIG_HEAP does), or with SQLALLOC_TCL_HEAP=tlsf
 * sqlalloc's tlsf over NBYTE bytes (NMINALLOC has no meaning there); NBYTE 0 (or less): the
 * SQLALLOC allocator again. Result: the SQLite result-code name, as in test_malloc.c. */
static int cmd_config_heap(ClientData cd, Tcl_Interp *interp, int objc, Tcl_Obj *const objv[]) {
  int nbyte, nmin, rc;
  char spec[128];
  (void)cd;
  if (objc != 3) {
    Tcl_WrongNumArgs(interp, 1, objv, "NBYTE NMINALLOC");
    return TCL_ERROR;
  }
  if (Tcl_GetIntFromObj(interp, objv[1], &nbyte)) return TCL_ERROR;
  if (Tcl_GetIntFromObj(interp, objv[2], &nmin)) return TCL_ERROR;
  if (nmin < 1) nmin = 1;
  if (nmin > 4096) nmin = 4096;
  if (nbyte <= 0) {
    rc = install_spec(g_default_spec);
    if (rc == SQLITE_OK) g_heap_bytes = 0;
  } else {
    if (g_heap_tlsf) {
      snprintf(spec, sizeof spec, "tlsf:heap=%d", nbyte);
    } else {
      snprintf(spec, sizeof spec, "memsys5:heap=%d,min=%d", nbyte, nmin);
    }
    rc = install_spec(spec);
    if (rc == SQLITE_OK) g_heap_bytes = nbyte;
  }
  Tcl_SetResult(interp, (char *)sqlite3ErrName(rc), TCL_VOLATILE);
  return TCL_OK;
}

/* sqlite3_install_memsys3: sqlalloc's memsys3 over the heap size of the last
 * `sqlite3_config_heap` (sqlalloc's default memsys3 heap when there was none). */
static int cmd_install_memsys3(ClientData cd, Tcl_Interp *interp, int objc,
                               Tcl_Obj *const objv[]) {
  char spec[128];
  int rc;
  (void)cd;
  (void)objc;
  (void)objv;
  if (g_heap_bytes > 0) {
    snprintf(spec, sizeof spec, "memsys3:heap=%lld", g_heap_bytes);
  } else {
    snprintf(spec, sizeof spec, "memsys3");
  }
  rc = install_spec(spec);
  Tcl_SetResult(interp, (char *)sqlite3ErrName(rc), TCL_VOLATILE);
  return TCL_OK;
}

/* sqlalloc_counters: dict of the counters summed over every allocator installed so far. */
static int cmd_counters(ClientData cd, Tcl_Interp *interp, int objc, Tcl_Obj *const objv[]) {
  sqlalloc_stats t = totals();
  Tcl_Obj *d = Tcl_NewDictObj();
  (void)cd;
  if (objc != 1) {
    Tcl_WrongNumArgs(interp, 1, objv, "");
    return TCL_ERROR;
  }
#define PUT(name) Tcl_DictObjPut(interp, d, Tcl_NewStringObj(#name, -1), Tcl_NewWideIntObj(t.name))
  PUT(malloc_calls);
  PUT(free_calls);
  PUT(realloc_calls);
  PUT(failed_calls);
  PUT(current_count);
  PUT(current_bytes);
  PUT(peak_bytes);
  PUT(largest_request);
#undef PUT
  Tcl_DictObjPut(interp, d, Tcl_NewStringObj("spec", -1),
                 Tcl_NewStringObj(sqlalloc_installed_spec(), -1));
  Tcl_SetObjResult(interp, d);
  return TCL_OK;
}

/* The TCLSH_INIT_PROC of our testfixture. */
const char *sqlalloc_tcl_init(Tcl_Interp *interp) {
  const char *spec = getenv("SQLALLOC");
  const char *script;
  int rc;

  if (spec == NULL || spec[0] == '\0') spec = "system";
  if (strlen(spec) >= sizeof g_default_spec) {
    fprintf(stderr, "sqlalloc-tcl: SQLALLOC is too long (%zu bytes)\n", strlen(spec));
    exit(2);
  }
  strcpy(g_default_spec, spec);
  {
    const char *heap = getenv("SQLALLOC_TCL_HEAP");
    if (heap != NULL && heap[0] != '\0' && strcmp(heap, "memsys5") != 0) {
      if (strcmp(heap, "tlsf") != 0) {
        fprintf(stderr, "sqlalloc-tcl: SQLALLOC_TCL_HEAP=%s: use memsys5 or tlsf\n", heap);
        exit(2);
      }
      g_heap_tlsf = 1;
    }
  }

  /* main() has called sqlite3_shutdown() and nothing has initialized SQLite since. */
  rc = install_spec(g_default_spec);
  if (rc != SQLITE_OK) {
    fprintf(stderr, "sqlalloc-tcl: SQLALLOC=%s not installed (%s)\n", g_default_spec,
            sqlite3ErrName(rc));
    exit(2);
  }
  atexit(print_totals_at_exit);

  script = sqlite3TestInit(interp);

  Tcl_CreateObjCommand(interp, "sqlite3_config_heap", cmd_config_heap, NULL, NULL);
  Tcl_CreateObjCommand(interp, "sqlite3_install_memsys3", cmd_install_memsys3, NULL, NULL);
  Tcl_CreateObjCommand(interp, "sqlalloc_counters", cmd_counters, NULL, NULL);
  Tcl_SetVar2(interp, "sqlite_options", "mem3", "1", TCL_GLOBAL_ONLY);
  return script;
}

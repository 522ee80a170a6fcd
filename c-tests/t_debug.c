/*
 * t_debug overrun|leak
 *
 * The debug backend's checks.
 *  overrun: in a child process (fork) running on "debug", a block from sqlite3_malloc is written
 *    one byte past its end and freed. The child must die of SIGABRT, and what it wrote to stderr
 *    must name the block's address and its size. Done for a 40-byte block (the byte lands right
 *    after an 8-aligned end) and a 37-byte block (the byte lands in the rounding slack).
 *  leak: on "debug:backtrace=8", a block from sqlite3_malloc that is not freed shows up in
 *    sqlalloc_leak_report(fd) with its address and size (and at least one backtrace frame); the
 *    count returned grows by one, and goes back once the block is freed.
 */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Read everything from fd into buf (NUL-terminated, truncated to len-1). */
static size_t slurp(int fd, char *buf, size_t len) {
    size_t n = 0;
    for (;;) {
        char tmp[4096];
        ssize_t r = read(fd, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        for (ssize_t i = 0; i < r && n + 1 < len; i++) buf[n++] = tmp[i];
    }
    buf[n] = 0;
    return n;
}

/* Case-insensitive search for the hex digits of addr (with or without 0x in the text). */
static int mentions_addr(const char *text, uintptr_t addr) {
    char hex[32];
    snprintf(hex, sizeof hex, "%" PRIxPTR, addr);
    size_t m = strlen(hex);
    for (const char *p = text; *p; p++) {
        size_t k = 0;
        while (k < m && p[k] && tolower((unsigned char)p[k]) == hex[k]) k++;
        if (k == m && (p == text || !isxdigit((unsigned char)p[-1])) &&
            !isxdigit((unsigned char)p[m]))
            return 1;
    }
    return 0;
}

/* Whether `text` contains the decimal number n as a whole word. */
static int mentions_number(const char *text, long n) {
    char num[32];
    snprintf(num, sizeof num, "%ld", n);
    size_t m = strlen(num);
    for (const char *p = strstr(text, num); p; p = strstr(p + 1, num)) {
        if ((p == text || !isalnum((unsigned char)p[-1])) && !isalnum((unsigned char)p[m]))
            return 1;
    }
    return 0;
}

static void overrun(int size) {
    int out[2], err[2];
    CHECK(pipe(out) == 0 && pipe(err) == 0, "pipe failed");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        close(out[0]);
        close(err[0]);
        dup2(err[1], 2);
        if (sqlalloc_install("debug") != SQLITE_OK || sqlite3_initialize() != SQLITE_OK) _exit(3);
        unsigned char *p = sqlite3_malloc(size);
        char line[64];
        int n = snprintf(line, sizeof line, "%" PRIxPTR "\n", p ? (uintptr_t)p : (uintptr_t)0);
        if (write(out[1], line, (size_t)n) != n) _exit(5);
        close(out[1]);
        if (!p) _exit(4);
        memset(p, 0x11, (size_t)size);
        p[size] = 0x42; /* one byte past the end: the bug under test */
        sqlite3_free(p);
        sqlite3_shutdown();
        _exit(0); /* not reached when the overrun is caught */
    }
    close(out[1]);
    close(err[1]);
    char addr_line[64], text[16384];
    slurp(out[0], addr_line, sizeof addr_line);
    slurp(err[0], text, sizeof text);
    close(out[0]);
    close(err[0]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed");
    uintptr_t addr = (uintptr_t)strtoull(addr_line, NULL, 16);
    if (WIFEXITED(status)) {
        int c = WEXITSTATUS(status);
        CHECK(c != 3, "child: install(\"debug\") or sqlite3_initialize failed");
        CHECK(c != 4, "child: sqlite3_malloc(%d) returned NULL under the debug backend", size);
        FAIL("a one-byte overrun of a %d-byte block went unnoticed (child exited with %d)", size,
             c);
    }
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
          "overrun of a %d-byte block: child died of signal %d, expected SIGABRT (%d)", size,
          WIFSIGNALED(status) ? WTERMSIG(status) : 0, SIGABRT);
    CHECK(addr != 0, "child did not report its block address");
    CHECK(mentions_addr(text, addr), "overrun report does not name the address %#" PRIxPTR
                                     "; stderr was: %.400s",
          addr, text);
    CHECK(mentions_number(text, size), "overrun report does not name the size %d; stderr "
                                       "was: %.400s",
          size, text);
    ct_note("overrun of %d bytes at %#" PRIxPTR " reported: %.200s", size, addr, text);
}

/* The leak report written to a temporary file; returns the count and fills text. */
static int64_t report(char *text, size_t len) {
    FILE *f = tmpfile();
    CHECK(f != NULL, "tmpfile failed");
    int64_t n = sqlalloc_leak_report(fileno(f));
    CHECK(n >= 0, "sqlalloc_leak_report returned %lld: %s", (long long)n, sqlalloc_errmsg());
    CHECK(lseek(fileno(f), 0, SEEK_SET) == 0, "lseek failed");
    slurp(fileno(f), text, len);
    fclose(f);
    return n;
}

/* The line of `text` naming addr, or NULL. */
static const char *line_of(const char *text, uintptr_t addr, char *line, size_t len) {
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(line, len, "%.*s", (int)n, p);
        if (mentions_addr(line, addr)) return e ? e + 1 : p + n;
        p += n + (e != NULL);
    }
    return NULL;
}

static void leak(void) {
    static char text[1 << 16];
    char line[512];
    ct_install("debug:backtrace=8");
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");
    int64_t n0 = report(text, sizeof text);
    void *p = sqlite3_malloc(1234);
    CHECK(p != NULL, "sqlite3_malloc(1234) returned NULL under the debug backend");
    memset(p, 0, 1234);
    int64_t n1 = report(text, sizeof text);
    CHECK(n1 == n0 + 1, "leak count went from %lld to %lld after one sqlite3_malloc",
          (long long)n0, (long long)n1);
    const char *next = line_of(text, (uintptr_t)p, line, sizeof line);
    CHECK(next != NULL, "leak report does not list the block at %p; report was: %.400s", p,
          text);
    CHECK(mentions_number(line, 1234), "leak line for %p does not give the size 1234: \"%s\"", p,
          line);
    CHECK(strstr(next, "#0") != NULL, "no backtrace frame after the leak line (backtrace=8): "
                                      "%.200s",
          next);
    ct_note("leak line: %s", line);
    sqlite3_free(p);
    int64_t n2 = report(text, sizeof text);
    CHECK(n2 == n0, "leak count is %lld after freeing the block, expected %lld", (long long)n2,
          (long long)n0);
    CHECK(line_of(text, (uintptr_t)p, line, sizeof line) == NULL,
          "freed block %p still listed: \"%s\"", p, line);
    CHECK(sqlite3_shutdown() == SQLITE_OK, "sqlite3_shutdown failed");
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "overrun") == 0) {
        ct_begin("debug-overrun", "debug");
        overrun(40);
        overrun(37);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "leak") == 0) {
        ct_begin("debug-leak", "debug:backtrace=8");
        leak();
        return 0;
    }
    fprintf(stderr, "usage: %s overrun|leak\n", argv[0]);
    return 2;
}

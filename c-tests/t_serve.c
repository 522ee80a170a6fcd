/*
 * t_serve
 *
 * Live telemetry from C: sqlalloc_serve and sqlalloc_report_every.
 *  - bad arguments first: NULL (SQLITE_MISUSE), an address that does not parse and a port that is
 *    taken (SQLITE_ERROR, the errmsg naming them), a periodic report to stderr, with interval 0
 *    or NULL target;
 *  - then serve on a free port of 127.0.0.1 and fetch GET /metrics over a socket of our own: a
 *    200 with the Prometheus content type, the memsys5 heap figures, and, while this program is
 *    idle, sqlite_memory_current_bytes equal to sqlite3_memory_used(); a second sqlalloc_serve is
 *    SQLITE_MISUSE; POST gets 405;
 *  - a periodic report every second: the file appears, whole, within 3 s; a second call is
 *    SQLITE_MISUSE.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* 127.0.0.1:port (0: a port the kernel picks). */
static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    return a;
}

/* A listening socket on 127.0.0.1 with a port the kernel picked; its port in *port. */
static int listen_any(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0, "socket failed");
    struct sockaddr_in a = loopback(0);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind failed");
    CHECK(listen(fd, 4) == 0, "listen failed");
    socklen_t len = sizeof a;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0, "getsockname failed");
    *port = ntohs(a.sin_port);
    return fd;
}

/* Send `req` to 127.0.0.1:port and read the whole answer into buf (NUL-terminated). */
static void http(int port, const char *req, char *buf, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0, "socket failed");
    struct sockaddr_in a = loopback(port);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect to port %d failed", port);
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req), "short write");
    size_t n = 0;
    for (int i = 0; i < 10000 && n + 1 < cap; i++) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    buf[n] = 0;
    close(fd);
}

static long long sample(const char *text, const char *name) {
    const char *p = strstr(text, name);
    CHECK(p != NULL, "%s missing in:\n%s", name, text);
    const char *sp = strchr(p, ' ');
    CHECK(sp != NULL, "no value for %s", name);
    return atoll(sp + 1);
}

int main(void) {
    ct_begin("serve", "memsys5:heap=16M");
    ct_install("memsys5:heap=16M");
    CHECK(sqlite3_initialize() == SQLITE_OK, "sqlite3_initialize failed");
    sqlite3 *db = ct_open(":memory:");
    EXEC(db, "CREATE TABLE t(x); INSERT INTO t SELECT randomblob(300) FROM "
             "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<2000) "
             "SELECT i FROM c)");

    CHECK(sqlalloc_serve(NULL) == SQLITE_MISUSE, "serve(NULL) is not SQLITE_MISUSE");
    CHECK(strstr(sqlalloc_errmsg(), "addr is NULL") != NULL, "errmsg \"%s\"", sqlalloc_errmsg());
    CHECK(sqlalloc_serve("1.2.3.4.5:80") == SQLITE_ERROR, "a bad address is not SQLITE_ERROR");
    CHECK(strstr(sqlalloc_errmsg(), "'1.2.3.4.5' is not an IP address") != NULL, "errmsg \"%s\"",
          sqlalloc_errmsg());
    int taken;
    int busy = listen_any(&taken);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", taken);
    CHECK(sqlalloc_serve(addr) == SQLITE_ERROR, "a port in use is not SQLITE_ERROR");
    CHECK(strstr(sqlalloc_errmsg(), "cannot listen on") != NULL &&
              strstr(sqlalloc_errmsg(), addr) != NULL,
          "errmsg \"%s\"", sqlalloc_errmsg());
    close(busy);

    int port;
    close(listen_any(&port)); /* a port that was free a moment ago */
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    CHECK(sqlalloc_serve(addr) == SQLITE_OK, "serve(%s): %s", addr, sqlalloc_errmsg());
    CHECK(sqlalloc_serve("127.0.0.1:0") == SQLITE_MISUSE, "a second serve is not SQLITE_MISUSE");
    CHECK(strstr(sqlalloc_errmsg(), "already serving on") != NULL, "errmsg \"%s\"",
          sqlalloc_errmsg());

    static char buf[1 << 16];
    http(port, "GET /metrics HTTP/1.0\r\n\r\n", buf, sizeof buf);
    CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0, "answer:\n%.300s", buf);
    CHECK(strstr(buf, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != NULL,
          "content type:\n%.300s", buf);
    long long cur = sample(buf, "\nsqlite_memory_current_bytes{");
    CHECK(cur == sqlite3_memory_used(), "current_bytes %lld, sqlite3_memory_used() %lld", cur,
          (long long)sqlite3_memory_used());
    CHECK(sample(buf, "\nsqlite_memory_allocator_heap_bytes{") == 16 << 20, "heap_bytes");
    CHECK(sample(buf, "\nsqlite_memory_allocator_free_bytes{") > 0, "free_bytes");
    http(port, "POST /metrics HTTP/1.1\r\n\r\n", buf, sizeof buf);
    CHECK(strncmp(buf, "HTTP/1.1 405 ", 13) == 0, "POST answer:\n%.300s", buf);

    CHECK(sqlalloc_report_every(NULL, 1) == SQLITE_MISUSE, "report_every(NULL) not MISUSE");
    CHECK(sqlalloc_report_every("stderr", 1) == SQLITE_ERROR, "report_every(stderr) not ERROR");
    CHECK(strstr(sqlalloc_errmsg(), "go to a file") != NULL, "errmsg \"%s\"", sqlalloc_errmsg());
    CHECK(sqlalloc_report_every("json:/tmp/x.json", 0) == SQLITE_ERROR, "interval 0 not ERROR");
    CHECK(strstr(sqlalloc_errmsg(), "at least 1 second") != NULL, "errmsg \"%s\"",
          sqlalloc_errmsg());
    char path[128], target[160];
    snprintf(path, sizeof path, "/tmp/sqlalloc-t_serve-%d.prom", (int)getpid());
    snprintf(target, sizeof target, "prometheus:%s", path);
    unlink(path);
    CHECK(sqlalloc_report_every(target, 1) == SQLITE_OK, "report_every: %s", sqlalloc_errmsg());
    CHECK(sqlalloc_report_every(target, 1) == SQLITE_MISUSE, "a second report_every not MISUSE");
    FILE *f = NULL;
    for (int i = 0; i < 60 && f == NULL; i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        f = fopen(path, "r");
    }
    CHECK(f != NULL, "%s not written within 3 s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    CHECK(strncmp(buf, "# HELP sqlite_memory_current_bytes ", 35) == 0, "file:\n%.300s", buf);
    CHECK(strstr(buf, "sqlite_memory_process_resident_bytes{") != NULL, "file not whole");
    unlink(path);

    sqlite3_close(db);
    printf("t_serve: ok\n");
    return 0;
}

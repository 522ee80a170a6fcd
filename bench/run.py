#!/usr/bin/env python3
"""Run sqlalloc's benchmarks side by side with SQLite's C allocators and write docs/BENCHMARKS.md.

Usage: bench/run.py --build DIR --preload SO [--out FILE] [--chart FILE] [--reps N] [--smoke]

DIR is what bench/build.sh built (speedtest1, micro, threads, libtrace_rec.so, and SQLite's
library with memsys5). SO is libsqlalloc_preload.so (built with the jemalloc/mimalloc features
when those backends are to be measured; they are skipped, and the page says so, when it lacks
them). Every configuration runs the same binaries on the same library:

  C mem1            SQLite's default allocator (glibc malloc)
  C memsys5         SQLite's memsys5 (--heap HEAP MIN, SQLITE_CONFIG_HEAP)
  LD_PRELOAD je/mi  C mem1 over Debian's libjemalloc2 / libmimalloc2.0 (the process's malloc)
  sqlalloc SPEC     LD_PRELOAD=SO SQLALLOC=SPEC (the preload library installs it)
  rlsf              the Rust crate rlsf over one fixed heap, `micro --methods-lib
                    DIR/librlsf_shim.so` (bench/rlsf_shim): micro's trace, mix and per-call rows
                    only (speedtest1 and the thread drivers have no way to load it); skipped, with
                    a message, when DIR has no librlsf_shim.so

and, for the cost of the scrape endpoint, `sqlalloc system` without and with
SQLALLOC_LISTEN=127.0.0.1:PORT while a thread of this script GETs /metrics every 100 ms.

Methodology: each round runs every configuration once, in order (A B C ... A B C ...), for
--reps rounds; a figure is the median over rounds; a ratio is the median over rounds of the
ratio within the round (paired, so a machine that drifts during the run biases neither side).
Times are the CPU time (user + sys) of the process or thread: on a shared machine, wall time
also counts time spent waiting for a core. The thread-scaling figures must use the wall clock.

Per-call time (`micro --trace FILE --latency`): the fixed-heap configurations (C memsys5,
sqlalloc memsys5, memsys3, tlsf, and rlsf) replay the trace with every call timed on its own, in
runs of their own (the ns/pair runs are not timed call by call), alternated in rounds like the
rest: p50/p99/p99.9/max of one pass per run, and the max over calls of each call's smallest time
over LAT_PASSES passes (a pass's max is mostly the machine: interrupts, preemption).

--smoke runs every configuration once on tiny inputs and checks that each produced a number, that
each sqlalloc allocator really was installed, that --verify hashes agree and that the scrape
endpoint answered; it writes no page.
"""
import argparse
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import live_costs
import smallest_heap

HEAP = 64 * 1024 * 1024
HEAP_MIN = 64
# sqlalloc configurations whose heap marking for memcheck runs under valgrind (not counted).
VALGRIND_MARKED = ("memsys5", "memsys5-shards", "memsys3", "tlsf", "tlsf-shards")
# The scrape endpoint's pair runs this many times --reps rounds.
EP_ROUNDS = 3
# Timed passes of each per-call run (micro --latency-passes): the first gives the percentiles and
# the pass's max, all of them the max over calls of each call's smallest time.
LAT_PASSES = 5
# The fixed-heap configurations whose calls are timed one by one.
LAT_KEYS = ("c-memsys5", "memsys5", "memsys3", "tlsf", "rlsf")
# micro's tail= counts, in its order: operation-major, then the size asked (for a free, the
# block's) by band (bench/micro.c, --latency).
TAIL_KINDS = tuple(f"{op} {band}" for op in ("malloc", "free", "realloc", "final free")
                   for band in ("≤ 1 KiB", "1–4 KiB", "4–8 KiB", "> 8 KiB"))
JEMALLOC_SO = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
MIMALLOC_SO = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"


class Config:
    """One allocator configuration: how to run a program under it and its C counterpart."""

    def __init__(self, key, label, kind, spec=None, preload=None, counterpart=None, lib=None):
        self.key, self.label, self.kind = key, label, kind
        self.spec, self.preload, self.counterpart = spec, preload, counterpart
        self.lib = lib  # kind "lib": a library for `micro --methods-lib`

    def env(self, args, counting=False):
        """The environment to run a program under this configuration. `counting`: for
        callgrind, where memsys3/memsys5 run from the preload library built without the pool
        marking (`--preload-nomark`), whose client requests callgrind would count."""
        e = dict(os.environ)
        for v in ("SQLALLOC", "SQLALLOC_REPORT", "LD_PRELOAD", "SQLALLOC_TRACE", "SQLALLOC_LISTEN",
                  "SQLALLOC_REPORT_INTERVAL"):
            e.pop(v, None)
        if self.kind == "sqlalloc":
            e["LD_PRELOAD"] = args.preload
            if counting and self.key in VALGRIND_MARKED:
                e["LD_PRELOAD"] = args.preload_nomark
            e["SQLALLOC"] = self.spec
        elif self.preload:
            e["LD_PRELOAD"] = self.preload
        return e

    def heap_args(self):
        if self.kind == "lib":
            return ["--methods-lib", self.lib, "--lib-heap", str(HEAP)]
        return ["--heap", str(HEAP), str(HEAP_MIN)] if self.kind == "memsys5" else []


def rlsf_version():
    """rlsf's version in bench/rlsf_shim/Cargo.lock (what the shim is built with)."""
    lock = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rlsf_shim", "Cargo.lock")
    try:
        with open(lock) as fh:
            m = re.search(r'name = "rlsf"\nversion = "([^"]+)"', fh.read())
    except OSError:
        m = None
    return m.group(1) if m else "?"


def lib_configs(b):
    """The configurations that only bench/micro.c can run (`--methods-lib`), and why any is
    left out: {key: reason}."""
    mb = HEAP // (1024 * 1024)
    so = f"{b}/librlsf_shim.so"
    if not os.path.exists(so):
        return [], {"rlsf": f"skipped: no {so} (bench/build.sh builds it from bench/rlsf_shim)"}
    return [Config("rlsf", f"rlsf (Rust crate rlsf {rlsf_version()}, {mb}M)", "lib",
                   counterpart="c-memsys5", lib=so)], {}


def configs(args):
    mb = HEAP // (1024 * 1024)
    cs = [
        Config("mem1", "C mem1 (glibc)", "c"),
        Config("c-memsys5", f"C memsys5 ({mb}M, min {HEAP_MIN})", "memsys5"),
        Config("pre-jemalloc", "C mem1 + LD_PRELOAD jemalloc", "c", preload=JEMALLOC_SO),
        Config("pre-mimalloc", "C mem1 + LD_PRELOAD mimalloc", "c", preload=MIMALLOC_SO),
        Config("system", "sqlalloc system", "sqlalloc", "system", counterpart="mem1"),
        Config("memsys5", "sqlalloc memsys5", "sqlalloc", f"memsys5:heap={mb}M,min={HEAP_MIN}",
               counterpart="c-memsys5"),
        Config("memsys5-shards", "sqlalloc memsys5 shards=2", "sqlalloc",
               f"memsys5:heap={mb}M,min={HEAP_MIN},shards=2", counterpart="c-memsys5"),
        Config("memsys3", "sqlalloc memsys3", "sqlalloc", f"memsys3:heap={mb}M",
               counterpart="mem1"),
        Config("tlsf", "sqlalloc tlsf", "sqlalloc", f"tlsf:heap={mb}M", counterpart="c-memsys5"),
        Config("tlsf-shards", "sqlalloc tlsf shards=2", "sqlalloc", f"tlsf:heap={mb}M,shards=2",
               counterpart="c-memsys5"),
        Config("debug", "sqlalloc debug", "sqlalloc", "debug", counterpart="mem1"),
        Config("limit", "sqlalloc system+limit", "sqlalloc", "system+limit:max=1G",
               counterpart="mem1"),
        Config("jemalloc", "sqlalloc jemalloc", "sqlalloc", "jemalloc", counterpart="pre-jemalloc"),
        Config("mimalloc", "sqlalloc mimalloc", "sqlalloc", "mimalloc", counterpart="pre-mimalloc"),
    ]
    return cs


def run(cmd, env, check=True):
    """Run cmd; return (stdout, stderr, cpu seconds of the child, wall seconds). The CPU time is
    the child's own rusage from wait4 (microsecond resolution; os.times() counts clock ticks)."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
    if check and p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} exited with {p.returncode}:\n{err[-2000:]}")
    return out, err, ru.ru_utime + ru.ru_stime, wall


def result(out, key):
    m = re.search(rf"RESULT .*\b{key}=(-?[0-9.]+)", out)
    if not m:
        sys.exit(f"bench: no {key} in the output:\n{out[-1000:]}")
    return float(m.group(1))


def check_installed(c, args, b):
    """A sqlalloc configuration must really install: ask the preload library for a report."""
    if c.kind != "sqlalloc":
        return None
    env = c.env(args)
    env["SQLALLOC_REPORT"] = "stderr"
    out, err, _, _ = run([f"{b}/speedtest1", "--size", "1", "--memdb", "--testset", "main"],
                         env, check=False)
    if "not built in" in err:
        return f"skipped: {args.preload} lacks the {c.spec} backend (build it with --features {c.spec})"
    if f'spec "{c.spec}"' not in err:
        sys.exit(f"bench: {c.label}: the allocator was not installed:\n{err[-2000:]}")
    return None


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def run_order(cs):
    """The configurations in the order a round runs them: each C configuration followed by the
    sqlalloc ones measured against it, so that the two sides of a ratio run close together in
    time (on a shared machine the noise comes in bursts)."""
    order, seen = [], set()
    for c in cs:
        if c.counterpart is None and c.key not in seen:
            order.append(c)
            seen.add(c.key)
            for d in cs:
                if d.counterpart == c.key and d.key not in seen:
                    order.append(d)
                    seen.add(d.key)
    return order + [c for c in cs if c.key not in seen]


def alternate(cs, reps, fn):
    """Call fn(config, round) for every round and configuration; gather results. Rounds run the
    configurations in `run_order`, forwards then backwards (A B, B A, ...), so that a drift of
    the machine during a round does not favour the side that runs first."""
    res = {c.key: [] for c in cs}
    order = run_order(cs)
    for r in range(reps):
        for c in (order if r % 2 == 0 else order[::-1]):
            res[c.key].append(fn(c, r))
    return res


def paired_ratio(res, a, b, invert=False):
    """Median over rounds of res[a][r] / res[b][r] (b / a when invert)."""
    rs = [(y / x if invert else x / y) for x, y in zip(res[a], res[b]) if x and y]
    return median(rs)


def callgrind_ir(cmd, env):
    out, err, _, _ = run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd,
                         env)
    m = re.search(r"Collected : ([0-9]+)", err)
    if not m:
        sys.exit(f"bench: no callgrind total in:\n{err[-1500:]}")
    return int(m.group(1)), out


# ---- the scrape endpoint ------------------------------------------------------------------------
SCRAPE_PERIOD = 0.1      # seconds between two GET /metrics: 10 scrapes a second
SCRAPE_POLL = 0.005      # until the endpoint first answers, a connection attempt this often
SCRAPE_TIMEOUT = 2.0     # per connect and per recv
SCRAPE_MAX_BYTES = 1 << 20
SCRAPE_LIMIT_S = 600     # a scraper gives up after this long, whatever happens
SCRAPE_METRIC = b"sqlite_memory_current_bytes{"


def free_port():
    """A TCP port of 127.0.0.1 free right now (bind port 0, read it, close). Another program may
    take it before the preload binds it: the preload then says so on stderr (`no endpoint`), and
    `run_scraped` stops the bench."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scraper:
    """A thread that GETs http://127.0.0.1:PORT/metrics every SCRAPE_PERIOD seconds (a fixed
    schedule) until `stop`, as a Prometheus server would, only far more often. Until the endpoint
    first answers (the program is starting), it tries to connect every SCRAPE_POLL seconds.
    Every answer must be `HTTP/1.1 200` with a whole body (Content-Length) that holds the
    exposition; anything else that answered is recorded in `bad`. A scrape that got no answer
    (refused, reset, empty: the program exiting under it) is counted in `unanswered`. Bounded: at
    most SCRAPE_LIMIT_S seconds and SCRAPE_LIMIT_S / SCRAPE_POLL attempts, each with timeouts."""

    def __init__(self, port):
        self.port = port
        self.ok = 0            # scrapes answered 200 with the whole exposition
        self.body_bytes = 0    # bytes of exposition received, over the `ok` scrapes
        self.unanswered = 0    # attempts after the first answer that got no answer
        self.bad = []          # answers that were not a 200 with the exposition
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scraper", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2 * SCRAPE_TIMEOUT + 1)
        if self._thread.is_alive():
            sys.exit(f"bench: the scraper of 127.0.0.1:{self.port} did not stop")

    def _get(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=SCRAPE_TIMEOUT) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            buf = bytearray()
            while len(buf) < SCRAPE_MAX_BYTES:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
        return bytes(buf)

    def _check(self, resp):
        """None for a 200 with the whole exposition, else what is wrong."""
        head, sep, body = resp.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if not status.startswith("HTTP/1.1 200 "):
            return f"status line {status!r}"
        m = re.search(rb"\r\ncontent-length: *([0-9]+)", head, re.I)
        if not sep or not m or int(m.group(1)) != len(body):
            return f"{len(body)} body bytes, Content-Length {m.group(1) if m else None}"
        if SCRAPE_METRIC not in body:
            return f"no {SCRAPE_METRIC.decode()} in the body"
        return None

    def _loop(self):
        t0 = time.monotonic()
        next_t = t0
        for _ in range(int(SCRAPE_LIMIT_S / SCRAPE_POLL)):
            if self._stop.is_set() or time.monotonic() - t0 > SCRAPE_LIMIT_S:
                return
            try:
                resp = self._get()
            except OSError:
                resp = b""
            if not resp:
                if self.ok == 0:       # not listening yet: try again soon
                    self._stop.wait(SCRAPE_POLL)
                    next_t = time.monotonic()
                    continue
                self.unanswered += 1
            else:
                why = self._check(resp)
                if why is None:
                    self.ok += 1
                    self.body_bytes += len(resp.partition(b"\r\n\r\n")[2])
                elif resp.startswith(b"HTTP/"):
                    self.bad.append(why)
                else:
                    self.unanswered += 1
            next_t += SCRAPE_PERIOD
            self._stop.wait(max(0.0, next_t - time.monotonic()))


def run_scraped(cmd, env, what):
    """Run cmd with SQLALLOC_LISTEN on a free port of 127.0.0.1, scraped every SCRAPE_PERIOD
    seconds for the whole run: (stdout, cpu, wall, Scraper). Stops the bench when the endpoint did
    not start, never answered, or answered anything but the exposition."""
    port = free_port()
    env = dict(env)
    env["SQLALLOC_LISTEN"] = f"127.0.0.1:{port}"
    sc = Scraper(port).start()
    try:
        out, err, cpu, wall = run(cmd, env)
    finally:
        sc.stop()
    if "SQLALLOC_LISTEN" in err:
        sys.exit(f"bench: {what}: the endpoint did not start:\n{err[-1000:]}")
    if sc.bad:
        sys.exit(f"bench: {what}: {len(sc.bad)} scrapes of 127.0.0.1:{port}/metrics were not "
                 f"answered with the exposition: {sc.bad[:3]}")
    if sc.ok == 0:
        sys.exit(f"bench: {what}: the endpoint 127.0.0.1:{port} never answered GET /metrics")
    # Only the attempts around the program's exit (one, two on a slow machine) may go unanswered.
    if sc.unanswered > 2:
        sys.exit(f"bench: {what}: {sc.unanswered} scrapes of 127.0.0.1:{port} got no answer "
                 f"while the program ran ({sc.ok} did)")
    return out, cpu, wall, sc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--preload", required=True)
    ap.add_argument("--out", default="docs/BENCHMARKS.md")
    ap.add_argument("--chart", default="docs/benchmarks.svg")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--counters-cost", default=None,
                    help="the examples/counters_cost binary (measures the counters alone)")
    ap.add_argument("--preload-nomark", default=None,
                    help="the preload library built with --features no-valgrind-marking: "
                         "memsys3/memsys5 instruction counts (without it they are left out)")
    ap.add_argument("--preload-rss", default=None,
                    help="the preload library of the peak-RSS section (default: --preload): the "
                         "default build, without the jemalloc feature, whose library runs "
                         "jemalloc's initialization at load")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="the smoke run's tiny inputs, but the page is written (to test it)")
    args = ap.parse_args()
    # The revision measured, taken before this run writes anything (the page and the chart are
    # tracked files: asked at the end, git would call every run's tree dirty).
    try:
        args.rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                                  text=True,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        args.rev = "unknown"
    b = os.path.abspath(args.build)
    args.preload = os.path.abspath(args.preload)
    for f in ("speedtest1", "micro", "threads", "libtrace_rec.so"):
        if not os.path.exists(f"{b}/{f}"):
            sys.exit(f"bench: {b}/{f} is missing (run bench/build.sh first)")
    if not os.path.exists(args.preload):
        sys.exit(f"bench: no preload library at {args.preload} (make preload)")
    if args.preload_nomark:
        args.preload_nomark = os.path.abspath(args.preload_nomark)
        if not os.path.exists(args.preload_nomark):
            sys.exit(f"bench: no preload library at {args.preload_nomark} (build it with "
                     "--features no-valgrind-marking)")
    smoke = args.smoke
    tiny = smoke or args.quick
    reps = 1 if tiny else args.reps
    if reps < 1:
        sys.exit("bench: --reps must be at least 1")
    size = "1" if tiny else "25"
    t_start = time.monotonic()
    load0 = os.getloadavg()

    cs, skipped = [], {}
    for c in configs(args):
        if c.preload and not os.path.exists(c.preload):
            skipped[c.key] = f"skipped: {c.preload} is not installed (apt-get install " + \
                ("libjemalloc2" if "jemalloc" in c.preload else "libmimalloc2.0") + ")"
            continue
        why = check_installed(c, args, b)
        if why:
            skipped[c.key] = why
            continue
        cs.append(c)
    # micro alone runs these: they join `cs` for the micro rows only (`micro_cs`).
    lib_cs, lib_skipped = lib_configs(b)
    skipped.update(lib_skipped)
    for c in lib_cs:
        out, err, _, _ = run([f"{b}/micro"] + c.heap_args() + ["--mix", "1000"], c.env(args),
                             check=False)
        if "RESULT" not in out:
            sys.exit(f"bench: {c.label}: micro --methods-lib {c.lib} did not run:\n{err[-1000:]}")
    keys = {c.key for c in cs}
    for c in cs + lib_cs:
        if c.counterpart and c.counterpart not in keys:
            c.counterpart = "mem1"
    for k, why in skipped.items():
        print(f"bench: {k}: {why}", file=sys.stderr)
    byk = {c.key: c for c in cs + lib_cs}
    micro_cs = cs + lib_cs

    # ---- speedtest1 -------------------------------------------------------------------------
    shm = f"/dev/shm/sqlalloc-bench-{os.getpid()}.db"
    workloads = [
        ("memdb", "--memdb, default lookaside", ["--memdb"]),
        ("memdb-la0", "--memdb, --lookaside 0 0", ["--memdb", "--lookaside", "0", "0"]),
        ("file", "tmpfs file, --nosync, default lookaside", ["--nosync", shm]),
        ("file-la0", "tmpfs file, --nosync, --lookaside 0 0",
         ["--nosync", "--lookaside", "0", "0", shm]),
    ]

    def rm_shm():
        for suffix in ("", "-journal", "-wal"):
            try:
                os.unlink(shm + suffix)
            except FileNotFoundError:
                pass

    def speedtest(c, extra):
        cmd = [f"{b}/speedtest1", "--size", size] + c.heap_args() + extra
        out, err, cpu, wall = run(cmd, c.env(args))
        rm_shm()
        if "TOTAL" not in out:
            sys.exit(f"bench: speedtest1 under {c.label} printed no TOTAL:\n{out[-500:]}{err[-500:]}")
        return cpu

    st = {}
    for wk, _, extra in workloads:
        print(f"bench: speedtest1 {wk}", file=sys.stderr)
        st[wk] = alternate(cs, reps, lambda c, r: speedtest(c, extra))

    # --verify once per configuration: every allocator must give the same results.
    verify = {}
    for c in cs:
        out, _, _, _ = run([f"{b}/speedtest1", "--size", size, "--verify", "--memdb", "--lookaside",
                            "0", "0"] + c.heap_args(), c.env(args))
        m = re.search(r"Verification Hash: ([0-9]+)", out)
        if not m:
            sys.exit(f"bench: no verification hash from {c.label}")
        verify[c.key] = m.group(1)
    hashes = set(verify.values())
    if len(hashes) != 1:
        sys.exit(f"bench: --verify hashes differ between configurations: {verify}")

    # Heap usage of the two memsys5: SQLite's own high-water mark of memory used (`--stats`),
    # which counts xSize of live blocks, i.e. the power-of-two blocks of each allocator.
    peaks = {}
    for k in ("c-memsys5", "memsys5"):
        if k in byk:
            out, _, _, _ = run([f"{b}/speedtest1", "--size", size, "--stats", "--memdb", "--lookaside",
                                "0", "0"] + byk[k].heap_args(), byk[k].env(args))
            m = re.search(r"Memory Used \(bytes\): +[0-9]+ \(max ([0-9]+)\)", out)
            if not m:
                sys.exit(f"bench: no memory high-water mark from {byk[k].label}")
            peaks[k] = int(m.group(1))
    if smoke and len(peaks) == 2 and peaks["c-memsys5"] != peaks["memsys5"]:
        sys.exit(f"bench-smoke: memsys5 heap high-water marks differ: C {peaks['c-memsys5']}, "
                 f"sqlalloc {peaks['memsys5']} (placement no longer follows C memsys5)")

    # ---- the scrape endpoint ------------------------------------------------------------------
    # `sqlalloc system` on the same binary and preload library, without and with SQLALLOC_LISTEN
    # while a Scraper GETs /metrics every 100 ms; alternated like the rest, over EP_ROUNDS times
    # the rounds (the target is 1%, and the elapsed time it is on is the noisier clock). The
    # smoke run uses --size 5 here (~0.1 s) so that the endpoint surely answers before the exit.
    print("bench: speedtest1 with the scrape endpoint", file=sys.stderr)
    ep_cs = [Config("ep-off", "sqlalloc system, no endpoint", "sqlalloc", "system"),
             Config("ep-on", "sqlalloc system, SQLALLOC_LISTEN scraped every 100 ms", "sqlalloc",
                    "system", counterpart="ep-off")]
    ep_workloads = [x for x in workloads if x[0] in ("memdb", "file")]
    ep_reps = 1 if tiny else EP_ROUNDS * reps
    ep_size = "5" if tiny else size

    def ep_run(c, extra):
        cmd = [f"{b}/speedtest1", "--size", ep_size] + extra
        if c.key == "ep-on":
            out, cpu, wall, sc = run_scraped(cmd, c.env(args),
                                             f"speedtest1 {' '.join(extra)} with SQLALLOC_LISTEN")
            n, nb, un = sc.ok, sc.body_bytes, sc.unanswered
        else:
            out, _, cpu, wall = run(cmd, c.env(args))
            n = nb = un = 0
        rm_shm()
        if "TOTAL" not in out:
            sys.exit(f"bench: speedtest1 under {c.label} printed no TOTAL:\n{out[-500:]}")
        return cpu, wall, n, nb, un

    ep = {}
    for wk, _, extra in ep_workloads:
        ep[wk] = alternate(ep_cs, ep_reps, lambda c, r: ep_run(c, extra))
    ep_cpu = {wk: {k: [x[0] for x in v] for k, v in d.items()} for wk, d in ep.items()}
    ep_wall = {wk: {k: [x[1] for x in v] for k, v in d.items()} for wk, d in ep.items()}
    ep_scrapes = {wk: [x[2] for x in d["ep-on"]] for wk, d in ep.items()}
    ep_bytes = {wk: sum(x[3] for x in d["ep-on"]) for wk, d in ep.items()}
    ep_unanswered = {wk: sum(x[4] for x in d["ep-on"]) for wk, d in ep.items()}

    # ---- microbenchmarks ----------------------------------------------------------------------
    trace = f"{b}/speedtest1-la0.trace"
    env = dict(os.environ)
    env.update({"LD_PRELOAD": f"{b}/libtrace_rec.so", "SQLALLOC_TRACE": trace,
                "SQLALLOC": "system"})
    env.pop("SQLALLOC_REPORT", None)
    _, rec_err, _, _ = run([f"{b}/speedtest1", "--size", size, "--memdb", "--lookaside", "0", "0"],
                           env)
    rec_line = next((l for l in rec_err.splitlines() if l.startswith("trace_rec:")), "")
    if not rec_line or "INVALID" in rec_line:
        sys.exit(f"bench: recording the trace failed:\n{rec_err[-1500:]}")
    # Pairs as micro counts them: every malloc and every realloc record.
    m = re.search(r"([0-9]+) malloc, [0-9]+ free, ([0-9]+) realloc", rec_line)
    if not m:
        sys.exit(f"bench: cannot read the trace's record counts from: {rec_line}")
    trace_pairs = int(m.group(1)) + int(m.group(2))
    mix_steps = "20000" if tiny else "2000000"
    print("bench: microbenchmarks", file=sys.stderr)

    def micro(c, extra, key):
        out, _, _, _ = run([f"{b}/micro"] + c.heap_args() + extra, c.env(args))
        if result(out, "failed") != 0:
            sys.exit(f"bench: micro {extra} under {c.label}: allocations failed")
        if isinstance(key, tuple):
            return tuple(result(out, k) for k in key)
        return result(out, key)

    mtrace = alternate(micro_cs, reps, lambda c, r: micro(c, ["--trace", trace], "ns_per_pair"))
    mmix = alternate(micro_cs, reps, lambda c, r: micro(c, ["--mix", mix_steps], "ns_per_pair"))
    # The same replay as a program that uses its blocks would make it (`--touch`: the first 8
    # bytes of a block written when it is handed out, read before it is given back), for the
    # fixed heaps: how much of a ratio comes from metadata kept inside the blocks, read cold by
    # the plain replay.
    touch_cs = [c for c in micro_cs if c.key in LAT_KEYS]
    mtouch = alternate(touch_cs, reps,
                       lambda c, r: micro(c, ["--trace", trace, "--touch"], "ns_per_pair"))

    # Per-call time: runs of their own, so that the ns/pair runs above are not timed call by call.
    lat_cs = [c for c in micro_cs if c.key in LAT_KEYS]
    lat_passes = 2 if tiny else LAT_PASSES
    lat_fields = ("mean_ns", "p50_ns", "p99_ns", "p999_ns", "max_ns", "max_of_min_ns",
                  "resolution_ns", "overhead_ns", "tsc_per_ns", "calls")

    def latency(c):
        out, _, _, _ = run([f"{b}/micro"] + c.heap_args()
                           + ["--trace", trace, "--latency", "--latency-passes", str(lat_passes)],
                           c.env(args))
        line = next((l for l in out.splitlines() if "workload=trace-latency" in l), "")
        if not line:
            sys.exit(f"bench: micro --latency under {c.label} printed no trace-latency line:\n"
                     f"{out[-1000:]}")
        d = {k: result(line, k) for k in lat_fields}
        m = re.search(r"\bclock=(\S+).*\bslowest_op=(\S+) slowest_size=([0-9]+)", line)
        if not m:
            sys.exit(f"bench: micro --latency under {c.label}: no clock or slowest call in:\n"
                     f"{line}")
        d["clock"], d["slowest"] = m.group(1), (m.group(2), int(m.group(3)))
        t = re.search(r"\btail=([0-9,]+)", line)
        d["tail"] = [int(x) for x in t.group(1).split(",")] if t else []
        if len(d["tail"]) != len(TAIL_KINDS) or sum(d["tail"]) < 1:
            sys.exit(f"bench: micro --latency under {c.label}: no tail= of {len(TAIL_KINDS)} "
                     f"counts in:\n{line}")
        # Orders that hold by construction: a broken measurement, not a slow allocator.
        q = [d[k] for k in ("p50_ns", "p99_ns", "p999_ns", "max_ns")]
        if d["calls"] <= 0 or q != sorted(q) or d["max_of_min_ns"] > d["max_ns"] \
                or d["resolution_ns"] <= 0 or d["tsc_per_ns"] <= 0:
            sys.exit(f"bench: micro --latency under {c.label}: inconsistent figures:\n{line}")
        return d

    print("bench: per-call time in the trace replay", file=sys.stderr)
    mlat = alternate(lat_cs, reps, lambda c, r: latency(c))
    lat_med = {c.key: {k: median([d[k] for d in mlat[c.key]]) for k in lat_fields}
               for c in lat_cs}
    mthr = {}
    for t in (1, 2):
        mthr[t] = alternate(cs, reps, lambda c, r: micro(
            c, ["--mix", mix_steps, "--threads", str(t)], ("mpairs_per_s", "mpairs_per_cpu_s")))

    # ---- SQLite threads -----------------------------------------------------------------------
    print("bench: SQLite threads", file=sys.stderr)
    rounds = "1" if tiny else "60"
    rows = "200" if tiny else "2000"

    def sqlthreads(c, t):
        out, _, _, _ = run([f"{b}/threads", "--threads", str(t), "--rounds", rounds, "--rows", rows]
                           + c.heap_args(), c.env(args))
        return (result(out, "rounds_per_s"), result(out, "rounds_per_cpu_s"))

    sthr = {}
    for t in (1, 2):
        sthr[t] = alternate(cs, reps, lambda c, r: sqlthreads(c, t))

    # ---- the counters alone --------------------------------------------------------------------
    # examples/counters_cost: the same loop with and without Counters::on_malloc + on_free,
    # alternated inside the program; ns per pair, per thread, at 1 and 2 threads.
    ccost = {}
    if args.counters_cost:
        print("bench: counters alone", file=sys.stderr)
        for t in (1, 2):
            out, _, _, _ = run([args.counters_cost, "--threads", str(t), "--pairs",
                                "200000" if tiny else "20000000", "--rounds", "3" if tiny else "9"],
                               dict(os.environ))
            ccost[t] = (result(out, "ns_per_pair"), result(out, "base_ns"), result(out, "with_ns"))

    # ---- instruction counts (callgrind) -------------------------------------------------------
    # The synthetic mix for every configuration, and speedtest1 for pairs whose time ratio is
    # within 1% of its counterpart.
    print("bench: callgrind", file=sys.stderr)
    # Instructions per pair of the mix: the difference between runs of N and 2N steps (each run
    # makes two passes), so that process start-up and library loading cancel out.
    cg_steps = 10000 if tiny else 100000
    ir_mix = {}
    cg_cs = [c for c in cs if c.key in ("mem1", "system")] if tiny else cs
    # sqlalloc's memsys3/memsys5 mark their heap for memcheck with valgrind client requests,
    # which run only under valgrind (any tool): they are counted from the preload library built
    # without the marking, and left out without one.
    if tiny:
        cg_cs += [c for c in cs if c.key == "memsys5"]
    if not args.preload_nomark:
        cg_cs = [c for c in cg_cs if c.key not in VALGRIND_MARKED]
    for c in cg_cs:
        irs = [callgrind_ir([f"{b}/micro"] + c.heap_args() + ["--mix", str(n)],
                            c.env(args, counting=True))[0]
               for n in (cg_steps, 2 * cg_steps)]
        ir_mix[c.key] = (irs[1] - irs[0]) / (2 * cg_steps)
    # Instructions per pair of the trace replay, for the rows of the targets: one pass, the
    # difference between runs of 3 and 2 passes.
    ir_trace = {}
    for c in cg_cs:
        if c.key not in ("mem1", "c-memsys5", "system", "memsys5", "memsys5-shards", "tlsf"):
            continue
        irs = [callgrind_ir([f"{b}/micro"] + c.heap_args() + ["--trace", trace, "--passes",
                                                              str(n)],
                            c.env(args, counting=True))[0]
               for n in (2, 3)]
        ir_trace[c.key] = (irs[1] - irs[0]) / trace_pairs
    ir_base = ir_mix.get("mem1")
    ir_st = {}
    cg_size = "1" if tiny else "3"
    for wk, _, extra in workloads:
        if "memdb" not in wk:
            continue
        for c in cg_cs:
            if not c.counterpart or c.counterpart not in [x.key for x in cg_cs]:
                continue
            rt = paired_ratio(st[wk], c.key, c.counterpart)
            # Always for the pairs of the speedtest1 targets on the workload that sends every
            # allocation to the allocator; else where the times are within 1%.
            target_pair = wk == "memdb-la0" and c.key in ("system", "memsys5")
            if (tiny and wk == "memdb-la0") or target_pair or abs(rt - 1) < 0.01:
                # Ir at 2 × size minus Ir at size: start-up and library loading cancel out.
                irs = []
                for k in (c.key, c.counterpart):
                    two = [callgrind_ir([f"{b}/speedtest1", "--size", str(n)] + byk[k].heap_args()
                                        + extra, byk[k].env(args, counting=True))[0]
                           for n in (int(cg_size), 2 * int(cg_size))]
                    irs.append(two[1] - two[0])
                ir_st[(wk, c.key)] = irs

    # ---- the smallest heap that runs speedtest1 (bench/smallest_heap.py) ---------------------
    sh_res, sh_left, sh_workloads = smallest_heap.measure(
        b, args.preload, smoke=tiny, log=lambda m: print(f"bench: {m}", file=sys.stderr))

    # ---- peak RSS with a 400 MB heap (bench/smallest_heap.py's measure_rss) -------------------
    print("bench: peak RSS with a large heap", file=sys.stderr)
    rss_preload = args.preload_rss or args.preload
    rss_res, rss_args = smallest_heap.measure_rss(
        b, rss_preload, smoke=tiny, reps=3,
        log=lambda m: print(f"bench: {m}", file=sys.stderr))

    # ---- the scopes layer and tracked connections (bench/live_costs.py) -----------------------
    lc = live_costs.measure(b, args.preload, 1 if tiny else 21, parts=("scopes", "tracking"),
                            size=size, mix_steps=200_000 if tiny else 5_000_000,
                            log=lambda m: print(f"bench: {m}", file=sys.stderr))

    elapsed = time.monotonic() - t_start
    load1 = os.getloadavg()
    if smoke:
        if len(lc["scopes"]) != 2 or not lc["tracking"]:
            sys.exit(f"bench-smoke: the scopes/tracking costs are incomplete: {lc}")
        n = sum(len(v) for w in st.values() for v in w.values())
        if args.preload_nomark:
            for k in ("mem1", "memsys5"):
                if k in byk and not (ir_mix.get(k, 0) > 0 and ir_trace.get(k, 0) > 0):
                    sys.exit(f"bench-smoke: no instruction count for {k}: mix {ir_mix.get(k)}, "
                             f"trace {ir_trace.get(k)}")
        if len(lat_cs) < 4 or any(len(mlat[c.key]) != 1 for c in lat_cs):
            sys.exit(f"bench-smoke: per-call times for {[c.key for c in lat_cs]} only")
        for c in lib_cs:
            if not (mtrace[c.key][0] > 0 and mmix[c.key][0] > 0):
                sys.exit(f"bench-smoke: {c.label}: no ns/pair: trace {mtrace[c.key]}, mix "
                         f"{mmix[c.key]}")
        print("bench-smoke: per-call time (trace replay, ns; p50/p99/p99.9/max, max of min over "
              f"{lat_passes} passes): " + "; ".join(
                  f"{c.key} {d['p50_ns']:.0f}/{d['p99_ns']:.0f}/{d['p999_ns']:.0f}/"
                  f"{d['max_ns']:.0f}, {d['max_of_min_ns']:.0f}"
                  for c in lat_cs for d in mlat[c.key]))
        print("bench-smoke: " + ("; ".join(f"{c.label}: trace {mtrace[c.key][0]:.1f}, mix "
                                           f"{mmix[c.key][0]:.1f} ns/pair" for c in lib_cs)
                                 or "no micro-only configuration (" + "; ".join(
                                     skipped.get(k, "") for k in ("rlsf",)) + ")"))
        if not all(v and v[0] > 0 for v in rss_res.values()):
            sys.exit(f"bench-smoke: peak RSS incomplete: {rss_res}")
        sh_rows = sum(len(v) for v in sh_res.values())
        if sh_rows < 2 * 4:
            sys.exit(f"bench-smoke: the smallest-heap bisection gave {sh_rows} figures: {sh_res}")
        print(f"bench-smoke: smallest heap: {sh_rows} figures "
              f"({', '.join(f'{wk} {k} {v / 1048576:.2f} MiB' for wk, r in sh_res.items() for k, v in r.items())})")
        print(f"bench-smoke: OK: {len(cs)} configurations ({len(skipped)} skipped), {n} speedtest1 "
              f"runs, micro, threads and callgrind all produced numbers, the scrape endpoint "
              f"answered {sum(sum(v) for v in ep_scrapes.values())} GET /metrics (HTTP 200) "
              f"during {len(ep_scrapes)} speedtest1 runs, --verify hash "
              f"{hashes.pop()} everywhere, memsys5 high-water marks equal ({peaks}); Ir/pair of "
              f"the trace {', '.join(f'{k} {v:.0f}' for k, v in ir_trace.items())}; "
              f"{elapsed:.1f} s")
        return

    # ---- the page -----------------------------------------------------------------------------
    L = []
    w = L.append
    mem1 = "mem1"

    def f2(x):
        return f"{x:.2f}"

    def f3(x):
        return f"{x:.3f}"

    uname = platform.uname()
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu_model = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "")
    except OSError:
        pass
    ncpu = os.cpu_count()
    w("# Benchmarks")
    w("")
    w("Generated by `make bench` (bench/run.py); do not edit by hand. Every figure comes from one "
      "run, all configurations side by side, on one SQLite library and one binary per program.")
    w("")
    w("## Machine and run")
    w("")
    w(f"- CPU: {cpu_model}, {ncpu} cores; kernel {uname.release}; {time.strftime('%Y-%m-%d %H:%M %Z')}")
    w(f"- Load average (1/5/15 min) at the start: {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f}; "
      f"at the end: {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}. "
      + ("Other jobs were running (load above 0.5 before the run started): wall-clock figures "
         "(the thread tables) are noisy; CPU-time figures less so." if max(load0[0], load1[0]) > 0.5
         else "The machine was otherwise quiet."))
    if "mem1" in byk:
        for phase, d in (("SQLite threads", sthr), ("micro threads", mthr)):
            par = median([y[0] / x[0] for x, y in zip(d[1]["mem1"], d[2]["mem1"])])
            w(f"- Parallelism available during the {phase} phase, as C mem1 saw it (2-thread / "
              f"1-thread wall-clock throughput): {par:.2f}. "
              + ("Below 1.8: the machine did not have two free cores then, so no configuration "
                 "can show the 1.8× scaling target in that table; see its CPU-efficiency columns."
                 if par < 1.8 else "Two cores were free."))
    w(f"- sqlalloc at `{args.rev}` (the working tree as built; `-dirty`: with uncommitted changes).")
    w(f"- {reps} rounds; within a round each C configuration runs right before the sqlalloc "
      "configurations compared with it, and every other round runs the order backwards; medians; "
      f"ratios are paired per round. Whole run: {elapsed / 60:.1f} minutes.")
    w("- SQLite 3.40.1 from Debian's source package, `configure --disable-tcl`, `make libsqlite3.la "
      "OPTS=-DSQLITE_ENABLE_MEMSYS5` (gcc -g -O2, threadsafe); `test/speedtest1.c` and the drivers "
      "(bench/micro.c, bench/threads.c) linked against that shared library (rpath).")
    w(f"- sqlalloc through `LD_PRELOAD={os.path.relpath(args.preload)}` with `SQLALLOC=spec`, the "
      "same way for every sqlalloc configuration. memsys5 heap: "
      f"{HEAP // 1048576} MiB, minimum {HEAP_MIN} bytes, for C and sqlalloc alike; memsys3: the same "
      "heap size.")
    for k, why in skipped.items():
        w(f"- `{k}`: {why}")
    w("")
    w("Configurations:")
    w("")
    w("| name | how | counterpart for ratios |")
    w("|---|---|---|")
    for c in micro_cs:
        how = {"c": "SQLite's default allocator (mem1)" + (f", `LD_PRELOAD={c.preload}`" if c.preload else ""),
               "memsys5": f"`--heap {HEAP} {HEAP_MIN}` (SQLITE_CONFIG_HEAP)",
               "sqlalloc": f"`SQLALLOC={c.spec}`",
               "lib": f"`micro --methods-lib {os.path.basename(c.lib or '')} --lib-heap {HEAP}` "
                      "(bench/rlsf_shim: `rlsf::Tlsf` over one heap, a spin lock; micro rows "
                      "only)"}[c.kind]
        w(f"| {c.label} | {how} | {byk[c.counterpart].label if c.counterpart else '—'} |")
    w("")

    w("## speedtest1 `--size 25`")
    w("")
    w("CPU time (user + sys) of the whole process, median in seconds, and the paired ratio to the "
      "counterpart (below 1: faster). `× mem1` is the ratio to C mem1 for every row.")
    w("")
    hdr = "| configuration |" + "".join(f" {wk}: s | ratio | × mem1 |" for wk, _, _ in workloads)
    w(hdr)
    w("|---|" + "---|---|---|" * len(workloads))
    for c in cs:
        row = f"| {c.label} |"
        for wk, _, _ in workloads:
            row += f" {f3(median(st[wk][c.key]))} |"
            row += f" {f3(paired_ratio(st[wk], c.key, c.counterpart)) if c.counterpart else '—'} |"
            row += f" {f3(paired_ratio(st[wk], c.key, mem1))} |"
        w(row)
    w("")
    for wk, desc, _ in workloads:
        w(f"- {wk}: {desc}")
    w("")
    w(f"`--verify` (`--memdb --lookaside 0 0`), once per configuration: hash {hashes.pop()} for all "
      f"{len(cs)} configurations (the run stops when they differ).")
    w("")
    if len(peaks) == 2:
        same = "the same" if peaks["c-memsys5"] == peaks["memsys5"] else "**different**"
        w(f"Heap usage, `--memdb --lookaside 0 0 --stats` (SQLite's high-water mark of memory used, "
          f"in power-of-two blocks): C memsys5 {peaks['c-memsys5']:,} bytes, sqlalloc memsys5 "
          f"{peaks['memsys5']:,} bytes: {same}.")
        w("")
    if ir_st:
        w(f"Instruction counts (`valgrind --tool=callgrind`), for ratios within 1% and for the "
          f"targets' pairs on memdb-la0: Ir of speedtest1 `--size {2 * int(cg_size)}` minus Ir of "
          f"`--size {cg_size}` (so that process start-up and library loading cancel out). "
          "Repeatable where the times are not, but blind to cache misses and to what a locked "
          "instruction costs:")
        w("")
        w("| workload | configuration | Ir | counterpart Ir | ratio |")
        w("|---|---|---|---|---|")
        for (wk, k), (a, bb) in ir_st.items():
            w(f"| {wk} | {byk[k].label} | {a:,} | {bb:,} | {a / bb:.4f} |")
        w("")

    w(f"## The scrape endpoint: speedtest1 `--size {ep_size}` scraped 10 times a second")
    w("")
    n_all = sum(sum(v) for v in ep_scrapes.values())
    kb = sum(ep_bytes.values()) / n_all / 1024 if n_all else float("nan")
    w("`sqlalloc system` on the same speedtest1 and preload library, without the endpoint and with "
      "`SQLALLOC_LISTEN=127.0.0.1:PORT` (a free port per run), while a thread of bench/run.py "
      "sends `GET /metrics` over a new connection every 100 ms for the whole run (until the "
      "endpoint first answers, a connection attempt every 5 ms); each answer must be HTTP 200 with "
      f"the whole exposition ({kb:.1f} KiB on average here), or the bench stops. {ep_reps} rounds, "
      "alternated (forwards, then backwards); medians; ratios paired per round.")
    w("")
    w("| workload | no endpoint: elapsed s | CPU s | scraped: elapsed s | CPU s | ratio elapsed | "
      "ratio CPU | scrapes answered (median per run) | unanswered |")
    w("|---|---|---|---|---|---|---|---|---|")
    for wk, _, _ in ep_workloads:
        w(f"| {wk} | {f3(median(ep_wall[wk]['ep-off']))} | {f3(median(ep_cpu[wk]['ep-off']))} | "
          f"{f3(median(ep_wall[wk]['ep-on']))} | {f3(median(ep_cpu[wk]['ep-on']))} | "
          f"{f3(paired_ratio(ep_wall[wk], 'ep-on', 'ep-off'))} | "
          f"{f3(paired_ratio(ep_cpu[wk], 'ep-on', 'ep-off'))} | {sum(ep_scrapes[wk])} "
          f"({median(ep_scrapes[wk]):g}) | {ep_unanswered[wk]} |")
    w("")
    w("- elapsed: the process's wall-clock time from start to exit; CPU: user + sys of the whole "
      "process (wait4's rusage), which includes the endpoint thread. The scraper runs in "
      "bench/run.py, another process, and is counted in neither. Unanswered: attempts after the "
      "first answer that got none (the program exiting under them; more than two in a run stop "
      "the bench).")
    w("- Which ratio the target is on, and why: the elapsed one. The target protects the "
      "program's speed, and elapsed time is what the program (and whoever waits for it) feels: "
      "speedtest1 is one thread, so anything the endpoint does to it (a lock it takes, caches it "
      "evicts, a core it occupies when the program needs one) shows there. The CPU ratio also "
      "counts the endpoint thread's own work, rendering the exposition 10 times a second, which "
      "runs beside the program rather than in its way: that is the cost to the machine, reported "
      "next to it but not held to the program's 1%. Elapsed time is the noisier clock on a "
      "shared machine (it counts waiting for a core too), hence the extra rounds.")
    w("")

    w("## Microbenchmark: calls through `sqlite3_mem_methods`")
    w("")
    w("bench/micro.c reads the table with `SQLITE_CONFIG_GETMALLOC` and calls its function pointers "
      "(memstatus off, so every allocator locks for itself as needed). ns per malloc+free pair "
      "(a realloc counts as one), thread CPU time, median; the second of two passes is timed.")
    w("")
    w(f"- trace: {rec_line.split(':', 1)[1].strip()}; recorded with `LD_PRELOAD=libtrace_rec.so "
      f"SQLALLOC=system` from `speedtest1 --size {size} --memdb --lookaside 0 0`.")
    w(f"- mix: {mix_steps} steps over 1000 live slots: 50% 8–64 B, 43% 257–512 B, 5% 4–8 KiB, "
      "2% 65–256 B; 2% of the steps grow a block with xRealloc.")
    w(f"- Ir/pair: instructions per step of the mix counted by callgrind: (Ir of `micro --mix "
      f"{2 * cg_steps}` − Ir of `micro --mix {cg_steps}`) / {2 * cg_steps} (each run makes two "
      "passes; start-up and library loading cancel out). It includes the driver's own loop and "
      "step generation, the same for every row: compare the rows, or read ΔIr, the difference to "
      "C mem1. Repeatable where ns are not.")
    w("")
    w("| configuration | trace ns/pair | ratio | trace Ir/pair | ratio | mix ns/pair | ratio | Δ ns vs mem1 (mix) | Ir/pair (mix) | ΔIr vs mem1 |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for c in micro_cs:
        rt = f3(paired_ratio(mtrace, c.key, c.counterpart)) if c.counterpart else "—"
        rm = f3(paired_ratio(mmix, c.key, c.counterpart)) if c.counterpart else "—"
        dn = median([x - y for x, y in zip(mmix[c.key], mmix[mem1])])
        if c.key in ir_mix and ir_base:
            irs = f"{ir_mix[c.key]:.1f} | {ir_mix[c.key] - ir_base:+.1f}"
        else:
            irs = "— † | — †" if c.key in VALGRIND_MARKED and not args.preload_nomark else "— | —"
        it = "— | —"
        if c.key in ir_trace:
            cp = c.counterpart if c.counterpart in ir_trace else None
            it = f"{ir_trace[c.key]:.1f} | " + (f"{ir_trace[c.key] / ir_trace[cp]:.3f}" if cp
                                                 else "—")
        w(f"| {c.label} | {f2(median(mtrace[c.key]))} | {rt} | {it} | {f2(median(mmix[c.key]))} | "
          f"{rm} | {dn:+.2f} | {irs} |")
    w("")

    w("- trace Ir/pair: instructions per pair of one replay of the trace, counted by callgrind "
      "(Ir of `micro --trace FILE --passes 3` − Ir of `--passes 2`, over the pairs of one pass), "
      "driver loop included; for the rows of the targets. Repeatable where ns are not, but blind "
      "to cache misses and to what a locked instruction costs.")
    w("")
    if args.preload_nomark:
        w("sqlalloc's memsys3 and memsys5 tell memcheck about every block and every free-list link "
          "with valgrind client requests, which run under any valgrind tool: their instruction "
          "counts come from the same preload library built with `--features no-valgrind-marking` "
          "(the bench builds it), which leaves the requests out.")
    else:
        w("† Not counted: sqlalloc's memsys3 and memsys5 tell memcheck about every block and every "
          "free-list link with valgrind client requests, which execute only when the process runs "
          "under valgrind (any tool, callgrind included), so their instruction counts would not be "
          "those of a normal run (run.py counts them with `--preload-nomark`). Their ns columns "
          "are normal runs.")
    w("")
    if lib_cs:
        w("- rlsf: the Rust crate rlsf's `Tlsf<u32, u64, 28, 64>` (64 second-level lists) over one "
          f"{HEAP // 1048576} MiB heap behind a test-and-test-and-set spin lock, as a "
          "`sqlite3_mem_methods` table from bench/rlsf_shim that `micro --methods-lib` installs "
          "with `SQLITE_CONFIG_MALLOC`; blocks of 8-byte alignment, rlsf's 16-byte header, sizes "
          "rounded to 32 bytes. No instruction counts (callgrind runs the configurations "
          "SQLite's own programs can run).")
        w("")
    for k in ("rlsf",):
        if k in skipped:
            w(f"- {k}: {skipped[k]}")
            w("")

    if touch_cs:
        w("The trace replay touches no block, so an allocator that keeps its metadata inside the "
          "blocks (tlsf's boundary tags, every free-list link) may read it from lines a program "
          "that uses its memory would have touched just before. `micro --trace FILE --touch` "
          "replays as such a program would: it writes the first 8 bytes of each block it gets and "
          "reads them before it gives the block back (the driver's own cost, the same for every "
          "row, is in the figures). Where a ratio here equals the plain replay's, it does not come "
          "from cold metadata.")
        w("")
        w("| configuration | trace ns/pair, blocks touched | ratio |")
        w("|---|---|---|")
        for c in touch_cs:
            cp = c.counterpart if c.counterpart in mtouch else None
            w(f"| {c.label} | {f2(median(mtouch[c.key]))} | "
              f"{f3(paired_ratio(mtouch, c.key, cp)) if cp else '—'} |")
        w("")

    # ---- per-call time ---------------------------------------------------------------------
    w("## Per-call time in the trace replay")
    w("")
    any_lat = next((d for c in lat_cs for d in mlat[c.key]), None)
    if any_lat:
        clock = ("the TSC (rdtsc between two lfence)" if any_lat["clock"] == "tsc"
                 else "CLOCK_MONOTONIC")
        w(f"`micro --trace FILE --latency --latency-passes {lat_passes}`: after the two passes of "
          "the ns/pair figures (made here too, as the warm-up; their ns/pair is not used), every "
          f"`xMalloc`, `xFree` and `xRealloc` of {lat_passes} more passes is timed alone "
          f"({any_lat['calls']:,.0f} calls "
          "a pass, the final frees of the blocks still live included), in runs of their own "
          f"alternated like the rest; medians over {reps} rounds. The clock is "
          f"{clock}, {any_lat['tsc_per_ns']:.3f} ticks per ns against CLOCK_MONOTONIC; an empty timing "
          f"costs {any_lat['overhead_ns']:.1f} ns on average and is taken off every call. It "
          f"advances {any_lat['resolution_ns']:.0f} ns at a time here, so the percentiles come in "
          f"steps of {any_lat['resolution_ns']:.0f} ns.")
        w("")
        w(f"| configuration | p50 ns | p99 ns | p99.9 ns | max ns (one pass) | "
          f"slowest call, each call's min over {lat_passes} passes, ns | that call |")
        w("|---|---:|---:|---:|---:|---:|---|")
        for c in lat_cs:
            d = lat_med[c.key]
            slow = statistics.mode([x["slowest"] for x in mlat[c.key]])
            w(f"| {c.label} | {d['p50_ns']:.0f} | {d['p99_ns']:.0f} | "
              f"{d['p999_ns']:.0f} | {d['max_ns']:,.0f} | {d['max_of_min_ns']:,.0f} | "
              f"{slow[0]} {slow[1]:,} B |")
        w("")
        w("- max (one pass): the slowest call of the first timed pass. On a shared 2-core machine "
          "it is mostly the machine, not the allocator: a timer interrupt or a preemption that "
          "lands on some call (microseconds to milliseconds, a different call every run); hence "
          "the median over rounds, and the next column.")
        w(f"- each call's min over {lat_passes} passes: the passes replay the same calls on the "
          "same heap state (the heap is empty between passes), so call *i* does the same work in "
          "each, while an interruption lands on a different call each pass. The largest of these "
          "minimums is the allocator's own slowest call; the last column names it (the most "
          "frequent over rounds: the operation and the size asked, for a free the block's).")
        w("")
        # Which calls make the tail: the calls of the first timed pass that took the p99.9 time
        # or longer, by operation and size, summed over rounds.
        tails = {c.key: [sum(x) for x in zip(*(d["tail"] for d in mlat[c.key]))] for c in lat_cs}
        shares = {k: [x / max(1, sum(v)) for x in v] for k, v in tails.items()}
        rows = [i for i in range(len(TAIL_KINDS)) if any(sh[i] >= 0.03 for sh in shares.values())]
        w("What the slowest 0.1% are: the calls of the first timed pass that took the p99.9 "
          "time or longer, by operation and size asked (for a free, the block's), as shares of "
          f"them, over the {reps} rounds together; kinds under 3% everywhere are left out. A "
          "page-cache line for a 4 KiB page (4360 bytes on this SQLite) is in 4–8 KiB.")
        w("")
        w("| calls | " + " | ".join(c.label for c in lat_cs) + " |")
        w("|---|" + "---:|" * len(lat_cs))
        for i in rows:
            w(f"| {TAIL_KINDS[i]} | "
              + " | ".join(f"{100 * shares[c.key][i]:.0f}%" for c in lat_cs) + " |")
        w("")
    else:
        w("No configuration was measured.")
        w("")
    w("## Two threads")
    w("")
    w("Aggregate throughput at 1 and 2 threads (wall clock), median, and the scaling 2T / 1T "
      "(paired per round; 2.0 is perfect on 2 cores).")
    w("")
    w("- SQLite: bench/threads.c, `SQLITE_CONFIG_MULTITHREAD`, memstatus off, lookaside off, one "
      f"in-memory connection per thread, {rounds} rounds of create/insert {rows} rows/query/drop "
      "per thread; rounds per second over all threads.")
    w("- micro: the mix above in each thread (own slots), million pairs per second over all threads.")
    w("")
    w("- CPU eff.: throughput per CPU-second at 2 threads / the same at 1 thread (paired). It "
      "does not need two free cores: 1.00 means the threads did not slow each other down (no "
      "shared cache line, no spinning); a lock that puts threads to sleep shows in the wall-clock "
      "columns only. With two idle cores, 2T/1T (wall) ≈ 2 × CPU eff. for an allocator without "
      "a lock.")
    w("")
    w("| configuration | SQLite 1T rounds/s | 2T | 2T/1T (wall) | CPU eff. | micro 1T Mpairs/s | 2T | 2T/1T (wall) | CPU eff. |")
    w("|---|---|---|---|---|---|---|---|---|")
    scale_sql, scale_micro, eff_sql, eff_micro = {}, {}, {}, {}

    def scal(d, k, i):
        return median([y[i] / x[i] for x, y in zip(d[1][k], d[2][k])])

    for c in cs:
        k = c.key
        scale_sql[k], eff_sql[k] = scal(sthr, k, 0), scal(sthr, k, 1)
        scale_micro[k], eff_micro[k] = scal(mthr, k, 0), scal(mthr, k, 1)
        w(f"| {c.label} | {f2(median([x[0] for x in sthr[1][k]]))} | "
          f"{f2(median([x[0] for x in sthr[2][k]]))} | {f2(scale_sql[k])} | {f2(eff_sql[k])} | "
          f"{f2(median([x[0] for x in mthr[1][k]]))} | {f2(median([x[0] for x in mthr[2][k]]))} | "
          f"{f2(scale_micro[k])} | {f2(eff_micro[k])} |")
    w("")

    # ---- smallest heap ------------------------------------------------------------------------
    w("## Smallest heap")
    w("")
    w("The smallest heap (or cap) with which speedtest1 `--size "
      f"{'1' if tiny else '25'}` runs to its end, found by bisection to "
      f"{'10' if tiny else '0.05'}% of its upper end, which is the figure "
      "(bench/smallest_heap.py): what a fixed-heap user must reserve. "
      "\"Really needed\" is the smallest `system+limit:max=N`, the peak of what SQLite counts "
      "(`xSize` of its live blocks).")
    w("")
    for line in smallest_heap.table(sh_res, sh_left, sh_workloads):
        w(line)
    w("")
    w("## Resident memory with a large heap")
    w("")
    w(f"Peak RSS (the child's `ru_maxrss`) of speedtest1 `{' '.join(rss_args)}` with a "
      f"{smallest_heap.RSS_HEAP:,}-byte heap, median of {len(rss_res['mem1'])} alternated runs "
      "(bench/smallest_heap.py): a fixed heap should cost only the pages SQLite uses of it. The "
      "two rows without a heap give what the preload library's own pages add to any process "
      "(`system` − C mem1); the last column takes that off. The library here is "
      f"`{os.path.relpath(rss_preload)}`"
      + (", the default build (`make`, `make install`): a library built with the `jemalloc` "
         "feature runs jemalloc's initialization at load (jemalloc's own library constructor), "
         "about 0.9 MB more resident in every process whatever the backend, and the `mimalloc` "
         "feature about 0.35 MB (bench/notes.md)." if args.preload_rss else "."))
    w("")
    for line in smallest_heap.rss_table(rss_res):
        w(line)
    w("")

    # ---- scopes and tracking -------------------------------------------------------------------
    w("## The `scopes` layer and tracked connections")
    w("")
    w(f"bench/live_costs.py, {1 if tiny else 21} alternated rounds (paired medians). `micro --mix`: ns per "
      "malloc/free pair with and without `+scopes`; speedtest1 `--memdb --lookaside 0 0`: CPU "
      "with `+scopes` / without. Tracking: speedtest1 `--memdb` with 100 `:memory:` connections "
      "opened by a preloaded library (bench/open100.c), tracked against untracked right after "
      "each open (the same opens in both), and untracked against untracked as the noise floor.")
    w("")
    w("| backend | mix ns/pair | with `+scopes` | paired difference | speedtest1 CPU ratio |")
    w("|---|---:|---:|---:|---:|")
    for spec, (a, c, d, r) in lc["scopes"].items():
        w(f"| `{spec}` | {a:.1f} | {c:.1f} | {d:+.1f} ns | {f3(r)} |")
    w("")
    w("| speedtest1 | tracked − untracked (CPU) | ratio | untracked − untracked | median A/A spread |")
    w("|---|---:|---:|---:|---:|")
    for ts, (d, r, aa, spread) in lc["tracking"].items():
        w(f"| `--size {ts} --memdb` | {d:+.1f} ms | {f3(r)} | {aa:+.1f} ms | {spread:.1f} ms |")
    w("")

    # ---- targets ------------------------------------------------------------------------------
    w("## Targets of the issue")
    w("")
    w("| target | figure | met |")
    w("|---|---|---|")

    def tgt(name, fig, ok):
        w(f"| {name} | {fig} | {'yes' if ok else '**no**'} |")

    if "system" in byk:
        for wk, _, _ in workloads:
            r = paired_ratio(st[wk], "system", mem1)
            tgt(f"system ≤ 1.02 × C mem1, speedtest1 {wk}", f3(r), r <= 1.02)
        for name, d in (("trace", mtrace), ("mix", mmix)):
            dn = median([x - y for x, y in zip(d["system"], d[mem1])])
            tgt(f"system ≤ glibc (C mem1) + 2 ns/pair, {name}", f"{dn:+.2f} ns", dn <= 2)
    if "memsys5" in byk and "c-memsys5" in byk:
        for wk, _, _ in workloads:
            r = paired_ratio(st[wk], "memsys5", "c-memsys5")
            tgt(f"memsys5 ≤ 1.00 × C memsys5, speedtest1 {wk}", f3(r), r <= 1.0)
        r = paired_ratio(mtrace, "memsys5", "c-memsys5")
        tgt("memsys5 ≤ 0.9 × C memsys5 ns/pair, trace replay", f3(r), r <= 0.9)
        if "memsys5" in ir_trace and "c-memsys5" in ir_trace:
            w(f"| (instructions) memsys5 / C memsys5, trace replay, Ir per pair | "
              f"{ir_trace['memsys5']:.1f} / {ir_trace['c-memsys5']:.1f} = "
              f"{ir_trace['memsys5'] / ir_trace['c-memsys5']:.3f} | — |")
        if len(peaks) == 2:
            tgt("memsys5: same peak heap usage as C memsys5 (speedtest1 --stats)",
                f"{peaks['memsys5']:,} vs {peaks['c-memsys5']:,} bytes",
                peaks["memsys5"] == peaks["c-memsys5"])
    if "tlsf" in byk and "c-memsys5" in byk:
        for wk, _, _ in workloads:
            r = paired_ratio(st[wk], "tlsf", "c-memsys5")
            tgt(f"tlsf ≤ 1.00 × C memsys5, speedtest1 {wk}", f3(r), r <= 1.0)
        r = paired_ratio(mtrace, "tlsf", "c-memsys5")
        tgt("tlsf ≤ 0.8 × C memsys5 ns/pair, trace replay", f3(r), r <= 0.8)
        if "tlsf" in mtouch and "c-memsys5" in mtouch:
            w(f"| (blocks touched, `--touch`) tlsf / C memsys5, trace replay ns/pair | "
              f"{f3(paired_ratio(mtouch, 'tlsf', 'c-memsys5'))} | — |")
        if "tlsf" in ir_trace and "c-memsys5" in ir_trace:
            w(f"| (instructions) tlsf / C memsys5, trace replay, Ir per pair | "
              f"{ir_trace['tlsf']:.1f} / {ir_trace['c-memsys5']:.1f} = "
              f"{ir_trace['tlsf'] / ir_trace['c-memsys5']:.3f} | — |")
        if "tlsf" in mlat and "c-memsys5" in mlat:
            lt, lc5 = lat_med["tlsf"], lat_med["c-memsys5"]
            also = (f"; sqlalloc memsys5 {lat_med['memsys5']['p999_ns']:.0f}"
                    if "memsys5" in lat_med else "")
            tgt("tlsf p99.9 per call ≤ C memsys5's, trace replay (median over rounds)",
                f"{lt['p999_ns']:.0f} vs {lc5['p999_ns']:.0f} ns{also}",
                lt["p999_ns"] <= lc5["p999_ns"])
            also = (f"; sqlalloc memsys5 {lat_med['memsys5']['max_ns']:,.0f}"
                    if "memsys5" in lat_med else "")
            tgt("tlsf max per call ≤ C memsys5's, trace replay (median over rounds of one pass's "
                "max)", f"{lt['max_ns']:,.0f} vs {lc5['max_ns']:,.0f} ns{also}",
                lt["max_ns"] <= lc5["max_ns"])
            w(f"| (reference) slowest call with interruptions filtered out (each call's min over "
              f"{lat_passes} passes), tlsf vs C memsys5 | {lt['max_of_min_ns']:,.0f} vs "
              f"{lc5['max_of_min_ns']:,.0f} ns | — |")
    for spec, (a, c, d, r) in lc["scopes"].items():
        tgt(f"scopes ≤ +5 ns/pair, micro --mix, {spec}", f"{d:+.1f} ns", d <= 5)
        tgt(f"scopes ≤ 1.03 × without, speedtest1 memdb-la0 CPU, {spec}", f3(r), r <= 1.03)
    for ts, (d, r, aa, spread) in lc["tracking"].items():
        tgt(f"100 tracked connections: nothing measurable, speedtest1 --size {ts} --memdb "
            "(|tracked − untracked| within the median A/A spread)",
            f"{d:+.1f} ms (A/A spread {spread:.1f} ms)", abs(d) <= spread)
    rss_c5 = median(rss_res["c-memsys5"])
    rss_lib = median(rss_res["system"]) - median(rss_res["mem1"])
    for k in ("memsys5", "tlsf"):
        m = median(rss_res[k])
        tgt(f"{k}: peak RSS with a {smallest_heap.RSS_HEAP:,}-byte heap ≤ 1.01 × C memsys5's "
            "(whole process; in parentheses: less the preload library's own pages)",
            f"{m / rss_c5:.3f} ({(m - rss_lib) / rss_c5:.3f})", m <= 1.01 * rss_c5)
    for wk, label, _ in sh_workloads:
        need, tl = sh_res[wk].get("needed"), sh_res[wk].get("tlsf")
        if need and tl:
            tgt(f"tlsf smallest heap ≤ 1.05 × really needed, {label}", f3(tl / need),
                tl <= 1.05 * need)
    for wk, _, _ in ep_workloads:
        rw = paired_ratio(ep_wall[wk], "ep-on", "ep-off")
        rc = paired_ratio(ep_cpu[wk], "ep-on", "ep-off")
        tgt(f"endpoint scraped 10×/s ≤ 1.01 × no endpoint, speedtest1 {wk}: elapsed (CPU)",
            f"{f3(rw)} ({f3(rc)}); {sum(ep_scrapes[wk])} scrapes", rw <= 1.01)
    if 1 in ccost:
        tgt("counters ≤ 3 ns/pair on one thread (measured alone: examples/counters_cost, a loop "
            "of libc malloc/free pairs over 1024 live blocks with Counters::on_malloc + on_free, "
            "minus the same loop without them)",
            f"{ccost[1][0]:.2f} ns (2 threads: {ccost[2][0]:.2f} ns per pair per thread)",
            ccost[1][0] <= 3)
    if "system" in byk:
        dn = median([x - y for x, y in zip(mmix["system"], mmix[mem1])])
        w(f"| (upper bound of the counters' cost) system − C mem1, mix: counters + Rust dispatch + "
          f"two xSize calls | {dn:+.2f} ns | — |")
        for k in ("system", "jemalloc", "mimalloc"):
            if k in byk:
                tgt(f"2-thread aggregate ≥ 1.8 × 1-thread, {byk[k].label}, SQLite: wall (CPU eff.)",
                    f"{scale_sql[k]:.2f} ({eff_sql[k]:.2f})", scale_sql[k] >= 1.8)
                tgt(f"2-thread aggregate ≥ 1.8 × 1-thread, {byk[k].label}, micro: wall (CPU eff.)",
                    f"{scale_micro[k]:.2f} ({eff_micro[k]:.2f})", scale_micro[k] >= 1.8)
        if "tlsf-shards" in byk:
            for name, sc, ef in (("SQLite", scale_sql, eff_sql), ("micro", scale_micro, eff_micro)):
                tgt(f"tlsf shards=2: 2-thread aggregate ≥ 1.8 × 1-thread, {name}: wall (CPU eff.)",
                    f"{sc['tlsf-shards']:.2f} ({ef['tlsf-shards']:.2f})", sc["tlsf-shards"] >= 1.8)
        if "memsys5-shards" in byk:
            for name, sc, ef in (("SQLite", scale_sql, eff_sql), ("micro", scale_micro, eff_micro)):
                tgt(f"memsys5 shards=2: 2-thread aggregate ≥ 1.6 × 1-thread, {name}: wall (CPU eff.)",
                    f"{sc['memsys5-shards']:.2f} ({ef['memsys5-shards']:.2f})",
                    sc["memsys5-shards"] >= 1.6)
            if "c-memsys5" in byk:
                w(f"| (reference) C memsys5, 2T/1T micro / SQLite, wall (CPU eff.) | "
                  f"{scale_micro['c-memsys5']:.2f} / {scale_sql['c-memsys5']:.2f} "
                  f"({eff_micro['c-memsys5']:.2f} / {eff_sql['c-memsys5']:.2f}) | — |")
        if "mem1" in byk:
            w(f"| (reference) C mem1, 2T/1T micro / SQLite, wall (CPU eff.) | "
              f"{scale_micro['mem1']:.2f} / {scale_sql['mem1']:.2f} ({eff_micro['mem1']:.2f} / "
              f"{eff_sql['mem1']:.2f}) | — |")
    w("")

    w("## Chart")
    w("")
    w(f"![speedtest1 CPU time relative to C mem1, and 2-thread scaling]({os.path.relpath(args.chart, os.path.dirname(args.out))})")
    w("")

    w("## Commands")
    w("")
    w("```sh")
    w("make bench          # everything: builds, this page and the chart (~10 min)")
    w("make bench-smoke    # seconds: every configuration runs once on tiny inputs")
    w("# by hand, after `make bench` built build/bench:")
    w(f"build/bench/speedtest1 --size 25 --memdb --lookaside 0 0                   # C mem1")
    w(f"build/bench/speedtest1 --size 25 --memdb --lookaside 0 0 --heap {HEAP} {HEAP_MIN}   # C memsys5")
    w(f"LD_PRELOAD=$PRELOAD SQLALLOC=memsys5:heap={HEAP // 1048576}M,min={HEAP_MIN} build/bench/speedtest1 --size 25 --memdb --lookaside 0 0")
    w(f"LD_PRELOAD={JEMALLOC_SO} build/bench/speedtest1 --size 25 --nosync --lookaside 0 0 /dev/shm/t.db")
    w("LD_PRELOAD=build/bench/libtrace_rec.so SQLALLOC_TRACE=t.trace build/bench/speedtest1 --size 25 --memdb --lookaside 0 0")
    w("build/bench/micro --trace t.trace; build/bench/micro --mix 2000000 --threads 2")
    w(f"build/bench/micro --heap {HEAP} {HEAP_MIN} --trace t.trace --latency --latency-passes "
      f"{LAT_PASSES}   # per-call time, C memsys5")
    w(f"build/bench/micro --methods-lib build/bench/librlsf_shim.so --lib-heap {HEAP} --trace "
      "t.trace   # the Rust crate rlsf (bench/rlsf_shim)")
    w("LD_PRELOAD=$PRELOAD SQLALLOC=system SQLALLOC_LISTEN=127.0.0.1:9777 build/bench/speedtest1 --size 25 --memdb & sleep 0.2; curl -s http://127.0.0.1:9777/metrics | head")
    w("cargo build --release --example counters_cost && target/release/examples/counters_cost --threads 1   # the counters alone")
    w("build/bench/threads --threads 2 --rounds 60 --rows 2000")
    w("valgrind --tool=callgrind --callgrind-out-file=/dev/null build/bench/micro --mix 200000")
    w("```")
    w("")
    w("`$PRELOAD` is libsqlalloc_preload.so built with `--features jemalloc,mimalloc` "
      "(`make bench` builds it into `$(BENCH_TARGET)`).")
    w("")
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")
    if os.path.exists(notes):
        with open(notes) as fh:
            L.append(fh.read().rstrip("\n"))
        w("")
    with open(args.out, "w") as fh:
        fh.write("\n".join(L))
    chart(args.chart, cs, st, workloads, scale_sql, scale_micro, eff_sql, eff_micro)
    print(f"bench: wrote {args.out} and {args.chart} in {elapsed / 60:.1f} min", file=sys.stderr)


def chart(path, cs, st, workloads, scale_sql, scale_micro, eff_sql, eff_micro):
    """SVG: speedtest1 CPU time / C mem1 per workload, and 2T/1T scaling, per configuration."""
    colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"]
    n = len(cs)
    row_h, label_w, plot_w = 22, 210, 330
    top = 60
    h = top + n * row_h + 60
    width = label_w + plot_w * 2 + 80
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
         f'font-family="sans-serif" font-size="11">',
         f'<rect width="{width}" height="{h}" fill="white"/>']

    def panel(x0, title, maxv, ref, series, legend):
        s.append(f'<text x="{x0}" y="18" font-size="13" font-weight="bold">{title}</text>')
        for i, (name, col) in enumerate(legend):
            s.append(f'<rect x="{x0 + i * 80}" y="28" width="10" height="10" fill="{col}"/>'
                     f'<text x="{x0 + i * 80 + 13}" y="37">{name}</text>')
        sc = (plot_w - 20) / maxv
        for t in [maxv * k / 4 for k in range(5)]:
            x = x0 + t * sc
            s.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + n * row_h}" stroke="#ddd"/>'
                     f'<text x="{x:.1f}" y="{top + n * row_h + 14}" text-anchor="middle">{t:.2f}</text>')
        xr = x0 + ref * sc
        s.append(f'<line x1="{xr:.1f}" y1="{top - 4}" x2="{xr:.1f}" y2="{top + n * row_h}" stroke="black" stroke-dasharray="3,2"/>')
        for i, c in enumerate(cs):
            vals = series(c)
            bh = (row_h - 4) / len(vals)
            for j, v in enumerate(vals):
                if v != v:
                    continue
                y = top + i * row_h + j * bh
                s.append(f'<rect x="{x0}" y="{y:.1f}" width="{max(v, 0) * sc:.1f}" height="{bh - 0.5:.1f}" '
                         f'fill="{legend[j][1]}"><title>{c.label}: {v:.3f}</title></rect>')

    for i, c in enumerate(cs):
        s.append(f'<text x="{label_w - 6}" y="{top + i * row_h + row_h / 2 + 4}" text-anchor="end">{c.label}</text>')
    ratios = {c.key: [paired_ratio(st[wk], c.key, "mem1") for wk, _, _ in workloads] for c in cs}
    mx = max(v for vs in ratios.values() for v in vs)
    panel(label_w, "speedtest1 --size 25: CPU time / C mem1", max(1.25, mx * 1.05), 1.0,
          lambda c: ratios[c.key], [(wk, colors[j]) for j, (wk, _, _) in enumerate(workloads)])
    mx2 = max(2.0, max(list(scale_sql.values()) + list(scale_micro.values())) * 1.05)
    panel(label_w + plot_w + 60, "2 threads / 1 thread: wall, 2 × CPU eff.", mx2, 1.8,
          lambda c: [scale_sql[c.key], scale_micro[c.key], 2 * eff_sql[c.key], 2 * eff_micro[c.key]],
          [("SQLite", colors[0]), ("micro", colors[1]), ("SQL 2×eff", colors[2]),
           ("micro 2×eff", colors[3])])
    s.append(f'<text x="{label_w}" y="{h - 12}" fill="#555">Dashed lines: 1.0 (C mem1) and 1.8 '
             '(the scaling target). Generated by bench/run.py.</text>')
    s.append("</svg>")
    with open(path, "w") as fh:
        fh.write("\n".join(s) + "\n")


if __name__ == "__main__":
    main()

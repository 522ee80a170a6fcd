#!/usr/bin/env python3
"""The live-telemetry cost figures of issues 13 and 14, alternated in one run (`make bench-live`).

    bench/live_costs.py --build DIR --preload SO [--rounds N] [--only endpoint,scopes,tracking]

DIR is what bench/build.sh built (speedtest1, micro); SO the preload library. Prints:
- endpoint: speedtest1 --size 25 (memdb; file on /dev/shm with --nosync) under SQLALLOC=system,
  scraped 10 times a second over 127.0.0.1 against no endpoint: paired medians of the elapsed and
  CPU (user+sys, wait4) ratios, and the scrapes answered;
- scopes: micro --mix 5000000 ns/pair and speedtest1 --memdb --lookaside 0 0 CPU, with and
  without +scopes, for system and memsys5:heap=256M;
- tracking: speedtest1 --memdb with 100 connections opened by a second preloaded library
  (bench/open100.c), tracked against untracked right after each open, at --size 1 and 25: what
  tracking costs a program, without the cost of the opens themselves.
Configurations alternate (forwards, then backwards) so that a noisy machine hits both alike; the
load average is printed with each line. Every loop is bounded; only 127.0.0.1 is contacted.
"""
import argparse, os, socket, statistics, subprocess, tempfile, threading, time

def run(cmd, env):
    t0 = time.time()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    out, err = p.stdout.read().decode(), p.stderr.read().decode()
    if status != 0 or err:
        raise SystemExit(f"live_costs: {' '.join(cmd)} failed ({status}): {err[-500:]}")
    return time.time() - t0, ru.ru_utime + ru.ru_stime, out

def env_for(preload, spec, extra=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("SQLALLOC") and k != "LD_PRELOAD"}
    e["LD_PRELOAD"] = preload + (" " + extra if extra else "")
    e["SQLALLOC"] = spec
    return e

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

def scraped(cmd, preload):
    port = free_port()
    env = env_for(preload, "system")
    env["SQLALLOC_LISTEN"] = f"127.0.0.1:{port}"
    stop, answered = threading.Event(), [0]
    def scrape():
        deadline = time.time() + 120
        while not stop.is_set() and time.time() < deadline:
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=2)
                c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                data = b""
                for _ in range(1000):
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                c.close()
                answered[0] += data.startswith(b"HTTP/1.1 200")
                stop.wait(0.1)
            except OSError:
                stop.wait(0.005)
    t = threading.Thread(target=scrape)
    t.start()
    el, cpu, _ = run(cmd, env)
    stop.set()
    t.join()
    return el, cpu, answered[0]

def alternate(rounds, a, b):
    """Run a() and b() `rounds` times each, alternating their order; two lists of results."""
    ra, rb = [], []
    for i in range(rounds):
        for first in ((True, False) if i % 2 == 0 else (False, True)):
            (ra if first else rb).append(a() if first else b())
    return ra, rb

def load():
    return f"load {os.getloadavg()[0]:.2f}"

def measure(b, pre, n, parts=("endpoint", "scopes", "tracking"), size="25", mix_steps=5_000_000,
            log=print):
    """Run the parts named in `parts`, `n` alternated rounds each; speedtest1 at `size`, the mix
    with `mix_steps` pairs. Returns {"endpoint": {workload: (elapsed ratio, CPU ratio, scrapes)},
    "scopes": {spec: (ns/pair, ns/pair with +scopes, paired ns difference, speedtest1 CPU
    ratio)}, "tracking": {size: (ms, ratio, A/A ms, A/A median spread ms)}}, logging a line each."""
    res = {"endpoint": {}, "scopes": {}, "tracking": {}}
    shm = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    for wk, extra in (("memdb", ["--memdb"]), ("file", ["--nosync", f"{shm}/t.db"])) * ("endpoint" in parts):
        cmd = [f"{b}/speedtest1", "--size", size] + extra
        def fresh(f):
            if os.path.exists(f"{shm}/t.db"):
                os.remove(f"{shm}/t.db")
            return f()
        plain, ep = alternate(n, lambda: fresh(lambda: run(cmd, env_for(pre, "system"))[:2]),
                              lambda: fresh(lambda: scraped(cmd, pre)))
        scrapes = sum(x[2] for x in ep)
        if scrapes == 0:
            raise SystemExit("live_costs: the endpoint never answered")
        re_ = statistics.median(y[0] / x[0] for x, y in zip(plain, ep))
        rc = statistics.median(y[1] / x[1] for x, y in zip(plain, ep))
        res["endpoint"][wk] = (re_, rc, scrapes)
        log(f"endpoint speedtest1 {wk}: elapsed {re_:.3f}, CPU {rc:.3f}, {scrapes} scrapes "
            f"answered, {n} rounds, {load()}")
    for spec in ("system", "memsys5:heap=256M") * ("scopes" in parts):
        mix = [f"{b}/micro", "--mix", str(mix_steps)]
        ns = lambda s: float(run(mix, env_for(pre, s))[2].split("ns_per_pair=")[1].split()[0])
        a, c = alternate(n, lambda: ns(spec), lambda: ns(spec + "+scopes"))
        d = statistics.median(y - x for x, y in zip(a, c))
        log(f"scopes micro --mix {spec}: {statistics.median(a):.1f} -> {statistics.median(c):.1f} "
            f"ns/pair, paired median {d:+.1f} ns, {n} rounds, {load()}")
        st = [f"{b}/speedtest1", "--size", size, "--memdb", "--lookaside", "0", "0"]
        a2, c2 = alternate(n, lambda: run(st, env_for(pre, spec))[1],
                           lambda: run(st, env_for(pre, spec + "+scopes"))[1])
        r = statistics.median(y / x for x, y in zip(a2, c2))
        res["scopes"][spec] = (statistics.median(a), statistics.median(c), d, r)
        log(f"scopes speedtest1 memdb-la0 {spec}: CPU {r:.3f}, {n} rounds, {load()}")
    so = os.path.join(shm, "libopen100.so")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "open100.c")
    if "tracking" in parts:
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", so, src, "-lsqlite3"], check=True)
    for tsize in sorted({"1", size}, key=int) * ("tracking" in parts):
        st = [f"{b}/speedtest1", "--size", tsize, "--memdb"]
        untracked = env_for(pre, "system", so)
        untracked["OPEN100_UNTRACK"] = "1"
        # Three arms in turn: untracked, tracked, untracked again. The two untracked arms against
        # each other give the noise floor the tracked one is compared with.
        u1, tr, u2 = [], [], []
        for i in range(n):
            arms = ((u1, untracked), (tr, env_for(pre, "system", so)), (u2, untracked))
            for out, env in (arms if i % 2 == 0 else arms[::-1]):
                out.append(run(st, env)[1])
        d = statistics.median(y - x for x, y in zip(u1, tr)) * 1000
        ratio = statistics.median(y / x for x, y in zip(u1, tr))
        aa = statistics.median(y - x for x, y in zip(u1, u2)) * 1000
        spread = statistics.median(sorted(abs(y - x) * 1000 for x, y in zip(u1, u2)))
        res["tracking"][tsize] = (d, ratio, aa, spread)
        log(f"tracking: speedtest1 --size {tsize} --memdb, 100 connections open, tracked against "
            f"untracked: {d:+.1f} ms CPU (ratio {ratio:.3f}); untracked against untracked "
            f"{aa:+.1f} ms, half of those pairs differ by more than {spread:.1f} ms; {n} rounds, "
            f"{load()}")
    subprocess.run(["rm", "-rf", shm], check=False)
    return res

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--preload", required=True)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--only", default="endpoint,scopes,tracking",
                    help="comma-separated parts to run (default: all three)")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    if not parts <= {"endpoint", "scopes", "tracking"}:
        raise SystemExit(f"live_costs: --only takes endpoint, scopes, tracking; got {args.only!r}")
    measure(args.build, os.path.abspath(args.preload), args.rounds, parts)

if __name__ == "__main__":
    main()

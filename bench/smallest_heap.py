#!/usr/bin/env python3
"""The smallest heap that runs speedtest1 to its end, per allocator, found by bisection (issue 15's
"smallest heap" table; `make bench` puts it on docs/BENCHMARKS.md, `make bench-smoke` runs it on
tiny inputs).

    bench/smallest_heap.py --build DIR --preload SO [--smoke]

For each workload (speedtest1 `--size 25 --memdb`, and a tmpfs file with `--nosync`) and each row:
- the bytes SQLite really needs: the smallest N for which `system+limit:max=N` runs it (the limit
  counts what SQLite counts, `xSize` of the live blocks, so this is SQLite's own peak demand);
- C memsys5 with `--heap N 64` (SQLite's mem5.c through `SQLITE_CONFIG_HEAP`, the same binary);
- sqlalloc memsys5 `heap=N,min=64`, memsys3 `heap=N`, tlsf `heap=N`.

A run "fits" when speedtest1 exits 0, prints its TOTAL line and no SQL error. Bisection stops when
the bracket is within 0.05% (10% with --smoke) of its upper end; the figure is the upper end (a heap
that fits). A row whose spec the preload library refuses (a backend it does not have) is left out,
with the reason. Every loop is bounded (at most 40 runs per row and workload).
"""
import argparse, os, subprocess, sys, tempfile
from statistics import median

MIB = 1024 * 1024


class Row:
    def __init__(self, key, label, kind, spec=None):
        self.key, self.label, self.kind, self.spec = key, label, kind, spec

    def cmd_env(self, build, preload, n, args):
        """The command and environment to run speedtest1 with heap (or cap) `n`."""
        cmd = [f"{build}/speedtest1"] + args
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SQLALLOC") and k != "LD_PRELOAD"}
        if self.kind == "c-memsys5":
            cmd += ["--heap", str(n), "64"]
        else:
            env["LD_PRELOAD"] = preload
            env["SQLALLOC"] = self.spec.format(n=n)
        return cmd, env


ROWS = [
    Row("needed", "bytes SQLite really needs (`system+limit:max=N`)", "sqlalloc",
        "system+limit:max={n}"),
    Row("c-memsys5", "C memsys5 (`--heap N 64`)", "c-memsys5"),
    Row("memsys5", "sqlalloc memsys5 (`heap=N,min=64`)", "sqlalloc", "memsys5:heap={n},min=64"),
    Row("memsys3", "sqlalloc memsys3 (`heap=N`)", "sqlalloc", "memsys3:heap={n}"),
    Row("tlsf", "sqlalloc tlsf (`heap=N`)", "sqlalloc", "tlsf:heap={n}"),
]


class Refused(Exception):
    """The preload library did not take the spec (it printed a line about it)."""


def fits(row, build, preload, n, args, shm):
    cmd, env = row.cmd_env(build, preload, n, args)
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for suffix in ("", "-journal", "-wal"):
            try:
                os.unlink(shm + suffix)
            except FileNotFoundError:
                pass
    if "sqlalloc:" in p.stderr:
        raise Refused(p.stderr.strip().splitlines()[0])
    return p.returncode == 0 and "TOTAL" in p.stdout and "error" not in p.stdout.lower()


def smallest(row, build, preload, args, shm, tol, start):
    """The smallest heap (bytes) that fits, within `tol` of itself, and the runs it took."""
    runs = 0
    hi = start
    while not fits(row, build, preload, hi, args, shm):
        runs += 1
        hi *= 2
        if runs > 12:
            raise RuntimeError(f"{row.key}: no heap up to {hi // MIB} MiB runs speedtest1")
    lo = 0
    while hi - lo > tol * hi and runs < 40:
        mid = (lo + hi) // 2
        runs += 1
        if fits(row, build, preload, mid, args, shm):
            hi = mid
        else:
            lo = mid
    return hi, runs


def measure(build, preload, smoke=False, log=print):
    """{workload: {row key: bytes or None}}, {row key: why it was left out}, the workloads."""
    size = "1" if smoke else "25"
    tol = 0.10 if smoke else 0.0005
    shm = f"/dev/shm/sqlalloc-smallest-{os.getpid()}.db"
    workloads = [
        ("memdb", "`--memdb`", ["--size", size, "--memdb"]),
        ("file", "tmpfs file, `--nosync`", ["--size", size, "--nosync", shm]),
    ]
    res, left_out = {}, {}
    for wk, _, args in workloads:
        res[wk] = {}
        for row in ROWS:
            if row.key in left_out:
                continue
            # Start from a heap that fits all rows on the larger workload (32 MiB at --size 25).
            start = (4 if smoke else 32) * MIB
            try:
                n, runs = smallest(row, build, preload, args, shm, tol, start)
            except Refused as e:
                left_out[row.key] = str(e)
                log(f"smallest heap: {row.key}: left out: {e}")
                continue
            res[wk][row.key] = n
            log(f"smallest heap: {wk} {row.key}: {n / MIB:.2f} MiB ({runs} runs)")
    return res, left_out, workloads


def table(res, left_out, workloads):
    """The markdown lines of the table."""
    L = []
    head = "| allocator |"
    sep = "|---|"
    for _, label, _ in workloads:
        head += f" {label} | × really needed | × C memsys5 |"
        sep += "---:|---:|---:|"
    L += [head, sep]
    for row in ROWS:
        if row.key in left_out:
            continue
        line = f"| {row.label} |"
        for wk, _, _ in workloads:
            n = res[wk].get(row.key)
            need, c5 = res[wk].get("needed"), res[wk].get("c-memsys5")
            if n is None:
                line += " — | — | — |"
                continue
            line += f" {n / MIB:.2f} MiB | {n / need:.3f} |" if need else f" {n / MIB:.2f} MiB | — |"
            line += f" {n / c5:.3f} |" if c5 else " — |"
        L.append(line)
    for k, why in left_out.items():
        L.append("")
        L.append(f"Left out: {k} ({why}).")
    return L


# ---- resident memory with a large heap (issue 15, part 1) -----------------------------------
# A fixed heap should cost only the pages SQLite uses of it: speedtest1 with a 400 MB heap, its
# peak RSS (ru_maxrss) under C memsys5 and under sqlalloc's fixed heaps, and, without any heap,
# C mem1 against sqlalloc `system`: what the preload library's own pages (code, data) add to a
# process whatever the backend.
RSS_HEAP = 400_000_000
GNU_TIME = "/usr/bin/time"  # Debian package `time` (make deps)
RSS_ROWS = [
    Row("mem1", "C mem1, no heap", "c"),
    Row("system", "sqlalloc system, no heap (the preload library's own pages)", "sqlalloc",
        "system"),
    Row("c-memsys5", f"C memsys5 (`--heap {RSS_HEAP} 64`)", "c-memsys5"),
    Row("memsys5", f"sqlalloc memsys5 (`heap={RSS_HEAP},min=64`)", "sqlalloc",
        "memsys5:heap={n},min=64"),
    Row("memsys3", f"sqlalloc memsys3 (`heap={RSS_HEAP}`)", "sqlalloc", "memsys3:heap={n}"),
    Row("tlsf", f"sqlalloc tlsf (`heap={RSS_HEAP}`)", "sqlalloc", "tlsf:heap={n}"),
]


def peak_rss(row, build, preload, args):
    """Peak resident bytes of one speedtest1 run: its `ru_maxrss`, reported by GNU time. (Not
    this process's own wait4: a child forked from Python starts with Python's resident pages,
    and the kernel keeps that high-water mark across exec; GNU time's child starts small.)"""
    if row.kind == "c":
        cmd = [f"{build}/speedtest1"] + args
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SQLALLOC") and k != "LD_PRELOAD"}
    else:
        cmd, env = row.cmd_env(build, preload, RSS_HEAP, args)
    with tempfile.NamedTemporaryFile() as tf:
        p = subprocess.run([GNU_TIME, "-f", "%M", "-o", tf.name] + cmd, env=env,
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0 or "TOTAL" not in p.stdout:
            raise RuntimeError(f"{row.key}: speedtest1 failed:\n{p.stdout[-500:]}{p.stderr[-500:]}")
        kib = open(tf.name).read().split()
    if not kib or not kib[-1].isdigit():
        raise RuntimeError(f"{row.key}: GNU time wrote no peak RSS: {kib}")
    return int(kib[-1]) * 1024


def measure_rss(build, preload, smoke=False, reps=5, log=print):
    """{row key: [peak RSS bytes per round]} and the speedtest1 arguments used. Rounds run the
    rows forwards, then backwards."""
    args = ["--size", "2" if smoke else "50", "--memdb", "--lookaside", "0", "0"]
    res = {r.key: [] for r in RSS_ROWS}
    for i in range(1 if smoke else reps):
        for row in (RSS_ROWS if i % 2 == 0 else RSS_ROWS[::-1]):
            res[row.key].append(peak_rss(row, build, preload, args))
    for row in RSS_ROWS:
        log(f"peak RSS: {row.key}: {median(res[row.key]) / MIB:.2f} MiB")
    return res, args


def rss_table(res):
    """The markdown lines of the peak-RSS table."""
    c5, lib = median(res["c-memsys5"]), median(res["system"]) - median(res["mem1"])
    L = ["| configuration | peak RSS | × C memsys5 | less the library's own pages, × C memsys5 |",
         "|---|---:|---:|---:|"]
    for row in RSS_ROWS:
        m = median(res[row.key])
        if row.key in ("mem1", "system"):
            L.append(f"| {row.label} | {m / MIB:.2f} MiB | — | — |")
        elif row.key == "c-memsys5":
            L.append(f"| {row.label} | {m / MIB:.2f} MiB | 1 | — |")
        else:
            L.append(f"| {row.label} | {m / MIB:.2f} MiB | {m / c5:.3f} | {(m - lib) / c5:.3f} |")
    return L


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--preload", required=True)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    res, left_out, workloads = measure(os.path.abspath(a.build), os.path.abspath(a.preload),
                                       a.smoke, log=lambda s: print(s, file=sys.stderr))
    print("\n".join(table(res, left_out, workloads)))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write preload/hot-text.txt: the code of libsqlalloc_preload.so that a program runs, as input
section patterns that preload/build.rs turns into a linker script, so that this code sits together
at the start of the library's text.

Why: the kernel maps a file's pages into a process 64 KiB at a time around each page it faults in
("fault-around"), and counts every mapped page in the process's resident size. The code a program
runs through the preload library (start-up, the allocation paths of a backend, the connection
tracking) is about 90 KB, but spread over 700 KB of text it made about 480 KB of the library
resident; grouped, about 240 KB (bench/notes.md, "Log", 2026-12-06).

How: the sqlite3 shell runs a small SQL workload (an in-memory and a file database) under
callgrind with the preload library, once per backend below; every function of the library that
executed an instruction is listed as a glob pattern that survives rebuilds (the
symbol hash and the crates' disambiguators replaced by `*`; `.text*.` so that `#[cold]` code in
`.text.unlikely.` matches too).

    scripts/hot-text.py [--so PATH] [--out preload/hot-text.txt]

Run it after changes that rename or add functions on those paths (a stale list only costs
resident memory: a pattern that matches nothing is ignored). Needs valgrind, nm and sqlite3.
"""
import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import instr_cost  # noqa: E402  (bench/instr_cost.py: self cost per instruction)

# In this order in the file, after the code they all run: a process runs the common code and that
# of its backend, which are then next to each other.
SPECS = ("memsys5:heap=64M,min=64", "tlsf:heap=64M", "system", "memsys3:heap=64M")


def workload(db):
    """A small but complete SQL workload for the sqlite3 shell."""
    rows = "\n".join(
        f"INSERT INTO t(a, b) VALUES ({i * 7919 % 1000}, '{'x' * (i % 300)}');" for i in range(2000)
    )
    return f"""
.open {db}
PRAGMA journal_mode = WAL;
CREATE TABLE t(id INTEGER PRIMARY KEY, a INT, b TEXT);
BEGIN;
{rows}
COMMIT;
CREATE INDEX ta ON t(a);
SELECT count(*), sum(length(b)), max(a) FROM t;
SELECT a, count(*) FROM t GROUP BY a ORDER BY 2 DESC LIMIT 3;
UPDATE t SET b = b || b WHERE a % 3 = 0;
DELETE FROM t WHERE a % 5 = 0;
SELECT a, sum(length(b)) OVER (ORDER BY a ROWS 2 PRECEDING) FROM t LIMIT 2;
VACUUM;
PRAGMA integrity_check;
"""


def symbols(so):
    """(address, size, name) of the library's functions, sorted."""
    out = subprocess.run(["nm", "-S", "--defined-only", so], capture_output=True, text=True,
                         check=True).stdout
    syms = []
    for line in out.splitlines():
        p = line.split(" ", 3)
        if len(p) == 4 and p[2] in "tT":
            syms.append((int(p[0], 16), int(p[1], 16), p[3]))
    return sorted(syms)


def pattern(sym):
    """A glob for the input section of function `sym` that does not depend on the build."""
    sym = re.sub(r"17h[0-9a-f]{16}E$", "17h*", sym)  # legacy mangling: the hash
    sym = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", sym)  # v0 mangling: crate disambiguators
    return ".text*." + sym


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--so", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "release",
        "libsqlalloc_preload.so"))
    ap.add_argument("--out", default=os.path.join(root, "preload", "hot-text.txt"))
    args = ap.parse_args()
    so = os.path.abspath(args.so)
    syms = symbols(so)
    starts = [s[0] for s in syms]
    cost = collections.Counter()
    ran = collections.defaultdict(set)  # function -> indices of the SPECS it ran under
    with tempfile.TemporaryDirectory() as tmp:
        for k, spec in enumerate(SPECS):
            for db in (":memory:", os.path.join(tmp, f"{k}.db")):
                cg = os.path.join(tmp, "cg.out")
                env = dict(os.environ, SQLALLOC=spec, LD_PRELOAD=so)
                r = subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=yes",
                                    f"--callgrind-out-file={cg}", "sqlite3"],
                                   input=workload(db), env=env, capture_output=True, text=True)
                if r.returncode != 0 or "Error" in r.stdout:
                    sys.exit(f"the workload failed under {spec}:\n{r.stdout[-2000:]}"
                             f"{r.stderr[-2000:]}")
                for addr, ir in instr_cost.self_costs(cg, os.path.basename(so)).items():
                    i = bisect.bisect_right(starts, addr) - 1
                    if i >= 0 and addr < syms[i][0] + syms[i][1]:
                        cost[syms[i][2]] += ir
                        ran[syms[i][2]].add(k)
                print(f"{spec} {db}: {len(cost)} functions so far", file=sys.stderr)
    # The code every backend runs first, then each backend's (by the first of SPECS it ran
    # under), hottest first within a group.
    order = sorted(cost, key=lambda f: (len(ran[f]) < len(SPECS), min(ran[f]), -cost[f]))
    seen, lines = set(), []
    for sym in order:
        p = pattern(sym)
        if p not in seen:
            seen.add(p)
            lines.append(p)
    size = sum(s for _, s, n in syms if n in cost)
    with open(args.out, "w") as f:
        f.write("# Generated by scripts/hot-text.py: the functions of libsqlalloc_preload.so that\n"
                "# run (common code, then each backend's), grouped by preload/build.rs.\n"
                f"# {len(cost)} functions, {size} bytes. A line that matches nothing is ignored.\n")
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}: {len(lines)} patterns, {len(cost)} functions, {size} bytes",
          file=sys.stderr)


if __name__ == "__main__":
    main()

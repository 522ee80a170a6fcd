#!/usr/bin/env python3
"""Self cost per machine instruction of one shared object, from a callgrind profile: how the hot
paths of this repository's allocators were found instruction by instruction (bench/notes.md).

    LD_PRELOAD=$SO SQLALLOC=tlsf:heap=64M valgrind --tool=callgrind --dump-instr=yes \
        --callgrind-out-file=OUT build/bench/micro --trace TRACE --passes 3
    bench/instr_cost.py OUT $SO [--min IR] [--per N]

prints, function by function, every instruction of $SO whose self cost is at least IR
(default 100000), disassembled by objdump, with its cost divided by N (default 1: give the
number of calls or pairs to read it per call). Calls' inclusive costs are left out. Use a
preload library built with `--features no-valgrind-marking` for memsys3/memsys5/tlsf (their
client requests run under callgrind otherwise).
"""
import argparse
import collections
import re
import subprocess


def self_costs(path, so_name):
    """Self Ir per instruction address of the object named `so_name` in callgrind file `path`."""
    names, cur, addr, skip = {}, None, 0, False
    cost = collections.Counter()
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^(c?)ob=\((\d+)\)(?: (.*))?$", line)
            if m:
                if m.group(3):
                    names[m.group(2)] = m.group(3)
                if not m.group(1):
                    cur = names.get(m.group(2))
                continue
            if line.startswith("calls="):
                skip = True  # the next cost line is the call's inclusive cost
                continue
            if not line or line[0] not in "0123456789+-*":
                continue
            parts = line.split()
            a = parts[0]
            if a.startswith(("+", "-")):
                step = int(a[1:], 16) if a[1:].startswith("0x") else int(a[1:])
                addr += step if a[0] == "+" else -step
            elif a != "*":
                addr = int(a, 16)
            if skip:
                skip = False
                continue
            if cur and cur.endswith(so_name) and len(parts) >= 3:
                cost[addr] += int(parts[2])
    return cost


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile")
    ap.add_argument("so")
    ap.add_argument("--min", type=int, default=100000)
    ap.add_argument("--per", type=float, default=1.0)
    args = ap.parse_args()
    cost = self_costs(args.profile, args.so.split("/")[-1])
    hot = {a: c for a, c in cost.items() if c >= args.min}
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", args.so],
                         capture_output=True, text=True, check=True).stdout
    fn, shown, totals = None, None, collections.Counter()
    for line in dis.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
        if m:
            fn = m.group(2)
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
        if m and int(m.group(1), 16) in hot:
            c = hot[int(m.group(1), 16)] / args.per
            if fn != shown:
                print(f"== {fn}")
                shown = fn
            print(f"{c:10.2f} {m.group(1)} {m.group(2)}")
            totals[fn] += c
    for f, c in totals.most_common():
        print(f"{c:10.2f} total {f}")


if __name__ == "__main__":
    main()

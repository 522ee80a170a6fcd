#!/usr/bin/env bash
# Run the README's commands and code blocks exactly as written, so that the README cannot drift
# from what works. Each block is marked in README.md by a comment line `<!-- readme-test: NAME -->`
# right above it; this script takes the block's text from README.md itself (nothing is copied
# here) and runs it:
#
#   make      `make demo` is run; `make test` is the command that runs this script.
#   app.c     the C example, saved as app.c.
#   build-c   line 1 from a directory where `include` and `target` are this repository's, after
#             `make`; line 2 after `make install PREFIX=<scratch>`, with PKG_CONFIG_PATH and
#             LD_LIBRARY_PATH pointing there (the README's PREFIX=/usr/local needs neither).
#             Each program must print its counters line.
#   preload   from the repository root (the block uses $PWD/target/...), with the files it names
#             (script.sql, app.py) created there for the run and removed after: the stderr report
#             and the JSON report must appear.
#   live      from the repository root, with `my-service` defined as a shell function (a Python
#             program doing SQLite work for ~3 s): the curl line must print a current_bytes sample.
#
# Also `make deps` (scripts/deps.sh) where it cannot install: one line naming the packages, exit 1.
#
# The Rust block is a doctest of the crate (`#[doc = include_str!("../README.md")]` in src/lib.rs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
README="$ROOT/README.md"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sqlalloc-readme.XXXXXX")
created=()
cleanup() {
    rm -rf "$TMP"
    for f in "${created[@]}"; do rm -f "$f"; done
}
trap cleanup EXIT
fail() { echo "FAIL readme: $*" >&2; exit 1; }

# The fenced block that follows the marker `<!-- readme-test: $1 -->`, without its fences.
block() {
    awk -v name="$1" '
        $0 == "<!-- readme-test: " name " -->" { want = 1; next }
        want && /^```/ { if (inside) exit; inside = 1; next }
        inside { print }
    ' "$README"
}
for name in make app.c build-c preload live; do
    [ -n "$(block "$name")" ] || fail "README.md has no block marked readme-test: $name"
done
passed=0

# ---- make --------------------------------------------------------------------------------------
block make | grep -q '^make test' || fail "the first block no longer shows make test"
line=$(block make | grep '^make demo') || fail "the first block no longer shows make demo"
cmd=${line%%#*}
(cd "$ROOT" && eval "$cmd") >"$TMP/demo.out" 2>&1 || { tail -20 "$TMP/demo.out"; fail "'$cmd' failed"; }
grep -q "malloc" "$TMP/demo.out" || { tail -20 "$TMP/demo.out"; fail "'$cmd' printed no counters"; }
echo "ok   readme: $cmd"
passed=$((passed + 1))

# ---- the C example, built both ways ------------------------------------------------------------
block app.c >"$TMP/app.c"
mapfile -t build < <(block build-c)
[ "${#build[@]}" = 2 ] || fail "the C build block should have two lines, has ${#build[@]}"
counters_line='[0-9]+ bytes in [0-9]+ blocks, peak [0-9]+'

make --no-print-directory -C "$ROOT" lib >"$TMP/lib.log" 2>&1 || { tail -20 "$TMP/lib.log"; fail "make failed"; }
mkdir "$TMP/in-repo"
cp "$TMP/app.c" "$TMP/in-repo/"
ln -s "$ROOT/include" "$TMP/in-repo/include"
ln -s "$ROOT/target" "$TMP/in-repo/target"
(cd "$TMP/in-repo" && eval "${build[0]}") >"$TMP/c1.out" 2>&1 ||
    { cat "$TMP/c1.out"; fail "'${build[0]}' failed"; }
grep -Eq "$counters_line" "$TMP/c1.out" || { cat "$TMP/c1.out"; fail "'${build[0]}' printed no counters"; }
echo "ok   readme: ${build[0]}"
passed=$((passed + 1))

prefix="$TMP/prefix"
make --no-print-directory -C "$ROOT" install PREFIX="$prefix" >"$TMP/install.log" 2>&1 ||
    { tail -20 "$TMP/install.log"; fail "make install PREFIX=$prefix failed"; }
mkdir "$TMP/installed"
cp "$TMP/app.c" "$TMP/installed/"
(cd "$TMP/installed" && export PKG_CONFIG_PATH="$prefix/lib/pkgconfig" \
    LD_LIBRARY_PATH="$prefix/lib" && eval "${build[1]}") >"$TMP/c2.out" 2>&1 || { cat "$TMP/c2.out"; fail "'${build[1]}' failed"; }
grep -Eq "$counters_line" "$TMP/c2.out" || { cat "$TMP/c2.out"; fail "'${build[1]}' printed no counters"; }
LD_LIBRARY_PATH="$prefix/lib" ldd "$TMP/installed/a.out" | grep -q "$prefix/lib/libsqlalloc.so" ||
    fail "'${build[1]}' did not link the installed libsqlalloc.so"
echo "ok   readme: ${build[1]} (after make install PREFIX=<scratch>)"
passed=$((passed + 1))

# ---- the preload lines -------------------------------------------------------------------------
for f in app.db script.sql app.py; do
    [ -e "$ROOT/$f" ] && fail "$ROOT/$f exists already; the preload block would use it"
done
created+=("$ROOT/app.db" "$ROOT/script.sql" "$ROOT/app.py")
cat >"$ROOT/script.sql" <<'SQL'
CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
INSERT INTO t(b) SELECT hex(randomblob(40)) FROM c;
CREATE INDEX tb ON t(b);
SELECT count(*), sum(length(b)) FROM t;
SQL
cat >"$ROOT/app.py" <<'PY'
import os, sqlite3
db = sqlite3.connect(":memory:")
db.execute("CREATE TABLE t(x)")
db.executemany("INSERT INTO t VALUES (?)", [(os.urandom(100),) for _ in range(5000)])
print("rows", db.execute("SELECT count(*) FROM t").fetchone()[0], "pid", os.getpid())
db.close()
PY
block preload >"$TMP/preload.sh"
(cd "$ROOT" && bash -e "$TMP/preload.sh") >"$TMP/preload.out" 2>"$TMP/preload.err" ||
    { tail -20 "$TMP/preload.err"; fail "the preload block failed"; }
grep -q "^20000|" "$TMP/preload.out" || { cat "$TMP/preload.out"; fail "sqlite3 under the preload gave a wrong result"; }
grep -q "sqlalloc report (pid [0-9]*): backend memsys5" "$TMP/preload.err" ||
    { cat "$TMP/preload.err"; fail "no stderr report from sqlite3 under the preload"; }
pid=$(sed -n 's/^rows 5000 pid \([0-9]*\)$/\1/p' "$TMP/preload.out")
[ -n "$pid" ] || { cat "$TMP/preload.out"; fail "python3 app.py under the preload gave a wrong result"; }
json="/tmp/sqlite-mem-$pid.json"
created+=("$json")
[ -s "$json" ] || fail "python3 under the preload wrote no report $json"
grep -q '"debug:backtrace=8"' "$json" || { head -c 400 "$json"; fail "$json is not the debug report"; }
echo "ok   readme: the preload lines (sqlite3 shell, python3)"
passed=$((passed + 1))

# ---- make deps when it cannot install: one line naming the packages, exit status 1 -------------
# A scratch PATH where dpkg-query says nothing is installed and apt-get fails, then one without
# apt-get at all (only the tools the script uses).
mkdir "$TMP/fakebin" "$TMP/noapt"
printf '#!/bin/sh\necho "deinstall ok config-files"\n' >"$TMP/fakebin/dpkg-query"
printf '#!/bin/sh\nexit 100\n' >"$TMP/fakebin/apt-get"
printf '#!/bin/sh\nexit 1\n' >"$TMP/fakebin/rustup"
printf '#!/bin/sh\nexec "$@"\n' >"$TMP/fakebin/sudo"
chmod +x "$TMP/fakebin/"*
cp "$TMP/fakebin/dpkg-query" "$TMP/noapt/"
for t in sh grep id printf; do ln -s "$(command -v $t)" "$TMP/noapt/$t"; done
if PATH="$TMP/fakebin:$PATH" "$ROOT/scripts/deps.sh" demo >"$TMP/deps.out" 2>"$TMP/deps.err"; then
    fail "deps.sh succeeded although apt-get failed"
fi
grep -qx "deps: cannot install gcc libc6-dev libsqlite3-dev pkg-config: apt-get update failed" \
    "$TMP/deps.err" || { cat "$TMP/deps.err"; fail "deps.sh did not name what it could not install"; }
if PATH="$TMP/noapt" "$ROOT/scripts/deps.sh" demo >"$TMP/deps.out" 2>"$TMP/deps.err"; then
    fail "deps.sh succeeded without apt-get"
fi
grep -q "^deps: cannot install gcc libc6-dev libsqlite3-dev pkg-config: this is not a Debian" \
    "$TMP/deps.err" || { cat "$TMP/deps.err"; fail "deps.sh without apt-get: wrong message"; }
PATH="$TMP/fakebin:$PATH" "$ROOT/scripts/deps.sh" nonsense 2>"$TMP/deps.err" && fail "deps.sh took a bad target"
grep -q "unknown target 'nonsense'" "$TMP/deps.err" || fail "deps.sh with a bad target: wrong message"
echo "ok   readme: make deps names what it cannot install and fails"
passed=$((passed + 1))

# ---- the live endpoint ---------------------------------------------------------------------
# `my-service` is a Python program doing SQLite work for about 3 s; the block as written runs it in
# the background and greps one sample from the endpoint.
{
    echo 'my-service() { python3 -c "import sqlite3, time
db = sqlite3.connect(\":memory:\"); db.execute(\"create table t(x)\")
for i in range(300): db.execute(\"insert into t values (randomblob(1000))\"); time.sleep(0.01)"; }'
    block live
    echo wait
} >"$TMP/live.sh"
(cd "$ROOT" && bash -e "$TMP/live.sh") >"$TMP/live.out" 2>"$TMP/live.err" ||
    { cat "$TMP/live.err"; fail "the live block failed"; }
grep -Eq '^sqlite_memory_current_bytes\{backend="system",spec="system"\} [1-9][0-9]*$' "$TMP/live.out" ||
    { cat "$TMP/live.out" "$TMP/live.err"; fail "the live block printed no current_bytes sample"; }
echo "ok   readme: the live endpoint (SQLALLOC_LISTEN, curl)"
passed=$((passed + 1))

echo "readme: $passed passed, 0 failed (and the Rust block, as a doctest of cargo test --doc)"

#!/bin/bash
# Which language bindings libsqlalloc_preload.so reaches, each tried for real (docs/bindings.md).
#
#   scripts/try-bindings.sh             PRELOAD=/path/libsqlalloc_preload.so scripts/try-bindings.sh
#
# Each binding runs a small program (create a table, insert 5000 rows in a transaction, query
# count, total length and sqlite_version()) under
#   LD_PRELOAD=$PRELOAD SQLALLOC=<spec> SQLALLOC_REPORT=stderr
# for each spec in $SPECS. A binding is REACHED when every run prints the right result and a report
# with malloc_calls > 0 and current_bytes equal to sqlite3_memory_used(); NOT REACHED when every
# run prints the right result, no report, and exactly the library's one line saying that no
# SQLite was configured although the process has one. One line per binding, with the evidence; the exit
# status is 0 when every binding matches the expectation written next to it below, 1 otherwise.
# A binding whose tools cannot be installed prints SKIPPED and does not count as a mismatch.
#
# Missing tools are installed the way docs/bindings.md says: Debian packages with apt-get (needs
# root or sudo), better-sqlite3 and sqlite3 from npm built from source (no GitHub downloads),
# rusqlite from crates.io. An existing node/npm (e.g. NodeSource's) is used as it is. Builds go to
# $WORK (default /tmp/sqlalloc-try-bindings), kept between runs so that a second run is quick.
# Debian 12 only. Not part of `make test`.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/sqlalloc-try-bindings}
SPECS=${SPECS:-"system memsys5:heap=32M"}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}     # seconds for one program run
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1200} # seconds for one install or build step
mkdir -p "$WORK"
mismatches=0

if [ -z "${PRELOAD:-}" ]; then
    PRELOAD=${CARGO_TARGET_DIR:-$repo/target}/release/libsqlalloc_preload.so
    echo "building $PRELOAD (cargo build --release -p sqlalloc_preload)"
    (cd "$repo" && timeout "$BUILD_TIMEOUT" cargo build --release -q -p sqlalloc_preload)
fi
[ -f "$PRELOAD" ] || { echo "no preload library at $PRELOAD" >&2; exit 2; }

# ---- helpers ----------------------------------------------------------------------------------

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
debver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }

# need_debs PKG...: install the Debian packages that are missing (apt-get update once). Status 1
# when they cannot be installed (the log is in $WORK/apt.log).
apt_updated=
need_debs() {
    local p missing=
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "installing$missing (apt-get)"
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -q >>"$WORK/apt.log" 2>&1 || true
        apt_updated=1
    fi
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive timeout "$BUILD_TIMEOUT" \
        apt-get install -y -q --no-install-recommends $missing >>"$WORK/apt.log" 2>&1
}

# verdict NAME VERSION EXPECTED OUTCOME EVIDENCE: the binding's line; counts a mismatch.
verdict() {
    local name=$1 version=$2 expected=$3 outcome=$4 evidence=$5 note=
    if [ "$outcome" != "$expected" ]; then
        note=" [MISMATCH: docs/bindings.md says $expected]"
        mismatches=$((mismatches + 1))
    fi
    printf '%-11s %s (%s): %s%s\n' "$outcome" "$name" "$version" "$evidence" "$note"
}

skipped() { printf 'SKIPPED     %s: %s\n' "$1" "$2"; }

# try NAME CMD...: run CMD under the preload library once per spec and set OUTCOME (REACHED,
# NOT REACHED, or FAILED when the program's result is wrong or the runs disagree) and EVIDENCE.
try() {
    local name=$1 spec out err reached=0 unreached=0 n=0 rc calls peak cur used sqlver
    shift
    EVIDENCE=
    for spec in $SPECS; do
        n=$((n + 1))
        out=$WORK/$name.$n.out
        err=$WORK/$name.$n.err
        rc=0
        LD_PRELOAD=$PRELOAD SQLALLOC=$spec SQLALLOC_REPORT=stderr \
            timeout "$RUN_TIMEOUT" "$@" </dev/null >"$out" 2>"$err" || rc=$?
        if [ "$rc" != 0 ]; then
            EVIDENCE="$EVIDENCE $spec: exit status $rc ($(head -c 200 "$err" | tr '\n' ' '));"
            continue
        fi
        if ! grep -q '5000.*38890' "$out"; then
            EVIDENCE="$EVIDENCE $spec: wrong result '$(head -c 100 "$out")';"
            continue
        fi
        sqlver=$(grep -o '3\.[0-9]*\.[0-9]*' "$out" | head -1)
        calls=$(awk '$1 == "malloc_calls" { print $2 }' "$err")
        peak=$(awk '$1 == "peak_bytes" { print $2 }' "$err")
        cur=$(awk '$1 == "current_bytes" { print $2 }' "$err")
        used=$(awk '$1 == "current_bytes" { print $5 }' "$err")
        if [ -n "$calls" ] && [ "$calls" -gt 0 ] && [ "$cur" = "$used" ]; then
            reached=$((reached + 1))
            EVIDENCE="$EVIDENCE $spec: malloc_calls=$calls peak_bytes=$peak current_bytes=$cur=sqlite3_memory_used();"
        elif [ "$(wc -l <"$err")" = 1 ] &&
            grep -q '^sqlalloc: SQLALLOC is set but no SQLite in this process was configured' "$err"; then
            unreached=$((unreached + 1))
            EVIDENCE="$EVIDENCE $spec: no report, one line ($(grep -o '([^)]*)' "$err" | head -1));"
        else
            EVIDENCE="$EVIDENCE $spec: stderr '$(head -c 200 "$err" | tr '\n' ' ')';"
        fi
    done
    EVIDENCE="SQLite ${sqlver:-?};$EVIDENCE"
    if [ "$reached" = "$n" ]; then
        OUTCOME=REACHED
    elif [ "$unreached" = "$n" ]; then
        OUTCOME="NOT REACHED"
    else
        OUTCOME=FAILED
    fi
}

# The same work in SQL, for the shell.
cat >"$WORK/work.sql" <<'EOF'
create table t(id integer primary key, v text);
begin;
with recursive c(i) as (select 0 union all select i + 1 from c where i < 4999)
insert into t(v) select 'row ' || i from c;
commit;
select count(*), sum(length(v)), sqlite_version() from t;
EOF

# ---- 1. the sqlite3 shell ---------------------------------------------------------------------

if need_debs sqlite3; then
    try sqlite3-shell sqlite3 :memory: ".read $WORK/work.sql"
    verdict "sqlite3 shell" "sqlite3 $(debver sqlite3)" REACHED "$OUTCOME" "$EVIDENCE"
else
    skipped "sqlite3 shell" "apt-get install sqlite3 failed ($WORK/apt.log)"
fi

# ---- 2. Python's sqlite3 module ---------------------------------------------------------------

if need_debs python3; then
    cat >"$WORK/work.py" <<'EOF'
import sqlite3
db = sqlite3.connect(":memory:")
db.execute("create table t(id integer primary key, v text)")
with db:
    db.executemany("insert into t(v) values (?)", (("row %d" % i,) for i in range(5000)))
print(*db.execute("select count(*), sum(length(v)), sqlite_version() from t").fetchone())
db.close()
EOF
    try python /usr/bin/python3 "$WORK/work.py"
    verdict "Python sqlite3" "python3 $(debver python3)" REACHED "$OUTCOME" "$EVIDENCE"
else
    skipped "Python sqlite3" "apt-get install python3 failed ($WORK/apt.log)"
fi

# ---- 3. Ruby's sqlite3 gem (Debian's ruby-sqlite3) --------------------------------------------

if need_debs ruby ruby-sqlite3; then
    cat >"$WORK/work.rb" <<'EOF'
require 'sqlite3'
db = SQLite3::Database.new(":memory:")
db.execute("create table t(id integer primary key, v text)")
db.transaction { 5000.times { |i| db.execute("insert into t(v) values (?)", ["row #{i}"]) } }
puts db.execute("select count(*), sum(length(v)), sqlite_version() from t").first.join(" ")
db.close
EOF
    try ruby ruby "$WORK/work.rb"
    verdict "Ruby sqlite3 gem" "ruby-sqlite3 $(debver ruby-sqlite3)" REACHED "$OUTCOME" "$EVIDENCE"
else
    skipped "Ruby sqlite3 gem" "apt-get install ruby ruby-sqlite3 failed ($WORK/apt.log)"
fi

# ---- 4. Node: better-sqlite3 (bundled SQLite) and, for comparison, sqlite3 --sqlite=/usr -------

# node and npm as they are (NodeSource's nodejs conflicts with Debian's npm); Debian's otherwise.
node_ok=1
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    need_debs nodejs npm node-gyp libnode-dev || node_ok=
fi
if [ -n "$node_ok" ] && [ ! -f /usr/include/node/node_api.h ]; then
    need_debs libnode-dev || node_ok=
fi
[ -n "$node_ok" ] && { need_debs g++ make python3 || node_ok=; }

# npm_install DIR PACKAGE FLAGS...: npm install into DIR (once), from source.
npm_install() {
    local dir=$1
    shift
    [ -d "$dir/node_modules/${1%@*}" ] && return 0
    mkdir -p "$dir"
    echo '{"name": "try-bindings", "version": "1.0.0", "private": true}' >"$dir/package.json"
    echo "npm install $* (from source, a minute or two)"
    (cd "$dir" && timeout "$BUILD_TIMEOUT" npm install --no-audit --no-fund "$@" >"$dir/install.log" 2>&1) ||
        { rm -rf "$dir/node_modules"; return 1; }
}

if [ -z "$node_ok" ]; then
    skipped "better-sqlite3" "node, npm or the Node headers could not be installed ($WORK/apt.log)"
elif npm_install "$WORK/better-sqlite3" better-sqlite3@12 --build-from-source --nodedir=/usr; then
    dir=$WORK/better-sqlite3
    cat >"$dir/work.js" <<'EOF'
const Database = require('better-sqlite3');
const db = new Database(':memory:');
db.exec('create table t(id integer primary key, v text)');
const insert = db.prepare('insert into t(v) values (?)');
db.transaction(() => { for (let i = 0; i < 5000; i++) insert.run('row ' + i); })();
const r = db.prepare('select count(*) n, sum(length(v)) s, sqlite_version() v from t').get();
console.log(r.n, r.s, r.v);
db.close();
EOF
    so=$dir/node_modules/better-sqlite3/build/Release/better_sqlite3.node
    exported=$(nm -D --defined-only "$so" | awk '$3 ~ /^sqlite3_/' | wc -l)
    init=$(nm "$so" | awk '$3 == "sqlite3_initialize" { print $2 }')
    try better-sqlite3 node "$dir/work.js"
    version="better-sqlite3 $(node -p "require('$dir/node_modules/better-sqlite3/package.json').version"), node $(node --version)"
    verdict "better-sqlite3" "$version" "NOT REACHED" "$OUTCOME" \
        "$EVIDENCE nm -D: $exported sqlite3_* exported, sqlite3_initialize is '$init' (local)"
else
    skipped "better-sqlite3" "npm install failed ($WORK/better-sqlite3/install.log)"
fi

if [ -z "$node_ok" ]; then
    skipped "sqlite3 (npm)" "node, npm or the Node headers could not be installed ($WORK/apt.log)"
elif npm_install "$WORK/node-sqlite3" sqlite3 --build-from-source --sqlite=/usr --nodedir=/usr; then
    dir=$WORK/node-sqlite3
    cat >"$dir/work.js" <<'EOF'
const sqlite3 = require('sqlite3');
const db = new sqlite3.Database(':memory:');
db.serialize(() => {
  db.run('create table t(id integer primary key, v text)');
  db.run('begin');
  const insert = db.prepare('insert into t(v) values (?)');
  for (let i = 0; i < 5000; i++) insert.run('row ' + i);
  insert.finalize();
  db.run('commit');
  db.get('select count(*) n, sum(length(v)) s, sqlite_version() v from t', (err, r) => {
    if (err) throw err;
    console.log(r.n, r.s, r.v);
    db.close();
  });
});
EOF
    try node-sqlite3 node "$dir/work.js"
    version="sqlite3 $(node -p "require('$dir/node_modules/sqlite3/package.json').version") --sqlite=/usr, node $(node --version)"
    verdict "sqlite3 (npm)" "$version" REACHED "$OUTCOME" "$EVIDENCE"
else
    skipped "sqlite3 (npm)" "npm install failed ($WORK/node-sqlite3/install.log)"
fi

# ---- 5. Go: github.com/mattn/go-sqlite3 (Debian's) -------------------------------------------

# Go's os.Exit and a return from main end the process without libc's exit, so no destructor and
# no report: the program calls C.exit(0) at the end when GO_LIBC_EXIT is set.
if need_debs golang-go golang-github-mattn-go-sqlite3-dev gcc libsqlite3-dev; then
    dir=$WORK/go/src/trybindings
    mkdir -p "$dir"
    cat >"$dir/main.go" <<'EOF'
package main

// #include <stdlib.h>
import "C"

import (
	"database/sql"
	"fmt"
	"os"

	_ "github.com/mattn/go-sqlite3"
)

func check(err error) {
	if err != nil {
		panic(err)
	}
}

func main() {
	db, err := sql.Open("sqlite3", ":memory:")
	check(err)
	db.SetMaxOpenConns(1) // one connection: one in-memory database
	_, err = db.Exec("create table t(id integer primary key, v text)")
	check(err)
	tx, err := db.Begin()
	check(err)
	for i := 0; i < 5000; i++ {
		_, err = tx.Exec("insert into t(v) values (?)", fmt.Sprintf("row %d", i))
		check(err)
	}
	check(tx.Commit())
	var n, s int
	var v string
	check(db.QueryRow("select count(*), sum(length(v)), sqlite_version() from t").Scan(&n, &s, &v))
	fmt.Println(n, s, v)
	check(db.Close())
	if os.Getenv("GO_LIBC_EXIT") != "" {
		C.exit(0) // libc's exit: atexit handlers and destructors run, the report is written
	}
}
EOF
    version="golang-github-mattn-go-sqlite3-dev $(debver golang-github-mattn-go-sqlite3-dev), $(go version | cut -d' ' -f3)"
    for tags in "" libsqlite3; do
        label="-tags $tags"
        [ -n "$tags" ] || label="default build"
        bin=$WORK/go/trybindings${tags:+-$tags}
        (cd "$dir" && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOPROXY=off \
            GOCACHE=$WORK/go/cache timeout "$BUILD_TIMEOUT" go build -tags "$tags" -o "$bin" .)
        linked=$(ldd "$bin" | awk '/libsqlite3/ { print $1 }')
        # Without C.exit: no report, but a 64K limit makes the inserts fail, so it is installed.
        plain=$(LD_PRELOAD=$PRELOAD SQLALLOC=system SQLALLOC_REPORT=stderr \
            timeout "$RUN_TIMEOUT" "$bin" 2>&1 >/dev/null | wc -l)
        limited=$(LD_PRELOAD=$PRELOAD SQLALLOC=system+limit:max=64K \
            timeout "$RUN_TIMEOUT" "$bin" 2>&1 | grep -c 'out of memory' || true)
        try "go${tags:+-$tags}" env GO_LIBC_EXIT=1 "$bin"
        [ "$limited" -gt 0 ] || OUTCOME=FAILED
        verdict "go-sqlite3 $label" "$version" REACHED "$OUTCOME" \
            "links ${linked:-no libsqlite3}; with C.exit(0) at the end:$EVIDENCE without it: $plain report lines, and $limited 'out of memory' under system+limit:max=64K"
    done
else
    skipped "go-sqlite3" "apt-get install golang-go golang-github-mattn-go-sqlite3-dev failed ($WORK/apt.log)"
fi

# ---- 6. Rust: rusqlite, with and without `bundled` --------------------------------------------

if ! command -v cargo >/dev/null; then
    skipped "rusqlite" "no cargo (install Rust with rustup)"
elif need_debs gcc libsqlite3-dev pkg-config; then
    dir=$WORK/rusqlite
    mkdir -p "$dir/src"
    cat >"$dir/Cargo.toml" <<'EOF'
[package]
name = "try-bindings"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
rusqlite = "0.43"

[features]
bundled = ["rusqlite/bundled"]

[workspace]
EOF
    cat >"$dir/src/main.rs" <<'EOF'
fn main() -> rusqlite::Result<()> {
    let mut db = rusqlite::Connection::open_in_memory()?;
    db.execute_batch("create table t(id integer primary key, v text)")?;
    let tx = db.transaction()?;
    for i in 0..5000 {
        tx.execute("insert into t(v) values (?1)", [format!("row {i}")])?;
    }
    tx.commit()?;
    let (n, s, v): (i64, i64, String) = db.query_row(
        "select count(*), sum(length(v)), sqlite_version() from t",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    println!("{n} {s} {v}");
    Ok(())
}
EOF
    for build in system bundled; do
        feature=
        [ "$build" = bundled ] && feature="--features bundled"
        # shellcheck disable=SC2086
        (cd "$dir" && timeout "$BUILD_TIMEOUT" cargo build --release -q $feature --target-dir "$dir/target-$build")
        bin=$dir/target-$build/release/try-bindings
        version="rusqlite $(awk '/^name = "rusqlite"/ { getline; print $3 }' "$dir/Cargo.lock" | tr -d '"')"
        exported=$(nm -D --defined-only "$bin" | awk '$3 ~ /^sqlite3_/' | wc -l)
        linked=$(ldd "$bin" | awk '/libsqlite3/ { print $1 }')
        try "rusqlite-$build" "$bin"
        if [ "$build" = bundled ]; then
            verdict "rusqlite features=bundled" "$version" "NOT REACHED" "$OUTCOME" \
                "$EVIDENCE SQLite in the executable: ${linked:-no libsqlite3}, nm -D: $exported sqlite3_* exported"
        else
            verdict "rusqlite (system libsqlite3)" "$version" REACHED "$OUTCOME" "links $linked; $EVIDENCE"
        fi
    done
else
    skipped "rusqlite" "apt-get install libsqlite3-dev pkg-config failed ($WORK/apt.log)"
fi

if [ "$mismatches" -gt 0 ]; then
    echo "try-bindings: $mismatches binding(s) did not behave as docs/bindings.md says"
    exit 1
fi
echo "try-bindings: every binding tried behaved as docs/bindings.md says"

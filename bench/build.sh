#!/usr/bin/env bash
# Build everything the benchmarks run, under one build directory:
#   DIR/sqlite/.libs/libsqlite3.so.0  SQLite 3.40.1 (Debian's source tree), configure's defaults
#                                     (-g -O2, threadsafe) plus -DSQLITE_ENABLE_MEMSYS5
#   DIR/speedtest1                    SQLite's test/speedtest1.c linked against that library
#   DIR/micro                         the sqlite3_mem_methods microbenchmark (bench/micro.c)
#   DIR/threads                       the 1- vs 2-thread SQLite driver (bench/threads.c)
#   DIR/libtrace_rec.so               the allocation-trace recorder (bench/trace_rec.c)
#   DIR/librlsf_shim.so               the Rust crate rlsf as a sqlite3_mem_methods table, for
#                                     `micro --methods-lib` (bench/rlsf_shim: its own crate and
#                                     Cargo.lock, built with cargo --locked into DIR/rlsf_shim-target)
# Every program finds the library through its rpath, so all configurations run the same binary
# on the same library. Idempotent: steps whose inputs did not change are skipped.
#
# Usage: bench/build.sh BUILD_DIR LIBSQLALLOC_A
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:?usage: bench/build.sh BUILD_DIR LIBSQLALLOC_A}
liba=${2:?usage: bench/build.sh BUILD_DIR LIBSQLALLOC_A}
[ -f "$liba" ] || { echo "bench/build.sh: no static library at $liba (build it first)" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
CC=${CC:-cc}
CWARN="-Wall -Wextra -Werror"

# SQLite's tree, fetched and verified once (shared cache with the TCL suites: build/).
src=$("$root/scripts/fetch-sqlite.sh" "$root/build")

# One shared library, memsys5 compiled in (mem1 stays the default allocator).
OPTS="-DSQLITE_ENABLE_MEMSYS5"
sq=$out/sqlite
mkdir -p "$sq"
if [ ! -f "$sq/Makefile" ]; then
  echo "bench: configuring SQLite in $sq" >&2
  (cd "$sq" && "$src/configure" --disable-tcl > configure.log 2>&1) ||
    { echo "bench/build.sh: configure failed (see $sq/configure.log)" >&2; exit 1; }
fi
if [ ! -f "$sq/.libs/libsqlite3.so.0" ] || [ "$(cat "$sq/.bench-opts" 2>/dev/null)" != "$OPTS" ]; then
  echo "bench: building libsqlite3.so with $OPTS (about a minute)" >&2
  rm -f "$sq/libsqlite3.la" "$sq/sqlite3.lo"
  make -C "$sq" libsqlite3.la OPTS="$OPTS" > "$sq/make.log" 2>&1 ||
    { echo "bench/build.sh: libsqlite3 build failed (see $sq/make.log)" >&2; exit 1; }
  echo "$OPTS" > "$sq/.bench-opts"
fi
lib=$sq/.libs
grep -q -- "-DSQLITE_ENABLE_MEMSYS5" "$sq/make.log" || { echo "bench/build.sh: libsqlite3 was not compiled with memsys5 (see $sq/make.log)" >&2; exit 1; }

link="-I$sq -L$lib -Wl,-rpath,$lib -lsqlite3"
newer() { # TARGET SOURCES...: true when TARGET is missing or older than a source
  local t=$1; shift
  [ -e "$t" ] || return 0
  for s in "$@"; do [ "$s" -nt "$t" ] && return 0; done
  return 1
}
# speedtest1 as upstream ships it (its own code is not held to our warning flags).
if newer "$out/speedtest1" "$src/test/speedtest1.c" "$lib/libsqlite3.so.0"; then
  $CC -g -O2 -o "$out/speedtest1" "$src/test/speedtest1.c" $link -lm
fi
if newer "$out/micro" "$here/micro.c" "$lib/libsqlite3.so.0"; then
  $CC -std=gnu11 -g -O2 $CWARN -o "$out/micro" "$here/micro.c" $link -lpthread -ldl -lm
fi
if newer "$out/threads" "$here/threads.c" "$lib/libsqlite3.so.0"; then
  $CC -std=gnu11 -g -O2 $CWARN -o "$out/threads" "$here/threads.c" $link -lpthread -lm
fi
# The recorder links sqlalloc statically (it records what SQLite asks of a sqlalloc allocator)
# and hides every symbol but its sqlite3_initialize.
if newer "$out/libtrace_rec.so" "$here/trace_rec.c" "$liba" "$root/include/sqlalloc.h"; then
  $CC -std=gnu11 -g -O2 $CWARN -fPIC -shared -I"$root/include" -I"$sq" -o "$out/libtrace_rec.so" \
    "$here/trace_rec.c" "$liba" -Wl,--exclude-libs,ALL -ldl -lpthread -lm
fi
# rlsf behind a sqlite3_mem_methods table (cargo decides what is up to date).
CARGO_TARGET_DIR="$out/rlsf_shim-target" ${CARGO:-cargo} build --release --locked --quiet \
  --manifest-path "$here/rlsf_shim/Cargo.toml" ||
  { echo "bench/build.sh: bench/rlsf_shim did not build" >&2; exit 1; }
cp -p "$out/rlsf_shim-target/release/librlsf_shim.so" "$out/librlsf_shim.so"
# Every program must use our library, not the system's (which has no memsys5).
for p in speedtest1 micro threads; do
  case $(ldd "$out/$p") in *"$lib/libsqlite3.so.0"*) ;; *) false ;; esac ||
    { echo "bench/build.sh: $p does not load $lib/libsqlite3.so.0" >&2; ldd "$out/$p" >&2; exit 1; }
done
echo "$out"

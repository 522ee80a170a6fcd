#!/bin/sh
# Run the C tests: one line per test x backend, then a summary. Exit status 1 if any failed.
#
#   c-tests/run.sh BIN_DIR [pkgconfig]
#
# BIN_DIR holds the compiled test programs (the Makefile builds them). With "pkgconfig", also run
# c-tests/t_pkgconfig.sh (installs into a temp PREFIX with `make install`).
# Environment: CT_FILTER=REGEX runs only the lines whose "test spec" matches; SQLALLOC_CT_VERBOSE=1
# makes the programs print what they measured.
set -u
BIN=${1:?usage: run.sh BIN_DIR [pkgconfig]}
WITH_PC=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)

# Every backend, with heaps large enough for the 100k-row workload (memsys5 rounds each request up
# to a power of two, so it needs about twice the bytes).
BACKENDS="system debug memsys3:heap=64M memsys5:heap=128M,min=32 tlsf:heap=64M system+limit:max=1G"
LIMIT_BASES="system debug memsys3:heap=64M memsys5:heap=128M,min=32 tlsf:heap=64M"

pass=0
fail=0
failed=""
LOG=$(mktemp "${TMPDIR:-/tmp}/sqlalloc-ctest-log.XXXXXX")
trap 'rm -f "$LOG"' EXIT

now() { date +%s.%N; }

# run NAME SPEC-LABEL CMD...
run() {
    name=$1
    label=$2
    shift 2
    if [ -n "${CT_FILTER:-}" ] && ! printf '%s %s\n' "$name" "$label" | grep -Eq -- "$CT_FILTER"; then
        return 0
    fi
    t0=$(now)
    "$@" >"$LOG" 2>&1
    rc=$?
    t1=$(now)
    secs=$(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }')
    if [ $rc -eq 0 ]; then
        printf 'PASS  %-14s %-34s %5ss\n' "$name" "$label" "$secs"
        pass=$((pass + 1))
    else
        printf 'FAIL  %-14s %-34s %5ss  (exit %s)\n' "$name" "$label" "$secs" "$rc"
        # The programs' own FAIL lines say what failed; show them (or the tail of the output).
        if grep -q '^FAIL ' "$LOG"; then grep '^FAIL ' "$LOG" | head -5 | sed 's/^/      /'; else tail -5 "$LOG" | sed 's/^/      /'; fi
        fail=$((fail + 1))
        failed="$failed
  $name $label"
    fi
    if [ -n "${SQLALLOC_CT_VERBOSE:-}" ]; then grep -v '^FAIL ' "$LOG" | sed 's/^/      /'; fi
}

for b in $BACKENDS; do run workload "$b" "$BIN/t_workload" "$b"; done
# One process through every backend: sqlite3_shutdown() and a new install between them.
run reinstall "all (shutdown+install)" "$BIN/t_workload" -n 20000 $BACKENDS
for b in $BACKENDS memsys5:heap=128M,min=32,shards=2 tlsf:heap=64M,shards=2; do run threads "$b" "$BIN/t_threads" "$b"; done
for b in $BACKENDS; do run heaplimit "$b" "$BIN/t_heaplimit" "$b"; done
for b in $LIMIT_BASES; do run limit "$b+limit:max=4M" "$BIN/t_limit" "$b"; done
run nomem "memsys5:heap=1M,min=64" "$BIN/t_nomem" "memsys5:heap=1M,min=64" "memsys5:heap=16K"
run nomem "memsys3:heap=1M" "$BIN/t_nomem" "memsys3:heap=1M" "memsys3:heap=16K"
run nomem "tlsf:heap=1M" "$BIN/t_nomem" "tlsf:heap=1M" "tlsf:heap=16K"
run debug-overrun debug "$BIN/t_debug" overrun
run debug-leak "debug:backtrace=8" "$BIN/t_debug" leak
run misuse "system, memsys5:heap=8M" "$BIN/t_misuse"
run badspec "-" "$BIN/t_badspec"
run serve "memsys5:heap=16M" "$BIN/t_serve"
run track "system" "$BIN/t_track"
for b in system+scopes memsys5:heap=128M,min=32+scopes memsys3:heap=64M+scopes tlsf:heap=64M+scopes debug+scopes; do
    run scopes "$b" "$BIN/t_scopes" "$b"
done
if [ "$WITH_PC" = pkgconfig ]; then run pkgconfig "-" sh "$HERE/t_pkgconfig.sh"; fi

echo "c-tests: $pass passed, $fail failed"
if [ $fail -ne 0 ]; then
    echo "failed:$failed"
    exit 1
fi
exit 0

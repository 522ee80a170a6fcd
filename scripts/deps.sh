#!/bin/sh
# Install what a make target needs and this machine lacks, and nothing else.
#
#   scripts/deps.sh demo    what `make demo` needs (a C compiler, SQLite's headers and library)
#   scripts/deps.sh test    what `make test` needs (demo's, plus the tools of every suite)
#
# Debian and Ubuntu only (apt-get and dpkg). Each package is checked with dpkg first; when all are
# there, nothing runs and nothing is printed. Otherwise `apt-get update` (once) and
# `apt-get install --no-install-recommends` of the missing ones, with sudo when not root. When
# they cannot be installed, one line names them and the exit status is 1. The Rust components the
# lint step needs (clippy, rustfmt) are added with rustup when missing.
#
# Optional tools are not installed here: the nightly toolchain (Miri, the ASan pool test) and
# cargo-fuzz; the targets that use them say SKIPPED with the command that installs them.
set -u
what=${1:-test}

# Package: why it is needed (shown when it is installed).
demo_pkgs="gcc:C compiler for the C tests and the demo
libc6-dev:C library headers
libsqlite3-dev:SQLite's headers and library (3.40.1 on Debian 12), which sqlalloc configures
pkg-config:the README's build line and the installed sqlalloc.pc"
test_pkgs="sqlite3:the sqlite3 shell run under the preload library
tcl8.6-dev:SQLite's TCL test suites (testfixture is built against Tcl)
valgrind:memcheck runs of the C tests, callgrind for the benchmark smoke run
python3:the benchmark driver and the Python program run under the preload library
libjemalloc2:jemalloc as an LD_PRELOAD baseline in the benchmark smoke run
libmimalloc2.0:mimalloc as an LD_PRELOAD baseline in the benchmark smoke run
xz-utils:unpacking SQLite's source tarball for the TCL suites and the benchmarks
prometheus:promtool, which checks every Prometheus exposition the tests make (endpoint, files)
curl:the HTTP client that scrapes the endpoint in the tests
time:GNU time, the peak RSS of speedtest1 in the benchmarks"

case "$what" in
demo) list=$demo_pkgs ;;
test) list="$demo_pkgs
$test_pkgs" ;;
*) echo "deps: unknown target '$what' (use demo or test)" >&2; exit 2 ;;
esac

missing=
why=
nl='
'
oldifs=$IFS
IFS=$nl
for entry in $list; do
    pkg=${entry%%:*}
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && continue
    missing="$missing $pkg"
    why="$why  $pkg: ${entry#*:}$nl"
done
IFS=$oldifs

if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
        echo "deps: cannot install$missing: this is not a Debian or Ubuntu system (no apt-get); install them by hand" >&2
        exit 1
    fi
    if [ "$(id -u)" = 0 ]; then
        sudo=
    elif command -v sudo >/dev/null 2>&1; then
        sudo=sudo
    else
        echo "deps: cannot install$missing: not root and sudo is not installed" >&2
        exit 1
    fi
    echo "deps: installing$missing (for make $what):"
    printf '%s' "$why"
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get update -q; then
        echo "deps: cannot install$missing: apt-get update failed" >&2
        exit 1
    fi
    # shellcheck disable=SC2086
    if ! $sudo apt-get install -y -q --no-install-recommends $missing; then
        echo "deps: cannot install$missing: apt-get install failed" >&2
        exit 1
    fi
fi

# The lint step (cargo fmt, cargo clippy) needs these rustup components.
if [ "$what" = test ] && command -v rustup >/dev/null 2>&1; then
    for c in clippy rustfmt; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
            echo "deps: adding the rustup component $c (for make lint)"
            rustup component add "$c" || { echo "deps: cannot add the rustup component $c" >&2; exit 1; }
        fi
    done
fi
exit 0

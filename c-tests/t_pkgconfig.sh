#!/bin/sh
# `make install PREFIX=<temp dir>`, then build c-tests/pc_user.c with nothing but the flags
# pkg-config gives for the installed sqlalloc.pc (PKG_CONFIG_PATH pointing there):
#  - shared: `pkg-config --cflags --libs sqlalloc` (+ -lsqlite3), run with LD_LIBRARY_PATH, and
#    check with ldd that it used the installed libsqlalloc.so;
#  - static: `pkg-config --static --libs sqlalloc` with -lsqlalloc taken as libsqlalloc.a, which
#    checks that Libs.private and Requires.private are enough to link the static library.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sqlalloc-pc.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL pkgconfig: $*"; exit 1; }
P="$TMP/prefix"

${MAKE:-make} --no-print-directory -C "$ROOT" install PREFIX="$P" >"$TMP/install.log" 2>&1 ||
    { tail -5 "$TMP/install.log"; fail "make install PREFIX=$P failed"; }
for f in lib/libsqlalloc.a lib/libsqlalloc.so include/sqlalloc.h lib/pkgconfig/sqlalloc.pc; do
    [ -f "$P/$f" ] || fail "make install did not install $f"
done
cmp -s "$ROOT/include/sqlalloc.h" "$P/include/sqlalloc.h" || fail "installed sqlalloc.h differs"

export PKG_CONFIG_PATH="$P/lib/pkgconfig"
pkg-config --exists --print-errors sqlalloc || fail "pkg-config does not find sqlalloc"
want=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
got=$(pkg-config --modversion sqlalloc)
[ "$got" = "$want" ] || fail "pkg-config version is '$got', Cargo.toml says '$want'"
cflags=$(pkg-config --cflags sqlalloc) || fail "pkg-config --cflags"
libs=$(pkg-config --libs sqlalloc) || fail "pkg-config --libs"
static=$(pkg-config --static --libs sqlalloc) || fail "pkg-config --static --libs"
case " $cflags " in *" -I$P/include "*) ;; *) fail "--cflags is '$cflags'" ;; esac
case " $libs " in *" -lsqlalloc "*) ;; *) fail "--libs is '$libs'" ;; esac
case " $static " in *" -lsqlite3 "*) ;; *) fail "--static --libs lacks -lsqlite3: '$static'" ;; esac

CCMD="${CC:-cc} -std=c11 -Wall -Wextra -Werror"
# shellcheck disable=SC2086
$CCMD $cflags -o "$TMP/user_shared" "$ROOT/c-tests/pc_user.c" $libs -lsqlite3 ||
    fail "compiling against the installed shared library failed"
LD_LIBRARY_PATH="$P/lib" ldd "$TMP/user_shared" | grep -q "$P/lib/libsqlalloc.so" ||
    fail "the program does not load $P/lib/libsqlalloc.so"
LD_LIBRARY_PATH="$P/lib" "$TMP/user_shared" "system" || fail "shared program failed"

static_a=$(echo "$static" | sed 's/-lsqlalloc/-l:libsqlalloc.a/')
# shellcheck disable=SC2086
$CCMD $cflags -o "$TMP/user_static" "$ROOT/c-tests/pc_user.c" $static_a ||
    fail "static link with pkg-config --static --libs failed"
ldd "$TMP/user_static" | grep -q libsqlalloc && fail "static program still loads libsqlalloc.so"
"$TMP/user_static" "system+limit:max=64M" || fail "static program failed"
exit 0

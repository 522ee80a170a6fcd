#!/usr/bin/env bash
# Fetch SQLite's 3.40.1 source tree from Debian's source package `sqlite3`, without touching the
# system's apt configuration, verify it against the .dsc checksums, and unpack upstream's tree.
#
# Usage: scripts/fetch-sqlite.sh CACHE_DIR
# Prints the path of the unpacked tree (CACHE_DIR/sqlite-src) on stdout; progress goes to stderr.
# Idempotent: a verified tree already in CACHE_DIR is reused.
set -euo pipefail
cache=${1:?usage: fetch-sqlite.sh CACHE_DIR}
want_version=3.40.1
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
tree="$cache/sqlite-src"
if [ -f "$tree/.sqlalloc-verified" ]; then echo "$tree"; exit 0; fi

apt="$cache/apt"
mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$cache/dl"
# Derive deb-src lines from the machine's own configuration (deb822 .sources files and/or the
# one-line sources.list), so no host name is written into the project.
: > "$apt/sources.list"
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  awk '
    function flush() { if (uris != "" && suites != "" && types ~ /deb/) {
        n = split(uris, U, " "); m = split(suites, S, " ");
        for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
          printf "deb-src %s%s %s %s\n", (key != "" ? "[signed-by=" key "] " : ""), U[i], S[j], comps }
      types = uris = suites = comps = key = "" }
    /^[[:space:]]*$/ { flush(); next }
    /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
    /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
    /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
    /^Signed-By:/ { sub(/^Signed-By:[[:space:]]*/, ""); key = $0 }
    /^Components:/ { sub(/^Components:[[:space:]]*/, ""); comps = $0 }
    END { flush() }' "$f" >> "$apt/sources.list"
done
if [ -f /etc/apt/sources.list ]; then
  sed -n 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?/deb-src /p' /etc/apt/sources.list >> "$apt/sources.list"
fi
[ -s "$apt/sources.list" ] || { echo "fetch-sqlite: no Debian archive found in the apt configuration" >&2; exit 1; }

opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt" -o "Dir::Cache::archives=$apt/archives"
      -o Debug::NoLocking=1)
echo "fetch-sqlite: apt-get update (private lists)" >&2
apt-get -q "${opts[@]}" update >&2
echo "fetch-sqlite: apt-get source --download-only sqlite3" >&2
(cd "$cache/dl" && apt-get -q "${opts[@]}" source --download-only "sqlite3" >&2)

dsc=$(ls "$cache"/dl/sqlite3_${want_version}-*.dsc 2>/dev/null | sort -V | tail -n 1)
[ -n "$dsc" ] || { echo "fetch-sqlite: no sqlite3_${want_version} .dsc downloaded (got: $(ls "$cache/dl"))" >&2; exit 1; }
# Verify every file the .dsc lists against its SHA-256.
(cd "$cache/dl" && awk '/^Checksums-Sha256:/ {on=1; next} /^[^ ]/ {on=0} on && NF==3 {print $1 "  " $3}' "$dsc" | sha256sum -c - >&2)
orig=$(ls "$cache"/dl/sqlite3_${want_version}.orig.tar.* | head -n 1)
rm -rf "$tree" "$cache/unpack"
mkdir -p "$cache/unpack"
tar -xf "$orig" -C "$cache/unpack"
top=$(ls "$cache/unpack")
mv "$cache/unpack/$top" "$tree"
rmdir "$cache/unpack"
[ "$(cat "$tree/VERSION")" = "$want_version" ] || { echo "fetch-sqlite: unexpected VERSION $(cat "$tree/VERSION")" >&2; exit 1; }
touch "$tree/.sqlalloc-verified"
echo "$tree"

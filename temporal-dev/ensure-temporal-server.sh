#!/usr/bin/env bash
# Prints where a production-mode Temporal Server of a pinned version is, one
# `key=value` a line on stdout (progress goes to stderr):
#   server=<path of temporal-server>
#   sql_tool=<path of temporal-sql-tool>
#   schema_dir=<schema/postgresql/v12 of the same version: temporal/ and visibility/>
#
# Built once from the Go module go.temporal.io/server and cached outside the
# clone in ${E2EPOOL_CACHE_DIR:-~/.cache/e2epool}/temporal-server-<version>/
# (the schemas are copied there too, so a cleaned Go module cache does not
# break a cached server). $TEMPORAL_SERVER_DIR points at a directory of that
# layout instead (e.g. a server installed by a package).
set -euo pipefail

# 1.29.2 or newer: security fixes over 1.29.1 (the dev server of CLI 1.5.1).
TEMPORAL_SERVER_VERSION=1.29.2
MODULE=go.temporal.io/server

cache_root=${E2EPOOL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/e2epool}
say() { printf 'temporal-server: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

report() {
  printf 'server=%s\nsql_tool=%s\nschema_dir=%s\n' \
    "$1/temporal-server" "$1/temporal-sql-tool" "$1/schema/postgresql/v12"
}
complete() {
  [ -x "$1/temporal-server" ] && [ -x "$1/temporal-sql-tool" ] \
    && [ -d "$1/schema/postgresql/v12/temporal/versioned" ] \
    && [ -d "$1/schema/postgresql/v12/visibility/versioned" ]
}

if [ -n "${TEMPORAL_SERVER_DIR:-}" ]; then
  complete "$TEMPORAL_SERVER_DIR" || die "\$TEMPORAL_SERVER_DIR=$TEMPORAL_SERVER_DIR lacks temporal-server, temporal-sql-tool or schema/postgresql/v12/{temporal,visibility}/versioned"
  report "$TEMPORAL_SERVER_DIR"
  exit 0
fi

dir="$cache_root/temporal-server-$TEMPORAL_SERVER_VERSION"
if complete "$dir"; then
  report "$dir"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  die "no cached Temporal Server $TEMPORAL_SERVER_VERSION in $dir and Go is not installed to build it.
  Install Go 1.25+ and run this again, or point \$TEMPORAL_SERVER_DIR at a directory with
  temporal-server, temporal-sql-tool and schema/postgresql/v12 of that version."
fi

mkdir -p "$dir"
# One build at a time per cache directory (two test runs may race).
exec 9>"$dir/.build.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
if complete "$dir"; then
  report "$dir"
  exit 0
fi

say "building Temporal Server $TEMPORAL_SERVER_VERSION from $MODULE (first time only; about 4 minutes)..."
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
# GOFLAGS from the environment could add -mod=vendor etc.; the build wants none.
# Built one after the other: two links at once need more memory than they save time.
for pkg in cmd/server cmd/tools/sql; do
  if ! GOFLAGS=-buildvcs=false GOBIN="$tmp/bin" go install "$MODULE/$pkg@v$TEMPORAL_SERVER_VERSION" >&2; then
    die "building $MODULE/$pkg failed (see above); set \$TEMPORAL_SERVER_DIR to a prebuilt server instead"
  fi
done

# The schemas of exactly this version, from the module the build just used.
mod_dir=$(GOFLAGS=-buildvcs=false go mod download -json "$MODULE@v$TEMPORAL_SERVER_VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [ -z "$mod_dir" ] || ! [ -d "$mod_dir/schema/postgresql/v12" ]; then
  die "go mod download gave no schema/postgresql/v12 for $MODULE@v$TEMPORAL_SERVER_VERSION (Dir: '${mod_dir}')"
fi
mkdir -p "$tmp/schema/postgresql"
cp -R "$mod_dir/schema/postgresql/v12" "$tmp/schema/postgresql/v12"
# The module cache is read-only; the copy must be removable with the cache dir.
chmod -R u+w "$tmp/schema"

rm -rf "$dir/schema"
mv "$tmp/schema" "$dir/schema"
mv -f "$tmp/bin/sql" "$dir/temporal-sql-tool"
mv -f "$tmp/bin/server" "$dir/temporal-server"
say "built Temporal Server $TEMPORAL_SERVER_VERSION in $dir in $(( $(date +%s) - start ))s"
report "$dir"

#!/usr/bin/env bash
# Prints the path of a usable `temporal` (or, with the argument `tctl`, `tctl`)
# binary on stdout; progress goes to stderr.
#
# Order: $TEMPORAL_BIN (or $TCTL_BIN) > a binary on PATH of an adequate
# version > a build from the Go module at a pinned version, cached outside the
# clone in ${E2EPOOL_CACHE_DIR:-~/.cache/e2epool}/<tool>-<version>/.
set -euo pipefail

TEMPORAL_CLI_VERSION=1.5.1   # carries Temporal Server 1.29.1 and UI 2.42.1
TCTL_VERSION=1.18.4
MIN_SERVER_MINOR=27          # update-with-start is on by default from server 1.26

tool=${1:-temporal}
cache_root=${E2EPOOL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/e2epool}
say() { printf 'temporal-dev: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

case "$tool" in
  temporal)
    override=${TEMPORAL_BIN:-}
    version=$TEMPORAL_CLI_VERSION
    pkg=github.com/temporalio/cli/cmd/temporal
    ldflags="-X github.com/temporalio/cli/temporalcli.Version=${version}"
    ;;
  tctl)
    override=${TCTL_BIN:-}
    version=$TCTL_VERSION
    pkg=github.com/temporalio/tctl/cmd/tctl
    ldflags=""
    ;;
  *) die "usage: $0 [temporal|tctl]" ;;
esac

if [ -n "$override" ]; then
  [ -x "$override" ] || die "\$${tool^^}_BIN=$override is not an executable file"
  printf '%s\n' "$override"
  exit 0
fi

# A temporal already on PATH is fine if its dev server is recent enough.
if [ "$tool" = temporal ] && on_path=$(command -v temporal 2>/dev/null); then
  v=$("$on_path" --version 2>/dev/null || true)
  if [[ $v =~ Server\ 1\.([0-9]+)\. ]] && [ "${BASH_REMATCH[1]}" -ge "$MIN_SERVER_MINOR" ]; then
    printf '%s\n' "$on_path"
    exit 0
  fi
  say "ignoring $on_path ($v): need Temporal Server 1.${MIN_SERVER_MINOR} or newer"
fi
if [ "$tool" = tctl ] && on_path=$(command -v tctl 2>/dev/null); then
  printf '%s\n' "$on_path"
  exit 0
fi

dir="$cache_root/$tool-$version"
bin="$dir/$tool"
if [ -x "$bin" ]; then
  printf '%s\n' "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  die "no '$tool' binary found and Go is not installed to build it.
  Install the Temporal CLI (https://docs.temporal.io/cli#install, e.g. 'brew install temporal')
  and put it on PATH, or point \$${tool^^}_BIN at it, or install Go 1.25+ and run this again."
fi

mkdir -p "$dir"
# One build at a time per cache directory (npm run dev and npm test may race).
lock="$dir/.build.lock"
exec 9>"$lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
if [ -x "$bin" ]; then
  printf '%s\n' "$bin"
  exit 0
fi

say "building $tool $version from $pkg (first time only; takes a few minutes)..."
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
# GOFLAGS from the environment could add -mod=vendor etc.; the build wants none.
if ! GOFLAGS=-buildvcs=false GOBIN="$tmp" go install ${ldflags:+-ldflags "$ldflags"} "$pkg@v$version" >&2; then
  die "building $tool failed (see above); set \$${tool^^}_BIN to an installed binary instead"
fi
mv -f "$tmp/$tool" "$bin"
say "built $bin in $(( $(date +%s) - start ))s"
printf '%s\n' "$bin"

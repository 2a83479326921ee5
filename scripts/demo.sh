#!/usr/bin/env bash
# The main job on an embedded default: build a small Go module through
# cacheprog with the `dir` remote store, wipe the local tier (as a fresh CI
# runner would have it), build again, and show the second build ran no
# compiler: everything came from the shared directory.
#
#   bash scripts/demo.sh                        # python -m cacheprog
#   CACHEPROG=/path/to/cacheprog bash scripts/demo.sh
#
# Needs go (with a C compiler: the module has a cgo package).  Nothing goes
# to the network.  Exits non-zero if the second build ran the compiler.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cacheprog="${CACHEPROG:-python -m cacheprog}"
# `python -m cacheprog` works from a checkout too, without `pip install -e`.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

command -v go >/dev/null || { echo "demo: the go command is not on PATH" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/cacheprog-demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -R "$repo/tests/e2e/testdata/app" "$work/app"
mkdir -p "$work/gocache" "$work/out"

# Hermetic go: its own (unused) GOCACHE, no network, no toolchain switch.
unset GOFLAGS GOCACHEPROG
export GOCACHE="$work/gocache" GOENV=off GOFLAGS=-mod=mod GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off \
  GOTELEMETRY=off GOWORK=off CGO_ENABLED=1
export GOCACHEPROG="$cacheprog --root-directory $work/local"
export CACHEPROG_REMOTE_STORAGE_TYPE=dir CACHEPROG_DIR_STORAGE_ROOT="$work/shared"

# go -x prints every tool it runs: "<GOTOOLDIR>/compile -o ...".
compiles() { grep -cE '(^|[[:space:]])[^[:space:]]*/compile(\.exe)?[[:space:]]+-' "$1" || true; }
stats() { grep -o 'cacheprog statistics"\? [^"]*' "$1" | tail -n 1 | sed 's/^cacheprog statistics"\? //'; }
field() { stats "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

build() { # build N
  local log="$work/build$1.log" start end
  start=$(date +%s.%N)
  if ! (cd "$work/app" && go build -x -o "$work/out/app$1" .) 2>"$log"; then
    echo "demo: build $1 did not succeed:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  printf 'build %s: %s compiler runs in %.1fs, app says: %s\n' "$1" "$(compiles "$log")" \
    "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$("$work/out/app$1" | tr '\n' ' ')"
}

echo "cacheprog: $cacheprog"
echo "go:        $(go version)"
echo "work dir:  $work (local tier: local/, dir store: shared/)"
echo
build 1
rm -rf "$work/local"
echo "wiped the local tier; the dir store holds $(find "$work/shared" -type f | wc -l) files"
build 2
echo
echo "build 1 stats: $(stats "$work/build1.log")"
echo "build 2 stats: $(stats "$work/build2.log")"
echo

runs=$(compiles "$work/build2.log")
hits=$(field "$work/build2.log" remote_hits)
echo "first build:  $(compiles "$work/build1.log") compiler runs, $(field "$work/build1.log" uploads) uploads to the dir store"
echo "second build: $runs compiler runs, ${hits:-0} remote hits"
if [ "$runs" -ne 0 ] || [ "${hits:-0}" -eq 0 ]; then
  echo "demo: FAILED: the second build did not come from the cache" >&2
  exit 1
fi
echo "demo: OK: the second build came from the dir store"

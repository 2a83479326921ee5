#!/usr/bin/env bash
# Install buildah for the image tier (tests/image) when it is missing and
# apt-get can install it (Debian/Ubuntu, as root): ~25 s.  Never fails the
# install: without buildah the image tests skip and say why.
set -uo pipefail
if command -v buildah >/dev/null 2>&1; then
    echo "install-buildah: $(command -v buildah) already present"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-buildah: SKIPPED (needs root and apt-get): the image tests will skip"
    exit 0
fi
start=$SECONDS
if timeout 600 apt-get install -y -qq --no-install-recommends buildah >/tmp/install-buildah.log 2>&1 \
    || { timeout 300 apt-get update -qq >>/tmp/install-buildah.log 2>&1 \
         && timeout 600 apt-get install -y -qq --no-install-recommends buildah >>/tmp/install-buildah.log 2>&1; }; then
    echo "install-buildah: $(command -v buildah) $((SECONDS - start))s ($(buildah --version))"
else
    tail -n 5 /tmp/install-buildah.log >&2
    echo "install-buildah: NOT INSTALLED (apt-get failed, see above): the image tests will skip"
fi
exit 0

"""
The environment of the go commands that tests and benchmarks start: the
caller's environment without anything of go's, cgo's, cacheprog's or AWS's
(a developer's GOFLAGS or AWS profile must not leak into a measurement or a
test), then go set up to build offline from a given GOCACHE.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Variables whose names start with one of these are the caller's
#: configuration of go, cgo, cacheprog or the AWS SDKs: never inherited.
DROPPED_PREFIXES = ("GO", "CGO_", "CACHEPROG_", "AWS_")
#: Whole names never inherited (PYTHONPATH is set to this checkout instead).
DROPPED_NAMES = frozenset({"PYTHONPATH"})
LOOPBACK = "127.0.0.1,localhost"


def clean_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    C{environ} (default: ours) without go's, cgo's, cacheprog's and AWS's
    variables, and with loopback exempt from any HTTP proxy.
    """
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if not k.startswith(DROPPED_PREFIXES) and k not in DROPPED_NAMES}
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(filter(None, (env.get(name, ""), LOOPBACK)))
    return env


def go_environ(
    gocache: str,
    *,
    goflags: str = "-mod=mod",
    environ: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """
    The clean environment of a go command that builds offline (no module
    proxy, no checksum database, no toolchain switch, no telemetry, no
    go.work, no go.env) with C{gocache}; a GOCACHEPROG program it starts
    imports cacheprog from this checkout first and never asks an instance
    metadata service.  C{extra} is added last (GOPATH, GOCACHEPROG, ...).
    """
    env = clean_environ(environ)
    source = os.environ if environ is None else environ
    pythonpath = source.get("PYTHONPATH", "")
    env.update(
        GOCACHE=gocache,
        GOENV="off",
        GOFLAGS=goflags,
        GOTOOLCHAIN="local",
        GOPROXY="off",
        GOSUMDB="off",
        GONOSUMDB="*",
        GOPRIVATE="*",
        GOTELEMETRY="off",
        GOWORK="off",
        GO111MODULE="on",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=REPO + (os.pathsep + pythonpath if pythonpath else ""),
    )
    env.update(extra)
    return env

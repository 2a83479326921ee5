# -*- test-case-name: tests.unit.test_runkey -*-
"""
The run key: what names "the same go command again" between two CI runs of
one job step, so its manifest is found without configuration.

By default it is the SHA-256 of: the parent process's arguments (the go
command, or golangci-lint, that started us), its executable (the
toolchain), the module root (the nearest directory with a C{go.mod} above
the working directory, else the working directory), GOOS/GOARCH, GOFLAGS
and GOTOOLCHAIN.  C{go build ./...} and C{go test ./...} of one job get
different keys; the same step of the next pipeline gets the same one.
C{--manifest-key} replaces all of it with a name the user chooses (to share
one manifest between commands, or to separate runs further).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping

#: Manifest keys are hex SHA-256: safe in every store's names.
KEY_VERSION = 1


def describe(environ: Mapping[str, str], ppid: int | None = None, cwd: str | None = None) -> dict[str, object]:
    """
    What goes into the default run key (also logged at DEBUG).
    """
    from cacheprog.remote.s3config import go_arch, go_os

    parent = starter(environ, os.getppid() if ppid is None else ppid)
    directory = os.getcwd() if cwd is None else cwd
    return {
        "command": _command_line(parent),
        "toolchain": _executable(parent),
        "module": module_root(directory),
        "goos": environ.get("GOOS") or go_os(),
        "goarch": environ.get("GOARCH") or go_arch(),
        "goflags": environ.get("GOFLAGS", ""),
        "gotoolchain": environ.get("GOTOOLCHAIN", ""),
    }


def run_key(description: Mapping[str, object] | None = None, override: str = "") -> str:
    """
    The key: the hex SHA-256 of the override if given, else of the description.
    """
    if override:
        text = json.dumps({"v": KEY_VERSION, "key": override})
    else:
        text = json.dumps({"v": KEY_VERSION, **(description or {})}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def module_root(directory: str) -> str:
    """
    The nearest directory at or above C{directory} holding a C{go.mod}
    (or C{go.work}); C{directory} itself when there is none.
    """
    current = os.path.abspath(directory)
    while True:
        if os.path.exists(os.path.join(current, "go.mod")) or os.path.exists(os.path.join(current, "go.work")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return os.path.abspath(directory)
        current = parent


def starter(environ: Mapping[str, str], ppid: int) -> int:
    """
    The process that started cacheprog: the parent, or in the one-file
    binary (whose bootstrap runs the program as its child) the parent's
    parent.
    """
    if environ.get("NUITKA_ONEFILE_PARENT") != str(ppid):
        return ppid
    try:
        with open(f"/proc/{ppid}/stat", "rb") as f:
            stat = f.read()
        return int(stat.rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return ppid


def _command_line(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _executable(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""

# -*- test-case-name: tests.unit.test_files -*-
"""
Whole-file operations on the local disk that the local tier, the directory
store and the uploaders' registry share: atomic writes (a temp file in the
target's directory renamed into place), content hashes, quiet unlinks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from typing import IO


def file_digest(path: str) -> bytes:
    """
    SHA-256 of a file's content.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def write_atomic(directory: str, path: str, data: bytes) -> None:
    """
    Write C{data} to a temp file in C{directory} and rename it to C{path}:
    readers see the old file or the new one, never a part.
    """
    _replace_with(directory, path, lambda f: f.write(data))


def copy_atomic(directory: str, path: str, source: IO[bytes]) -> None:
    """
    L{write_atomic} from a file, copied in 1 MiB steps (never whole in memory).
    """
    import shutil  # only the directory store copies; start-up does not pay for it

    _replace_with(directory, path, lambda f: shutil.copyfileobj(source, f, 1 << 20))


def _replace_with(directory: str, path: str, fill: Callable[[IO[bytes]], object]) -> None:
    fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        unlink_quietly(temp)
        raise


def unlink_quietly(path: str) -> None:
    """
    Remove C{path} if it is there; a file already gone (or not ours to
    remove) is no trouble.
    """
    try:
        os.unlink(path)
    except OSError:
        pass

# -*- test-case-name: tests.unit.test_remote -*-
"""
The C{dir} backend's options, checked before the handshake (stdlib only):
the shared directory written and read, and read-only ones after it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from cacheprog import options as o
from cacheprog.config import Config, ConfigError


@dataclass(frozen=True)
class DirSettings:
    """
    The shared directory written and read, and more read-only ones after it.
    """

    kind: ClassVar[str] = "dir"
    root: str
    read_roots: tuple[str, ...] = ()

    def urls(self) -> tuple[str, ...]:
        return ()


def check_dir(config: Config) -> DirSettings:
    """
    Validate the C{dir} backend's options, creating the root.

    @raise ConfigError: naming the flag or variable at fault.
    """
    root = config[o.DIR_STORAGE_ROOT]
    if not root:
        raise ConfigError(
            "the dir remote storage needs a directory: set --dir-storage-root or CACHEPROG_DIR_STORAGE_ROOT"
        )
    try:
        make_root(root)
    except OSError as e:
        raise ConfigError(f"cannot use {config.source(o.DIR_STORAGE_ROOT)}={root!r}: {e}") from None
    read_roots = tuple(os.path.abspath(r) for r in config[o.DIR_READ_ROOTS] if r.strip())
    return DirSettings(os.path.abspath(root), read_roots)


def make_root(root: str) -> None:
    """
    Create C{root} if needed; refuse one we cannot write.

    @raise OSError: naming the directory.
    """
    os.makedirs(root, exist_ok=True)
    if not os.access(root, os.W_OK | os.X_OK):
        raise OSError(f"{root} is not writable")

# -*- test-case-name: tests.unit.test_plugin,tests.unit.test_readthrough,tests.unit.test_aws_conventions -*-
"""
From configuration to a remote store, in two steps: L{check} validates
everything a user can get wrong (cheap, before the handshake, imports
nothing heavy), L{build} makes the store (after the handshake).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cacheprog.config import Config, ConfigError


@dataclass(frozen=True)
class RemotePlan:
    """
    A validated remote-storage configuration.
    """

    kind: str
    options: dict[str, Any] = field(default_factory=dict)


def check(config: Config, environ: Mapping[str, str]) -> RemotePlan:
    """
    Validate the remote-storage options of C{config}.

    @raise ConfigError: naming the flag or variable at fault.
    """
    kind = config.text("remote-storage-type")
    if kind in ("disabled", "memory"):
        return RemotePlan(kind)
    if kind == "dir":
        root = config.text("dir-storage-root")
        if not root:
            raise ConfigError(
                "the dir remote storage needs a directory: set --dir-storage-root or CACHEPROG_DIR_STORAGE_ROOT"
            )
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot use {config.source('dir-storage-root')}={root!r}: {e}") from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise ConfigError(f"{config.source('dir-storage-root')}={root!r} is not writable")
        read_roots = [os.path.abspath(r) for r in config.items("dir-read-roots") if r.strip()]
        return RemotePlan(kind, {"root": os.path.abspath(root), "read_roots": read_roots})
    if kind == "s3":
        from cacheprog.remote.s3config import check_s3

        return RemotePlan(kind, check_s3(config, environ))
    if kind == "http":
        from cacheprog.remote.httpcontract import check_http_options

        return RemotePlan(kind, check_http_options(config))
    raise ConfigError(
        f"remote storage type {kind!r} ({config.source('remote-storage-type')}) is not available in this build yet"
    )


def build(plan: RemotePlan, reactor: Any, run_in_thread: Any) -> Any:
    """
    Make the store for a checked plan.  Heavy imports happen here.
    """
    if plan.kind == "dir":
        from cacheprog.remote.directory import DirectoryStore

        store = DirectoryStore(plan.options["root"], run_in_thread)
        store.probe()
        trusted = [DirectoryStore(r, run_in_thread) for r in plan.options.get("read_roots", [])]
        return _read_through(store, trusted)
    if plan.kind == "s3":
        from cacheprog.remote.s3 import build_s3_store

        s3 = build_s3_store(plan.options, reactor, run_in_thread)
        return _read_through(s3, [s3.sibling(p) for p in s3.settings.read_prefixes])
    if plan.kind == "http":
        from cacheprog.remote.http import build_http_store

        return build_http_store(plan.options, reactor)
    if plan.kind == "memory":
        from cacheprog.remote.memory import MemoryStore

        return MemoryStore()
    from cacheprog.remote.disabled import DisabledStore

    return DisabledStore()


def _read_through(store: Any, trusted: list[Any]) -> Any:
    """
    C{store}, reading C{trusted} stores after it when there are any.
    """
    if not trusted:
        return store
    from cacheprog.remote.readthrough import ReadThroughStore

    return ReadThroughStore(store, trusted)

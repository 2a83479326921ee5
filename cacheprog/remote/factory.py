# -*- test-case-name: tests.unit.test_plugin,tests.unit.test_readthrough,tests.unit.test_aws_conventions -*-
"""
From configuration to a remote store, in two steps: L{check} validates
everything a user can get wrong (cheap, before the handshake, imports
nothing heavy) into a typed plan, L{build} makes the store (after the
handshake).  Each backend checks its own options (C{check_dir},
C{check_s3}, C{check_http}).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from cacheprog import options as o
from cacheprog.config import Config, ConfigError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from cacheprog.interfaces import RemoteStore, ThreadRunner
    from cacheprog.remote.dirconfig import DirSettings
    from cacheprog.remote.httpconfig import HTTPSettings
    from cacheprog.remote.s3config import S3Settings


@dataclass(frozen=True)
class NoSettings:
    """
    A backend without options: C{disabled} or C{memory}.
    """

    kind: str = "disabled"

    def urls(self) -> tuple[str, ...]:
        return ()


#: A checked remote-storage configuration: which backend (C{kind}), its
#: settings, and the URLs it will contact (C{urls()}).
RemotePlan = Union[NoSettings, "DirSettings", "S3Settings", "HTTPSettings"]


def check(config: Config, environ: Mapping[str, str]) -> RemotePlan:
    """
    Validate the remote-storage options of C{config}.

    @raise ConfigError: naming the flag or variable at fault.
    """
    kind = config[o.REMOTE_STORAGE_TYPE]
    if kind in ("disabled", "memory"):
        return NoSettings(kind)
    # Only the chosen backend's checks are imported (start-up time).
    if kind == "dir":
        from cacheprog.remote.dirconfig import check_dir

        return check_dir(config)
    if kind == "s3":
        from cacheprog.remote.s3config import check_s3

        return check_s3(config, environ)
    if kind == "http":
        from cacheprog.remote.httpconfig import check_http

        return check_http(config)
    raise ConfigError(
        f"remote storage type {kind!r} ({config.source(o.REMOTE_STORAGE_TYPE)}) is not available in this build yet"
    )


def build(plan: RemotePlan, reactor: IReactorTime, run_in_thread: ThreadRunner) -> RemoteStore:
    """
    Make the store for a checked plan.  Heavy imports happen here.
    """
    from cacheprog.remote.dirconfig import DirSettings
    from cacheprog.remote.httpconfig import HTTPSettings
    from cacheprog.remote.s3config import S3Settings

    if isinstance(plan, DirSettings):
        from cacheprog.remote.directory import DirectoryStore

        store = DirectoryStore(plan.root, run_in_thread)
        return _read_through(store, [DirectoryStore(r, run_in_thread) for r in plan.read_roots])
    if isinstance(plan, S3Settings):
        from cacheprog.remote.s3 import build_s3_store

        s3 = build_s3_store(plan, reactor, run_in_thread)
        return _read_through(s3, [s3.sibling(p) for p in plan.read_prefixes])
    if isinstance(plan, HTTPSettings):
        from cacheprog.remote.http import build_http_store

        return build_http_store(plan, reactor)
    if plan.kind == "memory":
        from cacheprog.remote.memory import MemoryStore

        return MemoryStore()
    from cacheprog.remote.disabled import DisabledStore

    return DisabledStore()


def _read_through(store: RemoteStore, trusted: list[RemoteStore]) -> RemoteStore:
    """
    C{store}, reading C{trusted} stores after it when there are any.
    """
    if not trusted:
        return store
    from cacheprog.remote.readthrough import ReadThroughStore

    return ReadThroughStore(store, trusted)

# -*- test-case-name: tests.unit.test_settings -*-
"""
Typed, frozen settings per command, made from parsed options in one place:
L{direct}, L{proxy} and L{wait} (plus L{common} for every command).  Past
this module nothing reads an option; a bad value raises L{ConfigError}
naming the flag or variable at fault, before the handshake.

Cheap to import: standard library and the backends' option checks only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cacheprog import options as o
from cacheprog.config import Config, ConfigError, default_root
from cacheprog.remote.factory import RemotePlan, check

if TYPE_CHECKING:
    from cacheprog.proxy.access import Tokens


@dataclass(frozen=True)
class Common:
    """
    What every command has: logging and profiles.
    """

    log_level: int
    log_output: str
    cpu_profile: str
    mem_profile: str
    #: Go-runtime profiles asked for (no Python equivalent: a warning).
    go_profiles: tuple[str, ...] = ()
    #: VictoriaMetrics-style histograms in the series pushed or served.
    vm_histograms: bool = False


@dataclass(frozen=True)
class Remote:
    """
    The remote store and the circuit breaker around it.
    """

    plan: RemotePlan
    #: Consecutive errors before the store is switched off (<= 0: never).
    breaker_threshold: int = 10
    breaker_retry_after: float = 15.0

    @property
    def enabled(self) -> bool:
        return self.plan.kind != "disabled"


@dataclass(frozen=True)
class Transfers:
    """
    The core's limits (seconds; 0 = no limit, as in the Go reference).
    """

    get_timeout: float = 5.0
    put_timeout: float = 5.0
    max_background_wait: float = 10.0
    min_remote_put_size: int = 0
    max_concurrent_gets: int = 0
    max_concurrent_puts: int = 0
    remote_enabled: bool = True
    defer_uploads: bool = False


@dataclass(frozen=True)
class WarmStartSettings:
    manifest_key: str
    prefetch_wait: float
    write: bool


@dataclass(frozen=True)
class Push:
    """
    Where and how metrics are pushed at close.
    """

    endpoint: str
    method: str = "GET"
    labels: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Direct:
    """
    The GOCACHEPROG program's settings.

    @ivar root: the local tier (absolute); C{default_root} when not given.
    @ivar root_given: the root as the user gave it (C{""}: the default,
        which is created 0700).
    @ivar detached_drain_timeout: None when uploads drain attached.
    """

    common: Common
    remote: Remote
    transfers: Transfers
    root: str
    root_given: str
    disable_get: bool = False
    disable_put: bool = False
    presence_list_pages: int = 0
    detached_drain_timeout: float | None = None
    warm_start: WarmStartSettings | None = None
    push: Push | None = None


@dataclass(frozen=True)
class Proxy:
    """
    The sidecar proxy's settings.

    @ivar endpoint: a Twisted server endpoint string.
    """

    common: Common
    remote: Remote
    endpoint: str
    tokens: Tokens
    header_timeout: float = 30.0
    #: C{/metricsproxy}: where pushes are forwarded (None: not served).
    forward: Push | None = None


@dataclass(frozen=True)
class Wait:
    common: Common
    root: str
    timeout: float


def common(config: Config) -> Common:
    go_only = tuple(f"--{option.name}" for option in (o.TRACE_PROFILE, o.FGPROF) if config[option])
    return Common(
        log_level=config[o.LOG_LEVEL],
        log_output=config[o.LOG_OUTPUT],
        cpu_profile=config[o.CPU_PROFILE],
        mem_profile=config[o.MEM_PROFILE],
        go_profiles=go_only,
        vm_histograms=config[o.USE_VM_HISTOGRAMS],
    )


def remote(config: Config, environ: Mapping[str, str]) -> Remote:
    """
    @raise ConfigError: from the backend's checks.
    """
    return Remote(check(config, environ), config[o.MAX_CONSECUTIVE_ERRORS], config[o.RETRY_AFTER])


def local_root(config: Config) -> tuple[str, str]:
    """
    The local tier's absolute path, and the path as given (C{""}: none).
    """
    given = config[o.ROOT_DIRECTORY]
    return os.path.abspath(given or default_root()), given


def direct(config: Config, environ: Mapping[str, str]) -> Direct:
    """
    @raise ConfigError: naming the flag or variable at fault.
    """
    store = remote(config, environ)
    root, given = local_root(config)
    disable_get, disable_put = config[o.DISABLE_GET], config[o.DISABLE_PUT]
    warm = None
    if config[o.WARM_START] and not disable_get:
        warm = WarmStartSettings(config[o.MANIFEST_KEY], config[o.PREFETCH_WAIT], write=not disable_put)
    push = None
    if config[o.METRICS_PUSH_ENDPOINT]:
        push = Push(
            config[o.METRICS_PUSH_ENDPOINT],
            config[o.METRICS_PUSH_METHOD],
            config[o.METRICS_PUSH_EXTRA_LABELS],
            config[o.METRICS_PUSH_EXTRA_HEADERS],
        )
    transfers = Transfers(
        get_timeout=config[o.REMOTE_GET_TIMEOUT],
        put_timeout=config[o.REMOTE_PUT_TIMEOUT],
        max_background_wait=config[o.MAX_BACKGROUND_WAIT],
        min_remote_put_size=config[o.MIN_REMOTE_PUT_SIZE],
        max_concurrent_gets=config[o.MAX_CONCURRENT_REMOTE_GETS],
        max_concurrent_puts=config[o.MAX_CONCURRENT_REMOTE_PUTS],
        remote_enabled=store.enabled,
        defer_uploads=config[o.DEFER_UPLOADS],
    )
    return Direct(
        common(config),
        store,
        transfers,
        root,
        given,
        disable_get=disable_get,
        disable_put=disable_put,
        presence_list_pages=0 if disable_get else config[o.PRESENCE_LIST_PAGES],
        detached_drain_timeout=config[o.DETACHED_DRAIN_TIMEOUT] if config[o.DETACHED_DRAIN] else None,
        warm_start=warm,
        push=push,
    )


def proxy(config: Config, environ: Mapping[str, str]) -> Proxy:
    """
    @raise ConfigError: naming the flag, variable or token file at fault.
    """
    from cacheprog.proxy.access import TokenError, load_tokens
    from cacheprog.proxy.address import endpoint_description

    store = remote(config, environ)
    endpoint = endpoint_description(config[o.LISTEN_ADDRESS])
    try:
        tokens = load_tokens(config[o.PROXY_READ_TOKEN_FILE], config[o.PROXY_WRITE_TOKEN_FILE], environ)
    except TokenError as e:
        raise ConfigError(str(e)) from None
    forward = None
    if config[o.METRICS_PROXY_ENDPOINT]:
        forward = Push(
            config[o.METRICS_PROXY_ENDPOINT],
            labels=config[o.METRICS_PROXY_EXTRA_LABELS],
            headers=config[o.METRICS_PROXY_EXTRA_HEADERS],
        )
    return Proxy(common(config), store, endpoint, tokens, config[o.PROXY_HEADER_TIMEOUT], forward)


def wait(config: Config) -> Wait:
    return Wait(common(config), local_root(config)[0], config[o.WAIT_TIMEOUT])

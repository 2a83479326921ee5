# -*- test-case-name: tests.unit.test_http -*-
"""
The C{http} backend's options, checked before the handshake (stdlib only):
a base URL of a cacheprog proxy and the headers sent with every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

from cacheprog import options as o
from cacheprog.config import Config, ConfigError
from cacheprog.remote.httpcontract import header_problem


@dataclass(frozen=True)
class HTTPSettings:
    """
    Where the proxy is and what every request carries.
    """

    kind: ClassVar[str] = "http"
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)

    def urls(self) -> tuple[str, ...]:
        return (self.base_url,)


def check_http(config: Config) -> HTTPSettings:
    """
    Validate the C{http} backend's options.

    @raise ConfigError: naming the flag or variable at fault.
    """
    base_url = config[o.HTTP_STORAGE_BASE_URL]
    if not base_url:
        raise ConfigError(
            "the http remote storage needs a base URL: set --http-storage-base-url or CACHEPROG_HTTP_STORAGE_BASE_URL"
        )
    where = config.source(o.HTTP_STORAGE_BASE_URL)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"invalid value for {where}: unsupported scheme {parts.scheme!r} (use http or https)")
    if parts.fragment:
        raise ConfigError(f"invalid value for {where}: a URL fragment is not allowed")
    headers = config[o.HTTP_STORAGE_EXTRA_HEADERS]
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise ConfigError(f"invalid value for {config.source(o.HTTP_STORAGE_EXTRA_HEADERS)}: {problem}")
    return HTTPSettings(base_url, headers)

# -*- test-case-name: tests.unit.test_plugin -*-
"""
C{--listen-address}: the reference's C{host:port} and C{:port} (all IPv4
interfaces), C{[v6]:port}, or any Twisted server endpoint string
(C{tcp:8080:interface=127.0.0.1}, C{unix:/run/cacheprog.sock},
C{systemd:domain=INET:index=0}), passed as it is.  Stdlib only: checked
before anything starts.
"""

from __future__ import annotations

import re

from cacheprog.config import ConfigError

#: Pending connections the kernel queues for us (Twisted's default is 50;
#: a burst of new clients beyond that waits for SYN retransmissions).
BACKLOG = 1024
#: Endpoint types passed to Twisted as they are.
ENDPOINT_TYPES = ("tcp", "tcp6", "unix", "ssl", "systemd")
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^\[\]:]*):([0-9]{1,5})")


def endpoint_description(address: str) -> str:
    """
    The Twisted endpoint string for a C{--listen-address}.

    @raise ConfigError: for an address that is neither C{host:port} nor an
        endpoint string.
    """
    text = address.strip()
    kind = text.partition(":")[0].lower()
    if kind in ENDPOINT_TYPES and ":" in text:
        return text
    m = _HOST_PORT.fullmatch(text)
    if m is None or int(m.group(2)) > 65535:
        raise ConfigError(
            f"invalid listen address {address!r}: use host:port, :port or a Twisted endpoint such as tcp:8080"
        )
    host, port = m.group(1), int(m.group(2))
    if host.startswith("["):
        return f"tcp6:{port}:interface=" + host[1:-1].replace(":", "\\:") + f":backlog={BACKLOG}"
    if not host:
        return f"tcp:{port}:backlog={BACKLOG}"
    return f"tcp:{port}:interface={host}:backlog={BACKLOG}"


def loopback(endpoint: str) -> bool:
    """
    Whether a Twisted endpoint string listens on loopback (or a unix socket) only.
    """
    kind, _, rest = endpoint.partition(":")
    if kind == "unix":
        return True
    interface = re.search(r"interface=((?:\\:|[^:])*)", rest)
    host = interface.group(1).replace("\\:", ":") if interface else ""
    return host == "localhost" or host.startswith("127.") or host == "::1"

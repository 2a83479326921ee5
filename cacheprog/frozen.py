# -*- test-case-name: tests.unit.test_frozen -*-
"""
Start-up adjustments for the compiled binary (Nuitka, C{make binary});
nothing happens when cacheprog runs from source.

The binary ships botocore without its 400 service models (C{botocore/data/*/*},
26 MB): signing and credentials from the environment, files or the container
endpoint need none.  The models of the credential providers that call an AWS
service (STS for web identity and assume-role, SSO and SSO-OIDC) are shipped
in an own directory, C{awsdata/} next to the C{cacheprog} package inside the
binary (see C{build/nuitka.cfg}), and botocore finds them through
C{AWS_DATA_PATH}, which it reads when a session is created.

Cheap on purpose: it runs before the handshake.

The binary also carries its own glibc (see C{build/nuitka_onefile_cache.py}),
which reads the image's C{/etc/nsswitch.conf}; a scratch image has none, and
then glibc asks DNS before C{/etc/hosts}, even for "localhost" or a name the
container runtime wrote there.  L{resolve_hosts_first} restores "hosts:
files dns" for that case.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from typing import Any

#: The shipped models, relative to the directory holding the package.
DATA_DIRECTORY = "awsdata"


def is_compiled() -> bool:
    """
    Whether this module was compiled by Nuitka (it sets C{__compiled__} in
    the globals of every compiled module).
    """
    return "__compiled__" in globals()


def data_directory() -> str:
    """
    The directory of the shipped botocore models: C{<dist>/awsdata} for the
    package at C{<dist>/cacheprog}.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(package), DATA_DIRECTORY)


def add_data_path(environ: MutableMapping[str, str]) -> None:
    """
    Append the shipped models to C{AWS_DATA_PATH}: models a user points at
    still come first, botocore's own (top-level JSON only) come after.
    """
    ours = data_directory()
    current = environ.get("AWS_DATA_PATH", "")
    if ours in current.split(os.pathsep):
        return
    environ["AWS_DATA_PATH"] = current + os.pathsep + ours if current else ours


def prepare_frozen(environ: MutableMapping[str, str] | None = None) -> None:
    """
    Called by C{cacheprog/__main__.py} before anything else: in the binary,
    make botocore find the shipped models; from source, do nothing.
    """
    if is_compiled():
        add_data_path(os.environ if environ is None else environ)


def read_hosts(path: str = "/etc/hosts") -> dict[str, list[str]]:
    """
    Names (lower case) to addresses, from a hosts file; missing: empty.
    """
    table: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return table
    for line in lines:
        words = line.partition("#")[0].split()
        for name in words[1:]:
            table.setdefault(name.lower().rstrip("."), []).append(words[0])
    return table


def hosts_first(getaddrinfo: Callable[..., Any], hosts: dict[str, list[str]]) -> Callable[..., Any]:
    """
    C{getaddrinfo} that answers names listed in C{hosts} from there (as
    numeric addresses, no DNS) and asks C{getaddrinfo} for the rest.
    """
    import socket

    def lookup(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        addresses = hosts.get(host.lower().rstrip(".")) if isinstance(host, str) else None
        results: list[Any] = []
        for address in addresses or ():
            try:
                results += getaddrinfo(address, port, family, type, proto, flags | socket.AI_NUMERICHOST)
            except socket.gaierror:
                continue  # an IPv6 address for an IPv4-only question
        return results or getaddrinfo(host, port, family, type, proto, flags)

    return lookup


def resolve_hosts_first(nsswitch: str = "/etc/nsswitch.conf", hosts: str = "/etc/hosts") -> None:
    """
    In the binary, when the image has no C{nsswitch.conf}: look names up in
    C{/etc/hosts} before DNS.  Called before Twisted (which keeps its own
    reference to C{socket.getaddrinfo}) is imported.
    """
    if not is_compiled() or os.path.exists(nsswitch):
        return
    import socket

    socket.getaddrinfo = hosts_first(socket.getaddrinfo, read_hosts(hosts))

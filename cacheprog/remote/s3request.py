# -*- test-case-name: tests.unit.test_s3request -*-
"""
One S3 request as it goes out: signed with SigV4 for its region
(L{cacheprog.remote.sigv4.Signer}) and sent with the store's client.  Each
attempt (L{cacheprog.remote.s3retry.retried}) sends it anew: a fresh
signature and date, a file body rewound.

Headers named in C{--s3-exclude-headers-from-signing} are sent but left out
of the signature, as are those a proxy or the client may change on the way
(C{User-Agent}, C{Accept-Encoding}...: L{cacheprog.remote.sigv4}).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred

from cacheprog import __version__
from cacheprog.remote.sigv4 import Credentials, Signer

USER_AGENT = f"cacheprog/{__version__}"


class HTTPClient(Protocol):
    """
    What the store needs of its HTTP client: L{treq.client.HTTPClient} or
    L{treq.testing.StubTreq}.
    """

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Any = None,
        data: Any = None,
        unbuffered: bool = False,
        allow_redirects: bool = True,
    ) -> Deferred[Any]: ...


def target(url: str) -> tuple[str, str, str]:
    """
    The C{Host} header, path and query of C{url} as they are sent: Twisted
    leaves the default port out of the C{Host} header.
    """
    parts = urlsplit(url)
    host = parts.netloc
    default_port = ":443" if parts.scheme == "https" else ":80"
    if host.endswith(default_port):
        host = host[: -len(default_port)]
    return host, parts.path, parts.query


@dataclass(frozen=True)
class SignedRequest:
    """
    A request to send, each call a new attempt: the response's Deferred, the
    body not read and redirects not followed.
    """

    client: HTTPClient
    signer: Signer
    method: str
    url: str
    headers: Mapping[str, str]
    data: bytes | IO[bytes] | None
    payload_sha256: str
    credentials: Credentials
    region: str

    def __call__(self) -> Deferred[Any]:
        host, path, query = target(self.url)
        sent = self.signer.sign(
            self.method, host, path, query, self.headers, self.payload_sha256, self.credentials, self.region
        )
        sent["User-Agent"] = USER_AGENT
        if self.data is not None and not isinstance(self.data, bytes):
            self.data.seek(0)  # a file body is read again by each attempt
        return self.client.request(
            self.method, self.url, headers=sent, data=self.data, unbuffered=True, allow_redirects=False
        )

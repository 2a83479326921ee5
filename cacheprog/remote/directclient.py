# -*- test-case-name: tests.unit.test_directclient -*-
"""
treq's C{request()} without treq, for stores that build their own URLs.

Per request, treq parses the URL with hyperlink, IDNA-encodes the host,
consults a cookie jar and wraps the response; Twisted's L{Agent} then makes
a new endpoint (IDNA again, and for https a new TLS client policy).  For
a store that talks to one host with ASCII URLs it builds itself, all of that
is the same every time: here the URL goes to the agent as bytes, the body
is written in one call, and endpoints are kept per (scheme, host, port).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from twisted.internet.defer import Deferred, succeed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer


@implementer(IBodyProducer)
class BytesProducer:
    """
    A request body already in memory, written in one call.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        if self._data:
            consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class CachedEndpoints:
    """
    An endpoint factory that makes each (scheme, host, port) endpoint once.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._endpoints: dict[tuple[bytes, bytes, int], Any] = {}

    def endpointForURI(self, uri: Any) -> Any:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._inner.endpointForURI(uri)
        return endpoint


class DirectClient:
    """
    The subset of L{treq.client.HTTPClient} the stores use, straight over an
    L{IAgent}.  Answers are Twisted's own L{IResponse}s (C{code},
    C{headers}, C{length}, C{deliverBody}).  Redirects are never followed.
    """

    def __init__(self, agent: Any) -> None:
        self._agent = agent

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | IO[bytes] | None = None,
        unbuffered: bool = True,
        allow_redirects: bool = False,
    ) -> Deferred[Any]:
        raw = Headers()
        for name, value in (headers or {}).items():
            raw.setRawHeaders(name, [value])
        body = _producer(data)
        result: Deferred[Any] = self._agent.request(method.encode("ascii"), url.encode("ascii"), raw, body)
        return result


def _producer(data: bytes | IO[bytes] | None) -> Any:
    """
    The body producer for C{data}: bytes in one write, a file (a big body
    the proxy received) read in steps from where it stands.
    """
    if data is None:
        return None
    if isinstance(data, bytes):
        return BytesProducer(data)
    from twisted.web.client import FileBodyProducer

    return FileBodyProducer(data)  # type: ignore[no-untyped-call]


def direct_agent(reactor: Any, pool: Any, connect_timeout: float | None) -> Any:
    """
    An L{Agent} over C{pool} whose endpoints are made once per host.
    """
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, _StandardEndpointFactory

    policy = BrowserLikePolicyForHTTPS()  # type: ignore[no-untyped-call]
    endpoints = _StandardEndpointFactory(reactor, policy, connect_timeout, None)  # type: ignore[no-untyped-call]
    return Agent.usingEndpointFactory(reactor, CachedEndpoints(endpoints), pool=pool)  # type: ignore[no-untyped-call]

# -*- test-case-name: tests.unit.test_pool -*-
"""
The one place HTTP clients are built (s3, http, the proxy's upstream, the
metrics push and the metrics proxy): a treq client over a connection pool,
with a connect timeout and a read timeout on every request, whatever the
callers' own time limits (C{--remote-get-timeout 0} must not mean "wait for
ever on a stuck server").

The read timeout bounds the wait for the response headers (plus the time a
request body needs at L{RATE_FLOOR}); L{cacheprog.remote.body.BodyStream}
applies the same timeout between body chunks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import attrs
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

#: Seconds to open a TCP (and TLS) connection.
CONNECT_TIMEOUT = 10.0
#: Seconds without an answer (headers, or the next body chunk).
READ_TIMEOUT = 30.0
#: Slowest upload accepted (bytes/s): a request body adds its size at this
#: rate to the wait for the answer.
RATE_FLOOR = 256 * 1024


class ResponseTimeout(ierror.TimeoutError):
    """
    The server did not answer within the read timeout.
    """


if TYPE_CHECKING:
    from treq.client import HTTPClient

#: What callers take as a client: ours, or treq's own (tests).
Requester = Union["TimedClient", "HTTPClient"]


@attrs.frozen
class Timeouts:
    """
    Connect and read timeouts (seconds; 0: none, only for tests).
    """

    connect: float = CONNECT_TIMEOUT
    read: float = READ_TIMEOUT


class TimedClient:
    """
    A treq-like client whose requests fail with L{ResponseTimeout} when no
    answer comes within the read timeout.  Cancelling a request cancels the
    request underneath (a cancel is never turned into a timeout).

    @ivar clock: for the timeouts (and for the body streams of its answers).
    @ivar timeouts: what the streams of its answers use too.
    """

    def __init__(self, inner: Any, clock: IReactorTime, timeouts: Timeouts = Timeouts()) -> None:
        self._inner = inner
        self.clock = clock
        self.timeouts = timeouts

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        inner: Deferred[Any] = self._inner.request(method, url, **kwargs)
        if self.timeouts.read <= 0:
            return inner
        return _with_timeout(inner, self.clock, self.timeouts.read + _length(kwargs.get("data")) / RATE_FLOOR)

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("GET", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("PUT", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("POST", url, **kwargs)


def _length(data: object) -> int:
    """
    The size of a request body: bytes, or a file (measured by seeking).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        return len(data)
    seek, tell = getattr(data, "seek", None), getattr(data, "tell", None)
    if seek is None or tell is None:
        return 0
    start = tell()
    end = seek(0, 2)
    seek(start)
    return int(end) - int(start)


def _with_timeout(inner: Deferred[Any], clock: IReactorTime, seconds: float) -> Deferred[Any]:
    timed_out = [False]

    def cancel(_: Deferred[Any]) -> None:
        inner.cancel()

    outer: Deferred[Any] = Deferred(cancel)

    def expire() -> None:
        timed_out[0] = True
        inner.cancel()

    timer = clock.callLater(seconds, expire)

    def settle(result: object) -> None:
        if timer.active():
            timer.cancel()
        if outer.called:
            return
        if timed_out[0] and isinstance(result, Failure):
            outer.errback(ResponseTimeout(f"no answer within {seconds:g}s"))  # type: ignore[no-untyped-call]
        elif isinstance(result, Failure):
            outer.errback(result)
        else:
            outer.callback(result)

    inner.addBoth(settle)
    return outer


def build_client(
    reactor: Any,
    *,
    persistent: bool = True,
    per_host: int = 16,
    idle_timeout: float = 90.0,
    timeouts: Timeouts = Timeouts(),
    direct: bool = False,
) -> tuple[TimedClient, Any]:
    """
    A client over a new pool, and the pool (close it with
    C{closeCachedConnections} when done).

    @param per_host: idle connections kept per host.
    @param idle_timeout: seconds an idle pooled connection is kept.
    @param direct: for callers that build plain ASCII URLs and read Twisted
        responses: skip treq (L{cacheprog.remote.directclient}).
    """
    from twisted.web.client import HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=persistent)  # type: ignore[no-untyped-call]
    pool.maxPersistentPerHost = per_host
    pool.cachedConnectionTimeout = idle_timeout  # type: ignore[assignment]
    connect = timeouts.connect or None
    if direct:
        from cacheprog.remote.directclient import DirectClient, direct_agent

        return TimedClient(DirectClient(direct_agent(reactor, pool, connect)), reactor, timeouts), pool
    from treq.client import HTTPClient
    from twisted.web.client import Agent

    agent = Agent(reactor, pool=pool, connectTimeout=connect)  # type: ignore[no-untyped-call]
    return TimedClient(HTTPClient(agent), reactor, timeouts), pool


def cancelled(error: BaseException) -> bool:
    """
    Whether a failed request was cancelled (Twisted reports a cancel as
    C{ResponseNeverReceived}/C{RequestTransmissionFailed} around a
    C{CancelledError}).
    """
    if isinstance(error, CancelledError):
        return True
    reasons = getattr(error, "reasons", None) or []
    return any(isinstance(reason.value, CancelledError) for reason in reasons)

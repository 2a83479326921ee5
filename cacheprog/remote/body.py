# -*- test-case-name: tests.unit.test_body -*-
"""
The one streamed response body every HTTP consumer reads (the s3 and http
backends, and through them the core and the proxy).

L{BodyStream} is an async iterator of chunks with an explicit L{aclose}:

 - reading from the connection pauses while more than C{high_water} bytes
   wait for the consumer, so memory stays bounded whatever the object size;
 - a consumer that waits longer than C{read_timeout} for the next chunk
   gets an error and the connection is dropped (a stuck server cannot hold
   a reader for ever; a slow consumer is never timed out);
 - L{aclose} (or cancelling a pending read, or dropping the stream) before
   the end B{aborts} the connection: C{stopProducing} only asks for a clean
   close, and a read already polled may then complete the response and hand
   a half-read connection back to the pool.

Every consumer calls L{aclose} in a C{finally}; it is a no-op after the end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

#: Bytes buffered before the connection is paused.
HIGH_WATER = 1 << 20
#: Error bodies are read up to this size; beyond it the connection is dropped.
SMALL_BODY_LIMIT = 64 * 1024


class BodyError(Exception):
    """
    A body broke off: the connection was lost, it was shorter than its
    Content-Length, it stalled, or it was abandoned.
    """


class BodyTimeout(BodyError):
    """
    No byte of the body arrived for the read timeout.
    """


def abort_transport(transport: Any) -> None:
    """
    Drop the TCP connection under a body transport (Twisted's body transport
    is a proxy whose C{_producer} is the TCP transport); C{stopProducing}
    when that cannot be reached.
    """
    if transport is None:
        return
    underlying = getattr(transport, "_producer", None)
    abort = getattr(underlying, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.stopProducing()


class _Receiver(Protocol):
    """
    Receives a response body (L{IResponse.deliverBody}); pauses the
    connection while C{high_water} bytes wait for the consumer.
    """

    def __init__(self, high_water: int) -> None:
        self.high_water = high_water
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.done = False
        self.error: Failure | None = None
        self.waiter: Deferred[None] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered >= self.high_water and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self.wake()

    def connectionLost(self, reason: Failure | None = None) -> None:
        from twisted.web.client import ResponseDone
        from twisted.web.http import PotentialDataLoss

        self.done = True
        if reason is not None and not reason.check(ResponseDone, PotentialDataLoss):  # type: ignore[no-untyped-call]
            self.error = reason
        self.wake()

    def wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.called:
            waiter.callback(None)

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.paused and not self.done and self.buffered < self.high_water // 2 and self.transport is not None:
            self.paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]
        return chunk

    def abort(self) -> None:
        """
        Drop the connection under an unfinished body, so it never goes back
        to the pool.
        """
        self.chunks.clear()
        self.buffered = 0
        if not self.done:
            abort_transport(self.transport)


def _body_error(message: str) -> Exception:
    return BodyError(message)


class BodyStream:
    """
    A streamed response body (see the module docstring).

    @param response: an L{IResponse} whose body is not read yet.
    @param clock: arms the read timeout (None: no read timeout).
    @param read_timeout: seconds a waiting reader accepts no byte (0: none).
    @param error: builds the exception a broken body raises (backends
        raise their own error types).
    """

    def __init__(
        self,
        response: Any,
        high_water: int = HIGH_WATER,
        *,
        clock: IReactorTime | None = None,
        read_timeout: float = 0.0,
        error: Callable[[str], Exception] = _body_error,
    ) -> None:
        self._protocol = _Receiver(high_water)
        self._clock = clock
        self._read_timeout = read_timeout
        self._error = error
        self._failure: Exception | None = None
        self._finished = False
        response.deliverBody(self._protocol)

    @property
    def protocol(self) -> _Receiver:
        return self._protocol

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        protocol = self._protocol
        while not protocol.chunks:
            if self._failure is not None:
                raise self._failure
            if protocol.done:
                self._finished = True
                if protocol.error is not None:
                    raise self._error(f"body interrupted: {protocol.error.getErrorMessage()}")
                raise StopAsyncIteration
            if self._finished:
                raise self._error("body abandoned")
            await self._wait()
        return protocol.take()

    async def _wait(self) -> None:
        waiter: Deferred[None] = Deferred(self._cancel)
        self._protocol.waiter = waiter
        timer = self._arm_timer()
        try:
            await waiter
        finally:
            if timer is not None and timer.active():
                timer.cancel()

    def _arm_timer(self) -> IDelayedCall | None:
        if self._clock is None or self._read_timeout <= 0:
            return None
        return self._clock.callLater(self._read_timeout, self._stalled)

    def _stalled(self) -> None:
        self._failure = BodyTimeout(f"no data for {self._read_timeout:g}s")
        self.close()
        self._protocol.wake()

    def _cancel(self, waiter: Deferred[None]) -> None:
        if self._protocol.waiter is waiter:
            self._protocol.waiter = None
        self.close()

    async def read(self) -> bytes:
        """
        The whole (rest of the) body.
        """
        try:
            return b"".join([chunk async for chunk in self])
        finally:
            self.close()

    async def read_limited(self, limit: int = SMALL_BODY_LIMIT) -> bytes:
        """
        Up to C{limit} bytes of a small body (an error document); the rest,
        if any, is dropped with the connection.  Never raises for the body.
        """
        data = bytearray()
        try:
            async for chunk in self:
                data += chunk
                if len(data) >= limit:
                    break
        except BodyError:
            pass
        finally:
            self.close()
        return bytes(data[:limit])

    def close(self) -> None:
        """
        Release the body: nothing if it was read to its end, else its
        connection is aborted.
        """
        if not self._finished:
            self._finished = True
            self._protocol.abort()

    async def aclose(self) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to report to at collection time
            pass


async def read_limited(
    response: Any,
    limit: int = SMALL_BODY_LIMIT,
    *,
    clock: IReactorTime | None = None,
    read_timeout: float = 0.0,
) -> bytes:
    """
    Up to C{limit} bytes of C{response}'s body; beyond that (or on a stall)
    the connection is dropped.  Never raises for the body.
    """
    return await BodyStream(response, limit, clock=clock, read_timeout=read_timeout).read_limited(limit)


async def discard(response: Any) -> None:
    """
    Release a body nobody will read: its connection is dropped.
    """
    await BodyStream(response).aclose()

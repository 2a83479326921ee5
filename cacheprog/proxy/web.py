# -*- test-case-name: tests.unit.test_storage,tests.unit.test_blobs -*-
"""
What the proxy's resources share of twisted.web: a typed request, Go-style
plain-text answers, L{JobResource} (a request answered by a coroutine that a
client going away cancels) and writing a body at the client's pace.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import IO, Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from cacheprog.log import Logger

_log = Logger("proxy")

#: Stored bodies are written to the client in pieces of at most this size.
WRITE_CHUNK = 256 * 1024


class WebRequest(Protocol):
    """
    What the resources use of a L{twisted.web.server.Request} (typed, unlike
    Twisted's own).
    """

    method: bytes
    uri: bytes
    postpath: list[bytes]
    content: IO[bytes]
    finished: int

    def getHeader(self, key: str | bytes) -> bytes | None: ...
    def setHeader(self, name: str | bytes, value: str | bytes) -> None: ...
    def setResponseCode(self, code: int) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def notifyFinish(self) -> Deferred[None]: ...
    def registerProducer(self, producer: object, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...


def plain(request: WebRequest, code: int, message: str = "") -> bytes:
    """
    Answer C{code} with a Go C{http.Error}-style text body (C{message} plus a
    newline, or nothing); returns the body for C{render}.
    """
    body = (message + "\n").encode("utf-8") if message else b""
    request.setResponseCode(code)
    if body:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def header(request: WebRequest, name: str) -> str | None:
    """
    A request header as text, or None.
    """
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def read_all(content: IO[bytes]) -> bytes:
    """
    A whole request body (its file is read from the start).
    """
    content.seek(0)
    return content.read()


def abort(request: WebRequest) -> None:
    """
    Drop C{request}'s connection: the client sees a broken response.
    """
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if transport is not None:
        transport.abortConnection()


@implementer(IPushProducer)
class Pacer:
    """
    Back-pressure for writing a response: the transport pauses us when its
    buffer is full.
    """

    def __init__(self) -> None:
        self._resumed: Deferred[None] | None = None
        self.stopped = False

    def pauseProducing(self) -> None:
        if self._resumed is None:
            self._resumed = Deferred()

    def resumeProducing(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()

    async def ready(self) -> None:
        if self._resumed is not None:
            await self._resumed


async def write_paced(request: WebRequest, pacer: Pacer, chunk: bytes) -> None:
    """
    Write C{chunk} in steps, each after the client took the one before.
    """
    for start in range(0, len(chunk), WRITE_CHUNK):
        if pacer.stopped:
            raise CancelledError()
        request.write(chunk[start : start + WRITE_CHUNK] if len(chunk) > WRITE_CHUNK else chunk)
        await pacer.ready()


class TypedResource(Resource):
    """
    L{Resource} with a typed constructor.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]


class JobResource(TypedResource):
    """
    A resource whose requests are answered by coroutines: a client that goes
    away cancels its own, and one that fails drops its connection.
    """

    def __init__(self) -> None:
        super().__init__()
        self._running: set[Deferred[None]] = set()

    def _start(self, request: WebRequest, job: Coroutine[Any, Any, None]) -> int:
        """
        Run C{job} for C{request}; a client that goes away cancels it.
        """
        d: Deferred[None] = Deferred.fromCoroutine(job)

        def done(result: object) -> None:
            self._running.discard(d)
            if isinstance(result, Failure) and not isinstance(result.value, CancelledError):
                _log.error("Storage request failed", uri=request.uri.decode("latin-1"), reason=repr(result.value))
                if not request.finished and not getattr(request, "_disconnected", False):
                    abort(request)

        if not d.called:
            self._running.add(d)
            request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addBoth(done)
        return NOT_DONE_YET

    def running(self) -> int:
        """
        How many store calls are in progress.
        """
        return len(self._running)

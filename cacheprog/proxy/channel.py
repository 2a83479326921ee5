# -*- test-case-name: tests.unit.test_channel -*-
"""
The proxy's HTTP connection: Twisted's L{HTTPChannel} with the limits a
server on a build network needs.

 - B{Header deadline}: a request's line and headers must be complete within
   L{GuardedChannel.header_timeout} of its first byte (or of the connection).
   The idle timer restarts with every byte, so a client trickling one byte
   a minute held a connection for ever; this deadline does not move.
 - B{Body rate floor}: a body must be complete within C{body_grace} plus its
   length at C{body_rate_floor} bytes/s, whatever it trickles.
 - B{Refusal from the headers}: the site's C{screen} (tokens, sizes, the
   storage headers) answers 4xx before any body byte is read, then the
   connection is closed (the body is not wanted).

Each expired deadline aborts the connection.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.web.http import RESPONSES, HTTPChannel

from cacheprog.log import Logger

_log = Logger("proxy")

#: Seconds from the first byte of a request (or the connection) to the end
#: of its headers.
HEADER_TIMEOUT = 30.0
#: Seconds any body gets on top of its length at the rate floor.
BODY_GRACE = 30.0
#: Slowest body accepted (bytes/s).
BODY_RATE_FLOOR = 64 * 1024
#: Seconds a refused client gets to read its answer before the close.
LINGER = 1.0


class GuardedChannel(HTTPChannel):
    """
    An L{HTTPChannel} with a header deadline, a body rate floor and refusal
    from the headers (see the module docstring).  Its site (C{self.site})
    may provide C{screen(method, path, headers, length)} returning None or
    (status, text), and C{channel_opened}/C{channel_closed}.
    """

    header_timeout = HEADER_TIMEOUT
    body_grace = BODY_GRACE
    body_rate_floor = BODY_RATE_FLOOR

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._deadline: IDelayedCall | None = None
        self._in_body = False
        self._refused = False

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._arm(self.header_timeout, "headers")
        opened = getattr(getattr(self, "site", None), "channel_opened", None)
        if opened is not None:
            opened(self)

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if self._deadline is None and not self._in_body and not self._handlingRequest:
            self._arm(self.header_timeout, "headers")
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        self._disarm()
        refusal = self._screen()
        if refusal is not None:
            self._refuse(*refusal)
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]
        if self.length:
            self._in_body = True
            self._arm(self.body_grace + (self.length or 0) / self.body_rate_floor, "body")

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._in_body = False
        self._disarm()
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Any = None) -> None:
        self._disarm()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        closed = getattr(getattr(self, "site", None), "channel_closed", None)
        if closed is not None:
            closed(self)

    def _screen(self) -> tuple[int, str] | None:
        screen = getattr(getattr(self, "site", None), "screen", None)
        if screen is None:
            return None
        request = self.requests[-1]
        result: tuple[int, str] | None = screen(self._command, self._path, request.requestHeaders, self.length)
        return result

    def _refuse(self, code: int, text: str) -> None:
        self._refused = True
        body = (text + "\n").encode("utf-8")
        reason = RESPONSES.get(code, b"Refused")
        head = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n" % (code, reason)
        head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        self.transport.write(head + body)  # type: ignore[union-attr]
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        # Read and drop what the client still sends for a moment, so it sees
        # the answer rather than a reset; then close.
        self._later(LINGER, self.loseConnection)

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self._later(seconds, self._expired, what)

    def _later(self, seconds: float, f: Any, *args: object) -> IDelayedCall:
        # The site's reactor (HTTPFactory.buildProtocol sets callLater).
        call: IDelayedCall = self.callLater(seconds, f, *args)  # type: ignore[no-untyped-call]
        return call

    def _disarm(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _expired(self, what: str) -> None:
        self._deadline = None
        peer = self.transport.getPeer() if self.transport is not None else None
        _log.warn("Client too slow, dropping its connection", deadline=what, peer=str(peer))
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

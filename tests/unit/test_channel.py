"""
Tests for L{cacheprog.proxy.channel.GuardedChannel} and the screening of
L{cacheprog.proxy.site.ProxySite}: deadlines a trickle cannot reset,
refusals before any body byte, a connection cap.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.compression import MAX_OBJECT
from cacheprog.interfaces import UploadObject
from cacheprog.proxy.access import Tokens
from cacheprog.proxy.channel import BODY_GRACE, BODY_RATE_FLOOR, HEADER_TIMEOUT
from cacheprog.proxy.site import build_site
from cacheprog.remote import httpcontract as contract
from cacheprog.remote.memory import MemoryStore

from .helpers import action
from .test_storage import put_headers

KEY = action(1).hex().encode()


def put_head(body: bytes, length: int | None = None, extra: dict[str, str] | None = None) -> bytes:
    override = {"Content-Length": str(len(body) if length is None else length), **(extra or {})}
    headers = put_headers(body, **override)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return b"PUT /cache/" + KEY + b" HTTP/1.1\r\nHost: p\r\n" + lines.encode() + b"\r\n"


class Recording(MemoryStore):
    """
    A memory store that keeps the upload objects it was given.
    """

    def __init__(self) -> None:
        super().__init__()
        self.uploads: list[UploadObject] = []

    async def put(self, obj: UploadObject) -> None:
        self.uploads.append(obj)
        await super().put(obj)


class ChannelTestsMixin:
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.store = Recording()
        self.site = build_site(self.store, reactor=self.reactor, tokens=self.tokens())

    def tokens(self) -> Tokens:
        return Tokens()

    def connect(self) -> tuple[Any, StringTransport]:
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        transport.abortConnection = lambda: setattr(transport, "aborted", True)  # type: ignore[method-assign]
        transport.aborted = False  # type: ignore[attr-defined]
        channel.makeConnection(transport)
        return channel, transport


class DeadlineTests(ChannelTestsMixin, SynchronousTestCase):
    def test_trickled_headers_dropped(self) -> None:
        """
        A client sending its request line a byte at a time (each byte resets
        the idle timer) is dropped at the header deadline.
        """
        channel, transport = self.connect()
        line = b"GET /health HTTP/1.1\r\n"
        for i in range(int(HEADER_TIMEOUT) - 1):
            channel.dataReceived(line[i % len(line) : i % len(line) + 1])
            self.reactor.advance(1)
        self.assertFalse(transport.aborted)  # type: ignore[attr-defined]
        self.reactor.advance(1)
        self.assertTrue(transport.aborted)  # type: ignore[attr-defined]

    def test_silent_connection_dropped(self) -> None:
        """
        A connection that never sends a request is dropped at the header deadline.
        """
        _, transport = self.connect()
        self.reactor.advance(HEADER_TIMEOUT)
        self.assertTrue(transport.aborted)  # type: ignore[attr-defined]

    def test_prompt_requests_kept(self) -> None:
        """
        Requests that arrive whole are answered, and the idle keep-alive
        connection is not dropped by the header deadline.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET /health HTTP/1.1\r\nHost: p\r\n\r\n")
        self.assertIn(b"200 OK", transport.value())
        self.reactor.advance(HEADER_TIMEOUT * 3)
        self.assertFalse(transport.aborted)  # type: ignore[attr-defined]

    def test_body_rate_floor(self) -> None:
        """
        A body trickled below the rate floor is dropped at its deadline
        (grace plus its length at the floor), however often bytes arrive.
        """
        body = b"x" * (10 * BODY_RATE_FLOOR)
        channel, transport = self.connect()
        channel.dataReceived(put_head(body))
        deadline = BODY_GRACE + len(body) / BODY_RATE_FLOOR
        for i in range(int(deadline) - 1):
            channel.dataReceived(body[i : i + 1])
            self.reactor.advance(1)
        self.assertFalse(transport.aborted)  # type: ignore[attr-defined]
        self.reactor.advance(2)
        self.assertTrue(transport.aborted)  # type: ignore[attr-defined]
        self.assertEqual(self.store.puts, 0)


class RefusalTests(ChannelTestsMixin, SynchronousTestCase):
    def assertRefusedEarly(self, head: bytes, code: int) -> bytes:
        """
        C{head} is answered C{code} at once, before any body byte, and the
        body that follows is neither read into the request nor stored.
        """
        channel, transport = self.connect()
        channel.dataReceived(head)
        answer: bytes = transport.value()
        self.assertRegex(answer, rb"^HTTP/1.1 %d " % code)
        self.assertIn(b"Connection: close", answer)
        channel.dataReceived(b"x" * 100_000)
        self.assertEqual(channel.requests[-1].content, None)
        self.reactor.advance(5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.store.puts, 0)
        return answer

    def test_too_big(self) -> None:
        self.assertRefusedEarly(put_head(b"b", length=MAX_OBJECT + 1), 413)

    def test_bad_headers(self) -> None:
        self.assertRefusedEarly(put_head(b"b", extra={contract.MD5_SUM: "zz"}), 400)

    def test_raw_body_not_its_output_id(self) -> None:
        """
        A raw body whose SHA-256 is not its OutputID would be a miss for
        every client: refused (it was stored).
        """
        answer = self.assertRefusedEarly(put_head(b"b", extra={contract.OUTPUT_ID: "ab" * 32}), 400)
        self.assertIn(b"OutputID", answer)

    def test_no_length(self) -> None:
        self.assertRefusedEarly(
            put_head(b"b", extra={"Content-Length": "<absent>", "Transfer-Encoding": "chunked"}), 411
        )

    def test_other_paths_capped(self) -> None:
        self.assertRefusedEarly(b"POST /metricsproxy HTTP/1.1\r\nHost: p\r\nContent-Length: 999999999\r\n\r\n", 413)

    def test_connection_cap(self) -> None:
        """
        Beyond C{max_connections} open connections, new ones are refused.
        """
        self.site.max_connections = 2
        self.connect()
        self.connect()
        self.assertIsNone(self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001)))
        self.assertEqual(self.site.connections, 2)

    def test_full_pauses_accepting(self) -> None:
        """
        With its listening port known, a full site stops accepting (clients
        wait in the backlog) and accepts again when a connection closes.
        """
        calls: list[str] = []

        class Port:
            def stopReading(self) -> None:
                calls.append("stop")

            def startReading(self) -> None:
                calls.append("start")

        self.site.max_connections = 1
        self.site.port = Port()
        channel, _ = self.connect()
        self.assertEqual(calls, ["stop"])
        channel.connectionLost(None)
        self.assertEqual(calls, ["stop", "start"])


class BigPutTests(ChannelTestsMixin, SynchronousTestCase):
    def test_big_body_stays_in_its_file(self) -> None:
        """
        A big PUT reaches the store as a file, not as bytes in memory.
        """
        body = b"y" * (2 << 20)
        channel, transport = self.connect()
        channel.dataReceived(put_head(body) + body)
        self.assertIn(b"200 OK", transport.value())
        (obj,) = self.store.uploads
        self.assertEqual(obj.data, b"")
        self.assertIsNotNone(obj.file)
        self.assertEqual(obj.stored_size, len(body))
        self.assertEqual(self.store.objects[action(1)].data, body)


class TokenTests(ChannelTestsMixin, SynchronousTestCase):
    def tokens(self) -> Tokens:
        return Tokens(read=b"reader", write=b"writer")

    def test_put_needs_write_token(self) -> None:
        """
        No token: 401; the read token or a wrong one: 403; both before the
        body.  The write token: stored.
        """
        body = b"poison"
        channel, transport = self.connect()
        channel.dataReceived(put_head(body))
        self.assertRegex(transport.value(), rb"^HTTP/1.1 401 ")
        for token in (b"reader", b"nope", b"writerX"):
            channel, transport = self.connect()
            channel.dataReceived(put_head(body, extra={"Authorization": f"Bearer {token.decode()}"}))
            self.assertRegex(transport.value(), rb"^HTTP/1.1 403 ")
        self.assertEqual(self.store.puts, 0)
        channel, transport = self.connect()
        channel.dataReceived(put_head(body, extra={"Authorization": "Bearer writer"}) + body)
        self.assertRegex(transport.value(), rb"^HTTP/1.1 200 ")
        self.assertEqual(self.store.puts, 1)

    def test_get_needs_read_token(self) -> None:
        """
        GET needs the read (or write) token; /health needs none.
        """
        get = b"GET /cache/" + KEY + b" HTTP/1.1\r\nHost: p\r\n"
        for auth, code in ((b"", 401), (b"Authorization: Bearer x\r\n", 403)):
            channel, transport = self.connect()
            channel.dataReceived(get + auth + b"\r\n")
            self.assertRegex(transport.value(), rb"^HTTP/1.1 %d " % code)
        for token in (b"reader", b"writer"):
            channel, transport = self.connect()
            channel.dataReceived(get + b"Authorization: Bearer " + token + b"\r\n\r\n")
            self.assertRegex(transport.value(), rb"^HTTP/1.1 404 ")
        channel, transport = self.connect()
        channel.dataReceived(b"GET /health HTTP/1.1\r\nHost: p\r\n\r\n")
        self.assertRegex(transport.value(), rb"^HTTP/1.1 200 ")

    def test_blobs_guarded_too(self) -> None:
        """
        Manifests and packs (C{/blob/...}) need the tokens as objects do.
        """
        for method, code in ((b"GET", 401), (b"PUT", 401)):
            channel, transport = self.connect()
            channel.dataReceived(method + b" /blob/manifests/v1/ab HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\n\r\n")
            self.assertRegex(transport.value(), rb"^HTTP/1.1 %d " % code)

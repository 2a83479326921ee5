"""
Tests for L{cacheprog.wire}: the decoder at every chunk boundary, errors, and
the response encoding.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.wire import (
    MAX_LINE,
    BodyChunk,
    BodyEnd,
    Event,
    ProtocolError,
    Request,
    RequestDecoder,
    Response,
    encode_response,
    handshake,
)

A1 = bytes(range(32))
O1 = bytes(range(1, 33))
BODY = b"hello, world: a body that is long enough to split"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def stream() -> bytes:
    """
    A realistic request stream as go writes it: get, put with a body, put
    without a body, close.
    """
    get = {"ID": 1, "Command": "get", "ActionID": _b64(A1)}
    put = {"ID": 2, "Command": "put", "ActionID": _b64(A1), "OutputID": _b64(O1), "BodySize": len(BODY)}
    empty = {"ID": 3, "Command": "put", "ActionID": _b64(O1), "OutputID": _b64(A1)}
    close = {"ID": 4, "Command": "close"}
    out = b""
    for req in (get, put):
        out += json.dumps(req).encode() + b"\n\n"
    out += b'"' + base64.b64encode(BODY) + b'"\n'
    for req in (empty, close):
        out += json.dumps(req).encode() + b"\n\n"
    return out


def collapse(events: list[Event]) -> list[object]:
    """
    Join consecutive body chunks so differently chunked feeds compare equal.
    """
    out: list[object] = []
    for e in events:
        if isinstance(e, BodyChunk) and out and isinstance(out[-1], bytes):
            out[-1] += e.data
        elif isinstance(e, BodyChunk):
            out.append(e.data)
        else:
            out.append(e)
    return out


EXPECTED = [
    Request(id=1, command="get", action_id=A1),
    Request(id=2, command="put", action_id=A1, output_id=O1, body_size=len(BODY)),
    base64.b64encode(BODY),
    BodyEnd(),
    Request(id=3, command="put", action_id=O1, output_id=A1),
    Request(id=4, command="close"),
]


class DecoderTests(SynchronousTestCase):
    def test_whole(self) -> None:
        """
        A stream fed at once decodes to its requests, body text and body end.
        """
        d = RequestDecoder()
        self.assertEqual(collapse(d.feed(stream())), EXPECTED)
        d.end()

    def test_every_split(self) -> None:
        """
        Splitting the stream in two at any byte gives the same events.
        """
        data = stream()
        for i in range(len(data) + 1):
            d = RequestDecoder()
            events = d.feed(data[:i]) + d.feed(data[i:])
            self.assertEqual(collapse(events), EXPECTED, f"split at {i}")

    def test_byte_at_a_time(self) -> None:
        """
        Feeding one byte at a time gives the same events.
        """
        d = RequestDecoder()
        events: list[Event] = []
        for i in range(len(stream())):
            events += d.feed(stream()[i : i + 1])
        self.assertEqual(collapse(events), EXPECTED)
        self.assertTrue(d.idle)

    def test_body_not_buffered(self) -> None:
        """
        Body text is handed on as it arrives, not held until the line ends.
        """
        d = RequestDecoder()
        head = json.dumps({"ID": 1, "Command": "put", "ActionID": _b64(A1), "BodySize": 3000}).encode()
        d.feed(head + b'\n\n"')
        events = d.feed(b"A" * 100)
        self.assertEqual(events, [BodyChunk(b"A" * 100)])

    def test_legacy_object_id(self) -> None:
        """
        The Go 1.21-1.23 name ObjectID is accepted for OutputID.
        """
        line = json.dumps({"ID": 7, "Command": "put", "ActionID": _b64(A1), "ObjectID": _b64(O1)}).encode()
        self.assertEqual(
            RequestDecoder().feed(line + b"\n\n"),
            [Request(id=7, command="put", action_id=A1, output_id=O1)],
        )

    def test_case_insensitive(self) -> None:
        """
        Field names match case-insensitively, as Go's decoder does.
        """
        line = b'{"id":5,"command":"get","actionid":"' + _b64(A1).encode() + b'"}\n'
        self.assertEqual(RequestDecoder().feed(line), [Request(id=5, command="get", action_id=A1)])

    def test_bad_json(self) -> None:
        """
        A line that is not JSON is a protocol error naming the problem.
        """
        e = self.assertRaises(ProtocolError, RequestDecoder().feed, b"hello\n")
        self.assertIn("unmarshal request", str(e))

    def test_missing_id(self) -> None:
        """
        A request without an integer ID cannot be answered: protocol error.
        """
        self.assertRaises(ProtocolError, RequestDecoder().feed, b'{"Command":"get"}\n')
        self.assertRaises(ProtocolError, RequestDecoder().feed, b'{"ID":"1","Command":"get"}\n')

    def test_bad_base64_id(self) -> None:
        """
        An ActionID that is not base64 is a protocol error.
        """
        self.assertRaises(ProtocolError, RequestDecoder().feed, b'{"ID":1,"Command":"get","ActionID":"!!"}\n')

    def test_body_not_quoted(self) -> None:
        """
        A body line that does not start with a quote is refused.
        """
        head = json.dumps({"ID": 1, "Command": "put", "ActionID": _b64(A1), "BodySize": 3}).encode()
        e = self.assertRaises(ProtocolError, RequestDecoder().feed, head + b"\n\nYWJj\n")
        self.assertIn("unexpected body begin", str(e))

    def test_body_too_short(self) -> None:
        """
        A body shorter than BodySize is refused.
        """
        head = json.dumps({"ID": 1, "Command": "put", "ActionID": _b64(A1), "BodySize": 6}).encode()
        e = self.assertRaises(ProtocolError, RequestDecoder().feed, head + b'\n\n"YWJj"\n')
        self.assertIn("unexpected body end", str(e))

    def test_body_too_long(self) -> None:
        """
        A body longer than BodySize is refused.
        """
        head = json.dumps({"ID": 1, "Command": "put", "ActionID": _b64(A1), "BodySize": 3}).encode()
        self.assertRaises(ProtocolError, RequestDecoder().feed, head + b'\n\n"YWJjZGVm"\n')

    def test_eof_inside_request(self) -> None:
        """
        Input that ends inside a request is an error at end; between requests it is not.
        """
        d = RequestDecoder()
        d.feed(b'{"ID":1,"Comm')
        self.assertRaises(ProtocolError, d.end)
        d = RequestDecoder()
        d.feed(b'{"ID":1,"Command":"close"}\n\n')
        d.end()


class LongLineTests(SynchronousTestCase):
    def test_header_line_capped(self) -> None:
        """
        A header line longer than L{MAX_LINE} without a newline is a protocol
        error as soon as the cap is passed, not after megabytes.
        """
        decoder = RequestDecoder()
        chunk = b"x" * 65536
        fed = 0
        with self.assertRaises(ProtocolError) as caught:
            for _ in range(256):  # 16 MiB in the reads go makes
                decoder.feed(chunk)
                fed += len(chunk)
        self.assertIn("longer than", str(caught.exception))
        self.assertLessEqual(fed, MAX_LINE + len(chunk))

    def test_long_line_with_newline(self) -> None:
        """
        A whole over-long line in one feed is refused too.
        """
        with self.assertRaises(ProtocolError):
            RequestDecoder().feed(b" " * (MAX_LINE + 1) + b"\n")

    def test_many_requests_in_one_feed(self) -> None:
        """
        Thousands of requests in one read decode without the buffer being
        copied per request (the offset moves; nothing is left buffered).
        """
        line = json.dumps({"ID": 1, "Command": "get", "ActionID": _b64(A1)}).encode() + b"\n\n"
        decoder = RequestDecoder()
        events = decoder.feed(line * 5000)
        self.assertEqual(len(events), 5000)
        self.assertEqual(decoder.buffered, 0)

    def test_error_events_not_shared(self) -> None:
        """
        Each L{ProtocolError} has its own list of events (it was a class
        attribute shared by all of them).
        """
        first, second = ProtocolError("a"), ProtocolError("b")
        first.events.append(BodyEnd())
        self.assertEqual(second.events, [])


class DecoderPropertyTests(SynchronousTestCase):
    """
    For any input: events or a L{ProtocolError}, never another exception,
    and bounded buffering (so linear work).
    """

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=300), max_size=20))
    def test_any_bytes(self, chunks: list[bytes]) -> None:
        decoder = RequestDecoder()
        try:
            for chunk in chunks:
                decoder.feed(chunk)
                self.assertLessEqual(decoder.buffered, MAX_LINE + len(chunk))
            decoder.end()
        except ProtocolError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_any_chunking_of_a_valid_stream(self, data: st.DataObject) -> None:
        """
        A valid stream gives the same events however it is cut, with noise
        bytes appended giving events or a protocol error.
        """
        raw = stream()
        cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))
        noise = data.draw(st.binary(max_size=50))
        decoder = RequestDecoder()
        events: list[Event] = []
        for start, stop in zip([0, *cuts], [*cuts, len(raw)], strict=True):
            events += decoder.feed(raw[start:stop])
        self.assertEqual(collapse(events), EXPECTED)
        try:
            decoder.feed(noise)
            decoder.end()
        except ProtocolError:
            pass


class EncodeTests(SynchronousTestCase):
    def test_handshake(self) -> None:
        """
        The handshake lists close, get and put, minus the disabled ones.
        """
        self.assertEqual(handshake(), b'{"ID":0,"KnownCommands":["close","get","put"]}\n')
        self.assertEqual(handshake(disable_get=True), b'{"ID":0,"KnownCommands":["close","put"]}\n')
        self.assertEqual(handshake(True, True), b'{"ID":0,"KnownCommands":["close"]}\n')

    def test_hit(self) -> None:
        """
        A hit carries OutputID (base64), Size, RFC 3339 Time and DiskPath, on one line.
        """
        when = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
        line = encode_response(Response(id=9, output_id=O1, size=5, time=when, disk_path="/x/y-data"))
        self.assertTrue(line.endswith(b"\n"))
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(
            json.loads(line),
            {"ID": 9, "OutputID": _b64(O1), "Size": 5, "Time": "2026-01-02T03:04:05.123456Z", "DiskPath": "/x/y-data"},
        )

    def test_omit_empty(self) -> None:
        """
        Empty fields are left out: a miss is just ID and Miss.
        """
        self.assertEqual(encode_response(Response(id=3, miss=True)), b'{"ID":3,"Miss":true}\n')
        self.assertEqual(encode_response(Response(id=4)), b'{"ID":4}\n')

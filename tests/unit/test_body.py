"""
Tests for L{cacheprog.remote.body}: the one streamed response body.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from cacheprog.remote.body import BodyError, BodyStream, BodyTimeout, read_limited


class TCP:
    """
    The TCP transport under Twisted's body transport.
    """

    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class BodyTransport:
    """
    Twisted's body transport: a producer proxy whose C{_producer} is the TCP
    transport; records what it is asked.
    """

    def __init__(self) -> None:
        self._producer = TCP()
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class Response:
    """
    A response whose body the test feeds through C{protocol}.
    """

    def __init__(self) -> None:
        self.transport = BodyTransport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.protocol.dataReceived(chunk)

    def end(self) -> None:
        self.protocol.connectionLost(Failure(ResponseDone()))


def next_chunk(stream: BodyStream) -> Deferred[bytes]:
    return Deferred.fromCoroutine(stream.__anext__())


class BodyStreamTests(SynchronousTestCase):
    def test_chunks_then_end(self) -> None:
        """
        Chunks come out in order; the end is C{StopAsyncIteration}; aclose
        after the end drops nothing.
        """
        response = Response()
        stream = BodyStream(response)
        response.feed(b"ab", b"cd")
        response.end()
        self.assertEqual(self.successResultOf(next_chunk(stream)), b"ab")
        self.assertEqual(self.successResultOf(next_chunk(stream)), b"cd")
        self.failureResultOf(next_chunk(stream), StopAsyncIteration)
        self.successResultOf(Deferred.fromCoroutine(stream.aclose()))
        self.assertFalse(response.transport._producer.aborted)
        self.assertEqual(response.transport.calls, [])

    def test_back_pressure(self) -> None:
        """
        Reading pauses above the high-water mark and resumes below half of it.
        """
        response = Response()
        stream = BodyStream(response, 10)
        response.feed(b"123456", b"7890ab")
        self.assertEqual(response.transport.calls, ["pause"])
        self.successResultOf(next_chunk(stream))
        self.assertEqual(response.transport.calls, ["pause"], "6 bytes still wait")
        response.feed(b"c")
        self.successResultOf(next_chunk(stream))
        self.assertEqual(response.transport.calls, ["pause", "resume"])

    def test_aclose_aborts(self) -> None:
        """
        Releasing an unfinished body aborts its TCP connection: a mere
        C{stopProducing} could let the half-read connection back into the pool.
        """
        response = Response()
        stream = BodyStream(response)
        response.feed(b"part")
        self.successResultOf(Deferred.fromCoroutine(stream.aclose()))
        self.assertTrue(response.transport._producer.aborted)
        self.assertNotIn("stop", response.transport.calls)
        self.failureResultOf(next_chunk(stream), BodyError)

    def test_cancel_pending_read(self) -> None:
        """
        Cancelling a read that waits aborts the connection.
        """
        response = Response()
        stream = BodyStream(response)
        d = next_chunk(stream)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(response.transport._producer.aborted)

    def test_broken(self) -> None:
        """
        A connection lost mid-body is the backend's error.
        """

        class Mine(Exception):
            pass

        response = Response()
        stream = BodyStream(response, error=Mine)
        response.protocol.connectionLost(Failure(ConnectionError("reset")))
        self.failureResultOf(next_chunk(stream), Mine)

    def test_read_timeout(self) -> None:
        """
        A reader that waits longer than the read timeout for a byte gets
        L{BodyTimeout}, and the connection is dropped.
        """
        clock = Clock()
        response = Response()
        stream = BodyStream(response, clock=clock, read_timeout=5)
        response.feed(b"x")
        self.successResultOf(next_chunk(stream))
        d = next_chunk(stream)
        clock.advance(4)
        response.feed(b"y")
        self.assertEqual(self.successResultOf(d), b"y", "each chunk restarts the timer")
        d = next_chunk(stream)
        clock.advance(5)
        self.failureResultOf(d, BodyTimeout)
        self.assertTrue(response.transport._producer.aborted)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_slow_reader_not_timed_out(self) -> None:
        """
        Time the consumer takes between reads never counts.
        """
        clock = Clock()
        response = Response()
        stream = BodyStream(response, clock=clock, read_timeout=5)
        response.feed(b"x", b"y")
        clock.advance(100)
        self.assertEqual(self.successResultOf(next_chunk(stream)), b"x")
        self.assertFalse(response.transport._producer.aborted)

    def test_read_limited(self) -> None:
        """
        A small body is read whole; a big one is cut at the limit and its
        connection dropped.
        """
        response = Response()
        d = Deferred.fromCoroutine(read_limited(response, 4))
        response.feed(b"ab")
        response.end()
        self.assertEqual(self.successResultOf(d), b"ab")
        self.assertFalse(response.transport._producer.aborted)
        response = Response()
        d = Deferred.fromCoroutine(read_limited(response, 4))
        response.feed(b"abc", b"def")
        self.assertEqual(self.successResultOf(d), b"abcd")
        self.assertTrue(response.transport._producer.aborted)

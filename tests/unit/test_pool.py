"""
Tests for L{cacheprog.remote.pool}: every HTTP client has connect and read
timeouts.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.remote.pool import RATE_FLOOR, ResponseTimeout, TimedClient, Timeouts, build_client


class Stuck:
    """
    A client whose requests never answer; records them.
    """

    def __init__(self) -> None:
        self.sent: list[Deferred[Any]] = []
        self.cancelled = 0

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        def cancel(_: Deferred[Any]) -> None:
            self.cancelled += 1

        d: Deferred[Any] = Deferred(cancel)
        self.sent.append(d)
        return d


class TimedClientTests(SynchronousTestCase):
    def test_read_timeout(self) -> None:
        """
        No answer within the read timeout: L{ResponseTimeout}, and the
        request underneath is cancelled.
        """
        clock, stuck = Clock(), Stuck()
        client = TimedClient(stuck, clock, Timeouts(read=30))
        d = client.request("GET", "http://127.0.0.1:1/x")
        clock.advance(29)
        self.assertNoResult(d)
        clock.advance(1)
        self.failureResultOf(d, ResponseTimeout)
        self.assertEqual(stuck.cancelled, 1)

    def test_answer_in_time(self) -> None:
        clock, stuck = Clock(), Stuck()
        client = TimedClient(stuck, clock, Timeouts(read=30))
        d = client.request("GET", "http://127.0.0.1:1/x")
        stuck.sent[0].callback("response")
        self.assertEqual(self.successResultOf(d), "response")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_is_not_a_timeout(self) -> None:
        """
        A caller's cancel stays a cancel.
        """
        clock, stuck = Clock(), Stuck()
        d = TimedClient(stuck, clock, Timeouts(read=30)).request("GET", "http://127.0.0.1:1/x")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(stuck.cancelled, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_upload_time(self) -> None:
        """
        A request body adds its size at the rate floor to the wait.
        """
        clock, stuck = Clock(), Stuck()
        client = TimedClient(stuck, clock, Timeouts(read=30))
        d = client.request("PUT", "http://127.0.0.1:1/x", data=b"x" * (10 * RATE_FLOOR))
        clock.advance(35)
        self.assertNoResult(d)
        clock.advance(5)
        self.failureResultOf(d, ResponseTimeout)


class BuildClientTests(SynchronousTestCase):
    def test_pool_and_timeouts(self) -> None:
        """
        The pool keeps C{per_host} idle connections; the agent has the
        connect timeout; the client the read timeout.
        """
        reactor = MemoryReactorClock()
        client, pool = build_client(reactor, per_host=7, timeouts=Timeouts(connect=3, read=9))
        self.assertEqual(pool.maxPersistentPerHost, 7)
        self.assertEqual(client.timeouts, Timeouts(connect=3, read=9))
        client.request("GET", "http://127.0.0.1:9/x")
        self.assertEqual(reactor.tcpClients[0][3], 3)


class DirectClientBodyTests(SynchronousTestCase):
    def test_file_body(self) -> None:
        """
        A file body (a big PUT the proxy received) goes out as a producer
        of its length, not through len() of bytes (which failed).
        """
        import io

        from cacheprog.remote.directclient import DirectClient

        sent: list[Any] = []

        class Agent:
            def request(self, method: bytes, uri: bytes, headers: Any, body: Any) -> Deferred[Any]:
                sent.append(body)
                return Deferred()

        data = io.BytesIO(b"x" * 1000)
        DirectClient(Agent()).request("PUT", "http://127.0.0.1:1/k", data=data)
        DirectClient(Agent()).request("PUT", "http://127.0.0.1:1/k", data=b"abc")
        self.assertEqual([body.length for body in sent], [1000, 3])

"""
Tests for L{cacheprog.remote.s3retry}: the store's requests tried again, and
cancelled.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.interfaces import NotFound
from cacheprog.remote.s3answers import S3Error
from cacheprog.remote.s3retry import Retries, Tracked, describe, retryable
from tests.unit.fakes3 import AID, HEX, FlakyClient, S3TestCase, upload


class RetryTests(S3TestCase):
    def test_500_then_success(self) -> None:
        store = self.make()
        self.put_raw(HEX, b"r", {"output_id": base64.b64encode(hashlib.sha256(b"r").digest()).decode()})
        self.fake.fail.extend([(500, "InternalError"), (503, "SlowDown")])
        d = self.start(store.get(AID))
        self.assertNoResult(d)
        self.clock.advance(0.05)
        self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.stub.flush()
        got = self.successResultOf(d)
        self.assertEqual(self.body(got), b"r")
        self.assertEqual(len(self.fake.requests), 3)
        self.assertNotEqual(self.fake.requests[0].headers["x-amz-date"], "")

    def test_gives_up(self) -> None:
        self.fake.fail.extend([(500, "InternalError")] * 6)
        d = self.start(self.make().put(upload(b"x")))
        for _ in range(6):
            self.clock.advance(1)
            self.stub.flush()
        failure = self.failureResultOf(d, S3Error)
        self.assertEqual(failure.value.status, 500)
        self.assertEqual(failure.value.code, "InternalError")
        # HEAD 3 times (its failure only means "upload"), then PUT 3 times.
        self.assertEqual([r.method for r in self.fake.requests], ["HEAD"] * 3 + ["PUT"] * 3)

    def test_429(self) -> None:
        self.fake.fail.append((429, "TooManyRequests"))
        d = self.start(self.make().get(AID))
        self.clock.advance(0.05)
        self.stub.flush()
        self.failureResultOf(d, NotFound)

    def test_no_retry_on_4xx(self) -> None:
        self.fake.fail.append((400, "InvalidArgument"))
        failure = self.failureResultOf(self.start(self.make().get(AID)), S3Error)
        self.assertEqual(failure.value.code, "InvalidArgument")
        self.assertEqual(len(self.fake.requests), 1)

    def test_connection_refused(self) -> None:
        client = FlakyClient(self.stub, 2, ConnectionRefusedError())
        d = self.start(self.make(client=client).get(AID))
        self.clock.advance(0.05)
        self.clock.advance(0.2)
        self.stub.flush()
        self.failureResultOf(d, NotFound)
        self.assertEqual(client.calls, 3)

    def test_connection_refused_gives_up(self) -> None:
        client = FlakyClient(self.stub, 10, ConnectionRefusedError())
        d = self.start(self.make(client=client).get(AID))
        self.clock.advance(0.05)
        self.clock.advance(0.2)
        failure = self.failureResultOf(d, S3Error)
        self.assertIn("ConnectionRefusedError", str(failure.value))
        self.assertEqual(client.calls, 3)


class CancelTests(S3TestCase):
    def test_cancel_in_flight(self) -> None:
        self.fake.hang = True
        d = self.start(self.make().get(AID))
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.stub.flush()
        self.assertEqual(len(self.fake.requests), 1, "no retry after a cancel")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_whatever_the_error(self) -> None:
        """
        A cancel that makes the request fail with something else (Twisted
        gives DNSLookupError while resolving, ResponseNeverReceived later)
        is still a cancel: no retry, CancelledError.
        """
        from twisted.internet.error import DNSLookupError

        pending: list[Deferred[Any]] = []

        class Client:
            def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
                d: Deferred[Any] = Deferred(lambda d: d.errback(DNSLookupError("cancelled lookup")))
                pending.append(d)
                return d

        d = self.start(self.make(client=Client()).get(AID))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(pending), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_during_backoff(self) -> None:
        self.fake.fail.append((500, "InternalError"))
        d = self.start(self.make().get(AID))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.fake.requests), 1)

    def test_cancel_with_timeout(self) -> None:
        """
        The core's way: addTimeout on the put's Deferred.
        """
        self.fake.hang = True
        d = self.start(self.make().put(upload(b"x")))
        d.addTimeout(5, self.clock)
        self.clock.advance(5)
        from twisted.internet.defer import TimeoutError as DeferredTimeout

        self.failureResultOf(d, DeferredTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PolicyTests(SynchronousTestCase):
    def test_retryable(self) -> None:
        """
        Connection trouble is tried again; a read timeout (the server sat
        on the request) and anything else are not.
        """
        from twisted.web.client import ResponseFailed

        from cacheprog.remote.pool import ResponseTimeout

        self.assertTrue(retryable(ConnectionRefusedError()))
        self.assertTrue(retryable(ResponseFailed([])))
        self.assertFalse(retryable(ResponseTimeout()))
        self.assertFalse(retryable(ValueError()))

    def test_describe(self) -> None:
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseFailed

        self.assertEqual(describe(ValueError("bad")), "ValueError: bad")
        reasons = [Failure(ConnectionRefusedError("refused"))]
        self.assertIn("ResponseFailed: Connection was refused", describe(ResponseFailed(reasons)))

    def test_delay(self) -> None:
        """
        The last backoff step repeats; each is jittered.
        """
        tries = Retries(5, (0.1, 0.4), lambda: 1.0)
        self.assertEqual([tries.delay(n) for n in range(4)], [0.1, 0.4, 0.4, 0.4])
        self.assertEqual(Retries(2, (0.1,), lambda: 0.0).delay(0), 0.05)

    def test_tracked_cancel(self) -> None:
        """
        A cancel is remembered whatever the request then fails with.
        """
        inner: Deferred[int] = Deferred(lambda d: d.errback(ValueError("not a CancelledError")))
        tracked = Tracked(inner)
        tracked.deferred.cancel()
        self.assertTrue(tracked.cancelled)
        self.failureResultOf(tracked.deferred)

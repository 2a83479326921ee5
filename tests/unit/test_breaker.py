"""
Tests for L{cacheprog.remote.breaker}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.interfaces import NotFound, RemoteObject, Unavailable, UploadObject
from cacheprog.remote.breaker import BreakerStore

from .helpers import action


class Flaky:
    """
    A store that fails (or misses) as told and counts calls.
    """

    name = "flaky"

    def __init__(self) -> None:
        self.calls = 0
        self.mode = "fail"

    async def get(self, action_id: bytes) -> RemoteObject:
        self.calls += 1
        if self.mode == "fail":
            raise ConnectionRefusedError("down")
        raise NotFound(action_id.hex())

    async def put(self, obj: UploadObject) -> None:
        self.calls += 1
        if self.mode == "fail":
            raise ConnectionRefusedError("down")

    async def close(self) -> None:
        return None


UPLOAD = UploadObject(action(1), b"o" * 32, 1, "", b"x", b"m" * 16, b"s" * 32)


class BreakerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.inner = Flaky()
        self.store = BreakerStore(self.inner, threshold=3, retry_after=15.0, clock=self.clock)

    def get(self) -> Any:
        return Deferred.fromCoroutine(self.store.get(action(1)))

    def trip(self) -> None:
        for _ in range(3):
            self.failureResultOf(self.get())
        self.assertTrue(self.store.gets.is_open)

    def test_trips_after_threshold(self) -> None:
        """
        The first threshold-1 failures pass through; the threshold-th trips
        the breaker; then no call reaches the store.
        """
        self.failureResultOf(self.get(), ConnectionRefusedError)
        self.failureResultOf(self.get(), ConnectionRefusedError)
        self.failureResultOf(self.get(), Unavailable)
        self.failureResultOf(self.get(), Unavailable)
        self.assertEqual(self.inner.calls, 3)

    def test_not_found_is_not_a_failure(self) -> None:
        """
        Misses neither count nor trip.
        """
        self.inner.mode = "miss"
        for _ in range(5):
            self.failureResultOf(self.get(), NotFound)
        self.assertFalse(self.store.gets.is_open)

    def test_probe_not_found_closes(self) -> None:
        """
        After retry-after one probe goes through; a "not found" answer proves
        the store is back (the reference kept the breaker open).
        """
        self.trip()
        self.clock.advance(15)
        self.inner.mode = "miss"
        self.failureResultOf(self.get(), NotFound)
        self.assertFalse(self.store.gets.is_open)

    def test_failed_probe_reopens(self) -> None:
        """
        A failed probe keeps it open for another retry-after.
        """
        self.trip()
        self.clock.advance(15)
        self.failureResultOf(self.get(), Unavailable)
        calls = self.inner.calls
        self.clock.advance(14)
        self.failureResultOf(self.get(), Unavailable)
        self.assertEqual(self.inner.calls, calls)

    def test_retry_after_zero_stays_open(self) -> None:
        """
        retry-after <= 0 keeps the store off for the rest of the run.
        """
        store = BreakerStore(self.inner, threshold=1, retry_after=0, clock=self.clock)
        self.failureResultOf(Deferred.fromCoroutine(store.get(action(1))), Unavailable)
        self.clock.advance(1e6)
        self.failureResultOf(Deferred.fromCoroutine(store.get(action(1))), Unavailable)
        self.assertEqual(self.inner.calls, 1)

    def test_puts_separate(self) -> None:
        """
        Failing uploads switch off uploads only; gets go on.
        """
        for _ in range(3):
            self.failureResultOf(Deferred.fromCoroutine(self.store.put(UPLOAD)))
        self.assertTrue(self.store.puts.is_open)
        self.assertFalse(self.store.gets.is_open)
        self.failureResultOf(Deferred.fromCoroutine(self.store.put(UPLOAD)), Unavailable)

    def test_success_resets(self) -> None:
        """
        A success in between resets the count.
        """
        self.failureResultOf(self.get(), ConnectionRefusedError)
        self.failureResultOf(self.get(), ConnectionRefusedError)
        self.inner.mode = "miss"
        self.failureResultOf(self.get(), NotFound)
        self.inner.mode = "fail"
        self.failureResultOf(self.get(), ConnectionRefusedError)
        self.failureResultOf(self.get(), ConnectionRefusedError)
        self.assertFalse(self.store.gets.is_open)

"""
Tests for L{cacheprog.remote.observing}: remote calls recorded as the reference's observer does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.cache import Cache
from cacheprog.interfaces import NotFound, RemoteObject, Unavailable, UploadObject
from cacheprog.local import DiskStore
from cacheprog.metrics import Metrics
from cacheprog.remote.memory import MemoryStore
from cacheprog.remote.observing import ObservingStore

from .helpers import action, output_of, store_object
from .test_metrics import series

UPLOAD = UploadObject(action(1), b"o" * 32, 10, "", b"0123456789", b"m" * 16, b"s" * 32)


class Failing:
    """
    A store whose calls fail with C{error}.
    """

    name = "failing"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def get(self, action_id: bytes) -> RemoteObject:
        raise self.error

    async def put(self, obj: UploadObject) -> None:
        raise self.error

    async def close(self) -> None:
        return None


class ObservingStoreTests(SynchronousTestCase):
    """
    L{ObservingStore} records remote calls as the reference's observer does.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.memory = MemoryStore()

    def observed(self, inner: Any) -> ObservingStore:
        return ObservingStore(inner, self.metrics, self.clock)

    def got(self) -> dict[str, str]:
        return series(self.metrics.render())

    def test_name(self) -> None:
        """
        The wrapper keeps the inner store's name.
        """
        self.assertEqual(self.observed(self.memory).name, "memory")

    def test_get_hit(self) -> None:
        """
        A hit counts one object of its stored size, and its duration.
        """
        store_object(self.memory, action(1), b"x" * 5000)
        stored = len(self.memory.objects[action(1)].data)
        d = Deferred.fromCoroutine(self.observed(self.memory).get(action(1)))
        self.assertEqual(self.successResultOf(d).stored_size, stored)
        got = self.got()
        rg = 'storage_type="remote",operation="get"'
        self.assertEqual(got[f"cacheprog_object_get_size_total{{{rg}}}"], "1")
        self.assertEqual(got[f"cacheprog_object_get_size_bytes_total{{{rg}}}"], str(stored))
        self.assertEqual(got[f"cacheprog_object_get_duration_seconds_count{{{rg}}}"], "1")

    def test_get_miss(self) -> None:
        """
        Not found: a remote miss (and the duration), still raised.
        """
        d = Deferred.fromCoroutine(self.observed(self.memory).get(action(1)))
        self.failureResultOf(d, NotFound)
        got = self.got()
        self.assertEqual(got['cacheprog_object_miss_total{storage_type="remote"}'], "1")
        self.assertEqual(got['cacheprog_object_get_duration_seconds_count{storage_type="remote",operation="get"}'], "1")

    def test_get_breaker_open(self) -> None:
        """
        Refused by an open breaker: a remote miss, no duration.
        """
        d = Deferred.fromCoroutine(self.observed(Failing(Unavailable("get"))).get(action(1)))
        self.failureResultOf(d, Unavailable)
        self.assertEqual(self.metrics.render(), 'cacheprog_object_miss_total{storage_type="remote"} 1\n')

    def test_get_error(self) -> None:
        """
        A failure: a storage error and the duration, still raised.
        """
        d = Deferred.fromCoroutine(self.observed(Failing(ConnectionRefusedError())).get(action(1)))
        self.failureResultOf(d, ConnectionRefusedError)
        got = self.got()
        self.assertEqual(got['cacheprog_storage_error_total{storage_type="remote",operation="get"}'], "1")
        self.assertNotIn('cacheprog_object_miss_total{storage_type="remote"}', got)

    def test_put(self) -> None:
        """
        An upload counts one object of the stored (encoded) size, and the
        time it took.
        """
        self.successResultOf(Deferred.fromCoroutine(self.observed(self.memory).put(UPLOAD)))
        got = self.got()
        rp = 'storage_type="remote",operation="put"'
        self.assertEqual(got[f"cacheprog_object_get_size_total{{{rp}}}"], "1")
        self.assertEqual(got[f"cacheprog_object_get_size_bytes_total{{{rp}}}"], "10")

    def test_put_duration(self) -> None:
        """
        The duration is measured on the injected clock.
        """

        class Slow:
            name = "slow"

            def __init__(self) -> None:
                self.gate: Deferred[None] = Deferred()

            async def put(self, obj: UploadObject) -> None:
                await self.gate

        slow = Slow()
        d = Deferred.fromCoroutine(self.observed(slow).put(UPLOAD))
        self.clock.advance(0.3)
        slow.gate.callback(None)
        self.successResultOf(d)
        got = self.got()
        rp = 'storage_type="remote",operation="put"'
        self.assertEqual(got[f'cacheprog_object_get_duration_seconds_bucket{{{rp},le="0.25"}}'], "0")
        self.assertEqual(got[f'cacheprog_object_get_duration_seconds_bucket{{{rp},le="0.5"}}'], "1")

    def test_put_error(self) -> None:
        """
        A failed upload is a storage error.
        """
        d = Deferred.fromCoroutine(self.observed(Failing(ConnectionRefusedError())).put(UPLOAD))
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(self.got()['cacheprog_storage_error_total{storage_type="remote",operation="put"}'], "1")

    def test_put_skipped(self) -> None:
        """
        An upload the breaker skipped is counted nowhere (the reference
        counted it as stored).
        """
        d = Deferred.fromCoroutine(self.observed(Failing(Unavailable("put"))).put(UPLOAD))
        self.failureResultOf(d, Unavailable)
        self.assertEqual(self.metrics.render(), "")

    def test_close(self) -> None:
        """
        Closing closes the inner store.
        """
        self.successResultOf(Deferred.fromCoroutine(self.observed(self.memory).close()))


class WithCacheTests(SynchronousTestCase):
    """
    L{ObservingStore} in place in front of the core, as C{direct} wires it.
    """

    def test_cache_round_trip(self) -> None:
        """
        A put uploads through the observer (one remote put); after the local
        tier is gone, a get is one remote get of the stored size.
        """
        clock = Clock()
        metrics = Metrics()
        memory = MemoryStore()
        remote = ObservingStore(memory, metrics, clock)
        body = b"some output " * 100
        cache = Cache(DiskStore(self.mktemp()), remote, clock)
        spool = cache.new_spool(len(body))
        spool.write(body)
        self.successResultOf(Deferred.fromCoroutine(cache.put(action(7), output_of(body), spool)))
        self.successResultOf(Deferred.fromCoroutine(cache.close()))
        stored = len(memory.objects[action(7)].data)
        fresh = Cache(DiskStore(self.mktemp()), remote, clock)
        entry = self.successResultOf(Deferred.fromCoroutine(fresh.get(action(7))))
        self.assertIsNotNone(entry)
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(fresh.get(action(8)))))
        got = series(metrics.render())
        for op in ("get", "put"):
            labels = f'storage_type="remote",operation="{op}"'
            self.assertEqual(got[f"cacheprog_object_get_size_total{{{labels}}}"], "1")
            self.assertEqual(got[f"cacheprog_object_get_size_bytes_total{{{labels}}}"], str(stored))
        self.assertEqual(got['cacheprog_object_miss_total{storage_type="remote"}'], "1")

"""
Tests for L{cacheprog.cache.Cache} over a real L{DiskStore} in a temp dir,
the memory backend and a fake clock.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.cache import FLUSH_DELAY, Cache
from cacheprog.interfaces import RemoteObject
from cacheprog.local import DiskStore, Entry, LocalWriteError
from cacheprog.remote.disabled import DisabledStore
from cacheprog.remote.memory import MemoryStore, StoredObject
from cacheprog.settings import Transfers
from cacheprog.spool import BIG

from .helpers import WHEN, GatedStore, action, output_of, store_object


class Recorded:
    """
    A body that tells when it is released.
    """

    def __init__(self, inner: Any, released: Callable[[], None]) -> None:
        self._inner = inner
        self._released = released

    def __aiter__(self) -> Recorded:
        return self

    async def __anext__(self) -> bytes:
        chunk: bytes = await self._inner.__anext__()
        return chunk

    async def aclose(self) -> None:
        self._released()


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class CoreCase(SynchronousTestCase):
    """
    A L{Cache} over a temp L{DiskStore}, the memory backend and a fake clock
    (no tests of its own: L{tests.unit.test_background} shares it).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.local = DiskStore(self.mktemp())
        self.local.probe()
        self.remote = MemoryStore()

    def cache(self, remote: object = None, **settings: object) -> Cache:
        return Cache(
            self.local,
            remote if remote is not None else self.remote,  # type: ignore[arg-type]
            self.clock,
            settings=Transfers(**settings),  # type: ignore[arg-type]
        )

    def put(self, cache: Cache, action_id: bytes, body: bytes, output_id: bytes | None = None) -> Entry:
        spool = cache.new_spool(len(body))
        spool.write(body)
        return self.successResultOf(Deferred.fromCoroutine(cache.put(action_id, output_id or output_of(body), spool)))

    def get(self, cache: Cache, action_id: bytes) -> Entry | None:
        return self.successResultOf(Deferred.fromCoroutine(cache.get(action_id)))


class CacheTests(CoreCase):
    def test_put_then_get_local(self) -> None:
        """
        A put writes the body locally and a get answers it from there with the
        same path, OutputID, size and the put time.
        """
        cache = self.cache()
        entry = self.put(cache, action(1), b"body one")
        self.assertEqual(read(entry.path), b"body one")
        self.assertTrue(os.path.isabs(entry.path))
        self.assertEqual(os.path.splitext(entry.path)[1], "")
        hit = self.get(cache, action(1))
        self.assertEqual(hit, entry)
        self.assertEqual(hit.time.timestamp() if hit else None, 1_700_000_000)
        self.assertEqual((cache.stats.local_hits, cache.stats.puts), (1, 1))

    def test_meta_saved_soon_and_at_close(self) -> None:
        """
        Local meta files follow the answers in a batch shortly after, and
        close saves whatever is left.
        """
        cache = self.cache()
        self.put(cache, action(1), b"one")
        self.assertIsNone(DiskStore(self.local.root).lookup(action(1)))
        self.clock.advance(FLUSH_DELAY)
        self.assertIsNotNone(DiskStore(self.local.root).lookup(action(1)))
        self.put(cache, action(2), b"two")
        self.successResultOf(Deferred.fromCoroutine(cache.close()))
        self.assertIsNotNone(DiskStore(self.local.root).lookup(action(2)))

    def test_min_put_size(self) -> None:
        """
        Objects below --min-remote-put-size stay local.
        """
        cache = self.cache(min_remote_put_size=100)
        self.put(cache, action(1), b"tiny")
        self.put(cache, action(2), b"y" * 100)
        self.assertEqual(list(self.remote.objects), [action(2)])

    def test_remote_hit(self) -> None:
        """
        A local miss is fetched from remote, checked, written locally and
        answered with the remote time; the next get is local.
        """
        store_object(self.remote, action(1), b"z" * 4000)
        cache = self.cache()
        entry = self.get(cache, action(1))
        assert entry is not None
        self.assertEqual(read(entry.path), b"z" * 4000)
        self.assertEqual((entry.output_id, entry.size, entry.time), (output_of(b"z" * 4000), 4000, WHEN))
        self.assertEqual(self.get(cache, action(1)), entry)
        self.assertEqual((cache.stats.remote_hits, cache.stats.local_hits, self.remote.gets), (1, 1, 1))

    def test_remote_corrupt(self) -> None:
        """
        A remote body whose SHA-256 differs from its OutputID (right size,
        wrong bytes) is a miss and leaves nothing locally.
        """
        good = b"the real archive"
        store_object(self.remote, action(1), b"the fake archive", output_id=output_of(good))
        cache = self.cache()
        self.assertIsNone(self.get(cache, action(1)))
        self.assertIsNone(self.local.lookup(action(1)))
        self.assertEqual((cache.stats.corrupt, cache.stats.misses), (1, 1))

    def test_remote_truncated(self) -> None:
        """
        A remote body shorter than its recorded size is a miss.
        """
        body = b"0123456789"
        self.remote.objects[action(1)] = StoredObject(output_of(body), 10, "", body[:5], WHEN)
        self.assertIsNone(self.get(self.cache(), action(1)))

    def test_remote_bomb(self) -> None:
        """
        A zstd object that decompresses beyond its recorded size is a miss.
        """
        body = b"\0" * 100_000
        store_object(self.remote, action(1), body)
        stored = self.remote.objects[action(1)]
        self.remote.objects[action(1)] = StoredObject(stored.output_id, 1000, "zstd", stored.data, WHEN)
        self.assertIsNone(self.get(self.cache(), action(1)))

    def test_unknown_compression(self) -> None:
        """
        An object written with an unknown algorithm is a miss.
        """
        self.remote.objects[action(1)] = StoredObject(output_of(b"abc"), 3, "lz5", b"abc", WHEN)
        cache = self.cache()
        self.assertIsNone(self.get(cache, action(1)))
        self.assertEqual(cache.stats.misses, 1)

    def test_body_released(self) -> None:
        """
        Every body the core gets is released with C{aclose}, whether it was
        read to the end, corrupt, or of an unknown algorithm.
        """
        closed: list[bytes] = []

        class Released(MemoryStore):
            async def get(self, action_id: bytes) -> RemoteObject:
                obj = await super().get(action_id)
                return attrs.evolve(obj, body=Recorded(obj.body, lambda: closed.append(action_id)))

        remote = Released()
        store_object(remote, action(1), b"good")
        store_object(remote, action(2), b"corrupt", output_id=output_of(b"other"))
        remote.objects[action(3)] = StoredObject(output_of(b"abc"), 3, "lz5", b"abc", WHEN)
        cache = self.cache(remote)
        for n in (1, 2, 3):
            self.get(cache, action(n))
        self.assertEqual(closed, [action(1), action(2), action(3)])

    def test_remote_failure_is_miss(self) -> None:
        """
        A remote that raises gives a miss, never an exception.
        """
        gated = GatedStore()
        gated.fail_with = RuntimeError("boom")
        cache = self.cache(gated)
        d = Deferred.fromCoroutine(cache.get(action(1)))
        gated.release()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(cache.stats.remote_faults, 1)

    def test_single_flight(self) -> None:
        """
        Concurrent gets of one key share one remote fetch.
        """
        gated = GatedStore()
        store_object(gated.memory, action(1), b"shared")
        cache = self.cache(gated)
        first = Deferred.fromCoroutine(cache.get(action(1)))
        second = Deferred.fromCoroutine(cache.get(action(1)))
        self.assertNoResult(first)
        gated.release()
        a, b = self.successResultOf(first), self.successResultOf(second)
        self.assertEqual(a, b)
        self.assertEqual(gated.get_calls, 1)

    def test_timeout_is_miss_download_lands(self) -> None:
        """
        A get slower than the get timeout is answered miss; the download goes
        on and the object is local for the next get.
        """
        gated = GatedStore()
        store_object(gated.memory, action(1), b"late")
        cache = self.cache(gated, get_timeout=5.0)
        d = Deferred.fromCoroutine(cache.get(action(1)))
        self.clock.advance(5.1)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(cache.stats.remote_timeouts, 1)
        gated.release()
        hit = self.get(cache, action(1))
        assert hit is not None
        self.assertEqual(read(hit.path), b"late")

    def test_queue_time_not_counted(self) -> None:
        """
        Time queued behind --max-concurrent-remote-gets does not count against
        the get timeout.
        """
        gated = GatedStore()
        store_object(gated.memory, action(1), b"one")
        store_object(gated.memory, action(2), b"two")
        cache = self.cache(gated, get_timeout=5.0, max_concurrent_gets=1)
        first = Deferred.fromCoroutine(cache.get(action(1)))
        second = Deferred.fromCoroutine(cache.get(action(2)))
        self.clock.advance(4)
        gated.release()  # first finishes after 4 s
        self.assertIsNotNone(self.successResultOf(first))
        self.clock.advance(4)  # second has now waited 8 s, fetched for 4
        gated.release()
        self.assertIsNotNone(self.successResultOf(second))

    def test_disabled(self) -> None:
        """
        With remote disabled a local miss is a miss and puts upload nothing.
        """
        cache = self.cache(DisabledStore(), remote_enabled=False)
        self.assertIsNone(self.get(cache, action(1)))
        self.put(cache, action(1), b"abc")
        self.assertEqual(cache.stats.uploads, 0)

    def test_mismatched_put_not_uploaded(self) -> None:
        """
        A put whose body does not hash to its OutputID is kept locally (the
        answer is a DiskPath) but never uploaded: every reader would reject it.
        """
        cache = self.cache()
        entry = self.put(cache, action(1), b"abc", output_id=output_of(b"other"))
        self.assertEqual(read(entry.path), b"abc")
        self.assertEqual(self.remote.objects, {})

    def test_local_write_failure(self) -> None:
        """
        A put whose local write fails raises LocalWriteError (the one Err).
        """
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        # A root below a regular file: every directory creation fails, even for root.
        self.local = DiskStore(os.path.join(blocker, "root"))
        cache = self.cache()
        spool = cache.new_spool(3)
        spool.write(b"abc")
        self.failureResultOf(Deferred.fromCoroutine(cache.put(action(9), output_of(b"abc"), spool)), LocalWriteError)

    def test_abandon(self) -> None:
        """
        abandon (a signal's grace is over) answers remote gets in flight
        "miss" and drops the uploads, even with no timeouts at all.
        """
        gated = GatedStore()
        store_object(gated.memory, action(2), b"remote")
        cache = self.cache(gated, get_timeout=0, put_timeout=0, max_background_wait=0)
        self.put(cache, action(1), b"abc")
        got = Deferred.fromCoroutine(cache.get(action(2)))
        self.assertNoResult(got)
        cache.abandon()
        self.assertIsNone(self.successResultOf(got))
        self.successResultOf(Deferred.fromCoroutine(cache.close()))
        self.assertEqual(cache.stats.uploads_dropped, 1)

    def test_big_body_uses_thread_runner(self) -> None:
        """
        Bodies of 1 MiB and more are committed through the thread runner.
        """
        calls: list[str] = []

        def runner(f, *args):  # type: ignore[no-untyped-def]
            calls.append(f.__name__)
            return Deferred.fromCoroutine(_run(f, *args))

        async def _run(f, *args):  # type: ignore[no-untyped-def]
            return f(*args)

        cache = Cache(self.local, self.remote, self.clock, runner)
        body = os.urandom(BIG)
        spool = cache.new_spool(len(body))
        spool.write(body)
        entry = self.successResultOf(Deferred.fromCoroutine(cache.put(action(1), output_of(body), spool)))
        self.assertEqual(read(entry.path), body)
        self.assertIn("commit", calls)
        self.assertIn("_encode_file", calls)

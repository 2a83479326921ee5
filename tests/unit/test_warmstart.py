"""
Tests for L{cacheprog.warmstart.WarmStart} with the core: a run records its
manifest and packs at close; the next run with an empty local tier gets
everything from the packs, ahead of go, and falls back to per-object gets
for whatever the packs cannot give.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog import manifest as m
from cacheprog import pack, warmstart
from cacheprog.cache import Cache, inline_runner
from cacheprog.local import DiskStore, Entry
from cacheprog.pack import pack_name
from cacheprog.presence import Listing, Presence
from cacheprog.remote.memory import MemoryStore
from cacheprog.stats import Stats
from cacheprog.warmstart import STALLED, WarmStart

from .helpers import WHEN, action, output_of, store_object

KEY = "k" * 64
BODIES = {n: (b"body %d " % n) * (n * 50 + 1) for n in range(12)}


class GatedRanges(MemoryStore):
    """
    A memory store whose ranged reads wait for the test.
    """

    def __init__(self) -> None:
        super().__init__()
        self.range_gates: list[Deferred[None]] = []
        self.ranges = 0

    async def get_range(self, name: str, start: int, stop: int) -> AsyncIterator[bytes]:
        self.ranges += 1
        d: Deferred[None] = Deferred()
        self.range_gates.append(d)
        await d
        return await super().get_range(name, start, stop)

    def release(self) -> None:
        gates, self.range_gates = self.range_gates, []
        for d in gates:
            d.callback(None)


class WarmStartCase(SynchronousTestCase):
    """
    Runs of a L{Cache} with a L{WarmStart} over the memory backend (no tests
    of its own: L{tests.unit.test_manifestwriter} shares it).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.remote = GatedRanges()

    def run_cache(self, key: str = KEY, wait: float = 1.0) -> tuple[Cache, WarmStart]:
        local = DiskStore(self.mktemp())
        local.probe()
        stats = Stats()
        warm = WarmStart(self.remote, local, self.clock, inline_runner, key, stats, wait=wait)
        cache = Cache(local, self.remote, self.clock, stats=stats, journal=warm)
        warm.start()
        return cache, warm

    def first_run(self) -> None:
        """
        A run that builds everything: every get misses, every entry is put.
        """
        cache, _ = self.run_cache()
        for n, body in BODIES.items():
            self.assertIsNone(self.get(cache, action(n)))
            spool = cache.new_spool(len(body))
            spool.write(body)
            self.successResultOf(Deferred.fromCoroutine(cache.put(action(n), output_of(body), spool)))
        self.close(cache)
        self.assertTrue(cache.stats.manifest_written)
        self.assertEqual(cache.stats.packs_written, 1)

    def get(self, cache: Cache, action_id: bytes) -> Entry | None:
        return self.successResultOf(Deferred.fromCoroutine(cache.get(action_id)))

    def close(self, cache: Cache) -> None:
        d = Deferred.fromCoroutine(cache.close())
        self.remote.release()
        self.successResultOf(d)

    def manifest(self) -> m.Manifest:
        return m.decode(self.remote.blobs[m.manifest_name(KEY)])


class WarmStartTests(WarmStartCase):
    def test_second_run_from_packs(self) -> None:
        """
        The second run reads the manifest and one range, writes every entry
        locally before go asks, and sends no per-object get; its manifest
        is not rewritten.
        """
        self.first_run()
        written = dict(self.remote.blobs)
        self.remote.gets = 0
        cache, _ = self.run_cache()
        self.assertEqual(self.remote.ranges, 1)
        self.remote.release()
        self.assertEqual(cache.stats.prefetched, len(BODIES))
        for n, body in BODIES.items():
            entry = self.get(cache, action(n))
            assert entry is not None
            with open(entry.path, "rb") as f:
                self.assertEqual(f.read(), body)
        self.assertEqual((cache.stats.local_hits, cache.stats.remote_hits), (0, len(BODIES)))
        self.assertEqual(self.remote.gets, 0)
        self.close(cache)
        self.assertFalse(cache.stats.manifest_written)
        self.assertEqual(self.remote.blobs, written)

    def test_pack_beats_presence(self) -> None:
        """
        An entry the packs hold is answered from them even when the
        presence listing says its own object is absent (an upload that was
        dropped): the prefetch is asked first.
        """
        self.first_run()
        self.remote.objects = {}
        local = DiskStore(self.mktemp())
        local.probe()
        stats = Stats()
        warm = WarmStart(self.remote, local, self.clock, inline_runner, KEY, stats)
        presence = Presence()
        presence.listed(Listing(frozenset(), complete=True))
        cache = Cache(local, self.remote, self.clock, stats=stats, presence=presence, journal=warm)
        warm.start()
        d = Deferred.fromCoroutine(cache.get(action(4)))
        self.remote.release()
        self.assertIsNotNone(self.successResultOf(d))
        self.assertEqual((stats.remote_hits, stats.instant_misses), (1, 0))

    def test_writes_in_flight_at_close(self) -> None:
        """
        Entries still being written in the thread pool when the run closes
        are finished, counted and saved, not cancelled halfway.
        """
        self.first_run()
        pending: list[tuple[Deferred[object], object]] = []

        def slow_runner(f: Any, *args: object) -> Deferred[Any]:
            if f is not warmstart._write_entry:
                return inline_runner(f, *args)
            d: Deferred[object] = Deferred()
            pending.append((d, cast(Any, f)(*args)))
            return d

        # Every entry in flight: the read is over, only the writes are left.
        self.patch(warmstart, "WRITES_PER_STREAM", 100)
        local = DiskStore(self.mktemp())
        local.probe()
        stats = Stats()
        warm = WarmStart(self.remote, local, self.clock, slow_runner, KEY, stats)
        cache = Cache(local, self.remote, self.clock, stats=stats, journal=warm)
        warm.start()
        self.remote.release()
        in_flight = len(pending)
        self.assertEqual(in_flight, len(BODIES))
        closing = Deferred.fromCoroutine(cache.close())
        while pending:
            d, result = pending.pop(0)
            d.callback(result)
        self.successResultOf(closing)
        self.assertEqual(stats.prefetched, in_flight)
        self.assertIsNotNone(DiskStore(local.root).lookup(action(0)))

    def test_entry_landing_after_close(self) -> None:
        """
        An entry that lands in the local tier after close began (a prefetch
        write finishing late) is saved at once: no timer is left behind
        for a reactor that is about to stop.
        """
        cache, warm = self.run_cache()
        self.close(cache)
        spool = cache.new_spool(4)
        spool.write(b"late")
        spool.commit(action(77), output_of(b"late"), WHEN)
        warm._stored()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNotNone(DiskStore(cache._local.root).lookup(action(77)))

    def test_get_waits_for_prefetch(self) -> None:
        """
        A get for an entry on its way waits for the prefetch (single
        flight): no per-object get, answered when the range arrives.
        """
        self.first_run()
        self.remote.gets = 0
        cache, _ = self.run_cache()
        d = Deferred.fromCoroutine(cache.get(action(5)))
        self.assertNoResult(d)
        self.remote.release()
        entry = self.successResultOf(d)
        self.assertIsNotNone(entry)
        self.assertEqual((self.remote.gets, cache.stats.prefetch_waits, cache.stats.remote_hits), (0, 1, 1))

    def test_stalled_prefetch_falls_back(self) -> None:
        """
        A prefetch that makes no progress costs one wait: the get then
        takes the per-object path, and later gets do not wait at all.
        """
        self.first_run()
        for n, body in BODIES.items():
            store_object(self.remote, action(n), body)
        self.remote.gets = 0
        cache, _ = self.run_cache(wait=0.5)
        d = Deferred.fromCoroutine(cache.get(action(1)))
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.assertIsNotNone(self.successResultOf(d))
        self.assertEqual(self.remote.gets, 1)
        # Still making no progress after STALLED waits: given up.
        self.clock.advance(0.5 * (STALLED - 1))
        d = Deferred.fromCoroutine(cache.get(action(2)))
        self.clock.advance(0.5)
        self.assertIsNotNone(self.successResultOf(d))
        self.assertIsNotNone(self.get(cache, action(3)))
        self.assertEqual(self.remote.gets, 3)
        self.assertEqual(cache.stats.prefetched, 0)

    def test_slow_manifest_read_writes_nothing(self) -> None:
        """
        A run that closes before its manifest read ended does not write a
        manifest (it could replace a good one with a colder one), and a
        single slow answer does not give up the prefetch.
        """
        self.first_run()
        written = dict(self.remote.blobs)
        gate: Deferred[None] = Deferred()
        real = self.remote.get_blob

        async def slow(name: str) -> bytes:
            await gate
            return await real(name)

        self.remote.get_blob = slow  # type: ignore[method-assign]
        cache, warm = self.run_cache(wait=0.5)
        d = Deferred.fromCoroutine(cache.get(action(1)))
        self.clock.advance(0.5)
        self.assertIsNotNone(self.successResultOf(d))
        self.assertFalse(warm._abandoned)
        self.close(cache)
        self.assertFalse(cache.stats.manifest_written)
        self.assertEqual(self.remote.blobs, written)

    def test_corrupt_pack_entry(self) -> None:
        """
        An entry whose bytes in the pack are damaged is a corrupt object:
        never written locally; its get takes the per-object path; the
        others come from the pack; the next manifest packs it again.
        """
        self.first_run()
        store_object(self.remote, action(3), BODIES[3])
        ref = next(e.ref for e in self.manifest().entries if e.action_id == action(3))
        assert ref is not None
        name = pack_name(ref.pack)
        pack = bytearray(self.remote.blobs[name])
        pack[ref.offset + ref.length - 1] ^= 0xFF
        self.remote.blobs[name] = bytes(pack)
        self.remote.gets = 0
        cache, _ = self.run_cache()
        self.remote.release()
        self.assertEqual((cache.stats.prefetched, cache.stats.corrupt), (len(BODIES) - 1, 1))
        entry = self.get(cache, action(3))
        assert entry is not None
        with open(entry.path, "rb") as f:
            self.assertEqual(f.read(), BODIES[3])
        self.assertEqual(self.remote.gets, 1)
        self.close(cache)
        self.assertEqual(cache.stats.packs_written, 1)
        fixed = next(e.ref for e in self.manifest().entries if e.action_id == action(3))
        self.assertNotEqual(fixed, ref)

    def test_missing_pack(self) -> None:
        """
        A manifest pointing at a deleted pack: gets go per-object (hits
        where the objects exist, misses otherwise), and the run writes a
        new pack and manifest.
        """
        self.first_run()
        for name in [n for n in self.remote.blobs if n.startswith("packs/")]:
            del self.remote.blobs[name]
        self.remote.objects = {}
        store_object(self.remote, action(0), BODIES[0])
        # One read per entry: the reads after the first 404s are not sent.
        self.patch(warmstart, "plan_spans", lambda wanted: pack.plan_spans(wanted, gap=0, schedule=(), limit=1))
        cache, _ = self.run_cache()
        self.remote.release()
        self.assertEqual(cache.stats.prefetched, 0)
        self.assertEqual(self.remote.ranges, warmstart.STREAMS)
        self.assertIsNotNone(self.get(cache, action(0)))
        self.assertIsNone(self.get(cache, action(1)))
        self.close(cache)
        self.assertTrue(cache.stats.manifest_written)
        self.assertEqual([e.action_id for e in self.manifest().entries], [action(0)])

    def test_corrupt_manifest(self) -> None:
        """
        A corrupt manifest is ignored with a warning, and replaced at close.
        """
        self.remote.blobs[m.manifest_name(KEY)] = b"garbage"
        store_object(self.remote, action(1), BODIES[1])
        cache, _ = self.run_cache()
        self.assertEqual(cache.stats.manifest, "corrupt")
        self.assertIsNotNone(self.get(cache, action(1)))
        self.close(cache)
        self.assertEqual([e.action_id for e in self.manifest().entries], [action(1)])

    def test_other_key(self) -> None:
        """
        Another go command (another run key) does not read this manifest.
        """
        self.first_run()
        self.remote.gets = 0
        cache, _ = self.run_cache(key="o" * 64)
        self.assertEqual(cache.stats.manifest, "none")
        self.assertIsNotNone(self.get(cache, action(1)))
        self.assertEqual((self.remote.ranges, self.remote.gets, cache.stats.prefetched), (0, 1, 0))

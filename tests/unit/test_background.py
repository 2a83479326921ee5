"""
Tests for L{cacheprog.background}: uploads of puts, and the drain at close
that waits for them up to a limit, through the L{Cache} that starts them.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred

from .helpers import GatedStore, action, output_of
from .test_cache import CoreCase


class BackgroundTests(CoreCase):
    def test_put_uploads(self) -> None:
        """
        A put is uploaded in the background, compressed when that is smaller,
        with the reference's metadata.
        """
        cache = self.cache()
        body = b"x" * 5000
        self.put(cache, action(1), body)
        stored = self.remote.objects[action(1)]
        self.assertEqual((stored.output_id, stored.size, stored.compression), (output_of(body), 5000, "zstd"))
        self.assertLess(len(stored.data), 5000)
        self.assertEqual(cache.stats.uploads, 1)

    def test_incompressible_raw(self) -> None:
        """
        A body zstd cannot shrink is stored raw.
        """
        cache = self.cache()
        body = os.urandom(3000)
        self.put(cache, action(1), body)
        self.assertEqual(self.remote.objects[action(1)].compression, "")
        self.assertEqual(self.remote.objects[action(1)].data, body)

    def test_close_waits_for_uploads(self) -> None:
        """
        close waits for background uploads to finish.
        """
        gated = GatedStore()
        cache = self.cache(gated)
        self.put(cache, action(1), b"abc")
        closing = Deferred.fromCoroutine(cache.close())
        self.assertNoResult(closing)
        gated.release()
        self.successResultOf(closing)
        self.assertIn(action(1), gated.memory.objects)

    def test_close_bounded(self) -> None:
        """
        close gives up on uploads after --max-background-wait and counts them.
        """
        gated = GatedStore()
        cache = self.cache(gated, max_background_wait=2.0, put_timeout=0)
        self.put(cache, action(1), b"abc")
        closing = Deferred.fromCoroutine(cache.close())
        self.clock.advance(1.9)
        self.assertNoResult(closing)
        self.clock.advance(0.2)
        self.successResultOf(closing)
        self.assertEqual(cache.stats.uploads_dropped, 1)

    def test_cut_off_at_close_counted_once(self) -> None:
        """
        With --remote-put-timeout 0, an upload cut off at close is counted
        once (dropped), not also as a failed upload with an ERROR line.
        """
        gated = GatedStore()
        cache = self.cache(gated, max_background_wait=2.0, put_timeout=0)
        self.put(cache, action(1), b"abc")
        closing = Deferred.fromCoroutine(cache.close())
        with self.assertLogs("cacheprog", level="DEBUG") as logs:
            self.clock.advance(2.1)
        self.successResultOf(closing)
        self.assertEqual((cache.stats.uploads_dropped, cache.stats.upload_faults), (1, 0))
        self.assertFalse([r for r in logs.records if r.levelname == "ERROR"], logs.output)

    def test_put_timeout(self) -> None:
        """
        An upload slower than --remote-put-timeout is abandoned.
        """
        gated = GatedStore()
        cache = self.cache(gated, put_timeout=3.0)
        self.put(cache, action(1), b"abc")
        self.clock.advance(3.1)
        self.successResultOf(Deferred.fromCoroutine(cache.close()))
        self.assertEqual((cache.stats.upload_faults, cache.stats.uploads), (1, 0))

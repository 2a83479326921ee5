"""
Tests for L{cacheprog.manifestwriter}: what a run writes at close for the
next one, through the L{WarmStart} that records it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from cacheprog.cache import inline_runner
from cacheprog.manifestwriter import ManifestWriter
from cacheprog.stats import Stats

from .helpers import action, output_of
from .test_warmstart import BODIES, WarmStartCase


class ManifestWriterTests(WarmStartCase):
    def test_nothing_used_nothing_written(self) -> None:
        """
        A run that used no entry writes neither a pack nor a manifest.
        """
        stats = Stats()
        writer = ManifestWriter(self.remote, inline_runner, "manifests/v1/k", stats)
        writer.note(action(1))
        self.successResultOf(Deferred.fromCoroutine(writer.save(None, frozenset(), frozenset())))
        self.assertEqual((self.remote.blobs, stats.packs_written, stats.manifest_written), ({}, 0, False))

    def test_manifest_in_go_order(self) -> None:
        """
        The manifest lists entries in the order go asked, with sizes and
        output ids.
        """
        self.first_run()
        entries = self.manifest().entries
        self.assertEqual([e.action_id for e in entries], [action(n) for n in BODIES])
        self.assertEqual([e.size for e in entries], [len(b) for b in BODIES.values()])
        self.assertTrue(all(e.ref is not None for e in entries))

    def test_delta_pack(self) -> None:
        """
        A run that adds an entry uploads a pack of that entry only; the
        manifest then references both packs.
        """
        self.first_run()
        first_packs = set(self.manifest().packs)
        cache, _ = self.run_cache()
        self.remote.release()
        for n in BODIES:
            self.get(cache, action(n))
        body = b"new entry"
        spool = cache.new_spool(len(body))
        spool.write(body)
        self.successResultOf(Deferred.fromCoroutine(cache.put(action(99), output_of(body), spool)))
        self.close(cache)
        manifest = self.manifest()
        self.assertEqual(len(manifest.packs), 2)
        self.assertTrue(first_packs < set(manifest.packs))
        (delta,) = set(manifest.packs) - first_packs
        self.assertLess(manifest.packs[delta], 100)
        self.assertEqual(manifest.entries[-1].action_id, action(99))

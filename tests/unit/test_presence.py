"""
The presence view alone, and the core using it: instant misses, uploads
without a HEAD, and keys uploaded after the listing.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.cache import Cache
from cacheprog.interfaces import UploadObject
from cacheprog.local import DiskStore, Entry
from cacheprog.presence import Listing, Presence
from cacheprog.remote.memory import MemoryStore
from cacheprog.settings import Transfers

from .helpers import action, output_of, store_object


class PresenceTests(SynchronousTestCase):
    def test_nothing_known(self) -> None:
        """
        Without a listing nothing is absent.
        """
        self.assertFalse(Presence().absent(action(1)))

    def test_incomplete_listing_says_nothing_about_others(self) -> None:
        presence = Presence()
        presence.listed(Listing(frozenset({action(1)}), complete=False))
        self.assertFalse(presence.absent(action(1)))
        self.assertFalse(presence.absent(action(2)))

    def test_complete_listing(self) -> None:
        presence = Presence()
        presence.listed(Listing(frozenset({action(1)}), complete=True))
        self.assertFalse(presence.absent(action(1)))
        self.assertTrue(presence.absent(action(2)))

    def test_own_answers_win(self) -> None:
        """
        A NotFound makes a listed key absent; an upload makes it present.
        """
        presence = Presence()
        presence.listed(Listing(frozenset({action(1)}), complete=True))
        presence.note_missing(action(1))
        self.assertTrue(presence.absent(action(1)))
        presence.note_present(action(2))
        self.assertFalse(presence.absent(action(2)))

    def test_missing_survives_a_late_listing(self) -> None:
        presence = Presence()
        presence.start_loading()
        presence.note_missing(action(1))
        presence.listed(Listing(frozenset({action(1)}), complete=True))
        self.assertTrue(presence.absent(action(1)))

    def test_manifest_keys(self) -> None:
        presence = Presence()
        presence.add_present([action(1)])
        presence.listed(Listing(frozenset(), complete=True))
        self.assertFalse(presence.absent(action(1)))
        self.assertTrue(presence.absent(action(2)))

    def test_ready(self) -> None:
        presence = Presence()
        self.successResultOf(presence.ready())
        presence.start_loading()
        self.assertTrue(presence.loading)
        waiting = presence.ready()
        self.assertNoResult(waiting)
        presence.listed(None)
        self.successResultOf(waiting)
        self.assertFalse(presence.complete)


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.uploads: list[UploadObject] = []

    async def put(self, obj: UploadObject) -> None:
        self.uploads.append(obj)
        await super().put(obj)


class CorePresenceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.local = DiskStore(self.mktemp())
        self.local.probe()
        self.remote = CountingStore()
        self.presence = Presence()
        self.cache = Cache(self.local, self.remote, self.clock, settings=Transfers(), presence=self.presence)

    def get(self, action_id: bytes) -> Entry | None:
        return self.successResultOf(Deferred.fromCoroutine(self.cache.get(action_id)))

    def put(self, action_id: bytes, body: bytes) -> None:
        spool = self.cache.new_spool(len(body))
        spool.write(body)
        self.successResultOf(Deferred.fromCoroutine(self.cache.put(action_id, output_of(body), spool)))

    def test_instant_miss(self) -> None:
        """
        A key a complete listing lacks is a miss without a remote get; its
        upload is marked absent (no HEAD needed).
        """
        self.presence.listed(Listing(frozenset(), complete=True))
        self.assertIsNone(self.get(action(1)))
        self.assertEqual((self.remote.gets, self.cache.stats.instant_misses), (0, 1))
        self.put(action(1), b"compiled")
        self.assertTrue(self.remote.uploads[0].absent)

    def test_listed_key_is_fetched(self) -> None:
        store_object(self.remote, action(1), b"there")
        self.presence.listed(Listing(frozenset({action(1)}), complete=True))
        entry = self.get(action(1))
        self.assertIsNotNone(entry)
        self.assertEqual(self.remote.gets, 1)

    def test_uploaded_after_listing_is_a_recompile(self) -> None:
        """
        Another job uploads a key after our listing: we answer miss (go
        recompiles), never a wrong entry; our own upload of the same output
        goes through.
        """
        self.presence.listed(Listing(frozenset(), complete=True))
        store_object(self.remote, action(1), b"same output")
        self.assertIsNone(self.get(action(1)))
        self.put(action(1), b"same output")
        self.assertEqual(len(self.remote.uploads), 1)
        self.assertEqual(self.get(action(1)).size, len(b"same output"))  # type: ignore[union-attr]

    def test_miss_then_upload_needs_no_head(self) -> None:
        """
        Without a listing, a remote NotFound teaches the view: the upload
        that follows is marked absent; a second get of it is local.
        """
        self.assertIsNone(self.get(action(2)))
        self.assertEqual(self.remote.gets, 1)
        self.put(action(2), b"body")
        self.assertTrue(self.remote.uploads[0].absent)
        self.assertFalse(self.presence.absent(action(2)))

    def test_gets_wait_for_the_listing(self) -> None:
        self.presence.start_loading()
        d = Deferred.fromCoroutine(self.cache.get(action(3)))
        self.assertNoResult(d)
        self.presence.listed(Listing(frozenset(), complete=True))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.remote.gets, 0)

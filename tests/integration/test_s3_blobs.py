"""
The warm start's named objects (run manifests, packs) in real S3 servers on
127.0.0.1, on the real reactor: signed PUTs with a SHA-256 checksum, signed
ranged GETs answered 206 and streamed, whole reads, 404 as NotFound, and a
whole warm start (manifest + pack written by one run, prefetched by the
next) through the core.  SeaweedFS and MinIO check SigV4 signatures.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from twisted.trial import unittest

from cacheprog.cache import Cache
from cacheprog.interfaces import NotFound
from cacheprog.local import DiskStore
from cacheprog.stats import Stats
from cacheprog.warmstart import WarmStart
from tests.integration.servers import MinIO, S3Server, SeaweedFS, unavailable_reason
from tests.integration.test_s3_servers import BUCKET, StoreFactory, reactor, run_in_thread

PACK = "packs/v1/" + "ab" * 32
DATA = os.urandom(3 << 20)


async def collect(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


class _BlobTests(StoreFactory, unittest.TestCase):
    """
    The tests; one subclass per server (this base skips).
    """

    server_class: ClassVar[type[S3Server] | None] = None
    shared: ClassVar[S3Server | None] = None
    left: ClassVar[int] = 0

    def setUp(self) -> None:
        cls = type(self)
        if cls.server_class is None:
            raise unittest.SkipTest("the base of the per-server tests")
        reason = unavailable_reason(cls.server_class)
        if reason is not None:
            raise unittest.SkipTest(reason)
        if cls.shared is None:
            server = cls.server_class(tempfile.mkdtemp(prefix=cls.__name__ + "-", dir=os.getcwd()))
            server.start()
            server.create_bucket(BUCKET)
            cls.shared = server
            cls.left = len([n for n in dir(cls) if n.startswith("test_")])
        self.server = cls.shared
        self.prefix = "blobs/" + self.id().rsplit(".", 1)[-1]
        self.addCleanup(self._release)

    def _release(self) -> None:
        cls = type(self)
        cls.left -= 1
        if cls.left <= 0 and cls.shared is not None:
            cls.shared.stop()
            cls.shared = None

    async def test_put_and_ranges(self) -> None:
        """
        A pack PUT (signed, with its SHA-256) lands under the prefix; ranged
        GETs (signed) bring back exactly the asked bytes, streamed; a whole
        read brings back everything.
        """
        store = self.store()
        await store.put_blob(PACK, DATA)
        client = self.server.client()
        self.addCleanup(client.close)
        head = client.head_object(Bucket=BUCKET, Key=f"{self.prefix}/{PACK}")
        self.assertEqual(head["ContentLength"], len(DATA))
        for start, stop in ((0, 1), (12345, 2_500_000), (len(DATA) - 10, len(DATA))):
            got = await collect(await store.get_range(PACK, start, stop))
            self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(DATA[start:stop]).digest())
        self.assertEqual(len(await store.get_blob(PACK)), len(DATA))

    async def test_missing(self) -> None:
        """
        A missing manifest or pack is NotFound, whole or ranged.
        """
        store = self.store()
        for job in (store.get_blob("manifests/v1/" + "00" * 32), store.get_range(PACK, 0, 10)):
            try:
                await job
            except NotFound:
                continue
            self.fail("no NotFound")

    async def test_warm_start(self) -> None:
        """
        One run through the core writes its manifest and pack; the next,
        with an empty local tier, prefetches every entry from the pack and
        sends no per-object GET.
        """
        store = self.store(region="us-east-1")
        bodies = {bytes([n]) * 32: os.urandom(1000 * (n + 1)) for n in range(20)}
        first = self._cache(store)
        for action_id, body in bodies.items():
            self.assertIsNone(await first.get(action_id))
            spool = first.new_spool(len(body))
            spool.write(body)
            await first.put(action_id, hashlib.sha256(body).digest(), spool)
        await first.close()
        self.assertTrue(first.stats.manifest_written)

        second = self._cache(store)
        for action_id, body in bodies.items():
            entry = await second.get(action_id)
            assert entry is not None
            with open(entry.path, "rb") as f:
                self.assertEqual(f.read(), body)
        await second.close()
        self.assertEqual((second.stats.prefetched, second.stats.remote_hits), (len(bodies), len(bodies)))

    def _cache(self, store: Any) -> Cache:
        local = DiskStore(self.mktemp())
        local.probe()
        stats = Stats()
        # A generous wait: on a loaded machine no get may fall back to its own GET.
        warm = WarmStart(store, local, reactor, run_in_thread, "77" * 32, stats, wait=30.0)
        cache = Cache(local, store, reactor, run_in_thread, stats=stats, journal=warm)
        warm.start()
        return cache


class SeaweedFSBlobTests(_BlobTests):
    server_class = SeaweedFS


class MinIOBlobTests(_BlobTests):
    server_class = MinIO

"""
Contract tests every remote backend must pass, run for memory and dir.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from cacheprog import compression
from cacheprog.cache import inline_runner
from cacheprog.interfaces import NotFound, RemoteObject, UploadObject
from cacheprog.remote.directory import DirectoryStore
from cacheprog.remote.disabled import DisabledStore
from cacheprog.remote.memory import MemoryStore

from .helpers import action


def upload(n: int, body: bytes) -> UploadObject:
    return compression.prepare_upload(action(n), hashlib.sha256(body).digest(), body)


async def drain(obj: RemoteObject) -> bytes:
    return b"".join([chunk async for chunk in obj.body])


class ContractMixin:
    store: Any

    def make(self) -> Any:
        raise NotImplementedError

    def setUp(self) -> None:
        self.store = self.make()

    def wait(self, coro: Any) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(coro))  # type: ignore[attr-defined]

    def test_round_trip(self) -> None:
        """
        What is put comes back with its metadata and stored bytes.
        """
        obj = upload(1, b"hello " * 100)
        self.wait(self.store.put(obj))
        got = self.wait(self.store.get(action(1)))
        self.assertEqual(  # type: ignore[attr-defined]
            (got.output_id, got.size, got.compression, got.stored_size),
            (obj.output_id, obj.size, obj.compression, len(obj.data)),
        )
        self.assertEqual(self.wait(drain(got)), obj.data)  # type: ignore[attr-defined]

    def test_missing(self) -> None:
        """
        An absent key raises NotFound.
        """
        self.failureResultOf(Deferred.fromCoroutine(self.store.get(action(2))), NotFound)  # type: ignore[attr-defined]


class MemoryTests(ContractMixin, SynchronousTestCase):
    def make(self) -> Any:
        return MemoryStore()


class DirectoryTests(ContractMixin, SynchronousTestCase):
    def make(self) -> Any:
        store = DirectoryStore(self.mktemp(), inline_runner)
        store.probe()
        return store

    def test_reference_metadata(self) -> None:
        """
        The meta file holds the reference's S3 metadata names and encodings.
        """
        obj = upload(1, b"x" * 1000)
        self.wait(self.store.put(obj))
        name = action(1).hex()
        with open(os.path.join(self.store.root, name[:2], name + ".meta")) as f:
            meta = json.load(f)
        self.assertEqual(meta["compression_algorithm"], "zstd")
        self.assertEqual(meta["uncompressed_size"], "1000")
        self.assertEqual(len(meta["output_id"]), 44)

    def test_big_object_streamed(self) -> None:
        """
        A big object is read in steps of at most 1 MiB, never whole, and
        releasing its body closes the file.
        """
        from cacheprog.remote.directory import READ_STEP

        body = os.urandom(3 * READ_STEP + 5)
        self.wait(self.store.put(upload(1, body)))
        obj = self.wait(self.store.get(action(1)))
        first = self.wait(obj.body.__anext__())
        self.assertEqual(len(first), READ_STEP)
        self.wait(obj.body.aclose())
        obj = self.wait(self.store.get(action(1)))
        sizes = []
        while True:
            d = Deferred.fromCoroutine(obj.body.__anext__())
            if isinstance(d.result, Failure):
                self.failureResultOf(d, StopAsyncIteration)
                break
            sizes.append(len(self.successResultOf(d)))
        self.assertEqual(sum(sizes), len(body))
        self.assertLessEqual(max(sizes), READ_STEP)

    def test_identical_not_rewritten(self) -> None:
        """
        Putting an identical object again leaves the file alone.
        """
        obj = upload(1, b"same")
        self.wait(self.store.put(obj))
        name = action(1).hex()
        path = os.path.join(self.store.root, name[:2], name)
        inode = os.stat(path).st_ino
        self.wait(self.store.put(obj))
        self.assertEqual(os.stat(path).st_ino, inode)


class DisabledTests(SynchronousTestCase):
    def test_nothing(self) -> None:
        """
        The disabled store misses everything and accepts every put.
        """
        store = DisabledStore()
        self.failureResultOf(Deferred.fromCoroutine(store.get(action(1))), NotFound)
        self.successResultOf(Deferred.fromCoroutine(store.put(upload(1, b"x"))))

"""
Tests for L{cacheprog.remote.readthrough} and its wiring from
C{--s3-read-prefixes} / C{--dir-read-roots}.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog import compression
from cacheprog.cache import inline_runner
from cacheprog.config import ConfigError, parse
from cacheprog.interfaces import NotFound, RemoteObject, UploadObject
from cacheprog.remote import factory
from cacheprog.remote.directory import DirectoryStore
from cacheprog.remote.memory import MemoryStore
from cacheprog.remote.readthrough import ReadThroughStore
from cacheprog.remote.s3 import S3Store
from cacheprog.remote.s3config import S3Settings, object_key

from .helpers import action


def upload(n: int, body: bytes) -> UploadObject:
    return compression.prepare_upload(action(n), hashlib.sha256(body).digest(), body)


async def drain(obj: RemoteObject) -> bytes:
    return b"".join([chunk async for chunk in obj.body])


class ReadThroughTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.own = MemoryStore()
        self.main = MemoryStore()
        self.release = MemoryStore()
        self.store = ReadThroughStore(self.own, [self.main, self.release])

    def wait(self, coroutine: Any) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def test_ownFirst(self) -> None:
        """
        The job's own store answers first; the trusted ones are not asked.
        """
        self.wait(self.own.put(upload(1, b"own")))
        self.wait(self.main.put(upload(1, b"main")))
        self.assertEqual(self.wait(drain(self.wait(self.store.get(action(1))))), b"own")
        self.assertEqual(self.main.gets, 0)

    def test_trustedInOrder(self) -> None:
        """
        A miss in the own store is asked of each trusted store in order.
        """
        self.wait(self.main.put(upload(2, b"main")))
        self.wait(self.release.put(upload(2, b"release")))
        self.wait(self.release.put(upload(3, b"release only")))
        self.assertEqual(self.wait(drain(self.wait(self.store.get(action(2))))), b"main")
        self.assertEqual(self.wait(drain(self.wait(self.store.get(action(3))))), b"release only")
        self.assertEqual(self.store.trusted_hits, 2)

    def test_missEverywhere(self) -> None:
        """
        Missing everywhere: NotFound.
        """
        d = Deferred.fromCoroutine(self.store.get(action(4)))
        self.failureResultOf(d, NotFound)
        self.assertEqual((self.own.gets, self.main.gets, self.release.gets), (1, 1, 1))

    def test_putsOnlyOwn(self) -> None:
        """
        Uploads go to the job's own store only: a trusted store is never
        written.
        """
        self.wait(self.store.put(upload(5, b"new")))
        self.assertEqual(list(self.own.objects), [action(5)])
        self.assertEqual((self.main.puts, self.release.puts), (0, 0))

    def test_errorPropagates(self) -> None:
        """
        A failing own store is a failure (the breaker counts it), not a
        reason to read trusted data instead.
        """

        class Broken(MemoryStore):
            async def get(self, action_id: bytes) -> RemoteObject:
                raise OSError("down")

        store = ReadThroughStore(Broken(), [self.main])
        self.failureResultOf(Deferred.fromCoroutine(store.get(action(6))), OSError)
        self.assertEqual(self.main.gets, 0)

    def test_name(self) -> None:
        """
        The wrapper keeps the own store's name (logs, metrics).
        """
        self.assertEqual(self.store.name, "memory")


class WiringTests(SynchronousTestCase):
    def test_s3Prefixes(self) -> None:
        """
        C{CACHEPROG_S3_READ_PREFIXES} is a CSV list, templated like the
        prefix; the own prefix (in any spelling) is dropped from it.
        """
        env = {
            "CACHEPROG_S3_BUCKET": "b",
            "CACHEPROG_S3_PREFIX": "pr/{% env.PR %}",
            "CACHEPROG_S3_READ_PREFIXES": "main/{% GOOS %},pr/7/,release",
            "PR": "7",
            "GOOS": "plan9",
        }
        plan = factory.check(parse(["--remote-storage-type", "s3"], env), env)
        assert isinstance(plan, S3Settings)
        self.assertEqual(plan.read_prefixes, ("main/plan9", "release"))

    def test_s3BadTemplate(self) -> None:
        """
        A bad tag names the variable.
        """
        env = {"CACHEPROG_S3_BUCKET": "b", "CACHEPROG_S3_READ_PREFIXES": "{% BRANCH %}"}
        cfg = parse(["--remote-storage-type", "s3"], env)
        e = self.assertRaises(ConfigError, factory.check, cfg, env)
        self.assertIn("CACHEPROG_S3_READ_PREFIXES", str(e))

    def test_s3Siblings(self) -> None:
        """
        The built store reads the trusted prefixes through siblings that
        share the bucket, connections and credentials, and write nothing.
        """
        env = {
            "CACHEPROG_S3_BUCKET": "b",
            "CACHEPROG_S3_REGION": "us-east-1",
            "CACHEPROG_S3_ENDPOINT": "http://127.0.0.1:1",
            "CACHEPROG_S3_ACCESS_KEY_ID": "k",
            "CACHEPROG_S3_ACCESS_KEY_SECRET": "s",
            "CACHEPROG_S3_PREFIX": "pr",
            "CACHEPROG_S3_READ_PREFIXES": "main",
        }
        from twisted.internet.testing import MemoryReactorClock

        plan = factory.check(parse(["--remote-storage-type", "s3"], env), env)
        store = factory.build(plan, MemoryReactorClock(), inline_runner)
        assert isinstance(store, ReadThroughStore)
        own, (main,) = store._own, store._trusted
        assert isinstance(own, S3Store) and isinstance(main, S3Store)
        self.assertEqual(own.key(action(1)), object_key("pr", action(1)))
        self.assertEqual(main.key(action(1)), object_key("main", action(1)))
        self.assertIs(main._client, own._client)
        self.assertIs(main._credentials, own._credentials)
        self.assertEqual(main.settings.read_prefixes, ())

    def test_noPrefixesNoWrapper(self) -> None:
        """
        Without read prefixes the store is built as before.
        """
        root = self.mktemp()
        env = {"CACHEPROG_DIR_STORAGE_ROOT": root}
        plan = factory.check(parse(["--remote-storage-type", "dir"], env), env)
        self.assertIsInstance(factory.build(plan, Clock(), inline_runner), DirectoryStore)

    def test_dirRoots(self) -> None:
        """
        C{--dir-read-roots}: trusted directories, not created or written.
        """
        root, trusted = self.mktemp(), self.mktemp()
        env = {"CACHEPROG_DIR_STORAGE_ROOT": root, "CACHEPROG_DIR_READ_ROOTS": trusted}
        plan = factory.check(parse(["--remote-storage-type", "dir"], env), env)
        store = factory.build(plan, Clock(), inline_runner)
        self.assertIsInstance(store, ReadThroughStore)
        self.assertFalse(os.path.exists(trusted))
        d = Deferred.fromCoroutine(store.get(action(1)))
        self.failureResultOf(d, NotFound)

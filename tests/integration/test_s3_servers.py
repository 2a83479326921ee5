"""
The s3 backend against real S3 servers on 127.0.0.1 (started per test by
L{tests.integration.servers}), on the real reactor.

 - moto (C{python -m moto.server}): does not check signatures, and its
   werkzeug server drops request headers with C{_} in their names, so the
   C{x-amz-meta-output_id} metadata never arrives: what is checked there is
   the request side (key, body, checksum, Expires, region probe) and that a
   get of such an object is an error, never a hit;
 - SeaweedFS (C{weed mini}, SigV4 checked): the full round trip through the
   store and through the core, dedup, a wrong secret, unsigned headers, the
   C{minio+} scheme, virtual-host addressing;
 - MinIO when its binary is there: the same as SeaweedFS.

One server per test class (started in C{setUpClass}); each test has its own
key prefix.  Each test ends with C{store.close()}; trial's dirty-reactor
check then proves that no connection or timer was left behind.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial import unittest

from cacheprog import compression
from cacheprog.cache import Cache
from cacheprog.interfaces import NotFound, RemoteObject, UploadObject
from cacheprog.local import DiskStore
from cacheprog.remote.s3 import S3Store, build_s3_store
from cacheprog.remote.s3answers import S3Error
from cacheprog.remote.s3config import S3Settings, parse_endpoint
from cacheprog.remote.s3request import HTTPClient
from cacheprog.settings import Transfers
from tests.integration.servers import (
    LOCALHOST,
    MinIO,
    MotoServer,
    S3Server,
    SeaweedFS,
    free_port,
    unavailable_reason,
)

T = TypeVar("T")
reactor: Any = _reactor
BUCKET = "cacheprog-s3"


def run_in_thread(f: Callable[..., T], *args: object) -> Deferred[T]:
    return deferToThread(f, *args)


def action(n: int) -> bytes:
    return hashlib.sha256(b"integration action %d" % n).digest()


def upload(body: bytes, action_id: bytes) -> UploadObject:
    return compression.prepare_upload(action_id, hashlib.sha256(body).digest(), body)


async def read_all(obj: RemoteObject) -> bytes:
    return b"".join([chunk async for chunk in obj.body])


class StoreFactory:
    """
    Stores for a started server, closed at the end of the test.
    """

    server: S3Server
    prefix = "ci"
    addCleanup: Callable[..., None]

    def quiet(self) -> None:
        """
        Expected warnings (wrong secrets, region fallbacks) stay out of the
        test output.
        """
        logger = logging.getLogger("cacheprog")
        handler = logging.NullHandler()
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)

    def store(self, **overrides: Any) -> S3Store:
        options: dict[str, Any] = {
            "bucket": BUCKET,
            "prefix": self.prefix,
            "endpoint": parse_endpoint(self.server.endpoint),
            "region": "",
            "force_path_style": True,
            "access_key_id": self.server.access_key,
            "access_key_secret": self.server.secret_key,
        }
        options.update(overrides)
        store = build_s3_store(S3Settings(**options), reactor, run_in_thread, environ={})
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store


class ServerMixin(StoreFactory):
    """
    Tests for every server; round trips only where the metadata survives.
    """

    server_class: ClassVar[type[S3Server]]
    keeps_metadata: ClassVar[bool] = True
    shared: ClassVar[S3Server | None] = None
    skip_reason: ClassVar[str | None] = None
    remaining: ClassVar[set[str]] = set()

    mktemp: Callable[[], str]
    id: Callable[[], str]
    assertEqual: Callable[..., None]
    assertIn: Callable[..., None]
    assertTrue: Callable[..., None]
    assertIsInstance: Callable[..., None]
    assertLess: Callable[..., None]
    assertNotIsInstance: Callable[..., None]

    def setUp(self) -> None:
        # One server per class: trial has no setUpClass, so the first test
        # starts it and the last one stops it (servers.py's atexit hook
        # covers runs of a subset).
        cls = type(self)
        if cls.skip_reason is None and cls.shared is None:
            cls.skip_reason = unavailable_reason(cls.server_class)
            if cls.skip_reason is None:
                server = cls.server_class(tempfile.mkdtemp(prefix=cls.__name__ + "-", dir=os.getcwd()))
                try:
                    server.start()
                    server.create_bucket(BUCKET)
                except Exception as e:
                    server.stop()
                    cls.skip_reason = f"{cls.server_class.__name__} did not start: {e}"
                    raise
                cls.shared = server
                cls.remaining = {name for name in dir(cls) if name.startswith("test_")}
        if cls.skip_reason is not None:
            raise unittest.SkipTest(cls.skip_reason)
        assert cls.shared is not None
        self.server = cls.shared
        self.addCleanup(self.release)
        self.prefix = "ci/" + self.id().rsplit(".", 1)[-1]
        self.client = self.server.client()
        self.addCleanup(self.client.close)
        self.quiet()

    def release(self) -> None:
        cls = type(self)
        cls.remaining.discard(self.id().rsplit(".", 1)[-1])
        if not cls.remaining and cls.shared is not None:
            cls.shared.stop()
            cls.shared = None
        self.quiet()

    def need_metadata(self) -> None:
        if not self.keeps_metadata:
            raise unittest.SkipTest(f"{self.server_class.__name__} drops x-amz-meta-* names with '_'")

    # every server

    async def test_not_found(self) -> None:
        store = self.store()
        error = await self.failure(store.get(action(404)))
        self.assertIsInstance(error, NotFound)

    async def test_no_such_bucket(self) -> None:
        store = self.store(bucket="no-such-bucket-here", region="us-east-1")
        error = await self.failure(store.get(action(1)))
        self.assertIsInstance(error, S3Error)
        self.assertNotIsInstance(error, NotFound)
        self.assertEqual(cast(S3Error, error).code, "NoSuchBucket")

    async def test_region_detected_from_the_endpoint(self) -> None:
        store = self.store(region="")
        await self.failure(store.get(action(2)))
        self.assertEqual(store.region, self.server.region)

    async def test_listing(self) -> None:
        """
        A signed ListObjectsV2 with a strictly encoded prefix and
        continuation tokens: 1005 keys are two pages, complete; a cap of
        one page is incomplete.  Keys of a neighbouring prefix stay out.
        """
        ids = [action(5000 + i) for i in range(1005)]
        for action_id in ids:
            self.client.put_object(Bucket=BUCKET, Key=f"{self.prefix}/{action_id.hex()}", Body=b"x")
        self.client.put_object(Bucket=BUCKET, Key=f"{self.prefix}x/{action(1).hex()}", Body=b"x")
        self.client.put_object(Bucket=BUCKET, Key=f"{self.prefix}/manifests/m", Body=b"x")
        store = self.store()
        listing = await store.list_keys(5)
        self.assertEqual((listing.action_ids, listing.complete), (frozenset(ids), True))
        capped = await store.list_keys(1)
        self.assertEqual((len(capped.action_ids), capped.complete), (1000, False))

    async def test_put_known_absent_overwrites(self) -> None:
        """
        An upload marked absent goes straight to PutObject (no HEAD); if the
        key was there after all (another job, after our listing), the new
        bytes simply replace it.
        """
        self.need_metadata()
        store = self.store()
        body = b"same action, written twice\n" * 50
        await store.put(upload(body, action(7)))
        obj = compression.prepare_upload(action(7), hashlib.sha256(body).digest(), body, absent=True)
        await store.put(obj)
        self.assertEqual(store.dedup_skips, 0)
        got = await store.get(action(7))
        self.assertEqual(got.output_id, hashlib.sha256(body).digest())

    async def test_put_request_format(self) -> None:
        """
        What lands in the bucket, seen with botocore: key, bytes, checksum,
        Expires.
        """
        store = self.store(expiration=3600.0)
        body = b"package main\n" * 300
        obj = upload(body, action(3))
        await store.put(obj)
        key = f"{self.prefix}/{action(3).hex()}"
        got = self.client.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        self.assertEqual(got["Body"].read(), obj.data)
        self.assertEqual(got["ETag"].strip('"'), obj.md5.hex())
        if "ChecksumSHA256" in got:
            self.assertEqual(got["ChecksumSHA256"], base64.b64encode(obj.sha256).decode())
        expires = got.get("Expires") or got.get("ExpiresString")
        if expires is not None and not isinstance(expires, str):
            self.assertLess(abs(expires.timestamp() - (time.time() + 3600)), 120)
        if self.keeps_metadata:
            self.assertEqual(
                got["Metadata"],
                {
                    "output_id": base64.b64encode(obj.output_id).decode(),
                    "compression_algorithm": "zstd",
                    "uncompressed_size": str(len(body)),
                },
            )

    async def test_object_without_metadata_is_an_error(self) -> None:
        key = f"{self.prefix}/{action(4).hex()}"
        self.client.put_object(Bucket=BUCKET, Key=key, Body=b"no metadata")
        error = await self.failure(self.store().get(action(4)))
        self.assertIsInstance(error, S3Error)
        self.assertIn("output_id", str(error))

    # where the metadata survives

    async def test_round_trip(self) -> None:
        self.need_metadata()
        store = self.store()
        bodies = {
            5: b"compressible " * 4000,
            6: os.urandom(3000),
            7: b"",
            8: os.urandom(3 << 20),
        }
        for n, body in bodies.items():
            await store.put(upload(body, action(n)))
        for n, body in bodies.items():
            obj = upload(body, action(n))
            got = await store.get(action(n))
            self.assertEqual(got.output_id, obj.output_id)
            self.assertEqual(got.size, len(body))
            self.assertEqual(got.compression, obj.compression)
            self.assertEqual(got.stored_size, len(obj.data))
            self.assertLess(abs(got.mtime.timestamp() - time.time()), 120)
            self.assertEqual(await read_all(got), obj.data)

    async def test_file_body_put(self) -> None:
        """
        An upload whose stored bytes are in a file (a big PUT the proxy
        received, never read into memory) is sent from the file, signed,
        and reads back the same.
        """
        import attrs

        self.need_metadata()
        store = self.store()
        body = os.urandom(3 << 20)
        obj = upload(body, action(30))
        with tempfile.TemporaryFile() as spooled:
            spooled.write(obj.data)
            spooled.seek(100)  # wherever it stands, the whole file is sent
            from_file = attrs.evolve(
                obj, data=b"", md5=obj.md5, sha256=obj.sha256, file=spooled, file_size=len(obj.data)
            )
            await store.put(from_file)
        got = await store.get(action(30))
        self.assertEqual(await read_all(got), obj.data)

    async def test_streaming_with_back_pressure(self) -> None:
        self.need_metadata()
        store = self.store()
        store.high_water = 16 * 1024
        body = os.urandom(2 << 20)
        await store.put(upload(body, action(9)))
        got = await store.get(action(9))
        chunks = []
        async for chunk in got.body:
            chunks.append(chunk)
            if len(chunks) % 8 == 0:
                await deferLater(0.001)
        self.assertEqual(b"".join(chunks), body)
        self.assertTrue(len(chunks) > 8, len(chunks))

    async def test_dedup(self) -> None:
        self.need_metadata()
        store = self.store()
        obj = upload(b"same bytes " * 500, action(10))
        await store.put(obj)
        await store.put(obj)
        raw = upload(b"raw", action(11))
        await store.put(raw)
        await store.put(raw)
        self.assertEqual(store.dedup_skips, 2)
        changed = upload(b"other bytes " * 500, action(10))
        await store.put(changed)
        self.assertEqual(store.dedup_skips, 2)
        self.assertEqual(await read_all(await store.get(action(10))), changed.data)

    async def test_abandoned_body_leaves_nothing_behind(self) -> None:
        self.need_metadata()
        store = self.store()
        await store.put(upload(os.urandom(1 << 20), action(12)))
        got = await store.get(action(12))
        del got
        # The connection was dropped; the next request gets a fresh one.
        await store.put(upload(b"after", action(13)))
        self.assertEqual(await read_all(await store.get(action(13))), upload(b"after", action(13)).data)

    async def test_excluded_headers(self) -> None:
        self.need_metadata()
        """
        Headers sent unsigned (what GCS needs for Accept-Encoding; S3
        servers require every x-amz-* header signed, so those are not
        candidates).
        """
        store = self.store(exclude_headers_from_signing=("if-match", "expires", "accept-encoding"), expiration=60.0)
        obj = upload(b"unsigned headers", action(14))
        await store.put(obj)
        await store.put(obj)
        self.assertEqual(store.dedup_skips, 1)
        self.assertEqual(await read_all(await store.get(action(14))), obj.data)

    async def test_minio_scheme(self) -> None:
        self.need_metadata()
        store = self.store(endpoint=parse_endpoint("minio+" + self.server.endpoint), force_path_style=False)
        obj = upload(b"minio scheme", action(15))
        await store.put(obj)
        self.assertEqual(await read_all(await store.get(action(15))), obj.data)

    async def test_virtual_host(self) -> None:
        """
        C{Host: <bucket>.localhost:<port>} (C{*.localhost} does not resolve
        here, so the client connects to 127.0.0.1 whatever the host).
        """
        self.need_metadata()
        from treq.client import HTTPClient as TreqClient
        from twisted.web.client import Agent, HTTPConnectionPool

        class Loopback:
            def endpointForURI(self, uri: Any) -> TCP4ClientEndpoint:
                return TCP4ClientEndpoint(reactor, LOCALHOST, uri.port)

        pool = HTTPConnectionPool(reactor)
        agent = Agent.usingEndpointFactory(reactor, Loopback(), pool=pool)
        endpoint = parse_endpoint(f"http://localhost:{self.server.port}")
        settings = S3Settings(
            bucket=BUCKET,
            prefix="vhost",
            endpoint=endpoint,
            region=self.server.region,
            access_key_id=self.server.access_key,
            access_key_secret=self.server.secret_key,
        )
        self.assertEqual(settings.url("k", "r"), f"http://{BUCKET}.localhost:{self.server.port}/k")
        store = S3Store(settings, cast(HTTPClient, TreqClient(agent)), reactor, run_in_thread, pool=pool)
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        obj = upload(b"virtual host", action(16))
        await store.put(obj)
        self.assertEqual(await read_all(await store.get(action(16))), obj.data)
        self.assertEqual(
            self.client.get_object(Bucket=BUCKET, Key=f"vhost/{action(16).hex()}")["Body"].read(), obj.data
        )

    async def test_wrong_secret(self) -> None:
        self.need_metadata()
        if not self.server.checks_signatures:
            raise unittest.SkipTest("no signature checks")
        good = self.store()
        await good.put(upload(b"secret body", action(17)))
        bad = self.store(access_key_secret=self.server.secret_key + "x")
        error = await self.failure(bad.get(action(17)))
        self.assertIsInstance(error, S3Error)
        self.assertNotIsInstance(error, NotFound)
        self.assertEqual((cast(S3Error, error).status, cast(S3Error, error).code), (403, "SignatureDoesNotMatch"))
        error = await self.failure(bad.put(upload(b"evil", action(17))))
        self.assertIsInstance(error, S3Error)
        self.assertEqual(await read_all(await good.get(action(17))), upload(b"secret body", action(17)).data)
        unknown = self.store(access_key_id="AKIDUNKNOWN0000000000")
        error = await self.failure(unknown.get(action(17)))
        self.assertIsInstance(error, S3Error)
        self.assertNotIsInstance(error, NotFound)

    async def test_through_the_core(self) -> None:
        """
        Cache.put uploads; a second Cache with an empty local tier gets the
        object from the bucket, decoded and verified.  A wrong secret is a
        miss.
        """
        self.need_metadata()
        store = self.store()
        first = Cache(DiskStore(self.mktemp()), store, reactor, run_in_thread, Transfers(get_timeout=10))
        first._local.probe()
        bodies = {20: b"object file " * 1000, 21: os.urandom(5000), 22: b"", 23: os.urandom(2 << 20)}
        for n, body in bodies.items():
            spool = first.new_spool(len(body))
            spool.write(body)
            await first.put(action(n), hashlib.sha256(body).digest(), spool)
        await first.close()
        self.assertEqual(first.stats.uploads, len(bodies))
        second = Cache(DiskStore(self.mktemp()), self.store(), reactor, run_in_thread, Transfers(get_timeout=10))
        second._local.probe()
        for n, body in bodies.items():
            entry = await second.get(action(n))
            assert entry is not None, n
            with open(entry.path, "rb") as f:
                self.assertEqual(f.read(), body)
        self.assertEqual(second.stats.remote_hits, len(bodies))
        await second.close()
        wrong = self.store(access_key_secret="wrong")
        third = Cache(DiskStore(self.mktemp()), wrong, reactor, run_in_thread, Transfers(get_timeout=10))
        third._local.probe()
        self.assertEqual(await third.get(action(20)), None)
        self.assertEqual(third.stats.remote_hits, 0)
        await third.close()

    async def test_concurrency(self) -> None:
        """
        64 puts, then 64 gets, all at once over the pool.
        """
        self.need_metadata()
        store = self.store(region=self.server.region)
        bodies = [os.urandom(20_000) for _ in range(64)]
        began = time.monotonic()
        await gatherResults(
            [Deferred.fromCoroutine(store.put(upload(b, action(100 + i)))) for i, b in enumerate(bodies)]
        )
        put_seconds = time.monotonic() - began

        async def fetch(i: int) -> bytes:
            return await read_all(await store.get(action(100 + i)))

        began = time.monotonic()
        got = await gatherResults([Deferred.fromCoroutine(fetch(i)) for i in range(64)])
        get_seconds = time.monotonic() - began
        self.assertEqual(got, [upload(b, action(0)).data for b in bodies])
        print(f"\n{self.server_class.__name__}: 64 puts {put_seconds:.3f}s, 64 gets {get_seconds:.3f}s")

    # helpers

    async def failure(self, coroutine: Any) -> BaseException:
        try:
            await coroutine
        except Exception as e:  # noqa: BLE001 - returned to the test
            return e
        raise AssertionError("expected a failure")


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


class MotoTests(ServerMixin, unittest.TestCase):
    server_class = MotoServer
    keeps_metadata = False

    async def test_get_of_our_object_is_never_a_hit(self) -> None:
        """
        moto lost the underscore metadata: the get is an error (never a
        hit, never a silent miss that would hide the problem).
        """
        store = self.store()
        await store.put(upload(b"lost metadata", action(30)))
        error = await self.failure(store.get(action(30)))
        self.assertIsInstance(error, S3Error)
        self.assertIn('metadata "output_id" not found', str(error))


class SeaweedFSTests(ServerMixin, unittest.TestCase):
    server_class = SeaweedFS


class MinIOTests(ServerMixin, unittest.TestCase):
    server_class = MinIO


class Silent(Protocol):
    """
    Accepts a connection and never answers.
    """

    connections: ClassVar[list[Silent]] = []

    def connectionMade(self) -> None:
        self.lost: Deferred[None] = Deferred()
        Silent.connections.append(self)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.lost.callback(None)


class NoServerTests(StoreFactory, unittest.TestCase):
    """
    Connection failures, timeouts and cancellation on real sockets.
    """

    def setUp(self) -> None:
        self.quiet()
        Silent.connections = []
        port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface=LOCALHOST)
        self.addCleanup(port.stopListening)
        self.silent_port = port.getHost().port

    def at(self, port: int, **overrides: Any) -> S3Store:
        class Server:
            endpoint = f"http://{LOCALHOST}:{port}"
            access_key = "AKID"
            secret_key = "secret"

        self.server = cast(S3Server, Server())
        return self.store(**overrides)

    async def test_refused_is_retried_then_an_error(self) -> None:
        store = self.at(free_port(), region="us-east-1")
        began = time.monotonic()
        try:
            await store.get(action(1))
        except S3Error as e:
            self.assertIn("ConnectionRefused", str(e))
        else:
            self.fail("expected S3Error")
        # Three attempts (Twisted's HostnameEndpoint reports a refusal after
        # its 0.3 s attempt delay) and two backoffs.
        self.assertLess(time.monotonic() - began, 3.0)

    async def test_timeout_cancels_the_request(self) -> None:
        store = self.at(self.silent_port, region="us-east-1")
        d = Deferred.fromCoroutine(store.get(action(2)))
        d.addTimeout(0.3, reactor)
        began = time.monotonic()
        try:
            await d
        except DeferredTimeout:
            pass
        else:
            self.fail("expected a timeout")
        self.assertLess(time.monotonic() - began, 1.0)
        self.assertEqual(len(Silent.connections), 1, "no retry after a cancel")
        await Silent.connections[0].lost

    async def test_cancelled_put(self) -> None:
        store = self.at(self.silent_port, region="us-east-1")
        d = Deferred.fromCoroutine(store.put(upload(os.urandom(100_000), action(3))))
        reactor.callLater(0.2, d.cancel)
        try:
            await d
        except CancelledError:
            pass
        else:
            self.fail("expected CancelledError")
        await gatherResults([c.lost for c in Silent.connections])

    async def test_region_probe_gives_up(self) -> None:
        store = self.at(self.silent_port, region="")
        store.region_timeout = 0.3
        d = Deferred.fromCoroutine(store.get(action(4)))
        d.addTimeout(1.5, reactor)
        try:
            await d
        except DeferredTimeout:
            pass
        # The fallback: AWS_REGION/AWS_DEFAULT_REGION, the profile, us-east-1.
        self.assertTrue(store.region)
        await gatherResults([c.lost for c in Silent.connections])

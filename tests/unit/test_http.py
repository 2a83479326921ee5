"""
Tests for the C{http} backend (L{cacheprog.remote.http}) and the protocol
helpers it shares with the proxy (L{cacheprog.remote.httpcontract}).

The client is tested together with the server: L{HTTPStore} talks through
L{treq.testing.StubTreq} (a real twisted.web L{Site} over an in-memory
connection) to L{StorageResource} over a L{MemoryStore}.  Resources that
misbehave on purpose check the client's error handling.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from cacheprog import compression
from cacheprog.cache import Cache, inline_runner
from cacheprog.config import ConfigError, parse
from cacheprog.interfaces import NotFound, RemoteObject, UploadObject
from cacheprog.local import DiskStore
from cacheprog.proxy.storage import StorageResource
from cacheprog.remote import factory
from cacheprog.remote import httpcontract as contract
from cacheprog.remote.http import MAX_PERSISTENT_PER_HOST, HTTPStorageError, HTTPStore
from cacheprog.remote.httpconfig import HTTPSettings
from cacheprog.remote.memory import MemoryStore
from cacheprog.settings import Transfers

from .helpers import WHEN, action, output_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = "http://proxy.test:8080"


def upload(n: int, body: bytes) -> UploadObject:
    """
    C{body} encoded as the core would upload it under C{action(n)}.
    """
    algorithm, data = compression.encode(body)
    md5, sha = compression.checksums(data)
    return UploadObject(action(n), output_of(body), len(body), algorithm, data, md5, sha)


async def drain(obj: RemoteObject) -> bytes:
    return b"".join([chunk async for chunk in obj.body])


class Recorder(Resource):
    """
    Wraps a resource; records method, path and headers of every request.
    """

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self.inner = inner
        self.requests: list[tuple[bytes, bytes, dict[bytes, list[bytes]]]] = []

    def getChildWithDefault(self, name: bytes, request: Any) -> Any:
        self.requests.append((request.method, request.uri, dict(request.requestHeaders.getAllRawHeaders())))
        return self.inner.getChildWithDefault(name, request)


class Canned(Resource):
    """
    Answers every request with a fixed status, headers and body.
    """

    isLeaf = True

    def __init__(self, code: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        super().__init__()
        self.code = code
        self.headers = headers or {}
        self.body = body

    def render(self, request: Any) -> bytes:
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body


class Stalled(Resource):
    """
    Never answers (or answers headers and C{prefix}, then stalls); keeps the
    requests to look at whether the client went away.
    """

    isLeaf = True

    def __init__(self, headers: dict[str, str] | None = None, prefix: bytes = b"") -> None:
        super().__init__()
        self.headers = headers
        self.prefix = prefix
        self.lost: list[object] = []
        self.requests: list[Any] = []

    def render(self, request: Any) -> int:
        self.requests.append(request)
        request.notifyFinish().addErrback(self.lost.append)
        if self.headers is not None:
            for name, value in self.headers.items():
                request.setHeader(name, value)
            request.write(self.prefix)
        return NOT_DONE_YET


def _object_headers(body: bytes, **override: str) -> dict[str, str]:
    headers = {
        "Content-Length": str(len(body)),
        contract.OUTPUT_ID: output_of(body).hex(),
        contract.LAST_MODIFIED: "Wed, 06 May 2026 07:08:09 GMT",
        contract.COMPRESSION: "",
        contract.UNCOMPRESSED_SIZE: str(len(body)),
    }
    headers.update(override)
    return {k: v for k, v in headers.items() if v != "<absent>"}


class ContractTests(SynchronousTestCase):
    """
    The pure helpers of L{cacheprog.remote.httpcontract}.
    """

    def test_object_url(self) -> None:
        """
        The object URL is the base URL's path (one trailing slash dropped)
        plus C{/cache/<lowercase hex>}.
        """
        key = bytes(range(32))
        self.assertEqual(contract.object_url("http://h:1", key), f"http://h:1/cache/{key.hex()}")
        self.assertEqual(contract.object_url("http://h/", key), f"http://h/cache/{key.hex()}")
        self.assertEqual(contract.object_url("http://h/p/", key), f"http://h/p/cache/{key.hex()}")
        self.assertEqual(contract.object_url("https://h/a/b", key), f"https://h/a/b/cache/{key.hex()}")

    def test_object_url_query(self) -> None:
        """
        A query string in the base URL stays the query string (the reference
        appended the path after it).
        """
        key = bytes(32)
        self.assertEqual(
            contract.object_url("http://h/p/?token=a%20b&x=1", key),
            f"http://h/p/cache/{key.hex()}?token=a%20b&x=1",
        )

    def test_parse_key(self) -> None:
        """
        A key is exactly 64 lowercase hex digits; anything else is refused.
        """
        self.assertEqual(contract.parse_key("ab" * 32), b"\xab" * 32)
        self.assertEqual(contract.parse_key(b"0f" * 32), b"\x0f" * 32)
        for bad in ["AB" * 32, "ab" * 31 + "a", "ab" * 32 + "a", "ab" * 31, "", "..", "../" + "a" * 61, "g" * 64]:
            self.assertRaises(contract.ContractError, contract.parse_key, bad)

    def test_parse_hex(self) -> None:
        """
        Hex headers must be present, hex (either case) and of the right size.
        """
        self.assertEqual(contract.parse_hex("X", "AbCd", 2), b"\xab\xcd")
        for bad in [None, "", "abc", "zz", "ab cd", " abcd", "abcdef"]:
            self.assertRaises(contract.ContractError, contract.parse_hex, "X", bad, 2)

    def test_parse_size(self) -> None:
        """
        Sizes are plain non-negative decimals.
        """
        self.assertEqual(contract.parse_size("X", "0"), 0)
        self.assertEqual(contract.parse_size("X", "12345"), 12345)
        for bad in [None, "", "-1", "1.5", "0x10", "ten", "1e3"]:
            self.assertRaises(contract.ContractError, contract.parse_size, "X", bad)

    def test_compression(self) -> None:
        """
        The algorithm is optional (raw) or a short token.
        """
        self.assertEqual(contract.parse_compression(None), "")
        self.assertEqual(contract.parse_compression("zstd"), "zstd")
        self.assertRaises(contract.ContractError, contract.parse_compression, "zstd; rm -rf /")
        self.assertRaises(contract.ContractError, contract.parse_compression, "x" * 33)

    def test_dates(self) -> None:
        """
        C{Last-Modified} is written in GMT whatever the time zone, and read
        back to the same instant.
        """
        paris = datetime(2026, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
        text = contract.format_http_date(paris)
        self.assertEqual(text, "Wed, 06 May 2026 07:08:09 GMT")
        self.assertEqual(contract.parse_http_date(text), paris)
        self.assertEqual(contract.format_http_date(datetime(2026, 5, 6, 7, 8, 9)), text)
        self.assertRaises(contract.ContractError, contract.parse_http_date, None)
        self.assertRaises(contract.ContractError, contract.parse_http_date, "yesterday")


class CheckTests(SynchronousTestCase):
    """
    L{factory.check} for the C{http} type.
    """

    def check(self, *argv: str, environ: dict[str, str] | None = None) -> factory.RemotePlan:
        return factory.check(parse(["--remote-storage-type", "http", *argv], environ or {}), environ or {})

    def test_plan(self) -> None:
        """
        The plan carries the base URL and the extra headers.
        """
        plan = self.check("--http-storage-base-url", "http://h:1/p", "--http-storage-extra-headers", "A: 1", "B:2")
        self.assertEqual(plan, HTTPSettings("http://h:1/p", {"A": "1", "B": "2"}))

    def test_environment(self) -> None:
        """
        The variables work as the flags do.
        """
        plan = self.check(
            environ={
                "CACHEPROG_HTTP_STORAGE_BASE_URL": "https://proxy",
                "CACHEPROG_HTTP_STORAGE_EXTRA_HEADERS": "Authorization:Bearer x,X-Team:go",
            }
        )
        assert isinstance(plan, HTTPSettings)
        self.assertEqual(plan.headers, {"Authorization": "Bearer x", "X-Team": "go"})

    def test_missing_url(self) -> None:
        """
        The http type needs a base URL; the message names the flag and variable.
        """
        e = self.assertRaises(ConfigError, self.check)
        self.assertIn("--http-storage-base-url", str(e))
        self.assertIn("CACHEPROG_HTTP_STORAGE_BASE_URL", str(e))

    def test_bad_scheme(self) -> None:
        """
        Only http and https URLs are accepted.
        """
        e = self.assertRaises(ConfigError, self.check, "--http-storage-base-url", "ftp://h/")
        self.assertIn("--http-storage-base-url", str(e))

    def test_bad_header_name(self) -> None:
        """
        A header name that is not an HTTP token is refused.
        """
        e = self.assertRaises(
            ConfigError, self.check, "--http-storage-base-url", "http://h", "--http-storage-extra-headers", "a b:c"
        )
        self.assertIn("--http-storage-extra-headers", str(e))


class CreateTests(SynchronousTestCase):
    """
    L{HTTPStore.create}: its own persistent pool.
    """

    def test_pool(self) -> None:
        """
        The store owns a persistent pool keeping at least 16 idle connections
        per host, and L{HTTPStore.close} closes its cached connections.
        """
        reactor = MemoryReactorClock()
        store = factory.build(HTTPSettings(BASE), reactor, inline_runner)
        assert isinstance(store, HTTPStore)
        pool = store._pool
        assert pool is not None
        self.assertTrue(pool.persistent)
        self.assertGreaterEqual(pool.maxPersistentPerHost, 16)
        self.assertEqual(MAX_PERSISTENT_PER_HOST, 16)
        self.successResultOf(Deferred.fromCoroutine(store.close()))


class StoreTestsMixin:
    """
    Shared set-up: an L{HTTPStore} talking to a resource through StubTreq.
    """

    def client(self, resource: Resource, base: str = BASE, headers: dict[str, str] | None = None) -> HTTPStore:
        self.stub = StubTreq(resource)
        return HTTPStore(base, headers or {}, cast(Any, self.stub))

    def call(self, coro: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred.fromCoroutine(coro)
        self.stub.flush()
        return d


class RoundTripTests(StoreTestsMixin, SynchronousTestCase):
    """
    L{HTTPStore} against L{StorageResource} over a L{MemoryStore}.
    """

    def setUp(self) -> None:
        self.memory = MemoryStore()
        root = Resource()
        root.putChild(b"cache", StorageResource(self.memory))
        self.recorder = Recorder(root)
        self.store = self.client(self.recorder, headers={"Authorization": "Bearer t0ken"})

    def test_round_trip(self) -> None:
        """
        What is put comes back with its OutputID, sizes, compression,
        modification time and stored bytes.
        """
        obj = upload(1, b"hello, proxy " * 1000)
        self.assertEqual(obj.compression, "zstd")
        self.successResultOf(self.call(self.store.put(obj)))
        stored = self.memory.objects[action(1)]
        self.assertEqual((stored.output_id, stored.size, stored.data), (obj.output_id, obj.size, obj.data))
        got = self.successResultOf(self.call(self.store.get(action(1))))
        self.assertEqual(
            (got.output_id, got.size, got.compression, got.stored_size),
            (obj.output_id, obj.size, "zstd", len(obj.data)),
        )
        self.assertEqual(got.mtime, stored.mtime.replace(microsecond=0))
        self.assertEqual(self.successResultOf(self.call(drain(got))), obj.data)

    def test_raw_and_empty(self) -> None:
        """
        Raw (incompressible) and empty objects round-trip too.
        """
        for n, body in [(1, os.urandom(3000)), (2, b"")]:
            obj = upload(n, body)
            self.assertEqual(obj.compression, "")
            self.successResultOf(self.call(self.store.put(obj)))
            got = self.successResultOf(self.call(self.store.get(action(n))))
            self.assertEqual((got.size, got.stored_size, got.output_id), (len(body), len(body), output_of(body)))
            self.assertEqual(self.successResultOf(self.call(drain(got))), body)

    def test_not_found(self) -> None:
        """
        An absent key raises L{NotFound}.
        """
        self.failureResultOf(self.call(self.store.get(action(9))), NotFound)

    def test_wire(self) -> None:
        """
        Requests go to C{/cache/<lowercase hex>} with the protocol headers in
        hex, and the extra headers on every request.
        """
        obj = upload(1, b"wire")
        self.successResultOf(self.call(self.store.put(obj)))
        self.failureResultOf(self.call(self.store.get(action(2))), NotFound)
        (put_method, put_uri, put_headers), (get_method, get_uri, get_headers) = self.recorder.requests
        self.assertEqual((put_method, put_uri), (b"PUT", b"/cache/" + action(1).hex().encode()))
        self.assertEqual((get_method, get_uri), (b"GET", b"/cache/" + action(2).hex().encode()))
        for headers in (put_headers, get_headers):
            self.assertEqual(headers[b"Authorization"], [b"Bearer t0ken"])
        self.assertEqual(put_headers[b"X-Cacheprog-Outputid"], [obj.output_id.hex().encode()])
        self.assertEqual(put_headers[b"X-Cacheprog-Md5sum"], [obj.md5.hex().encode()])
        self.assertEqual(put_headers[b"X-Cacheprog-Sha256sum"], [obj.sha256.hex().encode()])
        self.assertEqual(put_headers[b"X-Cacheprog-Uncompressedsize"], [b"4"])
        self.assertEqual(put_headers[b"Content-Length"], [b"4"])

    def test_base_path_and_query(self) -> None:
        """
        A base URL with a path and a query string: the path prefixes
        C{/cache/...}, the query string is sent as a query string.
        """
        outer = Resource()
        outer.putChild(b"p", self.recorder)
        store = self.client(outer, base=BASE + "/p/?token=abc")
        self.failureResultOf(self.call(store.get(action(3))), NotFound)
        self.assertEqual(self.recorder.requests[-1][1], b"/p/cache/" + action(3).hex().encode() + b"?token=abc")

    def test_through_core(self) -> None:
        """
        The core over the http backend: a put is uploaded through the proxy
        resource, and after the local tier is wiped a get is a remote hit
        with the same content.
        """
        body = b"package archive " * 500
        local = DiskStore(self.mktemp())
        local.probe()
        cache = Cache(local, self.store, Clock(), settings=Transfers())
        spool = cache.new_spool(len(body))
        spool.write(body)
        self.successResultOf(self.call(cache.put(action(5), output_of(body), spool)))
        self.stub.flush()
        self.assertIn(action(5), self.memory.objects)

        fresh = DiskStore(self.mktemp())
        fresh.probe()
        cache = Cache(fresh, self.store, Clock(), settings=Transfers())
        entry = self.successResultOf(self.call(cache.get(action(5))))
        assert entry is not None
        with open(entry.path, "rb") as f:
            self.assertEqual(f.read(), body)
        self.assertEqual(cache.stats.remote_hits, 1)


class ErrorTests(StoreTestsMixin, SynchronousTestCase):
    """
    How the client treats servers that answer other than the happy path.
    """

    def test_put_any_2xx(self) -> None:
        """
        201 and 204 answer a put as well as 200 (the reference wanted exactly 200).
        """
        for code in (200, 201, 204):
            store = self.client(Canned(code))
            self.successResultOf(self.call(store.put(upload(1, b"x"))))

    def test_put_error(self) -> None:
        """
        A non-2xx put is an error naming the status and (the start of) the body.
        """
        store = self.client(Canned(500, body=b"disk full" + b"!" * 5000))
        failure = self.failureResultOf(self.call(store.put(upload(1, b"x"))), HTTPStorageError)
        self.assertIn("500", str(failure.value))
        self.assertIn("disk full", str(failure.value))
        self.assertLess(len(str(failure.value)), 1300)

    def test_get_error(self) -> None:
        """
        A get answered other than 200 or 404 is an error with the body text.
        """
        store = self.client(Canned(503, body=b"switched off"))
        failure = self.failureResultOf(self.call(store.get(action(1))), HTTPStorageError)
        self.assertIn("503", str(failure.value))
        self.assertIn("switched off", str(failure.value))

    def test_missing_output_id(self) -> None:
        """
        A 200 without C{X-Cacheprog-OutputID} is an error, not an object with
        an empty id.
        """
        store = self.client(Canned(200, _object_headers(b"abc", **{contract.OUTPUT_ID: "<absent>"}), b"abc"))
        failure = self.failureResultOf(self.call(store.get(action(1))), HTTPStorageError)
        self.assertIn(contract.OUTPUT_ID, str(failure.value))

    def test_bad_metadata(self) -> None:
        """
        A bad OutputID, size or date, or a missing size or date, is an error.
        """
        for override in [
            {contract.OUTPUT_ID: "xyz"},
            {contract.OUTPUT_ID: "abcd"},
            {contract.UNCOMPRESSED_SIZE: "-3"},
            {contract.UNCOMPRESSED_SIZE: "<absent>"},
            {contract.LAST_MODIFIED: "<absent>"},
            {contract.LAST_MODIFIED: "soon"},
        ]:
            store = self.client(Canned(200, _object_headers(b"abc", **override), b"abc"))
            self.failureResultOf(self.call(store.get(action(1))), HTTPStorageError)

    def test_unknown_length(self) -> None:
        """
        A body without a Content-Length (chunked) is an error.
        """
        resource = Stalled(headers=_object_headers(b"abc", **{"Content-Length": "<absent>"}), prefix=b"abc")
        store = self.client(resource)
        d = self.call(store.get(action(1)))
        failure = self.failureResultOf(d, HTTPStorageError)
        self.assertIn("content-length is unknown", str(failure.value))

    def test_cancel_request(self) -> None:
        """
        Cancelling a get that waits for its answer drops the connection: the
        server sees the client go away.
        """
        resource = Stalled()
        store = self.client(resource)
        d = self.call(store.get(action(1)))
        self.assertNoResult(d)
        self.assertEqual(len(resource.requests), 1)
        d.cancel()
        self.stub.flush()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(resource.lost), 1)

    def test_cancel_body(self) -> None:
        """
        Cancelling a read of a body that stalls mid-way drops the connection.
        """
        body = b"0123456789" * 10
        resource = Stalled(headers=_object_headers(body), prefix=body[:40])
        store = self.client(resource)
        obj = self.successResultOf(self.call(store.get(action(1))))
        first = self.successResultOf(self.call(obj.body.__anext__()))
        self.assertEqual(first, body[:40])
        d = self.call(obj.body.__anext__())
        self.assertNoResult(d)
        d.cancel()
        self.stub.flush()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(resource.lost), 1)

    def test_abandoned_body(self) -> None:
        """
        A body dropped unread (the core does that for an unknown compression)
        drops its connection instead of leaving it half read.
        """
        body = b"x" * 100
        resource = Stalled(headers=_object_headers(body), prefix=body[:10])
        store = self.client(resource)
        obj = self.successResultOf(self.call(store.get(action(1))))
        del obj
        self.stub.flush()
        self.assertEqual(len(resource.lost), 1)

    def test_short_body(self) -> None:
        """
        A connection lost before the promised Content-Length is a failed read.
        """
        body = b"y" * 100
        resource = Stalled(headers=_object_headers(body), prefix=body[:10])
        store = self.client(resource)
        obj = self.successResultOf(self.call(store.get(action(1))))
        d = self.call(drain(obj))
        resource.requests[0].channel.transport.loseConnection()
        self.stub.flush()
        self.failureResultOf(d)


class CoreTimeoutTests(StoreTestsMixin, SynchronousTestCase):
    """
    The core's time limits reach the HTTP request.
    """

    def test_download_deadline_cancels_request(self) -> None:
        """
        A get that never answers: go is answered "miss" at the get timeout,
        and at the download deadline the core cancels the fetch, which
        drops the HTTP connection.
        """
        resource = Stalled()
        store = self.client(resource)
        clock = Clock()
        local = DiskStore(self.mktemp())
        local.probe()
        cache = Cache(local, store, clock, settings=Transfers(get_timeout=1.0))
        d = self.call(cache.get(action(1)))
        clock.advance(1.0)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(resource.lost, [])
        clock.advance(600)
        self.stub.flush()
        self.assertEqual(len(resource.lost), 1)


class ReadTimeoutTests(StoreTestsMixin, SynchronousTestCase):
    """
    The pool's read timeout bounds every request, whatever the core's
    timeouts (C{--remote-get-timeout 0} hung for good on a stuck server).
    """

    def timed(self, resource: Resource, clock: Clock) -> HTTPStore:
        from cacheprog.remote.pool import TimedClient, Timeouts

        self.stub = StubTreq(resource)
        return HTTPStore(BASE, {}, TimedClient(self.stub, clock, Timeouts(read=30)), clock)

    def test_stuck_answer_is_a_miss(self) -> None:
        """
        A server that never answers: with no get timeout at all, the get is
        a miss at the read timeout and the request is dropped.
        """
        resource = Stalled()
        clock = Clock()
        store = self.timed(resource, clock)
        local = DiskStore(self.mktemp())
        local.probe()
        cache = Cache(local, store, clock, settings=Transfers(get_timeout=0))
        d = self.call(cache.get(action(1)))
        clock.advance(29)
        self.assertNoResult(d)
        clock.advance(1)
        self.stub.flush()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(resource.lost), 1)

    def test_stalled_body(self) -> None:
        """
        A body that stops mid-way fails at the read timeout.
        """
        body = b"z" * 100
        resource = Stalled(headers=_object_headers(body), prefix=body[:10])
        clock = Clock()
        store = self.timed(resource, clock)
        obj = self.successResultOf(self.call(store.get(action(1))))
        self.assertEqual(self.successResultOf(self.call(obj.body.__anext__())), body[:10])
        d = self.call(obj.body.__anext__())
        clock.advance(30)
        self.stub.flush()
        from cacheprog.remote.body import BodyTimeout

        self.failureResultOf(d, BodyTimeout)
        self.assertEqual(len(resource.lost), 1)


class StoredTimeTests(SynchronousTestCase):
    """
    Times survive the trip.
    """

    def test_mtime(self) -> None:
        """
        The object's modification time comes back from C{Last-Modified}.
        """
        memory = MemoryStore()
        root = Resource()
        root.putChild(b"cache", StorageResource(memory))
        stub = StubTreq(root)
        store = HTTPStore(BASE, {}, cast(Any, stub))
        d: Deferred[None] = Deferred.fromCoroutine(store.put(upload(1, b"t")))
        stub.flush()
        self.successResultOf(d)
        memory.objects[action(1)] = memory.objects[action(1)].__class__(
            output_id=output_of(b"t"), size=1, compression="", data=b"t", mtime=WHEN
        )
        got: Deferred[RemoteObject] = Deferred.fromCoroutine(store.get(action(1)))
        stub.flush()
        self.assertEqual(self.successResultOf(got).mtime, WHEN)
        self.assertEqual(hashlib.sha256(b"t").digest(), output_of(b"t"))

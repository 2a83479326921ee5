"""
Tests for the storage protocol (L{cacheprog.proxy.storage}), through
L{treq.testing.StubTreq} (a real HTTP client and server over an in-memory
connection) and, for what a client library would not send (no
Content-Length, odd paths, a client that goes away), raw bytes into the
proxy's site's HTTP channel.

Every refusal is checked twice: the status is 4xx, and the store saw no put.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from cacheprog import compression
from cacheprog.interfaces import RemoteObject, UploadObject
from cacheprog.proxy.site import build_site
from cacheprog.proxy.storage import HashingFile, StorageResource
from cacheprog.remote import httpcontract as contract
from cacheprog.remote.breaker import BreakerStore
from cacheprog.remote.disabled import DisabledStore
from cacheprog.remote.memory import MemoryStore

from .helpers import WHEN, GatedStore, action, output_of

HOST = "http://proxy.test"
KEY = action(1).hex()


def put_headers(body: bytes, **override: str) -> dict[str, str]:
    """
    The headers of a correct PUT of raw C{body}; C{override} replaces some
    (C{"<absent>"} removes one).
    """
    headers = {
        contract.OUTPUT_ID: output_of(body).hex(),
        contract.MD5_SUM: hashlib.md5(body).hexdigest(),
        contract.SHA256_SUM: hashlib.sha256(body).hexdigest(),
        contract.COMPRESSION: "",
        contract.UNCOMPRESSED_SIZE: str(len(body)),
    }
    headers.update(override)
    return {k: v for k, v in headers.items() if v != "<absent>"}


class Failing:
    """
    A store whose calls fail.
    """

    name = "failing"

    async def get(self, action_id: bytes) -> RemoteObject:
        raise OSError("backend exploded")

    async def put(self, obj: UploadObject) -> None:
        raise OSError("backend is read-only")

    async def close(self) -> None:
        return None


class Lying(MemoryStore):
    """
    A memory store whose objects claim another stored size than they have.
    """

    async def get(self, action_id: bytes) -> RemoteObject:
        obj = await super().get(action_id)
        return RemoteObject(obj.output_id, obj.size, obj.mtime, obj.compression, obj.stored_size + 10, obj.body)


class SiteMixin:
    """
    A L{ProxySite} over C{self.store} behind a StubTreq client.
    """

    store: Any

    def setUp(self) -> None:
        self.store = self.make_store()
        self.stub: Any = StubTreq(Resource())
        # StubTreq serves its resource with a plain Site; serve ours instead,
        # so the body hashing and request tracking of ProxySite are in play.
        self.reactor = self.stub._agent._memoryReactor
        self.site = build_site(self.store, reactor=self.reactor)
        self.stub._agent._serverFactory = self.site

    def make_store(self) -> Any:
        return MemoryStore()

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, data: bytes | None = None
    ) -> tuple[Any, bytes]:
        """
        One request; its response and whole body.
        """
        d = self.stub.request(method, HOST + path, headers=headers or {}, data=data)
        self.stub.flush()
        response = self.successResultOf(d)  # type: ignore[attr-defined]
        body = response.content()
        self.stub.flush()
        return response, self.successResultOf(body)  # type: ignore[attr-defined]

    def put(self, body: bytes, key: str = KEY, **override: str) -> tuple[Any, bytes]:
        return self.request("PUT", f"/cache/{key}", put_headers(body, **override), body)

    def raw(self, data: bytes) -> tuple[bytes, StringTransport, Any]:
        """
        Feed raw bytes to a new connection of the site.

        @return: what the site answered, its transport, and the channel.
        """
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        return transport.value(), transport, channel


def header(response: Any, name: str) -> str | None:
    if name.lower() == "content-length":
        return str(response.length)
    values = response.headers.getRawHeaders(name.encode("ascii"))
    return values[0].decode("latin-1") if values else None


class StorageTests(SiteMixin, SynchronousTestCase):
    """
    The storage protocol over a L{MemoryStore}.
    """

    def assertRefused(self, response: Any, body: bytes = b"") -> None:
        """
        A 4xx, and nothing stored.
        """
        self.assertTrue(400 <= response.code < 500, f"{response.code}: {body!r}")
        self.assertEqual((self.store.puts, self.store.objects), (0, {}))

    def test_round_trip(self) -> None:
        """
        PUT answers 200 with an empty body; GET answers the stored bytes with
        their metadata and Content-Length.
        """
        body = b"an object " * 100
        response, text = self.put(body)
        self.assertEqual((response.code, text), (200, b""))
        self.assertEqual(self.store.objects[action(1)].data, body)
        response, text = self.request("GET", f"/cache/{KEY}")
        self.assertEqual((response.code, text), (200, body))
        self.assertEqual(header(response, "Content-Length"), str(len(body)))
        self.assertEqual(header(response, contract.OUTPUT_ID), output_of(body).hex())
        self.assertEqual(header(response, contract.COMPRESSION), "")
        self.assertEqual(header(response, contract.UNCOMPRESSED_SIZE), str(len(body)))
        self.assertTrue(header(response, contract.LAST_MODIFIED).endswith(" GMT"))  # type: ignore[union-attr]
        self.assertEqual(header(response, "Content-Type"), "application/octet-stream")

    def test_compressed(self) -> None:
        """
        Compressed objects are stored and served as they are, with their
        algorithm and uncompressed size.
        """
        raw = b"compress me " * 1000
        _, data = compression.encode(raw)
        headers = put_headers(
            data,
            **{
                contract.OUTPUT_ID: output_of(raw).hex(),
                contract.COMPRESSION: "zstd",
                contract.UNCOMPRESSED_SIZE: str(len(raw)),
            },
        )
        response, _ = self.request("PUT", f"/cache/{KEY}", headers, data)
        self.assertEqual(response.code, 200)
        response, text = self.request("GET", f"/cache/{KEY}")
        self.assertEqual(text, data)
        self.assertEqual(header(response, contract.COMPRESSION), "zstd")
        self.assertEqual(header(response, contract.UNCOMPRESSED_SIZE), str(len(raw)))

    def test_large_body(self) -> None:
        """
        A body too large for memory (twisted.web spools it to a temporary
        file) is hashed as it arrives and stored whole.
        """
        body = os.urandom(300_000)
        content = self.site.getContentFile(len(body))
        self.assertIsInstance(content, HashingFile)
        response, _ = self.put(body)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.store.objects[action(1)].data, body)
        _, text = self.request("GET", f"/cache/{KEY}")
        self.assertEqual(text, body)

    def test_big_get_in_pieces(self) -> None:
        """
        A stored body larger than the write size is served whole.
        """
        body = os.urandom(3 * 1024 * 1024 + 17)
        self.assertEqual(self.put(body)[0].code, 200)
        response, text = self.request("GET", f"/cache/{KEY}")
        self.assertEqual((response.code, hashlib.sha256(text).digest()), (200, hashlib.sha256(body).digest()))

    def test_empty_object(self) -> None:
        """
        An empty object has Content-Length 0 both ways.
        """
        self.assertEqual(self.put(b"")[0].code, 200)
        response, text = self.request("GET", f"/cache/{KEY}")
        self.assertEqual((response.code, text, header(response, "Content-Length")), (200, b"", "0"))

    def test_not_found(self) -> None:
        """
        GET and HEAD of an absent key: 404, empty body.
        """
        for method in ("GET", "HEAD"):
            response, text = self.request(method, f"/cache/{KEY}")
            self.assertEqual((response.code, text), (404, b""))

    def test_head(self) -> None:
        """
        HEAD answers the headers of GET, with no body.
        """
        body = b"head me"
        self.put(body)
        response, text = self.request("HEAD", f"/cache/{KEY}")
        self.assertEqual((response.code, text), (200, b""))
        self.assertEqual(header(response, contract.OUTPUT_ID), output_of(body).hex())
        answer, _, _ = self.raw(b"HEAD /cache/" + KEY.encode() + b" HTTP/1.1\r\nHost: p\r\n\r\n")
        head, _, rest = answer.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: %d" % len(body), head)
        self.assertEqual(rest, b"")

    def test_last_modified_utc(self) -> None:
        """
        C{Last-Modified} is in GMT whatever the zone of the stored time.
        """
        self.put(b"x")
        stored = self.store.objects[action(1)]
        self.store.objects[action(1)] = type(stored)(
            stored.output_id,
            stored.size,
            stored.compression,
            stored.data,
            WHEN.astimezone(timezone(timedelta(hours=5))),
        )
        response, _ = self.request("GET", f"/cache/{KEY}")
        self.assertEqual(header(response, contract.LAST_MODIFIED), "Wed, 06 May 2026 07:08:09 GMT")

    def test_methods(self) -> None:
        """
        Other methods on an object path: 405 with C{Allow}.
        """
        for method in ("POST", "DELETE", "PATCH"):
            response, _ = self.request(method, f"/cache/{KEY}")
            self.assertEqual(response.code, 405)
            self.assertEqual(header(response, "Allow"), "GET, HEAD, PUT")
        self.assertEqual(self.store.puts, 0)

    def test_other_paths(self) -> None:
        """
        Paths other than C{/cache/<key>}, C{/health}, C{/metrics}: 404.
        """
        for path in ["/", "/cache", "/cache/", f"/cache/{KEY}/extra", f"/x/cache/{KEY}", "/healthz", "/health/x"]:
            response, _ = self.request("GET", path)
            self.assertEqual(response.code, 404, path)

    def test_bad_keys(self) -> None:
        """
        Keys that are not exactly 64 lowercase hex digits are refused, and
        nothing is stored.
        """
        body = b"x"
        for key in [
            KEY.upper(),
            KEY[:63],
            KEY + "0",
            "g" * 64,
            "..",
            "..%2F" + KEY[:59],
            "%2e%2e",
            KEY[:62] + "%20",
            "",
        ]:
            response, text = self.put(body, key=key)
            self.assertRefused(response, text)

    def test_traversal_raw(self) -> None:
        """
        Path traversal sent as raw bytes (no client normalising it) is 4xx.
        """
        for path in [b"/cache/../" + KEY.encode(), b"/cache/..%2f..%2f" + KEY.encode(), b"/cache/%2e%2e"]:
            body = b"x"
            headers = "".join(f"{k}: {v}\r\n" for k, v in put_headers(body).items()).encode()
            answer, _, _ = self.raw(
                b"PUT " + path + b" HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\n" + headers + b"\r\nx"
            )
            self.assertRegex(answer, rb"^HTTP/1.1 4\d\d ")
        self.assertEqual((self.store.puts, self.store.objects), (0, {}))

    def test_missing_headers(self) -> None:
        """
        Each required header missing: 400, nothing stored.
        """
        for name in (contract.OUTPUT_ID, contract.MD5_SUM, contract.SHA256_SUM, contract.UNCOMPRESSED_SIZE):
            response, text = self.put(b"body", **{name: "<absent>"})
            self.assertEqual(response.code, 400, name)
            self.assertIn(name.encode(), text)
            self.assertRefused(response)

    def test_invalid_headers(self) -> None:
        """
        Malformed header values: 400, nothing stored.
        """
        for name, value in [
            (contract.OUTPUT_ID, "zz" * 32),
            (contract.OUTPUT_ID, "ab" * 31),
            (contract.MD5_SUM, "ab" * 32),
            (contract.MD5_SUM, "not hex"),
            (contract.SHA256_SUM, "ab"),
            (contract.UNCOMPRESSED_SIZE, "-1"),
            (contract.UNCOMPRESSED_SIZE, "ten"),
            (contract.UNCOMPRESSED_SIZE, "1.5"),
            (contract.COMPRESSION, "zstd and more"),
        ]:
            response, text = self.put(b"body", **{name: value})
            self.assertEqual(response.code, 400, (name, value))
            self.assertRefused(response, text)

    def test_checksum_mismatch(self) -> None:
        """
        A body whose MD5 or SHA-256 differs from its header: 400, nothing
        stored.
        """
        other = b"another body"
        for override in [
            {contract.MD5_SUM: hashlib.md5(other).hexdigest()},
            # Headers consistent with each other (a raw body's SHA-256 is its
            # OutputID), but not with the body.
            {contract.SHA256_SUM: hashlib.sha256(other).hexdigest(), contract.OUTPUT_ID: output_of(other).hex()},
        ]:
            response, text = self.put(b"body", **override)
            self.assertEqual(response.code, 400)
            self.assertIn(b"does not match", text)
            self.assertRefused(response)

    def test_large_mismatch(self) -> None:
        """
        A large (spooled) body that does not match its SHA-256 is refused too.
        """
        body = os.urandom(200_000)
        response, _ = self.put(body, **{contract.SHA256_SUM: hashlib.sha256(b"x").hexdigest()})
        self.assertRefused(response)

    def test_no_content_length(self) -> None:
        """
        A chunked PUT (no Content-Length): 411 from the headers, nothing stored.
        """
        body = b"body"
        headers = "".join(f"{k}: {v}\r\n" for k, v in put_headers(body).items()).encode()
        answer, _, _ = self.raw(
            b"PUT /cache/"
            + KEY.encode()
            + b" HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n"
            + headers
            + b"\r\n4\r\nbody\r\n0\r\n\r\n"
        )
        self.assertRegex(answer, rb"^HTTP/1.1 411 ")
        self.assertIn(b"Content-Length", answer)
        self.assertEqual((self.store.puts, self.store.objects), (0, {}))

    def test_size_mismatch_aborts(self) -> None:
        """
        A stored object shorter than its recorded size: the connection is
        dropped rather than the response ending short.
        """
        self.store = Lying()
        self.site = build_site(self.store, reactor=self.reactor)
        self.store.objects[action(1)] = _stored(b"short")
        _, transport, _ = self.raw(b"GET /cache/" + KEY.encode() + b" HTTP/1.1\r\nHost: p\r\n\r\n")
        self.assertTrue(transport.disconnected)
        self.flushLoggedErrors()


def _stored(data: bytes) -> Any:
    from cacheprog.remote.memory import StoredObject

    return StoredObject(output_of(data), len(data), "", data, datetime.now(timezone.utc))


class BackendTests(SiteMixin, SynchronousTestCase):
    """
    How backend outcomes become statuses.
    """

    def test_disabled(self) -> None:
        """
        With the disabled backend: GET 404, PUT 200 (the reference's
        behaviour), HEAD 404.
        """
        self.site = build_site(DisabledStore(), reactor=self.reactor)
        self.stub._agent._serverFactory = self.site
        self.assertEqual(self.put(b"x")[0].code, 200)
        self.assertEqual(self.request("GET", f"/cache/{KEY}")[0].code, 404)
        self.assertEqual(self.request("HEAD", f"/cache/{KEY}")[0].code, 404)

    def test_failures(self) -> None:
        """
        Backend errors: 500 with the error text.
        """
        self.site = build_site(Failing(), reactor=self.reactor)
        self.stub._agent._serverFactory = self.site
        response, text = self.put(b"x")
        self.assertEqual((response.code, text), (500, b"backend is read-only\n"))
        response, text = self.request("GET", f"/cache/{KEY}")
        self.assertEqual((response.code, text), (500, b"backend exploded\n"))

    def test_breaker_open(self) -> None:
        """
        When the breaker has switched the backend off: 503.
        """
        store = BreakerStore(Failing(), 1, 60.0, Clock())
        self.site = build_site(store, reactor=self.reactor)
        self.stub._agent._serverFactory = self.site
        self.assertEqual(self.request("GET", f"/cache/{KEY}")[0].code, 503)
        self.assertEqual(self.put(b"x")[0].code, 503)


class StreamedBodyStore:
    """
    A store whose objects have S3's streamed body over a connection the test
    watches (the proxy looked for C{aclose}; S3 bodies only had C{close}).
    """

    name = "streamed"

    def __init__(self) -> None:
        from tests.unit.test_body import Response

        self.response = Response()

    async def get(self, action_id: bytes) -> RemoteObject:
        from cacheprog.remote.body import BodyStream

        body = BodyStream(self.response)
        self.response.feed(b"part of a big object")
        return RemoteObject(output_of(b"x"), 1000, WHEN, "", 1000, body)

    async def put(self, obj: UploadObject) -> None:
        return None

    async def close(self) -> None:
        return None


class ReleaseTests(SiteMixin, SynchronousTestCase):
    def make_store(self) -> Any:
        return StreamedBodyStore()

    def test_head_releases_s3_body(self) -> None:
        """
        HEAD of an object whose body is S3's stream drops that connection
        instead of leaving it half read.
        """
        response, _ = self.request("HEAD", f"/cache/{KEY}")
        self.assertEqual(response.code, 200)
        self.assertTrue(self.store.response.transport._producer.aborted)


class PlainSiteTests(SynchronousTestCase):
    """
    L{StorageResource} is reusable in any site (here StubTreq's own plain
    L{Site}): bodies are then hashed after they arrived.
    """

    def setUp(self) -> None:
        self.store = MemoryStore()
        root = Resource()
        root.putChild(b"objects", StorageResource(self.store))
        self.stub: Any = StubTreq(root)

    def call(self, method: str, headers: dict[str, str], data: bytes | None = None) -> Any:
        d = self.stub.request(method, f"{HOST}/objects/{KEY}", headers=headers, data=data)
        self.stub.flush()
        return self.successResultOf(d)

    def test_round_trip(self) -> None:
        """
        PUT then GET work, and a mismatching body is refused.
        """
        body = os.urandom(150_000)
        bad = put_headers(body, **{contract.MD5_SUM: hashlib.md5(b"").hexdigest()})
        self.assertEqual(self.call("PUT", bad, body).code, 400)
        self.assertEqual(self.store.puts, 0)
        self.assertEqual(self.call("PUT", put_headers(body), body).code, 200)
        response = self.call("GET", {})
        content = response.content()
        self.stub.flush()
        self.assertEqual(self.successResultOf(content), body)


class DisconnectTests(SiteMixin, SynchronousTestCase):
    """
    Clients that go away cancel the store call they were waiting for.
    """

    def make_store(self) -> Any:
        return GatedStore()

    def test_disconnect_cancels_get(self) -> None:
        """
        A client that goes away while the store is fetching cancels the
        fetch; nothing is written afterwards.
        """
        _, transport, channel = self.raw(b"GET /cache/" + KEY.encode() + b" HTTP/1.1\r\nHost: p\r\n\r\n")
        self.assertEqual(len(self.store.gates), 1)
        gate = self.store.gates[0]
        storage = self.site.resource.children[b"cache"]
        self.assertEqual(storage.running(), 1)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(storage.running(), 0)
        # Fired by the cancellation, not by a release.
        self.assertTrue(gate.called)
        self.assertEqual(transport.value(), b"")

    def test_disconnect_cancels_put(self) -> None:
        """
        A client that goes away while the store is storing cancels the put.
        """
        body = b"body"
        headers = "".join(f"{k}: {v}\r\n" for k, v in put_headers(body).items()).encode()
        _, _, channel = self.raw(
            b"PUT /cache/" + KEY.encode() + b" HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\n" + headers + b"\r\nbody"
        )
        self.assertEqual(len(self.store.gates), 1)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.store.gates[0].called)
        self.assertEqual(self.store.memory.objects, {})

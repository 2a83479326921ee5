"""
Tests for L{cacheprog.remote.s3}: the store's get, put, listing, blobs and
life cycle against the fake S3.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import cast

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.test.proto_helpers import MemoryReactorClock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cacheprog import compression
from cacheprog.cache import inline_runner
from cacheprog.interfaces import NotFound, RemoteObject, UploadObject
from cacheprog.remote import factory
from cacheprog.remote.s3 import S3Store
from cacheprog.remote.s3answers import S3Error
from cacheprog.remote.s3config import object_key, parse_endpoint
from cacheprog.remote.s3request import HTTPClient
from cacheprog.remote.sigv4 import EMPTY_SHA256
from tests.unit.fakes3 import AID, BUCKET, ENDPOINT, HEX, SECRET, S3TestCase, config_for, settings, upload


class GetTests(S3TestCase):
    def stored(self, body: bytes, prefix: str = "") -> UploadObject:
        obj = upload(body)
        meta = {
            "output_id": base64.b64encode(obj.output_id).decode(),
            "compression_algorithm": obj.compression,
        }
        if obj.size:
            meta["uncompressed_size"] = str(obj.size)
        self.put_raw(object_key(prefix, AID), obj.data, meta)
        return obj

    def test_hit(self) -> None:
        body = b"compiled " * 500
        obj = self.stored(body)
        got = self.result(self.make().get(AID))
        self.assertEqual(got.output_id, obj.output_id)
        self.assertEqual(got.size, len(body))
        self.assertEqual(got.compression, "zstd")
        self.assertEqual(got.stored_size, len(obj.data))
        self.assertEqual(got.mtime.isoformat(), "2026-05-06T07:08:09+00:00")
        self.assertEqual(self.body(got), obj.data)
        request = self.fake.requests[-1]
        self.assertEqual((request.method, request.path), ("GET", f"/{BUCKET}/{HEX}"))

    def test_prefixed_key(self) -> None:
        self.stored(b"x", prefix="linux/amd64")
        self.result(self.make(prefix="linux/amd64").get(AID))
        self.assertEqual(self.fake.requests[-1].path, f"/{BUCKET}/linux/amd64/{HEX}")

    def test_size_from_content_length(self) -> None:
        output = hashlib.sha256(b"raw").digest()
        self.put_raw(HEX, b"raw", {"output_id": base64.b64encode(output).decode()}, last_modified=None)
        self.clock.advance(1_700_000_000)
        got = self.result(self.make().get(AID))
        self.assertEqual((got.size, got.stored_size, got.compression), (3, 3, ""))
        self.assertEqual(got.mtime.timestamp(), 1_700_000_000, "no Last-Modified: now")

    def test_not_found(self) -> None:
        self.failureResultOf(self.start(self.make().get(AID)), NotFound)

    def test_access_denied_is_not_found(self) -> None:
        self.fake.fail.append((403, "AccessDenied"))
        self.failureResultOf(self.start(self.make().get(AID)), NotFound)

    def test_bad_signature_is_an_error(self) -> None:
        self.fake.fail.append((403, "SignatureDoesNotMatch"))
        failure = self.failureResultOf(self.start(self.make().get(AID)), S3Error)
        self.assertEqual((failure.value.status, failure.value.code), (403, "SignatureDoesNotMatch"))

    def test_no_such_bucket_is_an_error(self) -> None:
        failure = self.failureResultOf(self.start(self.make(bucket="other").get(AID)), S3Error)
        self.assertEqual((failure.value.status, failure.value.code), (404, "NoSuchBucket"))
        self.assertIn("NoSuchBucket", str(failure.value))

    def test_missing_output_id(self) -> None:
        self.put_raw(HEX, b"data", {"compression_algorithm": ""})
        failure = self.failureResultOf(self.start(self.make().get(AID)), S3Error)
        self.assertIn('metadata "output_id" not found', str(failure.value))
        self.assertNotIsInstance(failure.value, NotFound)

    def test_bad_output_id(self) -> None:
        self.put_raw(HEX, b"data", {"output_id": "not base64!"})
        self.failureResultOf(self.start(self.make().get(AID)), S3Error)

    def test_bad_size(self) -> None:
        self.put_raw(HEX, b"data", {"output_id": "AAAA", "uncompressed_size": "many"})
        failure = self.failureResultOf(self.start(self.make().get(AID)), S3Error)
        self.assertIn("uncompressed_size", str(failure.value))

    def test_virtual_host(self) -> None:
        self.stored(b"v")
        self.result(self.make(force_path_style=False).get(AID))
        request = self.fake.requests[-1]
        self.assertEqual(request.host, f"{BUCKET}.s3.test:9000")
        self.assertEqual(request.path, f"/{HEX}")

    def test_minio_path_style(self) -> None:
        self.stored(b"m")
        self.result(self.make(force_path_style=False, endpoint=parse_endpoint("minio+http://s3.test:9000")).get(AID))
        request = self.fake.requests[-1]
        self.assertEqual(request.host, "s3.test:9000")
        self.assertEqual(request.path, f"/{BUCKET}/{HEX}")


class ListTests(S3TestCase):
    def fill(self, count: int, prefix: str = "") -> list[bytes]:
        ids = [hashlib.sha256(b"%d" % i).digest() for i in range(count)]
        for action_id in ids:
            self.put_raw(object_key(prefix, action_id), b"x", {})
        return ids

    def test_complete(self) -> None:
        """
        Every page is read; only keys of the prefix that are action IDs
        count (not manifests, not another prefix).
        """
        ids = self.fill(5, "ci/linux")
        self.fill(2, "ci/other")
        self.put_raw("ci/linux/manifests/abc", b"m", {})
        listing = self.result(self.make(prefix="ci/linux").list_keys(10))
        self.assertEqual((listing.action_ids, listing.complete), (frozenset(ids), True))
        lists = [r for r in self.fake.requests if "list-type=2" in r.uri]
        self.assertEqual(len(lists), 3)
        self.assertIn("prefix=ci%2Flinux%2F", lists[0].uri)
        self.assertIn("continuation-token=", lists[1].uri)

    def test_page_cap(self) -> None:
        self.fill(5)
        listing = self.result(self.make().list_keys(2))
        self.assertEqual((len(listing.action_ids), listing.complete), (4, False))

    def test_refused(self) -> None:
        """
        Without s3:ListBucket the listing fails (the caller then asks per
        object).
        """
        self.fake.fail.append((403, "AccessDenied"))
        failure = self.failureResultOf(self.start(self.make().list_keys(2)), S3Error)
        self.assertEqual(failure.value.code, "AccessDenied")


class PutTests(S3TestCase):
    def test_metadata(self) -> None:
        body = b"compressible " * 200
        obj = upload(body)
        self.result(self.make().put(obj))
        head, put = self.fake.requests
        self.assertEqual(head.method, "HEAD")
        self.assertEqual(head.headers["if-match"], obj.md5.hex())
        self.assertEqual(put.method, "PUT")
        self.assertEqual(put.path, f"/{BUCKET}/{HEX}")
        self.assertEqual(put.headers["x-amz-meta-output_id"], base64.b64encode(hashlib.sha256(body).digest()).decode())
        self.assertEqual(put.headers["x-amz-meta-compression_algorithm"], "zstd")
        self.assertEqual(put.headers["x-amz-meta-uncompressed_size"], str(len(body)))
        # Over plain HTTP the signed payload hash is the integrity check; a
        # second SHA-256 header would only cost another pass.
        self.assertEqual(put.headers["x-amz-content-sha256"], obj.sha256.hex())
        self.assertNotIn("x-amz-checksum-sha256", put.headers)
        self.assertEqual(put.headers["content-length"], str(len(obj.data)))
        self.assertNotIn("content-md5", put.headers)
        self.assertNotIn("expires", put.headers)
        self.assertEqual(self.fake.objects[HEX].data, obj.data)

    def test_tls_payload_unsigned(self) -> None:
        """
        Over https the body is neither hashed nor signed: TLS protects it,
        and readers check SHA-256 against the OutputID.
        """
        obj = upload(b"over tls " * 50)
        self.result(self.make(endpoint=parse_endpoint("https://s3.test:9000")).put(obj))
        put = self.fake.requests[-1]
        self.assertEqual(put.headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD")
        self.assertIn("x-amz-content-sha256", put.signed_headers)
        self.assertNotIn("x-amz-checksum-sha256", put.headers)
        self.assertNotIn("sha256", obj._sums)

    def test_known_absent_needs_no_head(self) -> None:
        """
        An object the core knows the store lacks (a miss, a complete
        listing) is written at once, without the HEAD and without its MD5.
        """
        obj = compression.prepare_upload(AID, hashlib.sha256(b"new").digest(), b"new", absent=True)
        self.result(self.make().put(obj))
        self.assertEqual([r.method for r in self.fake.requests], ["PUT"])
        self.assertNotIn("md5", obj._sums)

    def test_raw_and_empty(self) -> None:
        self.result(self.make().put(upload(b"", action_id=AID)))
        put = self.fake.requests[-1]
        self.assertEqual(put.headers["content-length"], "0")
        self.assertEqual(put.headers["x-amz-meta-compression_algorithm"], "")
        self.assertNotIn("x-amz-meta-uncompressed_size", put.headers)
        self.assertEqual(put.headers["x-amz-content-sha256"], EMPTY_SHA256)

    def test_expires(self) -> None:
        self.clock.advance(1_000_000_000)
        self.result(self.make(expiration=3600.0).put(upload(b"x")))
        self.assertEqual(self.fake.requests[-1].headers["expires"], "Sun, 09 Sep 2001 02:46:40 GMT")

    def test_dedup(self) -> None:
        store = self.make()
        obj = upload(b"same " * 100)
        self.result(store.put(obj))
        self.result(store.put(obj))
        self.assertEqual([r.method for r in self.fake.requests], ["HEAD", "PUT", "HEAD"])
        self.assertEqual(store.dedup_skips, 1)

    def test_dedup_empty_compression(self) -> None:
        """
        A server that drops the empty compression_algorithm still dedups.
        """
        store = self.make()
        obj = upload(b"")
        self.result(store.put(obj))
        del self.fake.objects[HEX].meta["compression_algorithm"]
        self.result(store.put(obj))
        self.assertEqual(store.dedup_skips, 1)

    def test_other_metadata_uploads(self) -> None:
        store = self.make()
        obj = upload(b"meta " * 100)
        self.result(store.put(obj))
        self.fake.objects[HEX].meta["uncompressed_size"] = "1"
        self.result(store.put(obj))
        self.assertEqual([r.method for r in self.fake.requests], ["HEAD", "PUT", "HEAD", "PUT"])

    def test_other_bytes_upload(self) -> None:
        store = self.make()
        self.result(store.put(upload(b"one")))
        self.result(store.put(upload(b"two")))
        self.assertEqual([r.method for r in self.fake.requests], ["HEAD", "PUT", "HEAD", "PUT"])
        self.assertEqual(self.fake.objects[HEX].data, upload(b"two").data)

    def test_head_error_still_uploads(self) -> None:
        self.fake.fail.extend([(400, "")])
        self.result(self.make().put(upload(b"x")))
        self.assertEqual([r.method for r in self.fake.requests], ["HEAD", "PUT"])

    def test_put_error(self) -> None:
        self.fake.fail.extend([(404, ""), (403, "AccessDenied")])
        failure = self.failureResultOf(self.start(self.make().put(upload(b"x"))), S3Error)
        self.assertEqual((failure.value.status, failure.value.code), (403, "AccessDenied"))


class SlowBody(Resource):
    """
    Answers a GET with the body in pieces, written when the test says
    (C{length} None: chunked, no C{Content-Length}).
    """

    isLeaf = True

    def __init__(self, length: int | None = 6) -> None:
        super().__init__()
        self.length = length
        self.requests: list[Request] = []

    def render(self, request: Request) -> int:
        request.setHeader("x-amz-meta-output_id", base64.b64encode(b"\0" * 32).decode())
        if self.length is not None:
            request.setHeader("Content-Length", str(self.length))
        request.write(b"")  # the headers
        self.requests.append(request)
        return NOT_DONE_YET


class StreamTests(S3TestCase):
    def test_chunks_as_they_come(self) -> None:
        slow = SlowBody()
        self.stub = StubTreq(slow)
        got: RemoteObject = self.result(self.make().get(AID))
        chunks: list[bytes] = []

        async def read() -> None:
            async for chunk in got.body:
                chunks.append(chunk)

        d = Deferred.fromCoroutine(read())
        slow.requests[0].write(b"abc")
        self.stub.flush()
        self.assertEqual(chunks, [b"abc"])
        self.assertNoResult(d)
        slow.requests[0].write(b"def")
        slow.requests[0].finish()
        self.stub.flush()
        self.successResultOf(d)
        self.assertEqual(chunks, [b"abc", b"def"])
        self.assertEqual(got.stored_size, 6)

    def test_chunked(self) -> None:
        """
        An answer without C{Content-Length} is read whole to know its size.
        """
        slow = SlowBody(length=None)
        self.stub = StubTreq(slow)
        d = self.start(self.make().get(AID))
        self.assertNoResult(d)
        slow.requests[0].write(b"abc")
        slow.requests[0].write(b"def")
        slow.requests[0].finish()
        self.stub.flush()
        got: RemoteObject = self.successResultOf(d)
        self.assertEqual((got.stored_size, got.size), (6, 6))
        self.assertEqual(self.body(got), b"abcdef")

    def test_cancel_while_reading(self) -> None:
        slow = SlowBody()
        self.stub = StubTreq(slow)
        got: RemoteObject = self.result(self.make().get(AID))

        async def read() -> bytes:
            return b"".join([c async for c in got.body])

        d = Deferred.fromCoroutine(read())
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.stub.flush()
        self.assertTrue(slow.requests[0].channel is None or slow.requests[0]._disconnected)

    def test_interrupted_body(self) -> None:
        slow = SlowBody()
        self.stub = StubTreq(slow)
        got: RemoteObject = self.result(self.make().get(AID))

        async def read() -> bytes:
            return b"".join([c async for c in got.body])

        d = Deferred.fromCoroutine(read())
        slow.requests[0].write(b"ab")
        self.stub.flush()
        assert slow.requests[0].channel is not None
        slow.requests[0].channel.transport.loseConnection()  # type: ignore[union-attr]
        self.stub.flush()
        failure = self.failureResultOf(d, S3Error)
        self.assertIn("body interrupted", str(failure.value))

    def test_dropped_body_closes_connection(self) -> None:
        slow = SlowBody()
        self.stub = StubTreq(slow)
        got: RemoteObject = self.result(self.make().get(AID))
        request = slow.requests[0]
        del got
        self.stub.flush()
        self.assertTrue(request._disconnected)


class FakePool:
    def __init__(self) -> None:
        self.closed = 0

    def closeCachedConnections(self) -> Deferred[None]:
        self.closed += 1
        return succeed(None)


class LifecycleTests(S3TestCase):
    def test_close_closes_pool(self) -> None:
        pool = FakePool()
        store = S3Store(settings(), cast(HTTPClient, self.stub), self.clock, inline_runner, pool=pool, environ={})
        d = Deferred.fromCoroutine(store.close())
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(pool.closed, 1)

    def test_factory_build(self) -> None:
        cfg, env = config_for(["--s3-bucket", "b", "--s3-endpoint", "http://127.0.0.1:1", "--s3-region", "r"])
        plan = factory.check(cfg, env)
        reactor = MemoryReactorClock()
        store = factory.build(plan, reactor, inline_runner)
        assert isinstance(store, S3Store) and store._pool is not None
        self.assertEqual(store.name, "s3")
        self.assertGreaterEqual(store._pool.maxPersistentPerHost, 16)
        self.assertTrue(store._pool.persistent)
        d = Deferred.fromCoroutine(store.close())
        reactor.advance(0)
        self.successResultOf(d)

    def test_configuring_log(self) -> None:
        records: list[logging.LogRecord] = []

        class Recorder(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        handler = Recorder()
        logger = logging.getLogger("cacheprog.s3")
        logger.addHandler(handler)
        old = logger.level
        logger.setLevel(logging.INFO)
        self.addCleanup(logger.setLevel, old)
        self.addCleanup(logger.removeHandler, handler)
        self.make(session_token="TOPSECRET", prefix="p", expiration=60.0)
        record = next(r for r in records if r.getMessage() == "Configuring S3 storage")
        fields = record.fields  # type: ignore[attr-defined]
        self.assertEqual(fields["bucket"], BUCKET)
        self.assertEqual(fields["prefix"], "p")
        self.assertEqual(fields["region"], "us-east-1")
        self.assertEqual(fields["force_path_style"], True)
        self.assertEqual(fields["expiration"], "60s")
        self.assertEqual(fields["endpoint"], ENDPOINT)
        self.assertNotIn(SECRET, repr(fields))
        self.assertNotIn("TOPSECRET", repr(fields))


class AbsentKeyTests(S3TestCase):
    def test_no_head_after_a_miss(self) -> None:
        """
        An upload of a key this process just saw missing (404) skips the
        HEAD; other uploads still check first.
        """
        store = self.make()
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.result(store.put(upload(b"body", action_id=AID)))
        other = hashlib.sha256(b"other").digest()
        self.result(store.put(upload(b"other", action_id=other)))
        self.assertEqual([r.method for r in self.fake.requests], ["GET", "PUT", "HEAD", "PUT"])

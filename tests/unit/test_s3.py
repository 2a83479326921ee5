"""
The s3 backend against a fake S3 (a Twisted resource behind
L{treq.testing.StubTreq}): no network, a L{Clock} for backoff and timeouts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, TypeVar, cast
from urllib.parse import unquote

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.test.proto_helpers import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cacheprog import compression
from cacheprog.cache import inline_runner
from cacheprog.config import ConfigError, parse
from cacheprog.interfaces import NotFound, RemoteObject, UploadObject
from cacheprog.remote import credentials as credentials_module
from cacheprog.remote import factory
from cacheprog.remote.credentials import CredentialsError, CredentialSource
from cacheprog.remote.s3 import (
    BodyStream,
    HTTPClient,
    S3Error,
    S3Store,
    parse_error,
    parse_location,
)
from cacheprog.remote.s3config import (
    Endpoint,
    S3Settings,
    go_arch,
    go_os,
    object_key,
    parse_endpoint,
)
from cacheprog.remote.sigv4 import EMPTY_SHA256

T = TypeVar("T")
AID = hashlib.sha256(b"action").digest()
HEX = AID.hex()
KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
BUCKET = "cache"
ENDPOINT = "http://s3.test:9000"


@dataclass
class Recorded:
    method: str
    uri: str
    host: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]

    @property
    def signed_headers(self) -> list[str]:
        auth = self.headers["authorization"]
        part = next(p for p in auth.split(", ") if p.startswith("SignedHeaders="))
        return part[len("SignedHeaders=") :].split(";")


@dataclass
class Stored:
    data: bytes
    meta: dict[str, str]
    last_modified: str | None = "Wed, 06 May 2026 07:08:09 GMT"
    headers: dict[str, str] = field(default_factory=dict)


def error_xml(code: str, message: str = "") -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()


class FakeS3(Resource):
    """
    Enough S3 for the store: GetObject, HeadObject (If-Match), PutObject,
    GetBucketLocation.  Records every request; C{fail} holds (status, code)
    answers given first; C{hang} leaves requests unanswered.
    """

    isLeaf = True

    def __init__(self, bucket: str = BUCKET) -> None:
        super().__init__()
        self.bucket = bucket
        self.objects: dict[str, Stored] = {}
        self.requests: list[Recorded] = []
        self.fail: list[tuple[int, str]] = []
        self.hang = False
        self.pending: list[Request] = []
        self.location = b'<?xml version="1.0"?><LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/">eu-central-1</LocationConstraint>'

    def _key(self, record: Recorded) -> str | None:
        path = unquote(record.path)
        if record.host.split(":")[0].startswith(self.bucket + "."):
            return path[1:]
        prefix = "/" + self.bucket
        if path == prefix:
            return ""
        if path.startswith(prefix + "/"):
            return path[len(prefix) + 1 :]
        return None

    def render(self, request: Request) -> bytes | int:
        headers = {k.decode().lower(): b",".join(v).decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        assert request.content is not None
        record = Recorded(
            method=request.method.decode(),
            uri=request.uri.decode(),
            host=headers.get("host", ""),
            headers=headers,
            body=request.content.read(),
        )
        self.requests.append(record)
        if self.hang:
            self.pending.append(request)
            return NOT_DONE_YET
        if self.fail:
            status, code = self.fail.pop(0)
            return self._error(request, status, code)
        key = self._key(record)
        if key is None:
            return self._error(request, 404, "NoSuchBucket")
        if key == "":
            if record.method == "GET" and record.uri.endswith("?location"):
                return self.location
            if record.method == "GET" and "list-type=2" in record.uri:
                return self._list(request)
            return self._error(request, 400, "InvalidRequest")
        if record.method == "PUT":
            meta = {k[len("x-amz-meta-") :]: v for k, v in headers.items() if k.startswith("x-amz-meta-")}
            self.objects[key] = Stored(record.body, meta)
            request.setHeader("ETag", '"' + hashlib.md5(record.body).hexdigest() + '"')
            return b""
        stored = self.objects.get(key)
        if stored is None:
            return self._error(request, 404, "NoSuchKey")
        etag = hashlib.md5(stored.data).hexdigest()
        match = headers.get("if-match")
        if match is not None and match.strip('"') != etag:
            return self._error(request, 412, "PreconditionFailed")
        for name, value in stored.meta.items():
            request.setHeader("x-amz-meta-" + name, value)
        for name, value in stored.headers.items():
            request.setHeader(name, value)
        if stored.last_modified is not None:
            request.setHeader("Last-Modified", stored.last_modified)
        request.setHeader("ETag", f'"{etag}"')
        if record.method == "HEAD":
            request.setHeader("Content-Length", str(len(stored.data)))
            return b""
        return stored.data

    page_size = 2

    def _list(self, request: Request) -> bytes:
        """
        ListObjectsV2, C{page_size} keys a page; the token is the last key.
        """
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        keys = sorted(k for k in self.objects if k.startswith(args.get("prefix", "")))
        after = args.get("continuation-token", "")
        keys = [k for k in keys if k > after]
        page, more = keys[: self.page_size], len(keys) > self.page_size
        contents = "".join(f"<Contents><Key>{k}</Key><Size>1</Size></Contents>" for k in page)
        token = f"<NextContinuationToken>{page[-1]}</NextContinuationToken>" if more else ""
        return (
            '<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>{contents}{token}</ListBucketResult>"
        ).encode()

    def _error(self, request: Request, status: int, code: str) -> bytes:
        request.setResponseCode(status)
        return b"" if request.method == b"HEAD" else error_xml(code, "fake")


def upload(body: bytes, action_id: bytes = AID) -> UploadObject:
    return compression.prepare_upload(action_id, hashlib.sha256(body).digest(), body)


def settings(**overrides: Any) -> S3Settings:
    values: dict[str, Any] = {
        "bucket": BUCKET,
        "endpoint": parse_endpoint(ENDPOINT),
        "region": "us-east-1",
        "force_path_style": True,
        "access_key_id": KEY_ID,
        "access_key_secret": SECRET,
    }
    values.update(overrides)
    return S3Settings(**values)


class FlakyClient:
    """
    A client failing its first C{failures} requests with C{error}, then
    passing them to C{inner}.
    """

    def __init__(self, inner: Any, failures: int, error: Exception) -> None:
        self.inner = inner
        self.failures = failures
        self.error = error
        self.calls = 0

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        self.calls += 1
        if self.calls <= self.failures:
            return fail(self.error)
        result: Deferred[Any] = self.inner.request(method, url, **kwargs)
        return result


def quiet_logs(case: SynchronousTestCase) -> None:
    """
    Keep the backend's warnings (expected here) out of the test output.
    """
    logger = logging.getLogger("cacheprog.s3")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    case.addCleanup(logger.removeHandler, handler)


class S3TestCase(SynchronousTestCase):
    def setUp(self) -> None:
        quiet_logs(self)
        self.fake = FakeS3()
        self.stub = StubTreq(self.fake)
        self.clock = Clock()

    def make(self, client: Any = None, environ: Mapping[str, str] | None = None, **overrides: Any) -> S3Store:
        return S3Store(
            settings(**overrides),
            client if client is not None else cast(HTTPClient, self.stub),
            self.clock,
            inline_runner,
            environ={} if environ is None else environ,
        )

    def start(self, coroutine: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred.fromCoroutine(coroutine)
        self.stub.flush()
        return d

    def result(self, coroutine: Any) -> Any:
        return self.successResultOf(self.start(coroutine))

    def body(self, obj: RemoteObject) -> bytes:
        async def read() -> bytes:
            return b"".join([chunk async for chunk in obj.body])

        d = Deferred.fromCoroutine(read())
        self.stub.flush()
        data: bytes = self.successResultOf(d)
        return data

    def put_raw(self, key: str, data: bytes, meta: dict[str, str], **extra: Any) -> None:
        self.fake.objects[key] = Stored(data, meta, **extra)


class KeyLayoutTests(SynchronousTestCase):
    def test_no_prefix(self) -> None:
        self.assertEqual(object_key("", AID), HEX)

    def test_prefix_join_rules(self) -> None:
        self.assertEqual(object_key("a/b", AID), f"a/b/{HEX}")
        self.assertEqual(object_key("a//b/", AID), f"a/b/{HEX}")
        self.assertEqual(object_key("a/./b/../c", AID), f"a/c/{HEX}")
        self.assertEqual(object_key("/lead", AID), f"/lead/{HEX}")
        self.assertEqual(object_key("//lead//x", AID), f"/lead/x/{HEX}")
        self.assertEqual(object_key(".", AID), HEX)
        self.assertEqual(object_key("a/..", AID), HEX)

    def test_lowercase_hex(self) -> None:
        self.assertEqual(object_key("", b"\xab\xcd"), "abcd")


class GoNamesTests(SynchronousTestCase):
    def test_arch(self) -> None:
        self.assertEqual(go_arch("x86_64"), "amd64")
        self.assertEqual(go_arch("AMD64"), "amd64")
        self.assertEqual(go_arch("aarch64"), "arm64")
        self.assertEqual(go_arch("arm64"), "arm64")
        self.assertEqual(go_arch("i686"), "386")
        self.assertEqual(go_arch("armv7l"), "arm")
        self.assertEqual(go_arch("riscv64"), "riscv64")

    def test_os(self) -> None:
        self.assertEqual(go_os("linux"), "linux")
        self.assertEqual(go_os("darwin"), "darwin")
        self.assertEqual(go_os("win32"), "windows")
        self.assertEqual(go_os("freebsd14"), "freebsd")


def config_for(args: list[str], environ: Mapping[str, str] | None = None) -> tuple[Any, Mapping[str, str]]:
    env = dict(environ or {})
    return parse(["--remote-storage-type", "s3", *args], env), env


class CheckTests(SynchronousTestCase):
    def check(self, args: list[str], environ: Mapping[str, str] | None = None) -> S3Settings:
        cfg, env = config_for(args, environ)
        plan = factory.check(cfg, env)
        assert isinstance(plan, S3Settings)
        return plan

    def error(self, args: list[str], environ: Mapping[str, str] | None = None) -> str:
        return str(self.assertRaises(ConfigError, self.check, args, environ))

    def test_plan(self) -> None:
        plan = self.check(
            ["--s3-bucket", "b", "--s3-endpoint", "minio+http://127.0.0.1:9000/base/", "--s3-prefix", "p"],
            {"CACHEPROG_S3_ACCESS_KEY_ID": "id", "CACHEPROG_S3_ACCESS_KEY_SECRET": "s"},
        )
        self.assertEqual(plan.kind, "s3")
        built = plan
        self.assertEqual(built.bucket, "b")
        self.assertEqual(built.prefix, "p")
        self.assertEqual(built.endpoint, Endpoint("http", "127.0.0.1:9000", "/base", minio=True))
        self.assertEqual((built.access_key_id, built.access_key_secret), ("id", "s"))
        self.assertNotIn("access_key_secret", repr(built))

    def test_missing_bucket(self) -> None:
        message = self.error([])
        self.assertIn("--s3-bucket", message)
        self.assertIn("CACHEPROG_S3_BUCKET", message)

    def test_bad_endpoint_scheme(self) -> None:
        message = self.error(["--s3-bucket", "b", "--s3-endpoint", "ftp://host"])
        self.assertIn("--s3-endpoint", message)
        self.assertIn("unsupported endpoint scheme: ftp", message)
        message = self.error(["--s3-bucket", "b"], {"CACHEPROG_S3_ENDPOINT": "s3://host"})
        self.assertIn("CACHEPROG_S3_ENDPOINT", message)

    def test_prefix_template(self) -> None:
        plan = self.check(
            ["--s3-bucket", "b", "--s3-prefix", "{% GOOS %}/{%GOARCH%}/{% env.BRANCH %}/{% env.UNSET %}x"],
            {"GOOS": "plan9", "BRANCH": "main"},
        )
        self.assertEqual(plan.prefix, f"plan9/{go_arch()}/main/x")

    def test_prefix_default_go_names(self) -> None:
        plan = self.check(["--s3-bucket", "b", "--s3-prefix", "{% GOOS %}-{% GOARCH %}"])
        self.assertEqual(plan.prefix, f"{go_os()}-{go_arch()}")
        self.assertNotIn("x86_64", plan.prefix)
        self.assertNotIn("aarch64", plan.prefix)

    def test_unknown_tag(self) -> None:
        message = self.error(["--s3-bucket", "b", "--s3-prefix", "{% NOPE %}"])
        self.assertIn("--s3-prefix", message)
        self.assertIn("NOPE", message)
        message = self.error(["--s3-bucket", "b"], {"CACHEPROG_S3_PREFIX": "{% env %}"})
        self.assertIn("CACHEPROG_S3_PREFIX", message)

    def test_secret_needed(self) -> None:
        message = self.error(["--s3-bucket", "b", "--s3-access-key-id", "id"])
        self.assertIn("--s3-access-key-id", message)
        self.assertIn("CACHEPROG_S3_ACCESS_KEY_SECRET", message)

    def test_credentials_endpoint_url(self) -> None:
        message = self.error(["--s3-bucket", "b", "--s3-credentials-endpoint", "file:///etc/passwd"])
        self.assertIn("--s3-credentials-endpoint", message)

    def test_exclude_headers_normalised(self) -> None:
        plan = self.check(["--s3-bucket", "b", "--s3-exclude-headers-from-signing", "Accept-Encoding", "X-Foo"])
        self.assertEqual(plan.exclude_headers_from_signing, ("accept-encoding", "x-foo"))


class URLTests(SynchronousTestCase):
    def test_aws_virtual_host(self) -> None:
        s = S3Settings(bucket="cache")
        self.assertEqual(s.url("a/b", "eu-west-1"), "https://cache.s3.eu-west-1.amazonaws.com/a/b")
        self.assertEqual(s.url("", "us-east-1", "location"), "https://cache.s3.us-east-1.amazonaws.com/?location")

    def test_aws_path_style(self) -> None:
        s = S3Settings(bucket="cache", force_path_style=True)
        self.assertEqual(s.url("a/b", "eu-west-1"), "https://s3.eu-west-1.amazonaws.com/cache/a/b")
        # Dots and TLS do not mix in host names: path style.
        s = S3Settings(bucket="my.cache")
        self.assertEqual(s.url("k", "eu-west-1"), "https://s3.eu-west-1.amazonaws.com/my.cache/k")

    def test_aws_china(self) -> None:
        self.assertEqual(
            S3Settings(bucket="cn1").url("k", "cn-north-1"), "https://cn1.s3.cn-north-1.amazonaws.com.cn/k"
        )

    def test_custom_endpoint(self) -> None:
        endpoint = parse_endpoint("https://storage.example.com/base/")
        s = S3Settings(bucket="cache", endpoint=endpoint)
        self.assertEqual(s.url("k", "r"), "https://cache.storage.example.com/base/k")
        s = S3Settings(bucket="cache", endpoint=endpoint, force_path_style=True)
        self.assertEqual(s.url("k", "r"), "https://storage.example.com/base/cache/k")
        s = S3Settings(bucket="cache", endpoint=parse_endpoint("http://127.0.0.1:9000"))
        self.assertEqual(s.url("k", "r"), "http://127.0.0.1:9000/cache/k", "an IP host cannot take a bucket label")

    def test_minio_scheme(self) -> None:
        endpoint = parse_endpoint("minio+https://minio.local:9000/x")
        self.assertEqual(endpoint, Endpoint("https", "minio.local:9000", "/x", minio=True))
        s = S3Settings(bucket="cache", endpoint=endpoint, force_path_style=False)
        self.assertEqual(s.url("k", "r"), "https://minio.local:9000/x/cache/k")

    def test_bad_endpoints(self) -> None:
        self.assertIsNone(parse_endpoint(""))
        self.assertRaises(ValueError, parse_endpoint, "ftp://host")
        self.assertRaises(ValueError, parse_endpoint, "minio+ftp://host")
        self.assertRaises(ValueError, parse_endpoint, "http://user:pw@host")

    def test_key_quoting(self) -> None:
        s = S3Settings(bucket="cache", endpoint=parse_endpoint(ENDPOINT), force_path_style=True)
        self.assertEqual(s.url("/a b/ü~k", "r"), "http://s3.test:9000/cache//a%20b/%C3%BC~k")


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


class SignatureTests(S3TestCase):
    def test_authorization(self) -> None:
        obj = upload(b"signed body " * 100)
        self.result(self.make().put(obj))
        put = self.fake.requests[-1]
        self.assertEqual(put.method, "PUT")
        auth = put.headers["authorization"]
        self.assertTrue(auth.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/"), auth)
        self.assertIn("/us-east-1/s3/aws4_request", auth)
        self.assertEqual(put.headers["x-amz-content-sha256"], hashlib.sha256(put.body).hexdigest())
        self.assertEqual(put.body, obj.data)
        signed = put.signed_headers
        for name in ("host", "x-amz-content-sha256", "x-amz-date", "x-amz-meta-output_id"):
            self.assertIn(name, signed)
        self.assertNotIn("accept-encoding", signed)
        self.assertNotIn("user-agent", signed)
        head = self.fake.requests[-2]
        self.assertEqual(head.headers["x-amz-content-sha256"], EMPTY_SHA256)

    def test_signature_verifies(self) -> None:
        """
        botocore's own signer, given the recorded request, finds the same
        signature (so our precomputed payload hash is the right one).
        """
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        self.result(self.make().put(upload(b"verify me")))
        put = self.fake.requests[-1]
        signed = put.signed_headers
        request = AWSRequest(
            method="PUT",
            url=f"http://{put.host}{put.uri}",
            headers={k: v for k, v in put.headers.items() if k in signed and k != "host"},
            data=put.body,
        )
        stamp = put.headers["x-amz-date"]

        class Fixed(S3SigV4Auth):  # type: ignore[misc]
            def add_auth(self, request: Any) -> None:
                request.context["timestamp"] = stamp
                self._modify_request_before_signing(request)
                canonical = self.canonical_request(request)
                self.signature_value = self.signature(self.string_to_sign(request, canonical), request)

        signer = Fixed(Credentials(KEY_ID, SECRET), "s3", "us-east-1")
        signer.add_auth(request)
        self.assertIn(f"Signature={signer.signature_value}", put.headers["authorization"])

    def test_excluded_headers(self) -> None:
        store = self.make(exclude_headers_from_signing=("if-match", "expires", "accept-encoding"), expiration=60.0)
        self.result(store.put(upload(b"x")))
        head, put = self.fake.requests
        self.assertIn("if-match", head.headers)
        self.assertNotIn("if-match", head.signed_headers)
        self.assertIn("expires", put.headers)
        self.assertNotIn("expires", put.signed_headers)
        self.assertIn("x-amz-meta-output_id", put.signed_headers)
        # Without the option they are signed.
        self.result(self.make(expiration=60.0).put(upload(b"y")))
        head, put = self.fake.requests[2:]
        self.assertIn("if-match", head.signed_headers)
        self.assertIn("expires", put.signed_headers)

    def test_session_token(self) -> None:
        store = self.make(session_token="TOKEN")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        request = self.fake.requests[-1]
        self.assertEqual(request.headers["x-amz-security-token"], "TOKEN")
        self.assertIn("x-amz-security-token", request.signed_headers)


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


class RetryTests(S3TestCase):
    def test_500_then_success(self) -> None:
        store = self.make()
        self.put_raw(HEX, b"r", {"output_id": base64.b64encode(hashlib.sha256(b"r").digest()).decode()})
        self.fake.fail.extend([(500, "InternalError"), (503, "SlowDown")])
        d = self.start(store.get(AID))
        self.assertNoResult(d)
        self.clock.advance(0.05)
        self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.stub.flush()
        got = self.successResultOf(d)
        self.assertEqual(self.body(got), b"r")
        self.assertEqual(len(self.fake.requests), 3)
        self.assertNotEqual(self.fake.requests[0].headers["x-amz-date"], "")

    def test_gives_up(self) -> None:
        self.fake.fail.extend([(500, "InternalError")] * 6)
        d = self.start(self.make().put(upload(b"x")))
        for _ in range(6):
            self.clock.advance(1)
            self.stub.flush()
        failure = self.failureResultOf(d, S3Error)
        self.assertEqual(failure.value.status, 500)
        self.assertEqual(failure.value.code, "InternalError")
        # HEAD 3 times (its failure only means "upload"), then PUT 3 times.
        self.assertEqual([r.method for r in self.fake.requests], ["HEAD"] * 3 + ["PUT"] * 3)

    def test_429(self) -> None:
        self.fake.fail.append((429, "TooManyRequests"))
        d = self.start(self.make().get(AID))
        self.clock.advance(0.05)
        self.stub.flush()
        self.failureResultOf(d, NotFound)

    def test_no_retry_on_4xx(self) -> None:
        self.fake.fail.append((400, "InvalidArgument"))
        failure = self.failureResultOf(self.start(self.make().get(AID)), S3Error)
        self.assertEqual(failure.value.code, "InvalidArgument")
        self.assertEqual(len(self.fake.requests), 1)

    def test_connection_refused(self) -> None:
        client = FlakyClient(self.stub, 2, ConnectionRefusedError())
        d = self.start(self.make(client=client).get(AID))
        self.clock.advance(0.05)
        self.clock.advance(0.2)
        self.stub.flush()
        self.failureResultOf(d, NotFound)
        self.assertEqual(client.calls, 3)

    def test_connection_refused_gives_up(self) -> None:
        client = FlakyClient(self.stub, 10, ConnectionRefusedError())
        d = self.start(self.make(client=client).get(AID))
        self.clock.advance(0.05)
        self.clock.advance(0.2)
        failure = self.failureResultOf(d, S3Error)
        self.assertIn("ConnectionRefusedError", str(failure.value))
        self.assertEqual(client.calls, 3)


class CancelTests(S3TestCase):
    def test_cancel_in_flight(self) -> None:
        self.fake.hang = True
        d = self.start(self.make().get(AID))
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.stub.flush()
        self.assertEqual(len(self.fake.requests), 1, "no retry after a cancel")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_whatever_the_error(self) -> None:
        """
        A cancel that makes the request fail with something else (Twisted
        gives DNSLookupError while resolving, ResponseNeverReceived later)
        is still a cancel: no retry, CancelledError.
        """
        from twisted.internet.error import DNSLookupError

        pending: list[Deferred[Any]] = []

        class Client:
            def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
                d: Deferred[Any] = Deferred(lambda d: d.errback(DNSLookupError("cancelled lookup")))
                pending.append(d)
                return d

        d = self.start(self.make(client=Client()).get(AID))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(pending), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_during_backoff(self) -> None:
        self.fake.fail.append((500, "InternalError"))
        d = self.start(self.make().get(AID))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.fake.requests), 1)

    def test_cancel_with_timeout(self) -> None:
        """
        The core's way: addTimeout on the put's Deferred.
        """
        self.fake.hang = True
        d = self.start(self.make().put(upload(b"x")))
        d.addTimeout(5, self.clock)
        self.clock.advance(5)
        from twisted.internet.defer import TimeoutError as DeferredTimeout

        self.failureResultOf(d, DeferredTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SlowBody(Resource):
    """
    Answers a GET with the body in pieces, written when the test says.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render(self, request: Request) -> int:
        request.setHeader("x-amz-meta-output_id", base64.b64encode(b"\0" * 32).decode())
        request.setHeader("Content-Length", "6")
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


class FakeProducer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class RegionTests(S3TestCase):
    def test_detect(self) -> None:
        store = self.make(region="")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        location, get = self.fake.requests
        self.assertEqual((location.method, location.uri), ("GET", f"/{BUCKET}?location"))
        self.assertIn("/us-east-1/s3/aws4_request", location.headers["authorization"])
        self.assertIn("/eu-central-1/s3/aws4_request", get.headers["authorization"])
        self.assertEqual(store.region, "eu-central-1")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(len(self.fake.requests), 3, "detected once")

    def test_seaweedfs_location(self) -> None:
        self.fake.location = (
            b'<?xml version="1.0" encoding="UTF-8"?>\n<CreateBucketConfiguration>'
            b"<LocationConstraint></LocationConstraint></CreateBucketConfiguration>"
        )
        store = self.make(region="")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(store.region, "us-east-1")

    def test_parse_location(self) -> None:
        self.assertEqual(parse_location(b"<LocationConstraint>EU</LocationConstraint>"), "eu-west-1")
        self.assertEqual(parse_location(b"<LocationConstraint/>"), "us-east-1")
        self.assertEqual(
            parse_location(b"<a><b><LocationConstraint>ap-south-1</LocationConstraint></b></a>"), "ap-south-1"
        )
        self.assertRaises(ValueError, parse_location, b"<Other/>")

    def profile_region(self, region: str) -> None:
        """
        The botocore profile's region (AWS_REGION would skip the probe).
        """
        self.patch(sys.modules["cacheprog.remote.s3"], "default_region", lambda: region)

    def test_failure_falls_back_to_profile(self) -> None:
        self.fake.fail.extend([(403, "AccessDenied"), (403, "")])
        self.profile_region("ap-east-1")
        store = self.make(region="")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(store.region, "ap-east-1")
        self.assertEqual([r.method for r in self.fake.requests], ["GET", "HEAD", "GET"])

    def test_bucket_region_header(self) -> None:
        class Redirect(FakeS3):
            def render(self, request: Request) -> bytes | int:
                if request.uri.endswith(b"?location"):
                    request.setResponseCode(301)
                    request.setHeader("x-amz-bucket-region", "sa-east-1")
                    return error_xml("PermanentRedirect")
                return super().render(request)

        self.fake = Redirect()
        self.stub = StubTreq(self.fake)
        store = self.make(region="")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(store.region, "sa-east-1")

    def test_timeout(self) -> None:
        self.fake.hang = True
        self.profile_region("eu-north-1")
        store = self.make(region="")
        d = self.start(store.get(AID))
        self.assertNoResult(d)
        self.clock.advance(store.region_timeout)
        self.assertEqual(store.region, "eu-north-1")
        self.assertEqual(len(self.fake.requests), 2, "location probe, then the get")
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_waiter_cancel_does_not_stop_detection(self) -> None:
        self.fake.hang = True
        self.profile_region("eu-north-1")
        store = self.make(region="")
        d = self.start(store.get(AID))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.clock.advance(store.region_timeout)
        self.assertEqual(store.region, "eu-north-1")

    def test_fallback_default(self) -> None:
        self.patch(credentials_module, "default_region", lambda: "")
        self.patch(sys.modules["cacheprog.remote.s3"], "default_region", lambda: "")
        self.fake.fail.extend([(500, ""), (500, "")])
        store = self.make(region="")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(store.region, "us-east-1")

    def test_credentials_failure_does_not_pin_a_region(self) -> None:
        self.profile_region("eu-north-1")
        store = self.make(region="")
        calls: list[int] = []

        def resolver(s: S3Settings) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise CredentialsError("not yet")
            return FakeStatic()

        store._credentials = CredentialSource(store.settings, inline_runner, self.clock, resolver=resolver)
        self.failureResultOf(self.start(store.get(AID)), CredentialsError)
        self.assertEqual(store.region, "")
        self.clock.advance(CredentialSource.retry_after)
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(store.region, "eu-central-1")

    def test_given_region_never_probes(self) -> None:
        store = self.make(region="eu-west-3")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(len(self.fake.requests), 1)


class ErrorParsingTests(SynchronousTestCase):
    def test_parse_error(self) -> None:
        self.assertEqual(parse_error(error_xml("NoSuchKey", "gone")), ("NoSuchKey", "gone"))
        self.assertEqual(parse_error(b""), ("", ""))
        self.assertEqual(parse_error(b"<html>oops"), ("", "<html>oops"))


class RecordingRunner:
    """
    A thread runner that runs inline but records what ran in it.
    """

    def __init__(self) -> None:
        self.inside = False
        self.calls = 0

    def __call__(self, f: Callable[..., T], *args: object) -> Deferred[T]:
        self.calls += 1
        self.inside = True
        try:
            return inline_runner(f, *args)
        finally:
            self.inside = False


class FakeRefreshable:
    def __init__(self, runner: RecordingRunner) -> None:
        self.runner = runner
        self.frozen_calls = 0
        self.needed = False

    def refresh_needed(self) -> bool:
        return self.needed

    def get_frozen_credentials(self) -> Any:
        from botocore.credentials import ReadOnlyCredentials

        assert self.runner.inside, "refresh must run in the thread runner"
        self.frozen_calls += 1
        return ReadOnlyCredentials(f"KEY{self.frozen_calls}", "secret", None)


class CredentialSourceTests(SynchronousTestCase):
    def test_refresh_in_thread(self) -> None:
        clock = Clock()
        runner = RecordingRunner()
        creds = FakeRefreshable(runner)
        source = CredentialSource(settings(), runner, clock, resolver=lambda s: creds)
        self.assertEqual(self.successResultOf(source.frozen()).access_key, "KEY1")
        self.assertEqual(self.successResultOf(source.frozen()).access_key, "KEY1")
        self.assertEqual(runner.calls, 1)
        creds.needed = True
        self.assertEqual(self.successResultOf(source.frozen()).access_key, "KEY1", "rechecked every 30 s only")
        clock.advance(source.recheck)
        self.assertEqual(self.successResultOf(source.frozen()).access_key, "KEY2")
        self.assertEqual(runner.calls, 2)

    def test_shared_resolution(self) -> None:
        clock = Clock()
        gate: Deferred[Any] = Deferred()
        calls: list[int] = []

        def runner(f: Callable[..., T], *args: object) -> Deferred[T]:
            calls.append(1)
            return gate.addCallback(lambda _: f(*args))

        source = CredentialSource(settings(), runner, clock, resolver=lambda s: FakeStatic())
        first, second = source.frozen(), source.frozen()
        second.cancel()
        gate.callback(None)
        self.assertEqual(self.successResultOf(first).access_key, "STATIC")
        self.failureResultOf(second, CancelledError)
        self.assertEqual(len(calls), 1)

    def test_failure_remembered_briefly(self) -> None:
        clock = Clock()
        calls: list[int] = []

        def resolver(s: S3Settings) -> Any:
            calls.append(1)
            raise CredentialsError("none")

        source = CredentialSource(settings(), inline_runner, clock, resolver=resolver)
        self.failureResultOf(source.frozen(), CredentialsError)
        self.failureResultOf(source.frozen(), CredentialsError)
        self.assertEqual(len(calls), 1)
        clock.advance(source.retry_after)
        self.failureResultOf(source.frozen(), CredentialsError)
        self.assertEqual(len(calls), 2)


class FakeStatic:
    def get_frozen_credentials(self) -> Any:
        from botocore.credentials import ReadOnlyCredentials

        return ReadOnlyCredentials("STATIC", "secret", None)


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """
    Exactly C{values} plus a few settings that keep botocore off the network
    and away from this machine's AWS files.
    """
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(
        {
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "PATH": saved.get("PATH", ""),
        }
    )
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class CredentialsHandler(BaseHTTPRequestHandler):
    answer: dict[str, Any] = {}
    status = 200

    def do_GET(self) -> None:
        body = json.dumps(self.answer).encode()
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ResolveTests(SynchronousTestCase):
    def setUp(self) -> None:
        quiet_logs(self)

    def test_static(self) -> None:
        creds = credentials_module.resolve(settings(session_token="T"))
        frozen = creds.get_frozen_credentials()
        self.assertEqual((frozen.access_key, frozen.secret_key, frozen.token), (KEY_ID, SECRET, "T"))

    def test_default_chain_environment(self) -> None:
        with environment({"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "envsecret"}):
            creds = credentials_module.resolve(settings(access_key_id="", access_key_secret=""))
        self.assertEqual(creds.get_frozen_credentials().access_key, "ENVKEY")

    def test_default_chain_empty(self) -> None:
        with environment({}):
            self.assertRaises(
                CredentialsError, credentials_module.resolve, settings(access_key_id="", access_key_secret="")
            )

    def test_default_region(self) -> None:
        with environment({"AWS_DEFAULT_REGION": "me-south-1"}):
            self.assertEqual(credentials_module.default_region(), "me-south-1")
        with environment({}):
            self.assertEqual(credentials_module.default_region(), "")

    def serve(self, answer: dict[str, Any], status: int = 200) -> str:
        handler = type("Handler", (CredentialsHandler,), {"answer": answer, "status": status})
        server = HTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return f"http://127.0.0.1:{server.server_address[1]}/creds"

    def test_endpoint(self) -> None:
        url = self.serve(
            {
                "AccessKeyId": "EPKEY",
                "SecretAccessKey": "epsecret",
                "Token": "eptoken",
                "Expiration": "2099-01-01T00:00:00Z",
            }
        )
        creds = credentials_module.resolve(settings(access_key_id="", access_key_secret="", credentials_endpoint=url))
        frozen = creds.get_frozen_credentials()
        self.assertEqual((frozen.access_key, frozen.token), ("EPKEY", "eptoken"))
        self.assertTrue(hasattr(creds, "refresh_needed"))

    def test_endpoint_without_expiration(self) -> None:
        url = self.serve({"AccessKeyId": "EPKEY", "SecretAccessKey": "epsecret"})
        creds = credentials_module.resolve(settings(access_key_id="", access_key_secret="", credentials_endpoint=url))
        self.assertEqual(creds.get_frozen_credentials().token, None)

    def test_endpoint_failure_falls_back_to_static(self) -> None:
        from botocore.utils import ContainerMetadataFetcher

        self.patch(ContainerMetadataFetcher, "SLEEP_TIME", 0)
        url = self.serve({"message": "no"}, status=500)
        creds = credentials_module.resolve(settings(credentials_endpoint=url))
        self.assertEqual(creds.get_frozen_credentials().access_key, KEY_ID)
        self.assertRaises(
            CredentialsError,
            credentials_module.resolve,
            settings(access_key_id="", access_key_secret="", credentials_endpoint=url),
        )

    def test_store_signs_with_endpoint_credentials(self) -> None:
        url = self.serve({"AccessKeyId": "EPKEY", "SecretAccessKey": "s", "Token": "tok"})
        fake = FakeS3()
        stub = StubTreq(fake)
        store = S3Store(
            settings(access_key_id="", access_key_secret="", credentials_endpoint=url),
            cast(HTTPClient, stub),
            Clock(),
            inline_runner,
            environ={},
        )
        d = Deferred.fromCoroutine(store.get(AID))
        stub.flush()
        self.failureResultOf(d, NotFound)
        self.assertIn("Credential=EPKEY/", fake.requests[0].headers["authorization"])
        self.assertEqual(fake.requests[0].headers["x-amz-security-token"], "tok")

    def test_no_credentials_is_an_error(self) -> None:
        store = S3Store(
            settings(access_key_id="", access_key_secret=""),
            cast(HTTPClient, StubTreq(FakeS3())),
            Clock(),
            inline_runner,
            environ={},
        )
        with environment({}):
            d = Deferred.fromCoroutine(store.get(AID))
        self.failureResultOf(d, CredentialsError)


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

    def test_get_many(self) -> None:
        store = self.make()
        self.result(store.put(upload(b"one", action_id=AID)))

        async def collect() -> list[tuple[bytes, RemoteObject | None]]:
            return [item async for item in store.get_many([AID, b"\1" * 32])]

        found = dict(self.result(collect()))
        self.assertIsNotNone(found[AID])
        self.assertIsNone(found[b"\1" * 32])

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


class BodyStreamUnitTests(SynchronousTestCase):
    def test_read_all(self) -> None:
        class Response:
            def deliverBody(self, protocol: Any) -> None:
                protocol.makeConnection(FakeProducer())
                protocol.dataReceived(b"a")
                protocol.dataReceived(b"b")
                from twisted.python.failure import Failure
                from twisted.web.client import ResponseDone

                protocol.connectionLost(Failure(ResponseDone()))

        stream = BodyStream(Response(), 10)
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(stream.read())), b"ab")


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

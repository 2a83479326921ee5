"""
A fake S3 for the s3 backend's tests: enough of the API behind
L{treq.testing.StubTreq} (no network), and L{S3TestCase} with a L{Clock} for
backoff and timeouts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cacheprog import compression
from cacheprog.cache import inline_runner
from cacheprog.config import parse
from cacheprog.interfaces import RemoteObject, UploadObject
from cacheprog.remote.s3 import S3Store
from cacheprog.remote.s3config import S3Settings, parse_endpoint
from cacheprog.remote.s3request import HTTPClient

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


def config_for(args: list[str], environ: Mapping[str, str] | None = None) -> tuple[Any, Mapping[str, str]]:
    env = dict(environ or {})
    return parse(["--remote-storage-type", "s3", *args], env), env


class FakeStatic:
    def get_frozen_credentials(self) -> Any:
        from botocore.credentials import ReadOnlyCredentials

        return ReadOnlyCredentials("STATIC", "secret", None)

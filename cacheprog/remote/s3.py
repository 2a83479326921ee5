# -*- test-case-name: tests.unit.test_s3,tests.integration.test_s3_servers -*-
"""
The C{s3} backend: objects in an S3-compatible bucket, in the Go reference's
format, so both tools can share a bucket.

 - key: the prefix path-joined with the lowercase hex ActionID
   (L{cacheprog.remote.s3config.object_key});
 - body: the stored bytes (zstd when smaller; the core encodes and decodes);
 - user metadata: C{x-amz-meta-output_id} (standard base64 of the OutputID),
   C{x-amz-meta-compression_algorithm} (C{zstd} or empty) and
   C{x-amz-meta-uncompressed_size} (decimal, only when > 0).

get is one GetObject, streamed: the body reaches the core chunk by chunk and
the connection is paused while more than C{high_water} bytes wait to be
consumed.  404 C{NoSuchKey} and 403 C{AccessDenied} are L{NotFound}; any
other answer is an error (a wrong secret is an error, never a hit).

put is a HeadObject with C{If-Match: <hex MD5 of the stored bytes>}; when it
answers 200 with the metadata we would write, the upload is skipped.
Otherwise one PutObject with the metadata, C{x-amz-checksum-sha256} and the
precomputed payload SHA-256 as C{x-amz-content-sha256} (so nothing is hashed
twice), plus C{Expires} when C{--s3-expiration} > 0 (only a header: real
expiry needs a lifecycle rule).

Requests are signed with botocore's SigV4 (L{botocore.auth.S3SigV4Auth} on a
L{botocore.awsrequest.AWSRequest}) and sent with treq over a persistent
L{HTTPConnectionPool}.  txaws is not an option: its only PyPI release does
not import on Python 3.  Headers named in C{--s3-exclude-headers-from-signing}
are sent but left out of the signature.  treq adds C{Accept-Encoding: gzip}
after signing, so that header is never signed (the GCS rewrite of it, aws-sdk-go-v2
#1816, cannot break our signatures).

Retries (the reference has none): 5xx, 429 and connection failures are tried
again C{retries} times with C{backoff} delays (jittered: L{S3Store.jittered}), inside the core's get/put
timeouts.  Cancelling the Deferred of a get or put (what the core's timeouts
do) aborts the request in flight or the backoff wait.

Region: C{--s3-region}, else C{AWS_REGION}, then C{AWS_DEFAULT_REGION} (the
SDKs' order), used without a probe; a bucket that answers a redirect naming
another region (C{x-amz-bucket-region}) corrects an environment region once.
With none of them: detected once, lazily, by the first request
(never before the handshake, never on a path where nobody needs it):
GetBucketLocation signed for us-east-1, sent to the configured endpoint with
the same addressing (a custom or C{minio+} endpoint is never sent to AWS),
with a C{region_timeout} (2 s) budget.  If it gives no answer, the
C{x-amz-bucket-region} header of that answer or of a HeadBucket is used.
Failing that: the botocore profile's region, C{us-east-1}, with a warning.
The C{LocationConstraint} element is
found wherever it sits in the XML (SeaweedFS wraps it in a non-standard root).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import random as _random
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import datetime, timezone
from email.utils import formatdate, parsedate_to_datetime
from typing import IO, Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from cacheprog import __version__
from cacheprog.concurrency import Shared
from cacheprog.interfaces import NotFound, RemoteObject, ThreadRunner, UploadObject
from cacheprog.log import Logger
from cacheprog.presence import Listing
from cacheprog.remote import body as _body
from cacheprog.remote.base import BulkGet, one_chunk, reference_metadata, trimmed
from cacheprog.remote.credentials import CredentialsError, CredentialSource, default_region
from cacheprog.remote.s3config import DEFAULT_REGION, S3Settings, named_key, object_key
from cacheprog.remote.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD, Signer

_log = Logger("s3")
T = TypeVar("T")

USER_AGENT = f"cacheprog/{__version__}"
#: Answers worth another try (throttling and server trouble).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Error bodies are read up to this size (for their code); bigger: aborted.
ERROR_BODY_LIMIT = 64 * 1024
#: A page of 1000 keys is about 300 KB of XML.
LIST_BODY_LIMIT = 4 << 20
_META = "x-amz-meta-"


class HTTPClient(Protocol):
    """
    What the store needs of its HTTP client: L{treq.client.HTTPClient} or
    L{treq.testing.StubTreq}.
    """

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Any = None,
        data: Any = None,
        unbuffered: bool = False,
        allow_redirects: bool = True,
    ) -> Deferred[Any]: ...


class S3Error(Exception):
    """
    S3 answered with an error (or could not be reached).

    @ivar status: the HTTP status (0: no answer).
    @ivar code: the S3 error code (C{SlowDown}, C{NoSuchBucket}...) or C{""}.
    """

    def __init__(self, operation: str, status: int = 0, code: str = "", message: str = "") -> None:
        self.operation = operation
        self.status = status
        self.code = code
        self.message = message
        parts = [f"HTTP {status}"] if status else []
        if code:
            parts.append(code)
        if message:
            parts.append(message)
        super().__init__(f"{operation}: {': '.join(parts) or 'failed'}")


def _same_metadata(stored: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """
    Whether the metadata S3 returned is what we would write.  An empty value
    and a missing one are the same (servers and SDKs drop empty headers).
    """
    return {k: v for k, v in stored.items() if v} == {k: v for k, v in wanted.items() if v}


def response_metadata(headers: Any) -> dict[str, str]:
    """
    The C{x-amz-meta-*} headers of a Twisted response, lowercased names
    without the prefix.
    """
    meta: dict[str, str] = {}
    for name, values in headers.getAllRawHeaders():
        lname = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
        if lname.startswith(_META) and values:
            value = values[-1]
            meta[lname[len(_META) :]] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return meta


def _header(headers: Any, name: str) -> str | None:
    values = headers.getRawHeaders(name)
    if not values:
        return None
    value = values[-1]
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def parse_location(body: bytes) -> str:
    """
    The region in a GetBucketLocation answer, wherever the
    C{LocationConstraint} element sits.  Empty means us-east-1; C{EU} is the
    legacy name of eu-west-1.

    @raise ValueError: when there is no such element.
    """
    root = ET.fromstring(body)
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "LocationConstraint":
            text = (element.text or "").strip()
            if not text:
                return DEFAULT_REGION
            return "eu-west-1" if text == "EU" else text
    raise ValueError("no LocationConstraint in the answer")


def parse_listing(body: bytes) -> tuple[list[str], str]:
    """
    The keys of a ListObjectsV2 page and the token of the next page
    (C{""}: this was the last).
    """
    root = ET.fromstring(body)
    keys: list[str] = []
    token = ""
    truncated = False
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Key":
            keys.append(element.text or "")
        elif tag == "NextContinuationToken":
            token = element.text or ""
        elif tag == "IsTruncated":
            truncated = (element.text or "").strip() == "true"
    return keys, token if truncated else ""


def _action_ids(keys: list[str], prefix: str) -> Iterator[bytes]:
    for key in keys:
        name = key[len(prefix) :]
        if key.startswith(prefix) and len(name) == 64:
            try:
                yield bytes.fromhex(name)
            except ValueError:
                continue


def parse_error(body: bytes) -> tuple[str, str]:
    """
    (code, message) of an S3 error document; C{("", "")} if there is none.
    """
    if not body.strip():
        return "", ""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", body[:200].decode("utf-8", "replace").strip()
    code = message = ""
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Code" and not code:
            code = (element.text or "").strip()
        elif tag == "Message" and not message:
            message = (element.text or "").strip()
    return code, message


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    payload_sha256: str,
    credentials: Any,
    region: str,
    exclude: frozenset[str] = frozenset(),
    signer: Signer | None = None,
) -> dict[str, str]:
    """
    The headers to send for a SigV4-signed request: C{headers} plus
    C{Authorization}, C{X-Amz-Date}, C{X-Amz-Content-SHA256} and (with a
    session token) C{X-Amz-Security-Token}.  Headers named in C{exclude}
    (lowercase) are sent but not signed.
    """
    parts = urlsplit(url)
    host = parts.netloc
    default_port = ":443" if parts.scheme == "https" else ":80"
    if host.endswith(default_port):
        # Twisted leaves the default port out of the Host header it sends.
        host = host[: -len(default_port)]
    return (signer or Signer(exclude=exclude)).sign(
        method, host, parts.path, parts.query, headers, payload_sha256, credentials, region
    )


class _Tracked(Generic[T]):
    """
    A Deferred that remembers whether it was cancelled: what a cancelled
    request fails with depends on when the cancel lands (C{CancelledError},
    C{ResponseNeverReceived}, even C{DNSLookupError} while the host name is
    being resolved), and a cancelled request must never be retried.
    """

    def __init__(self, inner: Deferred[T]) -> None:
        self.cancelled = False
        self._inner = inner
        self.deferred: Deferred[T] = Deferred(self._cancel)
        inner.addCallbacks(self._pass, self._fail)

    def _pass(self, result: T) -> None:
        if not self.deferred.called:
            self.deferred.callback(result)

    def _fail(self, failure: Failure) -> None:
        if not self.deferred.called:
            self.deferred.errback(failure)

    def _cancel(self, _: Deferred[T]) -> None:
        self.cancelled = True
        self._inner.cancel()


def _retryable(error: BaseException) -> bool:
    """
    Connection trouble worth another try: refused, reset, closed before the
    answer, connect timeout.
    """
    from twisted.internet import error as ierror
    from twisted.web.client import RequestTransmissionFailed, ResponseFailed

    from cacheprog.remote.pool import ResponseTimeout

    if isinstance(error, ResponseTimeout):
        # A server that sat on a request for the whole read timeout gets no
        # second and third chance to do it again.
        return False
    return isinstance(
        error,
        (
            ierror.ConnectError,
            ierror.ConnectionLost,
            ierror.ConnectionClosed,
            ierror.TimeoutError,
            ResponseFailed,
            RequestTransmissionFailed,
        ),
    )


def _describe(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return f"{type(error).__name__}: " + "; ".join(r.getErrorMessage() for r in reasons)
    return f"{type(error).__name__}: {error}"


async def read_limited(response: Any, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """
    The body of a (small) response; beyond C{limit} bytes the connection is
    dropped and what was read so far is returned.  Never raises for the body.
    """
    return await _body.read_limited(response, limit)


class BodyStream(_body.BodyStream):
    """
    An S3 object body: a L{body.BodyStream} whose breaks are L{S3Error}s.
    """

    def __init__(
        self, response: Any, high_water: int = _body.HIGH_WATER, clock: Any = None, read_timeout: float = 0.0
    ) -> None:
        super().__init__(response, high_water, clock=clock, read_timeout=read_timeout, error=_body_error)


def _body_error(message: str) -> Exception:
    return S3Error("get object", message=message)


def _sleep(clock: IReactorTime, seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(clock, seconds, lambda: None)


def environment_region(environ: Mapping[str, str]) -> str:
    """
    C{AWS_REGION}, else C{AWS_DEFAULT_REGION} (the SDKs' order), else "".
    """
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = environ.get(name, "").strip()
        if value:
            return value
    return ""


class S3Store(BulkGet):
    """
    A bucket as remote store.

    @param settings: validated options (L{cacheprog.remote.s3config.check_s3}).
    @param client: L{treq.client.HTTPClient} over a persistent pool, or
        L{treq.testing.StubTreq} in tests.
    @param clock: for retry backoff, timeouts and C{Expires}.
    @param run_in_thread: where credentials are resolved and refreshed.
    @param pool: the client's L{HTTPConnectionPool}, closed by L{close}.
    @param environ: for the region fallback (C{AWS_REGION}...).
    @param credentials: a L{CredentialSource} (default: from C{settings}).
    """

    name = "s3"
    #: Extra attempts after a 5xx/429/connection failure, and their delays.
    retries = 2
    backoff: tuple[float, ...] = (0.05, 0.2)
    #: Uniform in [0, 1): spreads retry delays (L{jittered}).
    random: Callable[[], float] = staticmethod(_random.random)
    #: Budget of the region detection (GetBucketLocation, HeadBucket).
    region_timeout = 2.0
    #: Bytes of a body buffered before the connection is paused.
    high_water = 1 << 20

    def __init__(
        self,
        settings: S3Settings,
        client: HTTPClient,
        clock: IReactorTime,
        run_in_thread: ThreadRunner,
        *,
        pool: Any = None,
        environ: Mapping[str, str] | None = None,
        credentials: CredentialSource | None = None,
        announce: bool = True,
    ) -> None:
        self.settings = settings
        self._client = client
        timeouts = getattr(client, "timeouts", None)
        #: Seconds a body may stall (the pool's read timeout; 0 with a bare client).
        self.read_timeout: float = timeouts.read if timeouts is not None else 0.0
        self._clock = clock
        self._thread = run_in_thread
        self._pool = pool
        self._environ = os.environ if environ is None else environ
        self._credentials = credentials or CredentialSource(settings, run_in_thread, clock)
        self._signer = Signer(exclude=frozenset(h.lower() for h in settings.exclude_headers_from_signing))
        self._tls = settings.endpoint is None or settings.endpoint.scheme == "https"
        self.region = settings.region or environment_region(self._environ)
        #: The region came from AWS_REGION/AWS_DEFAULT_REGION, not the
        #: user's --s3-region: the bucket's own answer may correct it.
        self._region_from_environment = not settings.region and bool(self.region)
        self._region_job: Shared[str] = Shared(self._detect_region)
        #: The store whose region this one uses (L{sibling}).
        self._leader: S3Store | None = None
        #: Uploads skipped because the object was there already.
        self.dedup_skips = 0
        #: Keys this process was just told are absent: their upload needs
        #: no HEAD first (in a cold build nearly every put follows a miss).
        self._absent: set[str] = set()
        if announce:
            _log.info("Configuring S3 storage", **settings.describe())

    def key(self, action_id: bytes) -> str:
        return object_key(self.settings.prefix, action_id)

    def sibling(self, prefix: str) -> S3Store:
        """
        A store for another prefix of the same bucket, sharing this one's
        connections, credentials and region (a read-through tier).  Closing
        it leaves the shared pool to this store.
        """
        other = S3Store(
            dataclasses.replace(self.settings, prefix=prefix, read_prefixes=()),
            self._client,
            self._clock,
            self._thread,
            environ=self._environ,
            credentials=self._credentials,
            announce=False,
        )
        other._leader = self
        return other

    # requests

    async def _region(self) -> str:
        if self.region:
            return self.region
        if self._leader is not None:
            # One detection per bucket, not per read-through prefix.
            self.region = await self._leader._region()
            return self.region
        return await self._region_job.wait()

    async def _request(
        self,
        method: str,
        key: str,
        operation: str,
        headers: Mapping[str, str] | None = None,
        data: bytes | IO[bytes] | None = None,
        payload_sha256: str = EMPTY_SHA256,
        query: str = "",
        region: str | None = None,
        retries: int | None = None,
    ) -> Any:
        """
        Send one signed request, retrying 5xx/429/connection failures.

        @return: the response (any status; 5xx only after the last attempt),
            its body not read.
        @raise S3Error: no answer after the last attempt.
        """
        credentials = await self._credentials.frozen()
        pinned = region is not None
        if region is None:
            region = await self._region()
        url = self.settings.url(key, region, query)
        attempts = 1 + (self.retries if retries is None else retries)
        for attempt in range(attempts):
            final = attempt + 1 >= attempts
            sent = sign(method, url, headers or {}, payload_sha256, credentials, region, signer=self._signer)
            sent["User-Agent"] = USER_AGENT
            if data is not None and not isinstance(data, bytes):
                data.seek(0)  # a file body is read again by each attempt
            request = _Tracked(
                self._client.request(method, url, headers=sent, data=data, unbuffered=True, allow_redirects=False)
            )
            try:
                response = await request.deferred
            except Exception as e:
                if request.cancelled or isinstance(e, CancelledError):
                    raise CancelledError() from e
                if final or not _retryable(e):
                    raise S3Error(operation, message=_describe(e)) from e
                _log.debug("S3 request failed, retrying", operation=operation, key=key, reason=_describe(e))
            else:
                if not pinned and await self._moved(response, region):
                    return await self._request(
                        method, key, operation, headers, data, payload_sha256, query, None, retries
                    )
                if final or response.code not in RETRY_STATUSES:
                    return response
                code, _ = parse_error(await self._read_small(response))
                _log.debug(
                    "S3 answered an error, retrying", operation=operation, key=key, status=response.code, code=code
                )
            await _sleep(self._clock, self.jittered(self.backoff[min(attempt, len(self.backoff) - 1)], self.random))
        raise AssertionError("unreachable")

    @staticmethod
    def jittered(step: float, random: Callable[[], float]) -> float:
        """
        "Equal jitter": half the step plus up to another half, so clients
        failing together do not retry in lock step, and no wait exceeds
        the step.
        """
        return step / 2 + random() * step / 2

    async def _moved(self, response: Any, region: str) -> bool:
        """
        Did the bucket answer that it lives in another region than the one
        taken from the environment?  Then use its region from now on (the
        answer is consumed).
        """
        if not self._region_from_environment or response.code not in (301, 400):
            return False
        hint = _header(response.headers, "x-amz-bucket-region")
        if not hint or hint == region:
            return False
        await self._read_small(response)
        self.region, self._region_from_environment = hint, False
        _log.info("Bucket region detected", region=hint)
        return True

    async def _read_small(self, response: Any) -> bytes:
        return await _body.read_limited(response, ERROR_BODY_LIMIT, clock=self._clock, read_timeout=self.read_timeout)

    async def _error(self, response: Any, operation: str) -> S3Error:
        code, message = parse_error(await self._read_small(response))
        hint = _header(response.headers, "x-amz-bucket-region")
        if hint and code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
            message = f"{message} (the bucket is in {hint}: set --s3-region)".strip()
        return S3Error(operation, response.code, code, message)

    # get

    async def get(self, action_id: bytes) -> RemoteObject:
        key = self.key(action_id)
        response = await self._request("GET", key, "get object")
        if response.code != 200:
            error = await self._error(response, "get object")
            if error.code == "NoSuchKey" or (not error.code and response.code == 404):
                self._absent.add(key)
                raise NotFound(key)
            if error.code == "AccessDenied" or (not error.code and response.code == 403):
                raise NotFound(key)
            raise error
        body = BodyStream(response, self.high_water, self._clock, self.read_timeout)
        try:
            return await self._object(response, body)
        except BaseException:
            body.close()
            raise

    async def _object(self, response: Any, body: BodyStream) -> RemoteObject:
        from twisted.web.iweb import UNKNOWN_LENGTH

        meta = response_metadata(response.headers)
        encoded = meta.get("output_id")
        if encoded is None:
            raise S3Error("get object", message='metadata "output_id" not found')
        try:
            output_id = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise S3Error("get object", message=f'metadata "output_id" is not base64: {encoded!r}') from None
        size_text = meta.get("uncompressed_size", "").strip()
        try:
            size = int(size_text) if size_text else 0
        except ValueError:
            size = -1
        if size < 0:
            raise S3Error("get object", message=f'metadata "uncompressed_size" is not a size: {size_text!r}')
        stored = response.length
        chunks: Any = body
        if stored is UNKNOWN_LENGTH or stored is None:
            # No Content-Length (chunked answer): read it all to know.
            data = await body.read()
            stored, chunks = len(data), one_chunk(data)
        return RemoteObject(
            output_id=output_id,
            size=size or stored,
            mtime=self._mtime(_header(response.headers, "last-modified")),
            compression=meta.get("compression_algorithm", ""),
            stored_size=stored,
            body=chunks,
        )

    def _mtime(self, text: str | None) -> datetime:
        if text:
            try:
                when = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                pass
            else:
                return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        return datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)

    # put

    async def put(self, obj: UploadObject) -> None:
        key = self.key(obj.action_id)
        meta = reference_metadata(obj)
        if key in self._absent:
            self._absent.discard(key)
        elif not obj.absent and await self._stored_already(key, obj, meta):
            self.dedup_skips += 1
            return
        headers = {_META + name: value for name, value in meta.items()}
        if self.settings.expiration > 0:
            headers["Expires"] = formatdate(self._clock.seconds() + self.settings.expiration, usegmt=True)
        response = await self._request(
            "PUT", key, "put object", headers=headers, data=obj.payload(), payload_sha256=self._payload_hash(obj)
        )
        if not 200 <= response.code < 300:
            raise await self._error(response, "put object")
        await self._read_small(response)

    def _payload_hash(self, obj: UploadObject) -> str:
        """
        Over TLS the body is not hashed at all (TLS already protects it, and
        every reader checks SHA-256 against the OutputID); over plain HTTP
        its signed SHA-256 is what S3 checks it against.
        """
        if self._tls:
            return UNSIGNED_PAYLOAD
        return obj.sha256.hex()

    async def _stored_already(self, key: str, obj: UploadObject, meta: Mapping[str, str]) -> bool:
        """
        HEAD with C{If-Match}: the same bytes with the same metadata are
        there.  Any trouble means "no" (the PUT decides).
        """
        try:
            response = await self._request("HEAD", key, "head object", headers={"If-Match": obj.md5.hex()})
        except CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the PUT will tell
            _log.debug("HEAD before upload failed", key=key, reason=str(e))
            return False
        await self._read_small(response)
        return bool(response.code == 200 and _same_metadata(response_metadata(response.headers), meta))

    # listing

    async def list_keys(self, max_pages: int) -> Listing:
        """
        The action IDs under the prefix (ListObjectsV2, 1000 keys a page),
        at most C{max_pages} pages; incomplete when the cap stopped it.
        Keys that are not 64 hex digits (manifests, packs) are skipped.

        @raise S3Error: the store refused (no s3:ListBucket) or failed.
        """
        from cacheprog.remote.sigv4 import encode_query

        prefix = self.key(bytes(32))[:-64]
        found: set[bytes] = set()
        token = ""
        for _ in range(max_pages):
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            response = await self._request("GET", "", "list objects", query=encode_query(params))
            if response.code != 200:
                raise await self._error(response, "list objects")
            body = await _body.read_limited(
                response, LIST_BODY_LIMIT, clock=self._clock, read_timeout=self.read_timeout
            )
            keys, token = parse_listing(body)
            found.update(_action_ids(keys, prefix))
            if not token:
                return Listing(frozenset(found), complete=True)
        return Listing(frozenset(found), complete=False)

    # manifests and packs

    async def get_blob(self, name: str) -> bytes:
        body = await self.get_range(name, 0, -1)
        return b"".join([chunk async for chunk in body])

    async def get_range(self, name: str, start: int, stop: int) -> AsyncIterator[bytes]:
        """
        One GetObject with C{Range} (C{stop} -1: the whole object), streamed.
        A server that ignores the range (200) is read through to the range.
        """
        key = named_key(self.settings.prefix, name)
        headers = {} if stop < 0 else {"Range": f"bytes={start}-{stop - 1}"}
        response = await self._request("GET", key, "get range", headers=headers)
        if response.code in (403, 404):
            await self._read_small(response)
            raise NotFound(key)
        if response.code not in (200, 206):
            raise await self._error(response, "get range")
        body = BodyStream(response, self.high_water, self._clock, self.read_timeout)
        if response.code == 200 and stop >= 0:
            return trimmed(body, start, stop - start)
        return body

    async def put_blob(self, name: str, data: bytes) -> None:
        key = named_key(self.settings.prefix, name)
        digest = hashlib.sha256(data).digest()
        headers = {
            "x-amz-checksum-sha256": base64.b64encode(digest).decode("ascii"),
            "x-amz-sdk-checksum-algorithm": "SHA256",
        }
        response = await self._request("PUT", key, "put blob", headers=headers, data=data, payload_sha256=digest.hex())
        if not 200 <= response.code < 300:
            raise await self._error(response, "put blob")
        await self._read_small(response)

    # region

    async def _detect_region(self) -> str:
        job = Deferred.fromCoroutine(self._probe_region())
        job.addTimeout(self.region_timeout, self._clock)
        try:
            region = await job
        except CredentialsError:
            # Not the bucket's fault: try again with the next request.
            raise
        except Exception as e:  # noqa: BLE001 - detection is best effort
            region = await self._fallback_region()
            _log.warn(
                "Could not detect the bucket region, using a default (set --s3-region)", region=region, reason=str(e)
            )
        else:
            _log.info("Bucket region detected", region=region)
        self.region = region
        return region

    async def _probe_region(self) -> str:
        response = await self._request(
            "GET", "", "get bucket location", query="location", region=DEFAULT_REGION, retries=0
        )
        hint = _header(response.headers, "x-amz-bucket-region")
        body = await self._read_small(response)
        if response.code == 200:
            try:
                return parse_location(body)
            except (ValueError, ET.ParseError):
                if hint:
                    return hint
                raise
        if hint:
            return hint
        code, message = parse_error(body)
        response = await self._request("HEAD", "", "head bucket", region=DEFAULT_REGION, retries=0)
        await self._read_small(response)
        hint = _header(response.headers, "x-amz-bucket-region")
        if hint:
            return hint
        raise S3Error("get bucket location", response.code, code, message)

    async def _fallback_region(self) -> str:
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            value = self._environ.get(name, "").strip()
            if value:
                return value
        try:
            configured = await self._thread(default_region)
        except Exception:  # noqa: BLE001 - no configuration is fine
            configured = ""
        return configured or DEFAULT_REGION

    # close

    async def close(self) -> None:
        """
        Close the pooled connections.  One reactor turn first: a response
        handled re-entrantly (our code runs inside the parser's
        C{dataReceived}) pools its connection only after we return.
        """
        if self._pool is not None:
            await _sleep(self._clock, 0)
            await self._pool.closeCachedConnections()


def build_s3_store(
    settings: S3Settings,
    reactor: Any,
    run_in_thread: ThreadRunner,
    environ: Mapping[str, str] | None = None,
) -> S3Store:
    """
    The store for checked settings (L{cacheprog.remote.s3config.check_s3}):
    a direct client (no treq, endpoints made once) over a persistent pool
    (32 connections per host).
    """
    from cacheprog.remote.pool import build_client

    client, pool = build_client(reactor, per_host=32, idle_timeout=90, direct=True)
    return S3Store(settings, client, reactor, run_in_thread, pool=pool, environ=environ)

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

Around the store: how a request is signed and sent in
L{cacheprog.remote.s3request}, when it is tried again in
L{cacheprog.remote.s3retry}, what the answers mean in
L{cacheprog.remote.s3answers}, which region is signed for in
L{cacheprog.remote.s3region}.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import random as _random
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timezone
from email.utils import formatdate
from typing import IO, Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime

from cacheprog.concurrency import Shared
from cacheprog.interfaces import Body, NotFound, RemoteObject, ThreadRunner, UploadObject
from cacheprog.log import Logger
from cacheprog.presence import Listing
from cacheprog.remote.base import one_chunk, reference_metadata, trimmed
from cacheprog.remote.body import BodyStream, read_limited
from cacheprog.remote.credentials import CredentialSource
from cacheprog.remote.s3answers import (
    META_PREFIX,
    S3Error,
    action_ids,
    answered_error,
    body_error,
    header,
    last_modified,
    object_metadata,
    parse_listing,
    response_metadata,
    same_metadata,
)
from cacheprog.remote.s3config import DEFAULT_REGION, S3Settings, named_key, object_key
from cacheprog.remote.s3region import Probed, detect_region, environment_region, probe_region
from cacheprog.remote.s3request import HTTPClient, SignedRequest
from cacheprog.remote.s3retry import Retries, retried, sleep
from cacheprog.remote.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD, Signer

_log = Logger("s3")

#: Error bodies are read up to this size (for their code); bigger: aborted.
ERROR_BODY_LIMIT = 64 * 1024
#: A page of 1000 keys is about 300 KB of XML.
LIST_BODY_LIMIT = 4 << 20


class S3Store:
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
    #: Uniform in [0, 1): spreads retry delays (L{s3retry.jittered}).
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
        send = SignedRequest(
            self._client, self._signer, method, url, headers or {}, data, payload_sha256, credentials, region
        )
        tries = Retries(1 + (self.retries if retries is None else retries), self.backoff, self.random)
        response = await retried(send, tries, self._clock, self._read_small, operation, key)
        if not pinned and await self._moved(response, region):
            return await self._request(method, key, operation, headers, data, payload_sha256, query, None, retries)
        return response

    async def _moved(self, response: Any, region: str) -> bool:
        """
        Did the bucket answer that it lives in another region than the one
        taken from the environment?  Then use its region from now on (the
        answer is consumed).
        """
        if not self._region_from_environment or response.code not in (301, 400):
            return False
        hint = header(response.headers, "x-amz-bucket-region")
        if not hint or hint == region:
            return False
        await self._read_small(response)
        self.region, self._region_from_environment = hint, False
        _log.info("Bucket region detected", region=hint)
        return True

    async def _read_small(self, response: Any) -> bytes:
        return await read_limited(response, ERROR_BODY_LIMIT, clock=self._clock, read_timeout=self.read_timeout)

    def _stream(self, response: Any) -> BodyStream:
        return BodyStream(
            response, self.high_water, clock=self._clock, read_timeout=self.read_timeout, error=body_error
        )

    async def _error(self, response: Any, operation: str) -> S3Error:
        return answered_error(operation, response.code, response.headers, await self._read_small(response))

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
        body = self._stream(response)
        try:
            return await self._object(response, body)
        except BaseException:
            body.close()
            raise

    async def _object(self, response: Any, body: BodyStream) -> RemoteObject:
        from twisted.web.iweb import UNKNOWN_LENGTH

        meta = object_metadata(response.headers)
        stored = response.length
        chunks: Body = body
        if stored is UNKNOWN_LENGTH or stored is None:
            # No Content-Length (chunked answer): read it all to know.
            data = await body.read()
            stored, chunks = len(data), one_chunk(data)
        return RemoteObject(
            output_id=meta.output_id,
            size=meta.size or stored,
            mtime=last_modified(response.headers) or datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc),
            compression=meta.compression,
            stored_size=stored,
            body=chunks,
        )

    # put

    async def put(self, obj: UploadObject) -> None:
        key = self.key(obj.action_id)
        meta = reference_metadata(obj)
        if key in self._absent:
            self._absent.discard(key)
        elif not obj.absent and await self._stored_already(key, obj, meta):
            self.dedup_skips += 1
            return
        headers = {META_PREFIX + name: value for name, value in meta.items()}
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
        return bool(response.code == 200 and same_metadata(response_metadata(response.headers), meta))

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
            body = await read_limited(response, LIST_BODY_LIMIT, clock=self._clock, read_timeout=self.read_timeout)
            keys, token = parse_listing(body)
            found.update(action_ids(keys, prefix))
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
        body = self._stream(response)
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
        self.region = await detect_region(
            lambda: probe_region(self._probe), self._clock, self.region_timeout, self._environ, self._thread
        )
        return self.region

    async def _probe(self, method: str, query: str, operation: str) -> Probed:
        response = await self._request(method, "", operation, query=query, region=DEFAULT_REGION, retries=0)
        hint = header(response.headers, "x-amz-bucket-region")
        return Probed(response.code, hint, await self._read_small(response))

    # close

    async def close(self) -> None:
        """
        Close the pooled connections.  One reactor turn first: a response
        handled re-entrantly (our code runs inside the parser's
        C{dataReceived}) pools its connection only after we return.
        """
        if self._pool is not None:
            await sleep(self._clock, 0)
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

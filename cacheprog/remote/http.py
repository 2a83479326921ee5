# -*- test-case-name: tests.unit.test_http -*-
"""
The C{http} backend: objects behind a cacheprog proxy (or the Go tool's
C{pkg/httpstorage}), over the protocol of L{cacheprog.remote.httpcontract}.

Any 2xx answers a PUT; every response body is read (or the connection
dropped), so connections go back to the pool; a GET without
C{X-Cacheprog-OutputID} is an error rather than an object with an empty id;
a query string in the base URL stays a query string.

GET bodies are B{streamed} (L{cacheprog.remote.body.BodyStream}): the chunks
arrive as they come, reading pauses while a megabyte waits for the consumer,
a stall longer than the read timeout is an error, and a body released
before its end (L{BodyStream.aclose}, or dropped) aborts its connection.

Cancelling the coroutine of L{HTTPStore.get} or L{HTTPStore.put} (the core's
timeouts do) cancels the HTTP request, or drops the connection mid-body; the
pool's connect and read timeouts (L{cacheprog.remote.pool}) bound every
request whatever the caller's limits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import IO, TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived
from twisted.web.iweb import UNKNOWN_LENGTH

from cacheprog.interfaces import NotFound, RemoteObject, UploadObject
from cacheprog.log import Logger
from cacheprog.remote import body as _body
from cacheprog.remote import httpcontract as contract
from cacheprog.remote.base import trimmed
from cacheprog.remote.pool import cancelled

if TYPE_CHECKING:
    from twisted.web.client import HTTPConnectionPool

    from cacheprog.remote.httpconfig import HTTPSettings

_log = Logger("http")

#: Idle connections kept per host: enough for parallel gets to reuse them.
MAX_PERSISTENT_PER_HOST = 16
#: How much of an error body goes into the error message.
ERROR_BODY_LIMIT = 1024


class HTTPStorageError(Exception):
    """
    The server answered something the protocol does not allow.
    """


async def read_prefix(response: Any, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """
    The first C{limit} bytes of C{response}'s body; the body is released
    (read to its end when short, else its connection dropped).
    """
    return await _body.read_limited(response, limit)


def _broken(message: str) -> Exception:
    return HTTPStorageError(message)


def _header(response: Any, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


class HTTPStore:
    """
    The HTTP storage client.

    @param base_url: where the proxy is; C{/cache/{hex}} is appended to its path.
    @param headers: added to every request.
    @param client: the treq client (tests: a L{treq.testing.StubTreq}).
    @param pool: the connection pool behind C{client}, closed by L{close}.
    """

    name = "http"

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        client: Any,
        reactor: Any = None,
        pool: HTTPConnectionPool | None = None,
    ) -> None:
        self.base_url = base_url
        self._headers = dict(headers)
        self._client = client
        self._reactor = reactor
        self._pool = pool
        timeouts = getattr(client, "timeouts", None)
        #: Seconds a body may stall (the pool's read timeout; 0 with a bare client).
        self.read_timeout: float = timeouts.read if timeouts is not None else 0.0

    @classmethod
    def create(cls, base_url: str, headers: dict[str, str], reactor: Any) -> HTTPStore:
        """
        A store with its own persistent connection pool on C{reactor}.
        """
        from cacheprog.remote.pool import build_client

        client, pool = build_client(reactor, per_host=MAX_PERSISTENT_PER_HOST)
        _log.info("Configuring HTTP storage with base URL", baseURL=base_url)
        return cls(base_url, headers, client, reactor, pool)

    async def _request(
        self, method: str, action_id: bytes, headers: dict[str, str], data: bytes | IO[bytes] | None = None
    ) -> Any:
        try:
            return await self._send(method, action_id, headers, data)
        except (ResponseNeverReceived, RequestTransmissionFailed) as e:
            # Twisted reports a cancelled request as a failed one.
            if cancelled(e):
                raise CancelledError() from None
            raise

    def _send(
        self, method: str, action_id: bytes, headers: dict[str, str], data: bytes | IO[bytes] | None
    ) -> Deferred[Any]:
        all_headers = dict(self._headers)
        all_headers.update(headers)
        kwargs: dict[str, Any] = {"headers": all_headers, "unbuffered": True}
        if data is not None and (not isinstance(data, bytes) or data):
            kwargs["data"] = data
        if self._reactor is not None:
            kwargs["reactor"] = self._reactor
        result: Deferred[Any] = self._client.request(method, contract.object_url(self.base_url, action_id), **kwargs)
        return result

    async def get(self, action_id: bytes) -> RemoteObject:
        response = await self._request("GET", action_id, {})
        if response.code == 404:
            await read_prefix(response)
            raise NotFound(action_id.hex())
        if response.code != 200:
            body = await read_prefix(response)
            raise HTTPStorageError(f"unexpected status code: {response.code}, body: {body!r}")
        try:
            obj = self._parse(response)
        except contract.ContractError as e:
            await _body.discard(response)
            raise HTTPStorageError(str(e)) from None
        return obj

    def _parse(self, response: Any) -> RemoteObject:
        if response.length is UNKNOWN_LENGTH:
            raise contract.ContractError("content-length is unknown")
        output_id = contract.parse_hex(contract.OUTPUT_ID, _header(response, contract.OUTPUT_ID), contract.ID_SIZE)
        mtime = contract.parse_http_date(_header(response, contract.LAST_MODIFIED))
        compression = contract.parse_compression(_header(response, contract.COMPRESSION))
        size = contract.parse_size(contract.UNCOMPRESSED_SIZE, _header(response, contract.UNCOMPRESSED_SIZE))
        stored_size = int(response.length)
        stream = _body.BodyStream(
            response, clock=self._reactor, read_timeout=self.read_timeout if self._reactor else 0.0, error=_broken
        )
        return RemoteObject(
            output_id=output_id,
            size=size or stored_size,
            mtime=mtime,
            compression=compression,
            stored_size=stored_size,
            body=stream,
        )

    async def put(self, obj: UploadObject) -> None:
        headers = {
            contract.OUTPUT_ID: obj.output_id.hex(),
            contract.MD5_SUM: obj.md5.hex(),
            contract.SHA256_SUM: obj.sha256.hex(),
            contract.COMPRESSION: obj.compression,
            contract.UNCOMPRESSED_SIZE: str(obj.size),
        }
        response = await self._request("PUT", obj.action_id, headers, obj.payload())
        body = await read_prefix(response)
        if not 200 <= response.code < 300:
            raise HTTPStorageError(f"unexpected status code: {response.code}, body: {body!r}")

    # manifests and packs

    async def _blob_request(self, method: str, name: str, headers: dict[str, str], data: bytes | None = None) -> Any:
        all_headers = {**self._headers, **headers}
        kwargs: dict[str, Any] = {"headers": all_headers, "unbuffered": True}
        if data is not None:
            kwargs["data"] = data
        if self._reactor is not None:
            kwargs["reactor"] = self._reactor
        try:
            return await self._client.request(method, contract.blob_url(self.base_url, name), **kwargs)
        except (ResponseNeverReceived, RequestTransmissionFailed) as e:
            if cancelled(e):
                raise CancelledError() from None
            raise

    async def get_blob(self, name: str) -> bytes:
        body = await self._blob_body(name, {})
        return b"".join([chunk async for chunk in body])

    async def get_range(self, name: str, start: int, stop: int) -> AsyncIterator[bytes]:
        return await self._blob_body(name, {"Range": f"bytes={start}-{stop - 1}"}, start, stop)

    async def _blob_body(
        self, name: str, headers: dict[str, str], start: int = 0, stop: int = -1
    ) -> AsyncIterator[bytes]:
        response = await self._blob_request("GET", name, headers)
        if response.code == 404:
            await read_prefix(response)
            raise NotFound(name)
        if response.code not in (200, 206):
            body = await read_prefix(response)
            raise HTTPStorageError(f"unexpected status code: {response.code}, body: {body!r}")
        stream = _body.BodyStream(
            response, clock=self._reactor, read_timeout=self.read_timeout if self._reactor else 0.0, error=_broken
        )
        if response.code == 200 and stop >= 0:
            return trimmed(stream, start, stop - start)
        return stream

    async def put_blob(self, name: str, data: bytes) -> None:
        response = await self._blob_request("PUT", name, {}, data)
        body = await read_prefix(response)
        if not 200 <= response.code < 300:
            raise HTTPStorageError(f"unexpected status code: {response.code}, body: {body!r}")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.closeCachedConnections()  # type: ignore[no-untyped-call]


def build_http_store(settings: HTTPSettings, reactor: Any) -> HTTPStore:
    """
    The store for checked settings (L{cacheprog.remote.httpconfig.check_http}).
    """
    return HTTPStore.create(settings.base_url, settings.headers, reactor)

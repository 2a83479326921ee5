# -*- test-case-name: tests.unit.test_http -*-
"""
The C{http} backend: objects behind a cacheprog proxy (or the Go tool's
C{pkg/httpstorage}), over the protocol of L{cacheprog.remote.httpcontract}.

Fixed against the Go reference: any 2xx answers a PUT; every response body
is read (or the connection dropped), so connections go back to the pool; a
GET without C{X-Cacheprog-OutputID} is an error rather than an object with
an empty id; a query string in the base URL stays a query string; up to 16
idle connections are kept per host.

GET bodies are B{streamed}: L{RemoteObject.body} yields the chunks as they
arrive, and reading from the connection pauses while more than
L{StreamedBody.HIGH_WATER} bytes wait for the consumer, so memory stays
bounded whatever the object size.  A body that is dropped unread (or half
read) closes its connection.

Time limits are the caller's: cancelling the coroutine of L{HTTPStore.get}
or L{HTTPStore.put} (the core's timeouts do) cancels the HTTP request, or
drops the connection mid-body.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseDone, ResponseNeverReceived
from twisted.web.iweb import UNKNOWN_LENGTH

from cacheprog.interfaces import NotFound, RemoteObject, UploadObject
from cacheprog.log import Logger
from cacheprog.remote import httpcontract as contract
from cacheprog.remote.base import BulkGet

if TYPE_CHECKING:
    from treq.client import HTTPClient
    from twisted.web.client import HTTPConnectionPool

_log = Logger("http")

#: Idle connections kept per host (Go's default transport kept 2).
MAX_PERSISTENT_PER_HOST = 16
#: How much of an error body goes into the error message.
ERROR_BODY_LIMIT = 1024


class HTTPStorageError(Exception):
    """
    The server answered something the protocol does not allow.
    """


class StreamedBody(Protocol):
    """
    Receives a response body from Twisted (L{IResponse.deliverBody}) for one
    reader, pausing the connection while more than L{HIGH_WATER} bytes wait.
    """

    #: Stop reading from the connection while this many bytes wait.
    HIGH_WATER = 1 << 20

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._paused = False
        self._waiter: Deferred[None] | None = None
        self._end: BaseException | None = None
        self.ended = False

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued >= self.HIGH_WATER and not self._paused and not self.ended:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]
        self._wake()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.ended:
            self.ended = True
            if not isinstance(reason.value, ResponseDone):
                self._end = reason.value
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    async def next_chunk(self) -> bytes | None:
        """
        The next chunk, or None at the end of the body.

        @raise Exception: why the body broke off (the connection was lost,
            it was shorter than its Content-Length, it was abandoned).
        """
        while not self._chunks:
            if self.ended:
                if self._end is not None:
                    raise self._end
                return None
            self._waiter = Deferred(self._cancel)
            await self._waiter
        chunk = self._chunks.popleft()
        self._queued -= len(chunk)
        if self._paused and self._queued <= self.HIGH_WATER // 2 and not self.ended:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
        return chunk

    def _cancel(self, waiter: Deferred[None]) -> None:
        if self._waiter is waiter:
            self._waiter = None
        self.abort()

    def abort(self) -> None:
        """
        Drop the connection unless the body already ended: the rest is not wanted.
        """
        self._chunks.clear()
        self._queued = 0
        if not self.ended:
            self.ended = True
            self._end = HTTPStorageError("response body abandoned")
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]


class BodyReader:
    """
    L{RemoteObject.body} for the C{http} backend: an async iterator over a
    L{StreamedBody}.  Cancelling a pending read, L{aclose}, or dropping the
    reader before the end (the core may drop an object it cannot decode)
    closes the connection.
    """

    def __init__(self, stream: StreamedBody) -> None:
        self._stream = stream

    def __aiter__(self) -> BodyReader:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._stream.next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._stream.abort()

    def __del__(self) -> None:
        self._stream.abort()


class _Discard(Protocol):
    """
    Drops a body unread, with its connection.
    """

    def connectionMade(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]


class _Prefix(Protocol):
    """
    Reads up to C{limit} bytes of a body, then drops the connection.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.data += data[: self.limit - len(self.data)]
        if len(self.data) >= self.limit:
            self.transport.stopProducing()  # type: ignore[union-attr]
            self.done.callback(bytes(self.data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(bytes(self.data))


async def read_prefix(response: Any, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """
    The first C{limit} bytes of C{response}'s body; the body is released
    (read to its end when short, else its connection dropped).
    """
    reader = _Prefix(limit)
    response.deliverBody(reader)
    return await reader.done


def _header(response: Any, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


class HTTPStore(BulkGet):
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
        client: HTTPClient,
        reactor: Any = None,
        pool: HTTPConnectionPool | None = None,
    ) -> None:
        self.base_url = base_url
        self._headers = dict(headers)
        self._client = client
        self._reactor = reactor
        self._pool = pool

    @classmethod
    def create(cls, base_url: str, headers: dict[str, str], reactor: Any) -> HTTPStore:
        """
        A store with its own persistent connection pool on C{reactor}.
        """
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
        agent = Agent(reactor, pool=pool, connectTimeout=30)  # type: ignore[no-untyped-call]
        _log.info("Configuring HTTP storage with base URL", baseURL=base_url)
        return cls(base_url, headers, HTTPClient(agent), reactor, pool)

    async def _request(self, method: str, action_id: bytes, headers: dict[str, str], data: bytes | None = None) -> Any:
        try:
            return await self._send(method, action_id, headers, data)
        except (ResponseNeverReceived, RequestTransmissionFailed) as e:
            # Twisted reports a cancelled request as a failed one.
            if any(isinstance(reason.value, CancelledError) for reason in e.reasons):
                raise CancelledError() from None
            raise

    def _send(self, method: str, action_id: bytes, headers: dict[str, str], data: bytes | None) -> Deferred[Any]:
        all_headers = dict(self._headers)
        all_headers.update(headers)
        kwargs: dict[str, Any] = {"headers": all_headers, "unbuffered": True}
        if data:
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
            response.deliverBody(_Discard())
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
        stream = StreamedBody()
        response.deliverBody(stream)
        return RemoteObject(
            output_id=output_id,
            size=size or stored_size,
            mtime=mtime,
            compression=compression,
            stored_size=stored_size,
            body=BodyReader(stream),
        )

    async def put(self, obj: UploadObject) -> None:
        headers = {
            contract.OUTPUT_ID: obj.output_id.hex(),
            contract.MD5_SUM: obj.md5.hex(),
            contract.SHA256_SUM: obj.sha256.hex(),
            contract.COMPRESSION: obj.compression,
            contract.UNCOMPRESSED_SIZE: str(obj.size),
        }
        response = await self._request("PUT", obj.action_id, headers, obj.data)
        body = await read_prefix(response)
        if not 200 <= response.code < 300:
            raise HTTPStorageError(f"unexpected status code: {response.code}, body: {body!r}")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.closeCachedConnections()  # type: ignore[no-untyped-call]


def build_http_store(options: dict[str, Any], reactor: Any) -> HTTPStore:
    """
    The store for a plan checked by L{httpcontract.check_http_options}.
    """
    return HTTPStore.create(options["base_url"], options["headers"], reactor)

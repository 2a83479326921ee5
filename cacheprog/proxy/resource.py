# -*- test-case-name: tests.unit.test_proxy -*-
"""
The proxy's web resources: C{/health}, C{/cache/{hex}} (the HTTP storage
protocol of L{cacheprog.remote.httpcontract} over any L{RemoteStore}, like
the Go reference's C{pkg/httpstorage}), C{/metrics} and C{/metricsproxy}.

L{StorageResource} is public and reusable: mount it in any
L{twisted.web.server.Site} to serve a store.  Under L{ProxySite} (what
L{build_site} makes) request bodies are hashed while they arrive; elsewhere
they are hashed after.

Stricter than the reference, so that nothing bad is ever stored: the key is
exactly 64 lowercase hex digits; C{Content-Length}, C{X-Cacheprog-OutputID},
C{X-Cacheprog-MD5Sum}, C{X-Cacheprog-Sha256Sum} and
C{X-Cacheprog-UncompressedSize} are required and well formed; and the body's
MD5 and SHA-256 must match their headers.  Any refusal is a 4xx and stores
nothing.  C{Last-Modified} is sent in GMT.  A client that goes away cancels
the store call it was waiting for.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Callable
from typing import IO, Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from cacheprog.codec import MAX_OBJECT
from cacheprog.interfaces import (
    BlobStore,
    NotFound,
    RemoteObject,
    RemoteStore,
    ThreadRunner,
    Unavailable,
    UploadObject,
)
from cacheprog.log import Logger
from cacheprog.proxy.access import Tokens
from cacheprog.proxy.channel import GuardedChannel
from cacheprog.remote import httpcontract as contract
from cacheprog.remote.base import close_body as close_stream

_log = Logger("proxy")

#: Bodies from this size on are read in the thread pool (when one is given).
BIG = 1 << 20
#: Stored bodies are written to the client in pieces of at most this size.
WRITE_CHUNK = 256 * 1024
#: Idle keep-alive connections are closed after this many seconds.
IDLE_TIMEOUT = 300
#: twisted.web keeps request bodies up to this size in memory, larger ones
#: in a temporary file.
IN_MEMORY_BODY = 100_000

METHODS = (b"GET", b"HEAD", b"PUT")
#: Bodies on other paths than the storage (metrics pushes) stop here.
MAX_OTHER_BODY = 16 << 20
#: Connections open at once, at most (more wait for a free one: refused).
MAX_CONNECTIONS = 4096
_CACHE = contract.CACHE_SEGMENT.encode("ascii")
#: Paths whose reads and writes the tokens guard (objects; manifests and packs).
_STORED = (_CACHE, contract.BLOB_SEGMENT.encode("ascii"))
#: No tokens: anyone who reaches the proxy may read and write.
OPEN = Tokens()


class WebRequest(Protocol):
    """
    What the resources use of a L{twisted.web.server.Request} (typed, unlike
    Twisted's own).
    """

    method: bytes
    uri: bytes
    postpath: list[bytes]
    content: IO[bytes]
    finished: int

    def getHeader(self, key: str | bytes) -> bytes | None: ...
    def setHeader(self, name: str | bytes, value: str | bytes) -> None: ...
    def setResponseCode(self, code: int) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def notifyFinish(self) -> Deferred[None]: ...
    def registerProducer(self, producer: object, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...


def plain(request: WebRequest, code: int, message: str = "") -> bytes:
    """
    Answer C{code} with a Go C{http.Error}-style text body (C{message} plus a
    newline, or nothing); returns the body for C{render}.
    """
    body = (message + "\n").encode("utf-8") if message else b""
    request.setResponseCode(code)
    if body:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


class HashingFile:
    """
    A request body file that computes MD5 and SHA-256 as the body arrives.
    """

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        self.sha256.update(data)
        self.size += len(data)
        return self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _content_file(length: int | None) -> IO[bytes]:
    if length is not None and length < IN_MEMORY_BODY:
        return io.BytesIO()
    return tempfile.TemporaryFile()


def _read_all(content: IO[bytes]) -> bytes:
    content.seek(0)
    return content.read()


def _digests(content: IO[bytes]) -> tuple[bytes, bytes, int]:
    """
    MD5, SHA-256 and size of a request body, from the hashing file or by
    reading it.
    """
    if isinstance(content, HashingFile):
        return content.md5.digest(), content.sha256.digest(), content.size
    md5, sha256, size = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    content.seek(0)
    for block in iter(lambda: content.read(1 << 16), b""):
        md5.update(block)
        sha256.update(block)
        size += len(block)
    content.seek(0)
    return md5.digest(), sha256.digest(), size


@implementer(IPushProducer)
class _Pacer:
    """
    Back-pressure for writing a response: the transport pauses us when its
    buffer is full.
    """

    def __init__(self) -> None:
        self._resumed: Deferred[None] | None = None
        self.stopped = False

    def pauseProducing(self) -> None:
        if self._resumed is None:
            self._resumed = Deferred()

    def resumeProducing(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()

    async def ready(self) -> None:
        if self._resumed is not None:
            await self._resumed


async def _write_paced(request: WebRequest, pacer: _Pacer, chunk: bytes) -> None:
    """
    Write C{chunk} in steps, each after the client took the one before.
    """
    for start in range(0, len(chunk), WRITE_CHUNK):
        if pacer.stopped:
            raise CancelledError()
        request.write(chunk[start : start + WRITE_CHUNK] if len(chunk) > WRITE_CHUNK else chunk)
        await pacer.ready()


async def close_body(obj: RemoteObject) -> None:
    """
    Release a body that will not be read (HEAD, a client gone).
    """
    await obj.body.aclose()


def _abort(request: WebRequest) -> None:
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if transport is not None:
        transport.abortConnection()


def _header(request: WebRequest, name: str) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _Resource(Resource):
    """
    L{Resource} with a typed constructor.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]


class StorageResource(_Resource):
    """
    C{GET}, C{HEAD} and C{PUT} of C{/{hex}} below where it is mounted, over
    C{store}.  Other methods get 405; other paths 404.

    @param store: any L{RemoteStore}; L{DisabledStore} gives GET 404, PUT 200.
    @param run_in_thread: reads large request bodies off the reactor thread;
        None reads them inline.
    """

    isLeaf = True

    def __init__(self, store: RemoteStore, run_in_thread: ThreadRunner | None = None) -> None:
        super().__init__()
        self._store = store
        self._thread = run_in_thread
        self._running: set[Deferred[None]] = set()

    def render(self, request: WebRequest) -> bytes | int:
        if len(request.postpath) != 1 or not request.postpath[0]:
            return plain(request, 404, "404 page not found")
        try:
            key = contract.parse_key(request.postpath[0])
        except contract.ContractError as e:
            return plain(request, 400 if request.method in METHODS else 404, f"failed to decode actionID: {e}")
        if request.method in (b"GET", b"HEAD"):
            return self._start(request, self._get(request, key, head=request.method == b"HEAD"))
        if request.method == b"PUT":
            return self._put(request, key)
        request.setHeader(b"allow", b"GET, HEAD, PUT")
        return plain(request, 405, "Method Not Allowed")

    def _start(self, request: WebRequest, job: Any) -> int:
        """
        Run C{job} for C{request}; a client that goes away cancels it.
        """
        d: Deferred[None] = Deferred.fromCoroutine(job)

        def done(result: object) -> None:
            self._running.discard(d)
            if isinstance(result, Failure) and not isinstance(result.value, CancelledError):
                _log.error("Storage request failed", uri=request.uri.decode("latin-1"), reason=repr(result.value))
                if not request.finished and not getattr(request, "_disconnected", False):
                    _abort(request)

        if not d.called:
            self._running.add(d)
            request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addBoth(done)
        return NOT_DONE_YET

    # GET and HEAD

    async def _get(self, request: WebRequest, key: bytes, head: bool) -> None:
        try:
            obj = await self._store.get(key)
        except NotFound:
            request.write(plain(request, 404))
            request.finish()
            return
        except Unavailable:
            request.write(plain(request, 503, "remote storage is switched off after repeated errors"))
            request.finish()
            return
        except CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the client gets the text, as from the reference
            _log.warn("Failed to get from remote storage", action_id=key.hex(), reason=repr(e))
            request.write(plain(request, 500, str(e) or repr(e)))
            request.finish()
            return
        try:
            request.setResponseCode(200)
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(contract.CONTENT_LENGTH, str(obj.stored_size))
            request.setHeader(contract.LAST_MODIFIED, contract.format_http_date(obj.mtime))
            request.setHeader(contract.OUTPUT_ID, obj.output_id.hex())
            request.setHeader(contract.COMPRESSION, obj.compression)
            request.setHeader(contract.UNCOMPRESSED_SIZE, str(obj.size))
            if head:
                request.finish()
                return
            await self._stream(request, obj)
        finally:
            await close_body(obj)

    async def _stream(self, request: WebRequest, obj: RemoteObject) -> None:
        pacer = _Pacer()
        request.registerProducer(pacer, True)
        sent = 0
        try:
            async for chunk in obj.body:
                sent += len(chunk)
                if sent > obj.stored_size:
                    await close_body(obj)
                    break
                await _write_paced(request, pacer, chunk)
        finally:
            if getattr(request, "channel", None) is not None:  # None once the client is gone
                request.unregisterProducer()
        if sent != obj.stored_size:
            # Headers promised another length: the client must see a broken
            # response, not a short or long one.
            _log.error(
                "Stored object has another size than its metadata",
                action_id=request.postpath[0].decode("latin-1"),
                sent=sent,
                expected=obj.stored_size,
            )
            _abort(request)
            return
        request.finish()

    # PUT

    def _put(self, request: WebRequest, key: bytes) -> bytes | int:
        try:
            length = contract.parse_size(contract.CONTENT_LENGTH, _header(request, contract.CONTENT_LENGTH))
            output_id = contract.parse_hex(contract.OUTPUT_ID, _header(request, contract.OUTPUT_ID), contract.ID_SIZE)
            md5 = contract.parse_hex(contract.MD5_SUM, _header(request, contract.MD5_SUM), contract.MD5_SIZE)
            sha256 = contract.parse_hex(contract.SHA256_SUM, _header(request, contract.SHA256_SUM), contract.ID_SIZE)
            compression = contract.parse_compression(_header(request, contract.COMPRESSION))
            size = contract.parse_size(contract.UNCOMPRESSED_SIZE, _header(request, contract.UNCOMPRESSED_SIZE))
        except contract.ContractError as e:
            return plain(request, 400, str(e))
        problem = _lie(compression, output_id, sha256)
        if problem:
            return plain(request, 400, problem)
        content = request.content
        got_md5, got_sha256, got_size = _digests(content)
        if got_size != length:
            return plain(request, 400, f"body has {got_size} bytes, Content-Length says {length}")
        if got_md5 != md5:
            return plain(request, 400, f"{contract.MD5_SUM} does not match the body")
        if got_sha256 != sha256:
            return plain(request, 400, f"{contract.SHA256_SUM} does not match the body")

        async def store() -> None:
            if length >= BIG:
                # Big bodies stay in their temp file: a 1 GiB PUT must not
                # be a 1 GiB process.
                obj = UploadObject(key, output_id, size, compression, b"", md5, sha256, file=content, file_size=length)
            else:
                obj = UploadObject(key, output_id, size, compression, _read_all(content), md5, sha256)
            try:
                await self._store.put(obj)
            except Unavailable:
                message = "remote storage is switched off after repeated errors"
                request.write(plain(request, 503, message))
            except CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the client gets the text
                _log.warn("Failed to put to remote storage", action_id=key.hex(), reason=repr(e))
                request.write(plain(request, 500, str(e) or repr(e)))
            else:
                request.write(plain(request, 200))
            request.finish()

        return self._start(request, store())

    def running(self) -> int:
        """
        How many store calls are in progress.
        """
        return len(self._running)


class BlobResource(StorageResource):
    """
    C{GET} (with or without one C{Range}) and C{PUT} of C{/manifests/v1/<hex>}
    and C{/packs/v1/<hex>} below where it is mounted (the warm start's run
    manifests and packs), over a store that holds named objects.
    """

    isLeaf = True

    def __init__(self, blobs: BlobStore, run_in_thread: ThreadRunner | None = None) -> None:
        _Resource.__init__(self)
        self._blobs = blobs
        self._thread = run_in_thread
        self._running = set()

    def render(self, request: WebRequest) -> bytes | int:
        try:
            name = contract.parse_blob_name(list(request.postpath))
            wanted = contract.parse_range(_header(request, "Range"))
        except contract.ContractError as e:
            return plain(request, 404 if request.method == b"GET" else 400, str(e))
        if request.method == b"GET":
            return self._start(request, self._get_blob(request, name, wanted))
        if request.method == b"PUT":
            return self._put_blob(request, name)
        request.setHeader(b"allow", b"GET, PUT")
        return plain(request, 405, "Method Not Allowed")

    async def _get_blob(self, request: WebRequest, name: str, wanted: tuple[int, int] | None) -> None:
        try:
            # The whole blob is read as the widest range a blob can have, so it
            # streams like any range instead of sitting in memory.
            body = await self._blobs.get_range(name, *(wanted or (0, contract.BLOB_LIMIT)))
        except NotFound:
            request.write(plain(request, 404))
            request.finish()
            return
        request.setHeader(b"content-type", b"application/octet-stream")
        if wanted is not None:
            # The stored size is not known here: the range is sent chunked.
            request.setResponseCode(206)
            request.setHeader(b"content-range", f"bytes {wanted[0]}-{wanted[1] - 1}/*".encode("ascii"))
        pacer = _Pacer()
        request.registerProducer(pacer, True)
        try:
            async for chunk in body:
                await _write_paced(request, pacer, chunk)
        finally:
            if getattr(request, "channel", None) is not None:  # None once the client is gone
                request.unregisterProducer()
            await close_stream(body)
        request.finish()

    def _put_blob(self, request: WebRequest, name: str) -> bytes | int:
        content = request.content
        content.seek(0, 2)
        size = content.tell()
        if size > contract.BLOB_LIMIT:
            return plain(request, 413, f"larger than {contract.BLOB_LIMIT} bytes")

        async def store() -> None:
            data = await self._thread(_read_all, content) if self._thread is not None else _read_all(content)
            await self._blobs.put_blob(name, data)
            request.write(plain(request, 200))
            request.finish()

        return self._start(request, store())


class HealthResource(_Resource):
    """
    C{/health}: 200, empty, whatever the method.
    """

    isLeaf = True

    def render(self, request: WebRequest) -> bytes:
        if request.postpath:
            return plain(request, 404, "404 page not found")
        return plain(request, 200)


class MetricsResource(_Resource):
    """
    C{/metrics}: the proxy's own series (its remote store's gets, puts,
    misses, errors and timings) as Prometheus text.
    """

    isLeaf = True

    def __init__(self, render: Callable[[], str] | None = None) -> None:
        super().__init__()
        self._render = render

    def render(self, request: WebRequest) -> bytes:
        if request.postpath:
            return plain(request, 404, "404 page not found")
        text = self._render() if self._render is not None else "# cacheprog proxy: no metrics\n"
        body = text.encode("utf-8")
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


class ExactPath(_Resource):
    """
    Mounts C{inner} at one exact path: anything below it is 404.
    """

    isLeaf = True

    def __init__(self, inner: IResource) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request: WebRequest) -> bytes | int:
        if request.postpath:
            return plain(request, 404, "404 page not found")
        result: bytes | int = self._inner.render(request)  # type: ignore[no-untyped-call]
        return result


class _NotFound(_Resource):
    isLeaf = True

    def render(self, request: WebRequest) -> bytes:
        return plain(request, 404, "404 page not found")


class _Root(_Resource):
    """
    Known children by name; anything else 404.
    """

    def getChild(self, path: bytes, request: Any) -> IResource:
        return _NotFound()

    def render(self, request: WebRequest) -> bytes:
        return plain(request, 404, "404 page not found")


def _connection_cap(wanted: int) -> int:
    """
    C{wanted}, but below the open-file limit (files, upstream connections
    and the listening socket need descriptors too).
    """
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft - 16))


def _lie(compression: str, output_id: bytes, sha256: bytes) -> str:
    """
    Why a PUT can never be a good object: a raw body is the output itself,
    so its SHA-256 must be its OutputID (clients would miss on it for ever).
    """
    if compression == "" and sha256 != output_id:
        return f"{contract.SHA256_SUM} of a raw body must equal its {contract.OUTPUT_ID}"
    return ""


def screen_storage(method: bytes, headers: Any, length: int | None) -> tuple[int, str] | None:
    """
    What can be refused of a storage request from its headers alone (before
    its body is read): a PUT without a length or beyond the largest object,
    with missing or malformed storage headers, or a raw body that cannot be
    its OutputID.
    """
    if method != b"PUT":
        return None
    if length is None:
        return 411, "a PUT needs a Content-Length"
    if length > MAX_OBJECT:
        return 413, f"objects are limited to {MAX_OBJECT} bytes"

    def get(name: str) -> str | None:
        values = headers.getRawHeaders(name.encode("latin-1"))
        return values[0].decode("latin-1") if values else None

    try:
        output_id = contract.parse_hex(contract.OUTPUT_ID, get(contract.OUTPUT_ID), contract.ID_SIZE)
        contract.parse_hex(contract.MD5_SUM, get(contract.MD5_SUM), contract.MD5_SIZE)
        sha256 = contract.parse_hex(contract.SHA256_SUM, get(contract.SHA256_SUM), contract.ID_SIZE)
        compression = contract.parse_compression(get(contract.COMPRESSION))
        size = contract.parse_size(contract.UNCOMPRESSED_SIZE, get(contract.UNCOMPRESSED_SIZE))
    except contract.ContractError as e:
        return 400, str(e)
    if size > MAX_OBJECT:
        return 413, f"objects are limited to {MAX_OBJECT} bytes"
    problem = _lie(compression, output_id, sha256)
    return (400, problem) if problem else None


class _TrackedRequest(server.Request):
    """
    A request that its L{ProxySite} knows about from its headers to its end,
    so a stopping proxy can let it finish.
    """

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)  # type: ignore[no-untyped-call]
        site = getattr(self.channel, "site", None)
        if isinstance(site, ProxySite):
            site.track(self)


class ProxySite(Site):
    """
    The proxy's site: hashes request bodies as they arrive, keeps track of
    requests in progress, logs no access lines; its connections
    (L{GuardedChannel}) have header and body deadlines, and requests are
    screened from their headers (tokens, storage headers, sizes) before any
    body byte is read.  At most C{max_connections} are open at once.
    """

    protocol = GuardedChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        reactor: Any = None,
        timeout: float = IDLE_TIMEOUT,
        tokens: Tokens = OPEN,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            resource, requestFactory=_TrackedRequest, reactor=reactor, timeout=timeout
        )
        self.noisy = False
        self.displayTracebacks = False
        self.tokens = tokens
        self.max_connections = _connection_cap(max_connections)
        #: The listening port (set by the service): paused while full.
        self.port: Any = None
        self._paused = False
        #: Seconds a request's headers may take (L{GuardedChannel}).
        self.header_timeout = GuardedChannel.header_timeout
        self._channels: set[Any] = set()
        self._active: set[Any] = set()
        self._idle: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        if len(self._channels) >= self.max_connections:
            _log.warn("Too many connections, refusing one", open=len(self._channels), peer=str(addr))
            return None
        channel = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        channel.header_timeout = self.header_timeout
        return channel

    def channel_opened(self, channel: Any) -> None:
        self._channels.add(channel)
        if len(self._channels) >= self.max_connections and self.port is not None and not self._paused:
            # Full: new clients wait in the kernel's backlog, not refused.
            self._paused = True
            self.port.stopReading()

    def channel_closed(self, channel: Any) -> None:
        self._channels.discard(channel)
        if len(self._channels) < self.max_connections and self._paused:
            self._paused = False
            if self.port is not None and getattr(self.port, "connected", True):
                self.port.startReading()

    @property
    def connections(self) -> int:
        return len(self._channels)

    def screen(self, method: bytes, path: bytes, headers: Any, length: int | None) -> tuple[int, str] | None:
        """
        Refuse a request from its headers, or None to let it in (see
        L{GuardedChannel}).
        """
        segment = path.split(b"?", 1)[0].lstrip(b"/").split(b"/")[0]
        if segment not in _STORED:
            if length is not None and length > MAX_OTHER_BODY:
                return 413, f"bodies here are limited to {MAX_OTHER_BODY} bytes"
            return None
        values = headers.getRawHeaders(b"authorization")
        refusal = self.tokens.refusal(method, values[0] if values else None)
        if refusal is not None or segment != _CACHE:
            if refusal is None and length is not None and length > MAX_OBJECT:
                return 413, f"bodies are limited to {MAX_OBJECT} bytes"
            return refusal
        return refusal or screen_storage(method, headers, length)

    def getContentFile(self, length: int | None) -> HashingFile:
        return HashingFile(_content_file(length))

    def log(self, request: http.Request) -> None:
        return None

    def track(self, request: Any) -> None:
        self._active.add(request)

        def finished(_: object) -> None:
            self._active.discard(request)
            if not self._active:
                idle, self._idle = self._idle, []
                for d in idle:
                    d.callback(None)

        request.notifyFinish().addBoth(finished)

    @property
    def active(self) -> int:
        """
        Requests between their headers and their last byte.
        """
        return len(self._active)

    async def drain(self, timeout: float, clock: IReactorTime) -> int:
        """
        Wait until no request is in progress, at most C{timeout} seconds; then
        drop the connections of those left.

        @return: how many requests were cut off.
        """
        if self._active:
            d: Deferred[None] = Deferred()
            self._idle.append(d)
            d.addTimeout(timeout, clock)
            try:
                await d
            except Exception:  # noqa: BLE001 - a timeout ends the wait either way
                pass
        left = list(self._active)
        for request in left:
            _abort(request)
        return len(left)

    def cut(self) -> None:
        """
        End a L{drain} now (its requests are cut off).
        """
        idle, self._idle = self._idle, []
        for d in idle:
            if not d.called:
                d.callback(None)


def build_site(
    store: RemoteStore,
    *,
    reactor: Any = None,
    run_in_thread: ThreadRunner | None = None,
    metrics: IResource | None = None,
    metricsproxy: IResource | None = None,
    timeout: float = IDLE_TIMEOUT,
    tokens: Tokens = OPEN,
    blobs: BlobStore | None = None,
) -> ProxySite:
    """
    The proxy's site over C{store}.

    @param metrics: served at C{/metrics} (exact path); a stub exposition when None.
    @param metricsproxy: served at C{/metricsproxy} (exact path) when given;
        404 when None (the reference mounts it only with
        C{--metrics-proxy-endpoint}).
    """
    root = _Root()
    root.putChild(b"health", HealthResource())
    root.putChild(contract.CACHE_SEGMENT.encode("ascii"), StorageResource(store, run_in_thread))
    root.putChild(b"metrics", ExactPath(metrics) if metrics is not None else MetricsResource())
    if metricsproxy is not None:
        root.putChild(b"metricsproxy", ExactPath(metricsproxy))
    if blobs is not None:
        root.putChild(contract.BLOB_SEGMENT.encode("ascii"), BlobResource(blobs, run_in_thread))
    return ProxySite(root, reactor=reactor, timeout=timeout, tokens=tokens)

# -*- test-case-name: tests.unit.test_proxy,tests.unit.test_channel -*-
"""
The proxy's web site: what is served where (C{/health}, C{/cache/},
C{/blob/}, C{/metrics}, C{/metricsproxy}; L{build_site}), the screening of
requests from their headers, the cap on connections, and the drain of the
requests in progress when the proxy stops.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource
from twisted.web.server import Site

from cacheprog.compression import MAX_OBJECT
from cacheprog.interfaces import BlobStore, RemoteStore, ThreadRunner
from cacheprog.log import Logger
from cacheprog.proxy.access import Tokens
from cacheprog.proxy.blobs import BlobResource
from cacheprog.proxy.channel import GuardedChannel
from cacheprog.proxy.storage import HashingFile, StorageResource, screen_storage
from cacheprog.proxy.web import TypedResource, WebRequest, abort, plain
from cacheprog.remote import httpcontract as contract

_log = Logger("proxy")

#: Idle keep-alive connections are closed after this many seconds.
IDLE_TIMEOUT = 300
#: twisted.web keeps request bodies up to this size in memory, larger ones
#: in a temporary file.
IN_MEMORY_BODY = 100_000
#: Bodies on other paths than the storage (metrics pushes) stop here.
MAX_OTHER_BODY = 16 << 20
#: Connections open at once, at most (more wait for a free one: refused).
MAX_CONNECTIONS = 4096
_CACHE = contract.CACHE_SEGMENT.encode("ascii")
#: Paths whose reads and writes the tokens guard (objects; manifests and packs).
_STORED = (_CACHE, contract.BLOB_SEGMENT.encode("ascii"))
#: No tokens: anyone who reaches the proxy may read and write.
OPEN = Tokens()


class HealthResource(TypedResource):
    """
    C{/health}: 200, empty, whatever the method.
    """

    isLeaf = True

    def render(self, request: WebRequest) -> bytes:
        if request.postpath:
            return plain(request, 404, "404 page not found")
        return plain(request, 200)


class MetricsResource(TypedResource):
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


class ExactPath(TypedResource):
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


class _NotFound(TypedResource):
    isLeaf = True

    def render(self, request: WebRequest) -> bytes:
        return plain(request, 404, "404 page not found")


class _Root(TypedResource):
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


def _content_file(length: int | None) -> IO[bytes]:
    if length is not None and length < IN_MEMORY_BODY:
        return io.BytesIO()
    return tempfile.TemporaryFile()


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

    def screen(self, method: bytes, path: bytes, headers: Headers, length: int | None) -> tuple[int, str] | None:
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
            abort(request)
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

    @param run_in_thread: reads the bodies of blob PUTs off the reactor
        thread; None reads them inline.
    @param metrics: served at C{/metrics} (exact path); a stub exposition when None.
    @param metricsproxy: served at C{/metricsproxy} (exact path) when given;
        404 when None (no C{--metrics-proxy-endpoint}).
    """
    root = _Root()
    root.putChild(b"health", HealthResource())
    root.putChild(_CACHE, StorageResource(store))
    root.putChild(b"metrics", ExactPath(metrics) if metrics is not None else MetricsResource())
    if metricsproxy is not None:
        root.putChild(b"metricsproxy", ExactPath(metricsproxy))
    if blobs is not None:
        root.putChild(contract.BLOB_SEGMENT.encode("ascii"), BlobResource(blobs, run_in_thread))
    return ProxySite(root, reactor=reactor, timeout=timeout, tokens=tokens)

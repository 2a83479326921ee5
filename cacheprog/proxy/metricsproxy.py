# -*- test-case-name: tests.unit.test_metricsproxy -*-
"""
C{/metricsproxy}: forwards metric pushes to C{--metrics-proxy-endpoint},
adding the proxy's labels (as a Pushgateway-style path) and headers, so the
clients inside a C{docker build} need to know neither.

Like the Go reference (a C{httputil.ReverseProxy}):
  - method, body (gzip stays gzip, with its C{Content-Encoding}) and headers
    go through; C{Host} becomes the target's; hop-by-hop and
    C{X-Forwarded-*} headers are dropped, none are added;
  - C{--metrics-proxy-extra-headers} are added to the client's;
  - the client's query string is appended to the endpoint's;
  - the target path is the endpoint's (default C{/}), plus, with extra
    labels, C{metrics/job/<job>/<k1>/<v1>/...} (L{target_path});
  - the endpoint's answer goes back as is; no answer: 502 with the error
    text, and ERROR C{failed to proxy metrics}.

The label values are all path-escaped (space: C{%20}), as the Prometheus
Go client does: a Pushgateway reads C{+} as a plus sign.  No trailing C{/}
is added: a Pushgateway refuses it when there are labels besides C{job}.
The forward has a timeout, so a hung endpoint cannot hold a client.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from cacheprog.log import Logger

if TYPE_CHECKING:
    from cacheprog.remote.pool import Requester

_log = Logger("proxy")

#: A forward (request and answer) must be over after this (seconds).
FORWARD_TIMEOUT = 30.0

# RFC 9110 7.6.1 plus what Go's ReverseProxy drops.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the client library from the URL and the body.
_RECOMPUTED = frozenset({b"host", b"content-length"})
# Go's path escaping of one segment (url.PathEscape) leaves these alone.
_SEGMENT_SAFE = "$&+:=@"


def _component(value: str) -> tuple[str, bool]:
    """
    A label value as one path segment: C{=} when empty, unpadded base64url
    when it holds a C{/} (both flagged C{@base64}), else path-escaped.
    """
    if value == "":
        return "=", True
    if "/" in value:
        return base64.urlsafe_b64encode(value.encode("utf-8")).rstrip(b"=").decode("ascii"), True
    return quote(value, safe=_SEGMENT_SAFE), False


def label_path(labels: Mapping[str, str]) -> str:
    """
    C{metrics/job/<job>/<k1>/<v1>/...}: C{job} first, the others sorted by
    name; a value with C{/} as C{<key>@base64/<base64url>}, an empty or
    missing one as C{<key>@base64/=}.
    """
    others = dict(labels)
    job = others.pop("job", "")
    parts = ["metrics"]
    for key, value in [("job", job), *sorted(others.items())]:
        encoded, is_base64 = _component(value)
        parts += [quote(key, safe=_SEGMENT_SAFE) + ("@base64" if is_base64 else ""), encoded]
    return "/".join(parts)


def target_path(endpoint_path: str, labels: Mapping[str, str]) -> str:
    """
    Where a push goes: the endpoint's path (C{/} when empty), then
    L{label_path} when there are labels.
    """
    path = endpoint_path or "/"
    if labels:
        path = path.rstrip("/") + "/" + label_path(labels)
    return path


def target_url(endpoint: str, labels: Mapping[str, str], query: str = "") -> str:
    """
    The full URL a push to C{/metricsproxy?<query>} is forwarded to.
    """
    parts = urlsplit(endpoint)
    merged = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, target_path(parts.path, labels), merged, ""))


class MetricsProxyResource(Resource):
    """
    The C{/metricsproxy} resource (exact path only; anything below is 404).
    """

    isLeaf = True

    def __init__(
        self,
        client: Requester,
        clock: IReactorTime,
        endpoint: str,
        labels: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = FORWARD_TIMEOUT,
    ) -> None:
        """
        @param client: sends the forwarded requests.
        @param endpoint: C{--metrics-proxy-endpoint}.
        @param labels: C{--metrics-proxy-extra-labels}.
        @param headers: C{--metrics-proxy-extra-headers}, added to the client's.
        @param timeout: seconds for one forward, answer included (0: no limit).
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self._client = client
        self._clock = clock
        self._endpoint = endpoint
        self._labels = dict(labels or {})
        self._extra = [(k.encode("utf-8"), v.encode("utf-8")) for k, v in (headers or {}).items()]
        self._timeout = timeout

    def render(self, request: server.Request) -> bytes | int:
        if request.postpath:
            _answer(request, 404, [(b"content-type", [b"text/plain; charset=utf-8"])], b"404 page not found\n")
            return NOT_DONE_YET
        gone: list[bool] = []
        expired: list[bool] = []
        job = Deferred.fromCoroutine(self._forward(request, gone))

        def expire() -> None:
            expired.append(True)
            job.cancel()

        timer = self._clock.callLater(self._timeout, expire) if self._timeout > 0 else None

        def settled(result: object) -> object:
            if timer is not None and timer.active():
                timer.cancel()
            return result

        job.addBoth(settled)
        job.addErrback(self._failed, request, gone, expired)

        def lost(_: Failure) -> None:
            # The client went away: stop waiting for the endpoint.
            gone.append(True)
            job.cancel()

        request.notifyFinish().addErrback(lost)
        return NOT_DONE_YET

    def _outgoing(self, request: server.Request) -> Headers:
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            lower = name.lower()
            if lower in _HOP_BY_HOP or lower in _RECOMPUTED or lower.startswith(b"x-forwarded-"):
                continue
            headers.setRawHeaders(name, list(values))
        for name, value in self._extra:
            headers.addRawHeader(name, value)
        return headers

    async def _forward(self, request: server.Request, gone: list[bool]) -> None:
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read()
        query = request.uri.partition(b"?")[2].decode("ascii", "replace")
        url = target_url(self._endpoint, self._labels, query)
        assert request.method is not None
        response = await self._client.request(
            request.method.decode("ascii"),
            url,
            headers=self._outgoing(request),
            data=body or None,
            allow_redirects=False,
        )
        content: bytes = await response.content()
        if gone:
            return
        headers = [
            (name, list(values))
            for name, values in response.headers.getAllRawHeaders()
            if name.lower() not in _HOP_BY_HOP and name.lower() != b"content-length"
        ]
        _answer(request, response.code, headers, content, response.phrase)

    def _failed(self, reason: Failure, request: server.Request, gone: list[bool], expired: list[bool]) -> None:
        if gone:
            _log.debug("Metrics push abandoned: the client went away", endpoint=self._endpoint)
            return
        message = reason.getErrorMessage()
        if expired:
            message = f"no answer from the metrics endpoint within {self._timeout}s"
        _log.error("failed to proxy metrics", endpoint=self._endpoint, reason=message)
        if request.finished:
            return
        text = (message + "\n").encode("utf-8", "replace")
        _answer(request, 502, [(b"content-type", [b"text/plain; charset=utf-8"])], text)


def _answer(
    request: Any, code: int, headers: list[tuple[bytes, list[bytes]]], body: bytes, phrase: bytes | None = None
) -> None:
    # (twisted.web's Request methods are not annotated.)
    request.setResponseCode(code, phrase)
    for name, values in headers:
        request.responseHeaders.setRawHeaders(name, values)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


__all__ = ["FORWARD_TIMEOUT", "MetricsProxyResource", "label_path", "target_path", "target_url"]

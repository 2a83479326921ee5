# -*- test-case-name: tests.unit.test_metrics -*-
"""
The Prometheus series of a C{direct} run (what was asked of which tier, how
big, how slow, what failed), kept in a private C{prometheus_client}
registry and pushed once at exit; the per-run counts of the statistics line
and the run log are L{cacheprog.stats}'.

Series (names and labels as the Go reference, so dashboards keep working)::

    cacheprog_overall_run_time_ms                                  counter
    cacheprog_object_get_size_total{storage_type,operation}        counter (puts too)
    cacheprog_object_get_size_bytes_total{storage_type,operation}  counter
    cacheprog_object_get_size_bytes{storage_type,operation}        histogram
    cacheprog_object_miss_total{storage_type}                      counter
    cacheprog_object_get_duration_seconds{storage_type,operation}  histogram
    cacheprog_storage_error_total{storage_type,operation}          counter

C{storage_type} is C{local} or C{remote}, C{operation} C{get} or C{put}.  A
labelled series exists only once it was observed.  The text is the
reference's (L{cacheprog.exposition}), the run time without C{_total}.

Histograms come in two kinds: Prometheus (default), cumulative C{le}
buckets, durations in seconds (0.005 ... 10), sizes in bytes (256 B ... 1
GiB, so that objects do not all land in C{+Inf}); or VictoriaMetrics
(C{--use-vm-histograms}, L{cacheprog.vmhistogram}).

The push (L{push_at_exit}) is one request with the gzip-compressed text,
under a hard timeout, so a hung endpoint cannot hang the build; any
failure (invalid extra label names included) is one WARN line, never an
exception.  Uploads read back from disk are not local gets: that read does
not go through the observed lookup.  The C{object_get_size*} names also
count puts: misleading, kept so dashboards keep working.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers

from cacheprog import exposition
from cacheprog.exposition import InvalidLabels
from cacheprog.log import Logger
from cacheprog.vmhistogram import VMHistogram

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from cacheprog.remote.pool import Requester

_log = Logger("metrics")

LOCAL, REMOTE = "local", "remote"
GET, PUT = "get", "put"

#: The whole push (connect, send, answer) must be over after this (seconds).
PUSH_TIMEOUT = 5.0
#: Prometheus-flavour buckets for durations (seconds; Go's DefBuckets).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Prometheus-flavour buckets for sizes: 256 B to 1 GiB, x4 each.
SIZE_BUCKETS = tuple(float(256 * 4**i) for i in range(12))

RUN_TIME = "cacheprog_overall_run_time_ms"
OBJECTS = "cacheprog_object_get_size_total"
OBJECT_BYTES = "cacheprog_object_get_size_bytes_total"
OBJECT_SIZE = "cacheprog_object_get_size_bytes"
MISSES = "cacheprog_object_miss_total"
DURATION = "cacheprog_object_get_duration_seconds"
ERRORS = "cacheprog_storage_error_total"

# prometheus_client names a counter's sample <name>_total; the reference's
# run-time counter has no such suffix.
_WIRE_NAMES = {RUN_TIME + "_total": RUN_TIME}


class _Unchecked:
    """
    Registers a metric without C{prometheus_client}'s name-clash check: the
    counter C{cacheprog_object_get_size_bytes_total} and the histogram
    C{cacheprog_object_get_size_bytes} clash in OpenMetrics terms, not in the
    0.0.4 text (without C{# TYPE}) the reference pushes.
    """

    def __init__(self, metric: Any) -> None:
        self._metric = metric

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        result: Iterable[Metric] = self._metric.collect()
        return result


class _Observer(Protocol):
    def observe(self, value: float) -> None: ...


class _HistogramFamily(Protocol):
    def labels(self, *values: str) -> _Observer: ...


class Metrics:
    """
    The metrics of one run, in a private registry.

    Remote calls are recorded by L{cacheprog.remote.observing.ObservingStore};
    local ones by L{local_get} / L{local_put} (a hook in the cache).
    """

    def __init__(self, vm_histograms: bool = False) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.vm_histograms = vm_histograms
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        both = ("storage_type", "operation")
        self._objects = Counter(OBJECTS, "successful operations", both, registry=self.registry)
        self._bytes = Counter(OBJECT_BYTES, "bytes of successful operations", both, registry=None)
        self.registry.register(_Unchecked(self._bytes))
        self._sizes: _HistogramFamily
        self._durations: _HistogramFamily
        if vm_histograms:
            sizes, durations = VMHistogram(OBJECT_SIZE, both), VMHistogram(DURATION, both)
            self.registry.register(sizes)
            self.registry.register(durations)
            self._sizes, self._durations = sizes, durations
        else:
            self._sizes = Histogram(OBJECT_SIZE, "object size", both, buckets=SIZE_BUCKETS, registry=self.registry)
            self._durations = Histogram(
                DURATION, "operation duration", both, buckets=DURATION_BUCKETS, registry=self.registry
            )
        self._misses = Counter(MISSES, "objects not found", ("storage_type",), registry=self.registry)
        self._errors = Counter(ERRORS, "failed operations", both, registry=self.registry)
        self._run_time: Any = None

    # recording

    def object_ok(self, storage: str, operation: str, size: int) -> None:
        """
        One successful operation on C{size} bytes (remote: stored size).
        """
        self._objects.labels(storage, operation).inc()
        self._bytes.labels(storage, operation).inc(size)
        self._sizes.labels(storage, operation).observe(size)

    def object_miss(self, storage: str) -> None:
        self._misses.labels(storage).inc()

    def storage_error(self, storage: str, operation: str) -> None:
        self._errors.labels(storage, operation).inc()

    def duration(self, storage: str, operation: str, seconds: float) -> None:
        """
        How long one operation took, whatever its outcome.
        """
        self._durations.labels(storage, operation).observe(max(seconds, 0.0))

    def run_time(self, seconds: float) -> None:
        """
        Add the run's wall time (recorded once, at exit, in whole ms).
        """
        if self._run_time is None:
            from prometheus_client import Counter

            self._run_time = Counter(RUN_TIME, "run time", registry=None)
            self.registry.register(_Unchecked(self._run_time))
        self._run_time.inc(int(max(seconds, 0.0) * 1000))

    def local_get(self, seconds: float, size: int | None) -> None:
        """
        The hook for one local lookup: C{size} of the hit, None for a miss.
        """
        self.duration(LOCAL, GET, seconds)
        if size is None:
            self.object_miss(LOCAL)
        else:
            self.object_ok(LOCAL, GET, size)

    def local_put(self, seconds: float, size: int | None) -> None:
        """
        The hook for one local write: C{size} written, None when it failed.
        """
        self.duration(LOCAL, PUT, seconds)
        if size is None:
            self.storage_error(LOCAL, PUT)
        else:
            self.object_ok(LOCAL, PUT, size)

    # exposition

    def render(self, extra_labels: Mapping[str, str] | None = None) -> str:
        """
        The Prometheus text exposition, C{extra_labels} first in every series.

        @raise InvalidLabels: for a bad extra label name.
        """
        return exposition.render(self.registry, extra_labels or {}, _WIRE_NAMES)


# push


def check_push_url(url: str) -> str | None:
    """
    Why C{url} cannot be a push endpoint, or None when it can.
    """
    try:
        parts = urlsplit(url)
    except ValueError as e:
        return str(e)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the push endpoint must be an http or https URL with a host"
    return None


async def push_metrics(
    client: Requester,
    clock: IReactorTime,
    url: str,
    method: str,
    headers: Mapping[str, str],
    body_text: str,
    timeout: float = PUSH_TIMEOUT,
) -> bool:
    """
    Send C{body_text} gzip-compressed in one request, within C{timeout}
    seconds (0: no limit) from start to the end of the answer.

    Never raises: trouble is one WARN C{Failed to push metrics}.

    @return: whether the endpoint answered 2xx in time.
    """
    sent = Headers({b"Content-Type": [b"text/plain"], b"Content-Encoding": [b"gzip"]})
    for name, value in headers.items():
        sent.addRawHeader(name.encode("utf-8"), value.encode("utf-8"))
    body = gzip.compress(body_text.encode("utf-8"), mtime=0)

    async def exchange() -> int:
        response = await client.request(method, url, headers=sent, data=body)
        await response.content()
        code: int = response.code
        return code

    job = Deferred.fromCoroutine(exchange())
    timer = clock.callLater(timeout, job.cancel) if timeout > 0 else None
    try:
        code = await job
    except Exception as e:  # noqa: BLE001 - a push never fails the run
        late = timer is not None and not timer.active()
        reason = f"no answer within {timeout}s" if late else repr(e)
        _log.warn("Failed to push metrics", endpoint=url, reason=reason)
        return False
    finally:
        if timer is not None and timer.active():
            timer.cancel()
    if not 200 <= code < 300:
        _log.warn("Failed to push metrics", endpoint=url, status=code)
        return False
    _log.debug("Metrics pushed", endpoint=url, status=code)
    return True


async def push_at_exit(
    metrics: Metrics,
    client: Requester,
    clock: IReactorTime,
    url: str,
    method: str = "GET",
    extra_labels: Mapping[str, str] | None = None,
    extra_headers: Mapping[str, str] | None = None,
    timeout: float = PUSH_TIMEOUT,
) -> bool:
    """
    Render and push the run's metrics, bounded by C{timeout}.  The default
    method is C{GET}, what the Go reference's endpoints expect; a
    Pushgateway wants C{PUT} or C{POST}.  Never raises.

    @return: whether the push was accepted.
    """
    problem = check_push_url(url)
    if problem is not None:
        _log.warn("Failed to push metrics", endpoint=url, reason=problem)
        return False
    try:
        text = metrics.render(extra_labels)
    except InvalidLabels as e:
        _log.warn("Failed to push metrics", endpoint=url, reason=f"--metrics-push-extra-labels: {e}")
        return False
    return await push_metrics(client, clock, url, method or "GET", extra_headers or {}, text, timeout)


__all__ = [
    "GET",
    "LOCAL",
    "PUSH_TIMEOUT",
    "PUT",
    "REMOTE",
    "Metrics",
    "check_push_url",
    "push_at_exit",
    "push_metrics",
]

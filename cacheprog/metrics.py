# -*- test-case-name: tests.unit.test_metrics -*-
"""
Run metrics (C{direct} mode): what was asked of which tier, how big, how
slow, what failed; rendered as Prometheus text and pushed once at exit.

Series (names and labels as the Go reference, so dashboards keep working)::

    cacheprog_overall_run_time_ms                                  counter
    cacheprog_object_get_size_total{storage_type,operation}        counter (puts too)
    cacheprog_object_get_size_bytes_total{storage_type,operation}  counter
    cacheprog_object_get_size_bytes{storage_type,operation}        histogram
    cacheprog_object_miss_total{storage_type}                      counter
    cacheprog_object_get_duration_seconds{storage_type,operation}  histogram
    cacheprog_storage_error_total{storage_type,operation}          counter

C{storage_type} is C{local} or C{remote}, C{operation} C{get} or C{put}.  A
labelled series exists only once it was observed.  The values live in a
private C{prometheus_client} registry; the text is written here, because the
wire format is the reference's, not C{generate_latest}'s: no C{# HELP} /
C{# TYPE} lines, no C{_created} series, the run time without C{_total}, and
the extra labels (C{--metrics-push-extra-labels}) first in every series.

Histograms come in two flavours:
  - Prometheus (default): cumulative C{le} buckets; durations in seconds
    (0.005 ... 10), sizes in bytes (256 B ... 1 GiB; the reference used the
    seconds buckets for sizes too, which put every object into C{+Inf}).
  - VictoriaMetrics (C{--use-vm-histograms}): 18 logarithmic buckets per
    decade from 1e-9 to 1e18, only non-empty ones, as
    C{name_bucket{...,vmrange="1.136e+03...1.292e+03"} 3}, plus C{_sum} and
    C{_count}; the bucket of a value is computed exactly as
    VictoriaMetrics/metrics (C{histogram.go}) does, down to Go's C{math.Log10}.

The push (L{push_at_exit}) is one request with the gzip-compressed text,
under a hard timeout (the reference had none, so a hung endpoint hung the
build); any failure is one WARN line, never an exception.

Fixed against the reference: sizes have byte buckets; the push has a
timeout; invalid extra label names skip the push with a clear warning;
uploads read back from disk are not counted as local gets (that read does
not go through the observed lookup).  Kept for compatibility: the misleading
C{object_get_size*} names, which also count puts.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers

from cacheprog.log import Logger

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from cacheprog.remote.pool import Requester
    from cacheprog.stats import Stats

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
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_OWN_LABELS = frozenset({"storage_type", "operation", "le", "vmrange"})


class InvalidLabels(ValueError):
    """
    An extra label cannot be put into the exposition (bad or clashing name).
    """


def validate_labels(labels: Mapping[str, str]) -> None:
    """
    Check extra label names: Prometheus syntax, not reserved (C{__}), not one
    cacheprog sets itself.

    @raise InvalidLabels: naming the first bad label.
    """
    for name in labels:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise InvalidLabels(f"invalid label name {name!r} (use letters, digits and _, not starting with a digit)")
        if name in _OWN_LABELS:
            raise InvalidLabels(f"label name {name!r} is set by cacheprog itself")


# VictoriaMetrics histograms


_E10_MIN, _E10_MAX, _PER_DECADE = -9, 18, 18
_VM_BUCKETS = (_E10_MAX - _E10_MIN) * _PER_DECADE
_VM_LOWER = f"0...{10.0**_E10_MIN:.3e}"
_VM_UPPER = f"{10.0**_E10_MAX:.3e}...+Inf"


def _vm_ranges() -> list[str]:
    # As initBucketRanges: repeated multiplication, printed with %.3e.
    multiplier = math.pow(10, 1.0 / _PER_DECADE)
    v = 1e-9
    start = f"{v:.3e}"
    ranges = []
    for _ in range(_VM_BUCKETS):
        v *= multiplier
        end = f"{v:.3e}"
        ranges.append(f"{start}...{end}")
        start = end
    return ranges


_VM_RANGES = _vm_ranges()

# Go's math.Log (amd64 assembly and pure Go alike: FreeBSD's e_log.c); libm's
# log differs in the last bit for some values, and a last bit decides the
# bucket of exact powers of ten (Go's Log10(1e-4) is -3.9999999999999996).
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_L1, _L2, _L3 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01
_L4, _L5 = 2.222219843214978396e-01, 1.818357216161805012e-01
_L6, _L7 = 1.531383769920937332e-01, 1.479819860511658591e-01
_HALF_SQRT2 = 7.07106781186547524401e-01
_INV_LN10 = 0.43429448190325182765112891891660508229439700580366656611445378316586464920887


def go_log10(x: float) -> float:
    """
    Go's C{math.Log10} for a positive finite C{x}, bit for bit.
    """
    f1, ki = math.frexp(x)
    if f1 < _HALF_SQRT2:
        f1 *= 2
        ki -= 1
    f = f1 - 1
    k = float(ki)
    s = f / (2 + f)
    s2 = s * s
    s4 = s2 * s2
    t1 = s2 * (_L1 + s4 * (_L3 + s4 * (_L5 + s4 * _L7)))
    t2 = s4 * (_L2 + s4 * (_L4 + s4 * _L6))
    r = t1 + t2
    hfsq = 0.5 * f * f
    ln = k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)
    return ln * _INV_LN10


def vmrange(value: float) -> str:
    """
    The C{vmrange} label of the bucket VictoriaMetrics puts C{value} in
    (lower bound excluded, upper bound included, like C{le}).
    """
    if value <= 0:
        return _VM_LOWER
    if math.isinf(value):
        return _VM_UPPER
    index = (go_log10(value) - _E10_MIN) * _PER_DECADE
    if index < 0:
        return _VM_LOWER
    if index >= _VM_BUCKETS:
        return _VM_UPPER
    i = int(index)
    if index == i and i > 0:
        # 10^n belongs to the bucket it closes, as with le.
        i -= 1
    return _VM_RANGES[i]


class _VMSeries:
    def __init__(self) -> None:
        self.buckets: dict[str, int] = {}
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if math.isnan(value) or value < 0:
            return
        key = vmrange(value)
        self.buckets[key] = self.buckets.get(key, 0) + 1
        self.sum += value
        self.count += 1


_ORDER = {_VM_LOWER: -1, **{r: i for i, r in enumerate(_VM_RANGES)}, _VM_UPPER: len(_VM_RANGES)}


class VMHistogram:
    """
    A labelled VictoriaMetrics-style histogram, as a C{prometheus_client}
    collector (C{labels(...).observe(v)} like a C{Histogram}).
    """

    def __init__(self, name: str, labelnames: Sequence[str]) -> None:
        self._name = name
        self._labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], _VMSeries] = {}

    def labels(self, *values: str) -> _VMSeries:
        return self._series.setdefault(tuple(values), _VMSeries())

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import Metric

        family = Metric(self._name, "", "histogram")
        for values, series in self._series.items():
            if not series.count:
                continue
            labels = dict(zip(self._labelnames, values, strict=True))
            for key in sorted(series.buckets, key=_ORDER.__getitem__):
                family.add_sample(self._name + "_bucket", {**labels, "vmrange": key}, series.buckets[key])
            family.add_sample(self._name + "_sum", labels, series.sum)
            family.add_sample(self._name + "_count", labels, series.count)
        yield family


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
    local ones by L{local_get} / L{local_put} (a hook in the cache) or, at
    exit, by L{record_local_stats}.
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

    def record_local_stats(self, stats: Stats) -> None:
        """
        The local tier from the run's L{Stats}, at exit, for when the cache
        has no hook: counts and put bytes only (no per-object sizes or
        durations).  Do not combine with L{local_get} / L{local_put}.
        """
        local_misses = stats.gets - stats.local_hits
        if stats.local_hits:
            self._objects.labels(LOCAL, GET).inc(stats.local_hits)
        if local_misses > 0:
            self._misses.labels(LOCAL).inc(local_misses)
        if stats.puts:
            self._objects.labels(LOCAL, PUT).inc(stats.puts)
            self._bytes.labels(LOCAL, PUT).inc(stats.put_bytes)

    # exposition

    def render(self, extra_labels: Mapping[str, str] | None = None) -> str:
        """
        The Prometheus text exposition, C{extra_labels} first in every series.

        @raise InvalidLabels: for a bad extra label name.
        """
        extra = dict(extra_labels or {})
        validate_labels(extra)
        lines = []
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                name = _WIRE_NAMES.get(sample.name, sample.name)
                pairs = [*extra.items(), *sample.labels.items()]
                lines.append(f"{name}{_label_text(pairs)} {format_value(sample.value)}\n")
        return "".join(lines)


def _label_text(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """
    A sample value as VictoriaMetrics/metrics prints it: C{%d} when whole,
    else Go's C{%g} (L{go_g}).
    """
    if math.isfinite(value) and value == int(value) and abs(value) < 2**63:
        return str(int(value))
    return go_g(value)


def go_g(value: float) -> str:
    """
    Go's C{fmt.Sprintf("%g", value)} for a float64: the shortest digits that
    read back exactly, in exponent form below 1e-4 and from 1e6 on.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    point = len(digits) + exponent  # digits before the decimal point
    x = point - 1
    text: str
    if x < -4 or x >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        text = f"{mantissa}e{'-' if x < 0 else '+'}{abs(x):02d}"
    elif point <= 0:
        text = "0." + "0" * -point + digits
    elif point >= len(digits):
        text = digits + "0" * (point - len(digits))
    else:
        text = digits[:point] + "." + digits[point:]
    return ("-" if sign else "") + text


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
    Render and push the run's metrics, as the reference does at exit (but
    bounded by C{timeout}).  The default method is the reference's C{GET};
    a Pushgateway wants C{PUT} or C{POST}.  Never raises.

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
    "InvalidLabels",
    "Metrics",
    "VMHistogram",
    "check_push_url",
    "format_value",
    "go_g",
    "go_log10",
    "push_at_exit",
    "push_metrics",
    "validate_labels",
    "vmrange",
]

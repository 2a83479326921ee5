"""
Tests for L{cacheprog.metrics} (series, exposition text, VictoriaMetrics
buckets, the push) and L{cacheprog.remote.observing}.
"""

from __future__ import annotations

import gzip
import logging
from typing import Any, cast

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.resource import Resource

from cacheprog import metrics as m
from cacheprog.cache import Cache
from cacheprog.interfaces import NotFound, RemoteObject, Unavailable, UploadObject
from cacheprog.local import DiskStore
from cacheprog.metrics import InvalidLabels, Metrics, go_g, go_log10, push_at_exit, push_metrics, vmrange
from cacheprog.remote.memory import MemoryStore
from cacheprog.remote.observing import ObservingStore
from cacheprog.stats import Stats

from .helpers import action, output_of, store_object

NAMES = (
    "cacheprog_overall_run_time_ms",
    "cacheprog_object_get_size_total",
    "cacheprog_object_get_size_bytes_total",
    "cacheprog_object_get_size_bytes_bucket",
    "cacheprog_object_get_size_bytes_sum",
    "cacheprog_object_get_size_bytes_count",
    "cacheprog_object_miss_total",
    "cacheprog_object_get_duration_seconds_bucket",
    "cacheprog_object_get_duration_seconds_sum",
    "cacheprog_object_get_duration_seconds_count",
    "cacheprog_storage_error_total",
)


def busy(metrics: Metrics) -> Metrics:
    """
    Record one of everything.
    """
    metrics.object_ok("remote", "get", 1200)
    metrics.duration("remote", "get", 0.0123)
    metrics.object_ok("local", "put", 4096)
    metrics.duration("local", "put", 0.5)
    metrics.object_miss("local")
    metrics.storage_error("remote", "put")
    metrics.run_time(1.2345)
    return metrics


def series(text: str) -> dict[str, str]:
    """
    C{name{labels}} -> value, for every line of an exposition.
    """
    result = {}
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        result[key] = value
    return result


def fields(record: logging.LogRecord) -> dict[str, object]:
    """
    The structured fields of a L{cacheprog.log.Logger} record.
    """
    result: dict[str, object] = getattr(record, "fields", {})
    return result


def names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()}


class ExpositionTests(SynchronousTestCase):
    """
    The text pushed: names, labels and values as the Go reference writes them.
    """

    def test_prometheus_names(self) -> None:
        """
        Every reference series name appears exactly so on the wire (the run
        time without C{_total}), with no C{_created}, C{# HELP} or C{# TYPE}.
        """
        text = busy(Metrics()).render()
        self.assertEqual(names(text), set(NAMES))
        self.assertNotIn("#", text)
        self.assertNotIn("_created", text)
        self.assertTrue(text.endswith("\n"))

    def test_prometheus_values(self) -> None:
        """
        Counters are whole numbers; histograms have cumulative C{le} buckets
        up to C{+Inf}, a C{_sum} and a C{_count}.
        """
        got = series(busy(Metrics()).render())
        rg = 'storage_type="remote",operation="get"'
        self.assertEqual(got["cacheprog_overall_run_time_ms"], "1234")
        self.assertEqual(got[f"cacheprog_object_get_size_total{{{rg}}}"], "1")
        self.assertEqual(got[f"cacheprog_object_get_size_bytes_total{{{rg}}}"], "1200")
        self.assertEqual(got[f'cacheprog_object_get_size_bytes_bucket{{{rg},le="+Inf"}}'], "1")
        self.assertEqual(got[f"cacheprog_object_get_size_bytes_sum{{{rg}}}"], "1200")
        self.assertEqual(got[f"cacheprog_object_get_size_bytes_count{{{rg}}}"], "1")
        self.assertEqual(got[f'cacheprog_object_get_duration_seconds_bucket{{{rg},le="0.01"}}'], "0")
        self.assertEqual(got[f'cacheprog_object_get_duration_seconds_bucket{{{rg},le="0.025"}}'], "1")
        self.assertEqual(got[f'cacheprog_object_get_duration_seconds_bucket{{{rg},le="+Inf"}}'], "1")
        self.assertEqual(got[f"cacheprog_object_get_duration_seconds_sum{{{rg}}}"], "0.0123")
        self.assertEqual(got['cacheprog_object_miss_total{storage_type="local"}'], "1")
        self.assertEqual(got['cacheprog_storage_error_total{storage_type="remote",operation="put"}'], "1")

    def test_size_buckets_are_bytes(self) -> None:
        """
        Sizes fall into byte buckets (the reference used the seconds buckets,
        putting every object into C{+Inf}).
        """
        got = series(busy(Metrics()).render())
        rg = 'storage_type="remote",operation="get"'
        self.assertEqual(got[f'cacheprog_object_get_size_bytes_bucket{{{rg},le="1024.0"}}'], "0")
        self.assertEqual(got[f'cacheprog_object_get_size_bytes_bucket{{{rg},le="4096.0"}}'], "1")

    def test_series_only_once_observed(self) -> None:
        """
        Nothing recorded, nothing rendered: a series exists from its first
        observation on.
        """
        self.assertEqual(Metrics().render(), "")
        self.assertEqual(Metrics(vm_histograms=True).render(), "")

    def test_extra_labels_first_everywhere(self) -> None:
        """
        Extra labels come first in every series, in both flavours.
        """
        for vm in (False, True):
            text = busy(Metrics(vm_histograms=vm)).render({"testlabel": "testvalue", "job": "ci"})
            lines = text.splitlines()
            self.assertEqual(len(lines), len([x for x in lines if '{testlabel="testvalue",job="ci"' in x]))
            self.assertIn('cacheprog_overall_run_time_ms{testlabel="testvalue",job="ci"} 1234', lines)
            self.assertIn(
                'cacheprog_object_miss_total{testlabel="testvalue",job="ci",storage_type="local"} 1',
                lines,
            )

    def test_label_values_escaped(self) -> None:
        """
        Backslash, double quote and newline are escaped in label values.
        """
        text = busy(Metrics()).render({"note": 'a"b\\c\nd'})
        self.assertIn('cacheprog_overall_run_time_ms{note="a\\"b\\\\c\\nd"} 1234', text)

    def test_invalid_label_names(self) -> None:
        """
        A label name Prometheus would refuse, a reserved one, or one cacheprog
        sets itself, is refused with a message naming it.
        """
        for bad in ("test-label", "1abc", "", "__name__", "storage_type", "le", "vmrange"):
            e = self.assertRaises(InvalidLabels, busy(Metrics()).render, {bad: "x"})
            self.assertIn(repr(bad), str(e))


class VMHistogramTests(SynchronousTestCase):
    """
    VictoriaMetrics buckets, checked against strings VictoriaMetrics/metrics
    prints (bounds 10^(i/18) from 1e-9, printed with C{%.3e}).
    """

    def test_known_buckets(self) -> None:
        """
        Values fall into the buckets Go's VictoriaMetrics/metrics chooses;
        10^n closes its bucket (C{le} semantics).
        """
        cases = {
            1200: "1.136e+03...1.292e+03",
            1000: "8.799e+02...1.000e+03",
            0.0123: "1.136e-02...1.292e-02",
            0.005: "4.642e-03...5.275e-03",
            0.1: "8.799e-02...1.000e-01",
            1: "8.799e-01...1.000e+00",
            2: "1.896e+00...2.154e+00",
            4096: "4.084e+03...4.642e+03",
            65536: "5.995e+04...6.813e+04",
            123456789: "1.136e+08...1.292e+08",
            1e-9: "1.000e-09...1.136e-09",
            0: "0...1.000e-09",
            1e-10: "0...1.000e-09",
            1e18: "1.000e+18...+Inf",
            1e19: "1.000e+18...+Inf",
        }
        for value, expected in cases.items():
            self.assertEqual((value, vmrange(value)), (value, expected))

    def test_first_buckets_by_hand(self) -> None:
        """
        The first bounds are 1e-9 times powers of 10^(1/18) = 1.13646...
        """
        self.assertEqual(vmrange(1.1e-9), "1.000e-09...1.136e-09")
        self.assertEqual(vmrange(1.2e-9), "1.136e-09...1.292e-09")
        self.assertEqual(vmrange(1.3e-9), "1.292e-09...1.468e-09")

    def test_go_log10(self) -> None:
        """
        Go's C{math.Log10} is not exact for some powers of ten; ours matches it.
        """
        self.assertEqual(go_log10(1e-4), -3.9999999999999996)
        self.assertEqual(go_log10(1e15), 14.999999999999998)
        self.assertEqual(go_log10(1000), 3.0)

    def test_exposition(self) -> None:
        """
        Only non-empty buckets, then C{_sum} and C{_count}; no C{le}.
        """
        metrics = Metrics(vm_histograms=True)
        for size in (1200, 1250, 1200, 5):
            metrics.object_ok("remote", "get", size)
        metrics.duration("local", "get", 0.0125)
        metrics.duration("local", "get", 0.0125)
        text = metrics.render({"testlabel": "testvalue"})
        head = 'cacheprog_object_get_size_bytes_bucket{testlabel="testvalue",storage_type="remote",operation="get"'
        self.assertIn(head + ',vmrange="1.136e+03...1.292e+03"} 3\n', text)
        self.assertIn(head + ',vmrange="4.642e+00...5.275e+00"} 1\n', text)
        self.assertEqual(text.count("cacheprog_object_get_size_bytes_bucket"), 2)
        self.assertIn(
            'cacheprog_object_get_size_bytes_sum{testlabel="testvalue",storage_type="remote",operation="get"} 3655\n',
            text,
        )
        self.assertIn(
            'cacheprog_object_get_size_bytes_count{testlabel="testvalue",storage_type="remote",operation="get"} 4\n',
            text,
        )
        dur = 'cacheprog_object_get_duration_seconds_{}{{testlabel="testvalue",storage_type="local",operation="get"{}'
        self.assertIn(dur.format("bucket", ',vmrange="1.136e-02...1.292e-02"}') + " 2\n", text)
        self.assertIn(dur.format("sum", "}") + " 0.025\n", text)
        self.assertNotIn("le=", text)

    def test_buckets_in_order(self) -> None:
        """
        Buckets are listed from the lowest up, as VictoriaMetrics does.
        """
        metrics = Metrics(vm_histograms=True)
        for size in (1e19, 5000, 0, 3):
            metrics.object_ok("local", "get", int(size))
        ranges = [
            line.split('vmrange="')[1].split('"')[0] for line in metrics.render().splitlines() if "vmrange" in line
        ]
        self.assertEqual(
            ranges, ["0...1.000e-09", "2.783e+00...3.162e+00", "4.642e+03...5.275e+03", "1.000e+18...+Inf"]
        )

    def test_go_g(self) -> None:
        """
        Non-integer sums are printed as Go's C{%g}: shortest digits, exponent
        form below 1e-4 and from 1e6.
        """
        cases = {
            0.1: "0.1",
            0.123456789: "0.123456789",
            1.5e-05: "1.5e-05",
            1234567.5: "1.2345675e+06",
            123456.5: "123456.5",
            0.0001: "0.0001",
            0.00001234: "1.234e-05",
            3.0000000000000004: "3.0000000000000004",
            -12.75: "-12.75",
            float("inf"): "+Inf",
        }
        for value, expected in cases.items():
            self.assertEqual(go_g(value), expected)
        self.assertEqual(m.format_value(3.0), "3")
        self.assertEqual(m.format_value(1e21), "1e+21")


class LocalTierTests(SynchronousTestCase):
    """
    Local-tier metrics: through the hook, or from the run's statistics.
    """

    def test_hook(self) -> None:
        """
        L{Metrics.local_get} and L{Metrics.local_put} record hits, misses,
        writes, failures and durations.
        """
        metrics = Metrics()
        metrics.local_get(0.001, 10)
        metrics.local_get(0.002, None)
        metrics.local_put(0.003, 20)
        metrics.local_put(0.004, None)
        got = series(metrics.render())
        self.assertEqual(got['cacheprog_object_get_size_total{storage_type="local",operation="get"}'], "1")
        self.assertEqual(got['cacheprog_object_miss_total{storage_type="local"}'], "1")
        self.assertEqual(got['cacheprog_object_get_size_bytes_total{storage_type="local",operation="put"}'], "20")
        self.assertEqual(got['cacheprog_storage_error_total{storage_type="local",operation="put"}'], "1")
        self.assertEqual(got['cacheprog_object_get_duration_seconds_count{storage_type="local",operation="get"}'], "2")
        self.assertEqual(got['cacheprog_object_get_duration_seconds_count{storage_type="local",operation="put"}'], "2")

    def test_from_stats(self) -> None:
        """
        Without the hook, the statistics give the local counts at exit.
        """
        metrics = Metrics()
        metrics.record_local_stats(Stats(gets=5, local_hits=2, remote_hits=1, misses=2, puts=3, put_bytes=300))
        got = series(metrics.render())
        self.assertEqual(got['cacheprog_object_get_size_total{storage_type="local",operation="get"}'], "2")
        self.assertEqual(got['cacheprog_object_miss_total{storage_type="local"}'], "3")
        self.assertEqual(got['cacheprog_object_get_size_total{storage_type="local",operation="put"}'], "3")
        self.assertEqual(got['cacheprog_object_get_size_bytes_total{storage_type="local",operation="put"}'], "300")

    def test_from_empty_stats(self) -> None:
        """
        An idle run creates no local series.
        """
        metrics = Metrics()
        metrics.record_local_stats(Stats())
        self.assertEqual(metrics.render(), "")


class Recorder(Resource):
    """
    Records every request; answers C{code}, or never when C{code} is None.
    """

    isLeaf = True

    def __init__(self, code: int | None = 200) -> None:
        super().__init__()
        self.code = code
        self.requests: list[dict[str, Any]] = []

    def render(self, request: server.Request) -> Any:
        assert request.content is not None
        self.requests.append(
            {
                "method": request.method,
                "uri": request.uri,
                "headers": request.requestHeaders,
                "body": request.content.read(),
            }
        )
        if self.code is None:
            return server.NOT_DONE_YET
        request.setResponseCode(self.code)
        return self.answer(request)

    def answer(self, request: server.Request) -> bytes:
        return b"ok"


class PushTests(SynchronousTestCase):
    """
    One request, gzip text, configured method and headers, bounded in time,
    never an exception.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def push(self, recorder: Recorder, **kwargs: Any) -> tuple[StubTreq, Deferred[bool]]:
        stub = StubTreq(recorder)
        args: dict[str, Any] = {"url": "http://metrics.example/push", "method": "PUT"}
        args.update(kwargs)
        metrics = args.pop("metrics", busy(Metrics()))
        d = Deferred.fromCoroutine(push_at_exit(metrics, cast(HTTPClient, stub), self.clock, **args))
        stub.flush()
        return stub, d

    def test_push(self) -> None:
        """
        The push sends the configured method, C{Content-Type: text/plain},
        C{Content-Encoding: gzip}, the extra headers, and the gzip-compressed
        text with the extra labels.
        """
        recorder = Recorder()
        _, d = self.push(recorder, extra_labels={"testlabel": "testvalue"}, extra_headers={"X-Extra-Header": "some"})
        self.assertTrue(self.successResultOf(d))
        [request] = recorder.requests
        self.assertEqual(request["method"], b"PUT")
        self.assertEqual(request["uri"], b"/push")
        headers = request["headers"]
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/plain"])
        self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertEqual(headers.getRawHeaders(b"x-extra-header"), [b"some"])
        text = gzip.decompress(request["body"]).decode()
        self.assertIn('cacheprog_overall_run_time_ms{testlabel="testvalue"} 1234\n', text)
        self.assertIn('le="+Inf"', text)

    def test_default_method_get(self) -> None:
        """
        The reference's default method is GET (a Pushgateway wants PUT or POST).
        """
        recorder = Recorder()
        _, d = self.push(recorder, method="GET")
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(recorder.requests[0]["method"], b"GET")

    def test_refused(self) -> None:
        """
        A non-2xx answer is one WARN C{Failed to push metrics}, no exception.
        """
        with self.assertLogs("cacheprog.metrics", "WARNING") as logs:
            _, d = self.push(Recorder(code=500))
            self.assertFalse(self.successResultOf(d))
        self.assertIn("Failed to push metrics", logs.output[0])

    def test_timeout(self) -> None:
        """
        An endpoint that never answers costs the timeout, then a WARN.
        """
        recorder = Recorder(code=None)
        with self.assertLogs("cacheprog.metrics", "WARNING") as logs:
            _, d = self.push(recorder, timeout=5.0)
            self.assertNoResult(d)
            self.clock.advance(4.9)
            self.assertNoResult(d)
            self.clock.advance(0.1)
            self.assertFalse(self.successResultOf(d))
        self.assertEqual(len(recorder.requests), 1)
        self.assertIn("Failed to push metrics", logs.output[0])
        self.assertEqual(fields(logs.records[0])["reason"], "no answer within 5.0s")

    def test_connection_error(self) -> None:
        """
        A request that fails outright is a WARN too.
        """

        class Broken:
            def request(self, *args: object, **kwargs: object) -> Deferred[Any]:
                return Deferred.fromCoroutine(self._fail())

            async def _fail(self) -> Any:
                raise ConnectionRefusedError("nobody there")

        with self.assertLogs("cacheprog.metrics", "WARNING"):
            d = Deferred.fromCoroutine(
                push_metrics(cast(HTTPClient, Broken()), self.clock, "http://x/", "PUT", {}, "a 1\n")
            )
            self.assertFalse(self.successResultOf(d))

    def test_bad_labels_skip_push(self) -> None:
        """
        An invalid extra label name: a WARN naming it, and no request at all.
        """
        recorder = Recorder()
        with self.assertLogs("cacheprog.metrics", "WARNING") as logs:
            _, d = self.push(recorder, extra_labels={"bad-name": "x"})
            self.assertFalse(self.successResultOf(d))
        self.assertEqual(recorder.requests, [])
        self.assertIn("'bad-name'", str(fields(logs.records[0])["reason"]))

    def test_bad_url(self) -> None:
        """
        The endpoint must be http(s) with a host; else a WARN, no request.
        """
        for url in ("ftp://host/x", "http:///x", "localhost:9091"):
            recorder = Recorder()
            with self.assertLogs("cacheprog.metrics", "WARNING"):
                _, d = self.push(recorder, url=url)
                self.assertFalse(self.successResultOf(d))
            self.assertEqual(recorder.requests, [])


UPLOAD = UploadObject(action(1), b"o" * 32, 10, "", b"0123456789", b"m" * 16, b"s" * 32)


class Failing:
    """
    A store whose calls fail with C{error}.
    """

    name = "failing"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def get(self, action_id: bytes) -> RemoteObject:
        raise self.error

    async def put(self, obj: UploadObject) -> None:
        raise self.error

    def get_many(self, action_ids: Any) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class ObservingStoreTests(SynchronousTestCase):
    """
    L{ObservingStore} records remote calls as the reference's observer does.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.memory = MemoryStore()

    def observed(self, inner: Any) -> ObservingStore:
        return ObservingStore(inner, self.metrics, self.clock)

    def got(self) -> dict[str, str]:
        return series(self.metrics.render())

    def test_name(self) -> None:
        """
        The wrapper keeps the inner store's name.
        """
        self.assertEqual(self.observed(self.memory).name, "memory")

    def test_get_hit(self) -> None:
        """
        A hit counts one object of its stored size, and its duration.
        """
        store_object(self.memory, action(1), b"x" * 5000)
        stored = len(self.memory.objects[action(1)].data)
        d = Deferred.fromCoroutine(self.observed(self.memory).get(action(1)))
        self.assertEqual(self.successResultOf(d).stored_size, stored)
        got = self.got()
        rg = 'storage_type="remote",operation="get"'
        self.assertEqual(got[f"cacheprog_object_get_size_total{{{rg}}}"], "1")
        self.assertEqual(got[f"cacheprog_object_get_size_bytes_total{{{rg}}}"], str(stored))
        self.assertEqual(got[f"cacheprog_object_get_duration_seconds_count{{{rg}}}"], "1")

    def test_get_miss(self) -> None:
        """
        Not found: a remote miss (and the duration), still raised.
        """
        d = Deferred.fromCoroutine(self.observed(self.memory).get(action(1)))
        self.failureResultOf(d, NotFound)
        got = self.got()
        self.assertEqual(got['cacheprog_object_miss_total{storage_type="remote"}'], "1")
        self.assertEqual(got['cacheprog_object_get_duration_seconds_count{storage_type="remote",operation="get"}'], "1")

    def test_get_breaker_open(self) -> None:
        """
        Refused by an open breaker: a remote miss, no duration.
        """
        d = Deferred.fromCoroutine(self.observed(Failing(Unavailable("get"))).get(action(1)))
        self.failureResultOf(d, Unavailable)
        self.assertEqual(self.metrics.render(), 'cacheprog_object_miss_total{storage_type="remote"} 1\n')

    def test_get_error(self) -> None:
        """
        A failure: a storage error and the duration, still raised.
        """
        d = Deferred.fromCoroutine(self.observed(Failing(ConnectionRefusedError())).get(action(1)))
        self.failureResultOf(d, ConnectionRefusedError)
        got = self.got()
        self.assertEqual(got['cacheprog_storage_error_total{storage_type="remote",operation="get"}'], "1")
        self.assertNotIn('cacheprog_object_miss_total{storage_type="remote"}', got)

    def test_put(self) -> None:
        """
        An upload counts one object of the stored (encoded) size, and the
        time it took.
        """
        self.successResultOf(Deferred.fromCoroutine(self.observed(self.memory).put(UPLOAD)))
        got = self.got()
        rp = 'storage_type="remote",operation="put"'
        self.assertEqual(got[f"cacheprog_object_get_size_total{{{rp}}}"], "1")
        self.assertEqual(got[f"cacheprog_object_get_size_bytes_total{{{rp}}}"], "10")

    def test_put_duration(self) -> None:
        """
        The duration is measured on the injected clock.
        """

        class Slow:
            name = "slow"

            def __init__(self) -> None:
                self.gate: Deferred[None] = Deferred()

            async def put(self, obj: UploadObject) -> None:
                await self.gate

        slow = Slow()
        d = Deferred.fromCoroutine(self.observed(slow).put(UPLOAD))
        self.clock.advance(0.3)
        slow.gate.callback(None)
        self.successResultOf(d)
        got = self.got()
        rp = 'storage_type="remote",operation="put"'
        self.assertEqual(got[f'cacheprog_object_get_duration_seconds_bucket{{{rp},le="0.25"}}'], "0")
        self.assertEqual(got[f'cacheprog_object_get_duration_seconds_bucket{{{rp},le="0.5"}}'], "1")

    def test_put_error(self) -> None:
        """
        A failed upload is a storage error.
        """
        d = Deferred.fromCoroutine(self.observed(Failing(ConnectionRefusedError())).put(UPLOAD))
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(self.got()['cacheprog_storage_error_total{storage_type="remote",operation="put"}'], "1")

    def test_put_skipped(self) -> None:
        """
        An upload the breaker skipped is counted nowhere (the reference
        counted it as stored).
        """
        d = Deferred.fromCoroutine(self.observed(Failing(Unavailable("put"))).put(UPLOAD))
        self.failureResultOf(d, Unavailable)
        self.assertEqual(self.metrics.render(), "")

    def test_get_many(self) -> None:
        """
        Bulk gets count hits and misses as they are yielded.
        """
        store_object(self.memory, action(1), b"hello")
        store = self.observed(self.memory)

        async def collect() -> list[tuple[bytes, RemoteObject | None]]:
            return [item async for item in store.get_many([action(1), action(2)])]

        result = self.successResultOf(Deferred.fromCoroutine(collect()))
        self.assertEqual(sorted(obj is None for _, obj in result), [False, True])
        got = self.got()
        self.assertEqual(got['cacheprog_object_miss_total{storage_type="remote"}'], "1")
        self.assertEqual(got['cacheprog_object_get_size_total{storage_type="remote",operation="get"}'], "1")

    def test_close(self) -> None:
        """
        Closing closes the inner store.
        """
        self.successResultOf(Deferred.fromCoroutine(self.observed(self.memory).close()))


class WithCacheTests(SynchronousTestCase):
    """
    L{ObservingStore} in place in front of the core, as C{direct} wires it.
    """

    def test_cache_round_trip(self) -> None:
        """
        A put uploads through the observer (one remote put); after the local
        tier is gone, a get is one remote get of the stored size.
        """
        clock = Clock()
        metrics = Metrics()
        memory = MemoryStore()
        remote = ObservingStore(memory, metrics, clock)
        body = b"some output " * 100
        cache = Cache(DiskStore(self.mktemp()), remote, clock)
        spool = cache.new_spool(len(body))
        spool.write(body)
        self.successResultOf(Deferred.fromCoroutine(cache.put(action(7), output_of(body), spool)))
        self.successResultOf(Deferred.fromCoroutine(cache.close()))
        stored = len(memory.objects[action(7)].data)
        fresh = Cache(DiskStore(self.mktemp()), remote, clock)
        entry = self.successResultOf(Deferred.fromCoroutine(fresh.get(action(7))))
        self.assertIsNotNone(entry)
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(fresh.get(action(8)))))
        got = series(metrics.render())
        for op in ("get", "put"):
            labels = f'storage_type="remote",operation="{op}"'
            self.assertEqual(got[f"cacheprog_object_get_size_total{{{labels}}}"], "1")
            self.assertEqual(got[f"cacheprog_object_get_size_bytes_total{{{labels}}}"], str(stored))
        self.assertEqual(got['cacheprog_object_miss_total{storage_type="remote"}'], "1")

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

from cacheprog.metrics import Metrics, push_at_exit, push_metrics

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


class LocalTierTests(SynchronousTestCase):
    """
    Local-tier metrics, through the hook in the cache.
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

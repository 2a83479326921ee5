"""
The metrics push over real sockets: a recording HTTP server on 127.0.0.1 in
the test's reactor, a real treq client, and the C{/metricsproxy} resource in
between (as in the reference's C{metrics-test} and C{proxy-mode-test}).
"""

from __future__ import annotations

import gzip
import time
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web import server
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource

from cacheprog.metrics import Metrics, push_at_exit
from cacheprog.proxy.metricsproxy import MetricsProxyResource

reactor: Any = _reactor


class RecordingServer(Resource):
    """
    Records method, path, query, headers and gunzipped body of every request
    (like the reference's C{recording-server}); answers 200, or never.
    """

    isLeaf = True

    def __init__(self, answer: bool = True) -> None:
        super().__init__()
        self.answer = answer
        self.records: list[dict[str, Any]] = []
        self.hanging: list[server.Request] = []

    def render(self, request: server.Request) -> Any:
        assert request.content is not None
        body = request.content.read()
        if request.getHeader(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        self.records.append(
            {"method": request.method, "uri": request.uri, "headers": request.requestHeaders, "body": body}
        )
        if not self.answer:
            self.hanging.append(request)
            return server.NOT_DONE_YET
        return b""


class PushIntegrationTests(TestCase):
    """
    A push from a real client to a real server.
    """

    def listen(self, resource: Resource) -> str:
        site = server.Site(resource)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def client(self) -> HTTPClient:
        pool = HTTPConnectionPool(reactor, persistent=False)
        return HTTPClient(Agent(reactor, pool=pool))

    def metrics(self, vm: bool) -> Metrics:
        metrics = Metrics(vm_histograms=vm)
        metrics.object_ok("remote", "get", 1200)
        metrics.duration("remote", "get", 0.02)
        metrics.object_miss("local")
        metrics.run_time(0.5)
        return metrics

    async def test_push_vm(self) -> None:
        """
        VictoriaMetrics flavour: one PUT with the extra header, the gzip body
        has the run time, C{vmrange} buckets and the extra label.
        """
        recorder = RecordingServer()
        base = self.listen(recorder)
        ok = await push_at_exit(
            self.metrics(vm=True),
            self.client(),
            reactor,
            base + "/api/v1/import/prometheus",
            method="PUT",
            extra_labels={"testlabel": "testvalue"},
            extra_headers={"X-Extra-Header": "some"},
        )
        self.assertTrue(ok)
        [record] = recorder.records
        self.assertEqual(record["method"], b"PUT")
        self.assertEqual(record["uri"], b"/api/v1/import/prometheus")
        self.assertEqual(record["headers"].getRawHeaders(b"x-extra-header"), [b"some"])
        self.assertEqual(record["headers"].getRawHeaders(b"content-type"), [b"text/plain"])
        text = record["body"].decode()
        self.assertIn('cacheprog_overall_run_time_ms{testlabel="testvalue"} 500\n', text)
        self.assertIn(
            'cacheprog_object_get_size_bytes_bucket{testlabel="testvalue",storage_type="remote",'
            'operation="get",vmrange="1.136e+03...1.292e+03"} 1\n',
            text,
        )

    async def test_push_prometheus(self) -> None:
        """
        Prometheus flavour: C{le="+Inf"} and the label, default method GET.
        """
        recorder = RecordingServer()
        base = self.listen(recorder)
        ok = await push_at_exit(self.metrics(vm=False), self.client(), reactor, base + "/", extra_labels={"t": "v"})
        self.assertTrue(ok)
        [record] = recorder.records
        self.assertEqual(record["method"], b"GET")
        text = record["body"].decode()
        self.assertIn('le="+Inf"', text)
        self.assertIn('{t="v",', text)

    async def test_push_timeout(self) -> None:
        """
        A server that never answers costs the timeout, not the build.
        """
        recorder = RecordingServer(answer=False)
        base = self.listen(recorder)
        started = time.monotonic()
        with self.assertLogs("cacheprog.metrics", "WARNING") as logs:
            ok = await push_at_exit(
                self.metrics(vm=False), self.client(), reactor, base + "/", method="PUT", timeout=0.5
            )
        self.assertFalse(ok)
        self.assertEqual(logs.records[0].getMessage(), "Failed to push metrics")
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertEqual(len(recorder.records), 1)
        # Let the server see the connection go before the test ends.
        await self.settle(lambda: all(r.channel is None for r in recorder.hanging))

    async def test_push_refused(self) -> None:
        """
        Nothing listening: a warning and C{False}, quickly.
        """
        port = reactor.listenTCP(0, server.Site(Resource()), interface="127.0.0.1")
        address = f"http://127.0.0.1:{port.getHost().port}/"
        await port.stopListening()
        with self.assertLogs("cacheprog.metrics", "WARNING") as logs:
            ok = await push_at_exit(self.metrics(vm=False), self.client(), reactor, address, method="PUT")
        self.assertFalse(ok)
        self.assertEqual(logs.records[0].getMessage(), "Failed to push metrics")

    async def test_through_metricsproxy(self) -> None:
        """
        Pushed to C{/metricsproxy}: it lands at the label path with the
        client's and the proxy's headers.
        """
        recorder = RecordingServer()
        target = self.listen(recorder)
        root = Resource()
        root.putChild(
            b"metricsproxy",
            MetricsProxyResource(
                self.client(),
                reactor,
                target,
                labels={"job": "proxytest", "labeltoproxy": "valuetoproxy"},
                headers={"X-Extra-Header": "some"},
            ),
        )
        proxy = self.listen(root)
        ok = await push_at_exit(
            self.metrics(vm=True),
            self.client(),
            reactor,
            proxy + "/metricsproxy",
            method="PUT",
            extra_headers={"X-Some-Header": "client"},
        )
        self.assertTrue(ok)
        [record] = recorder.records
        self.assertEqual(record["method"], b"PUT")
        self.assertEqual(record["uri"], b"/metrics/job/proxytest/labeltoproxy/valuetoproxy")
        self.assertEqual(record["headers"].getRawHeaders(b"x-extra-header"), [b"some"])
        self.assertEqual(record["headers"].getRawHeaders(b"x-some-header"), [b"client"])
        self.assertIn("cacheprog_overall_run_time_ms 500\n", record["body"].decode())

    async def settle(self, done: Any, limit: float = 2.0) -> None:
        deadline = time.monotonic() + limit
        while not done() and time.monotonic() < deadline:
            d: Deferred[None] = Deferred()
            reactor.callLater(0.01, d.callback, None)
            await d

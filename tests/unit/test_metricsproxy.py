"""
Tests for L{cacheprog.proxy.metricsproxy}: the target URL rules, and the
forwarding of pushes (through C{StubTreq} on both sides).
"""

from __future__ import annotations

import base64
import gzip
import io
import logging
from typing import Any, cast

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from cacheprog.proxy.metricsproxy import MetricsProxyResource, label_path, target_path, target_url
from tests.unit.test_metrics import Recorder as _BaseRecorder

ENDPOINT = "http://pushgateway.example:9091"
LABELS = {"job": "proxytest", "labeltoproxy": "valuetoproxy"}


class TargetTests(SynchronousTestCase):
    """
    Where a push to C{/metricsproxy} is forwarded (reference §6).
    """

    def test_reference_example(self) -> None:
        """
        C{job=proxytest,labeltoproxy=valuetoproxy} on the default path.
        """
        self.assertEqual(target_path("", LABELS), "/metrics/job/proxytest/labeltoproxy/valuetoproxy")
        self.assertEqual(
            target_url(ENDPOINT, LABELS),
            "http://pushgateway.example:9091/metrics/job/proxytest/labeltoproxy/valuetoproxy",
        )

    def test_reference_unit_case(self) -> None:
        """
        The Go handler test's labels: empty value as C{@base64/=}, a value
        with C{/} as unpadded base64url, a plain one as is; no job gives
        C{job@base64/=}; keys sorted.
        """
        labels = {"empty_value": "", "plain_value": "value", "encoded_value": "encoded/value"}
        encoded = base64.urlsafe_b64encode(b"encoded/value").rstrip(b"=").decode()
        path = target_path("/", labels)
        self.assertIn("/empty_value@base64/=", path)
        self.assertIn("/plain_value/value", path)
        self.assertIn(f"/encoded_value@base64/{encoded}", path)
        self.assertEqual(
            path,
            f"/metrics/job@base64/=/empty_value@base64/=/encoded_value@base64/{encoded}/plain_value/value",
        )

    def test_job_first(self) -> None:
        """
        C{job} comes first whatever its name sorts as; the rest are sorted.
        """
        self.assertEqual(label_path({"z": "1", "job": "j", "a": "2"}), "metrics/job/j/a/2/z/1")

    def test_base64_values(self) -> None:
        """
        Unpadded base64url, for the job too.
        """
        self.assertEqual(label_path({"job": "a/b?"}), "metrics/job@base64/YS9iPw")
        self.assertEqual(label_path({"job": ""}), "metrics/job@base64/=")

    def test_escaping(self) -> None:
        """
        Values are path-escaped, the job and the others alike (space: C{%20});
        the reference query-escaped all but the job (space: C{+}).
        """
        self.assertEqual(
            label_path({"job": "my job", "branch": "feature x+y", "who": "é?#%"}),
            "metrics/job/my%20job/branch/feature%20x+y/who/%C3%A9%3F%23%25",
        )

    def test_no_labels(self) -> None:
        """
        Without labels the endpoint is used as is (C{/} when it has no path).
        """
        self.assertEqual(target_url("http://h:1", {}), "http://h:1/")
        self.assertEqual(target_url("http://h:1/push", {}), "http://h:1/push")
        self.assertEqual(target_url("http://h:1/push/", {}), "http://h:1/push/")

    def test_endpoint_path_and_query(self) -> None:
        """
        Labels go below the endpoint's path; the client's query is appended
        to the endpoint's.
        """
        self.assertEqual(
            target_url("https://vm.example/api/v1/import/prometheus?extra_label=a", {"job": "j"}, "b=2"),
            "https://vm.example/api/v1/import/prometheus/metrics/job/j?extra_label=a&b=2",
        )
        self.assertEqual(target_url("http://h/", {"job": "j"}, "b=2"), "http://h/metrics/job/j?b=2")


class Recorder(_BaseRecorder):
    """
    The metrics endpoint: records requests, answers C{code} with a header.
    """

    def answer(self, request: server.Request) -> bytes:
        request.setHeader(b"x-answer", b"yes")
        return b"stored\n"


class ForwardTests(SynchronousTestCase):
    """
    Pushes through the resource: method, body, headers and query pass, the
    proxy's labels and headers are added, the answer comes back.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.recorder = Recorder()
        self.upstream = StubTreq(self.recorder)
        self.proxy = MetricsProxyResource(
            cast(HTTPClient, self.upstream),
            self.clock,
            ENDPOINT,
            labels=LABELS,
            headers={"X-Extra-Header": "some"},
        )
        root = Resource()
        root.putChild(b"metricsproxy", self.proxy)
        self.client = StubTreq(root)

    def call(self, method: str, url: str, **kwargs: Any) -> Any:
        d = self.request(method, url, **kwargs)
        for _ in range(3):
            self.upstream.flush()
            self.client.flush()
        return self.successResultOf(d)

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = cast(HTTPClient, self.client).request(method, url, **kwargs)
        return d

    def body(self, response: Any) -> bytes:
        d = response.content()
        self.client.flush()
        content: bytes = self.successResultOf(d)
        return content

    def test_forward(self) -> None:
        """
        A gzip POST arrives at the label path (no trailing slash), the
        client's query, the client's and the proxy's headers, the target's
        C{Host}, and the body untouched.
        """
        payload = gzip.compress(b"cacheprog_overall_run_time_ms 12\n")
        response = self.call(
            "POST",
            "http://proxy.example/metricsproxy?x=1",
            data=payload,
            headers={
                "Content-Encoding": "gzip",
                "Content-Type": "text/plain",
                "X-Some-Header": "client",
                "X-Forwarded-For": "10.0.0.1",
            },
        )
        self.assertEqual(response.code, 200)
        [seen] = self.recorder.requests
        self.assertEqual(seen["method"], b"POST")
        self.assertEqual(seen["uri"], b"/metrics/job/proxytest/labeltoproxy/valuetoproxy?x=1")
        headers = seen["headers"]
        self.assertEqual(headers.getRawHeaders(b"host"), [b"pushgateway.example:9091"])
        self.assertEqual(headers.getRawHeaders(b"x-some-header"), [b"client"])
        self.assertEqual(headers.getRawHeaders(b"x-extra-header"), [b"some"])
        self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/plain"])
        self.assertIsNone(headers.getRawHeaders(b"x-forwarded-for"))
        self.assertEqual(headers.getRawHeaders(b"content-length"), [str(len(payload)).encode()])
        self.assertEqual(seen["body"], payload)

    def test_methods(self) -> None:
        """
        Whatever the method, it goes through (GET is the push default).
        """
        for method in ("GET", "PUT", "POST", "DELETE"):
            self.call(method, "http://proxy.example/metricsproxy", data=b"a 1\n" if method != "GET" else None)
        self.assertEqual([r["method"] for r in self.recorder.requests], [b"GET", b"PUT", b"POST", b"DELETE"])

    def test_extra_header_appended(self) -> None:
        """
        The proxy's headers are added to the client's of the same name.
        """
        self.call("PUT", "http://proxy.example/metricsproxy", data=b"a 1\n", headers={"X-Extra-Header": "mine"})
        self.assertEqual(self.recorder.requests[0]["headers"].getRawHeaders(b"x-extra-header"), [b"mine", b"some"])

    def test_answer_passed_back(self) -> None:
        """
        The endpoint's status, headers and body come back to the client.
        """
        self.recorder.code = 202
        response = self.call("PUT", "http://proxy.example/metricsproxy", data=b"a 1\n")
        self.assertEqual(response.code, 202)
        self.assertEqual(response.headers.getRawHeaders(b"x-answer"), [b"yes"])
        self.assertEqual(self.body(response), b"stored\n")

    def test_exact_path(self) -> None:
        """
        Only C{/metricsproxy} itself: anything below is 404 and not forwarded.
        """
        for url in ("http://proxy.example/metricsproxy/x", "http://proxy.example/metricsproxy/"):
            self.assertEqual(self.call("PUT", url, data=b"a 1\n").code, 404)
        self.assertEqual(self.recorder.requests, [])

    def test_upstream_failure(self) -> None:
        """
        An endpoint that cannot be reached: 502 with the error text, and ERROR
        C{failed to proxy metrics}.
        """

        class Broken:
            def request(self, *args: object, **kwargs: object) -> Deferred[Any]:
                return Deferred.fromCoroutine(self._fail())

            async def _fail(self) -> Any:
                raise ConnectionRefusedError("Connection refused")

        root = Resource()
        root.putChild(b"metricsproxy", MetricsProxyResource(cast(HTTPClient, Broken()), self.clock, ENDPOINT))
        self.client = StubTreq(root)
        with self.assertLogs("cacheprog.proxy", "ERROR") as logs:
            response = self.call("PUT", "http://proxy.example/metricsproxy", data=b"a 1\n")
        self.assertEqual(response.code, 502)
        self.assertIn(b"Connection refused", self.body(response))
        self.assertEqual(logs.records[0].getMessage(), "failed to proxy metrics")
        self.assertEqual(logs.records[0].levelno, logging.ERROR)

    def test_upstream_timeout(self) -> None:
        """
        An endpoint that never answers: 502 after the timeout.
        """
        self.recorder.code = None
        with self.assertLogs("cacheprog.proxy", "ERROR"):
            d = self.request("PUT", "http://proxy.example/metricsproxy", data=b"a 1\n")
            self.client.flush()
            self.assertNoResult(d)
            self.clock.advance(30)
            self.client.flush()
            response = self.successResultOf(d)
        self.assertEqual(response.code, 502)
        self.assertIn(b"no answer from the metrics endpoint within 30.0s", self.body(response))


class DisconnectTests(SynchronousTestCase):
    """
    A client that goes away cancels the forward and gets nothing written.
    """

    def test_client_gone(self) -> None:
        """
        The upstream request is cancelled; no answer is written.
        """
        cancelled: list[bool] = []

        class Hanging:
            def request(self, *args: object, **kwargs: object) -> Deferred[Any]:
                return Deferred(lambda _: cancelled.append(True))

        resource = MetricsProxyResource(cast(HTTPClient, Hanging()), Clock(), ENDPOINT)
        request: Any = DummyRequest([])
        request.method = b"PUT"
        request.uri = b"/metricsproxy"
        request.content = io.BytesIO(b"a 1\n")
        self.assertEqual(resource.render(request), server.NOT_DONE_YET)
        request.processingFailed(Failure(ConnectionDone()))
        self.assertEqual(cancelled, [True])
        self.assertEqual(request.written, [])
        self.assertEqual(request.finished, 0)

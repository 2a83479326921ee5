"""
Tests for the proxy's site (L{cacheprog.proxy.site}): what it serves where,
its body files, and its drain when the proxy stops.  Its screening and its
connections are in L{tests.unit.test_channel}, the storage protocol in
L{tests.unit.test_storage}.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from cacheprog.proxy.site import ProxySite, build_site

from .helpers import GatedStore
from .test_storage import KEY, SiteMixin


class HealthTests(SiteMixin, SynchronousTestCase):
    """
    C{/health}, C{/metrics}, C{/metricsproxy}.
    """

    def test_health(self) -> None:
        """
        C{/health}: 200 and an empty body, whatever the method.
        """
        for method in ("GET", "POST", "HEAD", "DELETE"):
            response, text = self.request(method, "/health")
            self.assertEqual((response.code, text), (200, b""), method)

    def test_metrics_stub(self) -> None:
        """
        C{/metrics} answers a (for now empty) Prometheus exposition.
        """
        response, text = self.request("GET", "/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(text.startswith(b"#"))
        self.assertEqual(self.request("GET", "/metrics/x")[0].code, 404)

    def test_metricsproxy_absent(self) -> None:
        """
        Without a metrics-proxy resource, C{/metricsproxy} is 404.
        """
        self.assertEqual(self.request("POST", "/metricsproxy")[0].code, 404)

    def test_mounts(self) -> None:
        """
        Resources given to L{build_site} serve C{/metrics} and
        C{/metricsproxy}, at exactly those paths.
        """

        class Fixed(Resource):
            isLeaf = True

            def __init__(self, text: bytes) -> None:
                super().__init__()
                self.text = text

            def render(self, request: Any) -> bytes:
                return self.text

        self.site = build_site(
            self.store, reactor=self.reactor, metrics=Fixed(b"m 1\n"), metricsproxy=Fixed(b"forwarded")
        )
        self.stub._agent._serverFactory = self.site
        self.assertEqual(self.request("GET", "/metrics")[1], b"m 1\n")
        self.assertEqual(self.request("POST", "/metricsproxy")[1], b"forwarded")
        self.assertEqual(self.request("POST", "/metricsproxy/x")[0].code, 404)


class DrainTests(SiteMixin, SynchronousTestCase):
    """
    A site that drains the requests in progress.
    """

    def make_store(self) -> Any:
        return GatedStore()

    def test_drain_waits(self) -> None:
        """
        L{ProxySite.drain} waits for requests in progress.
        """
        clock = Clock()
        self.raw(b"GET /cache/" + KEY.encode() + b" HTTP/1.1\r\nHost: p\r\n\r\n")
        self.assertEqual(self.site.active, 1)
        d = Deferred.fromCoroutine(self.site.drain(10.0, clock))
        self.assertNoResult(d)
        self.store.release()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(self.site.active, 0)

    def test_drain_bounded(self) -> None:
        """
        Requests still running when the drain time is up are cut off.
        """
        clock = Clock()
        _, transport, _ = self.raw(b"GET /cache/" + KEY.encode() + b" HTTP/1.1\r\nHost: p\r\n\r\n")
        d = Deferred.fromCoroutine(self.site.drain(10.0, clock))
        clock.advance(10.0)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertTrue(transport.disconnected)

    def test_drain_idle(self) -> None:
        """
        With nothing in progress, the drain ends at once.
        """
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(self.site.drain(10.0, Clock()))), 0)


class ProxySiteTests(SynchronousTestCase):
    """
    L{ProxySite} details.
    """

    def test_content_files(self) -> None:
        """
        Small bodies are kept in memory, large ones in a temporary file;
        both hashed.
        """
        site = ProxySite(Resource(), reactor=MemoryReactorClock())
        small, large = site.getContentFile(10), site.getContentFile(200_000)
        unknown = site.getContentFile(None)
        for f in (small, large, unknown):
            f.write(b"abc")
            self.assertEqual(f.sha256.digest(), hashlib.sha256(b"abc").digest())
            self.assertEqual(f.md5.digest(), hashlib.md5(b"abc").digest())
            f.seek(0)
            self.assertEqual(f.read(), b"abc")
            f.close()

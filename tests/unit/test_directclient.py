"""
Tests for L{cacheprog.remote.directclient}: treq's C{request()} straight over
an agent, tested against a real resource in memory.
"""

from __future__ import annotations

import io
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import FileBodyProducer, readBody
from twisted.web.resource import Resource
from twisted.web.server import Request

from cacheprog.remote.directclient import BytesProducer, CachedEndpoints, DirectClient, _producer


class _Echo(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        assert request.content is not None
        body = request.content.read()
        header = request.getHeader(b"x-test") or b""
        return b"%s %s %s %s" % (request.method, request.uri, header, body)


class DirectClientTests(SynchronousTestCase):
    """
    L{DirectClient.request} sends the method, URL, headers and body as given.
    """

    def setUp(self) -> None:
        self.agent = RequestTraversalAgent(_Echo())
        self.client = DirectClient(self.agent)

    def _answer(self, d: Deferred[Any]) -> bytes:
        self.agent.flush()
        response = self.successResultOf(d)
        body = readBody(response)
        self.agent.flush()
        return self.successResultOf(body)

    def test_bytes_body(self) -> None:
        """
        A bytes body and headers reach the server unchanged.
        """
        d = self.client.request("PUT", "http://h.test/b/k?x=1", headers={"X-Test": "yes"}, data=b"payload")
        self.assertEqual(self._answer(d), b"PUT /b/k?x=1 yes payload")

    def test_file_body(self) -> None:
        """
        A file body is streamed from where the file stands (its length is the
        rest of the file); the bytes themselves cross in the integration tier.
        """
        f = io.BytesIO(b"skip-the-rest")
        f.seek(5)
        producer = _producer(f)
        self.assertIsInstance(producer, FileBodyProducer)
        self.assertEqual(producer.length, len(b"the-rest"))
        self.assertIsNone(_producer(None))

    def test_no_body(self) -> None:
        """
        A GET without data sends no body.
        """
        d = self.client.request("GET", "http://h.test/k")
        self.assertEqual(self._answer(d), b"GET /k  ")


class ProducerTests(SynchronousTestCase):
    """
    L{BytesProducer} writes its bytes in one call and says their length.
    """

    def test_one_write(self) -> None:
        writes: list[bytes] = []

        class Consumer:
            def write(self, data: bytes) -> None:
                writes.append(data)

        producer = BytesProducer(b"abc")
        self.assertEqual(producer.length, 3)
        self.successResultOf(producer.startProducing(Consumer()))
        self.assertEqual(writes, [b"abc"])

    def test_empty_writes_nothing(self) -> None:
        writes: list[bytes] = []

        class Consumer:
            def write(self, data: bytes) -> None:
                writes.append(data)

        self.successResultOf(BytesProducer(b"").startProducing(Consumer()))
        self.assertEqual(writes, [])


class CachedEndpointsTests(SynchronousTestCase):
    """
    L{CachedEndpoints} makes one endpoint per scheme, host and port.
    """

    def test_once_per_host(self) -> None:
        made: list[tuple[bytes, bytes, int]] = []

        class Inner:
            def endpointForURI(self, uri: Any) -> object:
                made.append((uri.scheme, uri.host, uri.port))
                return object()

        class URI:
            def __init__(self, host: bytes, port: int) -> None:
                self.scheme, self.host, self.port = b"http", host, port

        endpoints = CachedEndpoints(Inner())
        first = endpoints.endpointForURI(URI(b"a", 80))
        self.assertIs(endpoints.endpointForURI(URI(b"a", 80)), first)
        self.assertIsNot(endpoints.endpointForURI(URI(b"a", 81)), first)
        self.assertIsNot(endpoints.endpointForURI(URI(b"b", 80)), first)
        self.assertEqual(made, [(b"http", b"a", 80), (b"http", b"a", 81), (b"http", b"b", 80)])

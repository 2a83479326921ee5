"""
Tests for the named objects of the warm start (run manifests, packs) in the
backends: the C{http} client against the proxy's C{/blob/} resource
(L{treq.testing.StubTreq}, in memory), the C{dir} store, and the body
helpers for servers that ignore C{Range}.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from cacheprog.cache import inline_runner
from cacheprog.interfaces import NotFound
from cacheprog.proxy.blobs import BlobResource
from cacheprog.remote import httpcontract as contract
from cacheprog.remote.base import one_chunk, trimmed
from cacheprog.remote.directory import DirectoryStore
from cacheprog.remote.http import HTTPStore
from cacheprog.remote.memory import MemoryStore

PACK = "packs/v1/" + "ab" * 32
MANIFEST = "manifests/v1/" + "cd" * 32
DATA = bytes(range(256)) * 40


async def collect(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


class ProxyBlobTests(SynchronousTestCase):
    """
    L{HTTPStore}'s blob methods against L{BlobResource} over a L{MemoryStore}.
    """

    def setUp(self) -> None:
        self.memory = MemoryStore()
        root = Resource()
        root.putChild(b"blob", BlobResource(self.memory))
        self.stub = StubTreq(root)
        self.store = HTTPStore("http://proxy.invalid/", {}, cast(Any, self.stub))

    def call(self, coro: Any) -> Any:
        d: Deferred[Any] = Deferred.fromCoroutine(coro)
        self.stub.flush()
        return d

    def test_put_get_range(self) -> None:
        """
        A pack put through the proxy comes back whole and by range.
        """
        self.successResultOf(self.call(self.store.put_blob(PACK, DATA)))
        self.assertEqual(self.memory.blobs[PACK], DATA)
        self.assertEqual(self.successResultOf(self.call(self.store.get_blob(PACK))), DATA)
        body = self.successResultOf(self.call(self.store.get_range(PACK, 100, 5000)))
        self.assertEqual(self.successResultOf(self.call(collect(body))), DATA[100:5000])

    def test_missing(self) -> None:
        """
        A missing manifest is NotFound (a 404), for whole and ranged reads.
        """
        self.failureResultOf(self.call(self.store.get_blob(MANIFEST)), NotFound)
        self.failureResultOf(self.call(self.store.get_range(PACK, 0, 10)), NotFound)

    def test_names_checked(self) -> None:
        """
        Only manifests/v1/<hex> and packs/v1/<hex> are served: no other
        path reaches the store.
        """
        for name in ("packs/v1/../../etc", "packs/v2/" + "ab" * 32, "cache/" + "ab" * 32, "packs/v1/AB"):
            response = self.successResultOf(cast(Any, self.stub).get("http://proxy.invalid/blob/" + name))
            self.assertEqual(response.code, 404, name)
            response = self.successResultOf(cast(Any, self.stub).put("http://proxy.invalid/blob/" + name, data=b"x"))
            self.assertEqual(response.code, 400, name)
        self.assertEqual(self.memory.blobs, {})

    def test_range_forms(self) -> None:
        """
        One closed byte range is accepted; other forms are refused.
        """
        self.assertEqual(contract.parse_range("bytes=5-9"), (5, 10))
        self.assertIsNone(contract.parse_range(None))
        for value in ("bytes=5-", "bytes=-5", "bytes=1-2,4-5", "bytes=9-5", "items=1-2"):
            self.assertRaises(contract.ContractError, contract.parse_range, value)


class DirectoryBlobTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = DirectoryStore(self.mktemp(), inline_runner)
        self.store.probe()

    def test_round_trip(self) -> None:
        """
        Blobs are files under the root; ranges come back in chunks.
        """
        self.successResultOf(Deferred.fromCoroutine(self.store.put_blob(PACK, DATA * 200)))
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(self.store.get_blob(PACK))), DATA * 200)
        body = self.successResultOf(Deferred.fromCoroutine(self.store.get_range(PACK, 3, 2_000_000)))
        got = self.successResultOf(Deferred.fromCoroutine(collect(body)))
        self.assertEqual(got, (DATA * 200)[3:2_000_000])

    def test_missing_and_escape(self) -> None:
        """
        A missing blob is NotFound; a name leaving the root is refused.
        """
        self.failureResultOf(Deferred.fromCoroutine(self.store.get_blob(MANIFEST)), NotFound)
        self.failureResultOf(Deferred.fromCoroutine(self.store.put_blob("../outside", b"x")), ValueError)


class TrimmedTests(SynchronousTestCase):
    def test_whole_object_answer(self) -> None:
        """
        A server that answers a ranged read with the whole object (200):
        only the range reaches the reader, across chunk boundaries.
        """

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(DATA), 777):
                yield DATA[i : i + 777]

        got = self.successResultOf(Deferred.fromCoroutine(collect(trimmed(chunks(), 1000, 3000))))
        self.assertEqual(got, DATA[1000:4000])
        got = self.successResultOf(Deferred.fromCoroutine(collect(trimmed(one_chunk(DATA), 0, 5))))
        self.assertEqual(got, DATA[:5])


class _SlowClientRequest:
    """
    Just enough of a request for L{BlobResource}'s GET: the transport is
    full after every write, so the registered producer is paused each time.
    """

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.producer: Any = None
        self.channel: object | None = object()
        self.finished = False
        self.code = 200

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        if self.producer is not None:
            self.producer.pauseProducing()

    def setHeader(self, name: bytes, value: bytes) -> None:
        pass

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def finish(self) -> None:
        self.finished = True


class BlobBackPressureTests(SynchronousTestCase):
    """
    A blob GET sends no more than one step ahead of a slow client, with or
    without a Range: a stalled reader never makes the proxy hold the blob.
    """

    BIG = bytes(3 << 20)

    def _get(self, wanted: tuple[int, int] | None) -> tuple[_SlowClientRequest, Deferred[None]]:
        memory = MemoryStore()
        memory.blobs[PACK] = self.BIG
        resource = BlobResource(memory)
        request = _SlowClientRequest()
        d: Deferred[None] = Deferred.fromCoroutine(resource._get_blob(cast(Any, request), PACK, wanted))
        return request, d

    def _drain(self, request: _SlowClientRequest, d: Deferred[None]) -> None:
        self.assertEqual(len(request.writes), 1)
        self.assertNoResult(d)
        while request.producer is not None and not request.finished:
            request.producer.resumeProducing()
        self.successResultOf(d)
        self.assertTrue(request.finished)

    def test_whole_blob_paced(self) -> None:
        request, d = self._get(None)
        self._drain(request, d)
        self.assertEqual(b"".join(request.writes), self.BIG)
        self.assertEqual(request.code, 200)

    def test_range_paced(self) -> None:
        request, d = self._get((1, (2 << 20) + 1))
        self._drain(request, d)
        self.assertEqual(b"".join(request.writes), self.BIG[1 : (2 << 20) + 1])
        self.assertEqual(request.code, 206)

# -*- test-case-name: tests.unit.test_blobs -*-
"""
C{/blob/}: the warm start's run manifests and packs over the proxy
(C{GET} with or without one C{Range}, C{PUT}), over the backend's
L{BlobStore}.
"""

from __future__ import annotations

from cacheprog.interfaces import BlobStore, NotFound, ThreadRunner
from cacheprog.proxy.web import JobResource, Pacer, WebRequest, header, plain, read_all, write_paced
from cacheprog.remote import httpcontract as contract
from cacheprog.remote.base import close_body


class BlobResource(JobResource):
    """
    C{GET} (with or without one C{Range}) and C{PUT} of C{/manifests/v1/<hex>}
    and C{/packs/v1/<hex>} below where it is mounted (the warm start's run
    manifests and packs), over a store that holds named objects.

    @param run_in_thread: reads request bodies off the reactor thread; None
        reads them inline.
    """

    isLeaf = True

    def __init__(self, blobs: BlobStore, run_in_thread: ThreadRunner | None = None) -> None:
        super().__init__()
        self._blobs = blobs
        self._thread = run_in_thread

    def render(self, request: WebRequest) -> bytes | int:
        try:
            name = contract.parse_blob_name(list(request.postpath))
            wanted = contract.parse_range(header(request, "Range"))
        except contract.ContractError as e:
            return plain(request, 404 if request.method == b"GET" else 400, str(e))
        if request.method == b"GET":
            return self._start(request, self._get_blob(request, name, wanted))
        if request.method == b"PUT":
            return self._put_blob(request, name)
        request.setHeader(b"allow", b"GET, PUT")
        return plain(request, 405, "Method Not Allowed")

    async def _get_blob(self, request: WebRequest, name: str, wanted: tuple[int, int] | None) -> None:
        try:
            # The whole blob is read as the widest range a blob can have, so it
            # streams like any range instead of sitting in memory.
            body = await self._blobs.get_range(name, *(wanted or (0, contract.BLOB_LIMIT)))
        except NotFound:
            request.write(plain(request, 404))
            request.finish()
            return
        request.setHeader(b"content-type", b"application/octet-stream")
        if wanted is not None:
            # The stored size is not known here: the range is sent chunked.
            request.setResponseCode(206)
            request.setHeader(b"content-range", f"bytes {wanted[0]}-{wanted[1] - 1}/*".encode("ascii"))
        pacer = Pacer()
        request.registerProducer(pacer, True)
        try:
            async for chunk in body:
                await write_paced(request, pacer, chunk)
        finally:
            if getattr(request, "channel", None) is not None:  # None once the client is gone
                request.unregisterProducer()
            await close_body(body)
        request.finish()

    def _put_blob(self, request: WebRequest, name: str) -> bytes | int:
        content = request.content
        content.seek(0, 2)
        size = content.tell()
        if size > contract.BLOB_LIMIT:
            return plain(request, 413, f"larger than {contract.BLOB_LIMIT} bytes")

        async def store() -> None:
            data = await self._thread(read_all, content) if self._thread is not None else read_all(content)
            await self._blobs.put_blob(name, data)
            request.write(plain(request, 200))
            request.finish()

        return self._start(request, store())

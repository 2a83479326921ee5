# -*- test-case-name: tests.unit.test_remote -*-
"""
What every backend shares: bulk fetching on top of single gets, and body
helpers.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, AsyncIterator, Iterable

from twisted.internet.defer import Deferred, DeferredSemaphore

from cacheprog.interfaces import NotFound, RemoteObject, UploadObject


def reference_metadata(obj: UploadObject) -> dict[str, str]:
    """
    The user metadata the Go reference writes with each object (S3
    x-amz-meta-*, the dir store's .meta file): the OutputID in standard
    base64, the algorithm (zstd or empty), the size only when above zero.
    """
    meta = {
        "output_id": base64.b64encode(obj.output_id).decode("ascii"),
        "compression_algorithm": obj.compression,
    }
    if obj.size > 0:
        meta["uncompressed_size"] = str(obj.size)
    return meta


async def one_chunk(data: bytes) -> AsyncGenerator[bytes, None]:
    """
    A body that is already in memory.
    """
    if data:
        yield data


class BulkGet:
    """
    Mixin: C{get_many} as bounded concurrent C{get}s, answered in completion
    order.  Backends with a real multi-get (packs) override it.
    """

    bulk_concurrency = 32

    async def get(self, action_id: bytes) -> RemoteObject:
        raise NotImplementedError

    async def get_many(self, action_ids: Iterable[bytes]) -> AsyncIterator[tuple[bytes, RemoteObject | None]]:
        slots = DeferredSemaphore(self.bulk_concurrency)
        done: list[tuple[bytes, RemoteObject | None]] = []
        wake: list[Deferred[None]] = []

        async def one(action_id: bytes) -> None:
            await slots.acquire()
            try:
                obj: RemoteObject | None = await self.get(action_id)
            except NotFound:
                obj = None
            except Exception:  # noqa: BLE001 - prefetch is best effort
                obj = None
            finally:
                slots.release()
            done.append((action_id, obj))
            if wake:
                wake.pop().callback(None)

        jobs = [Deferred.fromCoroutine(one(a)) for a in action_ids]
        for _ in jobs:
            if not done:
                d: Deferred[None] = Deferred()
                wake.append(d)
                await d
            yield done.pop(0)

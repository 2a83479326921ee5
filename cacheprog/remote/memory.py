# -*- test-case-name: tests.unit.test_remote -*-
"""
An in-memory backend: for tests and for trying things out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone

import attrs

from cacheprog.interfaces import NotFound, RemoteObject, UploadObject
from cacheprog.remote.base import one_chunk


@attrs.frozen
class StoredObject:
    """
    What the memory store keeps per key.
    """

    output_id: bytes
    size: int
    compression: str
    data: bytes
    mtime: datetime


class MemoryStore:
    """
    Objects in a dict, keyed by action id.  C{gets}/C{puts} count calls.
    """

    name = "memory"

    def __init__(self) -> None:
        self.objects: dict[bytes, StoredObject] = {}
        self.gets = 0
        self.puts = 0
        #: Manifests and packs, by name; C{blob_gets} counts reads of them.
        self.blobs: dict[str, bytes] = {}
        self.blob_gets = 0

    async def get(self, action_id: bytes) -> RemoteObject:
        self.gets += 1
        stored = self.objects.get(action_id)
        if stored is None:
            raise NotFound(action_id.hex())
        return RemoteObject(
            output_id=stored.output_id,
            size=stored.size,
            mtime=stored.mtime,
            compression=stored.compression,
            stored_size=len(stored.data),
            body=one_chunk(stored.data),
        )

    async def put(self, obj: UploadObject) -> None:
        self.puts += 1
        self.objects[obj.action_id] = StoredObject(
            output_id=obj.output_id,
            size=obj.size,
            compression=obj.compression,
            data=obj.read(),
            mtime=datetime.now(timezone.utc),
        )

    async def get_blob(self, name: str) -> bytes:
        self.blob_gets += 1
        if name not in self.blobs:
            raise NotFound(name)
        return self.blobs[name]

    async def get_range(self, name: str, start: int, stop: int) -> AsyncIterator[bytes]:
        data = await self.get_blob(name)
        return one_chunk(data[start:stop])

    async def put_blob(self, name: str, data: bytes) -> None:
        self.blobs[name] = data

    async def close(self) -> None:
        return None

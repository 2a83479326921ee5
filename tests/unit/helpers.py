"""
Shared fixtures for the unit tests: objects, and a remote store whose calls
wait for the test to release them.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from twisted.internet.defer import Deferred

from cacheprog import compression
from cacheprog.interfaces import RemoteObject, UploadObject
from cacheprog.remote.memory import MemoryStore, StoredObject

WHEN = datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def action(n: int) -> bytes:
    """
    A distinct 32-byte action id.
    """
    return hashlib.sha256(b"action %d" % n).digest()


def output_of(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def store_object(store: MemoryStore, action_id: bytes, body: bytes, output_id: bytes | None = None) -> None:
    """
    Put C{body} into C{store} as cacheprog would have uploaded it.
    """
    algorithm, data = compression.encode(body)
    store.objects[action_id] = StoredObject(
        output_id=output_id if output_id is not None else output_of(body),
        size=len(body),
        compression=algorithm,
        data=data,
        mtime=WHEN,
    )


class GatedStore:
    """
    A memory store whose gets and puts wait until the test calls L{release}.
    """

    name = "gated"

    def __init__(self) -> None:
        self.memory = MemoryStore()
        self.gates: list[Deferred[None]] = []
        self.get_calls = 0
        self.put_calls = 0
        self.fail_with: Exception | None = None

    async def _gate(self) -> None:
        d: Deferred[None] = Deferred()
        self.gates.append(d)
        await d
        if self.fail_with is not None:
            raise self.fail_with

    def release(self) -> None:
        gates, self.gates = self.gates, []
        for d in gates:
            d.callback(None)

    async def get(self, action_id: bytes) -> RemoteObject:
        self.get_calls += 1
        await self._gate()
        return await self.memory.get(action_id)

    async def put(self, obj: UploadObject) -> None:
        self.put_calls += 1
        await self._gate()
        await self.memory.put(obj)

    async def close(self) -> None:
        return None

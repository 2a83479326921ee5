# -*- test-case-name: tests.unit.test_observing -*-
"""
A remote store wrapper that records metrics for every call (the Go
reference's C{ObservingRemoteStorage}); it goes outside the circuit breaker.

Per call:
  - get hit: one object, its stored (compressed) size, its duration; the
    duration ends when the object's metadata arrived, before the body is
    read (as in the reference);
  - get not found: one remote miss and the duration;
  - get refused by an open breaker (L{Unavailable}): one remote miss, no
    duration (nothing was tried);
  - put: one object of the stored size and the duration; an upload the
    breaker skipped is counted nowhere (nothing was stored);
  - any other failure (timeouts included): one storage error and the
    duration.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from cacheprog.interfaces import NotFound, RemoteObject, RemoteStore, Unavailable, UploadObject
from cacheprog.metrics import GET, PUT, REMOTE


class RemoteObserver(Protocol):
    """
    What L{ObservingStore} records into (L{cacheprog.metrics.Metrics}).
    """

    def object_ok(self, storage: str, operation: str, size: int) -> None: ...

    def object_miss(self, storage: str) -> None: ...

    def storage_error(self, storage: str, operation: str) -> None: ...

    def duration(self, storage: str, operation: str, seconds: float) -> None: ...


class ObservingStore:
    """
    A L{RemoteStore} recording the calls to an inner one.
    """

    def __init__(self, inner: RemoteStore, metrics: RemoteObserver, clock: IReactorTime) -> None:
        self.name = inner.name
        self._inner = inner
        self._metrics = metrics
        self._clock = clock

    def _took(self, operation: str, started: float) -> None:
        self._metrics.duration(REMOTE, operation, self._clock.seconds() - started)

    def _ok(self, operation: str, started: float, size: int) -> None:
        self._took(operation, started)
        self._metrics.object_ok(REMOTE, operation, size)

    def _failed(self, operation: str, started: float) -> None:
        self._took(operation, started)
        self._metrics.storage_error(REMOTE, operation)

    async def get(self, action_id: bytes) -> RemoteObject:
        started = self._clock.seconds()
        try:
            obj = await self._inner.get(action_id)
        except Unavailable:
            self._metrics.object_miss(REMOTE)
            raise
        except NotFound:
            self._took(GET, started)
            self._metrics.object_miss(REMOTE)
            raise
        except Exception:
            self._failed(GET, started)
            raise
        self._ok(GET, started, obj.stored_size)
        return obj

    async def put(self, obj: UploadObject) -> None:
        started = self._clock.seconds()
        try:
            await self._inner.put(obj)
        except Unavailable:
            raise
        except Exception:
            self._failed(PUT, started)
            raise
        self._ok(PUT, started, obj.stored_size)

    async def close(self) -> None:
        await self._inner.close()


__all__ = ["ObservingStore", "RemoteObserver"]

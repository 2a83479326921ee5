# -*- test-case-name: tests.unit.test_breaker -*-
"""
A circuit breaker around any remote store (C{--max-consecutive-errors},
C{--retry-after}).

After that many failures in a row the store is switched off: gets miss and
uploads are skipped without a network call, so a dead store costs a build
nothing.  After C{retry-after}, one call goes through as a probe; if the
store answers (a hit, an upload, or a plain "not found", which proves it is
reachable), it is switched back on.

Gets and uploads have a breaker each, so an upload-only problem (read-only
credentials) does not switch off gets; skipped uploads are reported as
skipped, not as successful.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.internet.interfaces import IReactorTime

from cacheprog.interfaces import NotFound, RemoteObject, RemoteStore, Unavailable, UploadObject
from cacheprog.log import Logger

_log = Logger("breaker")
T = TypeVar("T")


class Breaker:
    """
    The state of one breaker: closed, open since a time, or probing.
    """

    def __init__(self, what: str, threshold: int, retry_after: float, clock: IReactorTime) -> None:
        self._what = what
        self._threshold = threshold
        self._retry_after = retry_after
        self._clock = clock
        self._errors = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def admit(self) -> bool:
        """
        May a call go through now?  (Claims the single probe when half-open.)
        """
        if self._opened_at is None:
            return True
        if self._probing or self._retry_after <= 0:
            return False
        if self._clock.seconds() - self._opened_at < self._retry_after:
            return False
        self._probing = True
        _log.info("Circuit breaker half-open: allowing probe request", calls=self._what)
        return True

    def succeeded(self) -> None:
        if self._opened_at is not None:
            _log.info("Remote storage is back, switching it on again", calls=self._what)
        self._errors, self._opened_at, self._probing = 0, None, False

    def failed(self, reason: BaseException) -> bool:
        """
        Count a failure.

        @return: True when the breaker is (now) open.
        """
        self._errors += 1
        if self._probing or (self._opened_at is None and self._errors >= self._threshold):
            self._opened_at = self._clock.seconds()
            self._probing = False
            _log.error(
                "Remote storage has been disabled because of too many consecutive errors",
                calls=self._what,
                retry_after=f"{self._retry_after}s",
                reason=repr(reason),
            )
            return True
        return self._opened_at is not None

    async def call(self, job: Callable[[], Awaitable[T]], ok: tuple[type[BaseException], ...] = ()) -> T:
        """
        Run C{job} through the breaker.  Exceptions in C{ok} prove the store
        is reachable and pass through.

        @raise Unavailable: when the breaker is open (or opens now).
        """
        if not self.admit():
            raise Unavailable(self._what)
        try:
            result = await job()
        except ok:
            self.succeeded()
            raise
        except Exception as e:
            if self.failed(e):
                raise Unavailable(self._what) from e
            raise
        self.succeeded()
        return result


class BreakerStore:
    """
    A L{RemoteStore} that switches an inner store off after repeated failures.
    """

    def __init__(self, inner: RemoteStore, threshold: int, retry_after: float, clock: IReactorTime) -> None:
        self.name = inner.name
        self._inner = inner
        self.gets = Breaker("get", threshold, retry_after, clock)
        self.puts = Breaker("put", threshold, retry_after, clock)

    async def get(self, action_id: bytes) -> RemoteObject:
        return await self.gets.call(lambda: self._inner.get(action_id), ok=(NotFound,))

    async def put(self, obj: UploadObject) -> None:
        await self.puts.call(lambda: self._inner.put(obj))

    async def close(self) -> None:
        await self._inner.close()

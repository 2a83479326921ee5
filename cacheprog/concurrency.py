# -*- test-case-name: tests.unit.test_concurrency -*-
"""
The small helpers every layer uses to bound its work: single-flight
(L{Shared}), deadlines (L{deadline}) and concurrency limits (L{limited}).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

T = TypeVar("T")


class Shared(Generic[T]):
    """
    One job, many waiters: the first call starts it, everyone gets its
    result; cancelling a waiter does not cancel the job.  A failure is not
    kept (the next call tries again).
    """

    def __init__(self, job: Callable[[], Awaitable[T]]) -> None:
        self._job = job
        self._waiters: list[Deferred[T]] | None = None

    def wait(self) -> Deferred[T]:
        waiter: Deferred[T] = Deferred(self._abandon)
        if self._waiters is None:
            self._waiters = [waiter]
            Deferred.fromCoroutine(self._run())
        else:
            self._waiters.append(waiter)
        return waiter

    def _abandon(self, waiter: Deferred[T]) -> None:
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)

    async def _run(self) -> None:
        try:
            result = await self._job()
        except BaseException:  # noqa: BLE001 - handed to every waiter
            failure = Failure()  # type: ignore[no-untyped-call]
            waiters, self._waiters = self._waiters or [], None
            for waiter in waiters:
                waiter.errback(failure)
            return
        waiters, self._waiters = self._waiters or [], None
        for waiter in waiters:
            waiter.callback(result)


def semaphore(limit: int) -> DeferredSemaphore | None:
    """
    A limit of C{limit} at once; None for no limit (C{limit} <= 0).
    """
    return DeferredSemaphore(limit) if limit > 0 else None


async def limited(sem: DeferredSemaphore | None, job: Callable[[], Awaitable[T]]) -> T:
    """
    Run C{job} once C{sem} has room (at once without a semaphore).
    """
    if sem is None:
        return await job()
    await sem.acquire()
    try:
        return await job()
    finally:
        sem.release()


def deadline(job: Coroutine[Any, Any, T], seconds: float, clock: IReactorTime) -> Deferred[T]:
    """
    C{job} as a Deferred cancelled after C{seconds} (0: no deadline); a
    cancelled job fails with L{twisted.internet.defer.TimeoutError}.
    """
    d = Deferred.fromCoroutine(job)
    if seconds > 0:
        d.addTimeout(seconds, clock)
    return d

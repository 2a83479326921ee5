"""
Tests for L{cacheprog.concurrency}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.concurrency import Shared, deadline, limited, semaphore


class SharedTests(SynchronousTestCase):
    def test_one_job_many_waiters(self) -> None:
        """
        Waiters share one run; a cancelled waiter leaves the job running;
        after it ends the next wait runs it again.
        """
        gate: Deferred[int] = Deferred()
        runs = []

        async def job() -> int:
            runs.append(1)
            return await gate

        shared = Shared(job)
        first, second = shared.wait(), shared.wait()
        second.cancel()
        self.failureResultOf(second)
        gate.callback(7)
        self.assertEqual(self.successResultOf(first), 7)
        self.assertEqual(len(runs), 1)
        gate = Deferred()
        third = shared.wait()
        gate.callback(8)
        self.assertEqual((self.successResultOf(third), len(runs)), (8, 2))


class LimitTests(SynchronousTestCase):
    def test_limited(self) -> None:
        """
        At most C{limit} jobs run at once; no semaphore: no limit.
        """
        sem = semaphore(1)
        gates: list[Deferred[None]] = [Deferred(), Deferred()]
        started = []

        async def job(n: int) -> int:
            started.append(n)
            await gates[n]
            return n

        a = Deferred.fromCoroutine(limited(sem, lambda: job(0)))
        b = Deferred.fromCoroutine(limited(sem, lambda: job(1)))
        self.assertEqual(started, [0])
        gates[0].callback(None)
        self.assertEqual(started, [0, 1])
        gates[1].callback(None)
        self.assertEqual((self.successResultOf(a), self.successResultOf(b)), (0, 1))
        self.assertIsNone(semaphore(0))

    def test_deadline(self) -> None:
        """
        A job past its deadline fails with a timeout; 0 means none.
        """
        clock = Clock()

        async def forever() -> None:
            await Deferred()

        d = deadline(forever(), 5, clock)
        clock.advance(5)
        self.failureResultOf(d, DeferredTimeout)
        d = deadline(forever(), 0, clock)
        clock.advance(1000)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d)

# -*- test-case-name: tests.unit.test_cache -*-
"""
L{Flight}: one remote fetch of the core and the gets waiting for it, first
for it to leave the queue, then for its result (single-flight per key).
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred

from cacheprog.local import Entry

T = TypeVar("T")


class Flight:
    """
    One remote fetch and everyone waiting for it: first for it to leave the
    queue (started), then for its result.
    """

    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.result: Entry | None = None
        self._start_waiters: list[Deferred[None]] = []
        self._waiters: list[Deferred[Entry | None]] = []
        self.job: Deferred[None] | None = None

    def abandon(self) -> None:
        """
        Give up on the fetch: its waiters get "miss" now.
        """
        if self.job is not None and not self.job.called:
            self.job.cancel()
        self.finish(None)

    def mark_started(self) -> None:
        self.started = True
        _fire(self._start_waiters, None)

    def wait_started(self) -> Deferred[None]:
        return _waiter(self._start_waiters, self.started, None)

    def finish(self, result: Entry | None) -> None:
        self.result, self.finished = result, True
        self.mark_started()
        _fire(self._waiters, result)

    def wait(self) -> Deferred[Entry | None]:
        return _waiter(self._waiters, self.finished, self.result)


def _waiter(waiters: list[Deferred[T]], done: bool, value: T) -> Deferred[T]:
    d: Deferred[T] = Deferred()
    if done:
        d.callback(value)
    else:
        waiters.append(d)
    return d


def _fire(waiters: list[Deferred[T]], value: T) -> None:
    pending = list(waiters)
    waiters.clear()
    for d in pending:
        if not d.called:  # a waiter may have been cancelled by its timeout
            d.callback(value)

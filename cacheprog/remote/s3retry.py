# -*- test-case-name: tests.unit.test_s3retry -*-
"""
When an S3 request is tried again, and how long the store waits first.

L{retried}: 5xx, 429 and connection failures are tried again
(L{Retries.attempts}), after L{jittered} backoff delays, inside the core's
get/put timeouts.  A cancelled request (what those timeouts do) is never
retried, whatever it failed with (L{Tracked}), and cancelling the backoff
wait (L{sleep}) ends it at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from cacheprog.log import Logger
from cacheprog.remote.s3answers import S3Error, parse_error

_log = Logger("s3")
T = TypeVar("T")

#: Answers worth another try (throttling and server trouble).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Retries:
    """
    How one request is tried.

    @ivar attempts: tries in all (1: no retry).
    @ivar backoff: the delay steps before the second, third... try (the
        last step repeats).
    @ivar random: uniform in [0, 1), spreads the delays (L{jittered}).
    """

    attempts: int
    backoff: Sequence[float]
    random: Callable[[], float]

    def delay(self, attempt: int) -> float:
        """
        Seconds to wait after try C{attempt} (0-based) failed.
        """
        return jittered(self.backoff[min(attempt, len(self.backoff) - 1)], self.random)


async def retried(
    send: Callable[[], Deferred[Any]],
    retries: Retries,
    clock: IReactorTime,
    read_small: Callable[[Any], Awaitable[bytes]],
    operation: str,
    key: str,
) -> Any:
    """
    The answer to C{send()}, called again (a fresh signature, a rewound
    body) after a 5xx/429 or connection trouble.

    @param read_small: reads (and releases) the body of an answer not kept.
    @return: the response (any status; 5xx only after the last attempt),
        its body not read.
    @raise S3Error: no answer after the last attempt.
    @raise CancelledError: the caller cancelled.
    """
    for attempt in range(retries.attempts):
        final = attempt + 1 >= retries.attempts
        request = Tracked(send())
        try:
            response = await request.deferred
        except Exception as e:
            if request.cancelled or isinstance(e, CancelledError):
                raise CancelledError() from e
            if final or not retryable(e):
                raise S3Error(operation, message=describe(e)) from e
            _log.debug("S3 request failed, retrying", operation=operation, key=key, reason=describe(e))
        else:
            if final or response.code not in RETRY_STATUSES:
                return response
            code, _ = parse_error(await read_small(response))
            _log.debug("S3 answered an error, retrying", operation=operation, key=key, status=response.code, code=code)
        await sleep(clock, retries.delay(attempt))
    raise AssertionError("unreachable")


def retryable(error: BaseException) -> bool:
    """
    Connection trouble worth another try: refused, reset, closed before the
    answer, connect timeout.
    """
    from twisted.internet import error as ierror
    from twisted.web.client import RequestTransmissionFailed, ResponseFailed

    from cacheprog.remote.pool import ResponseTimeout

    if isinstance(error, ResponseTimeout):
        # A server that sat on a request for the whole read timeout gets no
        # second and third chance to do it again.
        return False
    return isinstance(
        error,
        (
            ierror.ConnectError,
            ierror.ConnectionLost,
            ierror.ConnectionClosed,
            ierror.TimeoutError,
            ResponseFailed,
            RequestTransmissionFailed,
        ),
    )


def describe(error: BaseException) -> str:
    """
    A connection failure in a line: its type and every reason it carries
    (Twisted's C{ResponseFailed} hides them in C{reasons}).
    """
    reasons = getattr(error, "reasons", None)
    if reasons:
        return f"{type(error).__name__}: " + "; ".join(r.getErrorMessage() for r in reasons)
    return f"{type(error).__name__}: {error}"


def jittered(step: float, random: Callable[[], float]) -> float:
    """
    "Equal jitter": half the step plus up to another half, so clients
    failing together do not retry in lock step, and no wait exceeds
    the step.
    """
    return step / 2 + random() * step / 2


def sleep(clock: IReactorTime, seconds: float) -> Deferred[None]:
    """
    Fires after C{seconds}; cancelling it cancels the wait.
    """
    from twisted.internet.task import deferLater

    return deferLater(clock, seconds, lambda: None)


class Tracked(Generic[T]):
    """
    A Deferred that remembers whether it was cancelled: what a cancelled
    request fails with depends on when the cancel lands (C{CancelledError},
    C{ResponseNeverReceived}, even C{DNSLookupError} while the host name is
    being resolved), and a cancelled request must never be retried.
    """

    def __init__(self, inner: Deferred[T]) -> None:
        self.cancelled = False
        self._inner = inner
        self.deferred: Deferred[T] = Deferred(self._cancel)
        inner.addCallbacks(self._pass, self._fail)

    def _pass(self, result: T) -> None:
        if not self.deferred.called:
            self.deferred.callback(result)

    def _fail(self, failure: Failure) -> None:
        if not self.deferred.called:
            self.deferred.errback(failure)

    def _cancel(self, _: Deferred[T]) -> None:
        self.cancelled = True
        self._inner.cancel()

# -*- test-case-name: tests.unit.test_presence -*-
"""
What this run knows about which keys the remote store holds, so that a get
for a key known absent is answered "miss" without a round trip, and an
upload of such a key needs no HEAD first.

Sources, newest knowledge winning:
 - a listing of the prefix at start (L{Listing}); only a complete one says
   anything about the keys it does not contain;
 - keys a run manifest names (L{Presence.add_present}: present, probably);
 - this run's own answers: a NotFound, an upload that succeeded.

Absent is only ever a hint towards "miss": a key another job uploads after
the listing is a recompile here, never a wrong build.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from cacheprog.log import Logger

_log = Logger("presence")


@attrs.frozen
class Listing:
    """
    The action IDs found under the prefix; C{complete} when the listing
    reached the end (not stopped by its page cap).
    """

    action_ids: frozenset[bytes]
    complete: bool


class Presence:
    """
    The presence view of one run.
    """

    def __init__(self) -> None:
        self._present: set[bytes] = set()
        self._missing: set[bytes] = set()
        self._complete = False
        self._waiters: list[Deferred[None]] | None = None

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def loading(self) -> bool:
        return self._waiters is not None

    def absent(self, action_id: bytes) -> bool:
        """
        Whether the store is known not to hold C{action_id}.
        """
        if action_id in self._missing:
            return True
        return self._complete and action_id not in self._present

    def note_missing(self, action_id: bytes) -> None:
        """
        The store answered "no such key" for C{action_id}.
        """
        self._missing.add(action_id)
        self._present.discard(action_id)

    def note_present(self, action_id: bytes) -> None:
        """
        C{action_id} is in the store now (we uploaded it).
        """
        self._present.add(action_id)
        self._missing.discard(action_id)

    def add_present(self, action_ids: Iterable[bytes]) -> None:
        """
        Keys believed present (a run manifest's entries).
        """
        for action_id in action_ids:
            if action_id not in self._missing:
                self._present.add(action_id)

    def start_loading(self) -> None:
        """
        A listing is on its way: L{ready} waits for it.
        """
        if self._waiters is None:
            self._waiters = []

    def listed(self, listing: Listing | None) -> None:
        """
        The listing arrived (None: it failed or was given up).  Keys this run
        saw missing meanwhile stay missing; keys it uploaded stay present.
        """
        if listing is not None:
            self._present.update(a for a in listing.action_ids if a not in self._missing)
            self._complete = listing.complete
        waiters, self._waiters = self._waiters or [], None
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    def ready(self) -> Deferred[None]:
        """
        Fires once no listing is on its way.
        """
        waiter: Deferred[None] = Deferred()
        if self._waiters is None:
            waiter.callback(None)
        else:
            self._waiters.append(waiter)
        return waiter


def load(
    presence: Presence, listing: Coroutine[Any, Any, Listing], clock: IReactorTime, timeout: float
) -> Deferred[None]:
    """
    Feed C{presence} from a listing job, giving up after C{timeout} seconds
    (then, or when the store refuses, everything is asked per object).
    """
    presence.start_loading()
    started = clock.seconds()
    job = Deferred.fromCoroutine(listing)
    if timeout > 0:
        job.addTimeout(timeout, clock)

    def done(result: Listing) -> None:
        _log.info(
            "Listed the remote prefix",
            keys=len(result.action_ids),
            complete=result.complete,
            seconds=f"{clock.seconds() - started:.3f}",
        )
        presence.listed(result)

    def failed(failure: Failure) -> None:
        _log.warn("Could not list the remote prefix; asking per object", reason=failure.getErrorMessage())
        presence.listed(None)

    job.addCallbacks(done, failed)
    return job  # type: ignore[return-value]

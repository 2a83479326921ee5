# -*- test-case-name: tests.unit.test_assembly -*-
"""
The remote side of both modes, built in one place: the backend a plan
names, then the circuit breaker, then (when metrics are kept) the observer.
C{direct} (L{cacheprog.cli}) and the proxy (L{cacheprog.proxy.tap}) both
take their store from L{assemble}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from cacheprog.interfaces import BlobStore, RemoteStore, ThreadRunner

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorThreads, IReactorTime

    from cacheprog.remote.observing import RemoteObserver
    from cacheprog.settings import Remote


@dataclass(frozen=True)
class Stack:
    """
    A remote store ready for use.

    @ivar backend: the backend itself (its listing, its named objects).
    @ivar store: what the core and the proxy talk to: the backend behind
        its breaker and observer.
    """

    backend: RemoteStore
    store: RemoteStore

    @property
    def blobs(self) -> BlobStore | None:
        """
        The backend's manifests and packs, when it can hold them.  Served
        unwrapped: warm start has its own fallbacks, and a breaker tripped
        by objects must not stop the manifest that replaces them.
        """
        return cast("BlobStore", self.backend) if hasattr(self.backend, "get_range") else None


def thread_runner(reactor: IReactorThreads) -> ThreadRunner:
    """
    Runs blocking work in C{reactor}'s thread pool.
    """
    from twisted.internet.threads import deferToThreadPool

    def run_in_thread(f: Any, *args: object) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return run_in_thread


def assemble(
    remote: Remote,
    reactor: IReactorTime,
    run_in_thread: ThreadRunner,
    observer: RemoteObserver | None = None,
) -> Stack:
    """
    The backend of C{remote.plan}, wrapped in the breaker (unless it is
    disabled or switched off) and in C{observer}'s metrics.
    """
    from cacheprog.remote.factory import build

    backend = build(remote.plan, reactor, run_in_thread)
    store = backend
    if remote.enabled and remote.breaker_threshold > 0:
        from cacheprog.remote.breaker import BreakerStore

        store = BreakerStore(store, remote.breaker_threshold, remote.breaker_retry_after, reactor)
    if observer is not None:
        from cacheprog.remote.observing import ObservingStore

        store = ObservingStore(store, observer, reactor)
    return Stack(backend, store)

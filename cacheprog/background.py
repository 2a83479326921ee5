# -*- test-case-name: tests.unit.test_background -*-
"""
The core's work that outlives an answer: the uploads of puts (bounded in
number, held until close with C{--defer-uploads}) and the close hooks (the
warm-start writes); and the drain that waits for them up to a limit, then
cuts off what is left and counts it dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime

from cacheprog import compression
from cacheprog.concurrency import deadline, limited
from cacheprog.interfaces import RemoteStore, ThreadRunner, Unavailable, UploadObject
from cacheprog.local import Entry, LocalWriteError
from cacheprog.log import Logger
from cacheprog.presence import Presence
from cacheprog.spool import BIG
from cacheprog.stats import Stats

# The core's log lines keep the one name they always had.
_log = Logger("cache")


class BackgroundJobs:
    """
    Uploads and close hooks in flight, and their drain.

    @ivar closing: set once close began: uploads start at once, no longer held.
    @ivar cutting: set while close or a signal cuts background jobs off.
    @ivar jobs_done: close hooks that finished without trouble.
    """

    def __init__(
        self,
        remote: RemoteStore,
        clock: IReactorTime,
        run_in_thread: ThreadRunner,
        stats: Stats,
        presence: Presence,
        *,
        put_timeout: float,
        max_concurrent_puts: int,
        defer_uploads: bool,
    ) -> None:
        self._remote = remote
        self._clock = clock
        self._thread = run_in_thread
        self._stats = stats
        self._presence = presence
        self._put_timeout = put_timeout
        self._defer_uploads = defer_uploads
        # 0 ("no limit") still means a generous cap, so that a cold build
        # cannot hold hundreds of bodies in memory.
        self._put_slots = DeferredSemaphore(max_concurrent_puts or 64)
        self._uploads: dict[bytes, Deferred[None]] = {}
        self._held: dict[bytes, Entry] = {}
        self._jobs: set[Deferred[None]] = set()
        self._close_hooks: list[Callable[[], Awaitable[None]]] = []
        self.jobs_done = 0
        self.closing = False
        self.cutting = False

    @property
    def pending(self) -> int:
        """
        Jobs not finished yet (uploads and close hooks).
        """
        return len(self._uploads) + len(self._jobs)

    # uploads

    def upload(self, action_id: bytes, entry: Entry) -> None:
        """
        Upload C{entry} in the background (once per key), or hold it for
        close when uploads are deferred.
        """
        if action_id in self._uploads:
            return
        if self._defer_uploads and not self.closing:
            # The build keeps every core busy; uploads wait for close.
            self._held[action_id] = entry
            return
        d = Deferred.fromCoroutine(limited(self._put_slots, lambda: self._upload(action_id, entry)))
        self._uploads[action_id] = d

        def forget(_: object) -> None:
            del self._uploads[action_id]

        d.addBoth(forget)

    async def _upload(self, action_id: bytes, entry: Entry) -> None:
        try:
            await deadline(self._send(action_id, entry), self._put_timeout, self._clock)
            self._stats.uploads += 1
        except Unavailable:
            self._stats.uploads_skipped += 1
        except CancelledError:
            if not self.cutting:
                raise
            # Cut off at close: counted (and warned about) once, as dropped.
            _log.debug("Upload cut off at close", action_id=action_id.hex())
        except DeferredTimeout:
            self._stats.upload_faults += 1
            _log.error("Failed to put to remote storage", action_id=action_id.hex(), reason="put timeout")
        except Exception as e:  # noqa: BLE001 - uploads never reach go
            self._stats.upload_faults += 1
            _log.error("Failed to put to remote storage", action_id=action_id.hex(), reason=repr(e))

    async def _send(self, action_id: bytes, entry: Entry) -> None:
        absent = self._presence.absent(action_id)
        if entry.size >= BIG:
            obj = await self._thread(_encode_file, action_id, entry, absent)
        else:
            obj = _encode_file(action_id, entry, absent)
        await self._remote.put(obj)
        self._presence.note_present(action_id)
        self._stats.bytes_up += obj.stored_size

    # close

    def add_close_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        """
        Run C{hook} at close (L{start_close}), as a job like the uploads.
        """
        self._close_hooks.append(hook)

    def start_close(self) -> None:
        """
        Start the held uploads and the close hooks.
        """
        held, self._held = self._held, {}
        for action_id, entry in held.items():
            self.upload(action_id, entry)
        hooks, self._close_hooks = self._close_hooks, []
        for hook in hooks:
            self._track(hook)

    def _track(self, hook: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                await hook()
                self.jobs_done += 1
            except (CancelledError, DeferredTimeout):
                raise
            except Exception as e:  # noqa: BLE001 - background work never reaches go
                _log.error("Background job at close did not succeed", reason=repr(e))

        d = Deferred.fromCoroutine(run())
        if not d.called:
            self._jobs.add(d)
            d.addBoth(lambda _: self._jobs.discard(d))

    async def drain(self, limit: float) -> None:
        """
        Wait for the jobs, at most C{limit} seconds (0: no limit); cancel
        what is left and count it dropped.
        """
        pending = list(self._uploads.values()) + list(self._jobs)
        if not pending:
            return
        _log.info("Waiting for background uploads", count=len(pending))
        everything: Deferred[Any] = DeferredList(pending, consumeErrors=True)
        if limit > 0:
            waiter: Deferred[None] = Deferred()

            def wake(_: object = None) -> None:
                if not waiter.called:
                    waiter.callback(None)

            everything.addBoth(wake)
            timer = self._clock.callLater(limit, wake)
            await waiter
            if timer.active():
                timer.cancel()
        else:
            await everything
        self._cut([d for d in pending if not d.called])

    def cut_all(self) -> None:
        """
        Drop every job in flight now (a signal's grace is over).
        """
        self._cut([d for d in [*self._uploads.values(), *self._jobs] if not d.called])

    def _cut(self, left: list[Deferred[Any]]) -> None:
        if not left:
            return
        self._stats.uploads_dropped += len(left)
        _log.warn("background jobs did not finish in time", left=len(left))
        self.cutting = True
        for d in left:
            d.cancel()


def _encode_file(action_id: bytes, entry: Entry, absent: bool = False) -> UploadObject:
    with open(entry.path, "rb") as f:
        raw = f.read()
    if len(raw) != entry.size:
        raise LocalWriteError(f"local file {entry.path} changed size")
    return compression.prepare_upload(action_id, entry.output_id, raw, absent)

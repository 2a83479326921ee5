# -*- test-case-name: tests.unit.test_cache -*-
"""
The cache semantics, independent of how requests arrive.

- get: the local tier first; then the remote store, one fetch per key however
  many gets wait on it; every remote body is decoded, checked (SHA-256 ==
  OutputID) and written locally before it is answered.  A get that waits
  longer than the get timeout is answered "miss" while its download goes on
  into the local tier.  Nothing remote ever turns into an error for go.
- put: the body goes to the local tier (the only possible error), the answer
  goes back, and the upload runs in the background, bounded in number.
- close: wait for the uploads, up to the background-wait limit.

The uploads, close hooks and their drain are L{BackgroundJobs}'.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime

from cacheprog import compression
from cacheprog.background import BackgroundJobs
from cacheprog.concurrency import deadline, limited, semaphore
from cacheprog.flight import Flight
from cacheprog.interfaces import (
    LocalObserver,
    NotFound,
    RemoteObject,
    RemoteStore,
    RunJournal,
    ThreadRunner,
    Unavailable,
)
from cacheprog.local import DiskStore, Entry, LocalWriteError, now
from cacheprog.log import Logger
from cacheprog.presence import Presence
from cacheprog.settings import Transfers
from cacheprog.spool import BIG, Spool
from cacheprog.stats import Stats

_log = Logger("cache")
T = TypeVar("T")

#: The least time a download may go on after go was answered "miss" (seconds).
DOWNLOAD_DEADLINE = 60.0
#: Local meta files are written in batches this long after the answers.
FLUSH_DELAY = 0.05


def inline_runner(f: Callable[..., T], *args: object) -> Deferred[T]:
    """
    A L{ThreadRunner} that runs in the calling thread (tests; tiny jobs).
    """
    try:
        return Deferred.fromCoroutine(_value(f(*args)))
    except BaseException as e:  # noqa: BLE001 - handed to the Deferred
        return Deferred.fromCoroutine(_raise(e))


async def _value(v: T) -> T:
    return v


async def _raise(e: BaseException) -> Any:
    raise e


class Cache:
    """
    get / put / close over a local L{DiskStore} and a L{RemoteStore}.
    """

    def __init__(
        self,
        local: DiskStore,
        remote: RemoteStore,
        clock: IReactorTime,
        run_in_thread: ThreadRunner = inline_runner,
        settings: Transfers | None = None,
        stats: Stats | None = None,
        observer: LocalObserver | None = None,
        presence: Presence | None = None,
        journal: RunJournal | None = None,
    ) -> None:
        self._local = local
        self._remote = remote
        self._clock = clock
        self._thread = run_in_thread
        settings = settings if settings is not None else Transfers()
        self._settings = settings
        self.stats = stats if stats is not None else Stats()
        self._observer = observer
        self.presence = presence if presence is not None else Presence()
        self._flights: dict[bytes, Flight] = {}
        self._get_slots = semaphore(settings.max_concurrent_gets)
        self._background = BackgroundJobs(
            remote,
            clock,
            run_in_thread,
            self.stats,
            self.presence,
            put_timeout=settings.put_timeout,
            max_concurrent_puts=settings.max_concurrent_puts,
            defer_uploads=settings.defer_uploads,
        )
        if journal is not None:
            # The run manifest and its delta pack: drained or detached like uploads.
            self.add_close_hook(journal.finish)
        self._flush_call: Any = None
        self._saving: Deferred[None] | None = None
        self._journal = journal
        if journal is not None:
            journal.attach(self._save_soon)

    # get

    async def get(self, action_id: bytes) -> Entry | None:
        """
        The entry for C{action_id}, or None for a miss.  Never raises.
        """
        self.stats.gets += 1
        if self._journal is not None:
            self._journal.note(action_id)
        started = self._clock.seconds()
        entry = self._local.lookup(action_id)
        if self._observer is not None:
            self._observer.local_get(self._clock.seconds() - started, None if entry is None else entry.size)
        if entry is not None:
            # An entry the prefetch brought this run came from the remote store.
            if self._journal is not None and self._journal.fetched(action_id):
                self.stats.remote_hits += 1
            else:
                self.stats.local_hits += 1
        elif self._settings.remote_enabled:
            entry = await self._remote_get_unless_absent(action_id)
            if entry is not None:
                self.stats.remote_hits += 1
        if entry is None:
            self.stats.misses += 1
        elif self._journal is not None:
            self._journal.record(action_id, entry)
        return entry

    async def _remote_get_unless_absent(self, action_id: bytes) -> Entry | None:
        if self._journal is not None:
            # The prefetch may be bringing it (packs hold entries whose own
            # object may be missing): wait for that (briefly) first.
            prefetched = await self._journal.lookup(action_id)
            if prefetched is not None:
                return prefetched
        if self.presence.loading:
            # The listing is one or a few round trips, about what this get
            # would cost itself; its timeout bounds the wait.
            await self.presence.ready()
        if self.presence.absent(action_id):
            self.stats.instant_misses += 1
            return None
        return await self._remote_get(action_id)

    async def _remote_get(self, action_id: bytes) -> Entry | None:
        if self._background.cutting:
            return None  # a signal gave up on the remote store
        flight = self._flights.get(action_id)
        if flight is None:
            flight = self._flights[action_id] = Flight()
            flight.job = Deferred.fromCoroutine(self._fly(action_id, flight))
        # Time spent queued behind --max-concurrent-remote-gets does not count
        # against the get timeout: only the fetch itself does.
        await flight.wait_started()
        started = self._clock.seconds()
        waiter = flight.wait()
        if self._settings.get_timeout > 0:
            waiter.addTimeout(self._settings.get_timeout, self._clock)
        try:
            return await waiter
        except (CancelledError, DeferredTimeout):
            self.stats.remote_timeouts += 1
            _log.warn("Remote get timed out, answering miss", action_id=action_id.hex())
            return None
        finally:
            self.stats.remote_wait += self._clock.seconds() - started

    async def _fly(self, action_id: bytes, flight: Flight) -> None:
        result: Entry | None = None
        try:
            result = await limited(self._get_slots, lambda: self._bounded_fetch(action_id, flight))
        except Unavailable:
            pass
        except (CancelledError, DeferredTimeout):
            if not self._background.cutting:
                self.stats.remote_faults += 1
                _log.error("Failed to get from remote storage", action_id=action_id.hex(), reason="download deadline")
        except Exception as e:  # noqa: BLE001 - a remote problem is a miss
            self.stats.remote_faults += 1
            _log.error("Failed to get from remote storage", action_id=action_id.hex(), reason=repr(e))
        finally:
            del self._flights[action_id]
            flight.finish(result)

    async def _bounded_fetch(self, action_id: bytes, flight: Flight) -> Entry | None:
        # go is answered "miss" at the get timeout, but the download goes on
        # into the local tier; this deadline makes sure it ends.
        limit = max(DOWNLOAD_DEADLINE, 10 * self._settings.get_timeout) if self._settings.get_timeout > 0 else 0
        return await deadline(self._fetch(action_id, flight), limit, self._clock)

    async def _fetch(self, action_id: bytes, flight: Flight) -> Entry | None:
        flight.mark_started()
        try:
            obj = await self._remote.get(action_id)
        except NotFound:
            self.presence.note_missing(action_id)
            return None
        try:
            return await self._download(action_id, obj)
        except (compression.UnknownCompression, NotFound):
            return None
        except compression.CorruptObject as e:
            self.stats.corrupt += 1
            _log.warn("Remote object is corrupt, ignoring it", action_id=action_id.hex(), reason=str(e))
            return None

    async def _download(self, action_id: bytes, obj: RemoteObject) -> Entry:
        # Whatever happens (unknown algorithm, corrupt, cancelled), the body
        # is released here: an unread HTTP body must drop its connection.
        try:
            return await self._receive(action_id, obj)
        finally:
            await obj.body.aclose()

    async def _receive(self, action_id: bytes, obj: RemoteObject) -> Entry:
        decoder = compression.Decoder(obj.compression, obj.size)
        big = max(obj.size, obj.stored_size) >= BIG
        spool = Spool(self._local, in_memory=not big)
        try:
            async for chunk in obj.body:
                self.stats.bytes_down += len(chunk)
                if big:
                    await self._thread(_feed, decoder, spool, chunk)
                else:
                    _feed(decoder, spool, chunk)
            if spool.size != obj.size:
                raise compression.CorruptObject(f"{spool.size} bytes, the metadata says {obj.size}")
            if spool.digest != obj.output_id:
                raise compression.CorruptObject("SHA-256 of the body differs from its OutputID")
            if big:
                entry = await self._thread(spool.commit, action_id, obj.output_id, obj.mtime)
            else:
                entry = spool.commit(action_id, obj.output_id, obj.mtime)
            self._save_soon()
            return entry
        except BaseException:
            spool.discard()
            raise

    # put

    def new_spool(self, size: int) -> Spool:
        """
        Where a put's body goes while it arrives.
        """
        return Spool(self._local, in_memory=size < BIG)

    async def put(self, action_id: bytes, output_id: bytes, spool: Spool) -> Entry:
        """
        Commit a put whose body is in C{spool}; schedule its upload.

        @raise LocalWriteError: the only failure a put reports.
        """
        self.stats.puts += 1
        self.stats.put_bytes += spool.size
        when = now(self._clock.seconds)
        started = self._clock.seconds()
        try:
            if spool.size >= BIG:
                entry = await self._thread(spool.commit, action_id, output_id, when)
            else:
                entry = spool.commit(action_id, output_id, when)
        except LocalWriteError:
            if self._observer is not None:
                self._observer.local_put(self._clock.seconds() - started, None)
            raise
        if self._observer is not None:
            self._observer.local_put(self._clock.seconds() - started, entry.size)
        self._save_soon()
        if self._journal is not None:
            self._journal.record(action_id, entry)
        if spool.digest != output_id:
            # go's OutputID is the SHA-256 of the body; every reader would
            # reject this object, so it is not worth uploading.
            _log.warn("Put body does not match its OutputID; kept local only", action_id=action_id.hex())
        elif self._settings.remote_enabled and entry.size >= self._settings.min_remote_put_size:
            self._background.upload(action_id, entry)
        return entry

    def _save_soon(self) -> None:
        # Answers go out first; the local meta files follow in one batch,
        # written in the thread pool so file creation never holds up answers.
        if self._background.closing:
            # Entries landing after close began (a prefetch write, a download
            # that outlived its get): saved at once, no timer left behind.
            self._local.flush()
            return
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(FLUSH_DELAY, self._save_in_thread)

    def _save_in_thread(self) -> None:
        self._flush_call = None
        if self._saving is None:
            self._saving = self._thread(self._local.flush)
            self._saving.addBoth(self._saved)

    def _saved(self, result: object) -> None:
        self._saving = None
        if self._local.unsaved:
            self._save_soon()

    async def _save(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if self._saving is not None:
            await self._saving
        self._local.flush()

    # close

    def add_close_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        """
        Run C{hook} at close, as a background job like the uploads (a run
        manifest, a pack): waited for up to the background-wait limit, or
        finished by the detached uploader.
        """
        self._background.add_close_hook(hook)

    @property
    def pending(self) -> int:
        """
        Background jobs not finished yet (uploads and close hooks).
        """
        return self._background.pending

    @property
    def jobs_done(self) -> int:
        """
        Close hooks that finished without trouble.
        """
        return self._background.jobs_done

    async def close_local(self) -> None:
        """
        Save the local entries; start the deferred uploads and the close
        hooks.  After this only background work is left.
        """
        self._background.closing = True
        await self._save()
        self._background.start_close()

    async def drain(self, limit: float) -> None:
        """
        Wait for the background jobs, at most C{limit} seconds (0: no
        limit); cancel what is left and count it dropped.
        """
        await self._background.drain(limit)

    def abandon(self) -> None:
        """
        Stop waiting for the remote store (a signal's grace is over): remote
        gets in flight answer "miss", background uploads are dropped.
        """
        self._background.cutting = True
        for flight in list(self._flights.values()):
            flight.abandon()
        self._background.cut_all()

    async def close(self) -> None:
        """
        Save the local entries; wait for background uploads, at most
        C{max_background_wait} (0: no limit); cancel what is left.
        """
        await self.close_local()
        await self.drain(self._settings.max_background_wait)


def _feed(decoder: compression.Decoder, spool: Spool, chunk: bytes) -> None:
    # Straight into the spool, step by step: a small stored chunk may
    # decompress to hundreds of MiB (a bomb), which must never be joined.
    decoder.feed_into(chunk, spool.write)


__all__ = ["Cache", "inline_runner"]

# -*- test-case-name: tests.unit.test_warmstart -*-
"""
Warm start: fetch the previous run's entries ahead of go, and record this
run's for the next one.

- After the handshake: read the run's manifest, then the packs' wanted
  entries with a few wide ranged reads in parallel (L{pack.plan_spans}),
  streamed; each entry is decoded, checked (size, SHA-256 == OutputID) and
  written to the local tier in the thread pool, in go's last order.
- A get that misses locally asks L{WarmStart.lookup}: an entry on its way is
  waited for (single-flight with the prefetch), at most C{wait} seconds;
  then the get takes the per-object path.  A prefetch that made no
  progress for L{STALLED} waits is abandoned: no get waits for it again.
- At close (L{WarmStart.finish}, run with the background uploads): the
  entries go used, in order, become the next manifest
  (L{cacheprog.manifestwriter}).

A missing or corrupt manifest or pack is a warning and per-object gets,
never an error for go.  The manifest of a run whose read failed for another
reason (the store was down) is not overwritten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime

from cacheprog import compression
from cacheprog.interfaces import BlobStore, NotFound, ThreadRunner
from cacheprog.local import DiskStore, Entry, LocalWriteError
from cacheprog.log import Logger
from cacheprog.manifest import (
    CorruptManifest,
    Manifest,
    ManifestEntry,
    decode,
    manifest_name,
)
from cacheprog.manifestwriter import ManifestWriter
from cacheprog.pack import Span, SpanCutter, pack_name, plan_spans
from cacheprog.remote.base import close_body
from cacheprog.stats import Stats

_log = Logger("warmstart")

#: Ranged reads at once.
STREAMS = 4
#: Entries of one read being decoded and written at once.
WRITES_PER_STREAM = 4
#: The prefetch is given up after this many get waits without progress.
STALLED = 10


class _Slot:
    """
    One entry on its way: whoever waits for it, and what it became.
    """

    def __init__(self) -> None:
        self.done = False
        self.entry: Entry | None = None
        self.waiters: list[Deferred[Entry | None]] = []

    def wait(self) -> Deferred[Entry | None]:
        d: Deferred[Entry | None] = Deferred()
        if self.done:
            d.callback(self.entry)
        else:
            self.waiters.append(d)
        return d

    def finish(self, entry: Entry | None) -> None:
        if self.done:
            return
        self.done, self.entry = True, entry
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            if not d.called:
                d.callback(entry)


class WarmStart:
    """
    The manifest and pack side of one run.

    @param store: where manifests and packs are (the raw backend).
    @param local: the local tier, filled ahead of go.
    @param run_key: names this go command's manifest (L{cacheprog.runkey}).
    @param wait: the longest a get waits for the prefetch (seconds).
    @param write: whether to write the manifest and packs at close
        (False for read-only runs).
    """

    def __init__(
        self,
        store: BlobStore,
        local: DiskStore,
        clock: IReactorTime,
        run_in_thread: ThreadRunner,
        run_key: str,
        stats: Stats,
        wait: float = 1.0,
        write: bool = True,
    ) -> None:
        self._store = store
        self._local = local
        self._clock = clock
        self._thread = run_in_thread
        self._name = manifest_name(run_key)
        self._writer = ManifestWriter(store, run_in_thread, self._name, stats)
        self.stats = stats
        self._wait = wait
        self._write = write
        self._previous: Manifest | None = None
        self._loaded = _Slot()
        self._pending: dict[bytes, _Slot] = {}
        self._bad_packs: set[str] = set()
        self._bad_entries: set[bytes] = set()
        self._fetched: set[bytes] = set()
        self._writes: set[Deferred[Entry]] = set()
        self._stopped = False
        self._progress = clock.seconds()
        self._abandoned = False
        self._job: Deferred[None] | None = None
        self._stored: Callable[[], None] = lambda: None

    def attach(self, stored: Callable[[], None]) -> None:
        """
        Call C{stored} after each entry written to the local tier (the core
        saves the meta files in batches).
        """
        self._stored = stored

    @property
    def known(self) -> Mapping[bytes, ManifestEntry]:
        """
        The previous run's entries by ActionID (empty until the manifest is
        read): what this go command will probably ask for.
        """
        return self._previous.by_action() if self._previous is not None else {}

    # prefetch

    def start(self) -> None:
        """
        Read the manifest and start fetching its packs (in the background).
        """
        self._job = Deferred.fromCoroutine(self._prefetch())

    async def _prefetch(self) -> None:
        try:
            manifest = await self._read_manifest()
            if manifest is not None:
                wanted = await self._thread(self._absent, manifest.entries)
                for entry in wanted:
                    self._pending[entry.action_id] = _Slot()
                self._loaded.finish(None)
                await self._fetch(plan_spans(wanted))
        except CancelledError:
            pass
        except Exception as e:  # noqa: BLE001 - prefetch is best effort
            _log.warn("Prefetch failed", reason=repr(e))
        finally:
            self._loaded.finish(None)
            self._release_all()

    async def _read_manifest(self) -> Manifest | None:
        self._progress = self._clock.seconds()
        try:
            data = await self._store.get_blob(self._name)
            manifest = await self._thread(decode, data)
        except NotFound:
            self.stats.manifest = "none"
            return None
        except CorruptManifest as e:
            self.stats.manifest = "corrupt"
            _log.warn("Run manifest is unusable, ignoring it", manifest=self._name, reason=str(e))
            return None
        except CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the store is down: do not overwrite it later
            self.stats.manifest = "unreadable"
            self._write = False
            _log.warn("Could not read the run manifest", manifest=self._name, reason=repr(e))
            return None
        self.stats.manifest = "found"
        self._previous = manifest
        return manifest

    def _absent(self, entries: Iterable[ManifestEntry]) -> list[ManifestEntry]:
        # Runs in the thread pool: one meta-file open per entry.
        return [e for e in entries if e.ref is not None and self._local.lookup(e.action_id) is None]

    async def _fetch(self, spans: list[Span]) -> None:
        queue = list(reversed(spans))

        async def worker() -> None:
            while queue and not self._abandoned:
                span = queue.pop()
                if span.pack in self._bad_packs:
                    # Missing already: no more requests for it.
                    for entry in span.entries:
                        self._resolve(entry.action_id, None)
                    continue
                await self._fetch_span(span)

        workers = [Deferred.fromCoroutine(worker()) for _ in range(min(STREAMS, len(spans)))]
        try:
            for w in workers:
                await w
        finally:
            for w in workers:
                w.cancel()

    async def _fetch_span(self, span: Span) -> None:
        cutter = SpanCutter(span)
        writes = DeferredSemaphore(WRITES_PER_STREAM)
        jobs: list[Deferred[None]] = []
        try:
            self._progress = self._clock.seconds()
            body = await self._store.get_range(pack_name(span.pack), span.start, span.stop)
            try:
                async for chunk in body:
                    self._progress = self._clock.seconds()
                    for entry, stored in cutter.feed(chunk):
                        await writes.acquire()
                        job = Deferred.fromCoroutine(self._unpack(entry, stored))
                        job.addBoth(lambda _: writes.release())
                        jobs.append(_shielded(job))
            finally:
                await close_body(body)
        except NotFound:
            self._bad_packs.add(span.pack)
            _log.warn("Pack is missing, its entries take the per-object path", pack=span.pack)
        except CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a bad read costs its entries only
            _log.warn("Pack read failed, its entries take the per-object path", pack=span.pack, reason=repr(e))
        finally:
            for entry in cutter.missing():
                self._resolve(entry.action_id, None)
        for job in jobs:
            await job

    async def _unpack(self, entry: ManifestEntry, stored: bytes) -> None:
        result: Entry | None = None
        # Marked first: a get may see the entry locally before this returns.
        self._fetched.add(entry.action_id)
        job = self._thread(_write_entry, self._local, entry, stored)
        self._writes.add(job)
        try:
            result = await job
        except (compression.CorruptObject, compression.UnknownCompression) as e:
            self.stats.corrupt += 1
            self._bad_entries.add(entry.action_id)
            _log.warn("Pack entry is corrupt, ignoring it", action_id=entry.action_id.hex(), reason=str(e))
        except LocalWriteError as e:
            _log.warn("Could not write a prefetched entry", action_id=entry.action_id.hex(), reason=str(e))
        else:
            self.stats.prefetched += 1
            self.stats.bytes_down += entry.ref.length if entry.ref is not None else 0
            if not self._stopped:
                self._stored()
        finally:
            self._writes.discard(job)
            if result is None:
                self._fetched.discard(entry.action_id)
        self._resolve(entry.action_id, result)

    def _resolve(self, action_id: bytes, entry: Entry | None) -> None:
        slot = self._pending.pop(action_id, None)
        if slot is not None:
            slot.finish(entry)

    def _release_all(self) -> None:
        pending, self._pending = self._pending, {}
        for slot in pending.values():
            slot.finish(None)

    # gets

    async def lookup(self, action_id: bytes) -> Entry | None:
        """
        The entry if the prefetch has it or brings it within the wait;
        None: take the per-object path.
        """
        if self._abandoned:
            return None
        started = self._clock.seconds()
        if not self._loaded.done and not await self._bounded(self._loaded.wait(), self._wait):
            return None
        slot = self._pending.get(action_id)
        if slot is None:
            return None
        left = self._wait - (self._clock.seconds() - started)
        waiter = slot.wait()
        done = await self._bounded(waiter, left)
        if done:
            self.stats.prefetch_waits += 1
        return slot.entry if done else None

    async def _bounded(self, waiter: Deferred[Any], seconds: float) -> bool:
        if not waiter.called:
            waiter.addTimeout(max(seconds, 0.0), self._clock)
        try:
            await waiter
        except (CancelledError, DeferredTimeout):
            self._check_stalled()
            return False
        return True

    def _check_stalled(self) -> None:
        # One slow answer only sends its get down the per-object path; a
        # prefetch is given up after STALLED waits without a byte (a busy
        # machine answers late, and giving up costs every later get).
        idle = self._clock.seconds() - self._progress
        if idle >= STALLED * self._wait and not self._abandoned:
            self._abandoned = True
            _log.warn("Prefetch stalled, gets take the per-object path", idle=f"{idle:.3f}s")
            self.stop()

    def stop(self) -> None:
        """
        Stop prefetching (stall, close): waiting gets go per-object.
        """
        self._loaded.finish(None)
        if self._job is not None and not self._job.called:
            self._job.cancel()
        self._release_all()

    def fetched(self, action_id: bytes) -> bool:
        """
        Whether the prefetch wrote C{action_id}'s entry this run (a local
        hit on it is counted as a remote hit).
        """
        return action_id in self._fetched

    # recording

    def note(self, action_id: bytes) -> None:
        """
        go asked for C{action_id}: its place in the order.
        """
        self._writer.note(action_id)

    def record(self, action_id: bytes, entry: Entry) -> None:
        """
        C{action_id} was answered with C{entry} (a hit) or stored (a put).
        """
        self._writer.record(action_id, entry)

    async def finish(self) -> None:
        """
        The close hook: write the delta pack(s) and the manifest when they
        changed meaningfully.  Never raises.
        """
        known = self.stats.manifest in ("none", "found", "corrupt")
        self.stop()
        self._stopped = True
        if self._writes:
            # Entries still being written: their meta files are ours to save now.
            await DeferredList(list(self._writes), consumeErrors=True)
            await self._thread(self._local.flush)
        if not self._write or not known:
            # Without knowing what the store holds (the read never ended),
            # writing could replace a good manifest with a colder one.
            return
        try:
            await self._writer.save(self._previous, frozenset(self._bad_packs), frozenset(self._bad_entries))
        except CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the next run just starts colder
            _log.warn("Could not write the run manifest", manifest=self._name, reason=repr(e))


def _shielded(job: Deferred[None]) -> Deferred[None]:
    """
    A Deferred that fires with C{job} but whose cancellation leaves C{job}
    running: an entry being written in a thread is finished (and counted)
    even when the prefetch is stopped meanwhile.
    """
    view: Deferred[None] = Deferred()

    def forward(result: object) -> None:
        if not view.called:
            view.callback(None)

    job.addBoth(forward)
    return view


def _write_entry(local: DiskStore, entry: ManifestEntry, stored: bytes) -> Entry:
    """
    Decode and check one pack entry, then put it in the local tier (thread pool).
    """
    assert entry.ref is not None
    raw = compression.Decoder(entry.ref.compression, entry.size).feed(stored)
    digest = hashlib.sha256(raw).digest()
    if len(raw) != entry.size:
        raise compression.CorruptObject(f"{len(raw)} bytes, the manifest says {entry.size}")
    if digest != entry.output_id:
        raise compression.CorruptObject("SHA-256 of the body differs from its OutputID")
    try:
        path = local.write_data(raw, digest)
    except OSError as e:
        raise LocalWriteError(str(e)) from e
    result = Entry(output_id=entry.output_id, size=entry.size, time=entry.time, path=path)
    local.record(entry.action_id, result, digest)
    return result

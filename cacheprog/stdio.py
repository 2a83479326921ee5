# -*- test-case-name: tests.unit.test_stdio -*-
"""
The GOCACHEPROG conversation on stdin/stdout: a thin adapter between the
wire format (L{cacheprog.wire}) and the L{Cache}.

Every request gets exactly one answer.  Gets and puts run concurrently and
are answered as they finish.  C{close} (or stdin EOF, which is what
C{go list} gives us instead) waits for the requests in flight, answers, lets
uploads drain up to the limit, then closes stdout: go waits for that, not
for our exit.  Malformed input is reported on stderr; what was in flight
is still answered, and the run ends with exit status 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from cacheprog.cache import Cache
from cacheprog.interfaces import ThreadRunner
from cacheprog.local import LocalWriteError
from cacheprog.log import Logger
from cacheprog.prelude import Handover
from cacheprog.spool import BIG, Spool
from cacheprog.uploaders import Detacher
from cacheprog.wire import (
    BodyChunk,
    BodyEnd,
    Event,
    ProtocolError,
    Request,
    RequestDecoder,
    Response,
    encode_response,
)

_log = Logger("stdio")


class _Body:
    """
    The body of the put being received.  base64 arrives in small pieces;
    small bodies are decoded at the end in one go, big ones in 1 MiB batches
    in the thread pool, one batch after the other.
    """

    def __init__(self, request: Request, spool: Spool, run_in_thread: ThreadRunner) -> None:
        self.request = request
        self.spool = spool
        self._thread = run_in_thread
        self._big = request.body_size >= BIG
        self._parts: list[bytes] = []
        self._pending = 0
        self._chain: Deferred[None] | None = None

    def feed(self, text: bytes) -> None:
        self._parts.append(text)
        self._pending += len(text)
        if self._big and self._pending >= BIG:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        text = b"".join(self._parts)
        keep = 0 if final else len(text) % 4
        batch, rest = (text[: len(text) - keep], text[len(text) - keep :]) if keep else (text, b"")
        self._parts = [rest] if rest else []
        self._pending = len(rest)
        previous = self._chain

        async def job() -> None:
            if previous is not None:
                await previous
            await self._thread(self.spool.write_base64, batch)

        self._chain = Deferred.fromCoroutine(job())

    async def abandon(self) -> None:
        """
        The body will never end (EOF, a signal, bad input): drop what was
        spooled, after the batch being written in a thread.
        """
        try:
            if self._chain is not None:
                await self._chain
        except Exception:  # noqa: BLE001 - it is being thrown away
            pass
        self.spool.discard()

    async def finish(self) -> Spool:
        if self._big:
            self._flush(final=True)
            assert self._chain is not None
            await self._chain
        else:
            self.spool.write_base64(b"".join(self._parts))
        return self.spool


@implementer(IHalfCloseableProtocol)
class CacheProtocol(Protocol):
    """
    Speaks GOCACHEPROG over a transport (StandardIO in production,
    StringTransport in tests).

    @ivar done: fires with the exit status once stdout is closed.
    """

    def __init__(
        self,
        cache: Cache,
        run_in_thread: ThreadRunner,
        handshake: bytes = b"",
        after_close: Callable[[], Deferred[Any]] | None = None,
        handover: Handover | None = None,
        detacher: Detacher | None = None,
    ) -> None:
        """
        @param handshake: written on connection unless it was written already
            (the CLI writes it before importing Twisted).
        @param after_close: work to finish before stdout closes (metrics push).
        @param handover: where the prelude stopped (L{cacheprog.prelude}):
            its decoder goes on, its unanswered events are dispatched first.
        @param detacher: with C{--detached-drain}: at close, stdout closes
            first and the uploads finish after (L{cacheprog.uploaders}).
        """
        self._cache = cache
        self._thread = run_in_thread
        self._handshake = handshake
        self._after_close = after_close
        self._handover = handover
        self._decoder = RequestDecoder() if handover is None else handover.decoder
        self._body: _Body | None = None
        self._in_flight: set[Deferred[None]] = set()
        self._answered: set[int] = set() if handover is None else set(handover.answered)
        self._status = 0
        self._ending = False
        self._write_lost = False
        self._detacher = detacher
        self._detached = False
        self.done: Deferred[int] = Deferred()

    def _io(self) -> Any:
        # StandardIO is an ITransport and an IProducer; one name for both.
        assert self.transport is not None
        return self.transport

    def connectionMade(self) -> None:
        if self._handshake:
            self._io().write(self._handshake)
        handover, self._handover = self._handover, None
        if handover is not None:
            self._dispatch_all(handover.backlog)
            if handover.malformed and not self._ending:
                self._malformed(handover.malformed)

    def dataReceived(self, data: bytes) -> None:
        if self._ending:
            return
        try:
            events = self._decoder.feed(data)
        except ProtocolError as e:
            self._dispatch_all(e.events)
            if not self._ending:
                self._malformed(str(e))
            return
        self._dispatch_all(events)

    def _dispatch_all(self, events: list[Event]) -> None:
        for event in events:
            if self._ending:
                # Nothing after close is answered: go sent close last.
                _log.warn("Request after close ignored")
                return
            self._dispatch(event)

    def readConnectionLost(self) -> None:
        """
        stdin reached EOF: the go command is done with us (C{go list} never
        sends close).
        """
        if self._ending:
            return
        try:
            self._decoder.end()
        except ProtocolError as e:
            self._malformed(str(e))
            return
        _log.info("Client didn't send close command, simulating it")
        self._end(None)

    def writeConnectionLost(self) -> None:
        """
        Our stdout is gone: the go command is gone.  Finish quietly.
        """
        self._write_lost = True
        if not self._ending:
            self._end(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._detached:
            # Every answer is out: go may go on.  The uploads go on too.
            if self._detacher is not None:
                self._detacher.release_stdout()
            return
        if not self.done.called:
            self.done.callback(self._status)

    def shutdown(self) -> Deferred[None] | None:
        """
        A signal asked us to stop: answer what is in flight, drain uploads
        (bounded), close stdout.  Fires when that is done.
        """
        if self.done.called:
            return None
        if self._detached:
            _log.warn("Stopping on a signal; dropping the uploads left")
            self._cache.abandon()
        elif not self._ending:
            _log.info("Stopping on a signal; answering requests in flight first")
            self._end(None)
        waiter: Deferred[None] = Deferred()

        def over(status: int) -> int:
            waiter.callback(None)
            return status

        self.done.addCallback(over)
        return waiter

    # dispatch

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Request):
            if event.command == "put":
                spool = self._cache.new_spool(event.body_size)
                self._body = _Body(event, spool, self._thread)
                if event.body_size == 0:
                    self._finish_put()
            elif event.command == "get":
                self._track(self._get(event))
            elif event.command == "close":
                self._end(event)
            else:
                self._answer(Response(id=event.id, err=f"unsupported command {event.command!r}"))
        elif isinstance(event, BodyChunk):
            assert self._body is not None
            self._body.feed(event.data)
        elif isinstance(event, BodyEnd):
            self._finish_put()

    def _track(self, coro: Any) -> None:
        d: Deferred[None] = Deferred.fromCoroutine(coro)
        if not d.called:
            self._in_flight.add(d)
            d.addBoth(lambda _: self._in_flight.discard(d))

    def _answer(self, response: Response) -> None:
        if response.id in self._answered:
            _log.error("Refusing to answer a request twice", id=response.id)
            return
        self._answered.add(response.id)
        self._io().write(encode_response(response))

    async def _get(self, request: Request) -> None:
        try:
            entry = await self._cache.get(request.action_id)
        except Exception as e:  # noqa: BLE001 - a get never fails the build
            _log.error("Get did not succeed, answering miss", reason=repr(e))
            entry = None
        if entry is None:
            self._answer(Response(id=request.id, miss=True))
        else:
            self._answer(
                Response(
                    id=request.id,
                    output_id=entry.output_id,
                    size=entry.size,
                    time=entry.time,
                    disk_path=entry.path,
                )
            )

    def _finish_put(self) -> None:
        body, self._body = self._body, None
        assert body is not None
        self._track(self._put(body))

    async def _put(self, body: _Body) -> None:
        request = body.request
        try:
            spool = await body.finish()
            entry = await self._cache.put(request.action_id, request.output_id, spool)
        except LocalWriteError as e:
            _log.error("Failed to put to local storage", action_id=request.action_id.hex(), reason=str(e))
            self._answer(Response(id=request.id, err=f"failed to put object: {e}"))
        except Exception as e:  # noqa: BLE001 - answer, whatever happened
            _log.error("Put did not succeed", action_id=request.action_id.hex(), reason=repr(e))
            self._answer(Response(id=request.id, err=f"failed to put object: {e!r}"))
        else:
            self._answer(Response(id=request.id, disk_path=entry.path))

    # the end

    def _malformed(self, reason: str) -> None:
        _log.error("Malformed request from the go command, stopping", reason=reason)
        self._status = 1
        self._end(None)

    def _end(self, close: Request | None) -> None:
        self._ending = True
        self._io().pauseProducing()
        Deferred.fromCoroutine(self._finish(close))

    async def _finish(self, close: Request | None) -> None:
        body, self._body = self._body, None
        if body is not None:
            # A put cut off mid-body: its request is unanswerable, and its
            # spool file (MiBs for a big one) must not stay in the root.
            await body.abandon()
        while self._in_flight:
            pending = list(self._in_flight)
            for d in pending:
                try:
                    await d
                except Exception:  # noqa: BLE001 - each answered already
                    pass
        if close is not None:
            self._answer(Response(id=close.id))
        try:
            await self._cache.close_local()
            if self._may_detach() and self._detacher is not None:
                # go's stderr is the job's log and the uploader's own log
                # replaces it: say there what this run did, and what is left.
                uploads = self._cache.pending
                _log.info("cacheprog statistics", **dict(self._cache.stats.fields()), uploads_pending=uploads)
                _log.info("Answered close; finishing uploads in the background", pending=uploads)
                if self._detacher.detach(uploads):
                    await self._drain_detached(self._detacher)
                    return
            await self._cache.close()
            if self._after_close is not None:
                await self._after_close()
        except Exception as e:  # noqa: BLE001 - never fail the build at the end
            _log.warn("Clean-up at close did not succeed", reason=repr(e))
        self._io().loseConnection()
        if self._write_lost:
            # StandardIO reports the end only when it closes stdout itself;
            # stdout is already gone, so nothing would ever report it.
            self.connectionLost(None)

    def _may_detach(self) -> bool:
        # Only worth it with work left, and only while go still listens.
        return self._detacher is not None and self._cache.pending > 0 and not self._write_lost

    async def _drain_detached(self, detacher: Detacher) -> None:
        """
        Close stdout (go goes on at once), then finish the background jobs
        within the detached limit and record the result for C{cacheprog wait}.
        """
        cache, stats = self._cache, self._cache.stats
        pending, before = cache.pending, stats.uploads + cache.jobs_done
        self._detached = True
        self._io().loseConnection()
        try:
            await self._cache.drain(detacher.timeout)
            if self._after_close is not None:
                await self._after_close()
        except Exception as e:  # noqa: BLE001 - nobody is listening any more
            _log.warn("Detached clean-up did not succeed", reason=repr(e))
        finally:
            # Uploads of the whole run; dropped: what the drain did not finish.
            uploaded = stats.uploads + cache.jobs_done
            detacher.finish(uploaded, max(0, pending - (uploaded - before)))
            self._detached = False
            if not self.done.called:
                self.done.callback(self._status)

# -*- test-case-name: tests.unit.test_prelude -*-
"""
The prelude: the go command's local hits answered before Twisted exists.

go starts one cacheprog per go command and waits for each answer; importing
Twisted, treq and botocore costs about 100 ms (more than a warm C{go list}
takes in all).  So after the handshake the CLI runs a L{Prelude} on the main
thread: a blocking loop that reads stdin, decodes requests and answers every
get the local tier holds (and, without a remote store, every miss) with plain
C{os.write}.  At the first request it cannot answer alone (a put, a get the
remote store may hold, an unknown command) it stops and hands everything
over (L{Handover}): the decoder, the decoded events not answered yet, the IDs
answered and the counts.  Only then does the CLI import the reactor and
build the cache and the protocol, which carry on from there.

A run that ends (close, or stdin EOF for C{go list}) with every request
answered here never imports Twisted: close is answered, stdout closed, done.
Nothing is lost by that: a local hit writes nothing, so there is nothing to
save, upload or drain.  When a run manifest is kept (warm start) and the run
used an entry, close and EOF go to the protocol instead, and the hits
answered here are replayed into the manifest (L{Handover.replay_into}) in
go's order; a run that used none (C{go list}, C{go env}) has nothing to
record and still ends here.

Importing Twisted in a thread meanwhile was weighed and left out: the import
is pure Python and holds the GIL, so every answer of the main thread would
wait for the GIL (up to the 5 ms switch interval per system call); a run
that needs no remote store would pay the import's CPU for nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from cacheprog.local import DiskStore
from cacheprog.wire import Event, ProtocolError, Request, RequestDecoder, Response, encode_response

if TYPE_CHECKING:
    from cacheprog.interfaces import RunJournal
    from cacheprog.local import Entry
    from cacheprog.stats import Stats

#: How much of stdin one read takes.
READ_SIZE = 1 << 16


class Handover:
    """
    Where the prelude stopped.  (A plain class: a dataclass would compile
    its methods at import, on the path being made short.)

    @ivar finished: the run is over (close answered or stdin at EOF, every
        request answered; or stdout gone); stdout is closed.
    @ivar backlog: decoded events nobody has answered yet, in order.
    @ivar malformed: why the input cannot be decoded further, or C{""}.
    @ivar answered: the IDs answered.
    @ivar asked: the keys of the gets answered, in order.
    @ivar hits: (key, entry) of the local hits, in order.
    """

    def __init__(
        self,
        decoder: RequestDecoder,
        gets: int = 0,
        local_hits: int = 0,
        misses: int = 0,
        asked: list[bytes] | None = None,
    ) -> None:
        self.decoder = decoder
        self.finished = False
        self.backlog: list[Event] = []
        self.malformed = ""
        self.answered: set[int] = set()
        self.gets = gets
        self.local_hits = local_hits
        self.misses = misses
        self.asked: list[bytes] = asked if asked is not None else []
        self.hits: list[tuple[bytes, Entry]] = []

    def count_into(self, stats: Stats) -> None:
        """
        Add the prelude's counts to the run's statistics.
        """
        stats.gets += self.gets
        stats.local_hits += self.local_hits
        stats.misses += self.misses

    def replay_into(self, journal: RunJournal) -> None:
        """
        Tell the run manifest what the prelude answered, in go's order.
        """
        for action_id in self.asked:
            journal.note(action_id)
        for action_id, entry in self.hits:
            journal.record(action_id, entry)


class Prelude:
    """
    Answers what the local tier can answer, on blocking descriptors.
    """

    def __init__(
        self,
        local: DiskStore,
        read: Callable[[int], bytes],
        write: Callable[[bytes], None],
        close_output: Callable[[], None],
        remote_enabled: bool,
        finish_alone: bool = True,
    ) -> None:
        """
        @param read: C{read(n)} returns up to n bytes of stdin, C{b""} at EOF.
        @param write: writes all of its argument to the protocol output.
        @param close_output: closes the protocol output.
        @param remote_enabled: a local miss may still be a remote hit.
        @param finish_alone: whether close (and EOF) may end the run here;
            False leaves them to the protocol once an entry was used (work
            at close: a manifest of the entries used).
        """
        self._local = local
        self._read = read
        self._write = write
        self._close_output = close_output
        self._remote = remote_enabled
        self._alone = finish_alone
        self._state = Handover(decoder=RequestDecoder())

    def run(self) -> Handover:
        """
        Answer requests until one needs the reactor or the run ends.
        """
        state = self._state
        while True:
            try:
                data = self._read(READ_SIZE)
            except OSError:
                data = b""
            if not data:
                return self._at_eof()
            try:
                events = state.decoder.feed(data)
            except ProtocolError as e:
                state.backlog = list(e.events)
                state.malformed = str(e)
                return state
            for i, event in enumerate(events):
                try:
                    answered = self._answer(event)
                except OSError:
                    # stdout is gone, so is the go command: nothing left to answer.
                    return self._finish()
                if answered is None:
                    return self._finish()
                if not answered:
                    state.backlog = events[i:]
                    return state

    def _answer(self, event: Event) -> bool | None:
        """
        Answer C{event} if it can be answered here.

        @return: True when answered, False when it needs the reactor, None
            when it was the close request (answered; the run is over).
        """
        if not isinstance(event, Request):
            return False
        if event.command == "close":
            if not self._may_finish():
                return False
            self._send(Response(id=event.id))
            return None
        if event.command != "get":
            return False
        entry = self._local.lookup(event.action_id)
        state = self._state
        if entry is None:
            if self._remote:
                return False
            state.misses += 1
            response = Response(id=event.id, miss=True)
        else:
            state.local_hits += 1
            state.hits.append((event.action_id, entry))
            response = Response(
                id=event.id, output_id=entry.output_id, size=entry.size, time=entry.time, disk_path=entry.path
            )
        state.gets += 1
        state.asked.append(event.action_id)
        self._send(response)
        return True

    def _send(self, response: Response) -> None:
        self._state.answered.add(response.id)
        self._write(encode_response(response))

    def _at_eof(self) -> Handover:
        try:
            self._state.decoder.end()
        except ProtocolError:
            # The protocol sees the same EOF and reports the cut request.
            return self._state
        if not self._may_finish():
            # The protocol sees the same EOF and ends the run.
            return self._state
        return self._finish()

    def _may_finish(self) -> bool:
        """
        Whether close (or EOF) may end the run here: when nothing is left
        for the reactor, or the work at close (a run manifest, which records
        the entries used) has nothing to record.
        """
        return self._alone or not self._state.hits

    def _finish(self) -> Handover:
        self._state.finished = True
        try:
            self._close_output()
        except OSError:
            pass
        return self._state


def on_descriptors(
    local: DiskStore, input_fd: int, output_fd: int, remote_enabled: bool, finish_alone: bool = True
) -> Prelude:
    """
    A prelude reading C{input_fd} and answering on C{output_fd} (both blocking).
    """

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(output_fd, view) :]

    return Prelude(
        local,
        read=lambda n: os.read(input_fd, n),
        write=write,
        close_output=lambda: os.close(output_fd),
        remote_enabled=remote_enabled,
        finish_alone=finish_alone,
    )

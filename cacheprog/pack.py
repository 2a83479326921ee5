# -*- test-case-name: tests.unit.test_pack -*-
"""
Packs: many entries' stored bytes in one object, so a warm start needs a few
requests instead of one per entry.  Sans-I/O: building a pack, planning the
ranged reads that fetch a subset of entries, and cutting a streamed range
back into entries.

Format v1 (docs/warm-start.md): the object C{<prefix>/packs/v1/<id>} is the
8 bytes C{CPPACK\\x00\\x01} followed by each entry's stored bytes, encoded
on its own exactly like a per-object body (a zstd frame when smaller, raw
otherwise).  The pack has no index: the manifest records every entry's
offset, length and encoding.  C{<id>} is the hex SHA-256 of the whole
object, so a pack never changes once written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import attrs

from cacheprog.manifest import ManifestEntry, PackRef

MAGIC = b"CPPACK\x00\x01"
PACK_DIR = "packs/v1"
#: Bytes between two wanted entries read through rather than split into
#: two requests.
GAP = 256 << 10
#: Sizes of the ranged reads, in go's order: small first so go's first
#: gets are answered early, then wide.
SCHEDULE = (1 << 20, 2 << 20, 4 << 20, 8 << 20)
SPAN_LIMIT = 16 << 20


def pack_name(pack_id: str) -> str:
    """
    The name of a pack, relative to the store's prefix.
    """
    return f"{PACK_DIR}/{pack_id}"


class PackBuilder:
    """
    Appends encoded entries; L{finish} gives the bytes and the id.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = [MAGIC]
        self.size = len(MAGIC)
        self._placed: list[tuple[bytes, int, int, str]] = []

    def add(self, action_id: bytes, compression: str, stored: bytes) -> None:
        self._placed.append((action_id, self.size, len(stored), compression))
        self._parts.append(stored)
        self.size += len(stored)

    @property
    def count(self) -> int:
        return len(self._placed)

    def finish(self) -> tuple[str, bytes, dict[bytes, PackRef]]:
        """
        @return: the pack id, its bytes, and each entry's place in it.
        """
        data = b"".join(self._parts)
        pack_id = hashlib.sha256(data).hexdigest()
        refs = {a: PackRef(pack_id, offset, length, comp) for a, offset, length, comp in self._placed}
        return pack_id, data, refs


# reading


@attrs.frozen
class Span:
    """
    One ranged read: bytes C{[start, stop)} of pack C{pack}, carrying
    C{entries} (sorted by offset; each with a ref inside the span).
    """

    pack: str
    start: int
    stop: int
    entries: tuple[ManifestEntry, ...]

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_spans(
    wanted: Sequence[ManifestEntry],
    gap: int = GAP,
    schedule: Sequence[int] = SCHEDULE,
    limit: int = SPAN_LIMIT,
) -> list[Span]:
    """
    The ranged reads that fetch C{wanted} (in go's order, packed entries
    only), in the order to start them: by the first position in go's order
    each carries.  Neighbours closer than C{gap} share a read; a read grows
    no bigger than the next size of C{schedule} (then C{limit}), but always
    carries at least one entry.
    """
    order = {e.action_id: i for i, e in enumerate(wanted)}
    runs = _runs([e for e in wanted if e.ref is not None], gap)
    runs.sort(key=lambda run: min(order[e.action_id] for e in run))
    spans: list[Span] = []
    queue = list(reversed(runs))
    while queue:
        run = queue.pop()
        budget = schedule[len(spans)] if len(spans) < len(schedule) else limit
        head, tail = _cut(run, budget)
        spans.append(_span(head))
        if tail:
            queue.append(tail)
    return spans


def _runs(entries: list[ManifestEntry], gap: int) -> list[list[ManifestEntry]]:
    # Empty entries take no room: they sort before the entry at their offset.
    ordered = sorted(entries, key=lambda e: (_ref(e).pack, _ref(e).offset, _ref(e).length))
    runs: list[list[ManifestEntry]] = []
    for entry in ordered:
        ref = _ref(entry)
        if runs:
            last = _ref(runs[-1][-1])
            if last.pack == ref.pack and ref.offset - last.stop <= gap:
                runs[-1].append(entry)
                continue
        runs.append([entry])
    return runs


def _cut(run: list[ManifestEntry], budget: int) -> tuple[list[ManifestEntry], list[ManifestEntry]]:
    start = _ref(run[0]).offset
    for i, entry in enumerate(run[1:], 1):
        if _ref(entry).stop - start > budget:
            return run[:i], run[i:]
    return run, []


def _span(run: list[ManifestEntry]) -> Span:
    first = _ref(run[0])
    return Span(first.pack, first.offset, max(_ref(e).stop for e in run), tuple(run))


def _ref(entry: ManifestEntry) -> PackRef:
    assert entry.ref is not None
    return entry.ref


class SpanCutter:
    """
    Cuts the streamed bytes of one span back into its entries: feed chunks
    as they arrive, get each entry's stored bytes once complete.  Holds at
    most one entry's bytes (plus one chunk).
    """

    def __init__(self, span: Span) -> None:
        self._span = span
        self._position = span.start
        self._next = 0
        self._buffer = bytearray()
        self._last: tuple[PackRef, bytes] | None = None
        self._skipped: list[ManifestEntry] = []

    def feed(self, data: bytes) -> list[tuple[ManifestEntry, bytes]]:
        """
        @return: the entries completed by C{data}, with their stored bytes.
        """
        done: list[tuple[ManifestEntry, bytes]] = []
        view = memoryview(data)
        entries = self._span.entries
        while self._next < len(entries):
            ref = _ref(entries[self._next])
            if self._last is not None and ref == self._last[0]:
                # Two actions with one output share a place in the pack.
                done.append((entries[self._next], self._last[1]))
                self._next += 1
                continue
            if self._position > ref.offset and not self._buffer:
                # Overlaps what was read already (a manifest that lies).
                self._skipped.append(entries[self._next])
                self._next += 1
                continue
            if self._position < ref.offset:
                skip = min(len(view), ref.offset - self._position)
                view, self._position = view[skip:], self._position + skip
            else:
                take = min(len(view), ref.stop - self._position)
                self._buffer += view[:take]
                view, self._position = view[take:], self._position + take
            if self._position == ref.stop:
                self._last = (ref, bytes(self._buffer))
                done.append((entries[self._next], self._last[1]))
                self._buffer.clear()
                self._next += 1
            elif not view:
                break
        return done

    def missing(self) -> tuple[ManifestEntry, ...]:
        """
        The entries not completed (after the stream ended early).
        """
        return (*self._skipped, *self._span.entries[self._next :])


def live_bytes(entries: Iterable[ManifestEntry]) -> int:
    return sum(e.ref.length for e in entries if e.ref is not None)

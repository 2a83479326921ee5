# -*- test-case-name: tests.unit.test_manifestwriter -*-
"""
This run's side of the warm start: the entries go used, in its order, and
at close what they become for the next run: entries no pack of the manifest
holds go into a new delta pack; everything is repacked when most pack bytes
are dead or there are too many packs (L{cacheprog.manifest.plan_update});
then the manifest is written.
"""

from __future__ import annotations

from collections.abc import Mapping

from cacheprog import compression
from cacheprog.interfaces import BlobStore, ThreadRunner
from cacheprog.local import Entry
from cacheprog.manifest import (
    PACK_ENTRY_LIMIT,
    PACK_SIZE_LIMIT,
    Manifest,
    ManifestEntry,
    PackRef,
    encode,
    plan_update,
    time_ns,
)
from cacheprog.pack import PackBuilder, pack_name
from cacheprog.stats import Stats


class ManifestWriter:
    """
    Records go's order of entries; L{save} writes them for the next run.
    """

    def __init__(self, store: BlobStore, run_in_thread: ThreadRunner, name: str, stats: Stats) -> None:
        """
        @param name: the run manifest's name.
        """
        self._store = store
        self._thread = run_in_thread
        self._name = name
        self._stats = stats
        self._used: dict[bytes, Entry | None] = {}

    def note(self, action_id: bytes) -> None:
        """
        go asked for C{action_id}: its place in the order.
        """
        self._used.setdefault(action_id, None)

    def record(self, action_id: bytes, entry: Entry) -> None:
        """
        C{action_id} was answered with C{entry} (a hit) or stored (a put).
        """
        self._used[action_id] = entry

    async def save(self, previous: Manifest | None, bad_packs: frozenset[str], bad_entries: frozenset[bytes]) -> None:
        """
        Write the delta pack(s) and the manifest when they changed
        meaningfully against C{previous} (None: there was none), leaving
        out the packs and entries this run found bad.
        """
        used = [ManifestEntry(a, e.output_id, e.size, time_ns(e.time)) for a, e in self._used.items() if e is not None]
        if not used:
            return
        update = plan_update(previous, used, bad_packs, bad_entries)
        if not update.write:
            return
        refs: dict[bytes, PackRef] = {}
        sizes = dict(previous.packs) if previous is not None else {}
        paths = {a: e for a, e in self._used.items() if e is not None}
        fresh = [(a, paths[a]) for a in update.fresh]
        while fresh:
            pack_id, data, placed, fresh = await self._thread(_build_pack, fresh)
            if placed:
                await self._store.put_blob(pack_name(pack_id), data)
                sizes[pack_id] = len(data)
                refs.update(placed)
                self._stats.packs_written += 1
                self._stats.bytes_up += len(data)
        entries = tuple(_placed(e, refs) for e in update.entries)
        live = {e.ref.pack for e in entries if e.ref is not None}
        manifest = Manifest(packs={p: sizes[p] for p in sizes if p in live}, entries=entries)
        await self._store.put_blob(self._name, await self._thread(encode, manifest))
        self._stats.manifest_written = True


def _placed(entry: ManifestEntry, refs: Mapping[bytes, PackRef]) -> ManifestEntry:
    ref = refs.get(entry.action_id)
    if ref is None:
        return entry
    return ManifestEntry(entry.action_id, entry.output_id, entry.size, entry.time_ns, ref)


def _build_pack(
    items: list[tuple[bytes, Entry]],
) -> tuple[str, bytes, dict[bytes, PackRef], list[tuple[bytes, Entry]]]:
    """
    Encode entries from the local tier into one pack, up to its size limit
    (thread pool).  Entries whose file is gone or changed are left out.

    @return: the pack id, its bytes, the places, and the entries left for
        the next pack.
    """
    builder = PackBuilder()
    taken = 0
    for action_id, entry in items:
        if builder.count and builder.size >= PACK_SIZE_LIMIT:
            break
        taken += 1
        try:
            with open(entry.path, "rb") as f:
                raw = f.read(PACK_ENTRY_LIMIT + 1)
        except OSError:
            continue
        if len(raw) != entry.size:
            continue
        algorithm, stored = compression.encode(raw)
        builder.add(action_id, algorithm, stored)
    pack_id, data, placed = builder.finish()
    return pack_id, data, placed, items[taken:]

# -*- test-case-name: tests.unit.test_manifest -*-
"""
Run manifests: which entries one go command used, in the order it asked,
and where each entry's body sits in a pack.  Sans-I/O: bytes in, bytes out,
plus the pure rules that decide what the next run writes (delta pack,
compaction, "changed meaningfully").

Format v1 (docs/warm-start.md is the full description): the object at
C{<prefix>/manifests/v1/<run key>} is one zstd frame holding UTF-8 JSON::

    {"format": "cacheprog-manifest", "version": 1,
     "packs": [{"id": "<64 hex>", "size": <bytes>}, ...],
     "entries": [["<action hex>", "<output hex>", size, time_ns,
                  pack_index, offset, stored_length, "zstd" | ""], ...]}

A C{pack_index} of -1 means "not in a pack" (the per-object path only).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

import attrs

FORMAT = "cacheprog-manifest"
VERSION = 1
#: Where manifests live, under the store's prefix.
MANIFEST_DIR = "manifests/v1"
#: Bodies stored bigger than this are left to the per-object path.
PACK_ENTRY_LIMIT = 16 << 20
#: A new pack is started when the current one would grow past this.
PACK_SIZE_LIMIT = 64 << 20
#: Compact when more than this share of the referenced pack bytes is dead...
DEAD_SHARE = 0.5
#: ... or when the manifest would reference more packs than this.
MAX_PACKS = 8
#: Rewrite a manifest whose entries changed by more than this share.
CHANGE_SHARE = 0.1
#: A manifest bigger than this (decompressed) is refused as corrupt.
MANIFEST_LIMIT = 64 << 20


class CorruptManifest(ValueError):
    """
    The manifest's bytes are not a manifest this version understands.
    """


@attrs.frozen
class PackRef:
    """
    Where one entry's stored bytes are: C{pack} (its id, 64 hex), the byte
    C{offset} in it, C{length} stored bytes, encoded with C{compression}.
    """

    pack: str
    offset: int
    length: int
    compression: str

    @property
    def stop(self) -> int:
        return self.offset + self.length


@attrs.frozen
class ManifestEntry:
    """
    One entry go used: its ids, raw size, time, and its place in a pack
    (None: per-object only).
    """

    action_id: bytes
    output_id: bytes
    size: int
    time_ns: int
    ref: PackRef | None = None

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_ns / 1e9, tz=timezone.utc)


@attrs.frozen
class Manifest:
    """
    A decoded manifest: the packs it references (id → size) and its entries
    in go's order.
    """

    packs: dict[str, int]
    entries: tuple[ManifestEntry, ...]

    def by_action(self) -> dict[bytes, ManifestEntry]:
        return {e.action_id: e for e in self.entries}


def time_ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000) * 1000


# encoding


def encode(manifest: Manifest) -> bytes:
    """
    The stored bytes of C{manifest} (a zstd frame of JSON).
    """
    from cacheprog.compression import zstd_module

    packs = list(manifest.packs)
    index = {p: i for i, p in enumerate(packs)}
    rows = [_row(e, index) for e in manifest.entries]
    document = {
        "format": FORMAT,
        "version": VERSION,
        "packs": [{"id": p, "size": manifest.packs[p]} for p in packs],
        "entries": rows,
    }
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    data: bytes = zstd_module().ZstdCompressor(level=3, write_checksum=True, write_content_size=True).compress(text)
    return data


def _row(entry: ManifestEntry, index: dict[str, int]) -> list[object]:
    ref = entry.ref
    where: list[object] = [-1, 0, 0, ""] if ref is None else [index[ref.pack], ref.offset, ref.length, ref.compression]
    return [entry.action_id.hex(), entry.output_id.hex(), entry.size, entry.time_ns, *where]


def decode(data: bytes) -> Manifest:
    """
    Parse stored manifest bytes.

    @raise CorruptManifest: for anything but a well-formed v1 manifest.
    """
    from cacheprog.compression import zstd_module

    try:
        text = zstd_module().ZstdDecompressor().decompress(data, max_output_size=MANIFEST_LIMIT)
        document = json.loads(text)
    except Exception as e:  # noqa: BLE001 - zstd and JSON errors alike
        raise CorruptManifest(f"not a manifest: {e}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CorruptManifest("not a cacheprog manifest")
    if document.get("version") != VERSION:
        raise CorruptManifest(f"manifest version {document.get('version')!r} is not {VERSION}")
    try:
        packs = [(_pack_id(p["id"]), _natural(p["size"])) for p in document["packs"]]
        ids = [p for p, _ in packs]
        entries = tuple(_entry(row, ids, dict(packs)) for row in document["entries"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CorruptManifest(f"malformed manifest: {e}") from None
    return Manifest(packs=dict(packs), entries=entries)


def _entry(row: Sequence[object], ids: list[str], sizes: dict[str, int]) -> ManifestEntry:
    action, output, size, when, pack, offset, length, compression = row
    ref = None
    if _integer(pack) >= 0:
        pack_id = ids[_integer(pack)]
        ref = PackRef(pack_id, _natural(offset), _natural(length), str(compression))
        if ref.stop > sizes[pack_id]:
            raise ValueError(f"entry past the end of pack {pack_id}")
    return ManifestEntry(_id(action), _id(output), _natural(size), _integer(when), ref)


def _id(value: object) -> bytes:
    raw = bytes.fromhex(str(value))
    if len(raw) != 32:
        raise ValueError(f"id of {len(raw)} bytes")
    return raw


def _pack_id(value: object) -> str:
    text = str(value)
    _id(text)
    return text.lower()


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _natural(value: object) -> int:
    number = _integer(value)
    if number < 0:
        raise ValueError(f"{number} is negative")
    return number


def manifest_name(run_key: str) -> str:
    """
    The name of a run's manifest, relative to the store's prefix.
    """
    return f"{MANIFEST_DIR}/{run_key}"


# what the next run writes


@attrs.frozen
class Update:
    """
    What to write at close: the entries in go's order, each either keeping
    its pack reference (C{ref} set) or waiting for the new pack(s)
    (C{fresh}: to be packed, in order).  C{write} is False when the
    manifest did not change meaningfully.
    """

    entries: tuple[ManifestEntry, ...]
    fresh: tuple[bytes, ...]
    write: bool
    compact: bool


def plan_update(
    previous: Manifest | None,
    used: Iterable[ManifestEntry],
    bad_packs: frozenset[str] = frozenset(),
    bad_entries: frozenset[bytes] = frozenset(),
) -> Update:
    """
    Decide the next manifest from the previous one and this run's entries
    (no refs yet).  An entry keeps its previous pack place when the same
    output sits in a pack that is not known bad; every other entry of at
    most L{PACK_ENTRY_LIMIT} raw bytes is fresh.  Compaction (everything
    fresh) when most referenced pack bytes are dead or there are too many
    packs.
    """
    placed = _placements(previous, bad_packs, bad_entries)
    entries = [attrs.evolve(e, ref=placed.get(e.output_id)) for e in _unique(used)]
    fresh = [e.action_id for e in entries if e.ref is None and e.size <= PACK_ENTRY_LIMIT]
    compact = previous is not None and _needs_compaction(previous.packs, entries, bool(fresh))
    if compact:
        entries = [attrs.evolve(e, ref=None) for e in entries]
        fresh = [e.action_id for e in entries if e.size <= PACK_ENTRY_LIMIT]
    write = previous is None or bool(fresh) or compact or _changed(previous, entries)
    return Update(tuple(entries), tuple(fresh), write, compact)


def _unique(used: Iterable[ManifestEntry]) -> list[ManifestEntry]:
    seen: dict[bytes, ManifestEntry] = {}
    for entry in used:
        seen.setdefault(entry.action_id, entry)
    return list(seen.values())


def _placements(previous: Manifest | None, bad_packs: frozenset[str], bad: frozenset[bytes]) -> dict[bytes, PackRef]:
    if previous is None:
        return {}
    placed: dict[bytes, PackRef] = {}
    for e in previous.entries:
        if e.ref is not None and e.ref.pack not in bad_packs and e.action_id not in bad:
            placed.setdefault(e.output_id, e.ref)
    return placed


def _needs_compaction(packs: dict[str, int], entries: list[ManifestEntry], adds_pack: bool) -> bool:
    live: dict[str, int] = {}
    for e in entries:
        if e.ref is not None:
            live[e.ref.pack] = live.get(e.ref.pack, 0) + e.ref.length
    if len(live) + adds_pack > MAX_PACKS:
        return True
    total = sum(packs[p] for p in live)
    return total > 0 and total - sum(live.values()) > DEAD_SHARE * total


def _changed(previous: Manifest, entries: list[ManifestEntry]) -> bool:
    before = {e.action_id: e.output_id for e in previous.entries}
    after = {e.action_id: e.output_id for e in entries}
    differ = len(before.keys() ^ after.keys()) + sum(1 for a, o in after.items() if before.get(a, o) != o)
    return differ > CHANGE_SHARE * max(len(before), len(after), 1)

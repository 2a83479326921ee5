"""
Tests for L{cacheprog.manifest}: the manifest format and the rules that
decide what a run writes at close.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from cacheprog import manifest as m
from cacheprog.compression import zstd_module
from cacheprog.manifest import CorruptManifest, Manifest, ManifestEntry, PackRef, plan_update

from .helpers import action, output_of

PACK_A = "a" * 64
PACK_B = "b" * 64


def entry(n: int, ref: PackRef | None = None, size: int = 10) -> ManifestEntry:
    return ManifestEntry(action(n), output_of(b"%d" % n), size, 1_700_000_000_123_456_000, ref)


def compressed(document: object) -> bytes:
    data: bytes = zstd_module().ZstdCompressor().compress(json.dumps(document).encode())
    return data


class FormatTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        A manifest decodes to what was encoded: packs, entries in order,
        refs, per-object-only entries and times to the microsecond.
        """
        original = Manifest(
            packs={PACK_A: 100, PACK_B: 50},
            entries=(
                entry(2, PackRef(PACK_B, 8, 10, "zstd")),
                entry(1, None),
                entry(3, PackRef(PACK_A, 8, 92, "")),
            ),
        )
        decoded = m.decode(m.encode(original))
        self.assertEqual(decoded, original)
        self.assertEqual(decoded.entries[0].time.timestamp(), 1_700_000_000.123456)

    def test_garbage(self) -> None:
        """
        Bytes that are not a zstd frame of a v1 manifest are refused.
        """
        for data in (b"", b"not zstd", compressed([1, 2]), compressed({"format": "other"})):
            self.assertRaises(CorruptManifest, m.decode, data)

    def test_other_version(self) -> None:
        """
        A newer format version is refused (a miss, never a misread).
        """
        error = self.assertRaises(
            CorruptManifest, m.decode, compressed({"format": m.FORMAT, "version": 2, "packs": [], "entries": []})
        )
        self.assertIn("version 2", str(error))

    def test_malformed_entries(self) -> None:
        """
        Entries pointing past their pack, at a pack that is not listed,
        with short ids or negative sizes are refused.
        """
        good = [action(1).hex(), output_of(b"1").hex(), 1, 0, 0, 8, 2, ""]
        rows = [
            [*good[:5], 99, 2, ""],
            [*good[:4], 1, 8, 2, ""],
            ["ab", *good[1:]],
            [*good[:2], -1, *good[3:]],
            good[:7],
        ]
        for row in rows:
            document = {"format": m.FORMAT, "version": 1, "packs": [{"id": PACK_A, "size": 10}], "entries": [row]}
            self.assertRaises(CorruptManifest, m.decode, compressed(document))
        document = {"format": m.FORMAT, "version": 1, "packs": [{"id": PACK_A, "size": 10}], "entries": [good]}
        self.assertEqual(m.decode(compressed(document)).entries[0].ref, PackRef(PACK_A, 8, 2, ""))

    def test_name(self) -> None:
        """
        Manifests live under manifests/v1/ (not a 64-hex key: the Go
        reference never reads it).
        """
        self.assertEqual(m.manifest_name("ab" * 32), "manifests/v1/" + "ab" * 32)


class UpdateTests(SynchronousTestCase):
    def test_first_run(self) -> None:
        """
        Without a previous manifest, everything is fresh, in go's order,
        duplicates dropped, and the manifest is written.
        """
        update = plan_update(None, [entry(3), entry(1), entry(3)])
        self.assertEqual(update.fresh, (action(3), action(1)))
        self.assertTrue(update.write)
        self.assertFalse(update.compact)

    def test_same_again(self) -> None:
        """
        The same entries again (in any order): nothing to write.
        """
        previous = Manifest({PACK_A: 28}, (entry(1, PackRef(PACK_A, 8, 10, "")), entry(2, PackRef(PACK_A, 18, 10, ""))))
        update = plan_update(previous, [entry(2), entry(1)])
        self.assertFalse(update.write)
        self.assertEqual(update.fresh, ())
        self.assertEqual([e.ref for e in update.entries], [PackRef(PACK_A, 18, 10, ""), PackRef(PACK_A, 8, 10, "")])

    def test_delta(self) -> None:
        """
        A new entry is the only fresh one (a delta pack); the others keep
        their place.
        """
        previous = Manifest({PACK_A: 28}, (entry(1, PackRef(PACK_A, 8, 10, "")), entry(2, PackRef(PACK_A, 18, 10, ""))))
        update = plan_update(previous, [entry(1), entry(2), entry(3)])
        self.assertTrue(update.write)
        self.assertEqual(update.fresh, (action(3),))
        self.assertIsNotNone(update.entries[0].ref)

    def test_few_dropped(self) -> None:
        """
        Losing one entry in twenty is not a meaningful change; losing a
        third is.
        """
        refs = [entry(n, PackRef(PACK_A, 8 + 10 * n, 10, "")) for n in range(20)]
        previous = Manifest({PACK_A: 8 + 10 * 20}, tuple(refs))
        self.assertFalse(plan_update(previous, [entry(n) for n in range(19)]).write)
        later = plan_update(previous, [entry(n) for n in range(12)])
        self.assertTrue(later.write)
        self.assertFalse(later.compact)

    def test_changed_output(self) -> None:
        """
        An action whose output changed is fresh: the old place holds
        another body.
        """
        previous = Manifest({PACK_A: 18}, (entry(1, PackRef(PACK_A, 8, 10, "")),))
        changed = ManifestEntry(action(1), output_of(b"other"), 5, 0)
        self.assertEqual(plan_update(previous, [changed]).fresh, (action(1),))

    def test_compaction_on_dead_bytes(self) -> None:
        """
        When more than half the referenced pack bytes are dead, everything
        is repacked.
        """
        refs = [entry(n, PackRef(PACK_A, 8 + 10 * n, 10, "")) for n in range(10)]
        previous = Manifest({PACK_A: 108}, tuple(refs))
        update = plan_update(previous, [entry(n) for n in range(4)])
        self.assertTrue(update.compact)
        self.assertEqual(update.fresh, tuple(action(n) for n in range(4)))
        self.assertTrue(all(e.ref is None for e in update.entries))
        self.assertFalse(plan_update(previous, [entry(n) for n in range(6)]).compact)

    def test_compaction_on_pack_count(self) -> None:
        """
        A delta that would make the manifest reference more than MAX_PACKS
        packs compacts instead.
        """
        packs = {f"{n:064x}": 18 for n in range(m.MAX_PACKS)}
        refs = tuple(entry(n, PackRef(f"{n:064x}", 8, 10, "")) for n in range(m.MAX_PACKS))
        previous = Manifest(packs, refs)
        self.assertFalse(plan_update(previous, [entry(n) for n in range(m.MAX_PACKS)]).compact)
        update = plan_update(previous, [entry(n) for n in range(m.MAX_PACKS + 1)])
        self.assertTrue(update.compact)
        self.assertEqual(len(update.fresh), m.MAX_PACKS + 1)

    def test_bad_pack_and_entry(self) -> None:
        """
        Entries of a pack that was missing, and entries that failed their
        check, are packed again.
        """
        previous = Manifest(
            {PACK_A: 48, PACK_B: 18},
            (*(entry(n, PackRef(PACK_A, 8 + 10 * n, 10, "")) for n in range(4)), entry(9, PackRef(PACK_B, 8, 10, ""))),
        )
        used = [entry(n) for n in (0, 1, 2, 3, 9)]
        update = plan_update(previous, used, frozenset({PACK_B}), frozenset({action(1)}))
        self.assertEqual(update.fresh, (action(1), action(9)))
        self.assertTrue(update.write)
        self.assertFalse(update.compact)

    def test_huge_entries_stay_per_object(self) -> None:
        """
        Entries above the pack entry limit are listed but never packed.
        """
        update = plan_update(None, [entry(1, size=m.PACK_ENTRY_LIMIT + 1), entry(2)])
        self.assertEqual(update.fresh, (action(2),))
        self.assertEqual(len(update.entries), 2)

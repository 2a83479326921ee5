"""
Tests for L{cacheprog.pack}: building packs, planning ranged reads and
cutting a streamed range back into entries.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from cacheprog import compression
from cacheprog.manifest import ManifestEntry, PackRef
from cacheprog.pack import MAGIC, PackBuilder, Span, SpanCutter, pack_name, plan_spans

from .helpers import action, output_of

P = "c" * 64


def placed(n: int, offset: int, length: int, pack: str = P) -> ManifestEntry:
    return ManifestEntry(action(n), output_of(b"%d" % n), length, 0, PackRef(pack, offset, length, ""))


class BuilderTests(SynchronousTestCase):
    def test_build_and_cut(self) -> None:
        """
        Entries added to a pack come back byte for byte from any chunking
        of any range covering them; the pack id is its SHA-256.
        """
        bodies = [b"x" * 3000, b"hello", b"", b"y" * 70000]
        builder = PackBuilder()
        for n, body in enumerate(bodies):
            builder.add(action(n), *compression.encode(body))
        pack_id, data, refs = builder.finish()
        self.assertTrue(data.startswith(MAGIC))
        self.assertEqual(pack_name(pack_id), "packs/v1/" + pack_id)
        entries = tuple(
            ManifestEntry(action(n), output_of(b), len(b), 0, refs[action(n)]) for n, b in enumerate(bodies)
        )
        span = Span(pack_id, 0, len(data), entries)
        for size in (1, 7, 4096, len(data)):
            cutter = SpanCutter(span)
            got = []
            for i in range(0, len(data), size):
                got += cutter.feed(data[i : i + size])
            decoded = [compression.Decoder(e.ref.compression, e.size).feed(s) for e, s in got if e.ref]
            self.assertEqual(decoded, bodies)
            self.assertEqual(cutter.missing(), ())

    def test_short_stream(self) -> None:
        """
        When the stream ends early, the entries not completed are reported.
        """
        span = Span(P, 8, 30, (placed(1, 8, 10), placed(2, 20, 10)))
        cutter = SpanCutter(span)
        self.assertEqual([e.action_id for e, _ in cutter.feed(b"a" * 15)], [action(1)])
        self.assertEqual([e.action_id for e in cutter.missing()], [action(2)])

    def test_shared_place(self) -> None:
        """
        Two actions with one output (one place in the pack) both come back.
        """
        one = placed(1, 8, 4)
        two = ManifestEntry(action(2), one.output_id, 4, 0, one.ref)
        got = SpanCutter(Span(P, 8, 12, (one, two))).feed(b"abcd")
        self.assertEqual([(e.action_id, s) for e, s in got], [(action(1), b"abcd"), (action(2), b"abcd")])

    def test_empty_entries(self) -> None:
        """
        Empty entries (no room in the pack) at the offset of the next entry
        come back empty, wherever go's order put them.
        """
        empty = placed(1, 8, 0)
        full = placed(2, 8, 4)
        after = placed(3, 12, 4)
        (span,) = plan_spans([full, empty, after])
        got = SpanCutter(span).feed(b"abcdefgh")
        expected = [(action(1), b""), (action(2), b"abcd"), (action(3), b"efgh")]
        self.assertEqual(sorted((e.action_id, s) for e, s in got), sorted(expected))

    def test_overlap_is_missing(self) -> None:
        """
        An entry overlapping one read already is reported missing, never
        handed out with wrong bytes.
        """
        cutter = SpanCutter(Span(P, 8, 20, (placed(1, 8, 10), placed(2, 10, 10))))
        self.assertEqual([e.action_id for e, _ in cutter.feed(b"x" * 12)], [action(1)])
        self.assertEqual([e.action_id for e in cutter.missing()], [action(2)])

    def test_gaps_skipped(self) -> None:
        """
        Bytes between wanted entries are read through and dropped.
        """
        got = SpanCutter(Span(P, 0, 20, (placed(1, 2, 3), placed(2, 15, 5)))).feed(bytes(range(20)))
        self.assertEqual([s for _, s in got], [bytes([2, 3, 4]), bytes(range(15, 20))])


class PlanTests(SynchronousTestCase):
    def test_neighbours_share_a_read(self) -> None:
        """
        Entries closer than the gap share one read; farther ones do not;
        other packs are other reads.
        """
        wanted = [placed(1, 8, 10), placed(2, 20, 10), placed(3, 1000, 10), placed(4, 8, 10, "d" * 64)]
        spans = plan_spans(wanted, gap=100, schedule=(), limit=1 << 20)
        self.assertEqual([(s.pack[0], s.start, s.stop) for s in spans], [("c", 8, 30), ("c", 1000, 1010), ("d", 8, 18)])

    def test_go_order_and_growing_sizes(self) -> None:
        """
        Reads start in go's order of their first entry, small first then
        as wide as the schedule allows; an entry bigger than its budget
        still gets a read.
        """
        old = [placed(n, 8 + 100 * n, 100) for n in range(10)]
        delta = [placed(n, 8 + 100 * (n - 10), 100, "d" * 64) for n in range(10, 20)]
        wanted = delta + old
        spans = plan_spans(wanted, gap=0, schedule=(150, 250), limit=1000)
        self.assertEqual(spans[0].entries[0].action_id, action(10))
        self.assertEqual([len(s.entries) for s in spans], [1, 2, 7, 10])
        self.assertEqual(spans[3].pack, P)
        covered = [e.action_id for s in spans for e in s.entries]
        self.assertEqual(sorted(covered), sorted(e.action_id for e in wanted))
        self.assertTrue(all(s.size <= 1000 for s in spans))

    def test_per_object_entries_left_out(self) -> None:
        """
        Entries without a pack place are not planned.
        """
        wanted = [ManifestEntry(action(1), output_of(b"1"), 1, 0, None), placed(2, 8, 1)]
        self.assertEqual([len(s.entries) for s in plan_spans(wanted)], [1])

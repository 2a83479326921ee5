"""
Tests for L{cacheprog.compression}.
"""

from __future__ import annotations

import os

import zstandard
from twisted.trial.unittest import SynchronousTestCase

from cacheprog import compression


class CodecTests(SynchronousTestCase):
    def test_round_trip_chunked(self) -> None:
        """
        zstd output decodes back in any chunking.
        """
        body = b"go build cache " * 10000
        algorithm, data = compression.encode(body)
        self.assertEqual(algorithm, "zstd")
        decoder = compression.Decoder(algorithm, len(body))
        out = b"".join(decoder.feed(data[i : i + 7]) for i in range(0, len(data), 7))
        self.assertEqual(out, body)

    def test_reference_frames(self) -> None:
        """
        Streaming frames without a content size (what the Go reference writes) decode.
        """
        body = b"abc" * 5000
        data = zstandard.ZstdCompressor().compressobj().compress(body)
        data += zstandard.ZstdCompressor().compressobj().flush()
        frame = zstandard.ZstdCompressor(write_content_size=False).compress(body)
        self.assertEqual(compression.Decoder("zstd", len(body)).feed(frame), body)

    def test_raw_when_not_smaller(self) -> None:
        """
        Random or empty bodies are stored raw.
        """
        body = os.urandom(1000)
        self.assertEqual(compression.encode(body), ("", body))
        self.assertEqual(compression.encode(b""), ("", b""))

    def test_bound(self) -> None:
        """
        Output beyond the recorded size is refused (zstd and raw).
        """
        _, data = compression.encode(b"\0" * 1_000_000)
        self.assertRaises(compression.CorruptObject, compression.Decoder("zstd", 1000).feed, data)
        self.assertRaises(compression.CorruptObject, compression.Decoder("", 3).feed, b"abcd")

    def test_garbage(self) -> None:
        """
        Bytes that are not zstd are a corrupt object.
        """
        self.assertRaises(compression.CorruptObject, compression.Decoder("zstd", 100).feed, b"not zstd at all")

    def test_unknown(self) -> None:
        """
        Unknown algorithms are refused up front.
        """
        self.assertRaises(compression.UnknownCompression, compression.Decoder, "brotli", 10)


class BombTests(SynchronousTestCase):
    def test_output_in_bounded_steps(self) -> None:
        """
        A small zstd chunk that expands a lot is handed on in steps of at
        most L{compression.STEP} bytes, never as one joined buffer.
        """
        body = b"\0" * (64 * compression.STEP)
        _, data = compression.encode(body)
        self.assertLess(len(data), 64 * 1024)
        steps: list[int] = []
        compression.Decoder("zstd", len(body)).feed_into(data, lambda b: steps.append(len(b)))
        self.assertEqual(sum(steps), len(body))
        self.assertLessEqual(max(steps), compression.STEP)

    def test_bomb_stops_at_recorded_size(self) -> None:
        """
        More output than the recorded size stops within one step of it.
        """
        _, data = compression.encode(b"\0" * (64 * compression.STEP))
        seen = [0]

        def count(b: bytes) -> None:
            seen[0] += len(b)

        self.assertRaises(compression.CorruptObject, compression.Decoder("zstd", 1000).feed_into, data, count)
        self.assertLessEqual(seen[0], 1000)

    def test_size_ceiling(self) -> None:
        """
        A recorded size beyond the ceiling (or negative) is refused up front.
        """
        self.assertRaises(compression.CorruptObject, compression.Decoder, "zstd", compression.MAX_OBJECT + 1)
        self.assertRaises(compression.CorruptObject, compression.Decoder, "", -1)
        compression.Decoder("zstd", compression.MAX_OBJECT)

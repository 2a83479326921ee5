"""
Tests for L{cacheprog.codec}.
"""

from __future__ import annotations

import os

import zstandard
from twisted.trial.unittest import SynchronousTestCase

from cacheprog import codec


class CodecTests(SynchronousTestCase):
    def test_round_trip_chunked(self) -> None:
        """
        zstd output decodes back in any chunking.
        """
        body = b"go build cache " * 10000
        algorithm, data = codec.encode(body)
        self.assertEqual(algorithm, "zstd")
        decoder = codec.Decoder(algorithm, len(body))
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
        self.assertEqual(codec.Decoder("zstd", len(body)).feed(frame), body)

    def test_raw_when_not_smaller(self) -> None:
        """
        Random or empty bodies are stored raw.
        """
        body = os.urandom(1000)
        self.assertEqual(codec.encode(body), ("", body))
        self.assertEqual(codec.encode(b""), ("", b""))

    def test_bound(self) -> None:
        """
        Output beyond the recorded size is refused (zstd and raw).
        """
        _, data = codec.encode(b"\0" * 1_000_000)
        self.assertRaises(codec.CorruptObject, codec.Decoder("zstd", 1000).feed, data)
        self.assertRaises(codec.CorruptObject, codec.Decoder("", 3).feed, b"abcd")

    def test_garbage(self) -> None:
        """
        Bytes that are not zstd are a corrupt object.
        """
        self.assertRaises(codec.CorruptObject, codec.Decoder("zstd", 100).feed, b"not zstd at all")

    def test_unknown(self) -> None:
        """
        Unknown algorithms are refused up front.
        """
        self.assertRaises(codec.UnknownCompression, codec.Decoder, "brotli", 10)

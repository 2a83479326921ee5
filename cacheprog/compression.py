# -*- test-case-name: tests.unit.test_compression -*-
"""
How objects are encoded in remote storage, the same way as the Go reference:
zstd frames when that is smaller, raw bytes otherwise; the local tier always
holds raw bytes.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cacheprog.interfaces import UploadObject

ZSTD = "zstd"
RAW = ""


class UnknownCompression(Exception):
    """
    The object was written with an algorithm we do not know (a newer writer):
    a miss, not an error.
    """


class CorruptObject(Exception):
    """
    The stored bytes do not decode to what the metadata promised.
    """


def zstd_module() -> Any:
    # zstandard is a C extension; import it only once a remote store needs it.
    import zstandard

    return zstandard


_COMPRESSORS = threading.local()


def encode(data: bytes) -> tuple[str, bytes]:
    """
    Compress C{data} with zstd when that makes it smaller.

    @return: C{(algorithm, stored bytes)}.
    """
    if not data:
        return RAW, data
    compressor = getattr(_COMPRESSORS, "zstd", None)
    if compressor is None:
        # One per thread (a compressor is not thread-safe); making one costs
        # about as much as compressing a small object.
        compressor = _COMPRESSORS.zstd = zstd_module().ZstdCompressor(level=3, write_checksum=True)
    compressed: bytes = compressor.compress(data)
    if len(compressed) >= len(data):
        return RAW, data
    return ZSTD, compressed


def checksums(data: bytes) -> tuple[bytes, bytes]:
    """
    MD5 and SHA-256 of stored bytes (S3 dedup and integrity headers).
    """
    return hashlib.md5(data, usedforsecurity=False).digest(), hashlib.sha256(data).digest()


def prepare_upload(action_id: bytes, output_id: bytes, raw: bytes, absent: bool = False) -> UploadObject:
    """
    The object to store for C{raw}: encoded; its checksums are computed
    only if the store asks for them.

    @param absent: the remote store is known not to hold C{action_id}.
    """
    from cacheprog.interfaces import UploadObject  # Twisted-free import of this module

    compression, data = encode(raw)
    return UploadObject(
        action_id=action_id,
        output_id=output_id,
        size=len(raw),
        compression=compression,
        data=data,
        absent=absent,
    )


#: The largest object accepted (uncompressed): nothing go caches comes near,
#: and a claim beyond it is a lie (or a bomb) told before any byte is read.
MAX_OBJECT = 4 << 30
#: Decompressed output is handed on in pieces of this size at most.
STEP = 256 * 1024


class _Limited:
    """
    A sink for zstd's stream writer: hands each decompressed step to the
    current consumer and refuses more than C{limit} bytes in all, so a
    decompression bomb stops at the recorded size and never sits in memory.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.out: Callable[[bytes], object] = _nowhere

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise CorruptObject(f"decompresses to more than the recorded {self.limit} bytes")
        self.out(bytes(data))
        return len(data)


def _nowhere(data: bytes) -> None:
    raise AssertionError("zstd output outside of a feed")


class Decoder:
    """
    Streaming decoder for one stored object.
    """

    def __init__(self, compression: str, size: int) -> None:
        """
        @param compression: the recorded algorithm.
        @param size: the recorded uncompressed size; output is capped there.
        @raise UnknownCompression: for any algorithm but raw and zstd.
        @raise CorruptObject: for a size above L{MAX_OBJECT}.
        """
        if compression not in (RAW, ZSTD):
            raise UnknownCompression(compression)
        if not 0 <= size <= MAX_OBJECT:
            raise CorruptObject(f"recorded size {size} is beyond the {MAX_OBJECT} bytes accepted")
        self._size = size
        self._raw = 0
        self._sink: _Limited | None = None
        self._writer: Any = None
        if compression == ZSTD:
            self._sink = _Limited(size)
            self._writer = (
                zstd_module()
                .ZstdDecompressor()
                .stream_writer(self._sink, write_size=STEP, write_return_read=True, closefd=False)
            )

    def feed_into(self, data: bytes, out: Callable[[bytes], object]) -> None:
        """
        Decode the next stored chunk, handing the raw bytes to C{out} in
        steps of at most L{STEP} bytes (a raw chunk: as it is).
        """
        if self._writer is None or self._sink is None:
            self._raw += len(data)
            if self._raw > self._size:
                raise CorruptObject(f"longer than the recorded {self._size} bytes")
            if data:
                out(data)
            return
        self._sink.out = out
        try:
            self._writer.write(data)
            self._writer.flush()
        except CorruptObject:
            raise
        except Exception as e:  # noqa: BLE001 - zstandard.ZstdError and friends
            raise CorruptObject(f"zstd: {e}") from None
        finally:
            self._sink.out = _nowhere

    def feed(self, data: bytes) -> bytes:
        """
        Decode the next stored chunk; returns the raw bytes it yields (for
        small objects: the output is held whole).
        """
        parts: list[bytes] = []
        self.feed_into(data, parts.append)
        return b"".join(parts)

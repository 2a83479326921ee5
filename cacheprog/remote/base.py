# -*- test-case-name: tests.unit.test_remote -*-
"""
What every backend shares: bulk fetching on top of single gets, and body
helpers.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, AsyncIterator

from cacheprog.interfaces import UploadObject


def reference_metadata(obj: UploadObject) -> dict[str, str]:
    """
    The user metadata the Go reference writes with each object (S3
    x-amz-meta-*, the dir store's .meta file): the OutputID in standard
    base64, the algorithm (zstd or empty), the size only when above zero.
    """
    meta = {
        "output_id": base64.b64encode(obj.output_id).decode("ascii"),
        "compression_algorithm": obj.compression,
    }
    if obj.size > 0:
        meta["uncompressed_size"] = str(obj.size)
    return meta


async def one_chunk(data: bytes) -> AsyncGenerator[bytes, None]:
    """
    A body that is already in memory.
    """
    if data:
        yield data


async def trimmed(body: AsyncIterator[bytes], skip: int, length: int) -> AsyncIterator[bytes]:
    """
    Bytes C{[skip, skip + length)} of C{body}: for a server that answered a
    ranged request with the whole object (200), or with more than asked.
    Closes C{body} when done.
    """
    try:
        async for chunk in body:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            piece = chunk[skip : skip + length]
            skip = 0
            length -= len(piece)
            if piece:
                yield piece
            if length <= 0:
                return
    finally:
        await close_body(body)


async def close_body(body: object) -> None:
    """
    Drop a body early, whatever kind of stream it is.
    """
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(body, "close", None)
    if close is not None:
        close()

# -*- test-case-name: tests.unit.test_remote -*-
"""
The C{dir} backend: a shared directory (a persistent CI volume, NFS) holding
objects encoded exactly as in S3: the stored bytes (zstd when smaller) in
C{<root>/<xx>/<hex(ActionID)>} and, beside them, the metadata the Go
reference puts in S3 user metadata, in C{<hex(ActionID)>.meta}.

Big objects are read in 1 MiB steps (L{FileBody}), never whole.  Both files
are written to temp names and renamed, data first.  A reader that
races a writer may pair new data with old metadata; the core's SHA-256 check
then turns that into a miss, never into wrong content.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import IO

from cacheprog.files import copy_atomic, write_atomic
from cacheprog.interfaces import Body, NotFound, RemoteObject, ThreadRunner, UploadObject
from cacheprog.remote.base import one_chunk, reference_metadata
from cacheprog.remote.dirconfig import make_root

#: Objects below this size are read on the reactor thread.
INLINE_LIMIT = 256 * 1024
#: Ranged reads of packs come in chunks of this size.
RANGE_CHUNK = 1 << 20


#: Big objects are read in steps of this size (memory stays bounded).
READ_STEP = 1 << 20


def _read_all(f: IO[bytes]) -> bytes:
    with f:
        return f.read()


class FileBody:
    """
    A stored file as an object body: read in L{READ_STEP} steps in the
    thread pool, so serving a 1 GiB object (through the proxy, to a stalled
    reader) holds a step, not the object.  L{aclose} closes the file.
    """

    def __init__(self, f: IO[bytes], run_in_thread: ThreadRunner) -> None:
        self._file: IO[bytes] | None = f
        self._thread = run_in_thread

    def __aiter__(self) -> FileBody:
        return self

    async def __anext__(self) -> bytes:
        if self._file is None:
            raise StopAsyncIteration
        chunk: bytes = await self._thread(self._file.read, READ_STEP)
        if not chunk:
            self._close()
            raise StopAsyncIteration
        return chunk

    def _close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()

    async def aclose(self) -> None:
        self._close()

    def __del__(self) -> None:
        self._close()


class DirectoryStore:
    """
    Objects as files under C{root}; blocking file work runs in C{run_in_thread}.
    """

    name = "dir"

    def __init__(self, root: str, run_in_thread: ThreadRunner) -> None:
        self.root = os.path.abspath(root)
        self._thread = run_in_thread

    def probe(self) -> None:
        """
        Create the root (at start, so a bad path fails before the handshake).
        """
        make_root(self.root)

    def _paths(self, action_id: bytes) -> tuple[str, str, str]:
        name = action_id.hex()
        directory = os.path.join(self.root, name[:2])
        return directory, os.path.join(directory, name), os.path.join(directory, name + ".meta")

    async def get(self, action_id: bytes) -> RemoteObject:
        # Small objects (nearly all of them) are read inline: a thread hop
        # costs more than the read, and worker threads make the reactor
        # thread wait for the GIL on every system call it makes.
        _, data_path, _ = self._paths(action_id)
        try:
            small = os.stat(data_path).st_size < INLINE_LIMIT
        except FileNotFoundError:
            raise NotFound(action_id.hex()) from None
        if small:
            return self._read(action_id)
        return await self._thread(self._read, action_id)

    def _read(self, action_id: bytes) -> RemoteObject:
        _, data_path, meta_path = self._paths(action_id)
        try:
            with open(meta_path, "rb") as f:
                meta = json.loads(f.read())
            data = open(data_path, "rb")  # noqa: SIM115 - closed by the body
        except FileNotFoundError:
            raise NotFound(action_id.hex()) from None
        try:
            st = os.fstat(data.fileno())
            body: Body = one_chunk(_read_all(data)) if st.st_size < INLINE_LIMIT else FileBody(data, self._thread)
            output_id = base64.b64decode(meta["output_id"])
            size = int(meta.get("uncompressed_size") or 0) or st.st_size
        except BaseException:
            data.close()
            raise
        return RemoteObject(
            output_id=output_id,
            size=size,
            mtime=datetime.fromtimestamp(st.st_mtime, tz=timezone.utc),
            compression=meta.get("compression_algorithm", ""),
            stored_size=st.st_size,
            body=body,
        )

    async def put(self, obj: UploadObject) -> None:
        await self._thread(self._write, obj)

    def _write(self, obj: UploadObject) -> None:
        directory, data_path, meta_path = self._paths(obj.action_id)
        meta = reference_metadata(obj)
        try:
            with open(meta_path, "rb") as f:
                same = json.loads(f.read()) == meta
            if same and os.stat(data_path).st_size == obj.stored_size:
                return
        except (OSError, ValueError):
            pass
        os.makedirs(directory, exist_ok=True)
        payload = obj.payload()
        if isinstance(payload, bytes):
            write_atomic(directory, data_path, payload)
        else:
            copy_atomic(directory, data_path, payload)
        write_atomic(directory, meta_path, json.dumps(meta).encode("ascii"))

    # manifests and packs

    def _blob_path(self, name: str) -> str:
        path = os.path.normpath(os.path.join(self.root, name))
        if not path.startswith(self.root + os.sep):
            raise ValueError(f"blob name {name!r} leaves the root")
        return path

    async def get_blob(self, name: str) -> bytes:
        return await self._thread(self._read_blob, name, 0, -1)

    def _read_blob(self, name: str, start: int, length: int) -> bytes:
        try:
            with open(self._blob_path(name), "rb") as f:
                f.seek(start)
                return f.read(length)
        except FileNotFoundError:
            raise NotFound(name) from None

    async def get_range(self, name: str, start: int, stop: int) -> AsyncIterator[bytes]:
        first = await self._thread(self._read_blob, name, start, min(stop - start, RANGE_CHUNK))
        return self._rest(name, first, start, stop)

    async def _rest(self, name: str, first: bytes, start: int, stop: int) -> AsyncIterator[bytes]:
        chunk, position = first, start
        while chunk:
            yield chunk
            position += len(chunk)
            if position >= stop:
                return
            chunk = await self._thread(self._read_blob, name, position, min(stop - position, RANGE_CHUNK))

    async def put_blob(self, name: str, data: bytes) -> None:
        await self._thread(self._write_blob, name, data)

    def _write_blob(self, name: str, data: bytes) -> None:
        path = self._blob_path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(os.path.dirname(path), path, data)

    async def close(self) -> None:
        return None

"""
What the core needs from its collaborators.

These are structural types (L{typing.Protocol}): any class with these methods
fits, and mypy checks it.  The core (L{cacheprog.cache}) imports nothing else
of the backends.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import IO, TYPE_CHECKING, Protocol, TypeVar

import attrs
from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from cacheprog.local import Entry

T = TypeVar("T")


class NotFound(Exception):
    """
    The remote store has no object under that key (or may not tell us: 403).
    """


class Unavailable(Exception):
    """
    The remote store is switched off for now (circuit breaker open): the call
    was not even tried.  A miss for gets; a skipped upload for puts.
    """


class Body(Protocol):
    """
    A streamed object body: chunks as they arrive, and C{aclose} to release
    it (a no-op after the end; before it, the connection or file is
    dropped).  Every consumer calls C{aclose} in a C{finally}.  Async
    generators fit; HTTP bodies are L{cacheprog.remote.body.BodyStream}.
    """

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


@attrs.frozen
class RemoteObject:
    """
    An object as the remote store holds it: possibly compressed bytes plus the
    metadata the Go reference writes (so both tools can share a bucket).

    @ivar output_id: the OutputID recorded with the object (raw 32 bytes).
    @ivar size: the uncompressed size.
    @ivar mtime: when it was stored; answered to go as C{Time}.
    @ivar compression: C{""} (raw) or C{"zstd"}; anything else is a miss.
    @ivar body: the stored bytes, in chunks, as they arrive; the reader
        releases it with C{aclose}.
    """

    output_id: bytes
    size: int
    mtime: datetime
    compression: str
    stored_size: int
    body: Body


@attrs.frozen
class UploadObject:
    """
    An object ready to store: encoded bytes, and checksums of those bytes
    computed on first use (most uploads need neither MD5 nor SHA-256).

    @ivar absent: the store was seen without this key during this run (a
        miss, or a complete listing): no need to ask before writing it.
    """

    action_id: bytes
    output_id: bytes
    size: int
    compression: str
    data: bytes
    _md5: bytes | None = None
    _sha256: bytes | None = None
    absent: bool = False
    #: The stored bytes in a file instead of C{data} (big bodies the proxy
    #: received: never read into memory); C{data} is then empty, and the
    #: checksums must be given.
    file: IO[bytes] | None = None
    file_size: int = 0
    _sums: dict[str, bytes] = attrs.field(factory=dict, init=False, repr=False, eq=False)

    @property
    def md5(self) -> bytes:
        if self._md5 is not None:
            return self._md5
        if "md5" not in self._sums:
            self._sums["md5"] = hashlib.md5(self.data, usedforsecurity=False).digest()
        return self._sums["md5"]

    @property
    def sha256(self) -> bytes:
        if self._sha256 is not None:
            return self._sha256
        if "sha256" not in self._sums:
            self._sums["sha256"] = hashlib.sha256(self.data).digest()
        return self._sums["sha256"]

    @property
    def stored_size(self) -> int:
        """
        How many bytes are stored.
        """
        return self.file_size if self.file is not None else len(self.data)

    def payload(self) -> bytes | IO[bytes]:
        """
        The stored bytes to send: C{data}, or the file rewound to its start
        (each attempt of a retried request reads it again).
        """
        if self.file is None:
            return self.data
        self.file.seek(0)
        return self.file

    def read(self) -> bytes:
        """
        The stored bytes in memory (small objects; the memory store).
        """
        payload = self.payload()
        return payload if isinstance(payload, bytes) else payload.read()


class RemoteStore(Protocol):
    """
    A remote storage backend (s3, http, dir, memory, disabled).
    """

    name: str

    async def get(self, action_id: bytes) -> RemoteObject:
        """
        Fetch one object.

        @raise NotFound: when there is none.  Any other exception is a
            failure (counted by the circuit breaker, answered as a miss).
        """

    async def put(self, obj: UploadObject) -> None:
        """
        Store one object (skipping the transfer when it is already there).
        """

    async def close(self) -> None:
        """
        Release connections.
        """


class BlobStore(Protocol):
    """
    Named objects beside the per-action ones (run manifests and packs),
    relative to the store's prefix: C{manifests/v1/<hex>}, C{packs/v1/<hex>}.
    Stores that can hold them (s3, dir, http, memory) have these methods.
    """

    async def get_blob(self, name: str) -> bytes:
        """
        A whole (small) object.

        @raise NotFound: when there is none.
        """

    async def get_range(self, name: str, start: int, stop: int) -> AsyncIterator[bytes]:
        """
        Bytes C{[start, stop)} of an object, streamed in chunks (close the
        iterator with C{aclose} to drop it early).

        @raise NotFound: when there is none.
        """

    async def put_blob(self, name: str, data: bytes) -> None:
        """
        Store (replace) a named object.
        """


class RunJournal(Protocol):
    """
    The warm-start side of a run (L{cacheprog.warmstart.WarmStart}): told
    what go asks and gets, asked first for a local miss, finished at close.
    """

    def attach(self, stored: Callable[[], None]) -> None: ...

    def note(self, action_id: bytes) -> None: ...

    def record(self, action_id: bytes, entry: Entry) -> None: ...

    async def lookup(self, action_id: bytes) -> Entry | None: ...

    def fetched(self, action_id: bytes) -> bool: ...

    async def finish(self) -> None: ...


class LocalObserver(Protocol):
    """
    Told about every local-tier lookup and write (metrics).  C{size} is None
    for a miss or a failed write.
    """

    def local_get(self, seconds: float, size: int | None) -> None: ...

    def local_put(self, seconds: float, size: int | None) -> None: ...


class ThreadRunner(Protocol):
    """
    Runs a blocking callable off the reactor thread (tests: synchronously).
    """

    def __call__(self, f: Callable[..., T], *args: object) -> Deferred[T]: ...

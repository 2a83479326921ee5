# -*- test-case-name: tests.unit.test_spool -*-
"""
The way of one object's bytes into the local tier (a put's body, a
download): L{Spool} hashes them as they arrive, keeps small ones in memory
and big ones in a locked temp file, and gives them their content-addressed
name in L{DiskStore} at commit.
"""

from __future__ import annotations

import binascii
import hashlib
from datetime import datetime
from typing import IO

from cacheprog.files import unlink_quietly
from cacheprog.local import DiskStore, Entry, LocalWriteError

#: Bodies from this size on are spooled to a file, and decoded, hashed and
#: written in the thread pool.
BIG = 1 << 20


class Spool:
    """
    Collects the raw bytes of one object on its way into the local tier,
    hashing as it goes.  Small objects stay in memory and are written in one
    call; big ones go to a temp file chunk by chunk (the caller runs those
    calls in a thread).  A failed write is remembered, later writes are
    skipped, and L{commit} raises it: the body is always drained.
    """

    def __init__(self, store: DiskStore, in_memory: bool) -> None:
        self._store = store
        self._hash = hashlib.sha256()
        self._parts: list[bytes] | None = [] if in_memory else None
        self._file: IO[bytes] | None = None
        self._temp = ""
        self.size = 0
        self.failure: BaseException | None = None

    def write(self, data: bytes) -> None:
        """
        Append raw bytes (blocking for big objects: call from a thread).
        """
        if self.failure is not None:
            return
        self._hash.update(data)
        self.size += len(data)
        if self._parts is not None:
            self._parts.append(data)
            return
        try:
            if self._file is None:
                self._file, self._temp = self._store.temp_file()
            self._file.write(data)
        except OSError as e:
            self.failure = e
            self._close()

    def write_base64(self, text: bytes) -> None:
        """
        Append base64 text (a whole number of 4-character groups).  The lenient
        decoder is 2.5 times faster than the strict one; it drops characters
        that are not base64, which the length check catches.
        """
        expected = len(text) // 4 * 3 - text[-2:].count(b"=")
        try:
            data = binascii.a2b_base64(text)
        except binascii.Error as e:
            data, reason = b"", str(e)
        else:
            reason = "" if len(text) % 4 == 0 and len(data) == expected else "not base64"
        if reason:
            if self.failure is None:
                self.failure = OSError(f"invalid base64 in the body: {reason}")
            return
        self.write(data)

    @property
    def digest(self) -> bytes:
        return self._hash.digest()

    def commit(self, action_id: bytes, output_id: bytes, when: datetime) -> Entry:
        """
        Give the bytes their final name and record the entry (blocking for big
        objects).

        @raise LocalWriteError: when any write failed.
        """
        digest = self.digest
        try:
            if self.failure is not None:
                raise self.failure
            if self._parts is not None:
                path = self._store.write_data(b"".join(self._parts), digest)
            else:
                if self._file is None:
                    self._file, self._temp = self._store.temp_file()
                self._file.close()
                path = self._store.place_data(self._temp, digest, self.size)
        except OSError as e:
            self.discard()
            raise LocalWriteError(str(e)) from e
        entry = Entry(output_id=output_id, size=self.size, time=when, path=path)
        self._store.record(action_id, entry, digest)
        return entry

    def discard(self) -> None:
        """
        Drop what was written (a corrupt download, a failed put).
        """
        self._close()
        if self._temp:
            unlink_quietly(self._temp)
            self._temp = ""
        self._parts = None

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

# -*- test-case-name: tests.unit.test_local -*-
"""
The local disk tier: the files whose paths we hand to the go command.

Layout under the root::

    <xx>/<hex(ActionID)>-meta   JSON: version, outputID (base64), size, time, data
    <yy>/<hex(SHA-256)>-data    the raw body; no extension (cgo tooling breaks on one)

Data files are named by the SHA-256 of their content, so a file is never
rewritten once its path was handed out: a different output for the same
action is a different file, and equal outputs (all empty bodies, the same
archive from two actions) share one file.  Every file is written to a temp
name in its final directory and renamed into place, data before meta, so a
reader sees a whole entry or none.  Files outlive the process: tools read
C{go list -export} paths long after go exits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO

from cacheprog.wire import format_time


class LocalWriteError(Exception):
    """
    The local disk refused a write; the only reason a put may answer Err.
    """


@dataclass(frozen=True)
class Entry:
    """
    A usable local entry.
    """

    output_id: bytes
    size: int
    time: datetime
    path: str


def _parse_time(text: str) -> datetime:
    # Go writes nanoseconds; Python keeps microseconds.
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


class DiskStore:
    """
    Content-addressed local files plus per-action metadata.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._dirs: set[str] = set()
        # Entries of this run whose meta file is not written yet: go waits
        # for every answer, and one file creation less per answer is a
        # third of the local cost of a remote hit.  flush() writes them.
        # flush() runs in the thread pool: entries being written stay
        # visible in _flushing until their meta file is in place.
        self._unsaved: dict[bytes, tuple[Entry, bytes]] = {}
        self._flushing: dict[bytes, tuple[Entry, bytes]] = {}
        self._lock = threading.Lock()

    def probe(self) -> None:
        """
        Create the root and prove it is writable (at start, before the handshake).

        @raise LocalWriteError: when it is not.
        """
        try:
            os.makedirs(self.root, exist_ok=True)
            name = os.path.join(self.root, f".cacheprog_test_{secrets.token_hex(16)}")
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
            os.unlink(name)
        except OSError as e:
            raise LocalWriteError(f"root directory {self.root} is not writable: {e}") from e

    def _dir(self, key: bytes) -> str:
        path = os.path.join(self.root, key[:1].hex() or "00")
        if path not in self._dirs:
            os.makedirs(path, mode=0o755, exist_ok=True)
            self._dirs.add(path)
        return path

    def meta_path(self, action_id: bytes) -> str:
        return os.path.join(self.root, action_id[:1].hex() or "00", f"{action_id.hex()}-meta")

    def data_path(self, digest: bytes) -> str:
        return os.path.join(self.root, digest[:1].hex() or "00", f"{digest.hex()}-data")

    def lookup(self, action_id: bytes) -> Entry | None:
        """
        The entry for C{action_id}, or None.  A broken entry (unreadable meta,
        missing or wrong-sized data) is removed and reported as None, so the
        next fetch or put heals it.
        """
        with self._lock:
            unsaved = self._unsaved.get(action_id) or self._flushing.get(action_id)
        if unsaved is not None:
            return unsaved[0]
        meta = self.meta_path(action_id)
        try:
            with open(meta, "rb") as f:
                fields = json.loads(f.read())
            output_id = base64.b64decode(fields["outputID"])
            size = int(fields["size"])
            path = self.data_path(bytes.fromhex(fields["data"]))
            when = _parse_time(fields["time"])
            if os.stat(path).st_size != size:
                raise ValueError("data file has the wrong size")
        except FileNotFoundError as e:
            if e.filename == meta:
                return None
            self._forget(meta)
            return None
        except (OSError, ValueError, KeyError, TypeError):
            self._forget(meta)
            return None
        return Entry(output_id=output_id, size=size, time=when, path=path)

    def _forget(self, meta: str) -> None:
        try:
            os.unlink(meta)
        except OSError:
            pass

    def temp_file(self) -> tuple[IO[bytes], str]:
        """
        A new temp file inside the root (same file system: rename is atomic).
        """
        directory = self._dir(b"")
        fd, name = tempfile.mkstemp(prefix=".spool.", suffix=".tmp", dir=directory)
        return os.fdopen(fd, "wb"), name

    def place_data(self, temp: str, digest: bytes, size: int) -> str:
        """
        Move a finished temp file to its content-addressed name; if that file
        already exists whole, keep it (it may be in use) and drop the temp.
        """
        path = self.data_path(digest)
        try:
            if os.stat(path).st_size == size:
                os.unlink(temp)
                return path
        except FileNotFoundError:
            pass
        self._dir(digest)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
        return path

    def write_data(self, data: bytes, digest: bytes) -> str:
        """
        Write a small body in one go (the caller hashed it).
        """
        path = self.data_path(digest)
        try:
            if os.stat(path).st_size == len(data):
                return path
        except FileNotFoundError:
            pass
        write_atomic(self._dir(digest), path, data)
        return path

    def record(self, action_id: bytes, entry: Entry, digest: bytes) -> None:
        """
        Make C{entry} the one for C{action_id}: at once for this process,
        on disk at the next L{flush}.
        """
        with self._lock:
            self._unsaved[action_id] = (entry, digest)

    @property
    def unsaved(self) -> int:
        with self._lock:
            return len(self._unsaved)

    def flush(self) -> None:
        """
        Write the meta files of recorded entries (each after its data file,
        which is already in place).  Failures are dropped: the entry is then
        a miss for the next process, never a wrong answer.
        """
        with self._lock:
            batch, self._unsaved = self._unsaved, {}
            self._flushing.update(batch)
        for action_id, (entry, digest) in batch.items():
            try:
                self.write_meta(action_id, entry.output_id, digest, entry.size, entry.time)
            except OSError:
                pass
        with self._lock:
            for action_id, record in batch.items():
                if self._flushing.get(action_id) is record:
                    del self._flushing[action_id]

    def write_meta(self, action_id: bytes, output_id: bytes, digest: bytes, size: int, when: datetime) -> None:
        """
        Write the meta file for C{action_id} (atomically; last, after its data).
        """
        text = json.dumps(
            {
                "version": 1,
                "outputID": base64.b64encode(output_id).decode("ascii"),
                "size": size,
                "time": format_time(when),
                "data": digest.hex(),
            }
        ).encode("ascii")
        directory = self._dir(action_id)
        write_atomic(directory, self.meta_path(action_id), text + b"\n")


def write_atomic(directory: str, path: str, data: bytes) -> None:
    """
    Write C{data} to a temp file in C{directory} and rename it to C{path}:
    readers see the old file or the new one, never a part.
    """
    fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
            _unlink_quietly(self._temp)
            self._temp = ""
        self._parts = None

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


def now(clock: Callable[[], float]) -> datetime:
    """
    The current time from an injected clock, as an aware datetime.
    """
    return datetime.fromtimestamp(clock(), tz=timezone.utc)

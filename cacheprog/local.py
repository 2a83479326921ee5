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
import errno
import fcntl
import json
import os
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO

from cacheprog.files import file_digest, unlink_quietly, write_atomic
from cacheprog.wire import format_time

#: Lookups of entries up to this size re-hash the data file; bigger ones
#: check the size (bench/bench_local.py: half of a real go cache's entries
#: are this small, and re-hashing them adds ~11% to a lookup; 16 KiB adds
#: 40% for 6% more entries, everything 10x).  Puts always re-hash.
VERIFY_LIMIT = 4 * 1024
#: Temp files older than this (and not locked by a live writer) are swept
#: at start.
STALE_TEMP = 300.0
_SPOOL_PREFIX = ".spool."


class LocalWriteError(Exception):
    """
    The local disk refused a write; the only reason a put may answer Err.
    """


class UnsafeRoot(LocalWriteError):
    """
    The root (or a directory in it) could be written by someone else: a
    symlink, another owner, or group/world-writable.  Its files would be
    handed to go as build outputs, so it is refused.
    """


def _holds(path: str, digest: bytes, size: int) -> bool:
    """
    Whether C{path} exists with exactly this content (what go's own cache
    checks before it skips a write).
    """
    try:
        return os.stat(path).st_size == size and file_digest(path) == digest
    except OSError:
        return False


def check_directory(path: str, *, strict: bool) -> None:
    """
    Refuse a directory another local user could plant files in.

    @param strict: also refuse a symlink and a group-writable directory
        (the predictable default root; an explicit root may be a symlink
        and group-writable by the user's choice, never another's).
    @raise UnsafeRoot: naming the path and what is wrong.
    """
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) and not strict:
            st = os.stat(path)
    except OSError as e:
        raise LocalWriteError(f"root directory {path}: {e}") from e
    uid = os.getuid()
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != uid:
        problem = f"is owned by uid {st.st_uid}, not by us (uid {uid})"
    elif st.st_mode & stat.S_IWOTH or (strict and st.st_mode & stat.S_IWGRP):
        problem = f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    else:
        return
    raise UnsafeRoot(
        f"refusing the local cache directory {path}: it {problem}; another user could plant build outputs "
        "there (set --root-directory / CACHEPROG_ROOT_DIRECTORY to a directory of your own)"
    )


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

    def __init__(self, root: str, *, default: bool = False, verify_limit: int = VERIFY_LIMIT) -> None:
        """
        @param default: the root is the predictable default (created 0700,
            refused when not strictly ours).
        @param verify_limit: lookups of entries up to this size re-hash the data.
        """
        self.root = os.path.abspath(root)
        self._default = default
        self.verify_limit = verify_limit
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
            self._make_root()
            check_directory(self.root, strict=self._default)
            name = os.path.join(self.root, f".cacheprog_test_{secrets.token_hex(16)}")
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
            os.unlink(name)
        except OSError as e:
            raise LocalWriteError(f"root directory {self.root} is not writable: {e}") from e

    def _make_root(self) -> None:
        parent = os.path.dirname(self.root)
        if parent:
            os.makedirs(parent, exist_ok=True)
        try:
            # Only we may write in it, whoever created the parent.
            os.mkdir(self.root, 0o700)
        except FileExistsError:
            pass

    def _dir(self, key: bytes) -> str:
        path = os.path.join(self.root, key[:1].hex() or "00")
        if path not in self._dirs:
            os.makedirs(path, 0o755, exist_ok=True)
            check_directory(path, strict=True)
            self._dirs.add(path)
        return path

    def meta_path(self, action_id: bytes) -> str:
        return os.path.join(self.root, action_id[:1].hex() or "00", f"{action_id.hex()}-meta")

    def data_path(self, digest: bytes) -> str:
        return os.path.join(self.root, digest[:1].hex() or "00", f"{digest.hex()}-data")

    def lookup(self, action_id: bytes) -> Entry | None:
        """
        The entry for C{action_id}, or None.  A broken entry (unreadable meta,
        missing or wrong-sized data, or for entries up to C{verify_limit}
        bytes, data that does not hash to its name) is removed and reported
        as None, so the next fetch or put heals it.
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
            if size <= self.verify_limit and file_digest(path) != bytes.fromhex(fields["data"]):
                raise ValueError("data file does not match its hash")
        except FileNotFoundError as e:
            if e.filename == meta:
                return None
            unlink_quietly(meta)
            return None
        except (OSError, ValueError, KeyError, TypeError):
            unlink_quietly(meta)
            return None
        return Entry(output_id=output_id, size=size, time=when, path=path)

    def temp_file(self) -> tuple[IO[bytes], str]:
        """
        A new temp file inside the root (same file system: rename is atomic).
        """
        directory = self._dir(b"")
        fd, name = tempfile.mkstemp(prefix=_SPOOL_PREFIX, suffix=".tmp", dir=directory)
        # Held while we write: the start-up sweep of other processes skips it.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.fdopen(fd, "wb"), name

    def sweep(self, now: float | None = None) -> int:
        """
        Remove spool files left by a killed process: older than
        L{STALE_TEMP} and not locked by a live writer.

        @return: how many were removed.
        """
        directory = os.path.join(self.root, "00")
        now = time.time() if now is None else now
        removed = 0
        try:
            names = [n for n in os.listdir(directory) if n.startswith(_SPOOL_PREFIX) and n.endswith(".tmp")]
        except OSError:
            return 0
        for name in names:
            removed += _remove_stale(os.path.join(directory, name), now)
        return removed

    def place_data(self, temp: str, digest: bytes, size: int) -> str:
        """
        Move a finished temp file to its content-addressed name; if that file
        already holds these bytes, keep it (it may be in use) and drop the
        temp; a damaged one is replaced (atomically).
        """
        path = self.data_path(digest)
        if _holds(path, digest, size):
            os.unlink(temp)
            return path
        self._dir(digest)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
        return path

    def write_data(self, data: bytes, digest: bytes) -> str:
        """
        Write a small body in one go (the caller hashed it).
        """
        path = self.data_path(digest)
        if _holds(path, digest, len(data)):
            return path
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


def _remove_stale(path: str, now: float) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    try:
        if now - os.fstat(fd).st_mtime < STALE_TEMP:
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return 0  # a live process is writing it
            raise
        os.unlink(path)
        return 1
    except OSError:
        return 0
    finally:
        os.close(fd)


def now(clock: Callable[[], float]) -> datetime:
    """
    The current time from an injected clock, as an aware datetime.
    """
    return datetime.fromtimestamp(clock(), tz=timezone.utc)

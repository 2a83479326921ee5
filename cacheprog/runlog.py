# -*- test-case-name: tests.unit.test_runlog -*-
"""
The run log: one JSON line per cacheprog run (the statistics of one go
command) and per mark, in C{<root>/runs.jsonl}, read by C{cacheprog summary}.

Bounded: when the file passes L{MAX_BYTES} it becomes C{runs.jsonl.1}
(replacing the older one) and a new file starts, so a long-lived local root
holds at most about twice that.  Many go commands may end at once: each
record is one C{write} to a file opened with C{O_APPEND} under an exclusive
C{flock}, so lines never interleave and a rotation never loses a line.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping

NAME = "runs.jsonl"
#: Rotate past this size (a record is ~500 bytes: ~2000 runs per file).
MAX_BYTES = 1 << 20


def run_record(stats: Mapping[str, object], started: float, ended: float, command: str) -> dict[str, object]:
    """
    The run log record of one cacheprog run.
    """
    return {"kind": "run", "start": round(started, 3), "time": round(ended, 3), "command": command, **stats}


def mark_record(name: str, now: float) -> dict[str, object]:
    return {"kind": "mark", "mark": name, "time": round(now, 3)}


def go_command(pid: int, proc: str = "/proc") -> str:
    """
    The command line of the process that started us (the go command, or
    golangci-lint), shortened for a table row: C{go build -x ./...}.
    """
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as f:
            words = [w.decode(errors="replace") for w in f.read().split(b"\0") if w]
    except OSError:
        return "?"
    if not words:
        return "?"
    text = " ".join([os.path.basename(words[0]), *words[1:]])
    return text if len(text) <= 60 else text[:59] + "…"


class RunLog:
    """
    The run log of one local root.
    """

    def __init__(self, root: str, max_bytes: int = MAX_BYTES) -> None:
        self.path = os.path.join(root, NAME)
        self._max_bytes = max_bytes

    def append(self, record: Mapping[str, object]) -> None:
        """
        Add one record (rotating first if the file is full).

        @raise OSError: when the file cannot be written; callers log it, a
            run log must never fail a build.
        """
        line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
        fd = self._open_locked()
        try:
            size = os.fstat(fd).st_size
            if size > 0 and size + len(line) > self._max_bytes:
                # Others waiting for the lock on this inode see it renamed
                # and open the new file (_open_locked).
                os.replace(self.path, self.path + ".1")
                full, fd = fd, self._open_locked()
                os.close(full)
            os.write(fd, line)
        finally:
            os.close(fd)

    def _open_locked(self) -> int:
        """
        The current file, opened for appending and locked: if it was
        rotated while we waited for the lock, open the new one.
        """
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                return fd
            os.close(fd)

    def records(self) -> Iterator[dict[str, object]]:
        """
        Every record, oldest first; unreadable lines (a torn write after a
        crash, a newer format) are skipped.
        """
        for path in (self.path + ".1", self.path):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines = f.readlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record

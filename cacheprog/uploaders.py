# -*- test-case-name: tests.unit.test_uploaders -*-
"""
Detached uploaders of one local root, and C{cacheprog wait}.

With C{--detached-drain}, a cacheprog that still has uploads at close
answers go, closes its stdout (go waits for nothing more) and finishes them
in the background.  So that the end of a CI job can wait for them, each
such process registers under C{<root>/.uploaders/}:

 - C{<id>.lock}: held with C{flock} for as long as the process lives (the
   kernel releases it on any exit, SIGKILL included);
 - C{<id>.json}: C{{"pid", "pending", "state": "running"}}, rewritten
   with C{"uploaded"} and C{"dropped"} and C{"state": "done"} before exit;
 - C{<id>.log}: the process's stderr from the moment it detached (the go
   command's stderr may be a pipe someone reads to its end).

The lock file appears under its final name only once it is locked, so a
waiter that can lock it knows its owner is gone.  A process that died
without writing its result (killed) reports its pending uploads as
dropped: an upload that did not happen is a future miss, never a wrong
entry (S3 and the dir store never show a partial object under its key).

Stdlib only: C{cacheprog wait} imports neither Twisted nor a backend.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import IO

import attrs

from cacheprog.files import unlink_quietly

DIRECTORY = ".uploaders"
#: How often a waiter looks at the locks again (seconds).
POLL = 0.05


@attrs.define
class Summary:
    """
    What C{cacheprog wait} found.
    """

    uploaders: int = 0
    uploaded: int = 0
    dropped: int = 0
    killed: int = 0
    running: int = 0

    def line(self) -> str:
        text = f"cacheprog wait: uploaders={self.uploaders} uploaded={self.uploaded} dropped={self.dropped}"
        if self.killed:
            text += f" killed={self.killed}"
        if self.running:
            text += f" still_running={self.running}"
        return text


class Registration:
    """
    One detached uploader's entry; L{finish} records its result.
    """

    def __init__(self, directory: str, name: str, lock: int, pending: int) -> None:
        self._directory = directory
        self.name = name
        self._lock = lock
        self.pending = pending

    @property
    def log_path(self) -> str:
        return os.path.join(self._directory, self.name + ".log")

    def finish(self, uploaded: int, dropped: int) -> None:
        """
        Write the result, then let go of the lock (waiters read it next).
        """
        _write_json(
            os.path.join(self._directory, self.name + ".json"),
            {"pid": os.getpid(), "pending": self.pending, "state": "done", "uploaded": uploaded, "dropped": dropped},
        )
        os.close(self._lock)


class Uploaders:
    """
    The detached uploaders of the local root C{root}.
    """

    def __init__(self, root: str) -> None:
        self.directory = os.path.join(root, DIRECTORY)

    def register(self, pending: int) -> Registration:
        """
        Announce this process as a detached uploader with C{pending} jobs.

        @raise OSError: when the root refuses (the caller then drains
            attached, as without the option).
        """
        os.makedirs(self.directory, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        temp = os.path.join(self.directory, f".{name}.lock.tmp")
        lock = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _write_json(
                os.path.join(self.directory, name + ".json"),
                {"pid": os.getpid(), "pending": pending, "state": "running"},
            )
            os.replace(temp, os.path.join(self.directory, name + ".lock"))
        except BaseException:
            os.close(lock)
            unlink_quietly(temp)
            raise
        return Registration(self.directory, name, lock, pending)

    def wait(
        self,
        timeout: float = 0.0,
        report: IO[str] = sys.stderr,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Summary:
        """
        Block until every registered uploader is gone (at most C{timeout}
        seconds; 0: no limit), collecting and removing their entries.  The
        logs of uploaders that dropped anything are copied to C{report}.
        """
        summary = Summary()
        deadline = clock() + timeout if timeout > 0 else None
        while True:
            names = self._names()
            left = [n for n in names if not self._collect(n, summary, report)]
            if not left:
                return summary
            if deadline is not None and clock() >= deadline:
                summary.running = len(left)
                return summary
            sleep(POLL)

    def _names(self) -> list[str]:
        try:
            entries = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(e[: -len(".lock")] for e in entries if e.endswith(".lock") and not e.startswith("."))

    def _collect(self, name: str, summary: Summary, report: IO[str]) -> bool:
        """
        Take the result of C{name} if its owner is gone.  True: collected
        (or vanished: another waiter took it).
        """
        path = os.path.join(self.directory, name)
        try:
            lock = os.open(path + ".lock", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            state = _read_json(path + ".json")
            summary.uploaders += 1
            if state.get("state") == "done":
                summary.uploaded += _count(state, "uploaded")
                dropped = _count(state, "dropped")
            else:
                summary.killed += 1
                dropped = _count(state, "pending")
                report.write(
                    f"cacheprog wait: uploader {state.get('pid', name)} ended before its result ({dropped} jobs)\n"
                )
            summary.dropped += dropped
            if dropped:
                _copy(path + ".log", report)
            for suffix in (".json", ".log", ".lock"):
                unlink_quietly(path + suffix)
            return True
        finally:
            os.close(lock)


def _write_json(path: str, value: dict[str, object]) -> None:
    temp = f"{path}.{secrets.token_hex(4)}.tmp"
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(temp, path)


def _count(state: dict[str, object], name: str) -> int:
    value = state.get(name, 0)
    return value if isinstance(value, int) else 0


def _read_json(path: str) -> dict[str, object]:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _copy(path: str, report: IO[str]) -> None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            report.write(f.read())
    except OSError:
        pass


class Detacher:
    """
    Turns this process into a detached uploader of C{uploaders}' root:
    registered, its stderr moved to its log.

    @ivar timeout: how long the detached drain may take (0: no limit).
    """

    def __init__(self, uploaders: Uploaders, timeout: float, stdout_fd: int | None = None) -> None:
        """
        @param stdout_fd: the protocol pipe; None (tests): leave every
            descriptor and the session alone.
        """
        self._uploaders = uploaders
        self.timeout = timeout
        self._stdout_fd = stdout_fd
        self._registration: Registration | None = None

    def detach(self, pending: int) -> bool:
        """
        Register (before go may exit, so a C{cacheprog wait} right after it
        sees us).  False: it cannot be done, drain attached instead.
        """
        try:
            self._registration = self._uploaders.register(pending)
            if self._stdout_fd is not None:
                _point_stderr_at(self._registration.log_path)
                _leave_process_group()
        except OSError as e:
            sys.stderr.write(f"cacheprog: cannot detach the upload drain ({e}); waiting for it instead\n")
            return False
        return True

    def release_stdout(self) -> None:
        """
        Let go of the protocol pipe now that every answer is written:
        Twisted's stdio stops writing but keeps the descriptor open until
        exit, and go waits for the pipe's end, not for a message.
        """
        if self._stdout_fd is None:
            return
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.dup2(null, self._stdout_fd, inheritable=False)
        finally:
            os.close(null)

    def finish(self, uploaded: int, dropped: int) -> None:
        if self._registration is not None:
            self._registration.finish(uploaded, dropped)
            self._registration = None


def _leave_process_group() -> None:
    """
    A new session: whatever ends go's process group (a C{timeout} wrapper,
    a runner killing a step's group, Ctrl-C) leaves the uploads alone;
    their own time limit bounds them.  Container teardown still ends them.
    """
    try:
        os.setsid()
    except OSError:
        pass


def _point_stderr_at(path: str) -> None:
    """
    fds 1 and 2 (fd 1 already shows stderr) to the log file: the go
    command's stderr may be a pipe its reader drains to the end.
    """
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        os.dup2(fd, 2)
        os.dup2(fd, 1)
    finally:
        os.close(fd)

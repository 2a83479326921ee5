# -*- test-case-name: tests.unit.test_log -*-
"""
Logs as logfmt lines (C{time=… level=INFO msg="…" key=value}), like the Go
reference, to stderr or to the C{--log-output} file.  Never to stdout: that
is the protocol's.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import IO, cast

_ROOT = "cacheprog"
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}
_NAMES = {v: k for k, v in _LEVELS.items()}
_BARE = re.compile(r"^[^\s\"=]+$")


def parse_level(text: str) -> int:
    """
    C{debug}, C{Info}, C{WARN}, C{ERROR}, optionally with an offset
    (C{INFO+2}), as Go's slog accepts them; C{WARNING} is accepted too.

    @raise ValueError: for anything else.
    """
    m = re.fullmatch(r"\s*([A-Za-z]+)\s*(?:([+-])\s*(\d+))?\s*", text)
    if not m:
        raise ValueError(f"unknown log level {text!r} (use DEBUG, INFO, WARN or ERROR)")
    name = m.group(1).upper()
    name = "WARN" if name == "WARNING" else name
    if name not in _LEVELS:
        raise ValueError(f"unknown log level {text!r} (use DEBUG, INFO, WARN or ERROR)")
    level = _LEVELS[name]
    if m.group(2):
        # slog levels are 4 apart; stdlib levels 10 apart.
        offset = int(m.group(3)) * 10 // 4
        level += offset if m.group(2) == "+" else -offset
    return level


def _quote(value: object) -> str:
    text = str(value)
    if _BARE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _Logfmt(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        level = _NAMES.get(record.levelno, logging.getLevelName(record.levelno))
        parts = [f"time={_quote(stamp)}", f"level={level}", f"msg={_quote(record.getMessage())}"]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts.extend(f"{k}={_quote(v)}" for k, v in fields.items())
        return " ".join(parts)


class Logger:
    """
    A named logger taking structured fields: C{log.info("msg", key=value)}.
    """

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(f"{_ROOT}.{name}")

    def _emit(self, level: int, msg: str, fields: dict[str, object]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, msg, extra={"fields": fields})

    def debug(self, msg: str, **fields: object) -> None:
        self._emit(logging.DEBUG, msg, fields)

    def info(self, msg: str, **fields: object) -> None:
        self._emit(logging.INFO, msg, fields)

    def warn(self, msg: str, **fields: object) -> None:
        self._emit(logging.WARNING, msg, fields)

    def error(self, msg: str, **fields: object) -> None:
        self._emit(logging.ERROR, msg, fields)


def configure(level: int = logging.INFO, output: str = "", stream: IO[str] | None = None) -> None:
    """
    Send all cacheprog logs (and Twisted's, once L{route_twisted} ran) to
    C{output} (appended) or to C{stream}/stderr.
    """
    root = logging.getLogger(_ROOT)
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler: logging.Handler
    if output:
        handler = logging.FileHandler(output, mode="a", encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_Logfmt())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def route_twisted() -> None:
    """
    Send Twisted's own log events (unhandled errors in Deferreds, reactor
    trouble) to our log, never to stdout.
    """
    from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogBeginner

    twisted_log = Logger("twisted")
    levels = {LogLevel.critical: twisted_log.error, LogLevel.error: twisted_log.error, LogLevel.warn: twisted_log.warn}

    def observer(event: dict[str, object]) -> None:
        emit = levels.get(event.get("log_level"), twisted_log.debug)
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}\n{failure.getTraceback()}"  # type: ignore[attr-defined]
        emit(text)

    globalLogBeginner.beginLoggingTo([cast(ILogObserver, observer)], redirectStandardIO=False)

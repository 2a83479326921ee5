"""
What one go command leaves behind, read back: the programs' statistics
lines, their C{/usr/bin/time} files, and the processes still in its group.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import time
from collections.abc import Iterable

from bench.records import Stats, Usage

STATS_LINE = re.compile(r"cacheprog statistics\b(.*)$")
FIELD = re.compile(r"([A-Za-z_]+)=(\S+)")
DURATION = re.compile(r"[0-9.]+s")
#: The wrapper's C{/usr/bin/time -f}: one line per program process.
TIME_FORMAT = "rss_kb=%M elapsed=%e user=%U sys=%S"


def parse_stats(text: str) -> tuple[int, Stats, dict[str, str]]:
    """
    The statistics lines in a go command's stderr (one per program
    process): how many, their numeric fields summed, and their other
    fields (the last value of each: manifest=found).  Works for our logfmt
    line (fields inside the quoted msg) and for key=value lines after the
    words "cacheprog statistics".
    """
    lines = 0
    total: Stats = {}
    words: dict[str, str] = {}
    for line in text.splitlines():
        found = STATS_LINE.search(line)
        if not found:
            continue
        lines += 1
        for key, raw in FIELD.findall(found.group(1).replace('"', " ")):
            value = raw.rstrip("s") if DURATION.fullmatch(raw) else raw
            try:
                number = float(value)
            except ValueError:
                words[key] = value
                continue
            if not key.endswith("ratio"):
                total[key] = total.get(key, 0.0) + number
    return lines, {k: (int(v) if v.is_integer() else round(v, 3)) for k, v in total.items()}, words


def parse_time_files(directory: str) -> Usage:
    """
    The C{/usr/bin/time} files (C{proc.<pid>.time}) of one run's program processes.
    """
    rss: list[int] = []
    cpu = 0.0
    for path in sorted(glob.glob(os.path.join(directory, "proc.*.time"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f.read().splitlines() if "rss_kb=" in line]
        if not lines:
            continue
        fields = dict(FIELD.findall(lines[-1]))
        rss.append(int(fields.get("rss_kb", "0")))
        cpu += float(fields.get("user", "0")) + float(fields.get("sys", "0"))
    if not rss:
        return Usage()
    return Usage(procs=len(rss), rss_max_kb=max(rss), rss_sum_kb=sum(rss), prog_cpu_s=round(cpu, 3))


def wait_group_gone(pgid: int, limit: float) -> bool:
    """
    Wait until no process of group C{pgid} is left (the program may still
    be writing its statistics line and C{/usr/bin/time} its file after go
    exited).  False if some were still there after C{limit} seconds.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not any(pgid_of(pid) == pgid for pid in _pids()):
            return True
        time.sleep(0.02)
    return False


def _pids() -> Iterable[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def pgid_of(pid: int) -> int | None:
    """
    The process group of a live (not zombie) process, else None.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # pid (comm) state ppid pgrp ...; comm may contain spaces or parens.
    rest = data[data.rfind(b")") + 2 :].split()
    if rest[0] == b"Z":
        return None
    return int(rest[2])


def process_cpu(pid: int | None) -> float | None:
    """
    CPU seconds (user + system) a process has used so far, or None.
    """
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def load1() -> float:
    return round(os.getloadavg()[0], 2)

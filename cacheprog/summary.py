# -*- test-case-name: tests.unit.test_summary -*-
"""
The job summary: C{cacheprog summary} adds up the runs the run log
(L{cacheprog.runlog}) recorded since a mark or a time, one row per go
command and a total, as a terminal table or as Markdown; C{--github}
appends the Markdown, with a Mermaid chart of hits and misses per command,
to the file C{$GITHUB_STEP_SUMMARY} names (GitHub shows it on the run's
page).

    cacheprog summary --mark job-start     # at the start of the job (optional)
    ... go build / go test / golangci-lint ...
    cacheprog summary --github             # at the end: table on stdout, Markdown to the job page

Imported only by the C{summary} command: it costs the go commands nothing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence

from cacheprog import config as _config
from cacheprog.runlog import RunLog, mark_record

#: The columns: record field, table heading, kind.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("gets", "gets", "count"),
    ("local_hits", "local hits", "count"),
    ("remote_hits", "remote hits", "count"),
    ("misses", "misses", "count"),
    ("puts", "puts", "count"),
    ("bytes_down", "down", "bytes"),
    ("bytes_up", "up", "bytes"),
    ("remote_wait", "remote wait", "seconds"),
    ("uploads_dropped", "uploads dropped", "count"),
    ("remote_faults", "remote faults", "count"),
)


class SummaryError(Exception):
    """
    A bad C{summary} argument; the message names the flag or variable.
    """


def parse_since(text: str, now: float) -> float | str:
    """
    C{--since}: a time (RFC 3339 or Unix seconds), a Go duration meaning
    that long ago (C{90m}), or else the name of a mark.
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    else:
        if stamp.tzinfo is None:
            stamp = stamp.astimezone()
        return stamp.timestamp()
    try:
        return now - _config.parse_duration(text)
    except ValueError:
        return text


def select_runs(records: Iterable[Mapping[str, object]], since: float | str | None) -> list[Mapping[str, object]]:
    """
    The runs after C{since}: a time, a mark's name (its last occurrence),
    or None for "since the last mark" (all runs when there is none).

    @raise SummaryError: for a mark that is not in the log.
    """
    runs: list[Mapping[str, object]] = []
    found = not isinstance(since, str)
    for record in records:
        kind = record.get("kind")
        if kind == "mark" and (since is None or record.get("mark") == since):
            runs, found = [], True
        elif kind == "run":
            runs.append(record)
    if not found:
        raise SummaryError(f"--since: no mark named {since!r} in the run log")
    if isinstance(since, float):
        runs = [r for r in runs if _number(r.get("time")) >= since]
    return runs


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def totals(runs: Sequence[Mapping[str, object]]) -> dict[str, float]:
    return {field: sum(_number(r.get(field)) for r in runs) for field, _, _ in COLUMNS}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _cell(value: float, kind: str) -> str:
    if kind == "seconds":
        return f"{value:.1f}s"
    if kind == "bytes":
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size:
                return f"{value / size:.1f} {unit}"
        return f"{value:.0f} B"
    return f"{value:.0f}"


def _rows(runs: Sequence[Mapping[str, object]]) -> list[list[str]]:
    rows = []
    for number, run in enumerate(runs, 1):
        label = f"{number}. {run.get('command') or '?'}"
        rows.append([label, *(_cell(_number(run.get(f)), kind) for f, _, kind in COLUMNS)])
    total = totals(runs)
    rows.append([f"total ({_plural(len(runs), 'run')})", *(_cell(total[f], kind) for f, _, kind in COLUMNS)])
    return rows


def table(runs: Sequence[Mapping[str, object]]) -> str:
    """
    A plain-text table for the terminal: one row per go command, a total.
    """
    heading = ["go command", *(h for _, h, _ in COLUMNS)]
    rows = [heading, *_rows(runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(heading))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0 or n == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def _mermaid_label(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def chart(runs: Sequence[Mapping[str, object]]) -> str:
    """
    A Mermaid bar chart (GitHub renders it): per go command, the gets
    (back bar) and the hits in front of them, so the visible rest of each
    back bar is the misses.
    """
    labels = ", ".join(_mermaid_label(f"{n}") for n in range(1, len(runs) + 1))
    gets = ", ".join(f"{_number(r.get('gets')):.0f}" for r in runs)
    hits = ", ".join(f"{_number(r.get('local_hits')) + _number(r.get('remote_hits')):.0f}" for r in runs)
    return (
        "```mermaid\n"
        "xychart-beta\n"
        '    title "Cache hits (front) of gets (back), per go command"\n'
        f"    x-axis [{labels}]\n"
        '    y-axis "requests"\n'
        f"    bar [{gets}]\n"
        f"    bar [{hits}]\n"
        "```\n"
    )


def markdown(runs: Sequence[Mapping[str, object]], title: str = "Go build cache (cacheprog)") -> str:
    """
    The summary as Markdown: a heading, the hit ratio, the table, a chart.
    """
    total = totals(runs)
    hits = total["local_hits"] + total["remote_hits"]
    ratio = f"{hits / total['gets']:.0%}" if total["gets"] else "n/a"
    heading = ["go command", *(h for _, h, _ in COLUMNS)]
    rows = _rows(runs)
    lines = [
        f"### {title}",
        "",
        f"{_plural(len(runs), 'go command')}, {hits:.0f} of {total['gets']:.0f} gets hit ({ratio}), "
        f"{total['misses']:.0f} misses, {_cell(total['remote_wait'], 'seconds')} waited on remote storage.",
        "",
        "| " + " | ".join(heading) + " |",
        "|" + "---|" + "---:|" * len(COLUMNS),
    ]
    for n, row in enumerate(rows):
        first = _md_escape(row[0])
        first = f"**{first}**" if n == len(rows) - 1 else f"`{first}`"
        lines.append("| " + " | ".join([first, *row[1:]]) + " |")
    out = "\n".join(lines) + "\n"
    if runs:
        out += "\n" + chart(runs)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cacheprog summary",
        description="Add up the cacheprog runs of this job (one per go command) from the run log in the local root.",
    )
    parser.add_argument("--root-directory", help="the local root the runs used (CACHEPROG_ROOT_DIRECTORY)")
    parser.add_argument("--since", help="a mark name, a time (RFC 3339, Unix seconds) or a duration ago (90m)")
    parser.add_argument("--mark", metavar="NAME", help="record a mark named NAME and exit (the start of a job)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown instead of the table")
    parser.add_argument(
        "--github", action="store_true", help="also append the Markdown to the file $GITHUB_STEP_SUMMARY names"
    )
    return parser


def _root(given: str | None, environ: Mapping[str, str]) -> str:
    for value in (given, environ.get("CACHEPROG_ROOT_DIRECTORY"), environ.get("CACHEPROG_DISK_STORAGE_ROOT")):
        if value and value.strip():
            return os.path.abspath(value)
    return _config.default_root()


def main(argv: Sequence[str], environ: Mapping[str, str], now: float | None = None) -> int:
    """
    C{cacheprog summary ...}; returns the exit status.
    """
    args = _parser().parse_args(list(argv))
    now = time.time() if now is None else now
    log = RunLog(_root(args.root_directory, environ))
    try:
        if args.mark:
            os.makedirs(os.path.dirname(log.path), exist_ok=True)
            log.append(mark_record(args.mark, now))
            return 0
        target = _github_target(environ) if args.github else ""
        runs = select_runs(log.records(), None if args.since is None else parse_since(args.since, now))
        sys.stdout.write(markdown(runs) if args.markdown else table(runs))
        if target:
            with open(target, "a", encoding="utf-8") as f:
                f.write(markdown(runs) + "\n")
    except (SummaryError, OSError) as e:
        sys.stderr.write(f"cacheprog summary: {e}\n")
        return 1
    return 0


def _github_target(environ: Mapping[str, str]) -> str:
    target = environ.get("GITHUB_STEP_SUMMARY", "")
    if not target:
        raise SummaryError("--github: GITHUB_STEP_SUMMARY is not set (GitHub Actions sets it in every step)")
    return target

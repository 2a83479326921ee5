"""
The protocol relay of the analysis runs:

    python -m bench.relay LOG COMMAND [ARG...]

runs C{/bin/sh -c COMMAND} with our stdin and stdout relayed, timestamps
every request and answer (C{time.monotonic}, the system-wide clock, so the
harness can compare with go's exit), and writes C{LOG} (C{$$} replaced by
our pid) as JSON at the end.  Standard library only: it starts with every
go command of a relayed run.

When the program closes its stdout, the relay closes its own at once, so
that go sees the EOF when it would without the relay (a detached drain
keeps the program running after that), then waits for the program.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from bench.records import Relayed

#: (monotonic time, "req"/"ok"/"miss"/"err"/"eof", request ID, command)
Event = tuple[float, str, int, str]


def relay(argv: Sequence[str]) -> int:
    log_path, command, *rest = argv
    log_path = log_path.replace("$$", str(os.getpid()))
    child = subprocess.Popen(["/bin/sh", "-c", command, "sh", *rest], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    events: list[Event] = []
    lock = threading.Lock()

    def requests() -> None:
        # go writes a request's JSON line, an empty line, then for a put the
        # body as one JSON string line: only lines that open an object count.
        assert child.stdin is not None
        try:
            for line in iter(sys.stdin.buffer.readline, b""):
                child.stdin.write(line)
                child.stdin.flush()
                if not line.startswith(b"{"):
                    continue
                with contextlib.suppress(ValueError):
                    request = json.loads(line)
                    with lock:
                        events.append(
                            (time.monotonic(), "req", int(request.get("ID", -1)), str(request.get("Command", "")))
                        )
        finally:
            with contextlib.suppress(OSError):
                child.stdin.close()

    threading.Thread(target=requests, daemon=True).start()
    out = sys.stdout.buffer
    for line in iter(child.stdout.readline, b""):
        out.write(line)
        out.flush()
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        kind = "miss" if answer.get("Miss") else ("err" if answer.get("Err") else "ok")
        with lock:
            events.append((time.monotonic(), kind, int(answer.get("ID", -1)), ""))
    with lock:
        events.append((time.monotonic(), "eof", -1, ""))
        with open(log_path, "w", encoding="utf-8") as f:
            json.dump(events, f)
    out.close()
    os.close(1)
    return child.wait()


def read_logs(paths: Sequence[str]) -> list[list[Event]]:
    logs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            logs.append([(float(t), str(k), int(i), str(c)) for t, k, i, c in json.load(f)])
    return logs


def summarize(logs: Sequence[Sequence[Event]]) -> Relayed:
    """
    Gets, the time-weighted mean number of gets in flight (over the time at
    least one was), the max, percentiles of go's wait per get, and the
    time from the last close answer to that program's stdout EOF.
    """
    gets = peak = 0
    busy = weighted = 0.0
    waits: list[float] = []
    close_answer = eof = None
    for events in logs:
        started: dict[int, float] = {}
        closes: set[int] = set()
        inflight = 0
        last = None
        for t, kind, ident, command in events:
            if last is not None and inflight > 0:
                busy += t - last
                weighted += inflight * (t - last)
            last = t
            if kind == "req" and command == "close":
                closes.add(ident)
            elif kind == "req" and command == "get":
                started[ident] = t
                inflight += 1
                gets += 1
                peak = max(peak, inflight)
            elif kind == "eof":
                eof = t
            elif ident in closes:
                close_answer = t
            elif kind != "req" and ident in started:
                waits.append(1000 * (t - started.pop(ident)))
                inflight -= 1
    waits.sort()

    def pct(p: float) -> float | None:
        return round(waits[min(len(waits) - 1, int(p * len(waits)))], 2) if waits else None

    return Relayed(
        gets=gets,
        mean_inflight_busy=round(weighted / busy, 2) if busy else None,
        busy_s=round(busy, 2),
        max_inflight=peak,
        get_ms_p50=pct(0.5),
        get_ms_p90=pct(0.9),
        get_ms_p99=pct(0.99),
        close_to_eof_ms=None if close_answer is None or eof is None else round(1000 * (eof - close_answer), 1),
    )


def last_close_answer(logs: Sequence[Sequence[Event]]) -> float | None:
    answers: list[float] = []
    for events in logs:
        closes = {i for _, k, i, c in events if k == "req" and c == "close"}
        answers.extend(t for t, k, i, _ in events if k != "req" and k != "eof" and i in closes)
    return max(answers, default=None)


if __name__ == "__main__":
    sys.exit(relay(sys.argv[1:]))

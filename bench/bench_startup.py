#!/usr/bin/env python3
"""
Start-up latency: the time from starting a cacheprog command to the
handshake line on its stdout (what the go command waits for before its
first request), the median of N runs, plus the time to exit after stdin
closes.

    python bench/bench_startup.py [-n 20] [--label NAME] -- COMMAND [ARG ...]
    python bench/bench_startup.py -- python -m cacheprog
    python bench/bench_startup.py -- dist/cacheprog

Each run gets a fresh local root (C{--root-directory}) under one temporary
directory; the command's stderr is discarded.  Runs are sequential.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def one_run(command: list[str], root: str) -> tuple[float, float]:
    """
    Start C{command}, wait for its first stdout line, close stdin, wait for
    exit.  @return: (seconds to the first line, seconds from close to exit)
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*command, "--root-directory", root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    first = time.perf_counter() - start
    if not line.startswith(b"{"):
        proc.kill()
        proc.wait()
        raise SystemExit(f"no handshake from {command!r}: {line!r}")
    closed = time.perf_counter()
    proc.stdin.close()
    proc.stdout.read()
    code = proc.wait()
    if code != 0:
        raise SystemExit(f"{command!r} exited {code}")
    return first, time.perf_counter() - closed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2, help="runs not counted (page cache, unpacking)")
    parser.add_argument("--label", default="")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="cacheprog-startup-")
    try:
        firsts: list[float] = []
        exits: list[float] = []
        for i in range(args.warmup + args.runs):
            first, exit_ = one_run(args.command, os.path.join(work, f"root{i}"))
            if i >= args.warmup:
                firsts.append(first)
                exits.append(exit_)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ms = [1000 * f for f in sorted(firsts)]
    label = args.label or " ".join(args.command)
    print(
        f"{label}: handshake median {statistics.median(ms):.0f} ms"
        f" (min {ms[0]:.0f}, max {ms[-1]:.0f}, n={len(ms)});"
        f" exit after close median {1000 * statistics.median(exits):.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

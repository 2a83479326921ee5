#!/usr/bin/env python3
"""
Start-up as the go command sees it, for several GOCACHEPROG programs side by
side: from exec to the handshake line, to the answer of a first get that is a
local hit, and from the close answer to stdout EOF (what C{go} waits for
before it exits).

    python bench/bench_startup.py [-n 15] [--binary dist/cacheprog]
                                  [--reference /work/ref-bin/cacheprog]
                                  [--program NAME=COMMAND ...] [--out bench/results/startup]

Programs: C{python -m cacheprog} (this checkout) always; the one-file
binary when it exists (C{--binary}); the Go reference when given
(C{--reference}); any C{--program NAME=COMMAND}.  Every program gets the
same environment: C{CACHEPROG_ROOT_DIRECTORY} (its own local tier, seeded
with one entry by a put in a first, uncounted run), no remote store.  Runs
are interleaved (one run of each program per round, order rotated each
round), so the programs share the machine's load; the table shows medians
and the ratios to the reference when there is one.  Writes
C{<out>.md} (the table), C{<out>.json} (every run) and C{<out>.png} (the
plot, when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = b"cacheprog start-up benchmark\n"
ACTION = base64.b64encode(hashlib.sha256(b"startup action").digest()).decode()
OUTPUT = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
#: The phases measured, in the order of the table.
PHASES = ("handshake", "first_answer", "close_to_eof", "total")


@dataclass
class Program:
    name: str
    command: list[str]
    root: str = ""
    runs: list[dict[str, float]] = field(default_factory=list)

    def median(self, phase: str) -> float:
        return statistics.median(run[phase] for run in self.runs)


def _environment(root: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEPROG_")}
    env.update(CACHEPROG_ROOT_DIRECTORY=root, CACHEPROG_REMOTE_STORAGE_TYPE="disabled", CACHEPROG_LOG_LEVEL="WARN")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _send(proc: subprocess.Popen[bytes], request: dict[str, object], body: bytes | None = None) -> None:
    assert proc.stdin is not None
    data = json.dumps(request).encode() + b"\n\n"
    if body is not None:
        data += b'"' + base64.b64encode(body) + b'"\n'
    proc.stdin.write(data)
    proc.stdin.flush()


def _line(proc: subprocess.Popen[bytes], what: str) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"{what}: stdout ended early")
    answer: dict[str, object] = json.loads(line)
    return answer


def seed(program: Program) -> None:
    """
    Put the entry the timed runs get, with the program itself (its own layout).
    """
    proc = subprocess.Popen(
        program.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_environment(program.root)
    )
    _line(proc, f"{program.name} seed handshake")
    _send(proc, {"ID": 1, "Command": "put", "ActionID": ACTION, "OutputID": OUTPUT, "BodySize": len(BODY)}, BODY)
    answer = _line(proc, f"{program.name} seed put")
    if "DiskPath" not in answer:
        raise SystemExit(f"{program.name}: the seed put was answered {answer}")
    _send(proc, {"ID": 2, "Command": "close"})
    _line(proc, f"{program.name} seed close")
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdin.close()
    proc.stdout.read()
    proc.wait()


def one_run(program: Program) -> dict[str, float]:
    """
    Exec, handshake, one get (a local hit), close, stdout EOF.
    """
    env = _environment(program.root)
    start = time.perf_counter()
    proc = subprocess.Popen(
        program.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert proc.stdout is not None and proc.stdin is not None
    _line(proc, f"{program.name} handshake")
    handshake = time.perf_counter()
    _send(proc, {"ID": 1, "Command": "get", "ActionID": ACTION})
    answer = _line(proc, f"{program.name} get")
    first = time.perf_counter()
    if answer.get("OutputID") != OUTPUT:
        raise SystemExit(f"{program.name}: the get was not a hit: {answer}")
    _send(proc, {"ID": 2, "Command": "close"})
    _line(proc, f"{program.name} close")
    closed = time.perf_counter()
    # As go does: after the close answer, close stdin, wait for stdout EOF.
    proc.stdin.close()
    rest = proc.stdout.read()
    eof = time.perf_counter()
    code = proc.wait()
    if rest.strip() or code != 0:
        raise SystemExit(f"{program.name}: exit {code}, stdout after close {rest!r}")
    return {
        "handshake": 1000 * (handshake - start),
        "first_answer": 1000 * (first - start),
        "close_to_eof": 1000 * (eof - closed),
        "total": 1000 * (eof - start),
    }


def table(programs: list[Program], reference: Program | None) -> str:
    head = "| program | handshake | first local hit | close → stdout EOF | total |"
    lines = [head, "|---|---:|---:|---:|---:|"]
    for p in programs:
        cells = [f"{p.median(phase):.1f} ms" for phase in PHASES]
        if reference is not None and p is not reference:
            cells = [
                f"{cell} ({p.median(phase) / max(reference.median(phase), 1e-3):.1f}x)"
                for cell, phase in zip(cells, PHASES, strict=True)
            ]
        lines.append(f"| {p.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(programs: list[Program], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(programs)
    for i, p in enumerate(programs):
        xs = [j + i * width for j in range(len(PHASES))]
        ax.bar(xs, [p.median(phase) for phase in PHASES], width, label=p.name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(PHASES))])
    ax.set_xticklabels(["handshake", "first local hit", "close → EOF", "total"])
    ax.set_ylabel("ms after exec (median)")
    ax.set_title("cacheprog start-up as go sees it")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--runs", type=int, default=15)
    parser.add_argument("--binary", default=os.path.join(REPO, "dist", "cacheprog"))
    parser.add_argument("--reference", default="", help="the Go reference binary (platacard/cacheprog)")
    parser.add_argument("--program", action="append", default=[], help="NAME=COMMAND, more programs")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "startup"))
    args = parser.parse_args(argv)

    programs = [Program("python -m cacheprog", [sys.executable, "-m", "cacheprog"])]
    if os.path.exists(args.binary):
        programs.insert(0, Program("binary", [os.path.abspath(args.binary)]))
    reference = None
    if args.reference:
        reference = Program("Go reference", [os.path.abspath(args.reference)])
        programs.append(reference)
    for spec in args.program:
        name, _, command = spec.partition("=")
        programs.append(Program(name, shlex.split(command)))
    work = tempfile.mkdtemp(prefix="cacheprog-startup-")
    try:
        for i, p in enumerate(programs):
            p.root = os.path.join(work, f"root{i}")
            seed(p)
            one_run(p)  # page cache, unpacking: not counted
        for n in range(args.runs):
            shift = n % len(programs)
            for p in programs[shift:] + programs[:shift]:
                p.runs.append(one_run(p))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(programs, reference)
    load = os.getloadavg()[0]
    header = f"Median of {args.runs} runs, interleaved; 1-minute load {load:.2f} at the end.\n\n"
    print(header + text, end="")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(header + text)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump({p.name: {"command": p.command, "runs": p.runs} for p in programs}, f, indent=1)
    if plot(programs, args.out + ".png"):
        print(f"plot: {os.path.relpath(args.out + '.png', REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

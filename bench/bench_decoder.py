#!/usr/bin/env python3
"""
The request decoder on a long header line without a newline (what a broken
or hostile writer sends): seconds to reject it, this checkout's decoder
side by side with the one of a baseline commit (default: before the fix of
issue 12, which rescanned the whole buffer on every read).

    python bench/bench_decoder.py [--baseline cf8a2c1] [--sizes 1,4,16]

Feeds the line in 8 KiB reads (what StandardIO hands us) and prints a
markdown table; writes bench/results/decoder.md and decoder.png (if
matplotlib is there).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from types import ModuleType

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
RESULTS = os.path.join(REPO, "bench", "results")
READ = 8192  # twisted.internet.fdesc.readFromFD, what StandardIO hands us
MIB = 1 << 20


def load_baseline(commit: str) -> ModuleType:
    source = subprocess.run(
        ["git", "-C", REPO, "show", f"{commit}:cacheprog/wire.py"], check=True, capture_output=True
    ).stdout
    path = os.path.join(tempfile.mkdtemp(prefix="cacheprog-bench-decoder-"), "wire_baseline.py")
    with open(path, "wb") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("wire_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wire_baseline"] = module
    spec.loader.exec_module(module)
    return module


def reject_time(module: ModuleType, size: int) -> tuple[float, str]:
    """
    Seconds until the decoder refuses (or has swallowed) a C{size}-byte line.
    """
    decoder = module.RequestDecoder()
    chunk = b"x" * READ
    started = time.perf_counter()
    outcome = f"buffered all {size // MIB} MiB"
    for _ in range(size // READ):
        try:
            decoder.feed(chunk)
        except module.ProtocolError:
            outcome = "refused"
            break
    return time.perf_counter() - started, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="cf8a2c1", help="commit whose wire.py is the baseline")
    parser.add_argument("--sizes", default="1,4,16", help="line sizes in MiB")
    args = parser.parse_args()
    from cacheprog import wire

    baseline = load_baseline(args.baseline)
    rows = []
    for mib in (int(s) for s in args.sizes.split(",")):
        old, old_outcome = reject_time(baseline, mib * MIB)
        new, new_outcome = reject_time(wire, mib * MIB)
        rows.append((mib, old, old_outcome, new, new_outcome, old / new if new else float("inf")))
    lines = [
        f"| line | baseline {args.baseline} | | this checkout | | ratio |",
        "|---:|---:|---|---:|---|---:|",
    ]
    for mib, old, oo, new, no, ratio in rows:
        lines.append(f"| {mib} MiB | {old:.3f} s | {oo} | {new * 1000:.2f} ms | {no} | {ratio:,.0f}x |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "decoder.md"), "w") as f:
        f.write("# Decoder on a long header line (8 KiB reads)\n\n" + table + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sizes = [r[0] for r in rows]
    ax.plot(sizes, [r[1] for r in rows], "o-", label=f"baseline {args.baseline}")
    ax.plot(sizes, [r[3] for r in rows], "o-", label="this checkout")
    ax.set_xlabel("line size (MiB)")
    ax.set_ylabel("seconds")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "decoder.png"))


if __name__ == "__main__":
    main()

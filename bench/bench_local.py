#!/usr/bin/env python3
"""
What verifying local hits costs: C{DiskStore.lookup} over entries whose
sizes follow a real go build cache (the C{-d} files of C{$(go env GOCACHE)},
or a built-in sample), with the re-hash limit at 0 (size check only), 4 KiB,
16 KiB, 64 KiB, 1 MiB and everything.  All limits run side by side in one
process, rounds interleaved; the page cache is warm (as for hits).

    python bench/bench_local.py [--gocache DIR] [--entries 1500] [--rounds 5]

Prints a markdown table and writes bench/results/local_verify.md and
local_verify.png (if matplotlib is there).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cacheprog.local import DiskStore  # noqa: E402
from cacheprog.spool import Spool  # noqa: E402

RESULTS = os.path.join(REPO, "bench", "results")
LIMITS = [("size only", -1), ("4 KiB", 4 << 10), ("16 KiB", 16 << 10), ("64 KiB", 64 << 10), ("1 MiB", 1 << 20)]
LIMITS.append(("all", 1 << 62))
WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)


def gocache_sizes(gocache: str) -> list[int]:
    sizes = []
    for directory, _, names in os.walk(gocache):
        sizes += [os.path.getsize(os.path.join(directory, n)) for n in names if n.endswith("-d")]
    return sizes


def build(root: str, sizes: list[int]) -> list[bytes]:
    store = DiskStore(root)
    store.probe()
    actions = []
    for i, size in enumerate(sizes):
        body = os.urandom(size)
        action = hashlib.sha256(b"%d" % i).digest()
        spool = Spool(store, in_memory=True)
        spool.write(body)
        spool.commit(action, hashlib.sha256(body).digest(), WHEN)
        actions.append(action)
    store.flush()
    return actions


def lookups(root: str, actions: list[bytes], limit: int) -> float:
    store = DiskStore(root, verify_limit=limit)
    started = time.perf_counter()
    for action in actions:
        assert store.lookup(action) is not None
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gocache", default="", help="a go build cache to take sizes from (default: go env GOCACHE)")
    parser.add_argument("--entries", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    gocache = args.gocache or subprocess.run(["go", "env", "GOCACHE"], capture_output=True, text=True).stdout.strip()
    population = gocache_sizes(gocache) if gocache and os.path.isdir(gocache) else []
    if not population:
        population = [300, 2_000, 9_500, 40_000, 830_000]
    rng = random.Random(12)
    sizes = [rng.choice(population) for _ in range(args.entries)]
    root = tempfile.mkdtemp(prefix="cacheprog-bench-local-")
    try:
        actions = build(root, sizes)
        times: dict[str, list[float]] = {name: [] for name, _ in LIMITS}
        for r in range(args.rounds):
            order = LIMITS[r % len(LIMITS) :] + LIMITS[: r % len(LIMITS)]
            for name, limit in order:
                times[name].append(lookups(root, actions, limit))
    finally:
        shutil.rmtree(root, True)
    base = statistics.median(times["size only"])
    lines = [
        f"{len(sizes)} entries, sizes drawn from {len(population)} outputs of {gocache or 'a built-in sample'} "
        f"(median {statistics.median(population):.0f} B); median of {args.rounds} rounds",
        "",
        "| re-hash entries up to | verified | per lookup | ratio to size only |",
        "|---|---:|---:|---:|",
    ]
    for name, limit in LIMITS:
        median = statistics.median(times[name])
        share = sum(1 for s in sizes if s <= limit) / len(sizes)
        lines.append(f"| {name} | {share:.0%} | {median / len(sizes) * 1e6:.1f} µs | {median / base:.2f} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "local_verify.md"), "w") as f:
        f.write("# Cost of verifying local hits\n\n" + table + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [n for n, _ in LIMITS]
    ax.bar(names, [statistics.median(times[n]) / len(sizes) * 1e6 for n in names])
    ax.set_ylabel("µs per lookup")
    ax.set_xlabel("re-hash entries up to")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "local_verify.png"))


if __name__ == "__main__":
    main()

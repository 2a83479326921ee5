#!/usr/bin/env python3
"""
Core benchmark: C{go build std} with the go command's own cache against
C{go build std} through cacheprog.

Scenarios (each with its own fresh GOCACHE; go still needs one with
GOCACHEPROG):

- C{native-warm}: the go command's disk cache, already filled.
- C{cacheprog-local}: cacheprog with a filled local tier, no remote.
- C{cacheprog-dir}: cacheprog with an empty local tier and a filled C{dir}
  store (a fresh CI runner with a shared cache volume).
- with C{--cold}: C{native-cold} (empty GOCACHE every run) and
  C{cacheprog-cold} (empty local tier and empty C{dir} store every run, so
  every result is written locally and uploaded).  About a minute a run on
  2 cores; without C{--cold} the warm scenarios are primed by one untimed
  cold build each instead.

Every run is timed with C{time.perf_counter} around the go command; the
table shows medians and ratios against C{native-warm} (and cacheprog cold
against native cold).  Raw runs go to C{<out>/core.json}, a bar chart to
C{<out>/core.png} (needs matplotlib: C{pip install matplotlib}, or
C{make bench}).

    python bench/bench_core.py --runs 3 [--cold]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.goenv import go_environ  # noqa: E402

STATS = re.compile(r'cacheprog statistics ([^"\n]*)')

DESCRIPTIONS = {
    "native-cold": "go's disk cache, empty",
    "native-warm": "go's disk cache, filled",
    "cacheprog-cold": "cacheprog, empty local tier + empty dir store (uploads)",
    "cacheprog-local": "cacheprog, filled local tier, no remote",
    "cacheprog-dir": "cacheprog, empty local tier, filled dir store",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per scenario (default: 3)")
    parser.add_argument("--cold", action="store_true", help="also time cold builds (about 1 min each on 2 cores)")
    parser.add_argument("--target", default="std", help="what to build (default: std)")
    parser.add_argument("--go", default=shutil.which("go") or "go", help="the go command")
    parser.add_argument(
        "--cacheprog",
        default=os.environ.get("CACHEPROG", f"{shlex.quote(sys.executable)} -m cacheprog"),
        help="the cacheprog command (default: $CACHEPROG, else this Python's -m cacheprog)",
    )
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"), help="where core.json/png go")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--replot", action="store_true", help="no runs: table and plot from <out>/core.json")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, work: str) -> None:
        self.args = args
        self.work = work
        self.results: dict[str, dict[str, Any]] = {}
        self._counter = 0

    def fresh(self, name: str) -> str:
        self._counter += 1
        path = os.path.join(self.work, f"{self._counter:02d}-{name}")
        os.makedirs(path)
        return path

    def environ(self, gocache: str, local: str | None = None, store: str | None = None) -> dict[str, str]:
        env = go_environ(gocache, goflags="")
        if local is not None:
            env["GOCACHEPROG"] = f"{self.args.cacheprog} --root-directory {shlex.quote(local)}"
        if store is not None:
            env.update(CACHEPROG_REMOTE_STORAGE_TYPE="dir", CACHEPROG_DIR_STORAGE_ROOT=store)
        return env

    def build(self, env: dict[str, str]) -> tuple[float, dict[str, str]]:
        """
        One timed C{go build <target>}; returns seconds and cacheprog's statistics.
        """
        argv = [self.args.go, "build", self.args.target]
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=self.work, env=env, capture_output=True, text=True, timeout=1800)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"bench: {' '.join(argv)} exited {done.returncode}:\n{done.stderr[-4000:]}")
        found = STATS.findall(done.stderr)
        stats = dict(f.split("=", 1) for f in found[-1].split()) if found else {}
        return elapsed, stats

    def record(self, name: str, seconds: float, stats: dict[str, str]) -> None:
        entry = self.results.setdefault(name, {"description": DESCRIPTIONS[name], "seconds": [], "stats": []})
        entry["seconds"].append(round(seconds, 4))
        if stats:
            entry["stats"].append(stats)
        note = ""
        if stats:
            note = "  ".join(f"{k}={stats.get(k, '?')}" for k in ("local_hits", "remote_hits", "misses", "uploads"))
        print(f"  {name:16} run {len(entry['seconds'])}: {seconds:7.2f}s  {note}", flush=True)

    def run(self) -> None:
        runs = self.args.runs
        # native: cold runs (each in an empty GOCACHE), then warm runs in the last one
        native_cache = ""
        if self.args.cold:
            for _ in range(runs):
                native_cache = os.path.join(self.fresh("native-cold"), "gocache")
                self.record("native-cold", *self.build(self.environ(native_cache)))
        else:
            native_cache = os.path.join(self.fresh("native-prime"), "gocache")
            print("  priming go's disk cache (untimed cold build)", flush=True)
            self.build(self.environ(native_cache))
        for _ in range(runs):
            self.record("native-warm", *self.build(self.environ(native_cache)))

        # cacheprog: cold runs (empty local tier and dir store each), or one priming build
        if self.args.cold:
            for _ in range(runs):
                base = self.fresh("cacheprog-cold")
                local, store = os.path.join(base, "local"), os.path.join(base, "store")
                self.record("cacheprog-cold", *self.build(self.environ(os.path.join(base, "gocache"), local, store)))
        else:
            base = self.fresh("cacheprog-prime")
            local, store = os.path.join(base, "local"), os.path.join(base, "store")
            print("  priming cacheprog's local tier and dir store (untimed cold build)", flush=True)
            self.build(self.environ(os.path.join(base, "gocache"), local, store))

        gocache = os.path.join(self.fresh("cacheprog-local"), "gocache")
        for _ in range(runs):
            self.record("cacheprog-local", *self.build(self.environ(gocache, local)))

        gocache = os.path.join(self.fresh("cacheprog-dir"), "gocache")
        empty_local = os.path.join(self.work, "dir-local")
        for _ in range(runs):
            shutil.rmtree(empty_local, ignore_errors=True)
            self.record("cacheprog-dir", *self.build(self.environ(gocache, empty_local, store)))

    def summarize(self) -> None:
        for entry in self.results.values():
            entry["median"] = round(statistics.median(entry["seconds"]), 4)
        base = self.results["native-warm"]["median"]
        for name, entry in self.results.items():
            if name.endswith("-cold"):
                reference = self.results.get("native-cold", {}).get("median")
                entry["ratio_vs"] = "native-cold"
                entry["ratio"] = round(entry["median"] / reference, 3) if reference else None
            else:
                entry["ratio_vs"] = "native-warm"
                entry["ratio"] = round(entry["median"] / base, 3)


def go_version(go: str) -> str:
    return subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout.strip()


def table(results: dict[str, dict[str, Any]], runs: int, target: str) -> str:
    lines = [
        f"`go build {target}`, median of {runs} run(s)",
        "",
        "| scenario | what | median (s) | min (s) | max (s) | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, entry in results.items():
        ratio = "-" if entry["ratio"] is None else f"{entry['ratio']:.2f}x {entry['ratio_vs']}"
        lines.append(
            f"| {name} | {entry['description']} | {entry['median']:.2f} | {min(entry['seconds']):.2f} "
            f"| {max(entry['seconds']):.2f} | {ratio} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], meta: dict[str, Any], path: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is missing: no plot (pip install matplotlib, or make bench)"
    # Cold builds take minutes, warm ones a second or two: one panel each.
    groups = [[n for n in results if n.endswith("-cold")], [n for n in results if not n.endswith("-cold")]]
    groups = [g for g in groups if g]
    fig, axes = plt.subplots(
        1, len(groups), figsize=(4 + 2.2 * len(results), 4.8), squeeze=False, width_ratios=[len(g) for g in groups]
    )
    for ax, names in zip(axes[0], groups, strict=True):
        medians = [results[n]["median"] for n in names]
        low = [results[n]["median"] - min(results[n]["seconds"]) for n in names]
        high = [max(results[n]["seconds"]) - results[n]["median"] for n in names]
        colors = ["#7f7f7f" if n.startswith("native") else "#1f77b4" for n in names]
        bars = ax.bar(names, medians, yerr=[low, high], capsize=4, color=colors)
        for bar, name in zip(bars, names, strict=True):
            entry = results[name]
            label = f"{entry['median']:.2f}s"
            if entry["ratio"] is not None:
                label += f"\n{entry['ratio']:.2f}x {entry['ratio_vs']}"
            top = max(entry["seconds"])
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("seconds (median; whiskers: min-max)")
        ax.set_title("cold" if names[0].endswith("-cold") else "warm")
        ax.margins(y=0.25)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"go build {meta['target']}: {meta['go']}, {meta['cpus']} CPUs, {meta['runs']} runs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


def main() -> None:
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.replot:
        with open(os.path.join(args.out, "core.json"), encoding="utf-8") as f:
            saved = json.load(f)
        print(table(saved["scenarios"], saved["meta"]["runs"], saved["meta"]["target"]))
        print(f"bench: {plot(saved['scenarios'], saved['meta'], os.path.join(args.out, 'core.png'))}")
        return
    work = tempfile.mkdtemp(prefix="cacheprog-bench-")
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "go": go_version(args.go),
        "python": platform.python_version(),
        "cacheprog": args.cacheprog,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "target": args.target,
        "runs": args.runs,
        "cold": args.cold,
    }
    print(f"bench: {meta['go']}, cacheprog: {args.cacheprog}, work dir {work}", flush=True)
    bench = Bench(args, work)
    try:
        bench.run()
    finally:
        if args.keep:
            print(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    bench.summarize()
    with open(os.path.join(args.out, "core.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "scenarios": bench.results}, f, indent=2)
        f.write("\n")
    print()
    print(table(bench.results, args.runs, args.target))
    print()
    print(f"bench: wrote {os.path.join(args.out, 'core.json')}")
    print(f"bench: {plot(bench.results, meta, os.path.join(args.out, 'core.png'))}")


if __name__ == "__main__":
    main()

"""
The results as people read them: C{harness.md} (the issues' targets, then
per workload every scenario side by side, then the analysis) and
C{harness.png} (time per scenario against latency, ratios annotated).
Ratios are always median ÷ median of runs measured in the same rounds.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.plan import BASELINE, DRAIN, NATIVE, OURS, REFERENCE
from bench.records import Results, Run
from bench.workloads import WORKLOADS

Key = tuple[str, str, str, int | None]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


class Table:
    """
    The runs grouped by (workload, program, scenario, latency).
    """

    def __init__(self, runs: Sequence[Run]) -> None:
        self.by: dict[Key, list[Run]] = {}
        for run in runs:
            self.by.setdefault(run.key, []).append(run)

    def ok(self, key: Key) -> list[Run]:
        return [r for r in self.by.get(key, []) if r.ok]

    def seconds(self, key: Key) -> list[float]:
        return [r.seconds for r in self.ok(key)]

    def median(self, key: Key) -> float | None:
        return median(self.seconds(key))

    def ratio(self, key: Key, base: Key) -> float | None:
        mine, theirs = self.median(key), self.median(base)
        return None if mine is None or not theirs else mine / theirs

    def paired(self, key: Key, base: Key) -> list[float]:
        """
        Per-round ratios: a run against the base run of the same round.
        """
        base_by_round = {r.round: r.seconds for r in self.ok(base)}
        return [round(r.seconds / base_by_round[r.round], 3) for r in self.ok(key) if r.round in base_by_round]

    def field(self, key: Key, get: Callable[[Run], float | None]) -> float | None:
        return median([v for v in (get(r) for r in self.ok(key)) if v is not None])

    def latencies(self, workload: str) -> list[int]:
        return sorted({k[3] for k in self.by if k[0] == workload and k[3] is not None})


def native(workload: str, scenario: str) -> Key:
    return (workload, NATIVE, scenario, None)


@dataclass(frozen=True)
class Target:
    issue: int
    what: str
    key: Key
    base: Key | None  # None: an absolute figure from C{value}
    goal: float
    value: Callable[[Table], float | None] | None = None
    unit: str = ""


def cpu_per_put_ms(table: Table, key: Key) -> float | None:
    def per_put(run: Run) -> float | None:
        puts = run.stats.get("put_calls")
        return None if run.prog_cpu_s is None or not puts else 1000 * run.prog_cpu_s / puts

    return table.field(key, per_put)


def targets(results: Results) -> list[Target]:
    """
    The issues' targets; "std" is the first small workload of the run
    (net/http in a --quick run).
    """
    small = [w for w in results.meta.workloads if not WORKLOADS.get(w, WORKLOADS["std"]).big]
    std, cmd, lint = small[0] if small else "std", "cmd", "golangci-lint"
    warm = native(std, "native-warm")
    cold = native(std, "native-cold")
    exit_ms = [r.close_to_go_exit_ms for r in results.analysis.relayed if r.program == DRAIN]
    out = [
        Target(10, "warm std from S3, empty local tier, 0 ms ÷ native warm", (std, OURS, "warm-remote", 0), warm, 2.0),
        Target(
            10,
            "warm std from S3, 50 ± 10 ms ÷ same at 0 ms",
            (std, OURS, "warm-remote", 50),
            (std, OURS, "warm-remote", 0),
            1.5,
        ),
        Target(
            10,
            "warm std from S3, 50 ms ÷ the Go reference at 50 ms",
            (std, OURS, "warm-remote", 50),
            (std, REFERENCE, "warm-remote", 50),
            0.10,
        ),
        Target(
            10, "warm cmd from S3, 0 ms ÷ native warm", (cmd, OURS, "warm-remote", 0), native(cmd, "native-warm"), 1.3
        ),
        Target(
            10,
            "warm golangci-lint from S3, 0 ms ÷ native warm",
            (lint, OURS, "warm-remote", 0),
            native(lint, "native-warm"),
            1.3,
        ),
        Target(10, "warm std from the local tier ÷ native warm", (std, OURS, "warm-local", 0), warm, 1.5),
        Target(
            10,
            "PR build (one golangci-lint file changed), from S3, 50 ms ÷ native warm with the same change",
            (lint, OURS, "pr", 50),
            native(lint, "native-pr"),
            1.5,
        ),
        Target(
            10,
            "requests to S3 in a warm std build (0 ms)",
            (std, OURS, "warm-remote", 0),
            None,
            20,
            lambda t: t.field((std, OURS, "warm-remote", 0), lambda r: r.s3_request_count()),
            "",
        ),
        Target(
            10,
            "cold std, 0 ms, warm start on ÷ off (variant `nowarm`)",
            (std, OURS, "cold", 0),
            (std, "nowarm", "cold", 0),
            1.02,
        ),
        Target(11, "cold std with uploads, 0 ms ÷ native cold", (std, OURS, "cold", 0), cold, 1.10),
        Target(11, "same, detached drain ÷ native cold", (std, DRAIN, "cold", 0), cold, 1.03),
        Target(11, "cold std, 50 ± 10 ms ÷ native cold", (std, OURS, "cold", 50), cold, 1.15),
        Target(11, "cold std, 50 ms, detached drain ÷ native cold", (std, DRAIN, "cold", 50), cold, 1.15),
        Target(
            11,
            "cold std, 50 ms, presence LIST on (variant `presence`) ÷ off",
            (std, "presence", "cold", 50),
            (std, OURS, "cold", 50),
            1.0,
        ),
        Target(
            11,
            "cacheprog CPU per put, cold std, 0 ms (all its CPU ÷ puts: an upper bound)",
            (std, OURS, "cold", 0),
            None,
            2.0,
            lambda t: cpu_per_put_ms(t, (std, OURS, "cold", 0)),
            " ms",
        ),
        Target(
            11,
            "go's exit after its close answer, detached drain on (cold std)",
            (std, DRAIN, "cold", 0),
            None,
            100,
            lambda t: median([v for v in exit_ms if v is not None]),
            " ms",
        ),
    ]
    return out


def targets_markdown(results: Results, table: Table) -> list[str]:
    out = [
        "## Targets (issues 10 and 11)",
        "",
        "| issue | target | value | per-round ratios | goal | met |",
        "|---:|---|---:|---|---:|---|",
    ]
    for t in targets(results):
        if t.base is None:
            assert t.value is not None
            value = t.value(table)
            shown = fmt(value, 1, t.unit)
            rounds = ""
        else:
            value = table.ratio(t.key, t.base)
            mine, theirs = table.median(t.key), table.median(t.base)
            shown = f"**{fmt(value)}** ({fmt(mine)} s ÷ {fmt(theirs)} s)"
            rounds = ", ".join(f"{p:.2f}" for p in table.paired(t.key, t.base))
        met = "not measured" if value is None else ("yes" if value <= t.goal else "no")
        out.append(f"| {t.issue} | {t.what} | {shown} | {rounds} | ≤ {t.goal:g}{t.unit} | {met} |")
    out.append("")
    return out


def header_markdown(results: Results) -> list[str]:
    meta = results.meta
    load_after = meta.load_after[0] if meta.load_after else None
    out = [
        "# Benchmark: go builds through GOCACHEPROG programs and a loopback S3 server",
        "",
        f"{meta.date}, commit {meta.commit or '?'}, {meta.go}, Python {meta.python}, {meta.cpus} CPUs "
        f"({meta.cpu_model}), S3: {meta.s3} on 127.0.0.1, latency injected by toxiproxy on every answer "
        f"(± {meta.jitter_ms} ms jitter; 0 ms = direct). Load average (1 min) before: {fmt(meta.load_before)}, "
        f"after: {fmt(load_after)}; whole run {meta.duration_s / 60:.0f} min; groups: {', '.join(meta.only)}."
        + (f" Every go command ran with `-p={meta.go_p}`." if meta.go_p else ""),
        "",
        "Medians; ratios are median ÷ median of the baseline (cold ÷ native cold, warm ÷ native warm, pull",
        "request ÷ native with the same change), all measured in the same rounds (interleaved). Programs:",
        "",
    ]
    out += [f"- `{name}`: `{command}`" for name, command in meta.programs.items()]
    out.append("")
    return out


def workload_markdown(results: Results, table: Table, workload: str, title: str) -> list[str]:
    programs = [p for p in results.meta.programs if any(k[0] == workload and k[1] == p for k in table.by)]
    bases = {s: table.median(native(workload, s)) for s in ("native-cold", "native-warm", "native-pr")}
    counts = {s: len(table.seconds(native(workload, s))) for s in bases}
    out = [f"## `{title}`", ""]
    out.append(
        "Native: "
        + ", ".join(f"{s[7:]} {fmt(v)} s ({counts[s]} runs)" for s, v in bases.items() if v is not None)
        + "."
    )
    out += ["", "| scenario | latency |" + "".join(f" {p} (s) | ÷ native |" for p in programs)]
    out.append("|---|---:|" + "---:|---:|" * len(programs))
    for scenario in ("cold", "warm-local", "warm-remote", "pr"):
        base = bases[BASELINE[scenario]]
        for latency in table.latencies(workload):
            cells = []
            for program in programs:
                values = table.seconds((workload, program, scenario, latency))
                middle = median(values)
                spread = f" ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else ""
                ratio = middle / base if middle is not None and base else None
                cells.append(f"{fmt(middle)}{spread} | {fmt(ratio, 2, 'x')}")
            if any(table.seconds((workload, p, scenario, latency)) for p in programs):
                out.append(f"| {scenario} | {latency} ms | " + " | ".join(cells) + " |")
    out.append("")
    out += details_markdown(table, workload)
    return out


def details_markdown(table: Table, workload: str) -> list[str]:
    out = [
        "Per scenario (medians over runs): requests from the statistics line, requests the S3 server answered",
        "(during the run and its drain), bytes, the program's peak RSS and CPU (all its processes; not measured",
        "for the detached drain, whose uploader outlives go), go's CPU with the compilers it waited for, the S3",
        "server's CPU, the detached drain's `wait` after go exited, the 1-min load average at the start.",
        "",
        "| program | scenario | latency | runs | gets | local hits | remote hits | prefetched | misses | puts "
        "| uploads | S3 requests | MB up | MB down | peak RSS (MB) | program CPU (s) | go CPU (s) | S3 CPU (s) "
        "| drain wait (s) | load | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    keys = sorted(
        (k for k in table.by if k[0] == workload),
        key=lambda k: (k[1] != NATIVE, k[1], k[2], k[3] if k[3] is not None else -1),
    )
    for key in keys:
        rows = table.by[key]
        good = table.ok(key)

        def stat(name: str, scale: float = 1.0, key: Key = key) -> str:
            value = table.field(key, lambda run: run.stats.get(name))
            return fmt(None if value is None else value / scale, 1 if scale != 1 else 0)

        def num(get: Callable[[Run], float | None], digits: int = 1, key: Key = key) -> str:
            return fmt(table.field(key, get), digits)

        notes = sorted({r.anomaly for r in rows if r.anomaly})
        manifests = sorted({r.words["manifest"] for r in rows if "manifest" in r.words})
        if manifests and manifests != ["off"]:
            notes.append("manifest " + "/".join(manifests))
        objects = [r.objects for r in rows if r.objects is not None]
        if objects:
            notes.insert(0, f"{objects[0]} objects in the bucket after the seed run")
        shown = "-" if key[3] is None else f"{key[3]} ms"
        out.append(
            f"| {key[1]} | {key[2]} | {shown} | {len(good)}/{len(rows)} | {stat('get_calls')} "
            f"| {stat('local_hits')} | {stat('remote_hits')} | {stat('prefetched')} | {stat('misses')} "
            f"| {stat('put_calls')} "
            f"| {stat('uploads')} | {num(lambda r: r.s3_request_count(), 0)} | {stat('bytes_up', 1e6)} "
            f"| {stat('bytes_down', 1e6)} | {num(lambda r: None if r.rss_max_kb is None else r.rss_max_kb / 1024, 0)} "
            f"| {num(lambda r: r.prog_cpu_s)} | {num(lambda r: r.go_cpu_s)} | {num(lambda r: r.s3_cpu_s)} "
            f"| {num(lambda r: r.drain_wait_s)} | {num(lambda r: r.load1)} | {'; '.join(notes)} |"
        )
    out.append("")
    return out


def analysis_markdown(results: Results) -> list[str]:
    analysis = results.analysis
    out: list[str] = []
    if analysis.startup:
        out += [
            "## Start-up (handshake) and exit, per program (no build; medians)",
            "",
            "| program | start to handshake (ms) | min (ms) | stdin closed to exit (ms) |",
            "|---|---:|---:|---:|",
        ]
        for program, s in analysis.startup.items():
            if s.error:
                out.append(f"| {program} | {s.error} | | |")
            else:
                out.append(
                    f"| {program} | {s.handshake_ms_median} | {s.handshake_ms_min} | {s.exit_after_close_ms_median} |"
                )
        out.append("")
    b = analysis.s3_baseline
    if b is not None:
        out += [
            f"S3 server by itself (botocore GetObject of {b.gets} seed objects one at a time, no proxy): "
            f"p50 {b.ms_p50} ms, p90 {b.ms_p90} ms, mean object {b.mean_kb} KiB. {b.error}",
            "",
        ]
    if analysis.relayed:
        out += [
            "## Runs through the protocol relay (untimed for the tables)",
            "",
            "| program | scenario | latency | time (s) | gets | mean gets in flight (while ≥ 1) | max "
            "| get wait p50 / p90 / p99 (ms) | close answer → stdout EOF (ms) | close answer → go exit (ms) |",
            "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for r in analysis.relayed:
            out.append(
                f"| {r.program} | {r.scenario} | {r.latency_ms} ms | {r.seconds} | {r.gets} | {r.mean_inflight_busy} "
                f"| {r.max_inflight} | {r.get_ms_p50} / {r.get_ms_p90} / {r.get_ms_p99} | {r.close_to_eof_ms} "
                f"| {r.close_to_go_exit_ms} |"
            )
        out.append("")
    for p in analysis.profiles.values():
        if p.error:
            continue
        out += [
            f"## Profile: our cacheprog, `{p.workload}` {p.scenario}, {p.latency_ms} ms "
            f"(`--cpu-profile`; {p.seconds:.1f} s under the profiler)",
            "",
            f"Full pstats output: `{p.file}`. Own time by component (total {p.total_s:.2f} s, of which imports "
            f"{p.imports_s:.2f} s cumulative; `poll` is the reactor waiting):",
            "",
            "| component | own (s) | share |",
            "|---|---:|---:|",
        ]
        out += [
            f"| `{row['component']}` | {row['tottime_s']:.3f} | {100 * row['tottime_s'] / p.total_s:.0f}% |"
            for row in p.components[:12]
        ]
        out += ["", "| function | calls | own (s) | cumulative (s) |", "|---|---:|---:|---:|"]
        out += [
            f"| `{row['function']}` | {row['calls']} | {row['tottime_s']:.3f} | {row['cumtime_s']:.3f} |"
            for row in p.top_tottime[:10]
        ]
        out.append("")
    return out


def markdown(results: Results) -> str:
    table = Table(results.runs)
    out = header_markdown(results)
    out += targets_markdown(results, table)
    for workload, title in results.meta.workloads.items():
        if any(k[0] == workload for k in table.by):
            out += workload_markdown(results, table, workload, title)
    out += analysis_markdown(results)
    return "\n".join(out)


PANELS = (
    ("cold", ("cold",), "native-cold"),
    ("warm", ("warm-local", "warm-remote", "pr"), "native-warm"),
)
STYLES = {"cold": "-", "warm-local": ":", "warm-remote": "-", "pr": "--"}
MARKERS = {"cold": "s", "warm-local": "^", "warm-remote": "o", "pr": "*"}


def plot(results: Results, path: str) -> str:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return "matplotlib is missing: no plot (pip install matplotlib)"
    table = Table(results.runs)
    meta = results.meta
    workloads = [w for w in meta.workloads if any(k[0] == w for k in table.by)]
    programs = list(meta.programs)
    fig, axes = plt.subplots(len(workloads), 2, figsize=(12, 3.8 * len(workloads)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, workload in enumerate(workloads):
        for col, (panel, scenarios, base_name) in enumerate(PANELS):
            ax = axes[row][col]
            for name, style in ((base_name, "--"), ("native-pr", ":")):
                base = table.median(native(workload, name))
                if base is not None and (name == base_name or panel == "warm"):
                    ax.axhline(base, color="black", linestyle=style, linewidth=1, label=f"{name} {base:.1f}s")
            for index, program in enumerate(programs):
                color = colors[index % len(colors)]
                dodge = (index - (len(programs) - 1) / 2) * 1.2
                for scenario in scenarios:
                    draw_series(ax, table, (workload, program, scenario), dodge, color, program)
            ticks = table.latencies(workload)
            if ticks:
                ax.set_xticks(ticks)
                ax.set_xlim(min(ticks) - 5, max(ticks) + 5)
            ax.set_title(f"{meta.workloads[workload]}: {panel}", fontsize=9)
            ax.set_xlabel("injected latency per S3 answer (ms)")
            ax.set_ylabel("seconds (median, min-max)")
            ax.set_yscale("log")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"{meta.go}, {meta.cpus} CPUs, S3 {meta.s3} on loopback; ratios vs native (x)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"wrote {path}"


def draw_series(ax: object, table: Table, prefix: tuple[str, str, str], dodge: float, color: str, label: str) -> None:
    workload, _, scenario = prefix
    points = [(x, table.seconds((*prefix, x))) for x in table.latencies(workload)]
    points = [(x, ys) for x, ys in points if ys]
    if not points:
        return
    base = table.median(native(workload, BASELINE[scenario]))
    xs = [x + dodge for x, _ in points]
    meds = [statistics.median(ys) for _, ys in points]
    low = [m - min(ys) for m, (_, ys) in zip(meds, points, strict=True)]
    high = [max(ys) - m for m, (_, ys) in zip(meds, points, strict=True)]
    ax.errorbar(  # type: ignore[attr-defined]
        xs,
        meds,
        yerr=[low, high],
        color=color,
        linestyle=STYLES[scenario],
        marker=MARKERS[scenario],
        capsize=3,
        label=f"{label} {scenario}",
    )
    if base:
        for x, m in zip(xs, meds, strict=True):
            ax.annotate(  # type: ignore[attr-defined]
                f"{m / base:.2f}x", (x, m), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color
            )


def write(results: Results, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "harness.json"), "w", encoding="utf-8") as f:
        json.dump(results.to_json(), f, indent=1)
        f.write("\n")
    with open(os.path.join(out, "harness.md"), "w", encoding="utf-8") as f:
        f.write(markdown(results))
        f.write("\n")
    plot(results, os.path.join(out, "harness.png"))

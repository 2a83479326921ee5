"""
Which go commands a benchmark run times: the programs, the scenarios, and
the groups of C{--only} that select them (each group is what one line of
the issues' target tables needs, seeds and native baselines included).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bench.workloads import WORKLOADS

OURS = "cacheprog"
DRAIN = "cacheprog-drain"
REFERENCE = "reference"
NATIVE = "native"

SCENARIO_TEXT = {
    "native-cold": "go's own cache, empty",
    "native-warm": "go's own cache, filled",
    "native-pr": "go's own cache, filled by the unchanged build; one source file changed",
    "cold": "cold: empty local tier and bucket prefix (builds, uploads)",
    "warm-local": "warm: filled local tier",
    "warm-remote": "warm from remote: empty local tier, filled bucket prefix",
    "pr": "pull request: warm from remote with one source file changed",
}
#: What each scenario is divided by.
BASELINE = {
    "cold": "native-cold",
    "warm-local": "native-warm",
    "warm-remote": "native-warm",
    "pr": "native-pr",
}

#: C{--only} groups: what each measures.
GROUPS = {
    "std-warm": "std from S3 (empty local tier) at each --latencies, from the local tier at 0 ms; peers at "
    "--peer-latencies; S3 requests counted",
    "std-cold": "std cold with uploads at each --cold-latencies, with and without the detached drain",
    "big-warm": "cmd and golangci-lint from S3 at --big-latencies",
    "pr": "golangci-lint with one source file changed, from S3 at --pr-latency",
    "exit": "analysis: how long go takes to exit after its last answer (relay; drain on, and off)",
    "analysis": "analysis: start-up, S3 by itself, gets in flight (relay), profiles",
}


@dataclass(frozen=True)
class Program:
    name: str
    command: str  # a /bin/sh command line
    #: Scenarios it runs (cold runs seed the warm ones).
    scenarios: frozenset[str]
    #: Whose seed (bucket prefix, local tier) its warm scenarios use.
    seed_from: str
    #: Run after each go command, untimed (the detached drain's wait).
    after: str = ""
    #: Wrapped in /usr/bin/time (RSS, CPU); not for a program that must
    #: close go's stdout before it exits: time keeps it open.
    timed: bool = True
    #: Its cold latencies, when not --cold-latencies.
    latencies: tuple[int, ...] = ()


@dataclass(frozen=True)
class Cell:
    workload: str
    program: str
    scenario: str
    latency: int | None
    runs: int

    @property
    def label(self) -> str:
        where = "" if self.latency is None else f"@{self.latency}ms"
        return f"{self.workload}:{self.program}:{self.scenario}{where}"


@dataclass
class Options:
    only: Sequence[str]
    workloads: Sequence[str]
    latencies: Sequence[int]
    cold_latencies: Sequence[int]
    big_latencies: Sequence[int]
    big_cold_latencies: Sequence[int]
    peer_latencies: Sequence[int]
    pr_latency: int
    runs: int
    big_runs: int
    cold_runs: int
    big_cold_runs: int


@dataclass
class Phases:
    """
    One workload's cells: the cold phase (it makes the seeds), the warm
    one, then the pull requests (each rewrites the seed's manifest, as a
    CI job on a branch would: after the warm runs, it cannot change them).
    """

    cold: list[Cell] = field(default_factory=list)
    warm: list[Cell] = field(default_factory=list)
    pr: list[Cell] = field(default_factory=list)

    def add(self, cell: Cell) -> None:
        if cell.scenario in ("cold", "native-cold"):
            phase = self.cold
        elif cell.scenario in ("pr", "native-pr"):
            phase = self.pr
        else:
            phase = self.warm
        if all(c.label != cell.label for c in phase):
            phase.append(cell)

    @property
    def cells(self) -> list[Cell]:
        return self.cold + self.warm + self.pr


def plan(options: Options, programs: Sequence[Program]) -> dict[str, Phases]:
    """
    Cells per workload, in the order they run: the selected groups' cells
    and what they need (the native cold run that fills the native cache,
    our cold run that seeds the bucket).
    """
    o = options
    out: dict[str, Phases] = {name: Phases() for name in o.workloads}

    def runs(workload: str, scenario: str) -> int:
        big = WORKLOADS[workload].big
        if scenario in ("cold", "native-cold"):
            return o.big_cold_runs if big else o.cold_runs
        return o.big_runs if big else o.runs

    def add(workload: str, program: str, scenario: str, latencies: Iterable[int | None]) -> None:
        if workload not in out:
            return
        for latency in latencies:
            out[workload].add(Cell(workload, program, scenario, latency, runs(workload, scenario)))

    def warm_needs(workload: str, native: str = "native-warm") -> None:
        add(workload, NATIVE, "native-cold", [None])
        add(workload, NATIVE, native, [None])
        add(workload, OURS, "cold", [min(o.big_cold_latencies if WORKLOADS[workload].big else o.cold_latencies)])

    small = [w for w in o.workloads if not WORKLOADS[w].big]
    big = [w for w in o.workloads if WORKLOADS[w].big]
    if "std-warm" in o.only:
        for w in small:
            warm_needs(w)
            add(w, OURS, "warm-local", [0])
            add(w, OURS, "warm-remote", o.latencies)
            for p in programs:
                if p.name != OURS and "warm-remote" in p.scenarios:
                    add(w, p.name, "warm-remote", o.peer_latencies)
    if "std-cold" in o.only:
        for w in small:
            add(w, NATIVE, "native-cold", [None])
            for p in programs:
                if "cold" in p.scenarios:
                    add(w, p.name, "cold", p.latencies or o.cold_latencies)
    if "big-warm" in o.only:
        for w in big:
            warm_needs(w)
            add(w, OURS, "warm-remote", o.big_latencies)
    if "pr" in o.only:
        for w in big:
            if WORKLOADS[w].third_party:
                warm_needs(w, "native-pr")
                add(w, OURS, "pr", [o.pr_latency])
    # The seed runs (our lowest cold latency) go first in their phase.
    for phases in out.values():
        phases.cold.sort(key=lambda c: (c.program != NATIVE, c.program != OURS, c.latency or 0))
    return {w: p for w, p in out.items() if p.cells}

"""
What the harness measures, as typed records, and their JSON form
(C{bench/results/harness.json}: a few kB per run; C{--replot} reads it back,
so every field has a default for files written before it existed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

#: A statistics line's numeric fields, summed over a go command's program
#: processes; peers print their own names (the reference: get_calls,
#: get_hits, put_calls).
Stats = dict[str, float]

R = TypeVar("R")


def from_json(kind: type[R], data: Mapping[str, Any]) -> R:
    """
    A record from its JSON object; unknown keys (a newer harness) are ignored.
    """
    names = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    return kind(**{k: v for k, v in data.items() if k in names})


def to_json(record: object) -> dict[str, Any]:
    return dataclasses.asdict(record)  # type: ignore[call-overload, no-any-return]


@dataclass
class Usage:
    """
    The program processes of one go command, from their C{/usr/bin/time} files.
    """

    procs: int = 0
    rss_max_kb: int | None = None
    rss_sum_kb: int | None = None
    prog_cpu_s: float | None = None


@dataclass
class Run:
    """
    One timed go command.
    """

    workload: str
    program: str  # "native" or a program name
    scenario: str
    latency_ms: int | None
    round: int
    load1: float
    seconds: float = 0.0
    exit: int = 0
    go_cpu_s: float | None = None
    s3_cpu_s: float | None = None
    #: Requests the S3 server answered during the run (and the drain after it), by type.
    s3_requests: dict[str, int] | None = None
    stats_lines: int = 0
    stats: Stats = field(default_factory=dict)
    #: The statistics line's other fields (manifest=found, manifest_written=true).
    words: dict[str, str] = field(default_factory=dict)
    procs: int = 0
    rss_max_kb: int | None = None
    rss_sum_kb: int | None = None
    prog_cpu_s: float | None = None
    prefix: str = ""
    seed: bool = False
    objects: int | None = None
    #: Detached drain: how long C{cacheprog wait} took after go exited.
    drain_wait_s: float | None = None
    anomaly: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.exit == 0

    @property
    def key(self) -> tuple[str, str, str, int | None]:
        return (self.workload, self.program, self.scenario, self.latency_ms)

    def s3_request_count(self) -> int | None:
        return None if self.s3_requests is None else sum(self.s3_requests.values())


@dataclass
class Startup:
    runs: int = 0
    handshake_ms_median: float | None = None
    handshake_ms_min: float | None = None
    exit_after_close_ms_median: float | None = None
    error: str = ""


@dataclass
class S3Baseline:
    gets: int = 0
    ms_p50: float | None = None
    ms_p90: float | None = None
    mean_kb: float | None = None
    error: str = ""


@dataclass
class Relayed:
    """
    A run through the protocol relay: gets in flight, how long go waited for
    each, and how long go took to exit after its last answer.
    """

    program: str = ""
    scenario: str = ""
    latency_ms: int = 0
    seconds: float = 0.0
    gets: int = 0
    mean_inflight_busy: float | None = None
    busy_s: float = 0.0
    max_inflight: int = 0
    get_ms_p50: float | None = None
    get_ms_p90: float | None = None
    get_ms_p99: float | None = None
    #: From the answer to go's close to the program's stdout EOF (the last relay log).
    close_to_eof_ms: float | None = None
    #: From the answer to go's close to go's exit.
    close_to_go_exit_ms: float | None = None
    stats: Stats = field(default_factory=dict)


@dataclass
class ProfileSummary:
    workload: str = ""
    scenario: str = ""
    latency_ms: int = 0
    seconds: float = 0.0
    stats: Stats = field(default_factory=dict)
    file: str = ""
    total_s: float = 0.0
    imports_s: float = 0.0
    components: list[dict[str, Any]] = field(default_factory=list)
    top_tottime: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


@dataclass
class Analysis:
    startup: dict[str, Startup] = field(default_factory=dict)
    s3_baseline: S3Baseline | None = None
    relayed: list[Relayed] = field(default_factory=list)
    profiles: dict[str, ProfileSummary] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Analysis:
        baseline = data.get("s3_baseline")
        return cls(
            startup={k: from_json(Startup, v) for k, v in (data.get("startup") or {}).items()},
            s3_baseline=None if not baseline else from_json(S3Baseline, baseline),
            relayed=[from_json(Relayed, v) for v in data.get("relayed") or []],
            profiles={k: from_json(ProfileSummary, v) for k, v in (data.get("profiles") or {}).items()},
        )


@dataclass
class Meta:
    """
    The machine, the toolchain and the options of a whole run.
    """

    date: str = ""
    go: str = ""
    python: str = ""
    cpus: int | None = None
    machine: str = ""
    cpu_model: str = ""
    commit: str = ""
    s3: str = ""
    programs: dict[str, str] = field(default_factory=dict)
    workloads: dict[str, str] = field(default_factory=dict)
    only: list[str] = field(default_factory=list)
    latencies_ms: list[int] = field(default_factory=list)
    cold_latencies_ms: list[int] = field(default_factory=list)
    jitter_ms: int = 0
    go_p: int = 0
    runs: int = 0
    big_runs: int = 0
    cold_runs: int = 0
    big_cold_runs: int = 0
    load_before: float | None = None
    load_waited_s: float | None = None
    load_after: list[float] = field(default_factory=list)
    duration_s: float = 0.0


@dataclass
class Results:
    meta: Meta
    runs: list[Run] = field(default_factory=list)
    analysis: Analysis = field(default_factory=Analysis)

    def to_json(self) -> dict[str, Any]:
        return {"meta": to_json(self.meta), "runs": [to_json(r) for r in self.runs], "analysis": to_json(self.analysis)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Results:
        return cls(
            meta=from_json(Meta, data["meta"]),
            runs=[from_json(Run, r) for r in data["runs"]],
            analysis=Analysis.from_json(data.get("analysis") or {}),
        )

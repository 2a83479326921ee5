#!/usr/bin/env python3
"""
The benchmark harness: real go builds through GOCACHEPROG programs against a
loopback S3 server, with injected latency, side by side with the go
command's own cache.

    python bench/harness.py                       # the full matrix (~40 min on 2 cores)
    python bench/harness.py --quick               # go build net/http, one run each (~4 min)
    python bench/harness.py --peer 'ref=/path/to/other-cacheprog'
    python bench/harness.py --replot              # table and plot again from the JSON

Workloads (C{--workloads}): C{std} (C{go build std}), C{cmd} (C{go build
cmd}), C{golangci-lint} (C{go build ./cmd/golangci-lint} of a pinned
third-party module, fetched once from the Go module proxy, then built
offline), C{small} and C{tiny} (C{go build net/http}, C{go build fmt}, for
development).

Scenarios, per workload; each cacheprog-like program (ours, and every
C{--peer NAME=COMMAND}) gets the same ones, interleaved round by round with
the native runs so that ratios are measured side by side on a noisy machine:

 - C{native-cold}: go's own cache, empty GOCACHE;
 - C{native-warm}: go's own cache, filled;
 - C{cold@L}: empty local tier, empty bucket prefix: every action is built
   and uploaded (a fresh prefix per run);
 - C{warm-local@L}: the local tier that the seed cold run filled;
 - C{warm-remote@L}: an empty local tier, the bucket prefix the seed cold
   run filled (a fresh CI runner with a shared bucket);

at each latency L (C{--latencies}, ms): 0 is the S3 server directly, others
go through toxiproxy with a latency toxic of L +- C{--jitter} ms on every
answer.  The seed of the warm scenarios is each program's first cold run at
its lowest cold latency.  Every go command gets a fresh GOCACHE (go still
needs one with GOCACHEPROG) except C{native-warm}; GOFLAGS=-mod=mod,
GOTOOLCHAIN=local, GOPROXY=off.

Per run: wall time of the go command, its CPU (with the compilers and
linkers it waited for; go never waits for the GOCACHEPROG process), the
statistics line(s) of the program (request counts, bytes up and down), and
the program's peak RSS and CPU (the GOCACHEPROG command is wrapped in
C{/usr/bin/time}; max and sum over the go command's program processes).

After the matrix (C{--analysis}, on by default), on the first workload:
start-up of every program (handshake, exit), the S3 server's own GetObject
latency, one C{warm-remote} run of our cacheprog per analysis latency
through a relay that timestamps the protocol (how many gets go keeps in
flight, how long each waits), and C{warm-remote} and C{cold} runs under
C{--cpu-profile} (C{--profile}), summarized with pstats.

Output (C{--out}, default C{bench/results}): C{harness.md} (tables),
C{harness.png} (plot), C{harness.json} (every run, small), C{profile-*.txt};
logs of failed runs and the raw profiles go to C{<out>/raw/} (not
committed).  Needs C{weed} (SeaweedFS) or C{minio}, and C{toxiproxy-server}
(C{.ci/install-servers.sh}), matplotlib for the plot.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.abspath(__file__)
RESULTS = os.path.join(REPO, "bench", "results")
BUCKET = "bench"
TIME = "/usr/bin/time"
OURS = "cacheprog"

# The pinned third-party module: golangci-lint, a large real program
# (about 1100 packages with std).
THIRD_PARTY_MODULE = "github.com/golangci/golangci-lint/v2"
THIRD_PARTY_VERSION = "v2.4.0"
THIRD_PARTY_PACKAGE = "./cmd/golangci-lint"

STATS_LINE = re.compile(r"cacheprog statistics\b(.*)$")
FIELD = re.compile(r"([A-Za-z_]+)=(\S+)")

SCENARIO_TEXT = {
    "native-cold": "go's own cache, empty",
    "native-warm": "go's own cache, filled",
    "cold": "cold: empty local tier and bucket prefix (builds, uploads)",
    "warm-local": "warm: filled local tier",
    "warm-remote": "warm from remote: empty local tier, filled bucket prefix",
}


# --------------------------------------------------------------------------
# small helpers


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def parse_stats(text: str) -> tuple[int, dict[str, float]]:
    """
    The statistics lines in a go command's stderr (one per program
    process): how many, and their numeric fields summed.  Works for our
    logfmt line (fields inside the quoted msg) and for key=value lines
    after the words "cacheprog statistics".
    """
    lines = 0
    total: dict[str, float] = {}
    for line in text.splitlines():
        found = STATS_LINE.search(line)
        if not found:
            continue
        lines += 1
        for key, raw in FIELD.findall(found.group(1).replace('"', " ")):
            value = raw.rstrip("s") if re.fullmatch(r"[0-9.]+s", raw) else raw
            try:
                number = float(value)
            except ValueError:
                continue
            if key.endswith("ratio"):
                continue
            total[key] = total.get(key, 0.0) + number
    return lines, {k: (int(v) if float(v).is_integer() else round(v, 3)) for k, v in total.items()}


def parse_time_files(directory: str) -> dict[str, Any]:
    """
    The C{/usr/bin/time} files of the wrapped program processes of one run.
    """
    rss: list[int] = []
    user = system = 0.0
    for path in sorted(glob.glob(os.path.join(directory, "proc.*.time"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f.read().splitlines() if "rss_kb=" in line]
        if not lines:
            continue
        fields = dict(FIELD.findall(lines[-1]))
        rss.append(int(fields.get("rss_kb", "0")))
        user += float(fields.get("user", "0"))
        system += float(fields.get("sys", "0"))
    return {
        "procs": len(rss),
        "rss_max_kb": max(rss) if rss else None,
        "rss_sum_kb": sum(rss) if rss else None,
        "prog_cpu_s": round(user + system, 3) if rss else None,
    }


def wait_group_gone(pgid: int, limit: float) -> bool:
    """
    Wait until no process of group C{pgid} is left (the program may still
    be writing its statistics line and C{/usr/bin/time} its file after go
    exited).  False if some were still there after C{limit} seconds.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not any(_pgid_of(pid) == pgid for pid in _pids()):
            return True
        time.sleep(0.02)
    return False


def _pids() -> Iterable[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def _pgid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # pid (comm) state ppid pgrp ...; comm may contain spaces or parens.
    rest = data[data.rfind(b")") + 2 :].split()
    if rest[0] == b"Z":
        return None
    return int(rest[2])


def process_cpu(pid: int | None) -> float | None:
    """
    CPU seconds (user + system) a process has used so far, or None.
    """
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def rmtree(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# workloads and programs


@dataclass
class Workload:
    name: str
    argv: list[str]
    title: str
    big: bool
    cwd: str = ""  # filled by prepare()


WORKLOADS = {
    "std": Workload("std", ["build", "std"], "go build std", big=False),
    "cmd": Workload("cmd", ["build", "cmd"], "go build cmd", big=True),
    "golangci-lint": Workload(
        "golangci-lint",
        ["build", "-o", os.devnull, THIRD_PARTY_PACKAGE],
        f"go build {THIRD_PARTY_PACKAGE} ({THIRD_PARTY_MODULE}@{THIRD_PARTY_VERSION})",
        big=True,
    ),
    "small": Workload("small", ["build", "net/http"], "go build net/http", big=False),
    "tiny": Workload("tiny", ["build", "fmt"], "go build fmt", big=False),
}


@dataclass
class Program:
    name: str
    command: str  # a shell command line (run by /bin/sh in the wrapper)
    ours: bool


@dataclass
class Seed:
    """
    What a program's seed cold run left: its local tier and bucket prefix.
    """

    local: str
    prefix: str


@dataclass
class Cell:
    workload: str
    program: str  # "native" or a program name
    scenario: str  # native-cold, native-warm, cold, warm-local, warm-remote
    latency: int | None
    runs: int

    @property
    def label(self) -> str:
        where = "" if self.latency is None else f"@{self.latency}ms"
        return f"{self.workload}:{self.program}:{self.scenario}{where}"


@dataclass
class State:
    native_cache: dict[str, str] = field(default_factory=dict)
    seeds: dict[tuple[str, str], Seed] = field(default_factory=dict)


# --------------------------------------------------------------------------
# the harness


class Harness:
    def __init__(self, args: argparse.Namespace, work: str) -> None:
        self.args = args
        self.work = work
        self.raw = os.path.join(args.out, "raw")
        self.go = args.go
        self.programs = [Program(OURS, args.cacheprog, ours=True)] + [
            Program(name, command, ours=False) for name, command in args.peers
        ]
        self.runs: list[dict[str, Any]] = []
        self.analysis: dict[str, Any] = {}
        self.state = State()
        self.counter = 0
        self.server: Any = None
        self.toxiproxy: Any = None
        self.endpoints: dict[int, str] = {}
        self.gomodcache = self._go_env("GOMODCACHE")
        self.gopath = self._go_env("GOPATH")
        self.started = time.monotonic()

    # -- environment -------------------------------------------------------

    def _go_env(self, name: str) -> str:
        return subprocess.run([self.go, "env", name], capture_output=True, text=True, check=True).stdout.strip()

    def base_env(self, gocache: str) -> dict[str, str]:
        drop = ("GO", "CACHEPROG_", "CGO_", "AWS_")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(drop) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        pythonpath = os.environ.get("PYTHONPATH", "")
        env.update(
            GOCACHE=gocache,
            GOENV="off",
            GOTOOLCHAIN="local",
            GOPROXY="off",
            GOSUMDB="off",
            GOTELEMETRY="off",
            GOWORK="off",
            GOFLAGS="-mod=mod" + (f" -p={self.args.go_p}" if self.args.go_p else ""),
            GOMODCACHE=self.gomodcache,
            GOPATH=self.gopath,
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            # Only loopback: never ask an instance metadata service.
            AWS_EC2_METADATA_DISABLED="true",
            PYTHONPATH=REPO + (os.pathsep + pythonpath if pythonpath else ""),
        )
        return env

    def program_env(
        self,
        program: Program,
        run_dir: str,
        gocache: str,
        local: str,
        prefix: str,
        latency: int,
        extra: str = "",
        relay: str = "",
    ) -> dict[str, str]:
        env = self.base_env(gocache)
        server = self.server
        env.update(
            CACHEPROG_REMOTE_STORAGE_TYPE="s3",
            CACHEPROG_S3_ENDPOINT=self.endpoints[latency],
            CACHEPROG_S3_FORCE_PATH_STYLE="true",
            CACHEPROG_S3_ACCESS_KEY_ID=server.access_key,
            CACHEPROG_S3_ACCESS_KEY_SECRET=server.secret_key,
            CACHEPROG_S3_BUCKET=BUCKET,
            CACHEPROG_S3_REGION="us-east-1",
            CACHEPROG_S3_PREFIX=prefix,
            CACHEPROG_ROOT_DIRECTORY=local,
            CACHEPROG_DISK_STORAGE_ROOT=local,
            CACHEPROG_LOG_LEVEL="INFO",
        )
        env["GOCACHEPROG"] = self.wrapper(program, run_dir, extra, relay)
        return env

    def wrapper(self, program: Program, run_dir: str, extra: str, relay: str) -> str:
        """
        A shell script that runs the program under /usr/bin/time, writing
        one file per process (C{$$} is the wrapper's pid); C{extra} is added
        to the program's arguments (C{$$} works there too).
        """
        command = f"{program.command} {extra}".strip()
        if relay:
            inner = shlex.quote(f'exec {command} "$@"')
            command = f'{shlex.quote(sys.executable)} {shlex.quote(HERE)} relay "{relay}" {inner}'
        path = os.path.join(run_dir, "gocacheprog.sh")
        with open(path, "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\n# GOCACHEPROG wrapper written by bench/harness.py\n")
            f.write(f"DIR={shlex.quote(run_dir)}\n")
            f.write(f'exec {TIME} -o "$DIR/proc.$$.time" -f "rss_kb=%M elapsed=%e user=%U sys=%S" {command} "$@"\n')
        os.chmod(path, 0o755)
        return path

    # -- servers -----------------------------------------------------------

    def start_servers(self) -> None:
        sys.path.insert(0, REPO)
        from tests.integration.servers import MinIO, SeaweedFS, Toxiproxy

        server_class = {"seaweedfs": SeaweedFS, "minio": MinIO}[self.args.s3]
        reason = server_class.unavailable_reason()
        if reason:
            sys.exit(f"harness: {reason}")
        self.server = server_class(os.path.join(self.work, "servers"))
        self.server.start()
        self.server.create_bucket(BUCKET)
        log(f"{self.args.s3} S3 server at {self.server.endpoint} (started in {self.server.start_seconds:.1f}s)")
        self.endpoints[0] = self.server.endpoint
        latencies = sorted(set(self.args.latencies) | set(self.args.cold_latencies) | set(self.args.big_cold_latencies))
        if any(latency > 0 for latency in latencies):
            reason = Toxiproxy.unavailable_reason()
            if reason:
                sys.exit(f"harness: {reason}")
            self.toxiproxy = Toxiproxy(os.path.join(self.work, "servers"))
            self.toxiproxy.start()
            for latency in latencies:
                if latency <= 0:
                    continue
                name = f"s3_{latency}ms"
                proxy = self.toxiproxy.create_proxy(name, self.server.endpoint)
                self.toxiproxy.add_latency(name, latency, min(self.args.jitter, latency))
                self.endpoints[latency] = proxy.endpoint
                log(f"toxiproxy {proxy.endpoint} -> S3: {latency} +- {min(self.args.jitter, latency)} ms per answer")

    def stop_servers(self) -> None:
        for server in (self.toxiproxy, self.server):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()

    def count_objects(self, prefix: str) -> int | None:
        try:
            client = self.server.client()
            count = 0
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
                count += len(page.get("Contents", []))
            client.close()
            return count
        except Exception as e:  # noqa: BLE001 - only a check
            log(f"  (could not list {prefix}: {e})")
            return None

    # -- workloads -----------------------------------------------------------

    def prepare(self, workload: Workload) -> None:
        if workload.name != "golangci-lint":
            workload.cwd = os.path.join(self.work, "empty")
            os.makedirs(workload.cwd, exist_ok=True)
            return
        source = self.third_party_source()
        workload.cwd = os.path.join(self.work, "src", "golangci-lint")
        if not os.path.isdir(workload.cwd):
            shutil.copytree(source, workload.cwd, symlinks=True)
            for root, dirs, files in os.walk(workload.cwd):
                for name in dirs + files:
                    path = os.path.join(root, name)
                    if not os.path.islink(path):
                        os.chmod(path, os.stat(path).st_mode | 0o200)
        offline = self.base_env(os.path.join(self.work, "prep-gocache"))
        check = [self.go, "list", "-deps", THIRD_PARTY_PACKAGE]
        done = subprocess.run(check, cwd=workload.cwd, env=offline, capture_output=True, text=True)
        if done.returncode != 0:
            log("downloading the third-party module's dependencies (go mod download, module proxy)")
            online = dict(offline)
            for name in ("GOPROXY", "GOSUMDB"):
                online.pop(name)
            subprocess.run([self.go, "mod", "download"], cwd=workload.cwd, env=online, check=True)
            subprocess.run(check, cwd=workload.cwd, env=offline, check=True, capture_output=True)
        count = len(subprocess.run(check, cwd=workload.cwd, env=offline, capture_output=True, text=True).stdout.split())
        log(f"third-party workload: {THIRD_PARTY_MODULE}@{THIRD_PARTY_VERSION}, {count} packages with std")

    def third_party_source(self) -> str:
        """
        The module's directory in the module cache (downloaded once through
        the module proxy if missing).
        """
        env = self.base_env(os.path.join(self.work, "prep-gocache"))
        spec = f"{THIRD_PARTY_MODULE}@{THIRD_PARTY_VERSION}"
        argv = [self.go, "mod", "download", "-json", spec]
        done = subprocess.run(argv, cwd=self.work, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            log(f"downloading {spec} (module proxy)")
            online = dict(env)
            for name in ("GOPROXY", "GOSUMDB"):
                online.pop(name)
            done = subprocess.run(argv, cwd=self.work, env=online, capture_output=True, text=True, check=True)
        return str(json.loads(done.stdout)["Dir"])

    # -- one go command ----------------------------------------------------

    def new_run_dir(self, cell: Cell) -> str:
        self.counter += 1
        name = f"{self.counter:04d}-{cell.label.replace(':', '-').replace('@', '-')}"
        path = os.path.join(self.work, "runs", name)
        os.makedirs(path)
        return path

    def go_build(self, workload: Workload, env: dict[str, str], run_dir: str) -> dict[str, Any]:
        """
        One timed go command; its stderr goes to <run_dir>/go.log.
        """
        log_path = os.path.join(run_dir, "go.log")
        server_pid = self.server.pid if self.server is not None else None
        server_before = process_cpu(server_pid)
        with open(log_path, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [self.go, *workload.argv],
                cwd=workload.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            timer = threading.Timer(self.args.timeout, kill_group, (proc.pid,))
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:
                kill_group(proc.pid)
                raise
            finally:
                timer.cancel()
            elapsed = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        if not wait_group_gone(proc.pid, 30.0):
            log("  (program processes still running 30 s after go exited: killed)")
            kill_group(proc.pid)
        server_after = process_cpu(server_pid)
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        lines, stats = parse_stats(text)
        result: dict[str, Any] = {
            "seconds": round(elapsed, 3),
            "exit": proc.returncode,
            "go_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "s3_cpu_s": None
            if server_before is None or server_after is None
            else round(server_after - server_before, 2),
            "stats_lines": lines,
            "stats": stats,
            **parse_time_files(run_dir),
        }
        if proc.returncode != 0:
            result["error"] = text[-3000:]
        return result

    def keep_log(self, run_dir: str) -> None:
        os.makedirs(self.raw, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copy(os.path.join(run_dir, "go.log"), os.path.join(self.raw, os.path.basename(run_dir) + ".log"))

    # -- one cell run --------------------------------------------------------

    def run_cell(self, cell: Cell, round_: int) -> None:
        workload = WORKLOADS[cell.workload]
        run_dir = self.new_run_dir(cell)
        gocache = os.path.join(run_dir, "gocache")
        local = os.path.join(run_dir, "local")
        cleanup = [gocache, local]
        seed_key = (cell.workload, cell.program)
        record: dict[str, Any] = {
            "workload": cell.workload,
            "program": cell.program,
            "scenario": cell.scenario,
            "latency_ms": cell.latency,
            "round": round_,
            "load1": load1(),
        }
        prefix = ""
        if cell.program == "native":
            if cell.scenario == "native-warm":
                gocache = self.state.native_cache[cell.workload]
                cleanup = []
            env = self.base_env(gocache)
        else:
            program = self.program(cell.program)
            assert cell.latency is not None
            if cell.scenario == "cold":
                prefix = f"{cell.program}/{cell.workload}/cold-{cell.latency}ms-{round_}-{secrets.token_hex(3)}"
            else:
                seed = self.state.seeds[seed_key]
                prefix = seed.prefix
                if cell.scenario == "warm-local":
                    local = seed.local
                    cleanup = [gocache]
            env = self.program_env(program, run_dir, gocache, local, prefix, cell.latency)
            record["prefix"] = prefix
        result = self.go_build(workload, env, run_dir)
        record.update(result)
        record["anomaly"] = self.anomaly(cell, result)
        if cell.scenario == "native-cold":
            old = self.state.native_cache.get(cell.workload)
            self.state.native_cache[cell.workload] = gocache
            cleanup = [old] if old else []
        elif cell.scenario == "cold" and seed_key not in self.state.seeds and result["exit"] == 0:
            self.state.seeds[seed_key] = Seed(local, prefix)
            cleanup = [gocache]
            record["seed"] = True
            record["objects"] = self.count_objects(prefix)
        if result["exit"] != 0 or record["anomaly"]:
            self.keep_log(run_dir)
        self.runs.append(record)
        self.print_run(cell, record)
        for path in cleanup:
            rmtree(path)

    def program(self, name: str) -> Program:
        return next(p for p in self.programs if p.name == name)

    @staticmethod
    def anomaly(cell: Cell, result: dict[str, Any]) -> str:
        if result["exit"] != 0:
            return f"go exited {result['exit']}"
        if cell.program == "native":
            return ""
        stats = result["stats"]
        if not result["stats_lines"]:
            return "no statistics line"
        gets, misses = stats.get("get_calls", 0), stats.get("misses")
        problems = []
        if cell.scenario.startswith("warm") and misses:
            problems.append(f"{misses} misses of {gets} gets")
        if cell.scenario.startswith("warm") and "get_hits" in stats and stats["get_hits"] < gets:
            problems.append(f"{gets - stats['get_hits']} gets not hit")
        for key in ("remote_timeouts", "remote_faults", "corrupt_objects", "uploads_dropped"):
            if stats.get(key):
                problems.append(f"{key}={stats[key]}")
        return "; ".join(problems)

    def print_run(self, cell: Cell, record: dict[str, Any]) -> None:
        stats = record.get("stats") or {}
        keys = ("get_calls", "local_hits", "remote_hits", "misses", "put_calls", "uploads")
        note = " ".join(f"{k}={stats[k]}" for k in keys if k in stats)
        if record.get("rss_max_kb"):
            note += f" rss={record['rss_max_kb'] / 1024:.0f}MB"
        if record.get("anomaly"):
            note += f"  !! {record['anomaly']}"
        log(f"  {cell.label:42} r{record['round']}: {record['seconds']:7.2f}s  load={record['load1']:.1f}  {note}")

    # -- the matrix ----------------------------------------------------------

    def plan(self) -> tuple[list[Cell], list[Cell]]:
        a = self.args
        cold: list[Cell] = []
        warm: list[Cell] = []
        for name in a.workloads:
            big = WORKLOADS[name].big
            warm_runs = a.big_runs if big else a.runs
            cold_latencies = a.big_cold_latencies if big else a.cold_latencies
            cold_runs = a.big_cold_runs if big else a.cold_runs
            cold.append(Cell(name, "native", "native-cold", None, cold_runs))
            warm.append(Cell(name, "native", "native-warm", None, warm_runs))
            for program in self.programs:
                for latency in cold_latencies:
                    cold.append(Cell(name, program.name, "cold", latency, cold_runs))
                for latency in a.latencies:
                    warm.append(Cell(name, program.name, "warm-local", latency, warm_runs))
                    warm.append(Cell(name, program.name, "warm-remote", latency, warm_runs))
        return cold, warm

    def run_phase(self, cells: list[Cell]) -> None:
        """
        Round by round; in each round every cell once (cells with fewer runs
        drop out), the order rotated each round.
        """
        rounds = max((c.runs for c in cells), default=0)
        for round_ in range(rounds):
            active = [c for c in cells if c.runs > round_]
            shift = round_ % len(active) if active else 0
            for cell in active[shift:] + active[:shift]:
                self.run_cell(cell, round_)

    def run(self) -> None:
        cold, warm = self.plan()
        by_workload: dict[str, tuple[list[Cell], list[Cell]]] = {}
        for name in self.args.workloads:
            by_workload[name] = ([c for c in cold if c.workload == name], [c for c in warm if c.workload == name])
        total = sum(c.runs for c in cold + warm)
        log(f"plan: {len(cold) + len(warm)} scenarios, {total} timed go commands")
        for name in self.args.workloads:
            workload = WORKLOADS[name]
            self.prepare(workload)
            log(f"== {workload.title}")
            cold_cells, warm_cells = by_workload[name]
            # The seeds come from the first cold round: make sure each
            # program's lowest cold latency runs first in round 0.
            self.run_phase(cold_cells)
            self.run_phase(warm_cells)
            # The local tiers of the seeds are needed no more (the analysis
            # uses the bucket only).
            for (wname, _), seed in self.state.seeds.items():
                if wname == name:
                    rmtree(seed.local)
            self.save()

    # -- analysis ------------------------------------------------------------

    def measure_startup(self, program: Program, runs: int = 10, warmup: int = 2) -> dict[str, Any]:
        """
        Time from starting the program (configured for S3 as in the runs) to
        its handshake line, and from closing its stdin to its exit.
        """
        run_dir = os.path.join(self.work, "startup", program.name)
        os.makedirs(run_dir, exist_ok=True)
        firsts: list[float] = []
        exits: list[float] = []
        for i in range(warmup + runs):
            local = os.path.join(run_dir, f"local{i}")
            env = self.program_env(program, run_dir, os.path.join(run_dir, "gocache"), local, "startup", 0)
            start = time.perf_counter()
            proc = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {program.command}"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert proc.stdout is not None and proc.stdin is not None
            line = proc.stdout.readline()
            first = time.perf_counter() - start
            closed = time.perf_counter()
            proc.stdin.close()
            proc.stdout.read()
            proc.wait()
            if not line.startswith(b"{"):
                return {"error": f"no handshake: {line[:200]!r}"}
            if i >= warmup:
                firsts.append(1000 * first)
                exits.append(1000 * (time.perf_counter() - closed))
        rmtree(run_dir)
        return {
            "runs": runs,
            "handshake_ms_median": round(statistics.median(firsts), 1),
            "handshake_ms_min": round(min(firsts), 1),
            "exit_after_close_ms_median": round(statistics.median(exits), 1),
        }

    def s3_baseline(self, prefix: str, count: int = 300) -> dict[str, Any]:
        """
        How fast the S3 server answers by itself: GetObject of the seed's
        objects one at a time with botocore (signing included), directly.
        """
        try:
            client = self.server.client()
            keys: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
                keys.extend(item["Key"] for item in page.get("Contents", []))
                if len(keys) >= count:
                    break
            keys = keys[:count]
            times = []
            size = 0
            for key in keys:
                start = time.perf_counter()
                answer = client.get_object(Bucket=BUCKET, Key=key)
                size += len(answer["Body"].read())
                times.append(1000 * (time.perf_counter() - start))
            client.close()
        except Exception as e:  # noqa: BLE001 - only a reference point
            return {"error": str(e)}
        times.sort()
        return {
            "gets": len(times),
            "ms_p50": round(times[len(times) // 2], 2) if times else None,
            "ms_p90": round(times[int(0.9 * len(times))], 2) if times else None,
            "mean_kb": round(size / max(1, len(times)) / 1024, 1),
        }

    def run_analysis(self) -> None:
        startup: dict[str, Any] = {}
        for program in self.programs:
            startup[program.name] = result = self.measure_startup(program)
            log(f"  start-up of {program.name}: {result}")
        self.analysis["startup"] = startup
        name = self.args.workloads[0]
        seed = self.state.seeds.get((name, OURS))
        if seed is not None:
            self.analysis["s3_baseline"] = baseline = self.s3_baseline(seed.prefix)
            log(f"  S3 baseline (botocore, one at a time, direct): {baseline}")
        workload = WORKLOADS[name]
        ours = self.program(OURS)
        seed = self.state.seeds.get((name, OURS))
        if seed is None:
            log("analysis skipped: no seed for our cacheprog")
            return
        log(f"== analysis ({workload.title}, {OURS}, warm-remote; untimed for the table)")
        inflight: dict[str, Any] = {}
        for latency in self.args.analysis_latencies:
            cell = Cell(name, OURS, "warm-remote", latency, 1)
            run_dir = self.new_run_dir(cell)
            relay_log = os.path.join(run_dir, "relay.$$.json")
            env = self.program_env(
                ours,
                run_dir,
                os.path.join(run_dir, "gocache"),
                os.path.join(run_dir, "local"),
                seed.prefix,
                latency,
                relay=relay_log,
            )
            result = self.go_build(workload, env, run_dir)
            summary = summarize_relay(glob.glob(os.path.join(run_dir, "relay.*.json")))
            summary["seconds"] = result["seconds"]
            summary["stats"] = result["stats"]
            inflight[str(latency)] = summary
            log(
                f"  in flight @{latency}ms: gets {summary.get('gets')}, mean in flight "
                f"{summary.get('mean_inflight_busy')}, max {summary.get('max_inflight')}, "
                f"get wait median {summary.get('get_ms_p50')} ms ({result['seconds']:.1f}s)"
            )
            rmtree(os.path.join(run_dir, "local"))
        self.analysis["inflight"] = inflight

        profiles: dict[str, Any] = {}
        for scenario in self.args.profile:
            profiles[scenario] = self.profile_run(workload, ours, seed, scenario, self.args.profile_latency)
        self.analysis["profiles"] = profiles

    def profile_run(self, workload: Workload, ours: Program, seed: Seed, scenario: str, latency: int) -> dict[str, Any]:
        """
        One run of C{scenario} (warm-remote: the seed's prefix, empty local
        tier; cold: a fresh prefix and local tier) under --cpu-profile.
        """
        name = workload.name
        cell = Cell(name, OURS, scenario, latency, 1)
        run_dir = self.new_run_dir(cell)
        prefix = seed.prefix if scenario == "warm-remote" else f"{OURS}/{name}/profile-{secrets.token_hex(3)}"
        extra = '--cpu-profile "$DIR/prof.$$.out"'
        env = self.program_env(
            ours, run_dir, os.path.join(run_dir, "gocache"), os.path.join(run_dir, "local"), prefix, latency, extra
        )
        result = self.go_build(workload, env, run_dir)
        files = sorted(glob.glob(os.path.join(run_dir, "prof.*.out")))
        if not files:
            log(f"  no profile written ({scenario})")
            return {"error": "no profile written"}
        os.makedirs(self.raw, exist_ok=True)
        for path in files:
            shutil.copy(path, os.path.join(self.raw, f"{name}-{scenario}-{latency}ms-{os.path.basename(path)}"))
        text, summary = summarize_profile(files)
        out = os.path.join(self.args.out, f"profile-{name}-{scenario}-{latency}ms.txt")
        what = SCENARIO_TEXT[scenario]
        with open(out, "w", encoding="utf-8") as f:
            f.write(
                f"# {workload.title}, {OURS}, {what}, {latency} ms, under --cpu-profile: "
                f"{result['seconds']:.1f}s, {len(files)} process(es)\n"
                f"# statistics: {result['stats']}\n\n"
            )
            f.write(text)
        log(f"  profile ({scenario}): {out} ({result['seconds']:.1f}s)")
        for row in summary["components"][:6]:
            log(f"    {row['tottime_s']:7.3f}s  {row['component']}")
        rmtree(os.path.join(run_dir, "local"))
        return {
            "workload": name,
            "scenario": scenario,
            "latency_ms": latency,
            "seconds": result["seconds"],
            "stats": result["stats"],
            "file": os.path.relpath(out, self.args.out),
            **summary,
        }

    # -- output --------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        a = self.args
        return {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "go": subprocess.run([self.go, "version"], capture_output=True, text=True).stdout.strip(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "cpu_model": cpu_model(),
            "s3": a.s3,
            "programs": {p.name: p.command for p in self.programs},
            "workloads": {n: WORKLOADS[n].title for n in a.workloads},
            "latencies_ms": a.latencies,
            "cold_latencies_ms": a.cold_latencies,
            "big_cold_latencies_ms": a.big_cold_latencies,
            "jitter_ms": a.jitter,
            "go_p": a.go_p,
            "runs": a.runs,
            "big_runs": a.big_runs,
            "cold_runs": a.cold_runs,
            "big_cold_runs": a.big_cold_runs,
            "load_before": getattr(a, "load_before", None),
            "load_waited_s": getattr(a, "load_waited", None),
            "load_after": list(os.getloadavg()),
            "duration_s": round(time.monotonic() - self.started, 1),
        }

    def save(self) -> None:
        data = {"meta": self.meta(), "runs": self.runs, "analysis": self.analysis}
        write_outputs(data, self.args.out)


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


# --------------------------------------------------------------------------
# the protocol relay (analysis): how many gets are in flight


def relay_main(argv: list[str]) -> int:
    """
    C{harness.py relay LOG COMMAND [ARG...]}: run C{/bin/sh -c COMMAND} with
    our stdin/stdout relayed, timestamping every request and answer, and
    write C{LOG} ($$ replaced by our pid) at exit.  Used only in analysis
    runs (it adds a hop).
    """
    log_path, command, *rest = argv
    log_path = log_path.replace("$$", str(os.getpid()))
    child = subprocess.Popen(["/bin/sh", "-c", command, "sh", *rest], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    events: list[tuple[float, str, int, str]] = []
    lock = threading.Lock()
    clock = time.monotonic

    def requests() -> None:
        body_next = False
        source = sys.stdin.buffer
        assert child.stdin is not None
        for line in iter(source.readline, b""):
            child.stdin.write(line)
            child.stdin.flush()
            if body_next:
                body_next = False
                continue
            try:
                request = json.loads(line)
            except ValueError:
                continue
            if request.get("BodySize", 0) > 0:
                body_next = True
            with lock:
                events.append((clock(), "req", int(request.get("ID", -1)), str(request.get("Command", ""))))
        with contextlib.suppress(OSError):
            child.stdin.close()

    thread = threading.Thread(target=requests, daemon=True)
    thread.start()
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
            events.append((clock(), kind, int(answer.get("ID", -1)), ""))
    code = child.wait()
    with lock, open(log_path, "w", encoding="utf-8") as f:
        json.dump(events, f)
    return code


def summarize_relay(paths: Sequence[str]) -> dict[str, Any]:
    """
    From relay logs: number of gets, the time-weighted mean number of gets
    in flight (over the time at least one was), the max, and percentiles of
    the time go waited for each get.
    """
    gets = 0
    busy = weighted = 0.0
    peak = 0
    waits: list[float] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
        started: dict[int, float] = {}
        inflight = 0
        last = None
        for t, kind, ident, command in events:
            if last is not None and inflight > 0:
                busy += t - last
                weighted += inflight * (t - last)
            last = t
            if kind == "req" and command == "get":
                started[ident] = t
                inflight += 1
                gets += 1
                peak = max(peak, inflight)
            elif kind != "req" and ident in started:
                waits.append(1000 * (t - started.pop(ident)))
                inflight -= 1
    waits.sort()

    def pct(p: float) -> float | None:
        return round(waits[min(len(waits) - 1, int(p * len(waits)))], 2) if waits else None

    return {
        "gets": gets,
        "mean_inflight_busy": round(weighted / busy, 2) if busy else None,
        "busy_s": round(busy, 2),
        "max_inflight": peak,
        "get_ms_p50": pct(0.5),
        "get_ms_p90": pct(0.9),
        "get_ms_p99": pct(0.99),
    }


def profile_component(filename: str, name: str) -> str:
    """
    Where a profiled function belongs: a C built-in by name (poll is idle
    time, send/recv are sockets, posix.* the disk), else its package
    (site-packages), our module, or the standard library module.
    """
    if filename == "~":
        return "builtin " + name
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename.startswith(REPO + os.sep):
        return os.path.relpath(filename, REPO)
    if filename.startswith("<frozen"):
        return "import machinery"
    return "stdlib " + os.path.basename(filename)


def summarize_profile(paths: Sequence[str]) -> tuple[str, dict[str, Any]]:
    import io
    import pstats

    stream = io.StringIO()
    stats = pstats.Stats(*paths, stream=stream)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    components: dict[str, float] = {}
    imports = 0.0
    for (filename, _line, name), (_cc, _ncalls, tottime, cumtime, _callers) in raw.items():
        key = profile_component(filename, name)
        components[key] = components.get(key, 0.0) + tottime
        if name == "_find_and_load":
            imports = max(imports, cumtime)
    total = sum(components.values())
    ranked = sorted(components.items(), key=lambda kv: -kv[1])
    stream.write(f"## own time by component (total {total:.3f}s; imports, cumulative: {imports:.3f}s)\n")
    for key, seconds in ranked[:25]:
        stream.write(f"{seconds:8.3f}s {100 * seconds / total:5.1f}%  {key}\n")
    stream.write("\n")
    stats.strip_dirs()
    stream.write("## sorted by own time (tottime)\n")
    stats.sort_stats("tottime").print_stats(30)
    stream.write("\n## sorted by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(60)
    top = []
    raw = stats.stats  # type: ignore[attr-defined]
    for func, (_cc, ncalls, tottime, cumtime, _callers) in sorted(raw.items(), key=lambda kv: -kv[1][2])[:15]:
        filename, line, name = func
        top.append(
            {
                "function": f"{filename}:{line}({name})",
                "calls": ncalls,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
            }
        )
    summary = {
        "total_s": round(total, 3),
        "imports_s": round(imports, 3),
        "components": [{"component": k, "tottime_s": round(v, 3)} for k, v in ranked[:15]],
        "top_tottime": top,
    }
    return stream.getvalue(), summary


# --------------------------------------------------------------------------
# tables and plot


def groups(runs: list[dict[str, Any]]) -> dict[tuple[str, str, str, int | None], list[dict[str, Any]]]:
    out: dict[tuple[str, str, str, int | None], list[dict[str, Any]]] = {}
    for run in runs:
        key = (run["workload"], run["program"], run["scenario"], run["latency_ms"])
        out.setdefault(key, []).append(run)
    return out


def ok_seconds(runs: list[dict[str, Any]]) -> list[float]:
    return [r["seconds"] for r in runs if r.get("exit") == 0]


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def paired_ratios(
    by: dict[Any, list[dict[str, Any]]], key: tuple[str, str, str, int | None], base: tuple[str, str, str, None]
) -> list[float]:
    """
    Per-round ratios (a run against the native run of the same round).
    """
    base_by_round = {r["round"]: r["seconds"] for r in by.get(base, []) if r.get("exit") == 0}
    return [
        round(r["seconds"] / base_by_round[r["round"]], 3)
        for r in by.get(key, [])
        if r.get("exit") == 0 and r["round"] in base_by_round
    ]


def markdown(data: dict[str, Any]) -> str:
    meta, runs = data["meta"], data["runs"]
    by = groups(runs)
    programs = list(meta["programs"])
    out: list[str] = []
    w = out.append
    w("# Benchmark: go builds through GOCACHEPROG programs and a loopback S3 server")
    w("")
    w(
        f"{meta['date']}, {meta['go']}, Python {meta['python']}, {meta['cpus']} CPUs ({meta['cpu_model']}), "
        f"S3: {meta['s3']} on 127.0.0.1, latency injected by toxiproxy on every answer "
        f"(+- {meta['jitter_ms']} ms jitter; 0 ms = direct). Load average (1 min) before: "
        f"{fmt(meta.get('load_before'))}, after: {fmt(meta['load_after'][0])}; "
        f"whole run {meta['duration_s'] / 60:.0f} min."
        + (f" Every go command ran with `-p={meta['go_p']}`." if meta.get("go_p") else "")
    )
    w("")
    w("Medians; ratios are median ÷ median of the native run of the same workload (cold ÷ native cold,")
    w("warm ÷ native warm), measured in the same rounds (interleaved). Programs:")
    w("")
    for name, command in meta["programs"].items():
        w(f"- `{name}`: `{command}`")
    w("")

    # issue-3 targets
    if "std" in meta["workloads"]:
        w("## Targets (issue 3)")
        w("")
        w("| target | program | median (s) | native (s) | ratio | per-round ratios | goal | met |")
        w("|---|---|---:|---:|---:|---|---:|---|")
        for program in programs:
            for scenario, base_name, goal, what in (
                ("warm-remote", "native-warm", 2.0, "warm `go build std`, empty local tier, loopback S3 (0 ms)"),
                ("cold", "native-cold", 1.10, "cold `go build std` with uploads (0 ms)"),
            ):
                target: tuple[str, str, str, int | None] = ("std", program, scenario, 0)
                base_key: tuple[str, str, str, None] = ("std", "native", base_name, None)
                mine, theirs = median(ok_seconds(by.get(target, []))), median(ok_seconds(by.get(base_key, [])))
                if mine is None or theirs is None:
                    continue
                ratio = mine / theirs
                pairs = paired_ratios(by, target, base_key)
                w(
                    f"| {what} ÷ {base_name} | {program} | {mine:.2f} | {theirs:.2f} | **{ratio:.2f}** "
                    f"| {', '.join(f'{p:.2f}' for p in pairs)} | ≤ {goal:.2f} | {'yes' if ratio <= goal else 'NO'} |"
                )
        w("")

    for workload, title in meta["workloads"].items():
        native_cold = median(ok_seconds(by.get((workload, "native", "native-cold", None), [])))
        native_warm = median(ok_seconds(by.get((workload, "native", "native-warm", None), [])))
        w(f"## `{title}`")
        w("")
        w(
            f"Native: cold {fmt(native_cold)} s, warm {fmt(native_warm)} s "
            f"(runs: cold {len(ok_seconds(by.get((workload, 'native', 'native-cold', None), [])))}, "
            f"warm {len(ok_seconds(by.get((workload, 'native', 'native-warm', None), [])))})."
        )
        w("")
        header = "| scenario | latency |"
        rule = "|---|---:|"
        for program in programs:
            header += f" {program} (s) | ÷ native |"
            rule += "---:|---:|"
        w(header)
        w(rule)
        latencies = sorted({k[3] for k in by if k[0] == workload and k[3] is not None})
        for scenario in ("cold", "warm-local", "warm-remote"):
            base = native_cold if scenario == "cold" else native_warm
            for latency in latencies:
                cells = []
                present = False
                for program in programs:
                    values = ok_seconds(by.get((workload, program, scenario, latency), []))
                    middle = median(values)
                    present = present or middle is not None
                    cell_ratio = middle / base if middle is not None and base else None
                    spread = f" ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else ""
                    cells.append(f"{fmt(middle)}{spread} | {fmt(cell_ratio, 2, 'x')}")
                if present:
                    w(f"| {scenario} | {latency} ms | " + " | ".join(cells) + " |")
        w("")
        w("Per run (medians over runs): requests from the statistics line, bytes, the program's peak RSS")
        w("(max over its processes) and CPU (user+sys, all its processes), the CPU of the go command with the")
        w("compilers and linkers it waited for (not the program: go never waits for it), the S3 server's CPU")
        w("during the run, the 1-min load average at the start of the run.")
        w("")
        w(
            "| program | scenario | latency | runs | gets | local hits | remote hits | misses | puts | uploads "
            "| MB up | MB down | peak RSS (MB) | program CPU (s) | go CPU (s) | S3 server CPU (s) | load | notes |"
        )
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for key in sorted(
            (k for k in by if k[0] == workload),
            key=lambda k: (k[1] != "native", k[1], k[2], k[3] if k[3] is not None else -1),
        ):
            rows = by[key]
            good = [r for r in rows if r.get("exit") == 0]

            def med(name: str, scale: float = 1.0, rows: list[dict[str, Any]] = good) -> str:
                m = median([r["stats"][name] for r in rows if name in r.get("stats", {})])
                return fmt(None if m is None else m / scale, 1 if scale != 1 else 0)

            def med_field(name: str, scale: float = 1.0, digits: int = 1, rows: list[dict[str, Any]] = good) -> str:
                m = median([r[name] for r in rows if r.get(name) is not None])
                return fmt(None if m is None else m / scale, digits)

            notes = sorted({r["anomaly"] for r in rows if r.get("anomaly")})
            objects = [r["objects"] for r in rows if r.get("objects") is not None]
            if objects:
                notes.insert(0, f"{objects[0]} objects in the bucket after the seed run")
            shown = "-" if key[3] is None else f"{key[3]} ms"
            w(
                f"| {key[1]} | {key[2]} | {shown} | {len(good)}/{len(rows)} | {med('get_calls')} "
                f"| {med('local_hits')} | {med('remote_hits')} | {med('misses')} | {med('put_calls')} "
                f"| {med('uploads')} | {med('bytes_up', 1e6)} | {med('bytes_down', 1e6)} "
                f"| {med_field('rss_max_kb', 1024, 0)} | {med_field('prog_cpu_s')} | {med_field('go_cpu_s')} "
                f"| {med_field('s3_cpu_s')} | {med_field('load1')} "
                f"| {'; '.join(notes)} |"
            )
        w("")

    analysis = data.get("analysis") or {}
    if analysis.get("startup"):
        w("## Start-up (handshake) and exit, per program (no build; medians)")
        w("")
        w("| program | start to handshake (ms) | min (ms) | stdin closed to exit (ms) |")
        w("|---|---:|---:|---:|")
        for program, s in analysis["startup"].items():
            if "error" in s:
                w(f"| {program} | {s['error']} | | |")
            else:
                w(
                    f"| {program} | {s['handshake_ms_median']} | {s['handshake_ms_min']} "
                    f"| {s['exit_after_close_ms_median']} |"
                )
        w("")
    if analysis.get("s3_baseline"):
        b = analysis["s3_baseline"]
        w(
            f"S3 server by itself (botocore GetObject of {b.get('gets')} seed objects one at a time, no proxy): "
            f"p50 {b.get('ms_p50')} ms, p90 {b.get('ms_p90')} ms, mean object {b.get('mean_kb')} KiB."
        )
        w("")
    if analysis.get("inflight"):
        w("## Gets in flight (relay run, our cacheprog, warm from remote, first workload)")
        w("")
        w("| latency | gets | mean gets in flight (while ≥ 1) | max | get wait p50 / p90 / p99 (ms) | time (s) |")
        w("|---:|---:|---:|---:|---|---:|")
        for latency, s in analysis["inflight"].items():
            w(
                f"| {latency} ms | {s.get('gets')} | {s.get('mean_inflight_busy')} | {s.get('max_inflight')} "
                f"| {s.get('get_ms_p50')} / {s.get('get_ms_p90')} / {s.get('get_ms_p99')} | {s.get('seconds')} |"
            )
        w("")
    for p in (analysis.get("profiles") or {}).values():
        if "error" in p:
            continue
        w(
            f"## Profile: our cacheprog, `{p['workload']}` {p['scenario']}, {p['latency_ms']} ms "
            f"(`--cpu-profile`; {p['seconds']:.1f} s under the profiler)"
        )
        w("")
        w(
            f"Full pstats output: `{p['file']}`. Own time by component (total {p['total_s']:.2f} s, of which "
            f"imports {p['imports_s']:.2f} s cumulative; `poll` is the reactor waiting):"
        )
        w("")
        w("| component | own (s) | share |")
        w("|---|---:|---:|")
        for row in p["components"][:12]:
            w(f"| `{row['component']}` | {row['tottime_s']:.3f} | {100 * row['tottime_s'] / p['total_s']:.0f}% |")
        w("")
        w("Largest own-time functions:")
        w("")
        w("| function | calls | own (s) | cumulative (s) |")
        w("|---|---:|---:|---:|")
        for row in p["top_tottime"][:10]:
            w(f"| `{row['function']}` | {row['calls']} | {row['tottime_s']:.3f} | {row['cumtime_s']:.3f} |")
        w("")
    return "\n".join(out)


def plot(data: dict[str, Any], path: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is missing: no plot (pip install matplotlib)"
    meta, runs = data["meta"], data["runs"]
    by = groups(runs)
    workloads = list(meta["workloads"])
    programs = list(meta["programs"])
    fig, axes = plt.subplots(len(workloads), 2, figsize=(12, 3.6 * len(workloads)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"cold": "-", "warm-local": ":", "warm-remote": "-"}
    markers = {"cold": "s", "warm-local": "^", "warm-remote": "o"}
    for row, workload in enumerate(workloads):
        for col, (panel, scenarios, native) in enumerate(
            (("cold", ("cold",), "native-cold"), ("warm", ("warm-local", "warm-remote"), "native-warm"))
        ):
            ax = axes[row][col]
            base_values = ok_seconds(by.get((workload, "native", native, None), []))
            base = median(base_values)
            if base is not None:
                ax.axhline(base, color="black", linestyle="--", linewidth=1, label=f"{native} {base:.1f}s")
            for p_index, program in enumerate(programs):
                for scenario in scenarios:
                    points = sorted(
                        (k[3], ok_seconds(v))
                        for k, v in by.items()
                        if k[:3] == (workload, program, scenario) and k[3] is not None
                    )
                    points = [(x, ys) for x, ys in points if ys]
                    if not points:
                        continue
                    # Programs side by side: a small offset each, so that their points do not hide.
                    dodge = (p_index - (len(programs) - 1) / 2) * 1.2
                    xs = [x + dodge for x, _ in points]
                    meds = [statistics.median(ys) for _, ys in points]
                    low = [m - min(ys) for m, (_, ys) in zip(meds, points, strict=True)]
                    high = [max(ys) - m for m, (_, ys) in zip(meds, points, strict=True)]
                    ax.errorbar(
                        xs,
                        meds,
                        yerr=[low, high],
                        color=colors[p_index % len(colors)],
                        linestyle=styles[scenario],
                        marker=markers[scenario],
                        capsize=3,
                        label=f"{program} {scenario}",
                    )
                    if base:
                        for x, m in zip(xs, meds, strict=True):
                            ax.annotate(
                                f"{m / base:.2f}x",
                                (x, m),
                                textcoords="offset points",
                                xytext=(4, 4),
                                fontsize=7,
                                color=colors[p_index % len(colors)],
                            )
            ticks = sorted({k[3] for k in by if k[0] == workload and k[3] is not None})
            if ticks:
                ax.set_xticks(ticks)
                ax.set_xlim(min(ticks) - 5, max(ticks) + 5)
            ax.set_title(f"{meta['workloads'][workload]}: {panel}", fontsize=9)
            ax.set_xlabel("injected latency per S3 answer (ms)")
            ax.set_ylabel("seconds (median, min-max)")
            ax.set_ylim(bottom=0)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle(f"{meta['go']}, {meta['cpus']} CPUs, S3 {meta['s3']} on loopback; ratios vs native (x)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"wrote {path}"


def write_outputs(data: dict[str, Any], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "harness.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    with open(os.path.join(out, "harness.md"), "w", encoding="utf-8") as f:
        f.write(markdown(data))
        f.write("\n")
    plot(data, os.path.join(out, "harness.png"))


# --------------------------------------------------------------------------
# command line


def latency_list(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("latencies are >= 0 ms")
    return values


def peer(text: str) -> tuple[str, str]:
    name, sep, command = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not command.strip():
        raise argparse.ArgumentTypeError("expected NAME=COMMAND (NAME: letters, digits, _ . -)")
    return name, command.strip()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/harness.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads",
        default="std,cmd,golangci-lint",
        help=f"comma-separated, from {', '.join(WORKLOADS)} (default: std,cmd,golangci-lint)",
    )
    parser.add_argument("--latencies", type=latency_list, default=[0, 20, 50], help="warm latencies, ms (0,20,50)")
    parser.add_argument(
        "--cold-latencies", type=latency_list, default=[0, 20, 50], help="cold latencies for std/small (0,20,50)"
    )
    parser.add_argument(
        "--big-cold-latencies", type=latency_list, default=[0], help="cold latencies for cmd/golangci-lint (0)"
    )
    parser.add_argument("--jitter", type=int, default=10, help="latency jitter, +- ms (10)")
    parser.add_argument("--runs", type=int, default=3, help="warm runs per scenario, std/small (3)")
    parser.add_argument("--big-runs", type=int, default=1, help="warm runs per scenario, cmd/golangci-lint (1)")
    parser.add_argument("--cold-runs", type=int, default=2, help="cold runs per scenario, std/small (2)")
    parser.add_argument("--big-cold-runs", type=int, default=1, help="cold runs per scenario, cmd/golangci-lint (1)")
    parser.add_argument(
        "--cacheprog",
        default=f"{shlex.quote(sys.executable)} -m cacheprog",
        help="our cacheprog command (default: this Python's -m cacheprog, from this checkout)",
    )
    parser.add_argument(
        "--peer",
        dest="peers",
        action="append",
        type=peer,
        default=[],
        metavar="NAME=COMMAND",
        help="another GOCACHEPROG program run through the same scenarios (repeatable); COMMAND is a "
        "/bin/sh command line, run with the same CACHEPROG_* variables (e.g. "
        "'ref=env CACHEPROG_S3_ENDPOINT=minio+$CACHEPROG_S3_ENDPOINT /path/cacheprog')",
    )
    parser.add_argument(
        "--go-p", type=int, default=0, help="go build -p N (GOFLAGS) for every go command (default: GOMAXPROCS)"
    )
    parser.add_argument("--s3", choices=("seaweedfs", "minio"), default="seaweedfs", help="S3 server (seaweedfs)")
    parser.add_argument("--go", default=shutil.which("go") or "go", help="the go command")
    parser.add_argument("--out", default=RESULTS, help="output directory (bench/results)")
    parser.add_argument("--work", default="", help="work directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per go command (1800)")
    parser.add_argument(
        "--analysis", action=argparse.BooleanOptionalAction, default=True, help="relay and profile runs (on)"
    )
    parser.add_argument(
        "--analysis-latencies", type=latency_list, default=[0, 50], help="latencies of the relay runs (0,50)"
    )
    parser.add_argument("--profile-latency", type=int, default=0, help="latency of the profiled runs (0)")
    parser.add_argument(
        "--profile",
        type=lambda text: [v.strip() for v in text.split(",") if v.strip()],
        default=["warm-remote", "cold"],
        help="scenarios profiled, from warm-remote, cold (default: warm-remote,cold; empty: none)",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        default=0.0,
        help="before starting, wait until the 1-min load average is below this (0: do not wait)",
    )
    parser.add_argument("--wait-max", type=float, default=1500, help="wait at most this many seconds (1500)")
    parser.add_argument("--quick", action="store_true", help="development: small workload, 1 run, 0/50 ms")
    parser.add_argument("--replot", action="store_true", help="no runs: table and plot from <out>/harness.json")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    if "--quick" in argv:
        # Development defaults; options given explicitly still win.
        parser.set_defaults(
            out=os.path.join(RESULTS, "raw", "quick"),
            workloads="small",
            runs=1,
            big_runs=1,
            cold_runs=1,
            big_cold_runs=1,
            latencies=[0, 50],
            cold_latencies=[0, 50],
            analysis_latencies=[0, 50],
        )
    args = parser.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for name in args.workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
    if min(args.runs, args.big_runs, args.cold_runs, args.big_cold_runs) < 1:
        parser.error("run counts must be at least 1")
    if not args.cold_latencies or not args.big_cold_latencies or not args.latencies:
        parser.error("latency lists must not be empty")
    if args.analysis and args.profile and args.profile_latency not in args.latencies:
        args.latencies = sorted({*args.latencies, args.profile_latency})
    for scenario in args.profile:
        if scenario not in ("warm-remote", "cold"):
            parser.error(f"--profile: unknown scenario {scenario!r} (warm-remote, cold)")
    for latency in args.analysis_latencies if args.analysis else []:
        if latency not in args.latencies:
            parser.error("--analysis-latencies must be among --latencies")
    names = [OURS] + [name for name, _ in args.peers]
    if len(set(names)) != len(names):
        parser.error(f"peer names must be unique and not {OURS!r}")
    if not os.access(TIME, os.X_OK):
        parser.error(f"{TIME} is needed (GNU time: apt-get install time)")
    args.out = os.path.abspath(args.out)
    return args


def wait_for_quiet(args: argparse.Namespace) -> None:
    args.load_before = load1()
    args.load_waited = 0
    if args.wait_load <= 0:
        return
    began = time.monotonic()
    while True:
        current = load1()
        waited = time.monotonic() - began
        if current < args.wait_load:
            log(f"load average {current} < {args.wait_load}: starting")
            break
        if waited >= args.wait_max:
            log(f"load average still {current} after {waited:.0f}s: starting anyway")
            break
        log(f"load average {current} >= {args.wait_load}: waiting (checked every 60 s, {waited:.0f}s so far)")
        time.sleep(60)
    args.load_before = load1()
    args.load_waited = round(time.monotonic() - began)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["relay"]:
        return relay_main(list(argv[1:]))
    args = parse_args(argv)
    if args.replot:
        with open(os.path.join(args.out, "harness.json"), encoding="utf-8") as f:
            data = json.load(f)
        write_outputs(data, args.out)
        print(markdown(data))
        return 0
    if args.dry_run:
        cold, warm = Harness(args, "").plan()
        for cell in cold + warm:
            print(f"{cell.label:50} x{cell.runs}")
        print(f"{sum(c.runs for c in cold + warm)} timed go commands")
        return 0
    work = args.work or tempfile.mkdtemp(prefix="cacheprog-harness-")
    os.makedirs(work, exist_ok=True)
    harness = Harness(args, work)
    wait_for_quiet(args)
    log(f"work dir {work}; programs: {', '.join(f'{p.name}={p.command!r}' for p in harness.programs)}")
    try:
        harness.start_servers()
        harness.run()
        if args.analysis:
            harness.run_analysis()
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        harness.stop_servers()
        harness.save()
        if args.keep:
            log(f"kept {work}")
        else:
            rmtree(work)
    log(f"wrote {os.path.join(args.out, 'harness.md')}, harness.png, harness.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""
Runs the plan: every cell's go commands round by round (native and
programs interleaved, so that ratios are measured side by side on a noisy
machine), the seeds they leave, and the analysis runs after the matrix.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from bench import measure
from bench.plan import NATIVE, Cell, Phases, Program
from bench.records import Analysis, Run
from bench.storage import BUCKET, Storage, request_delta
from bench.workloads import WORKLOADS, Sources, Workload
from tests.goenv import go_environ

TIME = "/usr/bin/time"
Log = Callable[[str], None]


@dataclass
class Seed:
    """
    What a program's first cold run left: its local tier and bucket prefix.
    """

    local: str
    prefix: str


@dataclass
class Build:
    """
    One go command as the runner saw it, before it becomes a L{Run}.
    """

    seconds: float
    exit: int
    go_cpu_s: float
    exited_at: float  # time.monotonic() when go was reaped
    pgid: int
    log: str


@dataclass
class Setup:
    """
    Where one run of a program reads and writes.
    """

    run_dir: str
    gocache: str
    local: str
    prefix: str
    latency: int
    workload: str
    extra: str = ""
    relay_log: str = ""


@dataclass
class Runner:
    args: argparse.Namespace
    work: str
    programs: Sequence[Program]
    storage: Storage
    log: Log
    runs: list[Run] = field(default_factory=list)
    analysis: Analysis = field(default_factory=Analysis)
    native_cache: dict[str, str] = field(default_factory=dict)
    seeds: dict[tuple[str, str], Seed] = field(default_factory=dict)
    counter: int = 0
    sources: Sources | None = None
    stopped: bool = False
    analysed: bool = False

    def __post_init__(self) -> None:
        self.raw = os.path.join(self.args.out, "raw")
        self.gomodcache = self._go_env("GOMODCACHE")
        self.gopath = self._go_env("GOPATH")
        self.sources = Sources(self.work, self.args.go, self.offline_env, self.log)

    # -- environments ------------------------------------------------------

    def _go_env(self, name: str) -> str:
        argv = [self.args.go, "env", name]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()

    def offline_env(self, gocache: str) -> dict[str, str]:
        goflags = "-mod=mod" + (f" -p={self.args.go_p}" if self.args.go_p else "")
        return go_environ(gocache, goflags=goflags, GOMODCACHE=self.gomodcache, GOPATH=self.gopath)

    def program_env(self, program: Program, setup: Setup) -> dict[str, str]:
        key, secret = self.storage.credentials()
        env = self.offline_env(setup.gocache)
        env.update(
            CACHEPROG_REMOTE_STORAGE_TYPE="s3",
            CACHEPROG_S3_ENDPOINT=self.storage.endpoints[setup.latency],
            CACHEPROG_S3_FORCE_PATH_STYLE="true",
            CACHEPROG_S3_ACCESS_KEY_ID=key,
            CACHEPROG_S3_ACCESS_KEY_SECRET=secret,
            CACHEPROG_S3_BUCKET=BUCKET,
            CACHEPROG_S3_REGION="us-east-1",
            CACHEPROG_S3_PREFIX=setup.prefix,
            CACHEPROG_ROOT_DIRECTORY=setup.local,
            CACHEPROG_DISK_STORAGE_ROOT=setup.local,
            CACHEPROG_LOG_LEVEL="INFO",
            # The default run key hashes the parent's command line, and the
            # parent here is /usr/bin/time or the relay with this run's paths
            # in their arguments: name the manifest per workload instead.
            CACHEPROG_MANIFEST_KEY=f"bench-{setup.workload}",
        )
        env["GOCACHEPROG"] = self.wrapper(program, setup)
        return env

    def wrapper(self, program: Program, setup: Setup) -> str:
        """
        A shell script that runs the program, under /usr/bin/time (one file
        per process: C{$$} is the wrapper's pid) unless it is relayed or
        must close go's stdout before it exits; C{setup.extra} is added to
        the program's arguments (C{$$} works there too).
        """
        command = f"{program.command} {setup.extra}".strip()
        if setup.relay_log:
            inner = shlex.quote(f'exec {command} "$@"')
            command = f'{shlex.quote(sys.executable)} -m bench.relay "{setup.relay_log}" {inner}'
        elif program.timed:
            command = f'{TIME} -o "$DIR/proc.$$.time" -f "{measure.TIME_FORMAT}" {command}'
        path = os.path.join(setup.run_dir, "gocacheprog.sh")
        with open(path, "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\n# GOCACHEPROG wrapper written by bench/runner.py\n")
            f.write(f"DIR={shlex.quote(setup.run_dir)}\n")
            f.write(f'exec {command} "$@"\n')
        os.chmod(path, 0o755)
        return path

    # -- one go command ----------------------------------------------------

    def new_run_dir(self, label: str) -> str:
        self.counter += 1
        path = os.path.join(self.work, "runs", f"{self.counter:04d}-{label.replace(':', '-').replace('@', '-')}")
        os.makedirs(path)
        return path

    def go_build(self, workload: Workload, env: dict[str, str], run_dir: str) -> Build:
        """
        One timed go command; its output goes to <run_dir>/go.log.
        """
        assert self.sources is not None
        log_path = os.path.join(run_dir, "go.log")
        with open(log_path, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [self.args.go, *workload.argv],
                cwd=self.sources.prepare(workload),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            timer = threading.Timer(self.args.timeout, measure.kill_group, (proc.pid,))
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:
                measure.kill_group(proc.pid)
                raise
            finally:
                timer.cancel()
            exited_at = time.monotonic()
            elapsed = time.perf_counter() - start
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        return Build(
            seconds=round(elapsed, 3),
            exit=os.waitstatus_to_exitcode(status),
            go_cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
            exited_at=exited_at,
            pgid=proc.pid,
            log=text,
        )

    def settle(self, pgid: int, program: Program | None, env: dict[str, str], record: Run) -> None:
        """
        After go exited: the program's untimed after-command (the detached
        drain's wait), then until nothing of the go command is left.
        """
        if program is not None and program.after:
            began = time.perf_counter()
            done = subprocess.run(
                ["/bin/sh", "-c", program.after], env=env, capture_output=True, text=True, timeout=900, check=False
            )
            record.drain_wait_s = round(time.perf_counter() - began, 2)
            if done.returncode != 0:
                record.anomaly = f"{program.after!r} exited {done.returncode}: {done.stderr[-300:]}"
        if not measure.wait_group_gone(pgid, 30.0):
            self.log("  (program processes still running 30 s after go exited: killed)")
            measure.kill_group(pgid)

    def keep_log(self, run_dir: str) -> None:
        os.makedirs(self.raw, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copy(os.path.join(run_dir, "go.log"), os.path.join(self.raw, os.path.basename(run_dir) + ".log"))

    # -- one cell run --------------------------------------------------------

    def program(self, name: str) -> Program:
        return next(p for p in self.programs if p.name == name)

    def run_cell(self, cell: Cell, round_: int) -> None:
        workload = WORKLOADS[cell.workload]
        run_dir = self.new_run_dir(cell.label)
        gocache = os.path.join(run_dir, "gocache")
        cleanup = [gocache, os.path.join(run_dir, "local")]
        record = Run(cell.workload, cell.program, cell.scenario, cell.latency, round_, measure.load1())
        program: Program | None = None
        if cell.program == NATIVE:
            if cell.scenario in ("native-warm", "native-pr"):
                gocache = self.native_cache[cell.workload]
                cleanup = []
            env = self.offline_env(gocache)
        else:
            program = self.program(cell.program)
            setup = self.setup_for(cell, program, run_dir, gocache, round_)
            if setup.local != cleanup[1]:
                cleanup = [gocache]
            record.prefix = setup.prefix
            env = self.program_env(program, setup)
        before = self.storage.requests()
        server_before = measure.process_cpu(self.storage.pid)
        with self.changed(cell, round_):
            build = self.go_build(workload, env, run_dir)
        self.finish(record, build, run_dir, program, env, server_before, before)
        self.after_cell(cell, record, gocache, cleanup, run_dir)

    @contextlib.contextmanager
    def changed(self, cell: Cell, round_: int) -> Iterator[None]:
        if cell.scenario not in ("pr", "native-pr"):
            yield
            return
        assert self.sources is not None
        with self.sources.changed(WORKLOADS[cell.workload], f"round {round_}"):
            yield

    def setup_for(self, cell: Cell, program: Program, run_dir: str, gocache: str, round_: int) -> Setup:
        assert cell.latency is not None
        local = os.path.join(run_dir, "local")
        if cell.scenario == "cold":
            prefix = f"{program.name}/{cell.workload}/cold-{cell.latency}ms-{round_}-{secrets.token_hex(3)}"
            return Setup(run_dir, gocache, local, prefix, cell.latency, cell.workload)
        seed = self.seeds[(cell.workload, program.seed_from)]
        if cell.scenario == "warm-local":
            local = seed.local
        return Setup(run_dir, gocache, local, seed.prefix, cell.latency, cell.workload)

    def finish(
        self,
        record: Run,
        build: Build,
        run_dir: str,
        program: Program | None,
        env: dict[str, str],
        server_before: float | None,
        requests_before: dict[str, int] | None,
    ) -> None:
        record.seconds, record.exit, record.go_cpu_s = build.seconds, build.exit, build.go_cpu_s
        self.settle(build.pgid, program, env, record)
        # Lines written after go exited (the program's exit) count too.
        with open(os.path.join(run_dir, "go.log"), encoding="utf-8", errors="replace") as f:
            build.log = f.read()
        server_after = measure.process_cpu(self.storage.pid)
        if server_before is not None and server_after is not None:
            record.s3_cpu_s = round(server_after - server_before, 2)
        if program is not None:
            record.s3_requests = request_delta(requests_before, self.storage.requests())
        record.stats_lines, record.stats, record.words = measure.parse_stats(build.log)
        usage = measure.parse_time_files(run_dir)
        record.procs, record.rss_max_kb, record.rss_sum_kb = usage.procs, usage.rss_max_kb, usage.rss_sum_kb
        record.prog_cpu_s = usage.prog_cpu_s
        if build.exit != 0:
            record.error = build.log[-3000:]
        record.anomaly = "; ".join(filter(None, (record.anomaly, anomaly(record))))

    def after_cell(self, cell: Cell, record: Run, gocache: str, cleanup: list[str], run_dir: str) -> None:
        seed_key = (cell.workload, cell.program)
        if cell.scenario == "native-cold":
            old = self.native_cache.get(cell.workload)
            self.native_cache[cell.workload] = gocache
            cleanup = [old] if old else []
        elif (
            cell.scenario == "cold"
            and self.program(cell.program).seed_from == cell.program
            and seed_key not in self.seeds
            and record.ok
        ):
            self.seeds[seed_key] = Seed(os.path.join(run_dir, "local"), record.prefix)
            cleanup = [gocache]
            record.seed = True
            record.objects = self.storage.count_objects(record.prefix)
        if not record.ok or record.anomaly:
            self.keep_log(run_dir)
        self.runs.append(record)
        self.print_run(cell, record)
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)

    def print_run(self, cell: Cell, record: Run) -> None:
        stats = record.stats
        keys = ("get_calls", "local_hits", "remote_hits", "misses", "put_calls", "uploads", "prefetched")
        note = " ".join(f"{k}={stats[k]}" for k in keys if k in stats)
        note += "".join(f" {k}={v}" for k, v in record.words.items() if k.startswith("manifest"))
        if record.rss_max_kb:
            note += f" rss={record.rss_max_kb / 1024:.0f}MB"
        if record.s3_requests is not None:
            note += f" s3_requests={record.s3_request_count()}"
        if record.drain_wait_s is not None:
            note += f" drain_wait={record.drain_wait_s}s"
        if record.anomaly:
            note += f"  !! {record.anomaly}"
        self.log(f"  {cell.label:42} r{record.round}: {record.seconds:7.2f}s  load={record.load1:.1f}  {note}")

    # -- the matrix ----------------------------------------------------------

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
                if self.out_of_time():
                    return
                self.run_cell(cell, round_)

    def out_of_time(self) -> bool:
        """
        Past C{--stop-at}: what is left is skipped (and said so), so that a
        run with a deadline still ends with its results written.
        """
        late = self.args.stop_at is not None and time.time() >= self.args.stop_at
        if late and not self.stopped:
            self.log("--stop-at reached: skipping what is left")
            self.stopped = True
        return late

    def run(self, phases: dict[str, Phases], save: Callable[[], None], after: Callable[[str], None]) -> None:
        """
        Every workload's cold phase, then its warm one; C{after} runs after each workload.
        """
        assert self.sources is not None
        for name, cells in phases.items():
            workload = WORKLOADS[name]
            self.sources.prepare(workload)
            self.log(f"== {workload.title}")
            self.run_phase(cells.cold)
            self.run_phase(cells.warm)
            self.run_phase(cells.pr)
            # The analysis needs the bucket only.
            for (seeded, _), seed in self.seeds.items():
                if seeded == name:
                    shutil.rmtree(seed.local, ignore_errors=True)
            save()
            after(name)
            save()


def anomaly(record: Run) -> str:
    """
    What went wrong in a run, if anything: go failed, a program printed no
    statistics, a warm run missed, a program counted faults.
    """
    if not record.ok:
        return f"go exited {record.exit}"
    if record.program == NATIVE:
        return ""
    stats = record.stats
    if not record.stats_lines and record.drain_wait_s is None:
        # A detached drain logs its statistics to its uploader log, which
        # `cacheprog wait` reads and removes.
        return "no statistics line"
    gets, misses = stats.get("get_calls", 0), stats.get("misses")
    problems = []
    if record.scenario.startswith("warm") and misses:
        problems.append(f"{misses} misses of {gets} gets")
    hits = stats.get("get_hits")
    if record.scenario.startswith("warm") and hits is not None and hits < gets:
        problems.append(f"{gets - hits} gets not hit")
    for key in ("remote_timeouts", "remote_faults", "corrupt_objects", "uploads_dropped"):
        if stats.get(key):
            problems.append(f"{key}={stats[key]}")
    return "; ".join(problems)

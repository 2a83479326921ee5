#!/usr/bin/env python3
"""
The benchmark harness: real go builds through GOCACHEPROG programs against a
loopback S3 server, with injected latency, side by side with the go
command's own cache.

    python bench/harness.py                        # every group (~45 min on 2 cores)
    python bench/harness.py --only std-warm,exit   # a focused run
    python bench/harness.py --quick                # go build net/http, one run each (~4 min)
    python bench/harness.py --reference /path/to/reference/cacheprog
    python bench/harness.py --replot               # table and plot again from the JSON

Groups (C{--only}; each brings the seeds and native baselines it needs):

 - C{std-warm}: C{go build std} warm from S3 with an empty local tier at each
   C{--latencies}, warm from the local tier at 0 ms, the peers (the Go
   reference) warm from S3 at C{--peer-latencies}, S3 requests counted;
 - C{std-cold}: cold C{go build std} with uploads at each C{--cold-latencies},
   with and without the detached drain;
 - C{big-warm}: C{go build cmd} and golangci-lint warm from S3 at
   C{--big-latencies};
 - C{pr}: golangci-lint with one source file changed, warm from S3 at
   C{--pr-latency}, against go's own warm cache with the same change;
 - C{exit}: how long go takes to exit after its last answer (protocol relay;
   drain on and off);
 - C{analysis}: start-up, the S3 server by itself, gets in flight, profiles.

Every go command gets a fresh GOCACHE (go still needs one with GOCACHEPROG)
except the native warm ones; cells run round by round, the order rotated
each round, so native and program runs alternate under the same load.  The
seed of the warm scenarios is our first cold run at its lowest latency;
peers read the same seed (the bucket layout is shared).

Output (C{--out}, default C{bench/results}): C{harness.md}, C{harness.png},
C{harness.json}, C{profile-*.txt}; logs of failed runs and raw profiles go
to C{<out>/raw/} (not committed).  Needs C{weed} (SeaweedFS) or C{minio},
C{toxiproxy-server} (C{.ci/install-servers.sh}), matplotlib for the plot.
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench import analysis, measure, report  # noqa: E402
from bench.plan import DRAIN, GROUPS, OURS, REFERENCE, Options, Program, plan  # noqa: E402
from bench.records import Meta, Results  # noqa: E402
from bench.runner import TIME, Runner  # noqa: E402
from bench.storage import Storage  # noqa: E402
from bench.workloads import WORKLOADS  # noqa: E402

RESULTS = os.path.join(REPO, "bench", "results")
REFERENCE_VARIABLE = "CACHEPROG_BENCH_REFERENCE"
DRAIN_OPTION = re.compile(r"(--[a-z-]*(?:detach|drain)[a-z-]*)")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def latency_list(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("latencies are >= 0 ms")
    return values


def name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def stop_at(text: str) -> float:
    """
    The next time of day C{HH:MM} (UTC) as a timestamp.
    """
    try:
        hours, minutes = (int(part) for part in text.split(":"))
        now = datetime.datetime.now(datetime.timezone.utc)
        when = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected HH:MM (UTC), got {text!r}") from e
    if when < now:
        when += datetime.timedelta(days=1)
    return when.timestamp()


def variant(text: str) -> tuple[str, str, list[int]]:
    """
    C{NAME[@L,...]=OPTIONS}: a variant of our cacheprog, at its own cold latencies.
    """
    head, sep, flags = text.partition("=")
    name, _, latencies = head.partition("@")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not flags.strip():
        raise argparse.ArgumentTypeError("expected NAME[@L,...]=OPTIONS (NAME: letters, digits, _ . -)")
    return name, flags.strip(), latency_list(latencies) if latencies else []


def peer(text: str) -> tuple[str, str]:
    name, sep, command = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not command.strip():
        raise argparse.ArgumentTypeError("expected NAME=COMMAND (NAME: letters, digits, _ . -)")
    return name, command.strip()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/harness.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add("--only", type=name_list, default=list(GROUPS), help=f"groups, comma-separated: {', '.join(GROUPS)} (all)")
    add("--workloads", type=name_list, default=["std", "golangci-lint", "cmd"], help="std,golangci-lint,cmd")
    add("--latencies", type=latency_list, default=[0, 50], help="std warm-from-S3 latencies, ms (0,50)")
    add("--cold-latencies", type=latency_list, default=[0, 50], help="std cold latencies (0,50)")
    add("--big-latencies", type=latency_list, default=[0], help="cmd/golangci-lint warm latencies (0)")
    add("--big-cold-latencies", type=latency_list, default=[0], help="cmd/golangci-lint cold (seed) latencies (0)")
    add("--peer-latencies", type=latency_list, default=[0, 50], help="peers' std warm latencies (0,50)")
    add("--pr-latency", type=int, default=50, help="latency of the pull-request build (50)")
    add("--jitter", type=int, default=10, help="latency jitter, +- ms (10)")
    add("--runs", type=int, default=3, help="warm runs per scenario, std (3)")
    add("--big-runs", type=int, default=2, help="warm and PR runs per scenario, cmd/golangci-lint (2)")
    add("--cold-runs", type=int, default=2, help="cold runs per scenario, std (2)")
    add("--big-cold-runs", type=int, default=1, help="cold runs per scenario, cmd/golangci-lint (1)")
    add(
        "--cacheprog",
        default=f"{shlex.quote(sys.executable)} -m cacheprog",
        help="our cacheprog command (default: this Python's -m cacheprog, from this checkout)",
    )
    add(
        "--reference",
        default=os.environ.get(REFERENCE_VARIABLE, ""),
        help=f"the Go reference's binary, a peer named {REFERENCE!r} (default: ${REFERENCE_VARIABLE})",
    )
    add(
        "--peer",
        dest="peers",
        action="append",
        type=peer,
        default=[],
        metavar="NAME=COMMAND",
        help="another GOCACHEPROG program (a /bin/sh command line, same CACHEPROG_* variables), run warm from "
        "our seed like the reference (repeatable)",
    )
    add(
        "--variant",
        dest="variants",
        action="append",
        type=variant,
        default=[],
        metavar="NAME[@L,...]=OPTIONS",
        help="our cacheprog with more options (e.g. 'nowarm=--warm-start=false'), cold std at its latencies "
        "(default: --variant-latencies) in the std-cold group (repeatable)",
    )
    add("--variant-latencies", type=latency_list, default=[0], help="the variants' cold latencies (0)")
    add(
        "--drain-option",
        default=None,
        help="our option that turns the detached drain on (default: found in `cacheprog --help`; '' for none)",
    )
    add("--drain-wait", default="wait", help="our subcommand that waits for detached uploads (wait)")
    add("--go-p", type=int, default=0, help="go build -p N (GOFLAGS) for every go command (default: GOMAXPROCS)")
    add("--s3", choices=("seaweedfs", "minio"), default="seaweedfs", help="S3 server (seaweedfs; minio: no counts)")
    add("--go", default=shutil.which("go") or "go", help="the go command")
    add("--out", default=RESULTS, help="output directory (bench/results)")
    add("--work", default="", help="work directory (default: a new temporary one)")
    add("--keep", action="store_true", help="keep the work directory")
    add("--timeout", type=float, default=1800, help="seconds allowed per go command (1800)")
    add("--analysis-latencies", type=latency_list, default=[0, 50], help="relay runs' latencies (0,50)")
    add("--profile-latency", type=int, default=0, help="latency of the profiled runs (0)")
    add("--profile", type=name_list, default=["warm-remote", "cold"], help="profiled scenarios (warm-remote,cold)")
    add(
        "--stop-at",
        type=stop_at,
        default=None,
        help="HH:MM (UTC): start nothing new after this; what was measured is written (default: no limit)",
    )
    add("--wait-load", type=float, default=0.0, help="first wait until the 1-min load average is below this")
    add("--wait-max", type=float, default=1500, help="wait at most this many seconds (1500)")
    add("--quick", action="store_true", help="development: net/http, one run each, 0/50 ms")
    add("--replot", action="store_true", help="no runs: table and plot from <out>/harness.json")
    add("--dry-run", action="store_true", help="print the plan and exit")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = parser()
    if "--quick" in argv:
        # Development defaults; options given explicitly still win.
        p.set_defaults(
            out=os.path.join(RESULTS, "raw", "quick"),
            workloads=["small"],
            only=["std-warm", "std-cold", "exit"],
            runs=1,
            big_runs=1,
            cold_runs=1,
            big_cold_runs=1,
        )
    args = p.parse_args(argv)
    for name in args.workloads:
        if name not in WORKLOADS:
            p.error(f"--workloads: unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
    for group in args.only:
        if group not in GROUPS:
            p.error(f"--only: unknown group {group!r} (known: {', '.join(GROUPS)})")
    if min(args.runs, args.big_runs, args.cold_runs, args.big_cold_runs) < 1:
        p.error("run counts must be at least 1")
    if not args.latencies or not args.cold_latencies or not args.big_cold_latencies or not args.big_latencies:
        p.error("latency lists must not be empty")
    for scenario in args.profile:
        if scenario not in ("warm-remote", "cold"):
            p.error(f"--profile: unknown scenario {scenario!r} (warm-remote, cold)")
    if args.reference and not os.access(args.reference, os.X_OK):
        p.error(f"--reference / ${REFERENCE_VARIABLE}: {args.reference} is not an executable file")
    names = [OURS, DRAIN, REFERENCE] + [name for name, _ in args.peers] + [v[0] for v in args.variants]
    if len(set(names)) != len(names):
        p.error(f"peer names must be unique and not {OURS!r}, {DRAIN!r} or {REFERENCE!r}")
    if not os.access(TIME, os.X_OK):
        p.error(f"{TIME} is needed (GNU time: apt-get install time)")
    args.out = os.path.abspath(args.out)
    return args


def drain_option(args: argparse.Namespace) -> str:
    """
    The option that turns our detached drain on: given, or the first
    option of C{--help} that names it.
    """
    if args.drain_option is not None:
        return str(args.drain_option)
    done = subprocess.run(
        ["/bin/sh", "-c", f"{args.cacheprog} --help"], capture_output=True, text=True, check=False, timeout=60
    )
    found = DRAIN_OPTION.search(done.stdout + done.stderr)
    return found.group(1) if found else ""


def programs(args: argparse.Namespace) -> list[Program]:
    ours = Program(OURS, args.cacheprog, frozenset({"cold", "warm-local", "warm-remote", "pr"}), OURS)
    out = [ours]
    option = drain_option(args)
    if option:
        after = f"{args.cacheprog} {args.drain_wait}"
        out.append(Program(DRAIN, f"{args.cacheprog} {option}", frozenset({"cold"}), DRAIN, after, timed=False))
    else:
        log("no detached-drain option in `cacheprog --help`: the drain scenarios are left out")
    for name, flags, latencies in args.variants:
        command = f"{args.cacheprog} {flags}"
        cold = tuple(latencies or args.variant_latencies)
        out.append(Program(name, command, frozenset({"cold"}), name, latencies=cold))
    peers = [(REFERENCE, shlex.quote(args.reference))] if args.reference else []
    out += [Program(name, command, frozenset({"warm-remote"}), OURS) for name, command in peers + args.peers]
    return out


def options(args: argparse.Namespace) -> Options:
    return Options(
        only=args.only,
        workloads=args.workloads,
        latencies=args.latencies,
        cold_latencies=args.cold_latencies,
        big_latencies=args.big_latencies,
        big_cold_latencies=args.big_cold_latencies,
        peer_latencies=args.peer_latencies,
        pr_latency=args.pr_latency,
        runs=args.runs,
        big_runs=args.big_runs,
        cold_runs=args.cold_runs,
        big_cold_runs=args.big_cold_runs,
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def commit() -> str:
    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", REPO, *argv], capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return head + (" + working tree" if git("status", "--porcelain", "--untracked-files=no") else "")


def meta(args: argparse.Namespace, progs: Sequence[Program], started: float) -> Meta:
    go = subprocess.run([args.go, "version"], capture_output=True, text=True, check=False).stdout.strip()
    return Meta(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        go=go,
        python=platform.python_version(),
        cpus=os.cpu_count(),
        machine=platform.machine(),
        cpu_model=cpu_model(),
        commit=commit(),
        s3=args.s3,
        programs={p.name: p.command for p in progs},
        workloads={n: WORKLOADS[n].title for n in args.workloads},
        only=list(args.only),
        latencies_ms=list(args.latencies),
        cold_latencies_ms=list(args.cold_latencies),
        jitter_ms=args.jitter,
        go_p=args.go_p,
        runs=args.runs,
        big_runs=args.big_runs,
        cold_runs=args.cold_runs,
        big_cold_runs=args.big_cold_runs,
        load_before=getattr(args, "load_before", None),
        load_waited_s=getattr(args, "load_waited", None),
        load_after=[round(v, 2) for v in os.getloadavg()],
        duration_s=round(time.monotonic() - started, 1),
    )


def wait_for_quiet(args: argparse.Namespace) -> None:
    args.load_before = measure.load1()
    args.load_waited = 0
    if args.wait_load <= 0:
        return
    began = time.monotonic()
    while True:
        current, waited = measure.load1(), time.monotonic() - began
        if current < args.wait_load:
            log(f"load average {current} < {args.wait_load}: starting")
            break
        if waited >= args.wait_max:
            log(f"load average still {current} after {waited:.0f}s: starting anyway")
            break
        log(f"load average {current} >= {args.wait_load}: waiting (checked every 60 s, {waited:.0f}s so far)")
        time.sleep(60)
    args.load_before = measure.load1()
    args.load_waited = round(time.monotonic() - began)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.replot:
        with open(os.path.join(args.out, "harness.json"), encoding="utf-8") as f:
            results = Results.from_json(json.load(f))
        report.write(results, args.out)
        print(report.markdown(results))
        return 0
    progs = programs(args)
    phases = plan(options(args), progs)
    if args.dry_run:
        for phase in phases.values():
            for cell in phase.cells:
                print(f"{cell.label:50} x{cell.runs}")
        print(f"{sum(c.runs for p in phases.values() for c in p.cells)} timed go commands")
        return 0
    started = time.monotonic()
    work = args.work or tempfile.mkdtemp(prefix="cacheprog-harness-")
    os.makedirs(work, exist_ok=True)
    wait_for_quiet(args)
    log(f"work dir {work}; programs: {', '.join(f'{p.name}={p.command!r}' for p in progs)}")
    storage = Storage(args.s3, work)
    runner = Runner(args, work, progs, storage, log)

    def save() -> None:
        report.write(Results(meta(args, progs, started), runner.runs, runner.analysis), args.out)

    try:
        latencies = {*args.latencies, *args.cold_latencies, *args.big_latencies, *args.peer_latencies}
        latencies |= {*args.variant_latencies, *(lat for v in args.variants for lat in v[2])}
        storage.start(latencies | {args.pr_latency, *args.analysis_latencies, args.profile_latency}, args.jitter, log)
        groups = set(args.only)
        runner.run(phases, save, lambda name: analysis.after_workload(runner, name, groups))
        analysis.run(runner, groups)
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        storage.stop()
        save()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {os.path.join(args.out, 'harness.md')}, harness.png, harness.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

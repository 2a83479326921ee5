"""
The untimed runs after the matrix, which explain the numbers: start-up of
each program, the S3 server by itself, runs through the protocol relay
(gets in flight; go's exit after its last answer), and profiled runs.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import statistics
import subprocess
import time

from bench import measure, profiles, relay
from bench.plan import DRAIN, OURS, SCENARIO_TEXT, Program
from bench.records import ProfileSummary, Relayed, Run, Startup
from bench.runner import Runner, Seed, Setup
from bench.workloads import WORKLOADS, Workload


def startup(runner: Runner, program: Program, runs: int = 10, warmup: int = 2) -> Startup:
    """
    Time from starting the program (configured for S3 as in the runs) to
    its handshake line, and from closing its stdin to its exit.
    """
    run_dir = os.path.join(runner.work, "startup", program.name)
    os.makedirs(run_dir, exist_ok=True)
    firsts: list[float] = []
    exits: list[float] = []
    for i in range(warmup + runs):
        local = os.path.join(run_dir, f"local{i}")
        setup = Setup(run_dir, os.path.join(run_dir, "gocache"), local, "startup", 0, "startup")
        env = runner.program_env(program, setup)
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
        exited = time.perf_counter() - closed
        proc.wait()
        if not line.startswith(b"{"):
            return Startup(error=f"no handshake: {line[:200]!r}")
        if i >= warmup:
            firsts.append(1000 * first)
            exits.append(1000 * exited)
    shutil.rmtree(run_dir, ignore_errors=True)
    return Startup(
        runs=runs,
        handshake_ms_median=round(statistics.median(firsts), 1),
        handshake_ms_min=round(min(firsts), 1),
        exit_after_close_ms_median=round(statistics.median(exits), 1),
    )


def relayed(runner: Runner, workload: Workload, program: Program, scenario: str, latency: int) -> Relayed:
    """
    One run through the relay: warm-remote from our seed, or cold into a
    fresh prefix (then the program's after-command, the drain's wait).
    """
    run_dir = runner.new_run_dir(f"{workload.name}:{program.name}:relay-{scenario}@{latency}ms")
    seed = runner.seeds.get((workload.name, OURS))
    if scenario == "cold":
        prefix = f"{program.name}/{workload.name}/relay-{secrets.token_hex(3)}"
    else:
        assert seed is not None
        prefix = seed.prefix
    local = os.path.join(run_dir, "local")
    gocache = os.path.join(run_dir, "gocache")
    setup = Setup(run_dir, gocache, local, prefix, latency, workload.name, relay_log="$DIR/relay.$$.json")
    env = runner.program_env(program, setup)
    build = runner.go_build(workload, env, run_dir)
    record = Run(workload.name, program.name, scenario, latency, 0, measure.load1())
    runner.finish(record, build, run_dir, program, env, None, None)
    logs = relay.read_logs(glob.glob(os.path.join(run_dir, "relay.*.json")))
    summary = relay.summarize(logs)
    closed = relay.last_close_answer(logs)
    summary.program, summary.scenario, summary.latency_ms = program.name, scenario, latency
    summary.seconds, summary.stats = build.seconds, record.stats
    if closed is not None:
        summary.close_to_go_exit_ms = round(1000 * (build.exited_at - closed), 1)
    runner.log(
        f"  relay {program.name} {scenario}@{latency}ms: {build.seconds:.1f}s, gets {summary.gets}, in flight "
        f"{summary.mean_inflight_busy} (max {summary.max_inflight}), get p50 {summary.get_ms_p50} ms, close answer "
        f"-> stdout EOF {summary.close_to_eof_ms} ms, -> go exit {summary.close_to_go_exit_ms} ms"
        + (f"  !! {record.anomaly}" if record.anomaly else "")
    )
    shutil.rmtree(run_dir, ignore_errors=True)
    return summary


def profiled(runner: Runner, workload: Workload, seed: Seed, scenario: str, latency: int) -> ProfileSummary:
    """
    One run of C{scenario} (warm-remote: the seed's prefix, empty local
    tier; cold: a fresh prefix and local tier) under --cpu-profile.
    """
    name = workload.name
    ours = runner.program(OURS)
    run_dir = runner.new_run_dir(f"{name}:{OURS}:profile-{scenario}@{latency}ms")
    prefix = seed.prefix if scenario == "warm-remote" else f"{OURS}/{name}/profile-{secrets.token_hex(3)}"
    extra = '--cpu-profile "$DIR/prof.$$.out"'
    local = os.path.join(run_dir, "local")
    setup = Setup(run_dir, os.path.join(run_dir, "gocache"), local, prefix, latency, name, extra)
    env = runner.program_env(ours, setup)
    build = runner.go_build(workload, env, run_dir)
    measure.wait_group_gone(build.pgid, 30.0)
    _, stats, _ = measure.parse_stats(build.log)
    files = sorted(glob.glob(os.path.join(run_dir, "prof.*.out")))
    if not files:
        runner.log(f"  no profile written ({scenario})")
        return ProfileSummary(error="no profile written")
    os.makedirs(runner.raw, exist_ok=True)
    for path in files:
        shutil.copy(path, os.path.join(runner.raw, f"{name}-{scenario}-{latency}ms-{os.path.basename(path)}"))
    text, summary = profiles.summarize(files)
    out = os.path.join(runner.args.out, f"profile-{name}-{scenario}-{latency}ms.txt")
    with open(out, "w", encoding="utf-8") as f:
        f.write(
            f"# {workload.title}, {OURS}, {SCENARIO_TEXT[scenario]}, {latency} ms, under --cpu-profile: "
            f"{build.seconds:.1f}s, {len(files)} process(es)\n# statistics: {stats}\n\n"
        )
        f.write(text)
    runner.log(f"  profile ({scenario}): {out} ({build.seconds:.1f}s)")
    shutil.rmtree(run_dir, ignore_errors=True)
    summary.workload, summary.scenario, summary.latency_ms = name, scenario, latency
    summary.seconds, summary.stats = build.seconds, stats
    summary.file = os.path.relpath(out, runner.args.out)
    return summary


def first_small(runner: Runner) -> Workload:
    small = [w for w in runner.args.workloads if not WORKLOADS[w].big]
    return WORKLOADS[small[0] if small else runner.args.workloads[0]]


def exit_runs(runner: Runner, workload: Workload) -> None:
    """
    Cold runs through the relay, drain on and off: how long go takes to
    exit after the answer to its close.
    """
    runner.log(f"== go's exit after its last answer ({workload.title}, cold, 0 ms, through the relay)")
    for name in (DRAIN, OURS):
        if any(p.name == name for p in runner.programs) and not runner.out_of_time():
            runner.analysis.relayed.append(relayed(runner, workload, runner.program(name), "cold", 0))


def after_workload(runner: Runner, name: str, groups: set[str]) -> None:
    """
    The analysis comes right after the first small workload (it needs only
    that workload's seed), so that a run cut short by --stop-at in the big
    workloads still has it.
    """
    if name == first_small(runner).name:
        run(runner, groups)


def run(runner: Runner, groups: set[str]) -> None:
    if runner.analysed:
        return
    runner.analysed = True
    args = runner.args
    workload = first_small(runner)
    if "exit" in groups:
        exit_runs(runner, workload)
    if "analysis" not in groups or runner.out_of_time():
        return
    for program in runner.programs:
        runner.analysis.startup[program.name] = result = startup(runner, program)
        runner.log(f"  start-up of {program.name}: {result}")
    seed = runner.seeds.get((workload.name, OURS))
    if seed is None:
        runner.log("analysis: no seed of ours for the first workload; relay and profile runs skipped")
        return
    runner.analysis.s3_baseline = baseline = runner.storage.baseline(seed.prefix)
    runner.log(f"  S3 baseline (botocore, one at a time, direct): {baseline}")
    for latency in args.analysis_latencies:
        if not runner.out_of_time():
            runner.analysis.relayed.append(relayed(runner, workload, runner.program(OURS), "warm-remote", latency))
    for scenario in args.profile:
        if not runner.out_of_time():
            runner.analysis.profiles[scenario] = profiled(runner, workload, seed, scenario, args.profile_latency)

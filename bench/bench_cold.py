#!/usr/bin/env python3
"""
The write side of a cold build, per request: cacheprog's CPU per put and per
remote get, and how long a go command waits at close for its uploads.

A fake go command speaks GOCACHEPROG to C{python -m cacheprog} against
SeaweedFS on 127.0.0.1 (optionally behind Toxiproxy latency): for each of
N keys a get (a miss) then a put with a realistic body (the size mix of a
cold C{go build std}: 1461 puts, 42 MB, so 29 KB on average, half of them
compressible text), then close.  A second run gets the same keys from an
empty local root (remote hits).  CPU is the child's user+system time
(C{wait4}); the same run with one remote miss is subtracted, so start-up
(imports included) is not counted.  Each program (C{--program NAME=PYTHONPATH}, e.g. the
checkout before and after a change) runs in every round, in rotating
order: only ratios side by side mean something on a shared machine.

Exit wait: with C{--latency} and C{--detached}, the time from sending
close to the end of cacheprog's stdout (what the go command waits for),
drain attached against detached.

    python bench/bench_cold.py --program before=/tmp/before --program after=. [--rounds 3] [--keys 300]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def bodies(count: int, seed: int) -> list[bytes]:
    """
    Bodies with cold std's size mix: log-uniform 200 B to 200 KB (mean
    about 29 KB), half compressible text, half random bytes.
    """
    rng = random.Random(seed)
    out = []
    for i in range(count):
        size = int(10 ** rng.uniform(2.3, 5.3))
        if i % 2:
            out.append(rng.randbytes(size))
        else:
            words = b"func main() { return nil } // package archive "
            out.append((words * (size // len(words) + 1))[:size] + secrets.token_bytes(8))
    return out


def request(request_id: int, command: str, action_id: bytes, body: bytes | None = None) -> bytes:
    head: dict[str, Any] = {"ID": request_id, "Command": command, "ActionID": base64.b64encode(action_id).decode()}
    if body is None:
        return json.dumps(head).encode() + b"\n\n"
    head["OutputID"] = base64.b64encode(hashlib.sha256(body).digest()).decode()
    head["BodySize"] = len(body)
    text = json.dumps(head).encode() + b"\n\n"
    return text + (b'"' + base64.b64encode(body) + b'"\n' if body else b"")


def run(pythonpath: str, flags: list[str], script: list[bytes], root: str) -> dict[str, Any]:
    """
    One cacheprog: send C{script} request by request (waiting for each
    answer, as go's workers do), then close.  CPU seconds, the wait from
    close to the end of stdout, the run's wall time.
    """
    # Variables, not flags: an older checkout ignores what it does not know.
    env = dict(os.environ, PYTHONPATH=pythonpath, CACHEPROG_WARM_START="false")
    argv = [sys.executable, "-m", "cacheprog", "--root-directory", root, *flags]
    started = time.monotonic()
    # cwd: not a checkout, or "python -m" would import the one it is in.
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=root_parent(root)
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdout.readline()  # handshake
    for i, message in enumerate(script, start=1):
        proc.stdin.write(message)
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
        assert answer["ID"] == i and "Err" not in answer, answer
    proc.stdin.write(json.dumps({"ID": len(script) + 1, "Command": "close"}).encode() + b"\n\n")
    proc.stdin.flush()
    closing = time.monotonic()
    proc.stdout.readline()
    proc.stdout.read()  # to the end of the pipe: what go waits for
    exit_wait = time.monotonic() - closing
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    assert status == 0, status
    return {
        "cpu": usage.ru_utime + usage.ru_stime,
        "exit_wait": exit_wait,
        "wall": time.monotonic() - started,
        "root": root,  # type: ignore[dict-item]
    }


def root_parent(root: str) -> str:
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    return parent


def _wait(pythonpath: str, root: str) -> None:
    """
    C{cacheprog wait} for a detached run, so the next run finds its uploads.
    """
    env = dict(os.environ, PYTHONPATH=pythonpath)
    argv = [sys.executable, "-m", "cacheprog", "wait", "--root-directory", root]
    subprocess.run(argv, env=env, check=True, cwd=root_parent(root), stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--program", action="append", required=True, help="NAME=PYTHONPATH of a cacheprog checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--latency", type=int, default=0, help="ms on every S3 request and answer (Toxiproxy)")
    parser.add_argument("--detached", action="store_true", help="also time close with --detached-drain")
    parser.add_argument("--flags", default="", help="extra cacheprog flags for every run")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "cold"))
    args = parser.parse_args()
    from tests.integration.servers import SeaweedFS, Toxiproxy

    programs = dict(p.split("=", 1) for p in args.program)
    work = tempfile.mkdtemp(prefix="bench-cold-")
    server = SeaweedFS(os.path.join(work, "weed"))
    server.start()
    proxy_server = None
    try:
        server.create_bucket("bench")
        endpoint = server.endpoint
        if args.latency:
            proxy_server = Toxiproxy(os.path.join(work, "toxiproxy"))
            proxy_server.start()
            proxy = proxy_server.create_proxy("s3", server.endpoint)
            proxy_server.add_latency("s3", args.latency, 0)
            proxy_server.add_latency("s3", args.latency, 0, stream="upstream")
            endpoint = proxy.endpoint
        s3 = [
            "--remote-storage-type=s3",
            f"--s3-endpoint={endpoint}",
            "--s3-bucket=bench",
            "--s3-region=us-east-1",
            "--s3-force-path-style",
            f"--s3-access-key-id={server.access_key}",
            f"--s3-access-key-secret={server.secret_key}",
            "--max-background-wait=0",
            *args.flags.split(),
        ]
        variants = [(name, path, []) for name, path in programs.items()]
        if args.detached:
            variants += [(f"{name}+detached", path, ["--detached-drain"]) for name, path in programs.items()]
        results: dict[str, dict[str, list[float]]] = {name: {} for name, _, _ in variants}
        for round_no in range(args.rounds):
            order = variants[round_no % len(variants) :] + variants[: round_no % len(variants)]
            for name, path, extra in order:
                prefix = f"--s3-prefix=r{round_no}/{name}/{secrets.token_hex(4)}"
                ids = [hashlib.sha256(f"{name} {round_no} {i}".encode()).digest() for i in range(args.keys)]
                data = bodies(args.keys, round_no)
                cold: list[bytes] = []
                for i, (action_id, body) in enumerate(zip(ids, data, strict=True)):
                    cold += [request(2 * i + 1, "get", action_id), request(2 * i + 2, "put", action_id, body)]
                # One remote miss: start-up with everything a remote request
                # imports, so only the per-request work is left.
                one = [request(1, "get", secrets.token_bytes(32))]
                empty = run(path, [*s3, prefix, *extra], one, os.path.join(work, secrets.token_hex(4)))
                puts = run(path, [*s3, prefix, *extra], cold, os.path.join(work, secrets.token_hex(4)))
                if extra:
                    _wait(path, puts["root"])
                gets = [request(i + 1, "get", a) for i, a in enumerate(ids)]
                warm = run(path, [*s3, prefix], gets, os.path.join(work, secrets.token_hex(4)))
                row = results[name]
                row.setdefault("put_ms", []).append((puts["cpu"] - empty["cpu"]) / args.keys * 1000)
                row.setdefault("get_ms", []).append((warm["cpu"] - empty["cpu"]) / args.keys * 1000)
                row.setdefault("exit_wait_ms", []).append(puts["exit_wait"] * 1000)
                row.setdefault("start_cpu_ms", []).append(empty["cpu"] * 1000)
                print(name, round_no, {k: round(v[-1], 2) for k, v in row.items()}, flush=True)
        report(results, programs, args)
    finally:
        server.stop()
        if proxy_server is not None:
            proxy_server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[str, dict[str, list[float]]], programs: dict[str, str], args: argparse.Namespace) -> None:
    os.makedirs(args.out, exist_ok=True)
    medians = {name: {k: statistics.median(v) for k, v in row.items()} for name, row in results.items()}
    first = next(iter(programs))
    lines = [
        f"keys={args.keys} rounds={args.rounds} latency={args.latency}ms load={os.getloadavg()[0]:.1f}",
        "",
        "| program | CPU per put (ms) | CPU per remote get (ms) | close → stdout end (ms) | start-up CPU (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in medians.items():
        lines.append(
            f"| {name} | {m['put_ms']:.2f} | {m['get_ms']:.2f} | {m['exit_wait_ms']:.0f} | {m['start_cpu_ms']:.0f} |"
        )
    lines.append("")
    for name, m in medians.items():
        if name != first and name in programs:
            base = medians[first]
            lines.append(
                f"{name} ÷ {first}: put {m['put_ms'] / base['put_ms']:.2f}, get {m['get_ms'] / base['get_ms']:.2f}"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    tag = f"{args.latency}ms"
    with open(os.path.join(args.out, f"bench-cold-{tag}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, f"bench-cold-{tag}.json"), "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    _plot(medians, os.path.join(args.out, f"bench-cold-{tag}.png"))


def _plot(medians: dict[str, dict[str, float]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(medians)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
    for ax, key, title in zip(
        axes,
        ("put_ms", "get_ms", "exit_wait_ms"),
        ("CPU per put (ms)", "CPU per remote get (ms)", "close → stdout end (ms)"),
        strict=True,
    ):
        ax.bar(names, [medians[n][key] for n in names])
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    raise SystemExit(main())

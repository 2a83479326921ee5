#!/usr/bin/env python3
"""
Proxy throughput: requests/s for 1 KiB objects, MiB/s for 10 MiB objects,
and the proxy's peak RSS under a 1000-request mixed load, against a
`cacheprog proxy` subprocess on 127.0.0.1 with the dir backend.

    python bench/bench_proxy.py [--rounds 3]

Prints a markdown table (median and range over rounds) and writes
bench/results/proxy.md, proxy.json and proxy.png (if matplotlib is there).
The client runs in this process on the same 2 cores as the proxy: the
figures are a floor for a proxy with a machine of its own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from tests.integration.test_proxy import ProxyProcess, _headers  # noqa: E402

KIB, MIB = 1024, 1024 * 1024
RESULTS = os.path.join(REPO, "bench", "results")


class Load:
    """
    One round: a fresh proxy, the phases of the load test, its figures.
    """

    def __init__(self, reactor: Any) -> None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        self.workdir = tempfile.mkdtemp(prefix="cacheprog-bench-proxy-")
        store = os.path.join(self.workdir, "store")
        argv = [sys.executable, "-m", "cacheprog", "proxy", "--listen-address", "127.0.0.1:0"]
        self.proxy = ProxyProcess([*argv, "--remote-storage-type", "dir", "--dir-storage-root", store], self.workdir)
        self.pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        self.pool.maxPersistentPerHost = 1000
        self.http = HTTPClient(Agent(reactor, pool=self.pool, connectTimeout=30))  # type: ignore[no-untyped-call]
        self.errors = 0

    async def put(self, key: str, body: bytes) -> None:
        response = await self.http.put(f"{self.proxy.url}/cache/{key}", data=body, headers=_headers(body))
        await response.content()
        self.errors += response.code != 200

    async def get(self, key: str, body: bytes) -> None:
        response = await self.http.get(f"{self.proxy.url}/cache/{key}", unbuffered=True)
        digest = hashlib.sha256()
        await response.collect(digest.update)
        self.errors += response.code != 200 or digest.digest() != hashlib.sha256(body).digest()

    async def phase(self, jobs: list[Any], concurrency: int) -> float:
        slots = DeferredSemaphore(concurrency)
        started = time.monotonic()
        results = await DeferredList([slots.run(Deferred.fromCoroutine, job) for job in jobs], consumeErrors=True)
        self.errors += sum(1 for ok, _ in results if not ok)
        return time.monotonic() - started

    async def run(self) -> dict[str, float]:
        def key(i: int) -> str:
            return hashlib.sha256(b"bench %d" % i).hexdigest()

        small = {key(i): os.urandom(KIB) for i in range(1000)}
        big = {key(10_000 + i): os.urandom(10 * MIB) for i in range(10)}
        try:
            put_small = await self.phase([self.put(k, b) for k, b in small.items()], 1000)
            get_small = await self.phase([self.get(k, b) for k, b in small.items()], 1000)
            put_big = await self.phase([self.put(k, b) for k, b in big.items()], 10)
            get_big = await self.phase([self.get(k, b) for k, b in big.items()], 10)
            fresh = {key(20_000 + i): os.urandom(KIB) for i in range(490)}
            fresh_big = {key(30_000 + i): os.urandom(10 * MIB) for i in range(10)}
            mixed: list[Any] = [self.get(k, b) for k, b in list(small.items())[:490]]
            mixed += [self.put(k, b) for k, b in fresh.items()]
            mixed += [self.get(k, b) for k, b in big.items()]
            mixed += [self.put(k, b) for k, b in fresh_big.items()]
            mixed_time = await self.phase(mixed, 1000)
            rss = self.proxy.peak_rss_kib() / 1024
        finally:
            await self.pool.closeCachedConnections()  # type: ignore[no-untyped-call]
            self.proxy.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)
        return {
            "put_1k_req_s": len(small) / put_small,
            "get_1k_req_s": len(small) / get_small,
            "put_10m_mib_s": 10 * len(big) / put_big,
            "get_10m_mib_s": 10 * len(big) / get_big,
            "mixed_1000_s": mixed_time,
            "peak_rss_mib": rss,
            "errors": float(self.errors),
        }


LABELS = {
    "put_1k_req_s": "1 KiB PUT, 1000 at once (req/s)",
    "get_1k_req_s": "1 KiB GET, 1000 at once (req/s)",
    "put_10m_mib_s": "10 MiB PUT, 10 at once (MiB/s)",
    "get_10m_mib_s": "10 MiB GET, 10 at once (MiB/s)",
    "mixed_1000_s": "1000 mixed requests, 20 of 10 MiB (s)",
    "peak_rss_mib": "proxy peak RSS (MiB)",
    "errors": "failed requests",
}


def table(rounds: list[dict[str, float]]) -> str:
    lines = [
        f"Proxy load, dir backend, {len(rounds)} round(s), client and proxy on the same 2 cores "
        f"(load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        "| measure | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    for name, label in LABELS.items():
        values = [r[name] for r in rounds]
        lines.append(f"| {label} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")
    return "\n".join(lines) + "\n"


def plot(rounds: list[dict[str, float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: no plot (pip install matplotlib)")
        return
    names = ["put_1k_req_s", "get_1k_req_s", "put_10m_mib_s", "get_10m_mib_s"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    medians = [statistics.median(r[n] for r in rounds) for n in names]
    ax.bar([LABELS[n].replace(", ", "\n") for n in names], medians)
    ax.set_title("cacheprog proxy throughput (median over rounds)")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "proxy.png"), dpi=100)


async def main(reactor: Any, rounds: int) -> None:
    results = []
    for i in range(rounds):
        figures = await Load(reactor).run()
        print(f"round {i + 1}: " + ", ".join(f"{k}={v:.1f}" for k, v in figures.items()), flush=True)
        results.append(figures)
    text = table(results)
    print("\n" + text)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "proxy.md"), "w") as f:
        f.write(text)
    with open(os.path.join(RESULTS, "proxy.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, args.rounds)))

"""
The loopback S3 server of a benchmark: SeaweedFS (or MinIO) on 127.0.0.1,
one toxiproxy endpoint per injected latency, and what the harness asks it
(requests answered, objects under a prefix, its own GetObject latency).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from bench.records import S3Baseline
from tests.integration.servers import MinIO, S3Server, SeaweedFS, Toxiproxy, _free_ports

BUCKET = "bench"
#: SeaweedFS's Prometheus counter of S3 requests, one series per type and status.
REQUESTS = re.compile(r"^SeaweedFS_s3_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$", re.M)
LABEL = re.compile(r'(\w+)="([^"]*)"')
ACTION_KEY = re.compile(r"[0-9a-f]{64}")


class CountingSeaweedFS(SeaweedFS):
    """
    SeaweedFS with its metrics listener on, so that the harness can count
    the requests of every run on the server side: a counting proxy in the
    path would cost every request a hop, and a client's own count is what
    is being checked.
    """

    metrics_port = 0

    def _command(self) -> tuple[list[str], Mapping[str, str]]:
        argv, env = super()._command()
        self.metrics_port = _free_ports(1)[0]
        return [*argv, f"-metricsPort={self.metrics_port}"], env

    def requests(self) -> dict[str, int] | None:
        """
        Requests answered on the bench bucket so far, by "TYPE status".
        """
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
                text = answer.read().decode("utf-8", "replace")
        except OSError:
            return None
        counts: dict[str, int] = {}
        for found in REQUESTS.finditer(text):
            labels = dict(LABEL.findall(found["labels"]))
            if labels.get("bucket") == BUCKET:
                name = f"{labels.get('type', '?')} {labels.get('code', '?')}"
                counts[name] = counts.get(name, 0) + int(float(found["value"]))
        return counts


def request_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in sorted(delta.items()) if v}


class Storage:
    """
    The S3 server and its latency proxies, started once for a whole run.
    """

    def __init__(self, kind: str, work: str) -> None:
        self.kind = kind
        self.work = work
        self.server: S3Server | None = None
        self.toxiproxy: Toxiproxy | None = None
        self.endpoints: dict[int, str] = {}

    def start(self, latencies: Iterable[int], jitter: int, log: Any) -> None:
        server_class = {"seaweedfs": CountingSeaweedFS, "minio": MinIO}[self.kind]
        reason = server_class.unavailable_reason()
        if reason:
            raise SystemExit(f"harness: {reason}")
        self.server = server = server_class(os.path.join(self.work, "servers"))
        server.start()
        server.create_bucket(BUCKET)
        log(f"{self.kind} S3 server at {server.endpoint} (started in {server.start_seconds:.1f}s)")
        self.endpoints[0] = server.endpoint
        proxied = sorted({latency for latency in latencies if latency > 0})
        if not proxied:
            return
        reason = Toxiproxy.unavailable_reason()
        if reason:
            raise SystemExit(f"harness: {reason}")
        self.toxiproxy = toxiproxy = Toxiproxy(os.path.join(self.work, "servers"))
        toxiproxy.start()
        for latency in proxied:
            name = f"s3_{latency}ms"
            proxy = toxiproxy.create_proxy(name, server.endpoint)
            toxiproxy.add_latency(name, latency, min(jitter, latency))
            self.endpoints[latency] = proxy.endpoint
            log(f"toxiproxy {proxy.endpoint} -> S3: {latency} +- {min(jitter, latency)} ms per answer")

    def stop(self) -> None:
        for server in (self.toxiproxy, self.server):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()

    @property
    def pid(self) -> int | None:
        return None if self.server is None else self.server.pid

    def credentials(self) -> tuple[str, str]:
        assert self.server is not None
        return self.server.access_key, self.server.secret_key

    def requests(self) -> dict[str, int] | None:
        server = self.server
        return server.requests() if isinstance(server, CountingSeaweedFS) else None

    def keys(self, prefix: str, limit: int | None = None) -> list[str]:
        assert self.server is not None
        client = self.server.client()
        keys: list[str] = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
                keys.extend(item["Key"] for item in page.get("Contents", []))
                if limit is not None and len(keys) >= limit:
                    break
        finally:
            client.close()
        return keys[:limit] if limit is not None else keys

    def count_objects(self, prefix: str) -> int | None:
        try:
            return len(self.keys(prefix))
        except Exception:  # noqa: BLE001 - only a check
            return None

    def baseline(self, prefix: str, count: int = 300) -> S3Baseline:
        """
        How fast the S3 server answers by itself: GetObject of a prefix's
        objects one at a time with botocore (signing included), directly.
        """
        assert self.server is not None
        try:
            # Only per-action objects (64 hex digits), not manifests or packs.
            keys = [k for k in self.keys(prefix) if ACTION_KEY.fullmatch(k.rsplit("/", 1)[-1])][:count]
            client = self.server.client()
            times: list[float] = []
            size = 0
            for key in keys:
                start = time.perf_counter()
                answer = client.get_object(Bucket=BUCKET, Key=key)
                size += len(answer["Body"].read())
                times.append(1000 * (time.perf_counter() - start))
            client.close()
        except Exception as e:  # noqa: BLE001 - only a reference point
            return S3Baseline(error=str(e))
        if not times:
            return S3Baseline(error=f"no objects under {prefix}")
        times.sort()
        return S3Baseline(
            gets=len(times),
            ms_p50=round(times[len(times) // 2], 2),
            ms_p90=round(times[int(0.9 * len(times))], 2),
            mean_kb=round(size / len(times) / 1024, 1),
        )

"""
Faults between cacheprog and its S3 store, under a real C{go build -x}.

cacheprog runs in direct mode (C{--remote-storage-type s3}, static keys,
path style) against SeaweedFS through Toxiproxy
(C{--s3-endpoint http://127.0.0.1:<proxy port>}); each test has its own proxy
and key prefix, and a fresh copy of C{tests/e2e/testdata/app} (GOFLAGS=-mod=mod,
GOPROXY=off, GOTOOLCHAIN=local, a fresh GOCACHE).  Whatever the fault, the
build must pass in bounded time and the program it links must print the
right thing:

 - 50 ms +- 10 ms latency: slower, but the cache works, and a rebuild from
   the bucket (local root wiped) runs no compiler;
 - connections reset by the peer (half of them): requests are retried;
 - connections that hang (C{--remote-get-timeout 1s}): gets answer "miss"
   after a second, the build is not held up;
 - the S3 server killed in the middle of the build;
 - the proxy refusing connections from the start: the circuit breaker
   switches the store off, and later requests cost nothing;
 - objects overwritten with wrong bytes (same size, same metadata): never
   used, the action is compiled again, and the upload heals the object;
 - a wrong secret: no hits, the build passes.

Server start-up and the standard packages are shared (see
L{tests.e2e.test_s3_build}): the bucket or the local root starts from the
seed that L{tests.e2e.test_gobuild} builds once per run.
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

from tests.e2e.test_gobuild import _files, _stat, _stats
from tests.e2e.test_s3_build import (
    BUCKET,
    Command,
    S3BuildCase,
    compiled_packages,
    count_lines,
    decode_object,
    list_keys,
    object_problems,
    server_flags,
    start_server,
    upload_seed,
)
from tests.integration.servers import SeaweedFS, Toxiproxy

#: No single go command may take longer than this in these tests.
BUILD_LIMIT = 150.0

#: test_resetPeer: builds tried until one meets a reset connection.
RESET_ATTEMPTS = 4

#: Outputs fetched from the bucket before the S3 server is killed.
KILL_AFTER = 30

_DISABLED = "Remote storage has been disabled"
_FAILED_GET = "Failed to get from remote storage"
_CORRUPT = "Remote object is corrupt"


def _data_files(root: str) -> int:
    """
    How many outputs the local root holds (C{<xx>/<sha256>-data} files).
    """
    return sum(1 for path in _files(root) if path.endswith("-data"))


def _flip(data: bytes) -> bytes:
    """
    C{data} with its middle byte inverted: the same size, other bytes.
    """
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def corrupt_object(client: Any, key: str, recompress: bool) -> bool:
    """
    Overwrite the object at C{key} with wrong bytes and the same metadata:
    its stored bytes with one byte inverted (the same stored size), or, for
    a zstd object when C{recompress}, a valid zstd frame of its raw bytes
    with one byte inverted (the same uncompressed size).  Empty objects are
    left alone.

    @return: whether the object was changed.
    """
    import zstandard

    got = client.get_object(Bucket=BUCKET, Key=key)
    body = got["Body"].read()
    meta = dict(got.get("Metadata", {}))
    if not body:
        return False
    if recompress and meta.get("compression_algorithm") == "zstd":
        raw = _flip(decode_object(body, meta))
        wrong = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw)
    else:
        wrong = _flip(body)
    client.put_object(Bucket=BUCKET, Key=key, Body=wrong, Metadata=meta)
    return True


class S3FaultTests(S3BuildCase):
    """
    go builds through cacheprog while Toxiproxy (or the test) breaks the
    way to the bucket.
    """

    timeout = 300

    def setUp(self) -> None:
        super().setUp()
        self.seaweed = self.servers.get(SeaweedFS)
        self.toxiproxy = self.servers.get(Toxiproxy, bucket=None)
        self.s3 = self.client(self.seaweed)
        self.proxyName = self._testMethodName
        self.proxy = self.toxiproxy.create_proxy(self.proxyName, self.seaweed.endpoint)
        self.addCleanup(self.toxiproxy.delete_proxy, self.proxyName)

    def through_proxy(self, *extra: str, **options: Any) -> None:
        """
        Point the workspace's cacheprog at the bucket through the proxy.
        """
        self.ws.flags = server_flags(self.seaweed, self.prefix, self.proxy.endpoint, extra=extra, **options)

    def start_build(self, name: str, limit: float = BUILD_LIMIT) -> Command:
        """
        Start C{go build -x -o <out>/<name> .}, to be killed after C{limit} seconds.
        """
        argv = [self.ws.go, "build", "-x", "-o", self.ws.binary(name), "."]
        return Command(argv, self.ws.app, self.ws.environ(), limit)

    def timed_build(self, name: str, limit: float = BUILD_LIMIT) -> tuple[Any, float]:
        """
        C{go build -x -o <out>/<name> .} killed after C{limit} seconds;
        it must pass, and its program must print the right thing.
        """
        run, elapsed = self.start_build(name, limit).wait()
        if run.code != 0:
            self.fail(run.describe())
        self.assertAppRuns(self.ws.binary(name), run)
        return run, elapsed

    def test_latency(self) -> None:
        """
        50 ms +- 10 ms on every answer: the first build gets the standard
        packages from the bucket, compiles the app and uploads it; after
        wiping the local root, the rebuild gets everything from the bucket
        and runs no compiler.
        """
        upload_seed(self.s3, self.goBinary, self.prefix)
        self.toxiproxy.add_latency(self.proxyName, 50, 10)
        # The region is detected through the proxy too.
        self.through_proxy(region=None)

        first, cold = self.timed_build("app1")
        self.assertGreater(_stat(first.stderr, "remote_hits"), 0, first.describe())
        self.assertIn("example.com/app/greet", compiled_packages(first))
        self.assertGreater(_stat(first.stderr, "uploads"), 0, first.describe())

        self.ws.wipe_local()
        second, warm = self.timed_build("app2")
        self.assertCompiles(second, False)
        self.assertGreater(_stat(second.stderr, "remote_hits"), 0)
        self.assertEqual(_stat(second.stderr, "local_hits"), 0)
        print(f"\nlatency 50+-10 ms: first build {cold:.1f}s, rebuild from the bucket {warm:.1f}s")

    def test_resetPeer(self) -> None:
        """
        Half of the connections are reset as soon as the server answers:
        requests are retried on new connections, the build passes, most
        objects still come from the bucket.
        """
        upload_seed(self.s3, self.goBinary, self.prefix)
        self.toxiproxy.add_toxic(self.proxyName, "reset_peer", {"timeout": 0}, toxicity=0.5)
        # The per-object path, one request per entry: a warm start's handful
        # of requests can all escape the resets by chance.
        self.through_proxy("--log-level=DEBUG", "--warm-start=false")
        # The pool keeps a few connections alive and the coin is per
        # connection, so now and then a whole build escapes it: build again
        # (from the bucket) until a reset was met.
        for attempt in range(RESET_ATTEMPTS):
            self.ws.wipe_local()
            run, _ = self.timed_build(f"app{attempt}")
            self.assertGreater(_stat(run.stderr, "remote_hits"), 0, run.describe())
            if count_lines(run.stderr, "retrying") > 0:
                return
        self.fail(f"no connection was reset in {RESET_ATTEMPTS} builds")

    def test_hangingConnection(self) -> None:
        """
        The proxy holds every answer forever: with C{--remote-get-timeout 1s}
        each get answers "miss" after a second, uploads give up at their
        timeout, and the build passes in bounded time.
        """
        self.ws.seed_local()
        self.toxiproxy.add_timeout(self.proxyName, 0)
        self.through_proxy("--remote-get-timeout=1s")

        run, elapsed = self.timed_build("app", limit=120)
        self.assertGreater(_stat(run.stderr, "remote_timeouts"), 0, run.describe())
        self.assertEqual(_stat(run.stderr, "remote_hits"), 0)
        self.assertIn("example.com/app/greet", compiled_packages(run))
        self.assertLess(elapsed, 60, run.describe())
        print(f"\nhanging connections: build {elapsed:.1f}s")

    def test_serverKilledMidBuild(self) -> None:
        """
        The S3 server is killed (SIGKILL) once the build has fetched part of
        the standard packages from it: the rest are misses, compiled
        locally, uploads fail, and the build passes.
        """
        server = start_server(SeaweedFS)
        self.addCleanup(server.stop)
        client = self.client(server)
        upload_seed(client, self.goBinary, self.prefix)
        name = self.proxyName + "_own"
        proxy = self.toxiproxy.create_proxy(name, server.endpoint)
        self.addCleanup(self.toxiproxy.delete_proxy, name)
        self.toxiproxy.add_latency(name, 20, 5)
        self.ws.flags = server_flags(server, self.prefix, proxy.endpoint)

        go = self.start_build("app")
        deadline = time.monotonic() + 60
        while not go.finished(0.05) and _data_files(self.ws.local) < KILL_AFTER and time.monotonic() < deadline:
            pass
        killed_while_running = not go.finished(0)
        fetched = _data_files(self.ws.local)
        assert server.pid is not None
        os.killpg(server.pid, signal.SIGKILL)
        run, elapsed = go.wait()
        self.assertTrue(killed_while_running, f"the build ended before the kill:\n{run.describe()}")
        self.assertEqual(run.code, 0, run.describe())
        self.assertAppRuns(self.ws.binary("app"), run)
        stats = _stats(run.stderr)
        self.assertGreaterEqual(int(stats["remote_hits"]), KILL_AFTER // 2, run.describe())
        self.assertGreater(int(stats["misses"]), 10, run.describe())
        self.assertGreater(int(stats["remote_faults"]), 0, run.describe())
        self.assertGreater(count_lines(run.stderr, _DISABLED), 0, run.describe())
        standard = {p for p in compiled_packages(run) if not p.startswith("example.com/")}
        self.assertTrue(standard, "no standard package was compiled after the kill")
        print(
            f"\nserver killed after {fetched} outputs: build {elapsed:.1f}s, "
            f"{stats['remote_hits']} remote hits, {stats['misses']} misses"
        )

    def test_refusedFromTheStart(self) -> None:
        """
        The proxy refuses every connection: after
        C{--max-consecutive-errors} (10) failed gets the breaker switches the
        store off ("Remote storage has been disabled"); the many gets after
        that fail at once, without a network call, and the build passes.
        """
        self.toxiproxy.disable(self.proxyName)
        self.through_proxy()

        run, elapsed = self.timed_build("app")
        stats = _stats(run.stderr)
        self.assertGreater(count_lines(run.stderr, _DISABLED), 0, run.describe())
        self.assertGreater(int(stats["get_calls"]), 40, "too few gets to see the breaker at work")
        self.assertLessEqual(count_lines(run.stderr, _FAILED_GET), 9, run.describe())
        self.assertEqual(stats["remote_hits"], "0")
        # Ten failed gets cost a second or two each; the rest nothing.
        self.assertLess(float(stats["remote_wait"].rstrip("s")), 40.0, run.describe())
        print(f"\nrefused: build {elapsed:.1f}s, remote_wait {stats['remote_wait']}, {stats['get_calls']} gets")

    def test_corruptObjects(self) -> None:
        """
        The app's objects are overwritten with wrong bytes and the same
        metadata (three ways: inverted raw bytes, inverted zstd bytes, a
        valid zstd frame of inverted raw bytes).  The rebuild uses none of
        them ("Remote object is corrupt"), compiles the app again, its
        program prints the right thing, and the uploads heal the objects.
        """
        self.ws.seed_local()
        self.through_proxy()
        self.timed_build("app1")
        keys = sorted(list_keys(self.s3, self.prefix))
        self.assertTrue(keys, "the first build uploaded nothing")
        changed = [key for i, key in enumerate(keys) if corrupt_object(self.s3, key, recompress=i % 2 == 1)]
        self.assertTrue(changed)
        broken = {key for key in changed if object_problems(self.s3, key)}
        self.assertEqual(broken, set(changed), "corruption left some objects valid")

        self.ws.seed_local()
        run, _ = self.timed_build("app2")
        self.assertIn("example.com/app/greet", compiled_packages(run), run.describe())
        self.assertGreater(_stat(run.stderr, "corrupt_objects"), 0, run.describe())
        self.assertGreater(count_lines(run.stderr, _CORRUPT), 0, run.describe())
        # Only objects too small to corrupt (empty outputs) may still hit.
        self.assertLessEqual(_stat(run.stderr, "remote_hits"), len(keys) - len(changed), run.describe())
        healed = {key: problems for key in changed if (problems := object_problems(self.s3, key))}
        self.assertEqual(healed, {}, "objects still corrupt after the rebuild's uploads")

    def test_wrongSecret(self) -> None:
        """
        The bucket holds the app's objects, but cacheprog signs with a wrong
        secret: every request is refused (never a hit, never taken for a
        miss of a missing key), the build compiles the app and passes, and
        the objects in the bucket are untouched.
        """
        self.ws.seed_local()
        self.through_proxy()
        self.timed_build("app1")
        before = {key: self.s3.get_object(Bucket=BUCKET, Key=key)["ETag"] for key in list_keys(self.s3, self.prefix)}
        self.assertTrue(before)

        self.ws.seed_local()
        self.ws.flags = [re.sub(r"^(--s3-access-key-secret=).*", r"\1wrong-secret", flag) for flag in self.ws.flags]
        run, _ = self.timed_build("app2")
        self.assertEqual(_stat(run.stderr, "remote_hits"), 0, run.describe())
        self.assertIn("example.com/app/greet", compiled_packages(run))
        self.assertIn("SignatureDoesNotMatch", run.stderr)
        after = {key: self.s3.get_object(Bucket=BUCKET, Key=key)["ETag"] for key in list_keys(self.s3, self.prefix)}
        self.assertEqual(after, before)

"""The real S3 test servers behave as the cache code will assume.

Each S3 server (moto, SeaweedFS, MinIO) is started on 127.0.0.1, a bucket is
created and objects go through it with botocore. What differs between the
servers is pinned down here as per-class expectations, and every observation
is also written to ``s3-server-observations.json`` in the trial working
directory (``_trial_temp``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from botocore.exceptions import ClientError, HTTPClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError
from twisted.trial import unittest

from tests.integration.servers import (
    LOCALHOST,
    ManagedProcess,
    MinIO,
    MotoServer,
    S3Server,
    SeaweedFS,
    ServerStartError,
    Toxiproxy,
    unavailable_reason,
)

S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
BUCKET = "cacheprog-test"
# What the cache code stores with each object.
METADATA = {
    "output_id": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "compression_algorithm": "zstd",
    "uncompressed_size": "12345",
}
OBSERVATIONS = "s3-server-observations.json"


def observe(server: str, key: str, value: object) -> None:
    """Record ``value`` under ``server``/``key`` in the observations file."""
    path = Path(OBSERVATIONS).absolute()
    try:
        data: dict[str, dict[str, object]] = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault(server, {})[key] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def client_error(call: Callable[[], object]) -> tuple[str, int]:
    """(error code, HTTP status) of a botocore call expected to fail."""
    try:
        call()
    except ClientError as error:
        response: Mapping[str, Any] = error.response
        return (
            str(response.get("Error", {}).get("Code")),
            int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)),
        )
    raise AssertionError("call succeeded, expected a ClientError")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of the TCP sockets that process ``pid`` listens on (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: set[tuple[str, int]] = set()
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            if family == 4:
                ip = ".".join(str(b) for b in reversed(raw))
            else:
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                ip = ":".join(b"".join(words).hex()[i : i + 4] for i in range(0, 32, 4))
            found.add((ip, int(hex_port, 16)))
    return found


LOOPBACK_IPS = {"127.0.0.1", "0000:0000:0000:0000:0000:0000:0000:0001"}


def signed_virtual_host_get(server: S3Server, bucket: str, key: str) -> tuple[int, bytes]:
    """GET ``key`` virtual-host style (``Host: <bucket>.localhost:<port>``).

    ``*.localhost`` does not resolve here, so the SigV4-signed request is
    sent to 127.0.0.1 with that Host header by hand.
    """
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    host = f"{bucket}.localhost:{server.port}"
    request = AWSRequest(method="GET", url=f"http://{host}/{key}")
    S3SigV4Auth(Credentials(server.access_key, server.secret_key), "s3", server.region).add_auth(request)
    connection = http.client.HTTPConnection(LOCALHOST, server.port, timeout=10)
    try:
        connection.putrequest("GET", f"/{key}", skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        for name, value in request.headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class S3ServerMixin:
    """Shared tests; a concrete class sets ``server_class`` and expectations."""

    server_class: ClassVar[type[S3Server]]
    # Expectations, one per quirk, checked by the tests below.
    keeps_underscore_metadata: ClassVar[bool] = True
    location_root: ClassVar[str] = S3_NS + "LocationConstraint"
    virtual_host_style: ClassVar[bool] = True
    if_match_unquoted_ok: ClassVar[bool] = True

    server: S3Server
    client: Any

    # Provided by unittest.SynchronousTestCase.
    mktemp: Callable[[], str]
    addCleanup: Callable[..., None]
    assertEqual: Callable[..., None]
    assertIn: Callable[..., None]
    assertIsNone: Callable[..., None]
    assertTrue: Callable[..., None]
    assertFalse: Callable[..., None]
    assertLessEqual: Callable[..., None]

    def setUp(self) -> None:
        reason = unavailable_reason(self.server_class)
        if reason is not None:
            raise unittest.SkipTest(reason)
        self.server = self.server_class(self.mktemp())
        self.server.start()
        self.addCleanup(self.server.stop)
        observe(self.server_name, "start_seconds", round(self.server.start_seconds or 0.0, 2))
        self.server.create_bucket(BUCKET)
        self.client = self.server.client()
        self.addCleanup(self.client.close)

    @property
    def server_name(self) -> str:
        return self.server_class.__name__

    def test_listens_on_loopback_only(self) -> None:
        pid = self.server.pid
        assert pid is not None
        addresses = listening_addresses(pid)
        observe(self.server_name, "listening", sorted(f"{ip}:{port}" for ip, port in addresses))
        self.assertIn((LOCALHOST, self.server.port), addresses)
        self.assertEqual({ip for ip, _ in addresses} - LOOPBACK_IPS, set())

    def test_put_get_metadata(self) -> None:
        body = b"compiled output " * 64
        put = self.client.put_object(Bucket=BUCKET, Key="a/obj", Body=body, Metadata=METADATA)
        self.assertEqual(put["ETag"], '"' + hashlib.md5(body).hexdigest() + '"')
        got = self.client.get_object(Bucket=BUCKET, Key="a/obj")
        self.assertEqual(got["Body"].read(), body)
        head = self.client.head_object(Bucket=BUCKET, Key="a/obj")
        observe(self.server_name, "metadata_after_get", got["Metadata"])
        observe(self.server_name, "metadata_after_head", head["Metadata"])
        lost = sorted(set(METADATA) - set(got["Metadata"]))
        observe(self.server_name, "underscore_metadata_lost", lost)
        if self.keeps_underscore_metadata:
            self.assertEqual(got["Metadata"], METADATA)
            self.assertEqual(head["Metadata"], METADATA)
        else:
            self.assertEqual(lost, sorted(METADATA))
        # Dashes survive everywhere.
        dashed = {k.replace("_", "-"): v for k, v in METADATA.items()}
        self.client.put_object(Bucket=BUCKET, Key="a/dashed", Body=b"x", Metadata=dashed)
        got = self.client.get_object(Bucket=BUCKET, Key="a/dashed")
        self.assertEqual(got["Metadata"], dashed)

    def test_head_if_match(self) -> None:
        put = self.client.put_object(Bucket=BUCKET, Key="etag", Body=b"v1")
        etag = put["ETag"]
        ok = self.client.head_object(Bucket=BUCKET, Key="etag", IfMatch=etag)
        self.assertEqual(ok["ETag"], etag)
        # An unquoted ETag in If-Match: RFC 9110 wants quotes, AWS accepts both.
        try:
            unquoted: object = self.client.head_object(Bucket=BUCKET, Key="etag", IfMatch=etag.strip('"'))[
                "ResponseMetadata"
            ]["HTTPStatusCode"]
        except ClientError as error:
            unquoted = error.response["ResponseMetadata"]["HTTPStatusCode"]
        observe(self.server_name, "head_if_match_unquoted_etag", unquoted)
        self.assertEqual(unquoted, 200 if self.if_match_unquoted_ok else 412)
        mismatch = client_error(lambda: self.client.head_object(Bucket=BUCKET, Key="etag", IfMatch='"0123"'))
        observe(self.server_name, "head_if_match_mismatch", list(mismatch))
        self.assertEqual(mismatch[1], 412)
        missing = client_error(lambda: self.client.head_object(Bucket=BUCKET, Key="nope", IfMatch=etag))
        observe(self.server_name, "head_if_match_missing_key", list(missing))
        self.assertEqual(missing[1], 404)
        none_match = client_error(lambda: self.client.head_object(Bucket=BUCKET, Key="etag", IfNoneMatch=etag))
        observe(self.server_name, "head_if_none_match_same", list(none_match))
        self.assertEqual(none_match[1], 304)

    def test_get_bucket_location(self) -> None:
        bodies: list[bytes] = []

        def capture(http_response: Any, **_: Any) -> None:
            bodies.append(http_response.content)

        self.client.meta.events.register("after-call.s3.GetBucketLocation", capture)
        parsed = self.client.get_bucket_location(Bucket=BUCKET)
        self.assertEqual(len(bodies), 1)
        body = bodies[0]
        observe(self.server_name, "get_bucket_location_body", body.decode())
        # botocore reads us-east-1 as no LocationConstraint on every server.
        self.assertIsNone(parsed.get("LocationConstraint"))
        root = ET.fromstring(body)
        self.assertEqual(root.tag, self.location_root)
        if root.tag.endswith("LocationConstraint"):
            element = root
        else:
            found = root.find("LocationConstraint")
            if found is None:
                found = root.find(S3_NS + "LocationConstraint")
            assert found is not None, body
            element = found
        self.assertIn(element.text, (None, ""))

    def test_wrong_secret(self) -> None:
        self.client.put_object(Bucket=BUCKET, Key="secret", Body=b"s")
        wrong = self.server.client(secret_key=self.server.secret_key + "x")
        self.addCleanup(wrong.close)
        unknown = self.server.client(access_key="AKIDUNKNOWN0000000000")
        self.addCleanup(unknown.close)
        if not self.server.checks_signatures:
            self.assertEqual(wrong.get_object(Bucket=BUCKET, Key="secret")["Body"].read(), b"s")
            observe(self.server_name, "wrong_secret", "accepted")
            return
        results = {
            "get_object": client_error(lambda: wrong.get_object(Bucket=BUCKET, Key="secret")),
            "put_object": client_error(lambda: wrong.put_object(Bucket=BUCKET, Key="secret", Body=b"evil")),
            "list_objects_v2": client_error(lambda: wrong.list_objects_v2(Bucket=BUCKET)),
            "unknown_access_key": client_error(lambda: unknown.get_object(Bucket=BUCKET, Key="secret")),
        }
        observe(self.server_name, "wrong_secret", {k: list(v) for k, v in results.items()})
        for operation in ("get_object", "put_object", "list_objects_v2"):
            self.assertEqual(results[operation], ("SignatureDoesNotMatch", 403))
        self.assertEqual(results["unknown_access_key"][1], 403)
        # The refused PUT changed nothing.
        self.assertEqual(self.client.get_object(Bucket=BUCKET, Key="secret")["Body"].read(), b"s")

    def test_virtual_host_style(self) -> None:
        self.client.put_object(Bucket=BUCKET, Key="vhost", Body=b"virtual")
        status, body = signed_virtual_host_get(self.server, BUCKET, "vhost")
        observe(self.server_name, "virtual_host_get", [status, body[:200].decode("utf-8", "replace")])
        if self.virtual_host_style:
            self.assertEqual((status, body), (200, b"virtual"))
        else:
            self.assertTrue(status >= 400)

    def test_stop_is_idempotent_and_kills(self) -> None:
        pid = self.server.pid
        assert pid is not None
        self.server.stop()
        self.server.stop()
        self.assertFalse(process_alive(pid))
        self.assertFalse(self.server.running)


class MotoServerTests(S3ServerMixin, unittest.SynchronousTestCase):
    server_class = MotoServer
    # werkzeug's dev server drops request headers with "_" in their name.
    keeps_underscore_metadata = False
    # If-Match: <etag without quotes> is a 412 on moto.
    if_match_unquoted_ok = False


class SeaweedFSTests(S3ServerMixin, unittest.SynchronousTestCase):
    server_class = SeaweedFS
    # Non-standard root element, no namespace.
    location_root = "CreateBucketConfiguration"


class MinIOTests(S3ServerMixin, unittest.SynchronousTestCase):
    server_class = MinIO


class ToxiproxyTests(unittest.SynchronousTestCase):
    """Faults between a client and a real server (SeaweedFS, else moto)."""

    def setUp(self) -> None:
        reason = unavailable_reason(Toxiproxy)
        if reason is not None:
            raise unittest.SkipTest(reason)
        workdir = self.mktemp()
        upstream_class: type[S3Server] = SeaweedFS
        if unavailable_reason(SeaweedFS) is not None:
            upstream_class = MotoServer
        if unavailable_reason(upstream_class) is not None:
            raise unittest.SkipTest(str(unavailable_reason(upstream_class)))
        self.upstream = upstream_class(workdir)
        self.upstream.start()
        self.addCleanup(self.upstream.stop)
        self.upstream.create_bucket(BUCKET)
        direct = self.upstream.client()
        self.addCleanup(direct.close)
        self.payload = os.urandom(64 * 1024)
        direct.put_object(Bucket=BUCKET, Key="blob", Body=self.payload)
        direct.put_object(Bucket=BUCKET, Key="small", Body=b"tiny")

        self.toxiproxy = Toxiproxy(workdir)
        self.toxiproxy.start()
        self.addCleanup(self.toxiproxy.stop)
        observe("Toxiproxy", "start_seconds", round(self.toxiproxy.start_seconds or 0.0, 2))
        self.proxy = self.toxiproxy.create_proxy("s3", self.upstream.endpoint)
        self.client = self.upstream.client(endpoint_url=self.proxy.endpoint, read_timeout=5.0)
        self.addCleanup(self.client.close)

    def get(self, key: str = "small") -> bytes:
        data: bytes = self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return data

    def timed_get(self, key: str = "small") -> float:
        began = time.monotonic()
        self.assertEqual(len(self.get(key)) > 0, True)
        return time.monotonic() - began

    def test_proxy_listens_on_loopback(self) -> None:
        self.assertTrue(self.proxy.listen.startswith(LOCALHOST + ":"))
        self.assertEqual(self.toxiproxy.get_proxy("s3"), self.proxy)

    def test_proxied_get(self) -> None:
        self.assertEqual(self.get("blob"), self.payload)
        # Signatures still check out through the proxy (Host is the proxy's).
        if self.upstream.checks_signatures:
            wrong = self.upstream.client(endpoint_url=self.proxy.endpoint, secret_key="not-the-secret")
            self.addCleanup(wrong.close)
            code, status = client_error(lambda: wrong.get_object(Bucket=BUCKET, Key="small"))
            self.assertEqual((code, status), ("SignatureDoesNotMatch", 403))

    def test_latency(self) -> None:
        self.get()  # warm the connection
        base = statistics.median(self.timed_get() for _ in range(5))
        self.toxiproxy.add_latency("s3", latency_ms=50, jitter_ms=5)
        slow = statistics.median(self.timed_get() for _ in range(5))
        observe("Toxiproxy", "latency_50ms", {"base_s": round(base, 4), "slow_s": round(slow, 4)})
        self.assertTrue(slow - base >= 0.040, (base, slow))
        self.assertTrue(slow < 1.0, (base, slow))
        self.toxiproxy.remove_toxic("s3", "latency_downstream")
        self.assertEqual(self.toxiproxy.toxics("s3"), [])
        self.assertTrue(self.timed_get() < 0.045 + base)

    def test_disable_enable(self) -> None:
        self.assertEqual(self.get(), b"tiny")
        self.assertFalse(self.toxiproxy.disable("s3").enabled)
        self.assertRaises((BotoConnectionError, HTTPClientError), self.get)
        self.assertTrue(self.toxiproxy.enable("s3").enabled)
        self.assertEqual(self.get(), b"tiny")

    def test_reset_peer(self) -> None:
        self.toxiproxy.add_reset_peer("s3")
        self.assertRaises((BotoConnectionError, HTTPClientError), self.get)
        self.toxiproxy.reset()
        self.assertEqual(self.toxiproxy.toxics("s3"), [])
        self.assertEqual(self.get(), b"tiny")

    def test_timeout(self) -> None:
        short = self.upstream.client(endpoint_url=self.proxy.endpoint, read_timeout=0.5)
        self.addCleanup(short.close)
        self.toxiproxy.add_timeout("s3", timeout_ms=0)
        began = time.monotonic()
        self.assertRaises(ReadTimeoutError, lambda: short.get_object(Bucket=BUCKET, Key="small")["Body"].read())
        self.assertTrue(time.monotonic() - began < 5)
        self.toxiproxy.reset()
        self.assertEqual(self.get(), b"tiny")

    def test_bandwidth(self) -> None:
        self.toxiproxy.add_bandwidth("s3", rate_kbps=256)  # 64 KiB at 256 KB/s
        elapsed = self.timed_get("blob")
        observe("Toxiproxy", "bandwidth_64KiB_at_256KBps_s", round(elapsed, 3))
        self.assertTrue(elapsed >= 0.15, elapsed)


class _Failing(ManagedProcess):
    kind = "failing"

    def _command(self) -> tuple[list[str], Mapping[str, str]]:
        script = "import sys; print('boom: cannot start'); sys.exit(3)"
        return [sys.executable, "-c", script], {}

    def _ready(self) -> bool:
        return False


class _Hanging(ManagedProcess):
    kind = "hanging"

    def _command(self) -> tuple[list[str], Mapping[str, str]]:
        script = "import time; print('still starting', flush=True); time.sleep(60)"
        return [sys.executable, "-c", script], {}

    def _ready(self) -> bool:
        return False


class ManagedProcessTests(unittest.SynchronousTestCase):
    def test_exit_before_ready(self) -> None:
        server = _Failing(self.mktemp(), start_timeout=10)
        error = self.assertRaises(ServerStartError, server.start)
        self.assertIn("exited with code 3", str(error))
        self.assertIn("boom: cannot start", str(error))
        server.stop()

    def test_start_timeout_kills(self) -> None:
        server = _Hanging(self.mktemp(), start_timeout=1)
        error = self.assertRaises(ServerStartError, server.start)
        self.assertIn("not ready after 1s", str(error))
        self.assertIn("still starting", str(error))
        self.assertFalse(server.running)
        self.assertEqual(server.pid, None)

    def test_killed_with_parent(self) -> None:
        """A server dies with the test process even without atexit."""
        if not sys.platform.startswith("linux"):
            raise unittest.SkipTest("PR_SET_PDEATHSIG is Linux-only")
        workdir = os.path.abspath(self.mktemp())
        script = (
            "import sys, time\n"
            "from tests.integration.servers import ManagedProcess\n"
            "class S(ManagedProcess):\n"
            "    kind = 'sleeper'\n"
            "    def _command(self):\n"
            "        return [sys.executable, '-c', 'import time; time.sleep(60)'], {}\n"
            "    def _ready(self):\n"
            "        return True\n"
            f"s = S({workdir!r})\n"
            "s.start()\n"
            "print(s.pid, flush=True)\n"
            "time.sleep(60)\n"
        )
        parent = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            self.assertTrue(process_alive(child))
            parent.kill()
            parent.wait()
            deadline = time.monotonic() + 5
            while process_alive(child) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertFalse(process_alive(child))
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
            if parent.stdout is not None:
                parent.stdout.close()

"""
End to end with the s3 store: the real C{go} command (and golangci-lint)
with C{GOCACHEPROG} pointing at cacheprog, which keeps the cache in a real
S3 server on 127.0.0.1 (L{tests.integration.servers}).

 - SeaweedFS (C{weed mini}, signatures checked): a cold build that fills an
   empty bucket under a templated prefix, the layout and metadata of what
   landed there (the Go reference's format), a rebuild after wiping the
   local root that runs no compiler; C{Accept-Encoding} left out of the
   signature; C{CACHEPROG_DISABLE_GET} and C{CACHEPROG_DISABLE_PUT};
   golangci-lint twice (C{GOCACHEPROG} and C{GOLANGCI_LINT_CACHEPROG}).
 - MinIO, when its binary is there: the C{minio+http://} endpoint scheme and
   the unsigned C{Accept-Encoding}.
 - L{StdioHalfCloseTests}: a go command that vanishes without close (found
   through golangci-lint; a regression test for a fixed hang).

The module also holds the helpers that L{tests.integration.test_s3_faults}
uses (workspaces whose C{GOCACHEPROG} carries s3 flags, a bucket seeded
with the standard packages, object checks, one server per test class).

To keep the run short, most scenarios start from the seed of
L{tests.e2e.test_gobuild} (the standard packages the app needs, built once
through cacheprog): copied into the local root, or uploaded into the bucket
with botocore exactly as the C{dir} store holds them (the same encoding and
metadata as S3).  The app itself sits at a new path in every test, so its
packages are always compiled by the first build of a test and uploaded by
cacheprog.

golangci-lint is installed lazily, once, from the Go module proxy
(C{go install ...@GOLANGCI_LINT_VERSION}, bounded by
C{GOLANGCI_LINT_INSTALL_TIMEOUT}) and kept in the tools directory
(C{~/.cache/cacheprog-tools/bin/golangci-lint-<version>}), so later runs skip
the build; when it cannot be installed, its test skips with the reason.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e.test_gobuild import (
    APP_OUTPUT,
    GO_TIMEOUT,
    REPO,
    _program,
    _quote,
    _read_some,
    _rmtree,
    _Run,
    _Seed,
    _stat,
    _stats,
    _tool_runs,
    _Toolchain,
    _Workspace,
)
from tests.goenv import clean_environ
from tests.integration.servers import (
    ManagedProcess,
    MinIO,
    S3Server,
    SeaweedFS,
    tools_dir,
    unavailable_reason,
)

BUCKET = "cacheprog-e2e"
REGION = "us-east-1"
GOLANGCI_LINT_MODULE = "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
GOLANGCI_LINT_VERSION = os.environ.get("CACHEPROG_GOLANGCI_LINT_VERSION", "v2.4.0")
GOLANGCI_LINT_INSTALL_TIMEOUT = float(os.environ.get("CACHEPROG_GOLANGCI_LINT_INSTALL_TIMEOUT", "360"))

#: golangci-lint's standard linters, minus the app's unchecked os.Stdout writes.
GOLANGCI_CONFIG = """\
version: "2"
linters:
  default: standard
  settings:
    errcheck:
      exclude-functions:
        - (*os.File).WriteString
"""

_KEY = re.compile(r"[0-9a-f]{64}")
_B64_SHA256 = re.compile(r"[A-Za-z0-9+/]{43}=")
_CACHEPROG_LINE = re.compile(r'^time="[^"]*" level=[A-Z]+ msg=')
S = TypeVar("S", bound=ManagedProcess)


# cacheprog's command line and the go command


def s3_flags(
    endpoint: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    prefix: str | None = None,
    region: str | None = REGION,
    path_style: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """
    cacheprog's flags for the s3 store (each as C{--name=value}: a secret
    may start with C{-}).  C{prefix=None} leaves the prefix to
    C{CACHEPROG_S3_PREFIX}; C{region=None} leaves it to detection.
    """
    flags = [
        "--remote-storage-type=s3",
        f"--s3-endpoint={endpoint}",
        f"--s3-bucket={bucket}",
        f"--s3-access-key-id={access_key}",
        f"--s3-access-key-secret={secret_key}",
    ]
    if path_style:
        flags.append("--s3-force-path-style")
    if prefix is not None:
        flags.append(f"--s3-prefix={prefix}")
    if region is not None:
        flags.append(f"--s3-region={region}")
    flags.extend(extra)
    return flags


def server_flags(server: S3Server, prefix: str | None, endpoint: str | None = None, **options: Any) -> list[str]:
    """
    L{s3_flags} for C{server} (or for C{endpoint}, a proxy in front of it).
    """
    return s3_flags(endpoint or server.endpoint, BUCKET, server.access_key, server.secret_key, prefix, **options)


class S3Workspace(_Workspace):
    """
    A L{_Workspace} whose C{GOCACHEPROG} also carries C{flags}.
    """

    def __init__(self, base: str, go: str, flags: Sequence[str] = ()) -> None:
        super().__init__(base, go)
        self.flags = list(flags)

    def command(self, flags: Sequence[str] | None = None) -> str:
        """
        The C{GOCACHEPROG} value: cacheprog, the local root, C{flags}.
        """
        argv = [*_program(), "--root-directory", self.local, *(self.flags if flags is None else flags)]
        return " ".join(_quote(a) for a in argv)

    def environ(self, remote: bool = False, **extra: str) -> dict[str, str]:
        return super().environ(remote, **{"GOCACHEPROG": self.command(), **extra})

    def seed_local(self) -> None:
        """
        Replace the local root by a copy of the seed's (the standard packages).
        """
        _Seed.require(self.go)
        _rmtree(self.local)
        shutil.copytree(_Seed.local, self.local)

    def wipe_local(self) -> None:
        _rmtree(self.local)

    def binary(self, name: str) -> str:
        return os.path.join(self.out, name)


class Command:
    """
    One command (go, or a tool that runs go) started in its own process
    group, bounded by C{timeout}.  Its output is read through pipes to the
    end, so the result includes what cacheprog writes after go exits (the
    statistics line); then whatever is left of the group is killed (a
    cacheprog that never exits must not outlive the test).
    """

    def __init__(self, argv: Sequence[str], cwd: str, env: Mapping[str, str], timeout: float) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._output: tuple[bytes, bytes] | None = None

    def finished(self, within: float) -> bool:
        """
        Read output for at most C{within} seconds; whether the command and
        everything holding its output have finished.
        """
        if self._output is not None:
            return True
        try:
            self._output = self.process.communicate(timeout=within)
        except subprocess.TimeoutExpired:
            return False
        return True

    def wait(self) -> tuple[_Run, float]:
        """
        The result and the seconds it took.

        @raise AssertionError: the command did not finish within the timeout
            (it and its children were killed).
        """
        left = max(0.1, self.timeout - (time.monotonic() - self.started))
        if not self.finished(left):
            self._sweep()
            self._output = self.process.communicate()
            run = self._result()
            raise AssertionError(f"{self.argv[0]} did not end within {self.timeout:.0f}s (killed):\n{run.describe()}")
        elapsed = time.monotonic() - self.started
        self._sweep()
        return self._result(), elapsed

    def _sweep(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _result(self) -> _Run:
        assert self._output is not None
        out, err = (b.decode("utf-8", "replace") for b in self._output)
        code = self.process.wait()
        return _Run(self.argv, subprocess.CompletedProcess(self.argv, code, out, err))


def run_go(
    ws: _Workspace, *args: str, env: Mapping[str, str] | None = None, timeout: float = GO_TIMEOUT
) -> tuple[_Run, float]:
    """
    Run one go command in C{ws} (with C{env} added to its environment).
    """
    return Command([ws.go, *args], ws.app, ws.environ(False, **dict(env or {})), timeout).wait()


def app_output(binary: str) -> tuple[int, str, str]:
    done = subprocess.run([binary], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def compiled_packages(run: _Run) -> set[str]:
    """
    The import paths the compiler ran for (C{-p <path>} of C{go build -x}).
    """
    found = set()
    for line in _tool_runs(run.stderr, "compile"):
        m = re.search(r"\s-p\s+(\S+)", line)
        if m:
            found.add(m.group(1))
    return found


def cacheprog_lines(stderr: str) -> list[str]:
    """
    cacheprog's own log lines (logfmt, C{time="..." level=... msg=...}).
    """
    return [line for line in stderr.splitlines() if _CACHEPROG_LINE.match(line)]


def count_lines(stderr: str, needle: str) -> int:
    return sum(1 for line in cacheprog_lines(stderr) if needle in line)


# the bucket


@dataclass(frozen=True)
class StoredObject:
    """
    One object as the C{dir} store (and S3) holds it: stored bytes and the
    reference's user metadata.
    """

    action_hex: str
    data: bytes
    metadata: dict[str, str]


_seed_objects: list[StoredObject] = []


def seed_objects(go: str) -> list[StoredObject]:
    """
    The objects of the seed's C{dir} store (read once).
    """
    if not _seed_objects:
        _Seed.require(go)
        for directory, _, names in os.walk(_Seed.store):
            if os.path.relpath(directory, _Seed.store).split(os.sep)[0] in ("packs", "manifests"):
                continue  # the warm-start objects, not cache entries
            for name in names:
                if not _KEY.fullmatch(name) or not os.path.exists(os.path.join(directory, name + ".meta")):
                    continue  # packs and manifests are not per-object entries
                with open(os.path.join(directory, name), "rb") as f:
                    data = f.read()
                with open(os.path.join(directory, name + ".meta"), encoding="utf-8") as f:
                    metadata = {str(k): str(v) for k, v in json.load(f).items()}
                _seed_objects.append(StoredObject(name, data, metadata))
        if not _seed_objects:
            raise AssertionError(f"the seed's dir store {_Seed.store} holds no object")
    return _seed_objects


def key_of(prefix: str, action_hex: str) -> str:
    return f"{prefix}/{action_hex}" if prefix else action_hex


def upload_seed(client: Any, go: str, prefix: str, bucket: str = BUCKET) -> set[str]:
    """
    Put the seed's objects into C{bucket} under C{prefix} (a few threads);
    return their keys.
    """
    objects = seed_objects(go)

    def put(obj: StoredObject) -> str:
        key = key_of(prefix, obj.action_hex)
        client.put_object(Bucket=bucket, Key=key, Body=obj.data, Metadata=obj.metadata)
        return key

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return set(pool.map(put, objects))


def list_keys(client: Any, prefix: str, bucket: str = BUCKET, entries_only: bool = True) -> set[str]:
    """
    Every per-object cache entry key (C{<prefix>/<64 hex>}) under C{prefix}/
    in C{bucket}; with C{entries_only} false, run manifests and packs too.
    """
    keys: set[str] = set()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        keys.update(item["Key"] for item in page.get("Contents", []))
    if entries_only:
        keys = {
            k for k in keys if _KEY.fullmatch(k.rsplit("/", 1)[-1]) and "/packs/" not in k and "/manifests/" not in k
        }
    return keys


def decode_object(body: bytes, metadata: Mapping[str, str]) -> bytes:
    """
    The raw bytes of a stored object (zstd or raw, as the metadata says).
    """
    import zstandard

    algorithm = metadata.get("compression_algorithm", "")
    if algorithm == "zstd":
        size = int(metadata.get("uncompressed_size") or 0)
        return bytes(zstandard.ZstdDecompressor().decompress(body, max_output_size=max(size, 1)))
    if algorithm:
        raise AssertionError(f"unknown compression_algorithm {algorithm!r}")
    return body


def object_problems(client: Any, key: str, bucket: str = BUCKET) -> list[str]:
    """
    What is wrong with the object at C{key} in the Go reference's format
    (empty: nothing): the metadata names and values, and that the body
    decodes to C{uncompressed_size} bytes whose SHA-256 is the C{output_id}.
    """
    got = client.get_object(Bucket=bucket, Key=key)
    body = got["Body"].read()
    meta = {k.lower(): v for k, v in got.get("Metadata", {}).items()}
    problems = []
    unknown = set(meta) - {"output_id", "compression_algorithm", "uncompressed_size"}
    if unknown:
        problems.append(f"unexpected metadata {sorted(unknown)}")
    output_id = meta.get("output_id", "")
    if not _B64_SHA256.fullmatch(output_id):
        problems.append(f"output_id {output_id!r} is not 44 characters of standard base64")
        return problems
    algorithm = meta.get("compression_algorithm", "")
    if algorithm not in ("zstd", ""):
        problems.append(f"compression_algorithm {algorithm!r}")
        return problems
    size_text = meta.get("uncompressed_size")
    try:
        raw = decode_object(body, meta)
    except Exception as e:  # noqa: BLE001 - reported
        problems.append(f"body does not decode: {e!r}")
        return problems
    if size_text is None:
        if raw:
            problems.append(f"no uncompressed_size for a {len(raw)}-byte object")
    elif not size_text.isdigit() or int(size_text) != len(raw) or int(size_text) == 0:
        problems.append(f"uncompressed_size {size_text!r} for {len(raw)} bytes")
    if algorithm == "zstd" and len(body) >= len(raw):
        problems.append(f"zstd ({len(body)} bytes) is not smaller than raw ({len(raw)} bytes)")
    if hashlib.sha256(raw).digest() != base64.b64decode(output_id):
        problems.append("SHA-256 of the body differs from output_id")
    return problems


def check_bucket_layout(test: TestCase, client: Any, prefix: str, keys: set[str]) -> None:
    """
    Every key is C{<prefix>/<64 lowercase hex>} and every object is in the
    reference's format.
    """
    test.assertTrue(keys, f"nothing under {prefix}/")
    bad_keys = [k for k in keys if not (k.startswith(prefix + "/") and _KEY.fullmatch(k[len(prefix) + 1 :]))]
    test.assertEqual(bad_keys, [], f"keys not shaped <{prefix}>/<64 hex>")

    def problems(key: str) -> tuple[str, list[str]]:
        return key, object_problems(client, key)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        found = {key: p for key, p in pool.map(problems, sorted(keys)) if p}
    test.assertEqual(found, {}, "objects not in the reference's format")


# servers shared by the tests of a class


class SharedServers:
    """
    Servers shared by the tests of one class (trial has no C{setUpClass}):
    the first test that asks for a kind starts it, the class's last test
    stops everything.  A run of a subset leaves them to the C{atexit} hook of
    L{tests.integration.servers}.  A server that cannot start makes every
    test that asks for it skip, with the reason.
    """

    def __init__(self) -> None:
        self.servers: dict[type[ManagedProcess], ManagedProcess] = {}
        self.broken: dict[type[ManagedProcess], str] = {}
        self.remaining: set[str] | None = None

    def enter(self, test: TestCase) -> None:
        """
        Register C{test} (from its C{setUp}).
        """
        if self.remaining is None:
            self.remaining = {name for name in dir(type(test)) if name.startswith("test")}
        test.addCleanup(self._leave, test._testMethodName)

    def _leave(self, name: str) -> None:
        assert self.remaining is not None
        self.remaining.discard(name)
        if not self.remaining:
            self.stop()
            self.remaining = None

    def stop(self) -> None:
        servers, self.servers = self.servers, {}
        for server in servers.values():
            server.stop()

    def get(self, kind: type[S], bucket: str | None = BUCKET) -> S:
        """
        The running server of C{kind} (started now if needed, with
        C{bucket} created).

        @raise SkipTest: it is not installed or does not start.
        """
        if kind in self.broken:
            raise SkipTest(self.broken[kind])
        server = self.servers.get(kind)
        if server is None:
            server = start_server(kind, bucket, self.broken)
            self.servers[kind] = server
        assert isinstance(server, kind)
        return server


def start_server(kind: type[S], bucket: str | None = BUCKET, broken: dict[Any, str] | None = None) -> S:
    """
    Start a server of C{kind} in a new directory under the current one (the
    trial temp directory), with C{bucket} created for an S3 server.

    @raise SkipTest: not installed, or it does not start (the reason is
        remembered in C{broken}).
    """
    reason = unavailable_reason(kind)
    if reason is not None:
        if broken is not None:
            broken[kind] = reason
        raise SkipTest(reason)
    server = kind(tempfile.mkdtemp(prefix=f"{kind.__name__}-", dir=os.getcwd()))
    try:
        server.start()
        if bucket is not None and isinstance(server, S3Server):
            server.create_bucket(bucket)
    except Exception as e:
        server.stop()
        reason = f"{kind.__name__} did not start: {e}"
        if broken is not None:
            broken[kind] = reason
        raise SkipTest(reason) from e
    return server


def _no_expect_continue(request: Any, **_: Any) -> None:
    """
    Send PutObject without C{Expect: 100-continue}: after botocore's
    empty-body PUT with that header, MinIO leaves the kept-alive connection
    in a state where the next request on it never gets an answer (seen with
    botocore 1.43 and the MinIO that .ci/install-servers.sh builds).
    """
    request.headers.pop("Expect", None)


class S3BuildCase(TestCase):
    """
    Shared set-up of the s3 end-to-end and fault tests: the toolchain, a
    workspace, the servers of the class.
    """

    timeout = 600
    servers: ClassVar[SharedServers]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.servers = SharedServers()

    def setUp(self) -> None:
        self.goBinary = _Toolchain.require()
        self.servers.enter(self)
        base = tempfile.mkdtemp(prefix="cacheprog-s3-e2e-")
        self.addCleanup(_rmtree, base)
        self.ws = S3Workspace(base, self.goBinary)
        self.prefix = "e2e/" + self._testMethodName

    def client(self, server: S3Server) -> Any:
        """
        A botocore client for C{server}, closed at the end of the test.
        """
        client = server.client(retries=2)
        client.meta.events.register_first("before-send.s3.PutObject", _no_expect_continue)
        self.addCleanup(client.close)
        return client

    def go(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = GO_TIMEOUT, ok: bool = True
    ) -> _Run:
        """
        Run go; unless C{ok} is false, fail the test unless it exits 0.
        """
        run, _ = run_go(self.ws, *args, env=env, timeout=timeout)
        if ok and run.code != 0:
            self.fail(run.describe())
        return run

    def build(self, name: str, env: Mapping[str, str] | None = None, timeout: float = GO_TIMEOUT) -> _Run:
        """
        C{go build -x -o <out>/<name> .}, which must pass and give a binary
        that prints the right thing.
        """
        run = self.go("build", "-x", "-o", self.ws.binary(name), ".", env=env, timeout=timeout)
        self.assertAppRuns(self.ws.binary(name), run)
        return run

    def assertAppRuns(self, binary: str, run: _Run | None = None) -> None:
        code, out, err = app_output(binary)
        context = err + ("\n" + run.describe() if run is not None else "")
        self.assertEqual((code, out), (0, APP_OUTPUT), context)

    def assertCompiles(self, run: _Run, expected: bool) -> None:
        lines = _tool_runs(run.stderr, "compile")
        if expected:
            self.assertTrue(lines, f"the compiler did not run:\n{run.describe()}")
        else:
            self.assertEqual(lines, [], f"the compiler ran:\n{run.describe()}")


class _S3BuildTests(S3BuildCase):
    """
    What the scenarios on every S3 server share (no tests of its own: trial
    collects this class too).
    """

    server_class: ClassVar[type[S3Server]]
    #: The endpoint cacheprog is given (a format of the server's endpoint).
    endpoint_format = "{endpoint}"
    path_style = True

    def server(self) -> S3Server:
        return self.servers.get(self.server_class)

    def flags(self, server: S3Server, prefix: str | None = None, **options: Any) -> list[str]:
        endpoint = self.endpoint_format.format(endpoint=server.endpoint)
        return server_flags(
            server, self.prefix if prefix is None else prefix, endpoint, path_style=self.path_style, **options
        )

    def warmFromRemote(self, env: Mapping[str, str] | None = None) -> None:
        """
        The bucket holds the standard packages, the local root is empty:
        the first build gets them from the bucket, compiles the app and
        uploads it (in the reference's format); after wiping the local root,
        the rebuild runs no compiler and its binary works.
        """
        server = self.server()
        client = self.client(server)
        seeded = upload_seed(client, self.goBinary, self.prefix)
        self.ws.flags = self.flags(server)

        first = self.build("app1", env=env)
        self.assertGreater(_stat(first.stderr, "remote_hits"), 0, first.describe())
        self.assertIn("example.com/app/greet", compiled_packages(first), first.describe())
        self.assertGreater(_stat(first.stderr, "uploads"), 0, first.describe())
        added = list_keys(client, self.prefix) - seeded
        check_bucket_layout(self, client, self.prefix, added)

        self.ws.wipe_local()
        second = self.build("app2", env=env)
        self.assertCompiles(second, False)
        self.assertGreater(_stat(second.stderr, "remote_hits"), 0)
        self.assertEqual(_stat(second.stderr, "local_hits"), 0)

    def excludeAcceptEncoding(self) -> None:
        """
        C{CACHEPROG_S3_EXCLUDE_HEADERS_FROM_SIGNING=Accept-Encoding} (what
        GCS needs) still works: gets hit, uploads land, the rebuild after
        wiping the local root runs no compiler.
        """
        self.warmFromRemote(env={"CACHEPROG_S3_EXCLUDE_HEADERS_FROM_SIGNING": "Accept-Encoding"})


class SeaweedFSBuildTests(_S3BuildTests):
    """
    go through cacheprog on SeaweedFS.
    """

    server_class = SeaweedFS

    def test_excludeAcceptEncodingFromSigning(self) -> None:
        """
        C{Accept-Encoding} sent unsigned: see L{_S3BuildTests.excludeAcceptEncoding}.
        """
        self.excludeAcceptEncoding()

    def test_coldBuildTemplatedPrefix(self) -> None:
        """
        A cold build (empty bucket, empty local root) through cacheprog with
        C{CACHEPROG_S3_PREFIX=e2e/{% GOOS %}/{% GOARCH %}/{% env.VAR %}}:
        every object lands under the rendered prefix as
        C{<prefix>/<64 hex>}, with the reference's metadata (C{output_id}
        std base64 of the SHA-256 of the raw bytes, C{compression_algorithm}
        zstd only when smaller, C{uncompressed_size}); after wiping the local
        root, the rebuild runs no compiler, hits only the bucket, and the
        binary works.
        """
        server = self.server()
        client = self.client(server)
        branch = f"branch-{os.getpid()}"
        env = {
            "CACHEPROG_S3_PREFIX": "e2e/{% GOOS %}/{%GOARCH%}/{% env.CACHEPROG_E2E_BRANCH %}",
            "CACHEPROG_E2E_BRANCH": branch,
        }
        goos, goarch = _go_env(self.goBinary, "GOOS", "GOARCH")
        prefix = f"e2e/{goos}/{goarch}/{branch}"
        self.ws.flags = server_flags(server, prefix=None)

        first = self.build("app1", env=env)
        self.assertCompiles(first, True)
        self.assertIn("runtime", compiled_packages(first), "not a cold build")
        uploads = _stat(first.stderr, "uploads")
        self.assertGreater(uploads, 0, first.describe())
        keys = list_keys(client, prefix)
        self.assertEqual(len(keys), uploads, f"{len(keys)} keys under {prefix}/, {uploads} uploads")
        self.assertEqual(list_keys(client, "e2e/{%"), set(), "the template was not rendered")
        check_bucket_layout(self, client, prefix, keys)
        algorithms = {
            client.head_object(Bucket=BUCKET, Key=k)["Metadata"].get("compression_algorithm", "") for k in keys
        }
        self.assertIn("zstd", algorithms)

        self.ws.wipe_local()
        second = self.build("app2", env=env)
        self.assertCompiles(second, False)
        self.assertGreater(_stat(second.stderr, "remote_hits"), 0)
        self.assertEqual(_stat(second.stderr, "local_hits"), 0)

    def test_disableGet(self) -> None:
        """
        C{CACHEPROG_DISABLE_GET=true}: go is not offered C{get}, so it
        recompiles what the cache holds, and the puts still upload: objects
        appear under a fresh prefix.
        """
        server = self.server()
        client = self.client(server)
        self.ws.seed_local()
        self.ws.flags = self.flags(server)
        self.go("build", "./greet")
        self.assertCompiles(self.go("build", "-x", "./greet"), False)

        fresh = self.prefix + "-fresh"
        self.ws.flags = self.flags(server, prefix=fresh)
        run = self.go("build", "-x", "./greet", env={"CACHEPROG_DISABLE_GET": "true"})
        compiled = compiled_packages(run)
        self.assertIn("example.com/app/greet", compiled, run.describe())
        self.assertIn("strconv", compiled, run.describe())
        stats = _stats(run.stderr)
        self.assertEqual(stats["get_calls"], "0")
        self.assertGreater(int(stats["put_calls"]), 0)
        self.assertGreater(int(stats["uploads"]), 0)
        keys = list_keys(client, fresh)
        self.assertEqual(len(keys), int(stats["uploads"]))
        check_bucket_layout(self, client, fresh, keys)

    def test_disablePut(self) -> None:
        """
        C{CACHEPROG_DISABLE_PUT=true}: go is not offered C{put}; the build
        (which compiles the app) passes, the binary works, and the prefix
        stays empty.
        """
        server = self.server()
        client = self.client(server)
        self.ws.seed_local()
        self.ws.flags = self.flags(server)
        run = self.build("app", env={"CACHEPROG_DISABLE_PUT": "true"})
        self.assertCompiles(run, True)
        self.assertEqual((_stat(run.stderr, "put_calls"), _stat(run.stderr, "uploads")), (0, 0))
        self.assertEqual(list_keys(client, self.prefix, entries_only=False), set())

    def test_golangciLint(self) -> None:
        """
        golangci-lint (standard linters) with C{GOCACHEPROG} and
        C{GOLANGCI_LINT_CACHEPROG} both pointing at cacheprog (the linter's
        own cache under its own prefix), logs to files: two runs, the local
        root and the linter's cache directory wiped in between.  Both exit 0
        and report nothing; every cacheprog starts, none of their log lines
        says "error" or "fail", and the second run gets objects from the
        bucket.

        golangci-lint runs C{go list}, which exits without a close request;
        cacheprog used to hang when it saw its stdout go away before the
        stdin EOF (see L{StdioHalfCloseTests}), and golangci-lint then gave
        up after 30 s ("WaitDelay expired before I/O complete", exit 3).
        """
        lint = golangci_lint()
        server = self.server()
        client = self.client(server)
        self.ws.seed_local()
        with open(os.path.join(self.ws.app, ".golangci.yml"), "w", encoding="utf-8") as f:
            f.write(GOLANGCI_CONFIG)
        go_prefix, lint_prefix = self.prefix + "/go", self.prefix + "/golangci-lint"
        logs = os.path.join(self.ws.base, "logs")
        os.makedirs(logs)
        lint_cache = os.path.join(self.ws.base, "golangci-lint-cache")
        home = os.path.join(self.ws.base, "home")
        os.makedirs(home)

        def run(n: int) -> str:
            go_log = os.path.join(logs, f"go-{n}.log")
            lint_log = os.path.join(logs, f"lint-{n}.log")
            env = self.ws.environ(
                GOCACHEPROG=self.ws.command([*self.flags(server, prefix=go_prefix), f"--log-output={go_log}"]),
                GOLANGCI_LINT_CACHEPROG=self.ws.command(
                    [*self.flags(server, prefix=lint_prefix), f"--log-output={lint_log}"]
                ),
                GOLANGCI_LINT_CACHE=lint_cache,
                HOME=home,
                XDG_CACHE_HOME=os.path.join(home, ".cache"),
                PATH=os.path.dirname(self.goBinary) + os.pathsep + os.environ.get("PATH", ""),
            )
            argv = [lint, "run", "--timeout=5m", "./..."]
            done, elapsed = Command(argv, self.ws.app, env, GO_TIMEOUT).wait()
            print(f"\ngolangci-lint run {n}: {elapsed:.1f}s")
            self.assertEqual(done.code, 0, done.describe())
            self.assertIn("0 issues", done.stdout + done.stderr, done.describe())
            text = ""
            for path in (go_log, lint_log):
                self.assertTrue(os.path.exists(path), f"{path} missing:\n{done.describe()}")
                with open(path, encoding="utf-8", errors="replace") as f:
                    text += f.read()
            self.assertIn("Starting cacheprog", text)
            dirty = [line for line in text.splitlines() if "error" in line or "fail" in line]
            self.assertEqual(dirty, [], text[-4000:])
            return text

        run(1)
        go_keys, lint_keys = list_keys(client, go_prefix), list_keys(client, lint_prefix)
        self.assertTrue(go_keys, "nothing stored under the go prefix")
        self.assertTrue(lint_keys, "golangci-lint stored nothing under its prefix")
        self.ws.wipe_local()
        _rmtree(lint_cache)
        logs_text = run(2)
        hits = [int(m) for m in re.findall(r"remote_hits=(\d+)", logs_text)]
        self.assertGreater(sum(hits), 0, "the second run got nothing from the bucket")


class MinIOBuildTests(_S3BuildTests):
    """
    go through cacheprog on MinIO, addressed with the C{minio+http://} scheme
    (path style whatever C{--s3-force-path-style} says).
    """

    server_class = MinIO
    endpoint_format = "minio+{endpoint}"
    path_style = False

    def test_minioSchemeWarmFromRemote(self) -> None:
        """
        C{minio+http://}: the first build gets the standard packages from the
        bucket and uploads the app; the rebuild after wiping the local root
        runs no compiler.
        """
        self.warmFromRemote()

    def test_excludeAcceptEncodingFromSigning(self) -> None:
        """
        C{Accept-Encoding} sent unsigned: see L{_S3BuildTests.excludeAcceptEncoding}.
        """
        self.excludeAcceptEncoding()


class StdioHalfCloseTests(TestCase):
    """
    Regression tests for a hang found through golangci-lint (see
    L{SeaweedFSBuildTests.test_golangciLint}), fixed in C{CacheProtocol}.

    When the go command exits without a close request (C{go list} does),
    the kernel closes both of its pipe ends to cacheprog at once.  If
    cacheprog notices its stdout end gone first (Twisted's StandardIO
    reports it through C{writeConnectionLost}), C{CacheProtocol} starts
    its end (C{_end}: which pauses stdin), finishes, and calls
    C{loseConnection}; StandardIO then waits for the stdin reader to be lost
    too, which never happens (it is paused, the EOF is never read), so
    C{done} never fires and the process never exits.  The stray process
    keeps go's stderr open: golangci-lint (x/tools' gocommand) fails with
    "WaitDelay expired before I/O complete" after 30 s.

    Input: handshake, one get answered, the reader closes its end of
    cacheprog's stdout, then its end of stdin.  Expected: exit 0 within
    seconds.  Before the fix: the process slept forever (reactor idle, no
    timer, stdin not watched).
    """

    def converse_then_vanish(self, pause: float) -> subprocess.Popen[bytes]:
        base = tempfile.mkdtemp(prefix="cacheprog-halfclose-")
        self.addCleanup(_rmtree, base)
        env = clean_environ()
        env["PYTHONPATH"] = REPO
        errors = open(os.path.join(base, "stderr"), "wb")  # noqa: SIM115 - closed by the cleanup
        self.addCleanup(errors.close)
        proc = subprocess.Popen(
            [*_program(), "--root-directory", os.path.join(base, "local")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            start_new_session=True,
        )
        self.addCleanup(_kill_group, proc)
        assert proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + 60
        out = b""
        while out.count(b"\n") < 1:
            out += _read_some(proc.stdout.fileno(), deadline)
        proc.stdin.write(
            json.dumps({"ID": 1, "Command": "get", "ActionID": base64.b64encode(b"a" * 32).decode()}).encode()
        )
        proc.stdin.write(b"\n\n")
        proc.stdin.flush()
        while out.count(b"\n") < 2:
            out += _read_some(proc.stdout.fileno(), deadline)
        self.assertIn(b'"ID":1', out)
        proc.stdout.close()
        time.sleep(pause)
        proc.stdin.close()
        return proc

    def assertExits(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            self.fail("cacheprog did not exit within 10 s after the go command went away (stdout first, then stdin)")
        self.assertEqual(code, 0)

    def test_stdoutThenStdinClosed(self) -> None:
        """
        The reader closes cacheprog's stdout, then (0.5 s later)
        its stdin: cacheprog must exit 0.
        """
        self.assertExits(self.converse_then_vanish(0.5))

    def test_bothClosedAtOnce(self) -> None:
        """
        Both ends closed at once (a go command exiting without
        close): cacheprog must exit 0.
        """
        self.assertExits(self.converse_then_vanish(0))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None and not stream.closed:
            stream.close()


# tools


def _go_env(go: str, *names: str) -> list[str]:
    done = subprocess.run(
        [go, "env", *names], capture_output=True, text=True, timeout=60, env=clean_environ(), check=True
    )
    return done.stdout.split()


class _Lint:
    path = ""
    skip = ""
    install_seconds: float | None = None


def golangci_lint() -> str:
    """
    The golangci-lint binary: C{<tools dir>/golangci-lint-<version>},
    installed there from the Go module proxy the first time.

    @raise SkipTest: it cannot be installed (with the reason).
    """
    if _Lint.skip:
        raise SkipTest(_Lint.skip)
    if _Lint.path:
        return _Lint.path
    target = tools_dir() / f"golangci-lint-{GOLANGCI_LINT_VERSION}"
    if not (target.is_file() and os.access(target, os.X_OK)):
        go = _Toolchain.require()
        _Lint.skip = _install_golangci_lint(go, str(target))
        if _Lint.skip:
            raise SkipTest(_Lint.skip)
    _Lint.path = str(target)
    return _Lint.path


def _install_golangci_lint(go: str, target: str) -> str:
    """
    C{go install} golangci-lint into a scratch GOBIN, then move it to
    C{target}.  Returns "" or the reason it failed.  Only the Go module
    proxy (and the checksum database through it) is contacted.
    """
    gobin = tempfile.mkdtemp(prefix="golangci-lint-gobin-")
    try:
        env = clean_environ()
        env.update(
            GOBIN=gobin,
            GOTOOLCHAIN="local",
            GOFLAGS="",
            GOPROXY="https://proxy.golang.org",
            GO111MODULE="on",
            CGO_ENABLED="0",
            GOTELEMETRY="off",
        )
        began = time.monotonic()
        argv = [go, "install", f"{GOLANGCI_LINT_MODULE}@{GOLANGCI_LINT_VERSION}"]
        try:
            done, _ = Command(argv, gobin, env, GOLANGCI_LINT_INSTALL_TIMEOUT).wait()
        except AssertionError as e:
            return f"golangci-lint {GOLANGCI_LINT_VERSION} could not be installed: {str(e)[:1500]}"
        _Lint.install_seconds = time.monotonic() - began
        built = os.path.join(gobin, "golangci-lint")
        if done.code != 0 or not os.path.isfile(built):
            return (
                f"golangci-lint {GOLANGCI_LINT_VERSION} could not be installed "
                f"(go install, {_Lint.install_seconds:.0f}s, exit {done.code}): {done.stderr[-1500:]}"
            )
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(built, target + ".tmp")
        os.replace(target + ".tmp", target)
        print(f"\ngolangci-lint {GOLANGCI_LINT_VERSION} installed in {_Lint.install_seconds:.0f}s: {target}")
        return ""
    finally:
        _rmtree(gobin)

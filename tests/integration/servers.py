"""Real S3 servers (and a fault-injecting TCP proxy) for integration tests.

Test infrastructure only: plain ``subprocess`` plus polling, no reactor.

Every server:

* listens on 127.0.0.1 only, on free ports picked at ``start()``;
* keeps its data and its log under the ``workdir`` given to the constructor
  (``<workdir>/<kind>/``);
* is started in a new session (its own process group), so ``stop()`` can
  signal the whole group; on Linux it also gets ``PR_SET_PDEATHSIG`` =
  SIGKILL, so it dies with the test runner even if the runner is killed;
  an ``atexit`` hook stops whatever is still running at interpreter exit.

Usage::

    server = SeaweedFS(self.mktemp())
    server.start()
    self.addCleanup(server.stop)
    server.create_bucket("cache")
    client = server.client()          # botocore, path-style, SigV4

Tests skip with ``unavailable_reason(SeaweedFS)`` when a binary is missing.
Binaries are looked up by ``find_tool``: ``$CACHEPROG_TOOLS_DIR`` (default
``~/.cache/cacheprog-tools/bin``, filled by ``.ci/install-servers.sh``), then
the directory of the running Python (pip-installed ``weed``), then ``PATH``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

__all__ = [
    "LOCALHOST",
    "ManagedProcess",
    "MinIO",
    "MotoServer",
    "Proxy",
    "S3Server",
    "SeaweedFS",
    "ServerStartError",
    "Toxiproxy",
    "ToxiproxyError",
    "find_tool",
    "free_port",
    "iter_server_classes",
    "tools_dir",
    "unavailable_reason",
]

LOCALHOST = "127.0.0.1"
DEFAULT_REGION = "us-east-1"
_LOG_TAIL_BYTES = 6000


# --------------------------------------------------------------------------
# tools


def tools_dir() -> Path:
    """Where ``.ci/install-servers.sh`` puts the binaries (its GOBIN)."""
    configured = os.environ.get("CACHEPROG_TOOLS_DIR")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "cacheprog-tools" / "bin"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_tool(name: str) -> str | None:
    """Path of executable ``name``: tools dir, then Python's bin dir, then PATH."""
    for directory in (tools_dir(), Path(sys.executable).parent):
        candidate = directory / name
        if _is_executable(candidate):
            return str(candidate)
    return shutil.which(name)


def _first_tool(names: Sequence[str]) -> str | None:
    for name in names:
        found = find_tool(name)
        if found is not None:
            return found
    return None


def unavailable_reason(cls: type[ManagedProcess]) -> str | None:
    """``None`` if ``cls`` can be started here, else a reason to skip a test."""
    return cls.unavailable_reason()


# --------------------------------------------------------------------------
# ports


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that was free a moment ago (the usual small race applies)."""
    return _free_ports(1, host)[0]


def _free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """``count`` distinct ports, all reserved at once so they differ."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_is_free(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port_pair(offset: int, avoid: Sequence[int] = ()) -> int:
    """A free port ``p`` such that ``p + offset`` is free too."""
    for _ in range(200):
        port = free_port()
        if port + offset > 65535 or port in avoid or port + offset in avoid:
            continue
        if _port_is_free(port + offset):
            return port
    raise RuntimeError(f"no free port pair (p, p+{offset}) found on {LOCALHOST}")


# --------------------------------------------------------------------------
# process management

_live_lock = threading.Lock()
_live: dict[int, ManagedProcess] = {}


def _stop_all_at_exit() -> None:
    with _live_lock:
        servers = list(_live.values())
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all_at_exit)

_PR_SET_PDEATHSIG = 1
_libc: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when we die (Linux).

    The death signal follows the *thread* that forked, so it is only used
    when starting from the main thread.
    """
    if _libc is None or threading.current_thread() is not threading.main_thread():
        return None
    libc = _libc

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # parent already gone
            os._exit(1)

    return preexec


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET, or None if nothing answered."""
    request = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


class ServerStartError(RuntimeError):
    """A server did not become ready in time (message has its log tail)."""


class ManagedProcess:
    """A server subprocess with a bounded ``start()`` and a safe ``stop()``.

    Subclasses set ``kind`` and ``tools`` and implement ``_command`` (argv and
    extra environment, after picking ports) and ``_ready`` (one poll).
    """

    kind: ClassVar[str] = "server"
    #: Each entry is a list of acceptable executable names for one tool.
    tools: ClassVar[tuple[tuple[str, ...], ...]] = ()
    #: Python modules that must be importable.
    python_modules: ClassVar[tuple[str, ...]] = ()
    #: How often start() retries with fresh ports after a bind race.
    _start_attempts: ClassVar[int] = 3

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir).absolute() / self.kind
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.host = LOCALHOST
        self.port = 0
        #: Wall-clock seconds the last successful start() took.
        self.start_seconds: float | None = None
        self.log_path = self.workdir / f"{self.kind}.log"
        self.argv: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._lock = threading.RLock()

    # -- class-level availability ------------------------------------------

    @classmethod
    def unavailable_reason(cls) -> str | None:
        for names in cls.tools:
            if _first_tool(names) is None:
                return (
                    f"{cls.__name__}: executable {' or '.join(repr(n) for n in names)} "
                    f"not found in {tools_dir()}, {Path(sys.executable).parent} or PATH "
                    "(run .ci/install-servers.sh)"
                )
        for module in cls.python_modules:
            try:
                spec = importlib.util.find_spec(module)
            except (ImportError, ValueError):
                spec = None
            if spec is None:
                return f"{cls.__name__}: Python module {module!r} is not installed"
        return None

    @classmethod
    def _tool(cls, index: int = 0) -> str:
        names = cls.tools[index]
        found = _first_tool(names)
        if found is None:
            raise ServerStartError(cls.unavailable_reason() or f"{names} not found")
        return found

    # -- subclass hooks ----------------------------------------------------

    def _command(self) -> tuple[list[str], Mapping[str, str]]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _after_stop(self) -> None:
        """Clean-up after the process group is gone (files outside workdir)."""

    # -- public API --------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        process = self._process
        return process is not None and process.poll() is None

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def start(self) -> None:
        """Start and wait until ready, or raise ``ServerStartError``."""
        with self._lock:
            if self._process is not None:
                raise RuntimeError(f"{self.kind} already started")
            self.workdir.mkdir(parents=True, exist_ok=True)
            began = time.monotonic()
            last_error: ServerStartError | None = None
            for _attempt in range(self._start_attempts):
                try:
                    self._start_once()
                except ServerStartError as error:
                    last_error = error
                    if not self._bind_race():
                        raise
                    continue
                self.start_seconds = time.monotonic() - began
                return
            assert last_error is not None
            raise last_error

    def stop(self) -> None:
        """Terminate the process group, kill it if needed. Safe to repeat."""
        with self._lock:
            process = self._process
            if process is None:
                return
            self._process = None
            try:
                pgid = process.pid
                if process.poll() is None:
                    _signal_group(pgid, signal.SIGTERM)
                    try:
                        process.wait(timeout=self.stop_timeout)
                    except subprocess.TimeoutExpired:
                        _signal_group(pgid, signal.SIGKILL)
                        process.wait(timeout=self.stop_timeout)
                # Leftover children in the group (if any) go too.
                _signal_group(pgid, signal.SIGKILL)
            finally:
                with _live_lock:
                    _live.pop(id(self), None)
                if self._log_file is not None:
                    self._log_file.close()
                    self._log_file = None
                with contextlib.suppress(Exception):
                    self._after_stop()

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - max_bytes))
                data = log.read()
        except OSError:
            return "(no log)"
        return data.decode("utf-8", "replace")

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.endpoint} {state}>"

    # -- internals ---------------------------------------------------------

    def _start_once(self) -> None:
        argv, extra_env = self._command()
        self.argv = argv
        env = dict(os.environ)
        env.update(extra_env)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        log_file.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        log_file.flush()
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as error:
            log_file.close()
            raise ServerStartError(f"{self.kind}: cannot run {argv[0]}: {error}") from error
        self._process = process
        self._log_file = log_file
        with _live_lock:
            _live[id(self)] = self
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = process.poll()
            if code is not None:
                self.stop()
                raise ServerStartError(
                    f"{self.kind} exited with code {code} before it was ready\n"
                    f"command: {' '.join(argv)}\n"
                    f"--- tail of {self.log_path} ---\n{self.log_tail()}"
                )
            try:
                if self._ready():
                    return
            except Exception:  # noqa: BLE001 - not ready yet, whatever it was
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.kind} not ready after {self.start_timeout:.0f}s\n"
                    f"command: {' '.join(argv)}\n"
                    f"--- tail of {self.log_path} ---\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _bind_race(self) -> bool:
        tail = self.log_tail(2000).lower()
        return "address already in use" in tail or "bind:" in tail


# --------------------------------------------------------------------------
# S3 servers


class S3Server(ManagedProcess):
    """An S3-compatible server: ``endpoint``, credentials and botocore helpers."""

    #: Whether the server rejects a request signed with a wrong secret.
    checks_signatures: ClassVar[bool] = True
    python_modules: ClassVar[tuple[str, ...]] = ("botocore",)

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = DEFAULT_REGION,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(workdir, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.access_key = access_key or f"cacheprog{secrets.token_hex(4)}"
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.region = region

    def client(
        self,
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        addressing_style: str = "path",
        retries: int = 0,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> Any:
        """A synchronous botocore S3 client (SigV4) for this server.

        ``endpoint_url`` lets a test go through a proxy (e.g. Toxiproxy).
        """
        import botocore.session
        from botocore.config import Config

        session = botocore.session.get_session()
        return session.create_client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": addressing_style},
                retries={"total_max_attempts": retries + 1, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            ),
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (path-style request); returns the name."""
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region != DEFAULT_REGION:
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        client = self.client(retries=2)
        try:
            client.create_bucket(**kwargs)
        finally:
            client.close()
        return name

    def _signed_list_buckets_ok(self) -> bool:
        client = self.client(connect_timeout=1.0, read_timeout=2.0)
        try:
            client.list_buckets()
        finally:
            client.close()
        return True


_WEED_FLAG = re.compile(r"^\s+-([A-Za-z0-9_.]+)", re.MULTILINE)
_weed_flags_cache: dict[str, frozenset[str]] = {}


def _weed_mini_flags(weed: str) -> frozenset[str]:
    """Flags that this ``weed mini`` accepts (parsed from its help once)."""
    cached = _weed_flags_cache.get(weed)
    if cached is None:
        result = subprocess.run(
            [weed, "mini", "-h"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        text = (result.stdout + result.stderr).decode("utf-8", "replace")
        cached = frozenset(_WEED_FLAG.findall(text))
        _weed_flags_cache[weed] = cached
    return cached


class SeaweedFS(S3Server):
    """``weed mini`` (master, volume, filer, S3, admin in one process).

    All listeners on 127.0.0.1 with free ports; telemetry, WebDAV, Iceberg and
    Lance endpoints off. S3 auth comes from an identity file
    (``<workdir>/seaweedfs/s3.json``) with one admin identity, so SigV4
    signatures are checked. ``-s3.domainName=localhost`` enables
    virtual-host style for ``Host: <bucket>.localhost:<port>``.
    """

    kind: ClassVar[str] = "seaweedfs"
    tools: ClassVar[tuple[tuple[str, ...], ...]] = (("weed",),)
    domain_name: ClassVar[str] = "localhost"

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = DEFAULT_REGION,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            workdir,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.ports: dict[str, int] = {}
        self.data_dir = self.workdir / "data"
        self.s3_config_path = self.workdir / "s3.json"

    def _command(self) -> tuple[list[str], Mapping[str, str]]:
        weed = self._tool()
        supported = _weed_mini_flags(weed)
        names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
        ]
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        # The mini's maintenance worker dials admin.port + 10000 whatever
        # admin.port.grpc says, so keep the pair consistent and free.
        admin = _free_port_pair(10000, avoid=list(ports.values()))
        ports["admin.port"] = admin
        ports["admin.port.grpc"] = admin + 10000
        self.ports = ports
        self.port = ports["s3.port"]

        self.data_dir.mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "cacheprog",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.s3_config_path.write_text(json.dumps(identities, indent=2))

        options: list[tuple[str, str]] = [
            ("dir", str(self.data_dir)),
            ("ip", LOCALHOST),
            ("ip.bind", LOCALHOST),
            ("master.telemetry", "false"),
            *((name, str(port)) for name, port in ports.items()),
            ("s3.config", str(self.s3_config_path)),
            ("s3.domainName", self.domain_name),
            ("s3.port.iceberg", "0"),
            ("s3.port.lance", "0"),
            ("webdav", "false"),
            ("admin.ui", "false"),
            # Stop fast: no grace period before the volume server goes down.
            ("volume.preStopSeconds", "0"),
        ]
        required = {"dir", "ip", "ip.bind", "s3.config", "master.telemetry", *ports}
        argv = [weed, "mini"]
        for name, value in options:
            if name in supported or name in required or not supported:
                argv.append(f"-{name}={value}")
        return argv, {}

    def _ready(self) -> bool:
        if _http_status(self.endpoint + "/", timeout=1.0) is None:
            return False
        return self._signed_list_buckets_ok()

    def _after_stop(self) -> None:
        # weed leaves /tmp/seaweedfs-<component>-<port>.sock behind.
        tmp = Path("/tmp")
        for port in self.ports.values():
            for path in tmp.glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    path.unlink()


class MinIO(S3Server):
    """``minio server`` with one local drive under ``<workdir>/minio/data``.

    Credentials go to the process as MINIO_ROOT_USER / MINIO_ROOT_PASSWORD;
    by default they are taken from those variables in our environment if
    set, else generated. Update checks and call-home are switched off.
    """

    kind: ClassVar[str] = "minio"
    tools: ClassVar[tuple[tuple[str, ...], ...]] = (("minio",),)
    domain_name: ClassVar[str] = "localhost"

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = DEFAULT_REGION,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            workdir,
            access_key=access_key or os.environ.get("MINIO_ROOT_USER"),
            secret_key=secret_key or os.environ.get("MINIO_ROOT_PASSWORD"),
            region=region,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.console_port = 0
        self.data_dir = self.workdir / "data"

    @property
    def console_endpoint(self) -> str:
        return f"http://{self.host}:{self.console_port}"

    def _command(self) -> tuple[list[str], Mapping[str, str]]:
        minio = self._tool()
        self.port, self.console_port = _free_ports(2)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        argv = [
            minio,
            "server",
            "--address",
            f"{LOCALHOST}:{self.port}",
            "--console-address",
            f"{LOCALHOST}:{self.console_port}",
            "--certs-dir",
            str(certs),
            str(self.data_dir),
        ]
        env = {
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_UPDATE": "off",
            "MINIO_CALLHOME_ENABLE": "off",
            # Virtual-host style for Host: <bucket>.localhost:<port>.
            "MINIO_DOMAIN": self.domain_name,
        }
        if self.region != DEFAULT_REGION:
            env["MINIO_SITE_REGION"] = self.region
        return argv, env

    def _ready(self) -> bool:
        return _http_status(self.endpoint + "/minio/health/ready", timeout=1.0) == 200


class MotoServer(S3Server):
    """``python -m moto.server`` (pure Python, quick). Signatures NOT checked.

    Served by werkzeug's development server, which drops request headers
    whose names contain ``_`` (so ``x-amz-meta-output_id`` is lost).
    """

    kind: ClassVar[str] = "moto"
    checks_signatures: ClassVar[bool] = False
    python_modules: ClassVar[tuple[str, ...]] = ("botocore", "moto.server", "flask", "flask_cors", "werkzeug")

    def _command(self) -> tuple[list[str], Mapping[str, str]]:
        self.port = free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(self.port)]
        return argv, {"PYTHONUNBUFFERED": "1"}

    def _ready(self) -> bool:
        return _http_status(self.endpoint + "/moto-api/", timeout=1.0) == 200


# --------------------------------------------------------------------------
# Toxiproxy


class ToxiproxyError(RuntimeError):
    """The Toxiproxy API answered with an error."""


@dataclass(frozen=True)
class Proxy:
    """One Toxiproxy proxy, as the API describes it."""

    name: str
    listen: str
    upstream: str
    enabled: bool

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<listen port>``: point a client here."""
        return f"http://{LOCALHOST}:{self.port}"


def _upstream_address(upstream: str) -> str:
    """``host:port`` from ``host:port`` or an ``http://host:port`` URL."""
    if "://" in upstream:
        upstream = upstream.split("://", 1)[1]
    return upstream.rstrip("/")


class Toxiproxy(ManagedProcess):
    """``toxiproxy-server`` with its API on 127.0.0.1 and a small client.

    ``endpoint`` is the API URL. Proxies always listen on 127.0.0.1; a toxic
    applies to the ``downstream`` (server to client) direction by default.
    """

    kind: ClassVar[str] = "toxiproxy"
    tools: ClassVar[tuple[tuple[str, ...], ...]] = (("toxiproxy-server", "toxiproxy"),)

    def _command(self) -> tuple[list[str], Mapping[str, str]]:
        server = self._tool()
        self.port = free_port()
        return [server, "-host", LOCALHOST, "-port", str(self.port)], {}

    def _ready(self) -> bool:
        return _http_status(self.endpoint + "/version", timeout=1.0) == 200

    # -- API ---------------------------------------------------------------

    def api(self, method: str, path: str, body: object | None = None) -> Any:
        """One JSON call to the Toxiproxy API; returns the decoded answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.endpoint + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise ToxiproxyError(f"{method} {path}: HTTP {error.code}: {detail}") from error
        if not raw.strip():
            return None
        return json.loads(raw)

    @staticmethod
    def _proxy(answer: Mapping[str, Any]) -> Proxy:
        return Proxy(
            name=str(answer["name"]),
            listen=str(answer["listen"]),
            upstream=str(answer["upstream"]),
            enabled=bool(answer["enabled"]),
        )

    def create_proxy(self, name: str, upstream: str, listen_port: int = 0) -> Proxy:
        """Proxy 127.0.0.1:``listen_port`` (0 = any free) to ``upstream``.

        ``upstream`` is ``host:port`` or a URL such as a server's ``endpoint``.
        """
        answer = self.api(
            "POST",
            "/proxies",
            {
                "name": name,
                "listen": f"{LOCALHOST}:{listen_port}",
                "upstream": _upstream_address(upstream),
                "enabled": True,
            },
        )
        return self._proxy(answer)

    def get_proxy(self, name: str) -> Proxy:
        return self._proxy(self.api("GET", f"/proxies/{name}"))

    def proxies(self) -> dict[str, Proxy]:
        answer = self.api("GET", "/proxies")
        return {name: self._proxy(value) for name, value in answer.items()}

    def delete_proxy(self, name: str) -> None:
        self.api("DELETE", f"/proxies/{name}")

    def set_enabled(self, name: str, enabled: bool) -> Proxy:
        """Disabling closes open connections and refuses new ones."""
        return self._proxy(self.api("POST", f"/proxies/{name}", {"enabled": enabled}))

    def disable(self, name: str) -> Proxy:
        return self.set_enabled(name, False)

    def enable(self, name: str) -> Proxy:
        return self.set_enabled(name, True)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self.api("POST", "/reset")

    def add_toxic(
        self,
        proxy: str,
        toxic_type: str,
        attributes: Mapping[str, Any],
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
    ) -> str:
        """Add a toxic; returns its name (default ``<type>_<stream>``)."""
        toxic_name = name or f"{toxic_type}_{stream}"
        self.api(
            "POST",
            f"/proxies/{proxy}/toxics",
            {
                "name": toxic_name,
                "type": toxic_type,
                "stream": stream,
                "toxicity": toxicity,
                "attributes": dict(attributes),
            },
        )
        return toxic_name

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        answer = self.api("GET", f"/proxies/{proxy}/toxics")
        return list(answer or [])

    def remove_toxic(self, proxy: str, toxic_name: str) -> None:
        self.api("DELETE", f"/proxies/{proxy}/toxics/{toxic_name}")

    def add_latency(self, proxy: str, latency_ms: int, jitter_ms: int = 0, *, stream: str = "downstream") -> str:
        """Delay data by ``latency_ms`` ± ``jitter_ms``."""
        return self.add_toxic(proxy, "latency", {"latency": latency_ms, "jitter": jitter_ms}, stream=stream)

    def add_reset_peer(self, proxy: str, timeout_ms: int = 0, *, stream: str = "downstream") -> str:
        """Reset connections (TCP RST) after ``timeout_ms`` (0 = at once)."""
        return self.add_toxic(proxy, "reset_peer", {"timeout": timeout_ms}, stream=stream)

    def add_timeout(self, proxy: str, timeout_ms: int = 0, *, stream: str = "downstream") -> str:
        """Stop all data; close after ``timeout_ms`` (0 = hold forever)."""
        return self.add_toxic(proxy, "timeout", {"timeout": timeout_ms}, stream=stream)

    def add_bandwidth(self, proxy: str, rate_kbps: int, *, stream: str = "downstream") -> str:
        """Limit throughput to ``rate_kbps`` KB/s."""
        return self.add_toxic(proxy, "bandwidth", {"rate": rate_kbps}, stream=stream)


def iter_server_classes() -> Iterator[type[S3Server]]:
    """The S3 server classes, fastest first."""
    yield MotoServer
    yield SeaweedFS
    yield MinIO

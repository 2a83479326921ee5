"""
The one-file binary (C{dist/cacheprog}) in an image-like root, without Docker.

The binary is built with C{make binary} when it is missing or older than its
sources; C{CACHEPROG_SKIP_BINARY=1} skips every test here instead.

The root holds exactly what the final C{FROM scratch} stage of
C{Dockerfile.scratch} copies, read from its COPY, ENV and ENTRYPOINT lines so
that the two cannot drift apart, plus what a container runtime adds when it
starts a container: C{/proc}, a few devices in C{/dev}, C{/etc/hosts} and
C{/etc/resolv.conf}.  The
binary runs there through a wrapper script (C{unshare --mount}, mount proc,
C{chroot}; root needed, else the tests skip) with the work directory
bind-mounted at its own absolute path, so that the go command outside reads
the DiskPaths that cacheprog inside returns.

Checked: the handshake, C{--version}, two C{go build -x} of a tiny module with
the wrapper as GOCACHEPROG (the second, with an empty GOCACHE, runs no
compiler), and TLS host name verification (S3 backend, a local HTTPS server
whose certificate names only "localhost").

Nothing leaves the machine: the root's resolver points at 127.0.0.1, every
name used is in its /etc/hosts, and go runs with GOPROXY=off.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BINARY = os.path.join(REPO, "dist", "cacheprog")
DOCKERFILE = os.path.join(REPO, "Dockerfile.scratch")

#: What the binary is built from: newer than the binary means rebuild.
SOURCE_DIRECTORIES = ("cacheprog",)
SOURCE_FILES = (
    "build/nuitka.cfg",
    "scripts/build_binary.py",
    "build/nuitka_onefile_cache.py",
    "setup.py",
)

BUILD_TIMEOUT = 3600.0
GO_TIMEOUT = 900.0
RUN_TIMEOUT = 120.0

#: Names in the root's /etc/hosts: "localhost" is on the test certificate,
#: the other name is not.
OTHER_NAME = "cacheprog-other.test"
HOSTS = f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t{OTHER_NAME}\n"

#: Devices a container runtime provides in /dev (Twisted's listening port
#: keeps /dev/null open to survive running out of descriptors).
RUNTIME_DEVICES = ("null", "zero", "full", "random", "urandom")

#: Environment a container runtime sets when the image does not.
RUNTIME_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"}


# the binary


def _newest_source() -> tuple[float, str]:
    newest = (0.0, "")
    paths = [os.path.join(REPO, name) for name in SOURCE_FILES]
    for top in SOURCE_DIRECTORIES:
        for directory, _, names in os.walk(os.path.join(REPO, top)):
            paths.extend(os.path.join(directory, n) for n in names if n.endswith(".py"))
    for path in paths:
        if os.path.exists(path):
            newest = max(newest, (os.path.getmtime(path), os.path.relpath(path, REPO)))
    return newest


def stale_reason() -> str:
    """
    Why C{dist/cacheprog} must be (re)built, or C{""}.
    """
    if not os.path.exists(BINARY):
        return "dist/cacheprog does not exist"
    mtime, path = _newest_source()
    if mtime > os.path.getmtime(BINARY):
        return f"{path} is newer than dist/cacheprog"
    return ""


class _Binary:
    """
    The binary, built at most once per test run.
    """

    checked = False
    problem = ""

    @classmethod
    def require(cls) -> str:
        if os.environ.get("CACHEPROG_SKIP_BINARY") == "1":
            raise SkipTest("CACHEPROG_SKIP_BINARY=1: dist/cacheprog is neither built nor tested")
        if not cls.checked:
            cls.checked = True
            reason = stale_reason()
            if reason:
                cls.problem = cls._build(reason)
        if cls.problem:
            raise AssertionError(cls.problem)
        return BINARY

    @staticmethod
    def _build(reason: str) -> str:
        log = os.path.abspath("make-binary.log")
        with open(log, "wb") as out:
            out.write(f"# {reason}: make binary\n".encode())
            out.flush()
            try:
                done = subprocess.run(
                    ["make", "binary", f"PYTHON={sys.executable}"],
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT,
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"make binary ({reason}) did not finish: {e}; log: {log}"
        if done.returncode != 0 or not os.path.exists(BINARY):
            with open(log, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-4000:]
            return f"make binary ({reason}) failed with exit status {done.returncode}; {log} ends:\n{tail}"
        return ""


# Dockerfile.scratch


@dataclass
class Copy:
    """
    One C{COPY} of the final stage.
    """

    source: str
    target: str
    stage: str = ""
    chmod: int | None = None


@dataclass
class ScratchImage:
    """
    The final C{FROM scratch} stage of a Dockerfile, and the work directory
    of the stage its files come from.
    """

    copies: list[Copy] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    workdirs: dict[str, str] = field(default_factory=dict)


def _instructions(text: str) -> list[tuple[str, str]]:
    """
    (INSTRUCTION, arguments) pairs: comments dropped, continuations joined.
    """
    result = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def parse_dockerfile(text: str) -> ScratchImage:
    """
    The final stage of a multi-stage Dockerfile, which must be C{FROM scratch}
    with one path per C{COPY}.

    @raise ValueError: for anything this test cannot reproduce.
    """
    image = ScratchImage()
    stage = ""
    base = ""
    for instruction, args in _instructions(text):
        if instruction == "FROM":
            words = args.split()
            base = words[0]
            stage = words[2] if len(words) == 3 and words[1].lower() == "as" else str(len(image.workdirs))
            image = ScratchImage(workdirs=image.workdirs)
            image.workdirs[stage] = "/"
        elif instruction == "WORKDIR":
            image.workdirs[stage] = os.path.join(image.workdirs[stage], args)
        elif base != "scratch":
            continue
        elif instruction == "COPY":
            words = shlex.split(args)
            flags = {}
            while words and words[0].startswith("--"):
                name, _, value = words.pop(0)[2:].partition("=")
                flags[name] = value
            if len(words) != 2 or set(flags) - {"from", "chmod", "link"}:
                raise ValueError(f"COPY {args}: need --from=STAGE [--chmod=MODE] SOURCE TARGET")
            chmod = int(flags["chmod"], 8) if "chmod" in flags else None
            image.copies.append(Copy(words[0], words[1], flags.get("from", ""), chmod))
        elif instruction == "ENV":
            for word in shlex.split(args):
                name, sep, value = word.partition("=")
                if not sep:
                    raise ValueError(f"ENV {args}: use ENV NAME=VALUE")
                image.env[name] = value
        elif instruction == "ENTRYPOINT":
            image.entrypoint = json.loads(args)
        elif instruction not in ("CMD", "LABEL", "EXPOSE", "USER", "STOPSIGNAL"):
            raise ValueError(f"{instruction} in the scratch stage: cannot be reproduced here")
    if base != "scratch" or not image.entrypoint:
        raise ValueError("the last stage must be FROM scratch with an ENTRYPOINT")
    return image


def populate(image: ScratchImage, root: str) -> list[str]:
    """
    Make C{root} hold what the image's COPY lines copy: files from the build
    stage's work directory come from this checkout (C{dist/cacheprog}),
    every other file from the same path on this machine (symbolic links
    followed, as COPY does); a source ending in C{/} is an empty directory.

    @return: the targets, for messages.
    """
    targets = []
    for copy in image.copies:
        target = root + copy.target
        os.makedirs(os.path.dirname(target.rstrip("/")), exist_ok=True)
        workdir = image.workdirs.get(copy.stage, "/")
        if copy.source.endswith("/"):
            os.makedirs(target, exist_ok=True)
            os.chmod(target, copy.chmod if copy.chmod is not None else stat.S_IMODE(os.stat(copy.source).st_mode))
        else:
            source = copy.source
            if workdir != "/" and source.startswith(workdir.rstrip("/") + "/"):
                source = os.path.join(REPO, os.path.relpath(source, workdir))
            if not os.path.isfile(source):
                raise AssertionError(f"{DOCKERFILE} copies {copy.source}, which is not a file here ({source})")
            shutil.copy2(source, target)
            if copy.chmod is not None:
                os.chmod(target, copy.chmod)
        targets.append(copy.target)
    return targets


# the root and the wrapper


def _which(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not found:
        raise SkipTest(f"{name} is not installed")
    return found


class Scratch:
    """
    One image-like root for the whole module: C{<base>/root}, and the work
    directory C{<base>/work} that is mounted at the same path inside.
    """

    _instance: Scratch | None = None
    _skip = ""

    def __init__(self, image: ScratchImage) -> None:
        self.image = image
        self.base = tempfile.mkdtemp(prefix="cacheprog-scratch-")
        atexit.register(shutil.rmtree, self.base, True)
        self.root = os.path.join(self.base, "root")
        self.work = os.path.join(self.base, "work")
        os.makedirs(self.work)
        self.copied = populate(image, self.root)
        # What a container runtime adds when it starts the container.
        for directory in ("proc", "dev", self.work.lstrip("/")):
            os.makedirs(os.path.join(self.root, directory), exist_ok=True)
        for device in RUNTIME_DEVICES:
            open(os.path.join(self.root, "dev", device), "w").close()
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")):
            os.symlink(target, os.path.join(self.root, "dev", name))
        os.symlink("/proc/self/fd/2", os.path.join(self.root, "dev", "stderr"))
        os.makedirs(os.path.join(self.root, "etc"), exist_ok=True)
        with open(os.path.join(self.root, "etc", "hosts"), "w") as f:
            f.write(HOSTS)
        with open(os.path.join(self.root, "etc", "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.1\n")
        self.unshare = _which("unshare")
        self.mount = _which("mount")
        self.chroot = _which("chroot")
        self.env = _which("env")
        self._wrappers = 0

    @classmethod
    def require(cls) -> Scratch:
        _Binary.require()
        if cls._skip:
            raise SkipTest(cls._skip)
        if cls._instance is None:
            cls._skip = _sandbox_problem()
            if cls._skip:
                raise SkipTest(cls._skip)
            with open(DOCKERFILE, encoding="utf-8") as f:
                cls._instance = Scratch(parse_dockerfile(f.read()))
        return cls._instance

    def wrapper(self, environ: Mapping[str, str] | None = None) -> str:
        """
        A script that runs the image's entry point in the root with the
        image's environment plus C{environ} (and nothing of the caller's),
        passing its arguments on; usable as GOCACHEPROG.
        """
        self._wrappers += 1
        path = os.path.join(self.base, f"cacheprog-{self._wrappers}.sh")
        env = {**RUNTIME_ENV, **self.image.env, **(environ or {})}
        assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        q = shlex.quote
        script = f"""#!/bin/sh
# The scratch image's entry point, as a container runtime would start it:
# a private mount namespace, /proc, /dev/null & co., the work directory at
# its own path.
set -eu
if [ "${{CACHEPROG_SCRATCH_NS:-}}" != 1 ]; then
    CACHEPROG_SCRATCH_NS=1 exec {q(self.unshare)} --mount --propagation private -- /bin/sh "$0" "$@"
fi
{q(self.mount)} -t proc proc {q(self.root + "/proc")}
{q(self.mount)} --bind {q(self.work)} {q(self.root + self.work)}
for device in {" ".join(RUNTIME_DEVICES)}; do
    {q(self.mount)} --bind "/dev/$device" {q(self.root)}"/dev/$device"
done
exec {q(self.env)} -i {assignments} {q(self.chroot)} {q(self.root)} {" ".join(map(q, self.image.entrypoint))} "$@"
"""
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, 0o755)
        return path

    def workdir(self) -> str:
        """
        A new directory under the mounted work directory.
        """
        return tempfile.mkdtemp(dir=self.work)


def _sandbox_problem() -> str:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: mount namespaces and chroot"
    try:
        done = subprocess.run(
            [_which("unshare"), "--mount", "--propagation", "private", "true"],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"unshare --mount does not work here: {e}"
    if done.returncode != 0:
        return f"unshare --mount does not work here: {done.stderr.decode(errors='replace').strip()}"
    return ""


# talking to the binary


@dataclass
class Conversation:
    responses: list[dict[str, Any]]
    stderr: str
    status: int
    handshake_seconds: float


def converse(command: list[str], requests: list[dict[str, Any]], timeout: float = RUN_TIMEOUT) -> Conversation:
    """
    Start C{command}, read the handshake, send each request and wait for its
    answer, close stdin, wait for the exit.
    """
    with tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdin is not None and proc.stdout is not None
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            responses = []
            line = proc.stdout.readline()
            handshake = time.monotonic() - start
            if line:
                responses.append(json.loads(line))
                for request in requests:
                    proc.stdin.write(json.dumps(request).encode() + b"\n")
                    proc.stdin.flush()
                    line = proc.stdout.readline()
                    if not line:
                        break
                    responses.append(json.loads(line))
            proc.stdin.close()
            rest = proc.stdout.read()
            responses.extend(json.loads(x) for x in rest.splitlines() if x.strip())
            status = proc.wait()
        finally:
            timer.cancel()
        err.seek(0)
        return Conversation(responses, err.read().decode(errors="replace"), status, handshake)


def _action_id(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


# TLS


def _certificates(directory: str) -> tuple[str, str, str]:
    """
    A test CA, and a certificate it issued for DNS name "localhost" only.

    @return: paths of the CA certificate, the server certificate, its key.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cacheprog test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tuple(os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key"))
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return paths  # type: ignore[return-value]


#: What STS answers to AssumeRoleWithWebIdentity (the parts botocore reads).
STS_ANSWER = b"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIAFROMSTS</AccessKeyId>
      <SecretAccessKey>secret-from-sts</SecretAccessKey>
      <SessionToken>token-from-sts</SessionToken>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
    </Credentials>
    <SubjectFromWebIdentityToken>test</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/cacheprog/test</Arn>
      <AssumedRoleId>AROATEST:test</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
"""


class _Recorder(BaseHTTPRequestHandler):
    """
    Records every request; answers STS's AssumeRoleWithWebIdentity with
    credentials and everything else 404 (an S3 miss).
    """

    server: _TLSServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        authorization = self.headers.get("Authorization") or ""
        self.server.requests.append(f"{self.command} {self.path} {authorization}".strip())
        answer = b""
        if b"Action=AssumeRoleWithWebIdentity" in body:
            self.send_response(200)
            answer = STS_ANSWER
            self.send_header("Content-Type", "text/xml")
        else:
            self.send_response(404)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_HEAD = do_PUT = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cert: str, key: str) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        # The handshake runs in the request's thread, failures are recorded.
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.requests: list[str] = []
        self.connections = 0
        self.failures: list[str] = []

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.failures.append(repr(sys.exc_info()[1]))


# the tests


class ScratchImageTests(TestCase):
    """
    The binary in a root holding only what Dockerfile.scratch copies.
    """

    timeout = GO_TIMEOUT * 3

    def setUp(self) -> None:
        self.scratch = Scratch.require()

    def test_dockerfile_copies(self) -> None:
        """
        The final stage copies the binary, CA certificates and a
        world-writable sticky /tmp, nothing else: the binary brings its C
        runtime.
        """
        image = self.scratch.image
        targets = [c.target.rstrip("/") for c in image.copies]
        self.assertEqual(image.entrypoint[0], "/cacheprog")
        self.assertEqual(sorted(targets), ["/cacheprog", "/etc/ssl/certs/ca-certificates.crt", "/tmp"])
        self.assertEqual(stat.S_IMODE(os.stat(self.scratch.root + "/tmp").st_mode), 0o1777)

    def test_handshake(self) -> None:
        """
        The handshake is the first stdout line; EOF ends the run with status 0.
        """
        work = self.scratch.workdir()
        run = converse([self.scratch.wrapper(), "--root-directory", os.path.join(work, "root")], [])
        self.assertEqual(run.status, 0, run.stderr)
        self.assertEqual(run.responses, [{"ID": 0, "KnownCommands": ["close", "get", "put"]}], run.stderr)
        self.assertIn("cacheprog statistics", run.stderr)

    def test_version(self) -> None:
        """
        C{--version} names the version and the Python it was built with.
        """
        done = subprocess.run(
            [self.scratch.wrapper(), "--version"], capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        from cacheprog import __version__

        self.assertIn(f"cacheprog version {__version__} built with Python 3.", done.stdout)

    def test_go_build_twice(self) -> None:
        """
        A tiny module built twice with the binary as GOCACHEPROG, the second
        time with an empty GOCACHE: everything comes from the cache, no
        compiler runs, and both programs work.
        """
        go = shutil.which("go")
        if go is None:
            raise SkipTest("no go command on PATH")
        work = self.scratch.workdir()
        module = os.path.join(work, "hello")
        os.makedirs(module)
        with open(os.path.join(module, "go.mod"), "w") as f:
            f.write("module example.com/hello\n\ngo 1.21\n")
        with open(os.path.join(module, "main.go"), "w") as f:
            f.write('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from scratch") }\n')
        gocacheprog = f"{self.scratch.wrapper()} --root-directory {os.path.join(work, 'cacheprog-root')}"
        runs = []
        for n in (1, 2):
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("GO", "CGO_", "CACHEPROG_")) and k != "PYTHONPATH"
            }
            env.update(
                GOCACHE=os.path.join(work, f"gocache{n}"),
                GOCACHEPROG=gocacheprog,
                GOPATH=os.path.join(work, "gopath"),
                GOPROXY="off",
                GOSUMDB="off",
                GOTOOLCHAIN="local",
                GOFLAGS="-mod=mod",
                GOTELEMETRY="off",
                CGO_ENABLED="0",
                HOME=work,
            )
            out = os.path.join(work, f"hello{n}")
            done = subprocess.run(
                [go, "build", "-x", "-o", out, "."],
                cwd=module,
                env=env,
                capture_output=True,
                text=True,
                timeout=GO_TIMEOUT,
            )
            self.assertEqual(done.returncode, 0, done.stderr[-6000:])
            ran = subprocess.run([out], capture_output=True, text=True, timeout=60)
            self.assertEqual(ran.stdout, "hello from scratch\n")
            runs.append(done.stderr)
        compiles = [re.findall(r"(?m)(?:^|\s)\S*/compile\s+-", stderr) for stderr in runs]
        self.assertGreater(len(compiles[0]), 0, runs[0][-6000:])
        self.assertEqual(compiles[1], [], runs[1][-6000:])

    def test_proxy(self) -> None:
        """
        C{cacheprog proxy} (memory backend) serves the HTTP storage
        contract: a PUT is stored, a GET returns it, an unknown key is 404;
        SIGTERM stops it with status 0.
        """
        import signal
        import socket
        import urllib.error
        import urllib.request

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [
                    self.scratch.wrapper(),
                    "proxy",
                    "--listen-address",
                    f"127.0.0.1:{port}",
                    "--remote-storage-type",
                    "memory",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            try:
                base = f"http://127.0.0.1:{port}/cache/"
                key = hashlib.sha256(b"proxy").hexdigest()
                deadline = time.monotonic() + RUN_TIMEOUT
                while True:
                    try:
                        urllib.request.urlopen(base + "00" * 32, timeout=10)
                    except urllib.error.HTTPError as e:
                        self.assertEqual(e.code, 404)
                        break
                    except OSError:
                        if proc.poll() is not None or time.monotonic() > deadline:
                            err.seek(0)
                            self.fail(f"the proxy did not answer:\n{err.read().decode(errors='replace')}")
                        time.sleep(0.2)
                body = b"hello proxy"
                headers = {
                    "X-Cacheprog-OutputID": hashlib.sha256(body).hexdigest(),
                    "X-Cacheprog-MD5Sum": hashlib.md5(body).hexdigest(),
                    "X-Cacheprog-Sha256Sum": hashlib.sha256(body).hexdigest(),
                    "X-Cacheprog-CompressionAlgorithm": "",
                    "X-Cacheprog-UncompressedSize": str(len(body)),
                }
                put = urllib.request.Request(base + key, data=body, method="PUT", headers=headers)
                with urllib.request.urlopen(put, timeout=30) as answer:
                    self.assertIn(answer.status, (200, 201, 204))
                with urllib.request.urlopen(base + key, timeout=30) as answer:
                    self.assertEqual(answer.read(), body)
            finally:
                proc.send_signal(signal.SIGTERM)
                status = proc.wait(timeout=RUN_TIMEOUT)
                err.seek(0)
                stderr = err.read().decode(errors="replace")
            self.assertEqual(status, 0, stderr)

    def test_sts_web_identity(self) -> None:
        """
        With no keys, the S3 backend takes botocore's default chain; a web
        identity token makes botocore call STS (AssumeRoleWithWebIdentity,
        over HTTPS with botocore's own TLS stack and AWS_CA_BUNDLE), which
        needs the STS models the binary ships in awsdata/.  The S3 request
        is then signed with the credentials STS returned.
        """
        work = self.scratch.workdir()
        ca, cert, key = _certificates(work)
        server = _TLSServer(cert, key)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        port = server.server_address[1]
        token = os.path.join(work, "token")
        with open(token, "w") as f:
            f.write("header.payload.signature")
        missing = os.path.join(work, "missing")
        wrapper = self.scratch.wrapper(
            {
                "SSL_CERT_FILE": ca,
                "AWS_CA_BUNDLE": ca,
                "AWS_WEB_IDENTITY_TOKEN_FILE": token,
                "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/cacheprog",
                "AWS_ROLE_SESSION_NAME": "test",
                "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_STS": f"https://localhost:{port}",
                "AWS_CONFIG_FILE": missing,
                "AWS_SHARED_CREDENTIALS_FILE": missing,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        run = converse(
            [
                wrapper,
                "--root-directory",
                os.path.join(work, "root"),
                "--remote-storage-type",
                "s3",
                "--s3-endpoint",
                f"https://localhost:{port}",
                "--s3-force-path-style",
                "--s3-bucket",
                "cache",
                "--s3-region",
                "us-east-1",
                "--log-level",
                "DEBUG",
            ],
            [{"ID": 1, "Command": "get", "ActionID": _action_id("sts")}],
        )
        if run.status == 1 and "not available in this build" in run.stderr:
            raise SkipTest(f"the binary has no s3 backend yet: {run.stderr.strip()}")
        self.assertEqual(run.status, 0, run.stderr)
        self.assertEqual(run.responses[1:], [{"ID": 1, "Miss": True}], run.stderr)
        sts = [r for r in server.requests if r.startswith("POST ")]
        # The object's GET; a run manifest's GET (warm start) may come too.
        s3 = [r for r in server.requests if r.startswith("GET /cache/") and "/manifests/" not in r]
        self.assertEqual(len(sts), 1, f"{server.requests}\n{run.stderr}")
        self.assertEqual(len(s3), 1, f"{server.requests}\n{run.stderr}")
        self.assertIn("Credential=ASIAFROMSTS/", s3[0])

    def test_tls_host_name(self) -> None:
        """
        Over HTTPS (the S3 backend, Twisted's TLS), a certificate for
        "localhost" from a CA in SSL_CERT_FILE is accepted for "localhost"
        and refused for 127.0.0.1 and for another name of the same address:
        then no request reaches the server, and the get is a miss.
        """
        work = self.scratch.workdir()
        ca, cert, key = _certificates(work)
        server = _TLSServer(cert, key)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        port = server.server_address[1]
        wrapper = self.scratch.wrapper({"SSL_CERT_FILE": ca})
        results = {}
        for n, host in enumerate(("localhost", "127.0.0.1", OTHER_NAME)):
            before = (len(server.requests), server.connections)
            run = converse(
                [
                    wrapper,
                    "--root-directory",
                    os.path.join(work, f"root{n}"),
                    "--remote-storage-type",
                    "s3",
                    "--s3-endpoint",
                    f"https://{host}:{port}",
                    "--s3-force-path-style",
                    "--s3-bucket",
                    "cache",
                    "--s3-region",
                    "us-east-1",
                    "--s3-access-key-id",
                    "AKIDTEST",
                    "--s3-access-key-secret",
                    "secret",
                    "--remote-get-timeout",
                    "30s",
                    "--log-level",
                    "DEBUG",
                ],
                [{"ID": 1, "Command": "get", "ActionID": _action_id(host)}],
            )
            if run.status == 1 and "not available in this build" in run.stderr:
                raise SkipTest(f"the binary has no s3 backend yet: {run.stderr.strip()}")
            self.assertEqual(run.status, 0, run.stderr)
            self.assertEqual(run.responses[1:], [{"ID": 1, "Miss": True}], run.stderr)
            results[host] = (len(server.requests) - before[0], server.connections - before[1], run.stderr)
        requests, connections, stderr = results["localhost"]
        self.assertGreater(requests, 0, f"no request reached the server for localhost:\n{stderr}")
        for host in ("127.0.0.1", OTHER_NAME):
            requests, connections, stderr = results[host]
            self.assertGreater(connections, 0, f"{host}: the binary never connected:\n{stderr}")
            self.assertEqual(requests, 0, f"{host}: a request went through a certificate for localhost:\n{stderr}")

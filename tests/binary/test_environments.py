"""
The one-file binary in the images and environments users run it in: it
needs nothing from the image, and every environment either works or exits
with a clear message, never with a signal.

Each scenario is a root built here (no Docker): the binary and CA
certificates only (what C{Dockerfile.scratch} holds), or a musl root (Debian's
C{musl} package: its loader and libc, no glibc file), started through a
wrapper (C{unshare --mount}, C{chroot [--userspec]}, an exact environment,
optionally a read-only root with a tmpfs on /tmp), as in
L{tests.binary.test_scratch}.  In each, C{--version} runs and two real
C{go build -x} with an empty GOCACHE use the binary as GOCACHEPROG and run
no compiler: the module was built once through the binary (the seed) into a
C{dir} remote store that every scenario reads (first build: from the remote,
second: from the local tier).

Needs root (mount namespaces, chroot) and go; the musl scenario needs
Debian's C{musl} package (C{make binary} installs it): otherwise they skip,
saying why.
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field

from twisted.trial.unittest import SkipTest, TestCase

from tests.binary.test_scratch import (
    BINARY,
    GO_TIMEOUT,
    HOSTS,
    RUN_TIMEOUT,
    RUNTIME_DEVICES,
    _Binary,
    _sandbox_problem,
    _which,
)

CA_CERTIFICATES = "/etc/ssl/certs/ca-certificates.crt"
#: An unprivileged uid and gid with no entry in any passwd file.
NOBODY = "65534:65534"
#: The same PATH a container runtime sets.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Scenario:
    """
    How the binary is started: the root's kind, the exact environment, the
    user, whether the root is read-only (then /tmp is a tmpfs).
    """

    root: str = "empty"
    env: dict[str, str] = field(default_factory=lambda: {"PATH": PATH, "HOME": "/"})
    user: str = ""
    read_only: bool = False


def _copy_package(package: str, root: str) -> None:
    """
    The files of an installed Debian package, at the same paths under
    C{root} (symbolic links kept as links).
    """
    listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise SkipTest(f"Debian's {package} package is not installed (make binary installs it)")
    for path in listed.stdout.split():
        if path.startswith("/usr/share") or path == "/.":
            continue
        target = root + path
        if os.path.isdir(path):
            # Plain directories here, even where the host has merged /usr (/lib -> usr/lib).
            os.makedirs(target, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(path):
            os.symlink(os.readlink(path), target)
        else:
            shutil.copy2(path, target)


class _Sandbox:
    """
    The roots (one per kind, built once) and the shared work directory,
    mounted at its own path inside every root.
    """

    _instance: _Sandbox | None = None
    _skip = ""

    def __init__(self) -> None:
        self.base = tempfile.mkdtemp(prefix="cacheprog-env-")
        atexit.register(shutil.rmtree, self.base, True)
        self.work = os.path.join(self.base, "work")
        os.makedirs(self.work)
        os.chmod(self.base, 0o755)
        os.chmod(self.work, 0o777)
        self.roots: dict[str, str] = {}
        self.tools = {name: _which(name) for name in ("unshare", "mount", "chroot", "env")}
        self._count = 0

    @classmethod
    def require(cls) -> _Sandbox:
        _Binary.require()
        if shutil.which("go") is None:
            raise SkipTest("no go command on PATH")
        if cls._skip:
            raise SkipTest(cls._skip)
        if cls._instance is None:
            cls._skip = _sandbox_problem()
            if cls._skip:
                raise SkipTest(cls._skip)
            cls._instance = _Sandbox()
        return cls._instance

    def root(self, kind: str) -> str:
        """
        C{empty}: the binary, CA certificates, a sticky /tmp; C{musl}: the
        same plus Debian's musl loader and libc.  Both get what a container
        runtime adds: /proc, /dev, /etc/hosts, /etc/resolv.conf.
        """
        if kind in self.roots:
            return self.roots[kind]
        root = os.path.join(self.base, f"root-{kind}")
        os.makedirs(root + os.path.dirname(CA_CERTIFICATES))
        shutil.copy2(CA_CERTIFICATES, root + CA_CERTIFICATES)
        shutil.copy2(BINARY, root + "/cacheprog")
        os.makedirs(root + "/tmp")
        os.chmod(root + "/tmp", 0o1777)
        if kind == "musl":
            _copy_package("musl", root)
        for directory in ("proc", "dev", self.work.lstrip("/")):
            os.makedirs(os.path.join(root, directory), exist_ok=True)
        for device in RUNTIME_DEVICES:
            open(os.path.join(root, "dev", device), "w").close()
        with open(os.path.join(root, "etc", "hosts"), "w") as f:
            f.write(HOSTS)
        with open(os.path.join(root, "etc", "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.1\n")
        # A directory only root may write, for XDG_CACHE_HOME.
        os.makedirs(os.path.join(root, "readonly"), mode=0o755)
        self.roots[kind] = root
        return root

    def wrapper(self, scenario: Scenario) -> str:
        """
        A script that runs the root's /cacheprog as the scenario says,
        passing its arguments on; usable as GOCACHEPROG.
        """
        self._count += 1
        root = self.root(scenario.root)
        q = shlex.quote
        mount = q(self.tools["mount"])
        lines = []
        if scenario.read_only:
            lines += [
                f"{mount} --bind {q(root)} {q(root)}",
                f"{mount} -o remount,bind,ro {q(root)}",
                f"{mount} -t tmpfs -o mode=1777 tmpfs {q(root + '/tmp')}",
                # The tmpfs hides the work directory's mount point when it is under /tmp.
                f"mkdir -p {q(root + self.work)}",
            ]
        lines += [
            f"{mount} -t proc proc {q(root + '/proc')}",
            f"{mount} --bind {q(self.work)} {q(root + self.work)}",
        ]
        lines += [f"{mount} --bind /dev/{d} {q(root + '/dev/' + d)}" for d in RUNTIME_DEVICES]
        assignments = " ".join(q(f"{k}={v}") for k, v in scenario.env.items())
        user = f"--userspec={scenario.user} " if scenario.user else ""
        body = "\n".join(lines)
        path = os.path.join(self.base, f"cacheprog-{self._count}.sh")
        with open(path, "w") as f:
            f.write(
                f"""#!/bin/sh
set -eu
if [ "${{CACHEPROG_ENV_NS:-}}" != 1 ]; then
    CACHEPROG_ENV_NS=1 exec {q(self.tools["unshare"])} --mount --propagation private -- /bin/sh "$0" "$@"
fi
{body}
exec {q(self.tools["env"])} -i {assignments} {q(self.tools["chroot"])} {user}{q(root)} /cacheprog "$@"
"""
            )
        os.chmod(path, 0o755)
        return path

    def workdir(self) -> str:
        path = tempfile.mkdtemp(dir=self.work)
        os.chmod(path, 0o777)
        return path


# go


MODULE = {
    "go.mod": "module example.com/hello\n\ngo 1.21\n",
    "main.go": 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from anywhere") }\n',
}


class _Seed:
    """
    The dir remote store every scenario reads, filled once by a build
    through the binary in the empty root.
    """

    store = ""
    module = ""

    @classmethod
    def require(cls, sandbox: _Sandbox, test: TestCase) -> tuple[str, str]:
        if not cls.store:
            work = sandbox.workdir()
            module = os.path.join(work, "hello")
            os.makedirs(module)
            for name, text in MODULE.items():
                with open(os.path.join(module, name), "w") as f:
                    f.write(text)
            store = os.path.join(work, "store")
            os.makedirs(store)
            done = go_build(sandbox.wrapper(Scenario()), module, store, os.path.join(work, "seed"))
            test.assertEqual(done.returncode, 0, done.stderr[-6000:])
            test.assertGreater(len(compiles(done.stderr)), 0, "the seed build compiled nothing")
            # Any uid of the scenarios reads it and may write to it.
            os.chmod(store, 0o777)
            for directory, names, files in os.walk(store):
                for name in names + files:
                    os.chmod(os.path.join(directory, name), 0o777 if name in names else 0o666)
            cls.store, cls.module = store, module
        return cls.store, cls.module


def compiles(stderr: str) -> list[str]:
    return re.findall(r"(?m)(?:^|\s)\S*/compile\s+-", stderr)


def go_build(wrapper: str, module: str, store: str, work: str) -> subprocess.CompletedProcess[str]:
    """
    C{go build -x} of the module with an empty GOCACHE, the wrapper as
    GOCACHEPROG (local tier in C{work/root}, the dir store as remote).
    """
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o777)
    gocache = tempfile.mkdtemp(dir=work, prefix="gocache")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GO", "CGO_", "CACHEPROG_")) and k != "PYTHONPATH"}
    env.update(
        GOCACHE=gocache,
        GOCACHEPROG=" ".join(
            [
                wrapper,
                "--root-directory",
                os.path.join(work, "root"),
                "--remote-storage-type",
                "dir",
                "--dir-storage-root",
                store,
            ]
        ),
        GOPATH=os.path.join(work, "gopath"),
        GOPROXY="off",
        GOSUMDB="off",
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=mod",
        GOTELEMETRY="off",
        CGO_ENABLED="0",
        HOME=work,
    )
    out = os.path.join(gocache, "hello")
    done = subprocess.run(
        ["go", "build", "-x", "-o", out, "."],
        cwd=module,
        env=env,
        capture_output=True,
        text=True,
        timeout=GO_TIMEOUT,
    )
    if done.returncode == 0:
        ran = subprocess.run([out], capture_output=True, text=True, timeout=60)
        if ran.stdout != "hello from anywhere\n":
            done.returncode = 99
            done.stderr += f"\nthe built program printed {ran.stdout!r}"
    return done


class EnvironmentTests(TestCase):
    """
    Every scenario: C{--version}, then two builds from the cache.
    """

    timeout = GO_TIMEOUT * 3

    def setUp(self) -> None:
        self.sandbox = _Sandbox.require()

    def version(self, scenario: Scenario) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.sandbox.wrapper(scenario), "--version"], capture_output=True, text=True, timeout=RUN_TIMEOUT
        )

    def check(self, scenario: Scenario, runs: int = 2) -> str:
        """
        C{--version} exits 0; C{runs} builds pass, none compiles.

        @return: the work directory (local tier in C{root}).
        """
        done = self.version(scenario)
        self.assertEqual(done.returncode, 0, f"--version: exit {done.returncode}\n{done.stderr}")
        self.assertIn("cacheprog version", done.stdout)
        store, module = _Seed.require(self.sandbox, self)
        work = self.sandbox.workdir()
        wrapper = self.sandbox.wrapper(scenario)
        for n in range(runs):
            built = go_build(wrapper, module, store, work)
            self.assertEqual(built.returncode, 0, f"build {n + 1}:\n{built.stderr[-6000:]}")
            self.assertEqual(compiles(built.stderr), [], f"build {n + 1} compiled:\n{built.stderr[-6000:]}")
        return work

    def unpacked_in(self, scenario: Scenario, directory: str) -> None:
        """
        The program was unpacked under C{directory} of the root.
        """
        path = self.sandbox.root(scenario.root) + directory
        self.assertTrue(os.path.isdir(path) and os.listdir(path), f"nothing unpacked in {directory}")

    def test_empty_root(self) -> None:
        """
        No libraries, no /etc but CA certificates (and the runtime's hosts
        and resolv.conf): the binary brings its C runtime.
        """
        self.check(Scenario())
        self.unpacked_in(Scenario(), "/.cache/cacheprog")

    def test_musl_root(self) -> None:
        """
        An Alpine-like root: a musl loader and libc, no glibc file.
        """
        scenario = Scenario(root="musl", env={"PATH": PATH, "HOME": "/", "LANG": "C.UTF-8"})
        root = self.sandbox.root("musl")
        self.assertTrue(os.path.exists(root + "/lib/ld-musl-x86_64.so.1"))
        self.assertFalse(os.path.exists(root + "/lib64/ld-linux-x86-64.so.2"))
        self.check(scenario)

    def test_locale_not_installed(self) -> None:
        """
        LANG=C.UTF-8 (GitHub's runners) and LC_ALL naming a locale the
        root does not have.
        """
        self.check(Scenario(env={"PATH": PATH, "HOME": "/", "LANG": "C.UTF-8"}))
        self.check(Scenario(env={"PATH": PATH, "HOME": "/", "LANG": "xx_YY.UTF-8", "LC_ALL": "de_DE.UTF-8"}), 1)

    def test_no_home(self) -> None:
        """
        Neither HOME nor XDG_CACHE_HOME: unpacked into /tmp/cacheprog-<uid>.
        """
        scenario = Scenario(env={"PATH": PATH})
        self.check(scenario)
        self.unpacked_in(scenario, "/tmp/cacheprog-0")

    def test_home_absent_non_root(self) -> None:
        """
        A non-root uid without a passwd entry whose HOME does not exist.
        """
        scenario = Scenario(env={"PATH": PATH, "HOME": "/nonexistent"}, user=NOBODY)
        self.check(scenario)
        self.unpacked_in(scenario, "/tmp/cacheprog-65534")

    def test_home_unwritable(self) -> None:
        """
        A non-root uid whose HOME (/) it cannot write.
        """
        scenario = Scenario(env={"PATH": PATH, "HOME": "/"}, user=NOBODY)
        self.check(scenario)
        self.unpacked_in(scenario, "/tmp/cacheprog-65534")

    def test_xdg_cache_home_unwritable(self) -> None:
        """
        XDG_CACHE_HOME names a directory the uid cannot write.
        """
        scenario = Scenario(env={"PATH": PATH, "XDG_CACHE_HOME": "/readonly"}, user=NOBODY)
        self.check(scenario, 1)

    def test_read_only_root(self) -> None:
        """
        A read-only root with a writable /tmp (a tmpfs), as root.
        """
        self.check(Scenario(read_only=True))

    def test_temporary_not_ours(self) -> None:
        """
        /tmp/cacheprog-<uid> owned by someone else is refused (it could
        hold a planted program): a clear message, exit status 2.
        """
        root = self.sandbox.root("empty")
        planted = root + "/tmp/cacheprog-4242"
        os.makedirs(planted, mode=0o777, exist_ok=True)
        os.chmod(planted, 0o777)
        done = self.version(Scenario(env={"PATH": PATH}, user="4242:4242"))
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertIn("/tmp/cacheprog-4242", done.stderr)
        self.assertIn("XDG_CACHE_HOME", done.stderr)

    def test_two_first_starts(self) -> None:
        """
        Two builds at once on a cache nobody has unpacked into yet.
        """
        scenario = Scenario(env={"PATH": PATH, "XDG_CACHE_HOME": "/tmp/first-starts"})
        store, module = _Seed.require(self.sandbox, self)
        wrapper = self.sandbox.wrapper(scenario)
        results: list[subprocess.CompletedProcess[str]] = []
        works = [self.sandbox.workdir() for _ in range(2)]

        def build(work: str) -> None:
            results.append(go_build(wrapper, module, store, work))

        threads = [threading.Thread(target=build, args=(w,)) for w in works]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for built in results:
            self.assertEqual(built.returncode, 0, built.stderr[-6000:])
            self.assertEqual(compiles(built.stderr), [], built.stderr[-6000:])
        again = go_build(wrapper, module, store, works[0])
        self.assertEqual((again.returncode, compiles(again.stderr)), (0, []), again.stderr[-6000:])
        self.unpacked_in(scenario, "/tmp/first-starts/cacheprog")

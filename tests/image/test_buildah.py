"""
C{Dockerfile.scratch} built for real with buildah, from the binary the
binary tier already built (C{dist/cacheprog}, made once by C{make binary}):
C{BINARY_FROM=context} copies it instead of compiling it again, and
C{BUILD_BASE} names a local base image made here from this machine's own C
libraries and CA certificates (Docker Hub is not needed, nor reachable).

Checked: the image builds; a container from it answers C{--version}; a
C{go build} through it (go on this machine, C{GOCACHEPROG} running the
binary inside a container with C{buildah run}) twice, the second running no
compiler; and a second image that does C{COPY --from} of the first runs the
copied binary.

Everything runs with C{--storage-driver vfs --isolation chroot} and a
private storage root under the test's temp directory (no daemon, no
cgroups: C{podman run} fails on this kernel's cgroup set-up, "cgroups in
hybrid mode not supported").  Skips, with the reason, when buildah is not
installed (C{make install-test} installs it with apt-get where it can),
cannot run here (not root, no user namespaces), or C{CACHEPROG_SKIP_BINARY=1}.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import ClassVar

from twisted.trial.unittest import SkipTest, TestCase

from tests.binary.test_scratch import DOCKERFILE, REPO, _Binary, parse_dockerfile
from tests.e2e.test_gobuild import _quote, _rmtree, _stat, _tool_runs

IMAGE = "localhost/cacheprog:test"
BASE = "localhost/cacheprog-test-base:latest"
COPIER = "localhost/cacheprog-test-copier:latest"
BUILD_TIMEOUT = 900.0
RUN_TIMEOUT = 300.0

MODULE = {
    "go.mod": "module example.com/hello\n\ngo 1.24\n",
    "main.go": 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from the image") }\n',
}


class Buildah:
    """
    buildah with a private store; one per test run.
    """

    _instance: ClassVar[Buildah | None] = None
    _skip: ClassVar[str] = ""

    def __init__(self, base: str) -> None:
        self.base = base
        self.argv = [
            shutil.which("buildah") or "buildah",
            "--storage-driver",
            "vfs",
            "--root",
            os.path.join(base, "storage"),
            "--runroot",
            os.path.join(base, "run"),
        ]

    def __call__(self, *args: str, timeout: float = RUN_TIMEOUT, check: bool = True) -> str:
        done = subprocess.run(
            [*self.argv, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "BUILDAH_ISOLATION": "chroot"},
        )
        if check and done.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def quietly(self, *args: str) -> None:
        """
        Run buildah, ignoring failure (clean-ups).
        """
        self(*args, check=False)

    @classmethod
    def require(cls) -> Buildah:
        if cls._skip:
            raise SkipTest(cls._skip)
        if cls._instance is None:
            if shutil.which("buildah") is None:
                cls._skip = "buildah is not installed (Debian: apt-get install buildah; make install-test tries)"
                raise SkipTest(cls._skip)
            base = tempfile.mkdtemp(prefix="cacheprog-buildah-")
            instance = cls(base)
            problem = instance._probe()
            if problem:
                _rmtree(base)
                cls._skip = f"buildah cannot run here: {problem}"
                raise SkipTest(cls._skip)
            import atexit

            atexit.register(instance.cleanup)
            cls._instance = instance
        return cls._instance

    def _probe(self) -> str:
        try:
            container = self("from", "scratch").strip()
            self("rm", container)
        except (AssertionError, OSError, subprocess.SubprocessError) as e:
            return str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        return ""

    def cleanup(self) -> None:
        self("rm", "--all", check=False)
        self("rmi", "--all", "--force", check=False)
        _rmtree(self.base)


def stage_base(root: str) -> None:
    """
    The files the final stage copies from the C{base} stage, from this
    machine (the binary was linked here, against these), as real files.
    """
    with open(DOCKERFILE, encoding="utf-8") as f:
        image = parse_dockerfile(f.read())
    for copy in image.copies:
        if copy.stage != "base":
            continue
        target = root + copy.target
        if copy.source.endswith("/"):
            os.makedirs(target, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.realpath(copy.source), target)


class ImageTests(TestCase):
    """
    The image, built once for the class, then run.
    """

    timeout = BUILD_TIMEOUT + 2 * RUN_TIMEOUT
    built: ClassVar[str] = ""

    def setUp(self) -> None:
        _Binary.require()
        self.buildah = Buildah.require()
        if not ImageTests.built:
            ImageTests.built = "failed"
            self.build()
            ImageTests.built = "ok"
        elif ImageTests.built != "ok":
            raise AssertionError("building the image failed earlier in this run")

    def build(self) -> None:
        staging = os.path.join(self.buildah.base, "base-root")
        stage_base(staging)
        container = self.buildah("from", "scratch").strip()
        self.buildah("copy", container, staging, "/")
        self.buildah("commit", "--rm", container, BASE)
        self.buildah(
            "bud",
            "--isolation",
            "chroot",
            "--layers=false",
            "--file",
            DOCKERFILE,
            "--ignorefile",
            DOCKERFILE + ".dockerignore",
            "--build-arg",
            f"BUILD_BASE={BASE}",
            "--build-arg",
            "BINARY_FROM=context",
            "--tag",
            IMAGE,
            REPO,
            timeout=BUILD_TIMEOUT,
        )

    def container(self, image: str = IMAGE) -> str:
        container = self.buildah("from", image).strip()
        self.addCleanup(self.buildah.quietly, "rm", container)
        return container

    def test_version(self) -> None:
        """
        A container from the image answers C{/cacheprog --version}.
        """
        from cacheprog import __version__

        out = self.buildah("run", self.container(), "--", "/cacheprog", "--version")
        self.assertIn(f"cacheprog version {__version__}", out)

    def test_onlyTheBinaryAndItsFiles(self) -> None:
        """
        The image's entry point is the binary, and its root holds nothing but
        what the Dockerfile copies (and what the runtime adds): no C library,
        no loader; the binary carries its own.
        """
        config = self.buildah("inspect", "--type", "image", "--format", "{{.OCIv1.Config.Entrypoint}}", IMAGE)
        self.assertEqual(config.strip(), "[/cacheprog]")
        container = self.container()
        mount = self.buildah("mount", container).strip()
        self.addCleanup(self.buildah.quietly, "umount", container)
        runtime = {"dev", "proc", "run", "sys"}  # created by buildah for containers
        self.assertEqual(sorted(set(os.listdir(mount)) - runtime), ["cacheprog", "etc", "tmp"])

    def test_goBuildThroughTheImage(self) -> None:
        """
        go on this machine with C{GOCACHEPROG} running the binary in a
        container of the image (the work directory mounted at the same
        path): the first build compiles, the second, with an empty GOCACHE,
        runs no compiler.
        """
        go = shutil.which("go")
        if go is None:
            raise SkipTest("no go command on PATH")
        work = tempfile.mkdtemp(prefix="cacheprog-image-", dir=self.buildah.base)
        module = os.path.join(work, "hello")
        os.makedirs(module)
        for name, text in MODULE.items():
            with open(os.path.join(module, name), "w") as f:
                f.write(text)
        container = self.container()
        prog = [
            *self.buildah.argv,
            "run",
            "--isolation",
            "chroot",
            "--volume",
            f"{work}:{work}",
            container,
            "--",
            "/cacheprog",
            "--root-directory",
            os.path.join(work, "root"),
        ]
        runs = []
        for n in (1, 2):
            gocache = os.path.join(work, f"gocache{n}")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("GO", "CACHEPROG_")) and k != "PYTHONPATH"}
            env.update(
                GOCACHE=gocache,
                GOCACHEPROG=" ".join(_quote(a) for a in prog),
                GOFLAGS="-mod=mod",
                GOTOOLCHAIN="local",
                GOPROXY="off",
                GOTELEMETRY="off",
                CGO_ENABLED="0",
                BUILDAH_ISOLATION="chroot",
            )
            done = subprocess.run(
                [go, "build", "-x", "-o", os.path.join(work, f"hello{n}"), "."],
                cwd=module,
                env=env,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
            self.assertEqual(done.returncode, 0, done.stderr[-4000:])
            runs.append(done.stderr)
        self.assertTrue(_tool_runs(runs[0], "compile"), runs[0][-4000:])
        self.assertEqual(_tool_runs(runs[1], "compile"), [], runs[1][-4000:])
        self.assertGreater(_stat(runs[1], "local_hits"), 0)
        out = subprocess.run([os.path.join(work, "hello2")], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.stdout, "hello from the image\n")

    def test_copyFrom(self) -> None:
        """
        A second image takes the binary with C{COPY --from} (as users' Go
        images do) and runs it from its new place.
        """
        context = tempfile.mkdtemp(prefix="cacheprog-copier-", dir=self.buildah.base)
        with open(os.path.join(context, "Containerfile"), "w") as f:
            f.write(f"FROM {BASE}\nCOPY --from={IMAGE} /cacheprog /usr/local/bin/cacheprog\n")
        self.buildah("bud", "--isolation", "chroot", "--layers=false", "--tag", COPIER, context, timeout=BUILD_TIMEOUT)
        out = self.buildah(
            "run",
            "--env",
            "XDG_CACHE_HOME=/tmp/.cache",
            self.container(COPIER),
            "--",
            "/usr/local/bin/cacheprog",
            "--version",
        )
        self.assertIn("cacheprog version", out)

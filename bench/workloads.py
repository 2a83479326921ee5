"""
What the benchmark builds: the standard library, the go command's own
tree, and a large third-party program (golangci-lint, pinned), which also
serves a realistic pull request: one of its source files changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

THIRD_PARTY_MODULE = "github.com/golangci/golangci-lint/v2"
THIRD_PARTY_VERSION = "v2.4.0"
THIRD_PARTY_PACKAGE = "./cmd/golangci-lint"
#: The file a "pull request" changes: a package in the middle of the graph
#: (the result processors; lint, commands and the main package import it).
PR_FILE = "pkg/result/processors/diff.go"


@dataclass(frozen=True)
class Workload:
    name: str
    argv: tuple[str, ...]
    title: str
    big: bool
    third_party: bool = False


WORKLOADS = {
    w.name: w
    for w in (
        Workload("std", ("build", "std"), "go build std", big=False),
        Workload("cmd", ("build", "cmd"), "go build cmd", big=True),
        Workload(
            "golangci-lint",
            ("build", "-o", os.devnull, THIRD_PARTY_PACKAGE),
            f"go build {THIRD_PARTY_PACKAGE} ({THIRD_PARTY_MODULE}@{THIRD_PARTY_VERSION})",
            big=True,
            third_party=True,
        ),
        Workload("small", ("build", "net/http"), "go build net/http", big=False),
        Workload("tiny", ("build", "fmt"), "go build fmt", big=False),
    )
}


class Sources:
    """
    Where each workload is built from: an empty directory for the standard
    library and cmd, a writable copy of the pinned module for golangci-lint
    (fetched once through the module proxy, then built offline).
    """

    def __init__(self, work: str, go: str, offline_env: Callable[[str], dict[str, str]], log: Callable[[str], None]):
        self.work = work
        self.go = go
        self.offline_env = offline_env
        self.log = log
        self.cwd: dict[str, str] = {}

    def prepare(self, workload: Workload) -> str:
        if workload.name in self.cwd:
            return self.cwd[workload.name]
        if workload.third_party:
            cwd = self._third_party()
        else:
            cwd = os.path.join(self.work, "empty")
            os.makedirs(cwd, exist_ok=True)
        self.cwd[workload.name] = cwd
        return cwd

    @contextlib.contextmanager
    def changed(self, workload: Workload, nonce: str) -> Iterator[None]:
        """
        The pull request: C{PR_FILE} with one more package-level declaration
        (new code in that package, so it and what links it are rebuilt),
        put back afterwards.  A new C{nonce} per round keeps every round's
        change new to every cache.
        """
        path = os.path.join(self.prepare(workload), PR_FILE)
        with open(path, encoding="utf-8") as f:
            original = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(original + f'\nvar benchPullRequest = "{nonce}"\n')
        try:
            yield
        finally:
            with open(path, "w", encoding="utf-8") as f:
                f.write(original)

    def _online(self, env: dict[str, str]) -> dict[str, str]:
        online = dict(env)
        for name in ("GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE"):
            online.pop(name, None)
        return online

    def _third_party(self) -> str:
        cwd = os.path.join(self.work, "src", "golangci-lint")
        offline = self.offline_env(os.path.join(self.work, "prep-gocache"))
        if not os.path.isdir(cwd):
            shutil.copytree(self._module_dir(offline), cwd, symlinks=True)
            for root, dirs, files in os.walk(cwd):
                for name in dirs + files:
                    path = os.path.join(root, name)
                    if not os.path.islink(path):
                        os.chmod(path, os.stat(path).st_mode | 0o200)
        check = [self.go, "list", "-deps", THIRD_PARTY_PACKAGE]
        done = subprocess.run(check, cwd=cwd, env=offline, capture_output=True, text=True)
        if done.returncode != 0:
            self.log("downloading the third-party module's dependencies (go mod download, module proxy)")
            subprocess.run([self.go, "mod", "download"], cwd=cwd, env=self._online(offline), check=True)
            done = subprocess.run(check, cwd=cwd, env=offline, check=True, capture_output=True, text=True)
        self.log(
            f"third-party workload: {THIRD_PARTY_MODULE}@{THIRD_PARTY_VERSION}, {len(done.stdout.split())} packages"
        )
        return cwd

    def _module_dir(self, env: dict[str, str]) -> str:
        spec = f"{THIRD_PARTY_MODULE}@{THIRD_PARTY_VERSION}"
        argv = [self.go, "mod", "download", "-json", spec]
        done = subprocess.run(argv, cwd=self.work, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            self.log(f"downloading {spec} (module proxy)")
            done = subprocess.run(
                argv, cwd=self.work, env=self._online(env), capture_output=True, text=True, check=True
            )
        return str(json.loads(done.stdout)["Dir"])

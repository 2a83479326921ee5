"""
The CI examples of C{deployments/ci/} are checked, not just shown:

 - the GitHub Actions workflow passes actionlint (installed by
   C{.ci/install-servers.sh}; the test skips, saying so, without it);
 - its shell steps run in order against SeaweedFS on 127.0.0.1, as a main
   branch push and then as a pull request on a fresh runner: C{$GITHUB_ENV},
   C{$GITHUB_PATH} and C{$GITHUB_STEP_SUMMARY} behave as on GitHub, the
   C{uses:} steps are replaced by what they do (checkout: the test app;
   setup-go: this machine's go; the AWS action: the server's keys, with
   C{AWS_ENDPOINT_URL_S3} naming it), and the binary the workflow downloads
   is a C{file://} URL of a launcher for this checkout, checked by its
   SHA-256 like a release;
 - the GitLab job's scripts run the same way, as a merge request;
 - the docker build sidecar script starts the proxy, runs the build (go on
   this machine with the http store, in place of C{docker build}) and stops
   the proxy.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping

import yaml

from tests.e2e.test_gobuild import APP, REPO, _stats
from tests.e2e.test_s3_build import BUCKET, S3BuildCase, list_keys, upload_seed
from tests.goenv import clean_environ
from tests.integration.servers import SeaweedFS, tools_dir

CI = os.path.join(REPO, "deployments", "ci")
WORKFLOW = os.path.join(CI, "github-actions.yml")
GITLAB = os.path.join(CI, "gitlab-ci.yml")
SIDECAR = os.path.join(CI, "docker-build-sidecar.sh")
STEP_TIMEOUT = 600.0
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def find_actionlint() -> str | None:
    candidate = os.path.join(tools_dir(), "actionlint")
    return candidate if os.access(candidate, os.X_OK) else shutil.which("actionlint")


class Runner:
    """
    Just enough of a CI runner: an environment, files for C{$GITHUB_ENV}
    and C{$GITHUB_PATH}, bash steps.
    """

    def __init__(self, base: str, env: Mapping[str, str]) -> None:
        self.base = base
        self.env = dict(env)
        self.path: list[str] = []
        self.outputs: list[str] = []

    def step(self, script: str, env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
        github_env = os.path.join(self.base, "github_env")
        github_path = os.path.join(self.base, "github_path")
        for name in (github_env, github_path):
            open(name, "w").close()
        full = {**self.env, **(env or {}), "GITHUB_ENV": github_env, "GITHUB_PATH": github_path}
        full["PATH"] = os.pathsep.join([*self.path, full.get("PATH", "")])
        done = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", script],
            cwd=cwd or self.env.get("GITHUB_WORKSPACE", self.base),
            env=full,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        output = f"$ {script}\n{done.stdout}\n{done.stderr}"
        self.outputs.append(output)
        if done.returncode != 0:
            raise AssertionError(f"step failed (exit {done.returncode}):\n{output[-6000:]}")
        with open(github_env) as f:
            for line in f.read().splitlines():
                name, _, value = line.partition("=")
                self.env[name] = value
        with open(github_path) as f:
            self.path[:0] = [line for line in f.read().splitlines() if line]
        return done.stdout + done.stderr


def launcher(directory: str) -> tuple[str, str]:
    """
    A stand-in for the released binary: runs this checkout's cacheprog.
    Returns its file:// URL and SHA-256.
    """
    path = os.path.join(directory, "cacheprog-release")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m cacheprog "$@"\n')
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return "file://" + path, digest


class CIExampleTests(S3BuildCase):
    timeout = 1800

    def setUp(self) -> None:
        super().setUp()
        self.server = self.servers.get(SeaweedFS)
        self.s3 = self.client(self.server)
        self.url, self.sha256 = launcher(self.ws.base)

    def workspace(self, name: str) -> str:
        path = os.path.join(self.ws.base, name)
        shutil.copytree(APP, path)
        return path

    def base_env(self) -> dict[str, str]:
        env = clean_environ()
        env.pop("PYTHONPATH", None)
        env.update(
            GOFLAGS="-mod=mod",
            GOTOOLCHAIN="local",
            GOPROXY="off",
            GOSUMDB="off",
            GOTELEMETRY="off",
            GOCACHE=os.path.join(self.ws.base, "gocache-" + str(len(os.listdir(self.ws.base)))),
            AWS_ACCESS_KEY_ID=self.server.access_key,
            AWS_SECRET_ACCESS_KEY=self.server.secret_key,
            AWS_ENDPOINT_URL_S3=self.server.endpoint,
        )
        return env

    # GitHub Actions

    def test_actionlint(self) -> None:
        """
        The workflow passes actionlint.
        """
        found = find_actionlint()
        if found is None:
            from twisted.trial.unittest import SkipTest

            raise SkipTest("actionlint is not installed (.ci/install-servers.sh installs it with go install)")
        done = subprocess.run([found, "-no-color", WORKFLOW], capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def expressions(self, event: str, pr: str) -> dict[str, str]:
        return {
            "vars.GO_CACHE_BUCKET": BUCKET,
            "vars.GO_CACHE_REGION": "us-east-1",
            "vars.CACHEPROG_BINARY_URL": self.url,
            "vars.CACHEPROG_BINARY_SHA256": self.sha256,
            "github.event.pull_request.number": pr,
            "github.event.pull_request.head.repo.fork": "false" if pr else "",
            "github.event_name": event,
        }

    def github_job(self, event: str, pr: str) -> tuple[Runner, str]:
        """
        Run the workflow's job as C{event}; returns the runner and the step
        summary it wrote.
        """
        with open(WORKFLOW) as f:
            workflow = yaml.safe_load(f)
        (job,) = workflow["jobs"].values()
        values = self.expressions(event, pr)

        def substitute(text: str) -> str:
            def one(m: re.Match[str]) -> str:
                if m.group(1) not in values:
                    raise AssertionError(f"the test does not know ${{{{ {m.group(1)} }}}}: add it to expressions()")
                return values[m.group(1)]

            return _EXPRESSION.sub(one, str(text))

        temp = os.path.join(self.ws.base, f"runner-temp-{event}")
        os.makedirs(temp)
        summary = os.path.join(temp, "step_summary.md")
        env = self.base_env()
        env.update({k: substitute(v) for k, v in job.get("env", {}).items()})
        env.update(
            RUNNER_TEMP=temp,
            GITHUB_WORKSPACE=self.workspace(f"checkout-{event}"),
            GITHUB_STEP_SUMMARY=summary,
            GITHUB_RUN_ID="4242",
            GITHUB_RUN_ATTEMPT="1",
            AWS_REGION="us-east-1",
        )
        runner = Runner(temp, env)
        go_bin = os.path.dirname(shutil.which("go") or "go")
        for step in job["steps"]:
            uses = step.get("uses", "")
            if uses.startswith("actions/setup-go"):
                runner.path.insert(0, go_bin)
            elif "run" in step:
                runner.step(substitute(step["run"]), {k: substitute(v) for k, v in step.get("env", {}).items()})
            # checkout: the workspace is there; AWS: keys in base_env();
            # golangci-lint-action: not run here (its own test uses golangci-lint).
        with open(summary) as f:
            return runner, f.read()

    def test_githubWorkflow(self) -> None:
        """
        A push to main fills ci/main; a pull request on a fresh runner then
        hits it (remote hits, written only under ci/pr/17), and both jobs
        leave a step summary with the table and the chart.
        """
        upload_seed(self.s3, self.goBinary, "ci/main")
        _, main_summary = self.github_job("push", "")
        self.assertIn("### Go build cache", main_summary)
        self.assertIn("```mermaid", main_summary)
        main_keys = list_keys(self.s3, "ci/main")

        runner, pr_summary = self.github_job("pull_request", "17")
        builds = [o for o in runner.outputs if o.startswith("$ go build")]
        self.assertGreater(int(_stats(builds[0])["remote_hits"]), 0, builds[0][-3000:])
        self.assertEqual(list_keys(self.s3, "ci/main"), main_keys)
        self.assertIn("| **total (2 runs)** |", pr_summary)

    # GitLab CI

    def test_gitlabJob(self) -> None:
        """
        The GitLab job's scripts, as a merge request: the build hits
        ci/main (seeded), writes only under ci/mr/5, and the after_script
        writes the Markdown summary.
        """
        upload_seed(self.s3, self.goBinary, "ci/main")
        main_keys = list_keys(self.s3, "ci/main")
        with open(GITLAB) as f:
            (job,) = yaml.safe_load(f).values()
        project = self.workspace("gitlab-project")
        env = self.base_env()
        env.update(
            CI_PROJECT_DIR=project,
            CI_JOB_ID="99",
            CI_MERGE_REQUEST_IID="5",
            GO_CACHE_BUCKET=BUCKET,
            GO_CACHE_REGION="us-east-1",
            GO_CACHE_MR_ROLE_ARN="arn:aws:iam::123456789012:role/go-cache-mr",
            CACHEPROG_BINARY_URL=self.url,
            CACHEPROG_BINARY_SHA256=self.sha256,
            AWS_ID_TOKEN="not-a-token",
            # Static keys come first in cacheprog's credential order, so the
            # web identity (which would call AWS STS) is never used here.
            CACHEPROG_S3_ACCESS_KEY_ID=self.server.access_key,
            CACHEPROG_S3_ACCESS_KEY_SECRET=self.server.secret_key,
        )
        for name, value in job["variables"].items():
            env[name] = _expand(str(value), env)
        runner = Runner(project, env)
        runner.step("\n".join([*job["before_script"], *job["script"]]), cwd=project)
        out = runner.step("\n".join(job["after_script"]), cwd=project)
        self.assertIn("total (2 runs)", out)  # go build, go test
        self.assertTrue(os.path.exists(os.path.join(project, "cacheprog-summary.md")))
        self.assertEqual(list_keys(self.s3, "ci/main"), main_keys)
        first = re.search(r"remote_hits=(\d+)", runner.outputs[0])
        self.assertTrue(first and int(first.group(1)) > 0, runner.outputs[0][-3000:])

    # the docker build sidecar

    def test_dockerBuildSidecar(self) -> None:
        """
        The sidecar script starts the proxy (the s3 store behind it), waits
        for /health, runs the build through it and stops the proxy with
        SIGTERM; the build's cacheprog used the http store.
        """
        project = self.workspace("sidecar-project")
        bin_dir = os.path.join(self.ws.base, "sidecar-bin")
        os.makedirs(bin_dir)
        shutil.copy(self.url[len("file://") :], os.path.join(bin_dir, "cacheprog"))
        port = _free_port()
        env = self.base_env()
        env.update(
            PATH=bin_dir + os.pathsep + env.get("PATH", ""),
            CACHEPROG_PROXY_LISTEN_ADDRESS=f"127.0.0.1:{port}",
            CACHEPROG_PROXY_LOG=os.path.join(self.ws.base, "proxy.log"),
            CACHEPROG_REMOTE_STORAGE_TYPE="s3",
            CACHEPROG_S3_BUCKET=BUCKET,
            CACHEPROG_S3_REGION="us-east-1",
            CACHEPROG_S3_PREFIX="ci/docker",
        )
        build = (
            f"env CACHEPROG_REMOTE_STORAGE_TYPE=http CACHEPROG_HTTP_STORAGE_BASE_URL=http://127.0.0.1:{port}/"
            f" GOCACHEPROG=cacheprog go build -o app ."
        )
        done = subprocess.run(
            [SIDECAR, "bash", "-c", build],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr[-6000:])
        self.assertIn("Listening", done.stderr)
        self.assertIn("Configuring HTTP storage with base URL", done.stderr)
        self.assertGreater(int(_stats(done.stderr)["uploads"]), 0, done.stderr[-3000:])
        self.assertTrue(list_keys(self.s3, "ci/docker"))


def _expand(value: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), value)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port

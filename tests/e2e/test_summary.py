"""
End to end: C{cacheprog summary} after a job of three go commands adds up
exactly what their statistics lines said.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

from twisted.trial.unittest import TestCase

from tests.e2e.test_gobuild import REPO, _program, _rmtree, _stats, _Toolchain, _Workspace

#: Summary column -> statistics line field.
FIELDS = {"gets": "get_calls", "local hits": "local_hits", "remote hits": "remote_hits", "misses": "misses"}


class SummaryJobTests(TestCase):
    timeout = 900

    def setUp(self) -> None:
        go = _Toolchain.require()
        base = tempfile.mkdtemp(prefix="cacheprog-e2e-summary-")
        self.addCleanup(_rmtree, base)
        self.ws = _Workspace(base, go)

    def summary(self, *args: str, **env: str) -> str:
        environ = self.ws.environ(remote=True, **env)
        environ["PYTHONPATH"] = REPO
        done = subprocess.run(
            [*_program(), "summary", "--root-directory", self.ws.local, *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def test_threeCommands(self) -> None:
        """
        A mark, then C{go build}, C{go vet}, C{go test} through the C{dir}
        store: the summary has one row per go command, named after it, with
        the gets, hits and misses of its statistics line, and a total that
        adds them up; C{--github} writes the same as Markdown with a chart.
        """
        os.makedirs(self.ws.local)
        self.summary("--mark", "job")
        commands = [("build", "-o", os.path.join(self.ws.out, "app"), "."), ("vet", "./..."), ("test", "./...")]
        stats = []
        for args in commands:
            run = self.ws.go_run(*args, remote=True)
            self.assertEqual(run.code, 0, run.describe())
            stats.append(_stats(run.stderr))

        table = self.summary("--since", "job").splitlines()
        heading = re.split(r"\s{2,}", table[0])
        rows = [re.split(r"\s{2,}", line) for line in table[2:5]]
        total = re.split(r"\s{2,}", table[6])
        for row, args, fields in zip(rows, commands, stats, strict=True):
            self.assertTrue(row[0].startswith(f"go {args[0]}") or f"go {args[0]}" in row[0], row)
            for column, field in FIELDS.items():
                self.assertEqual(row[heading.index(column)], fields[field], (column, row, fields))
        for column, field in FIELDS.items():
            self.assertEqual(int(total[heading.index(column)]), sum(int(f[field]) for f in stats), column)
        self.assertEqual(total[0], "total (3 runs)")

        target = os.path.join(self.ws.base, "step-summary.md")
        self.summary("--since", "job", "--github", GITHUB_STEP_SUMMARY=target)
        with open(target) as f:
            markdown = f.read()
        gets = ", ".join(f["get_calls"] for f in stats)
        self.assertIn(f"    bar [{gets}]\n", markdown)
        self.assertIn("| **total (3 runs)** |", markdown)

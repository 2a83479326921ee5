"""
Tests for L{cacheprog.runlog}: the bounded, rotated run log.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.runlog import RunLog, go_command, mark_record, run_record


class RunLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = self.mktemp()
        os.makedirs(self.root)

    def test_appendThenRead(self) -> None:
        """
        Records come back in order, one JSON line each.
        """
        log = RunLog(self.root)
        log.append(mark_record("start", 1.0))
        log.append(run_record({"gets": 3}, 2.0, 3.0, "go build"))
        self.assertEqual(
            list(log.records()),
            [
                {"kind": "mark", "mark": "start", "time": 1.0},
                {"kind": "run", "start": 2.0, "time": 3.0, "command": "go build", "gets": 3},
            ],
        )
        with open(log.path) as f:
            self.assertEqual(len(f.readlines()), 2)

    def test_rotation(self) -> None:
        """
        Past its size limit the file becomes C{runs.jsonl.1} (replacing an
        older one), so the log holds at most about twice the limit, and the
        records of both generations are read, oldest first.
        """
        log = RunLog(self.root, max_bytes=200)
        for n in range(20):
            log.append({"kind": "run", "n": n, "pad": "x" * 40})
        self.assertLessEqual(os.path.getsize(log.path), 200)
        self.assertLessEqual(os.path.getsize(log.path + ".1"), 200)
        numbers = [r["n"] for r in log.records()]
        self.assertEqual(numbers, sorted(numbers))
        self.assertEqual(numbers[-1], 19)
        self.assertLess(len(numbers), 20)

    def test_tornLinesSkipped(self) -> None:
        """
        A torn or foreign line is skipped, the rest still read.
        """
        log = RunLog(self.root)
        with open(log.path, "w") as f:
            f.write('{"kind": "run", "gets": 1}\n{"kind": "ru\n[1, 2]\n')
        self.assertEqual(list(log.records()), [{"kind": "run", "gets": 1}])

    def test_missingFile(self) -> None:
        """
        No log yet: no records.
        """
        self.assertEqual(list(RunLog(self.root).records()), [])

    def test_sortedCompactJSON(self) -> None:
        """
        Lines are compact JSON with sorted keys (stable for diffing).
        """
        log = RunLog(self.root)
        log.append({"b": 1, "a": 2})
        with open(log.path) as f:
            self.assertEqual(f.read(), '{"a":2,"b":1}\n')
        self.assertEqual(json.loads('{"a":2,"b":1}'), {"a": 2, "b": 1})


class GoCommandTests(SynchronousTestCase):
    def fakeProc(self, cmdline: bytes) -> str:
        proc: str = self.mktemp()
        os.makedirs(os.path.join(proc, "42"))
        with open(os.path.join(proc, "42", "cmdline"), "wb") as f:
            f.write(cmdline)
        return proc

    def test_parentCommandLine(self) -> None:
        """
        The parent's command line, its program as a base name.
        """
        proc = self.fakeProc(b"/usr/local/go/bin/go\0test\0-count=1\0./...\0")
        self.assertEqual(go_command(42, proc), "go test -count=1 ./...")

    def test_long(self) -> None:
        """
        Long command lines are cut to 60 characters.
        """
        proc = self.fakeProc(b"go\0build\0" + b"x" * 100 + b"\0")
        self.assertEqual(len(go_command(42, proc)), 60)

    def test_unknown(self) -> None:
        """
        No such process: C{?}.
        """
        self.assertEqual(go_command(42, self.mktemp()), "?")

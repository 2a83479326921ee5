"""
Tests for L{cacheprog.summary}: C{cacheprog summary}.
"""

from __future__ import annotations

import io
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from cacheprog import summary
from cacheprog.runlog import RunLog, mark_record, run_record

STATS = {
    "gets": 10,
    "local_hits": 4,
    "remote_hits": 5,
    "misses": 1,
    "puts": 1,
    "bytes_down": 3 << 20,
    "bytes_up": 2048,
    "remote_wait": 1.25,
    "uploads_dropped": 0,
    "remote_faults": 2,
}


def runs(n: int) -> list[dict[str, object]]:
    return [run_record(STATS, 100.0 + n, 101.0 + n, f"go cmd{n}") for n in range(n)]


class SelectTests(SynchronousTestCase):
    def test_sinceLastMark(self) -> None:
        """
        By default: the runs after the last mark.
        """
        records = [*runs(2), mark_record("a", 5.0), *runs(1)]
        self.assertEqual(len(summary.select_runs(records, None)), 1)

    def test_noMarkMeansAll(self) -> None:
        """
        No mark in the log: every run.
        """
        self.assertEqual(len(summary.select_runs(runs(3), None)), 3)

    def test_namedMark(self) -> None:
        """
        C{--since NAME}: after the last mark of that name, later marks of
        other names included.
        """
        records = [*runs(1), mark_record("job", 1.0), *runs(2), mark_record("other", 2.0), *runs(1)]
        self.assertEqual(len(summary.select_runs(records, "job")), 3)

    def test_unknownMark(self) -> None:
        """
        A mark that is not there is an error naming --since.
        """
        e = self.assertRaises(summary.SummaryError, summary.select_runs, runs(1), "nope")
        self.assertIn("--since", str(e))

    def test_time(self) -> None:
        """
        C{--since} a time: the runs that ended at or after it.
        """
        self.assertEqual(len(summary.select_runs(runs(5), 103.0)), 3)

    def test_parseSince(self) -> None:
        """
        Unix seconds, RFC 3339, a Go duration ago, else a mark name.
        """
        self.assertEqual(summary.parse_since("12.5", 1000.0), 12.5)
        self.assertEqual(summary.parse_since("1970-01-01T00:01:00Z", 1000.0), 60.0)
        self.assertEqual(summary.parse_since("90s", 1000.0), 910.0)
        self.assertEqual(summary.parse_since("job-17", 1000.0), "job-17")


class RenderTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        One row per run, numbered, and a total that adds them up.
        """
        text = summary.table(runs(2))
        lines = text.splitlines()
        self.assertIn("go command", lines[0])
        self.assertTrue(lines[2].startswith("1. go cmd0"))
        self.assertTrue(lines[3].startswith("2. go cmd1"))
        total = lines[5].split()
        self.assertEqual(total[:3], ["total", "(2", "runs)"])
        # gets, local, remote, misses, puts, down (2 words), up (2), wait, dropped, faults
        self.assertEqual(total[3:8], ["20", "8", "10", "2", "2"])
        self.assertEqual(total[8:12], ["6.0", "MiB", "4.0", "KiB"])
        self.assertEqual(total[12:], ["2.5s", "0", "4"])

    def test_markdown(self) -> None:
        """
        Markdown: the totals in a sentence, a table, a Mermaid chart of
        gets and hits per command.
        """
        text = summary.markdown(runs(2))
        self.assertIn("2 go commands, 18 of 20 gets hit (90%), 2 misses", text)
        self.assertIn("| `1. go cmd0` | 10 | 4 | 5 | 1 |", text)
        self.assertIn("| **total (2 runs)** | 20 |", text)
        self.assertIn("```mermaid\nxychart-beta\n", text)
        self.assertIn("bar [10, 10]\n    bar [9, 9]\n", text)

    def test_markdownEscapes(self) -> None:
        """
        A pipe in a command does not break the table.
        """
        text = summary.markdown([run_record(STATS, 1.0, 2.0, "go list -f {{.Dir}}|x")])
        self.assertIn("{{.Dir}}\\|x", text)

    def test_empty(self) -> None:
        """
        No runs: a zero total and no chart.
        """
        self.assertIn("total (0 runs)", summary.table([]))
        self.assertNotIn("mermaid", summary.markdown([]))


class MainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.patch(sys, "stdout", self.out)
        self.patch(sys, "stderr", self.err)

    def main(self, *argv: str, **environ: str) -> int:
        return summary.main(["--root-directory", self.root, *argv], environ, now=1000.0)

    def test_markThenSummary(self) -> None:
        """
        C{--mark} records a mark; the summary then shows only later runs.
        """
        log = RunLog(self.root)
        log.append(runs(1)[0])
        self.assertEqual(self.main("--mark", "job"), 0)
        log.append(runs(2)[1])
        self.assertEqual(self.main(), 0)
        self.assertIn("total (1 run)", self.out.getvalue())
        self.assertIn("go cmd1", self.out.getvalue())
        self.assertNotIn("go cmd0", self.out.getvalue())

    def test_rootFromEnvironment(self) -> None:
        """
        Without the flag, CACHEPROG_ROOT_DIRECTORY names the root.
        """
        RunLog(self.root).append(runs(1)[0])
        self.assertEqual(summary.main([], {"CACHEPROG_ROOT_DIRECTORY": self.root}), 0)
        self.assertIn("go cmd0", self.out.getvalue())

    def test_github(self) -> None:
        """
        C{--github} appends the Markdown to $GITHUB_STEP_SUMMARY and prints
        the table.
        """
        RunLog(self.root).append(runs(1)[0])
        target = self.mktemp()
        with open(target, "w") as f:
            f.write("before\n")
        self.assertEqual(self.main("--github", GITHUB_STEP_SUMMARY=target), 0)
        with open(target) as f:
            written = f.read()
        self.assertTrue(written.startswith("before\n### Go build cache"))
        self.assertIn("```mermaid", written)
        self.assertIn("-----", self.out.getvalue())

    def test_githubWithoutVariable(self) -> None:
        """
        C{--github} outside GitHub Actions: exit 1 naming the variable,
        nothing printed.
        """
        self.assertEqual(self.main("--github"), 1)
        self.assertIn("GITHUB_STEP_SUMMARY", self.err.getvalue())
        self.assertEqual(self.out.getvalue(), "")

    def test_unknownMark(self) -> None:
        """
        An unknown mark exits 1 naming --since.
        """
        self.assertEqual(self.main("--since", "nope"), 1)
        self.assertIn("--since", self.err.getvalue())

"""
Tests for L{bench.relay}, the protocol relay of the benchmark's analysis
runs: it must pass go's framing through untouched (a request line, an empty
line, a put's body line) and log only requests and answers.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from bench.relay import last_close_answer, read_logs, summarize
from tests.goenv import REPO

#: A program that answers every request line with its ID (a put's body and
#: the empty lines are not requests), then exits at stdin EOF.
ECHO = (
    "import json, sys\n"
    "print(json.dumps({'ID': 0, 'KnownCommands': ['get', 'put', 'close']}), flush=True)\n"
    "for line in sys.stdin:\n"
    "    if line.startswith('{'):\n"
    "        print(json.dumps({'ID': json.loads(line)['ID']}), flush=True)\n"
)


def go_stream() -> bytes:
    """
    What go writes: each request as a JSON line then an empty line; a put's
    body follows as a JSON string line.
    """
    lines = [
        json.dumps({"ID": 1, "Command": "get", "ActionID": "AAAA"}),
        "",
        json.dumps({"ID": 2, "Command": "put", "ActionID": "AAAA", "OutputID": "BBBB", "BodySize": 3}),
        "",
        '"YWJj"',
        json.dumps({"ID": 3, "Command": "close"}),
        "",
    ]
    return ("\n".join(lines) + "\n").encode()


class RelayTests(SynchronousTestCase):
    def relay(self) -> tuple[bytes, str]:
        directory = tempfile.mkdtemp(prefix="bench-relay-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", directory], check=False))
        log = os.path.join(directory, "relay.$$.json")
        command = f"exec {sys.executable} -c {shlex.quote(ECHO)}"
        env = dict(os.environ, PYTHONPATH=REPO)
        done = subprocess.run(
            [sys.executable, "-m", "bench.relay", log, command],
            input=go_stream(),
            capture_output=True,
            timeout=60,
            env=env,
            check=True,
        )
        (name,) = os.listdir(directory)
        return done.stdout, os.path.join(directory, name)

    def test_framing_passes_through(self) -> None:
        """
        Every answer reaches go; the put's body line is relayed, not taken
        for a request (it once killed the relay's request thread, and the
        program never saw stdin EOF).
        """
        out, log = self.relay()
        answers = [json.loads(line)["ID"] for line in out.splitlines()]
        self.assertEqual(answers, [0, 1, 2, 3])
        (events,) = read_logs([log])
        requests = [(ident, command) for _, kind, ident, command in events if kind == "req"]
        self.assertEqual(requests, [(1, "get"), (2, "put"), (3, "close")])
        self.assertEqual(events[-1][1], "eof")

    def test_summary(self) -> None:
        _, log = self.relay()
        logs = read_logs([log])
        summary = summarize(logs)
        self.assertEqual((summary.gets, summary.max_inflight), (1, 1))
        self.assertIsNotNone(summary.close_to_eof_ms)
        close = last_close_answer(logs)
        assert close is not None
        self.assertLessEqual(close, logs[0][-1][0])

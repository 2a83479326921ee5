"""
Tests for L{cacheprog.cli}: the process as go sees it (a subprocess, no go).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(args: list[str], stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CACHEPROG_")}
    full["PYTHONPATH"] = ROOT + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cacheprog", *args], input=stdin, capture_output=True, env=full, timeout=60
    )


class CLITests(SynchronousTestCase):
    def test_handshake_then_eof(self) -> None:
        """
        With stdin closed at once (go list), the only stdout line is the
        handshake and the exit status is 0.
        """
        result = run(["--root-directory", self.mktemp()])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b'{"ID":0,"KnownCommands":["close","get","put"]}\n')
        self.assertIn(b"Starting cacheprog", result.stderr)
        self.assertIn(b"cacheprog statistics", result.stderr)

    def test_statistics_fields_and_run_log(self) -> None:
        """
        The statistics line has real logfmt fields after the reference's
        message (C{msg="cacheprog statistics" get_calls=0 get_hits=0
        get_hit_ratio=... put_calls=0 ...}), and the run is appended to the
        run log of the local root with the same numbers.
        """
        root = self.mktemp()
        result = run(["--root-directory", root])
        self.assertRegex(
            result.stderr,
            rb'level=INFO msg="cacheprog statistics" get_calls=0 get_hits=0 get_hit_ratio=0.00 put_calls=0 ',
        )
        with open(os.path.join(root, "runs.jsonl")) as f:
            records = [json.loads(line) for line in f]
        self.assertEqual(len(records), 1)
        self.assertEqual((records[0]["kind"], records[0]["gets"], records[0]["puts"]), ("run", 0, 0))

    def test_summary_command(self) -> None:
        """
        C{cacheprog summary} reads that run log and prints the table.
        """
        root = self.mktemp()
        run(["--root-directory", root])
        result = run(["summary", "--root-directory", root])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"total (1 run)", result.stdout)

    def test_disable_flags_via_env(self) -> None:
        """
        CACHEPROG_DISABLE_GET / _PUT shape the handshake.
        """
        result = run(["--root-directory", self.mktemp()], env={"CACHEPROG_DISABLE_GET": "true"})
        self.assertEqual(json.loads(result.stdout), {"ID": 0, "KnownCommands": ["close", "put"]})

    def test_bad_value_before_handshake(self) -> None:
        """
        A bad value exits 1 with nothing on stdout and the variable named on stderr.
        """
        result = run([], env={"CACHEPROG_REMOTE_GET_TIMEOUT": "abc"})
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"")
        self.assertIn(b"CACHEPROG_REMOTE_GET_TIMEOUT", result.stderr)

    def test_unwritable_root(self) -> None:
        """
        A root that cannot be created exits 1 before the handshake.
        """
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        result = run(["--root-directory", os.path.join(blocker, "x")])
        self.assertEqual((result.returncode, result.stdout), (1, b""))
        self.assertIn(b"not writable", result.stderr)

    def test_dir_store_needs_root(self) -> None:
        """
        The dir store without a directory exits 1 naming the variable.
        """
        result = run([], env={"CACHEPROG_REMOTE_STORAGE_TYPE": "dir"})
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"CACHEPROG_DIR_STORAGE_ROOT", result.stderr)

    def test_log_output(self) -> None:
        """
        --log-output really sends the log to the file (the reference created
        the file and kept logging to stderr).
        """
        logfile = self.mktemp()
        result = run(["--root-directory", self.mktemp(), "--log-output", logfile])
        self.assertEqual(result.returncode, 0)
        self.assertNotIn(b"Starting cacheprog", result.stderr)
        with open(logfile, "rb") as f:
            self.assertIn(b"Starting cacheprog", f.read())

    def test_help_and_version(self) -> None:
        """
        --help and --version print to stdout and exit 0.
        """
        result = run(["--help"])
        self.assertEqual(result.returncode, 0)
        self.assertIn(b"CACHEPROG_REMOTE_STORAGE_TYPE", result.stdout)
        result = run(["--version"])
        self.assertTrue(result.stdout.startswith(b"cacheprog version"))

    def test_malformed_exit_status(self) -> None:
        """
        Malformed input: exit 1, stdout holds only JSON lines.
        """
        result = run(["--root-directory", self.mktemp()], stdin=b'{"ID":1,"Command":"get"}\n\nnot json\n')
        self.assertEqual(result.returncode, 1)
        for line in result.stdout.splitlines():
            json.loads(line)
        self.assertIn(b"Malformed request", result.stderr)

    def test_cpu_profile(self) -> None:
        """
        --cpu-profile writes a pstats file.
        """
        import pstats

        path = self.mktemp()
        result = run(["--root-directory", self.mktemp(), "--cpu-profile", path])
        self.assertEqual(result.returncode, 0, result.stderr)
        pstats.Stats(path)


class TLSTests(SynchronousTestCase):
    def test_needs_tls(self) -> None:
        """
        TLS support is loaded only when a configured URL could need it: S3 on
        AWS or any https endpoint.
        """
        from cacheprog import settings
        from cacheprog.cli import needs_tls as needs
        from cacheprog.config import parse

        def needs_tls(cfg: Config) -> bool:
            return needs(settings.direct(cfg, {}))

        root = ["--dir-storage-root", self.mktemp()]
        s3 = ["--remote-storage-type", "s3", "--s3-bucket", "b"]

        self.assertFalse(needs_tls(parse([], {})))
        self.assertFalse(needs_tls(parse(["--remote-storage-type", "dir", *root], {})))
        self.assertTrue(needs_tls(parse(s3, {})))
        self.assertFalse(
            needs_tls(
                parse(["--remote-storage-type", "s3", "--s3-bucket", "b", "--s3-endpoint", "http://127.0.0.1:9"], {})
            )
        )
        self.assertTrue(
            needs_tls(
                parse(["--remote-storage-type", "s3", "--s3-bucket", "b", "--s3-endpoint", "minio+https://m:9"], {})
            )
        )
        self.assertTrue(needs_tls(parse(["--remote-storage-type", "http", "--http-storage-base-url", "https://p"], {})))
        self.assertTrue(needs_tls(parse(["--metrics-push-endpoint", "https://push"], {})))

"""
Hardening cases that need real processes (issue 12): a planted default
root, a decompression bomb, the proxy's memory under huge and stalled
bodies, slowloris clients, and write/read tokens.  Everything runs on
127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import TestCase

from tests.integration.test_proxy import _environ


def run_direct(env: dict[str, str], stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """
    C{python -m cacheprog} with C{stdin}, as go would start it.
    """
    return subprocess.run(
        [sys.executable, "-m", "cacheprog"],
        input=stdin,
        capture_output=True,
        env=_environ(**env),
        timeout=timeout,
        check=False,
    )


class PlantedRootTests(TestCase):
    """
    Another local user who creates the predictable default root first must
    not get files served to go.
    """

    timeout = 120

    def test_planted_default_root_refused(self) -> None:
        """
        A world-writable C{<tmp>/cacheprog-<uid>} created before us: exit 1
        before the handshake, with a message naming the directory.
        """
        tmp = tempfile.mkdtemp(prefix="cacheprog-planted-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp], check=False)
        planted = os.path.join(tmp, f"cacheprog-{os.getuid()}")
        os.mkdir(planted)
        os.chmod(planted, 0o777)
        done = run_direct({"TMPDIR": tmp})
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertEqual(done.stdout, b"", "no handshake")
        self.assertIn(planted.encode(), done.stderr)

    def test_fresh_default_root_private(self) -> None:
        """
        A default root we create ourselves is 0700 and works.
        """
        tmp = tempfile.mkdtemp(prefix="cacheprog-planted-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp], check=False)
        done = run_direct({"TMPDIR": tmp}, b'{"ID":1,"Command":"close"}\n\n')
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(b'"ID":1', done.stdout)
        self.assertEqual(os.stat(os.path.join(tmp, f"cacheprog-{os.getuid()}")).st_mode & 0o777, 0o700)

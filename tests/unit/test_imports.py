"""
What importing and configuring costs: the go command waits for our
handshake, so everything before it stays free of Twisted, treq and
botocore, and the heavy libraries load only when something uses them.
One table, each row run in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SETTINGS = "from cacheprog import config, settings\nenv = {}\n"
_HEAVY = ("twisted", "treq", "botocore")

#: (what, code, module prefixes it must not import)
ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    ("the command line module", "import cacheprog.cli", _HEAVY),
    ("direct settings, disabled", _SETTINGS + "settings.direct(config.parse([], env), env)", _HEAVY),
    (
        "direct settings, dir",
        _SETTINGS
        + "import tempfile\nargs = ['--remote-storage-type', 'dir', '--dir-storage-root', tempfile.mkdtemp()]\n"
        "settings.direct(config.parse(args, env), env)",
        _HEAVY,
    ),
    (
        "direct settings, s3",
        _SETTINGS + "env = {'CACHEPROG_S3_BUCKET': 'b', 'CACHEPROG_S3_PREFIX': '{% GOOS %}'}\n"
        "settings.direct(config.parse(['--remote-storage-type', 's3'], env), env)",
        _HEAVY,
    ),
    (
        "direct settings, http",
        _SETTINGS + "args = ['--remote-storage-type', 'http', '--http-storage-base-url', 'http://h']\n"
        "settings.direct(config.parse(args, env), env)",
        _HEAVY,
    ),
    ("proxy settings", _SETTINGS + "settings.proxy(config.parse(['proxy'], env), env)", _HEAVY),
    ("the s3 backend module", "import cacheprog.remote.s3", ("treq", "botocore")),
    ("the http backend module", "import cacheprog.remote.http", ("treq",)),
    ("the twistd dropin", "import twisted.plugins.cacheprog_proxy", ("cacheprog.proxy", "twisted.web", "treq")),
]


class ImportCostTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row imports none of its forbidden modules.
        """
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for what, code, forbidden in ROWS:
            probe = f"{code}\nimport sys\nprint(sorted(m for m in sys.modules if m.startswith({forbidden!r})))\n"
            done = subprocess.run(
                [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
            )
            self.assertEqual((done.returncode, done.stdout.strip()), (0, "[]"), f"{what}: {done.stderr}")

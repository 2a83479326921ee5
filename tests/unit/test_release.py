"""
What a release needs: one version number, and the license setup.py names.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from cacheprog import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ReleaseTests(SynchronousTestCase):
    def test_oneVersion(self) -> None:
        """
        setup.py's version is the package's C{__version__} (read, not copied).
        """
        done = subprocess.run(
            [sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip().splitlines()[-1], __version__)
        with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
            self.assertNotIn(f'"{__version__}"', f.read())

    def test_license(self) -> None:
        """
        LICENSE is the MIT license setup.py declares, and is shipped.
        """
        with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
            self.assertTrue(f.read().startswith("MIT License"))
        with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
            text = f.read()
        self.assertIn('license="MIT"', text)
        self.assertIn('license_files=["LICENSE"]', text)

"""
Tests for L{cacheprog.frozen}: what the compiled binary adjusts at start-up.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from cacheprog import frozen


class FrozenTests(SynchronousTestCase):
    def test_from_source_nothing(self) -> None:
        """
        Run from source, C{prepare_frozen} leaves the environment alone.
        """
        environ: dict[str, str] = {}
        frozen.prepare_frozen(environ)
        self.assertFalse(frozen.is_compiled())
        self.assertEqual(environ, {})

    def test_compiled_sets_data_path(self) -> None:
        """
        Compiled, C{AWS_DATA_PATH} names C{awsdata} next to the package.
        """
        self.patch(frozen, "is_compiled", lambda: True)
        environ: dict[str, str] = {}
        frozen.prepare_frozen(environ)
        package = os.path.dirname(os.path.abspath(frozen.__file__))
        self.assertEqual(environ, {"AWS_DATA_PATH": os.path.join(os.path.dirname(package), "awsdata")})

    def test_user_path_first(self) -> None:
        """
        A user's C{AWS_DATA_PATH} stays first; ours is appended once.
        """
        environ = {"AWS_DATA_PATH": "/models"}
        frozen.add_data_path(environ)
        frozen.add_data_path(environ)
        self.assertEqual(environ["AWS_DATA_PATH"], "/models" + os.pathsep + frozen.data_directory())

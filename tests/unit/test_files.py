"""
Tests for L{cacheprog.files}: atomic writes, content hashes, quiet unlinks.
"""

from __future__ import annotations

import hashlib
import io
import os

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.files import copy_atomic, file_digest, unlink_quietly, write_atomic


class FilesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "target")

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def names(self) -> list[str]:
        return sorted(os.listdir(self.directory))

    def test_write_replaces(self) -> None:
        """
        The new content replaces the old one whole, readable by all, no temp
        file left.
        """
        write_atomic(self.directory, self.path, b"old")
        write_atomic(self.directory, self.path, b"new")
        self.assertEqual(self.read(), b"new")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o644)
        self.assertEqual(self.names(), ["target"])

    def test_copy(self) -> None:
        """
        A file's content is copied under the final name.
        """
        copy_atomic(self.directory, self.path, io.BytesIO(b"x" * 3000000))
        self.assertEqual(self.read(), b"x" * 3000000)
        self.assertEqual(self.names(), ["target"])

    def test_failed_copy_leaves_nothing(self) -> None:
        """
        A source that fails mid-way leaves neither the target nor a temp file.
        """

        class Broken(io.BytesIO):
            def read(self, size: int | None = -1) -> bytes:
                raise OSError("disk gone")

        self.assertRaises(OSError, copy_atomic, self.directory, self.path, Broken())
        self.assertEqual(self.names(), [])

    def test_digest(self) -> None:
        write_atomic(self.directory, self.path, b"abc")
        self.assertEqual(file_digest(self.path), hashlib.sha256(b"abc").digest())

    def test_unlink_quietly(self) -> None:
        """
        A file is removed; a missing one is no error.
        """
        write_atomic(self.directory, self.path, b"abc")
        unlink_quietly(self.path)
        unlink_quietly(self.path)
        self.assertEqual(self.names(), [])

"""
Tests for L{cacheprog.spool}: a body's way into the local tier.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from cacheprog.local import LocalWriteError
from cacheprog.spool import Spool

from .helpers import action
from .test_local import StoreCase

WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)


class SpoolTests(StoreCase):
    def leftovers(self) -> list[str]:
        return [n for _, _, names in os.walk(self.store.root) for n in names if n.endswith(".tmp")]

    def test_streamed(self) -> None:
        """
        A spool written through a temp file ends up the same as an in-memory one.
        """
        path = self.commit(action(1), b"x" * 10000, in_memory=False)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"x" * 10000)
        self.assertEqual(self.leftovers(), [])

    def test_bad_base64_fails_commit(self) -> None:
        """
        Invalid base64 in a body makes the commit fail (an Err), not crash.
        """
        spool = Spool(self.store, in_memory=True)
        spool.write_base64(b"!!!!")
        self.assertRaises(LocalWriteError, spool.commit, action(1), b"", WHEN)

    def test_discard(self) -> None:
        """
        A discarded big spool leaves no temp file and records nothing.
        """
        spool = Spool(self.store, in_memory=False)
        spool.write(b"x" * 100)
        spool.discard()
        self.assertEqual(self.leftovers(), [])
        self.assertIsNone(self.store.lookup(action(1)))

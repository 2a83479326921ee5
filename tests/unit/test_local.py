"""
Tests for L{cacheprog.local}: layout, atomic content-addressed files, healing.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.local import DiskStore, Spool

from .helpers import action, output_of

WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)


class DiskStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = DiskStore(self.mktemp())
        self.store.probe()

    def commit(self, action_id: bytes, body: bytes, in_memory: bool = True) -> str:
        spool = Spool(self.store, in_memory=in_memory)
        spool.write(body)
        path = spool.commit(action_id, output_of(body), WHEN).path
        self.store.flush()
        return path

    def fresh(self) -> DiskStore:
        """
        The same root as the next process sees it.
        """
        return DiskStore(self.store.root)

    def test_layout(self) -> None:
        """
        Data lives at <root>/<xx>/<sha256 hex>-data, raw, no extension; meta
        at <root>/<xx>/<action hex>-meta with the reference's fields.
        """
        path = self.commit(action(1), b"abc")
        digest = output_of(b"abc").hex()
        self.assertEqual(path, os.path.join(self.store.root, digest[:2], digest + "-data"))
        with open(self.store.meta_path(action(1))) as f:
            meta = json.load(f)
        self.assertEqual(meta["version"], 1)
        self.assertEqual(meta["size"], 3)
        self.assertTrue(meta["time"].startswith("2026-01-01T00:00:00"))

    def test_same_content_shared(self) -> None:
        """
        Two actions with the same output share one file (all empty bodies do).
        """
        self.assertEqual(self.commit(action(1), b""), self.commit(action(2), b""))

    def test_never_rewritten(self) -> None:
        """
        A new output for an action gets a new file; the old path keeps its bytes.
        """
        old = self.commit(action(1), b"first")
        inode = os.stat(old).st_ino
        new = self.commit(action(1), b"second")
        self.assertNotEqual(old, new)
        with open(old, "rb") as f:
            self.assertEqual(f.read(), b"first")
        self.commit(action(2), b"first")
        self.assertEqual(os.stat(old).st_ino, inode)

    def test_streamed(self) -> None:
        """
        A spool written through a temp file ends up the same as an in-memory one.
        """
        path = self.commit(action(1), b"x" * 10000, in_memory=False)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"x" * 10000)
        leftovers = [n for _, _, names in os.walk(self.store.root) for n in names if n.endswith(".tmp")]
        self.assertEqual(leftovers, [])

    def test_heal_missing_data(self) -> None:
        """
        Meta without its data file is a miss and the meta is removed.
        """
        os.unlink(self.commit(action(1), b"abc"))
        self.assertIsNone(self.fresh().lookup(action(1)))
        self.assertFalse(os.path.exists(self.store.meta_path(action(1))))

    def test_heal_wrong_size(self) -> None:
        """
        A data file of the wrong size is a miss.
        """
        with open(self.commit(action(1), b"abc"), "ab") as f:
            f.write(b"more")
        self.assertIsNone(self.fresh().lookup(action(1)))

    def test_heal_garbage_meta(self) -> None:
        """
        An unreadable meta file is a miss.
        """
        self.commit(action(1), b"abc")
        with open(self.store.meta_path(action(1)), "w") as f:
            f.write("{not json")
        self.assertIsNone(self.fresh().lookup(action(1)))

    def test_meta_written_at_flush(self) -> None:
        """
        A committed entry is visible in this process at once; its meta file
        (what other processes see) appears at flush.
        """
        spool = Spool(self.store, in_memory=True)
        spool.write(b"abc")
        entry = spool.commit(action(1), output_of(b"abc"), WHEN)
        self.assertEqual(self.store.lookup(action(1)), entry)
        self.assertIsNone(self.fresh().lookup(action(1)))
        self.store.flush()
        self.assertEqual(self.fresh().lookup(action(1)), entry)

    def test_bad_base64_fails_commit(self) -> None:
        """
        Invalid base64 in a body makes the commit fail (an Err), not crash.
        """
        spool = Spool(self.store, in_memory=True)
        spool.write_base64(b"!!!!")
        from cacheprog.local import LocalWriteError

        self.assertRaises(LocalWriteError, spool.commit, action(1), b"", WHEN)

    def test_probe_unwritable(self) -> None:
        """
        probe fails for a root that cannot be created.
        """
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        from cacheprog.local import LocalWriteError

        self.assertRaises(LocalWriteError, DiskStore(os.path.join(blocker, "x")).probe)

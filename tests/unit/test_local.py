"""
Tests for L{cacheprog.local}: layout, atomic content-addressed files, healing.
"""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import datetime, timezone

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.local import STALE_TEMP, DiskStore, LocalWriteError, UnsafeRoot
from cacheprog.spool import Spool

from .helpers import action, output_of

WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)


class StoreCase(SynchronousTestCase):
    """
    A local tier in a fresh root, and a way to put entries in it.
    """

    def setUp(self) -> None:
        self.store = DiskStore(self.mktemp())
        self.store.probe()

    def commit(self, action_id: bytes, body: bytes, in_memory: bool = True) -> str:
        spool = Spool(self.store, in_memory=in_memory)
        spool.write(body)
        path = spool.commit(action_id, output_of(body), WHEN).path
        self.store.flush()
        return path


class DiskStoreTests(StoreCase):
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

    def test_probe_unwritable(self) -> None:
        """
        probe fails for a root that cannot be created.
        """
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        from cacheprog.local import LocalWriteError

        self.assertRaises(LocalWriteError, DiskStore(os.path.join(blocker, "x")).probe)


def flip(path: str) -> None:
    """
    Change one byte of a file in place (same size).
    """
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))


class IntegrityTests(DiskStoreTests):
    """
    Wrong bytes are never served from the local tier, and a put heals them.
    """

    def test_flipped_small_is_miss(self) -> None:
        """
        A small data file changed in place (same size) is a miss, not a hit.
        """
        flip(self.commit(action(1), b"abc" * 100))
        self.assertIsNone(self.fresh().lookup(action(1)))

    def test_put_heals_flipped(self) -> None:
        """
        A put of the right body rewrites a damaged data file of the right
        size (it was kept because its size matched), in memory or streamed.
        """
        for n, in_memory in ((1, True), (2, False)):
            body = b"body %d " % n * 5000
            path = self.commit(action(n), body, in_memory)
            flip(path)
            self.assertEqual(self.commit(action(n + 10), body, in_memory), path)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), body)

    def test_big_checks_size_only(self) -> None:
        """
        Entries above the verify limit are not re-hashed on lookup (cost),
        only their size is checked.
        """
        store = DiskStore(self.store.root, verify_limit=10)
        spool = Spool(store, in_memory=True)
        spool.write(b"x" * 100)
        path = spool.commit(action(1), output_of(b"x" * 100), WHEN).path
        store.flush()
        flip(path)
        self.assertIsNotNone(DiskStore(self.store.root, verify_limit=10).lookup(action(1)))


class RootSafetyTests(SynchronousTestCase):
    """
    A root another local user could write in is refused, naming the path.
    """

    def test_default_created_private(self) -> None:
        root = os.path.join(self.mktemp(), "cacheprog-1000")
        DiskStore(root, default=True).probe()
        self.assertEqual(stat.S_IMODE(os.stat(root).st_mode), 0o700)

    def test_planted_world_writable(self) -> None:
        """
        A pre-created 0777 default root is refused with its path in the error.
        """
        root = self.mktemp()
        os.makedirs(root)
        os.chmod(root, 0o777)
        with self.assertRaises(UnsafeRoot) as caught:
            DiskStore(root, default=True).probe()
        self.assertIn(root, str(caught.exception))
        self.assertIn("writable by others", str(caught.exception))
        with self.assertRaises(UnsafeRoot):
            DiskStore(root).probe()

    def test_group_writable(self) -> None:
        """
        Group-writable: refused as the default root, the user's choice when explicit.
        """
        root = self.mktemp()
        os.makedirs(root)
        os.chmod(root, 0o770)
        self.assertRaises(UnsafeRoot, DiskStore(root, default=True).probe)
        DiskStore(root).probe()

    def test_symlink(self) -> None:
        """
        A default root that is a symlink (to a directory another user
        controls) is refused; an explicit symlinked root is followed.
        """
        target = os.path.abspath(self.mktemp())
        os.makedirs(target)
        link = os.path.abspath(self.mktemp())
        os.symlink(target, link)
        with self.assertRaises(UnsafeRoot) as caught:
            DiskStore(link, default=True).probe()
        self.assertIn("symlink", str(caught.exception))
        DiskStore(link).probe()

    def test_other_owner(self) -> None:
        """
        A root owned by another user is refused, explicit or not.
        """
        if os.getuid() != 0:
            raise self.skipTest("needs root to give a directory away")
        root = self.mktemp()
        os.makedirs(root)
        os.chown(root, 12345, 12345)
        with self.assertRaises(UnsafeRoot) as caught:
            DiskStore(root).probe()
        self.assertIn("owned by uid 12345", str(caught.exception))

    def test_planted_subdirectory(self) -> None:
        """
        A world-writable directory inside the root is refused too (at its
        first use: a put answers Err, never plants files).
        """
        store = DiskStore(self.mktemp())
        store.probe()
        sub = os.path.dirname(store.data_path(output_of(b"abc")))
        os.makedirs(sub)
        os.chmod(sub, 0o777)
        spool = Spool(store, in_memory=True)
        spool.write(b"abc")
        self.assertRaises(LocalWriteError, spool.commit, action(1), output_of(b"abc"), WHEN)


class SweepTests(SynchronousTestCase):
    """
    Spool files of killed processes are removed at start; live ones never.
    """

    def test_stale_removed_live_kept(self) -> None:
        store = DiskStore(self.mktemp())
        store.probe()
        dead, dead_name = store.temp_file()
        dead.write(b"partial")
        dead.close()  # the killed writer's lock is gone with it
        live, live_name = store.temp_file()
        fresh = os.path.join(os.path.dirname(live_name), ".spool.fresh.tmp")
        with open(fresh, "wb"):
            pass
        old = time.time() - STALE_TEMP - 1
        os.utime(dead_name, (old, old))
        os.utime(live_name, (old, old))
        self.assertEqual(store.sweep(), 1)
        self.assertFalse(os.path.exists(dead_name))
        self.assertTrue(os.path.exists(live_name), "locked by a live writer")
        self.assertTrue(os.path.exists(fresh), "too young")
        live.close()

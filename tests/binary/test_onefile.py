"""
The one-file binary's unpacking (C{build/nuitka_onefile_cache.py}): once per
build into C{$XDG_CACHE_HOME/cacheprog/<version>-<hash>}, safe when many
processes start at the same time, never rewritten afterwards.

Runs C{dist/cacheprog} directly (no chroot), each test with its own
C{XDG_CACHE_HOME}.  The binary is built as in L{tests.binary.test_scratch}.
"""

from __future__ import annotations

import os
import subprocess
import time

from twisted.trial.unittest import TestCase

from tests.binary.test_scratch import RUN_TIMEOUT, _Binary

HANDSHAKE = b'{"ID":0,"KnownCommands":["close","get","put"]}\n'


class OnefileUnpackTests(TestCase):
    def setUp(self) -> None:
        self.binary = _Binary.require()
        self.cache = os.path.abspath(self.mktemp())
        os.makedirs(self.cache)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEPROG_")}
        self.env["XDG_CACHE_HOME"] = self.cache

    def start(self, name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [self.binary, "--root-directory", os.path.abspath(self.mktemp())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )

    def unpacked(self) -> str:
        """
        The one directory under C{$XDG_CACHE_HOME/cacheprog}.
        """
        entries = os.listdir(os.path.join(self.cache, "cacheprog"))
        self.assertEqual(len(entries), 1, entries)
        return os.path.join(self.cache, "cacheprog", entries[0])

    def test_concurrent_first_starts(self) -> None:
        """
        Eight processes started together on an empty cache all answer the
        handshake and exit 0; one directory results, marked complete, with
        no temporary marker left.
        """
        procs = [self.start(f"p{i}") for i in range(8)]
        for proc in procs:
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
            self.assertEqual((proc.returncode, out), (0, HANDSHAKE), err.decode(errors="replace")[-3000:])
        directory = self.unpacked()
        from cacheprog import __version__

        self.assertTrue(os.path.basename(directory).startswith(__version__ + "-"), directory)
        names = os.listdir(directory)
        self.assertIn(".unpacked", names)
        self.assertEqual([n for n in names if n.startswith(".unpacked.")], [])
        self.assertIn("cacheprog.bin", names)

    def test_unpacked_once(self) -> None:
        """
        Later starts use the unpacked files without writing them again.
        """
        first = self.start("first")
        out, err = first.communicate(timeout=RUN_TIMEOUT)
        self.assertEqual((first.returncode, out), (0, HANDSHAKE), err)
        directory = self.unpacked()
        program = os.path.join(directory, "cacheprog.bin")
        before = os.stat(program).st_mtime_ns
        time.sleep(0.05)
        again = self.start("again")
        out, err = again.communicate(timeout=RUN_TIMEOUT)
        self.assertEqual((again.returncode, out), (0, HANDSHAKE), err)
        self.assertEqual(os.stat(program).st_mtime_ns, before)

    def test_incomplete_directory_repaired(self) -> None:
        """
        A directory without the completion marker (a first start killed
        while unpacking) is unpacked again: a truncated file is rewritten.
        """
        first = self.start("first")
        first.communicate(timeout=RUN_TIMEOUT)
        directory = self.unpacked()
        os.remove(os.path.join(directory, ".unpacked"))
        program = os.path.join(directory, "cacheprog.bin")
        size = os.path.getsize(program)
        with open(program, "r+b") as f:
            f.truncate(size // 2)
        again = self.start("again")
        out, err = again.communicate(timeout=RUN_TIMEOUT)
        self.assertEqual((again.returncode, out), (0, HANDSHAKE), err)
        self.assertEqual(os.path.getsize(program), size)
        self.assertTrue(os.path.exists(os.path.join(directory, ".unpacked")))

    def test_exec_no_parent(self) -> None:
        """
        The bootstrap becomes the Python program (exec, no parent process
        left waiting): the process go started is the one that answers (and
        gets go's signals), and a bad option's exit status 1 comes through.
        """
        bad = subprocess.run(
            [self.binary, "--remote-get-timeout", "abc"], capture_output=True, env=self.env, timeout=RUN_TIMEOUT
        )
        self.assertEqual(bad.returncode, 1, bad.stderr)
        proc = subprocess.Popen(
            [self.binary, "--root-directory", os.path.abspath(self.mktemp())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        assert proc.stdout is not None and proc.stdin is not None
        self.assertEqual(proc.stdout.readline(), HANDSHAKE)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            self.assertIn(b"cacheprog", f.read())
        children = subprocess.run(["ps", "--ppid", str(proc.pid), "-o", "pid="], capture_output=True, text=True)
        self.assertEqual(children.stdout.strip(), "", "the bootstrap left a child process")
        proc.stdin.close()
        proc.stdout.read()
        self.assertEqual(proc.wait(timeout=RUN_TIMEOUT), 0)

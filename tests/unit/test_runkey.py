"""
Tests for L{cacheprog.runkey}: what names "the same go command again".
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.runkey import describe, module_root, run_key, starter


class RunKeyTests(SynchronousTestCase):
    def test_module_root(self) -> None:
        """
        The nearest directory with a go.mod at or above the working
        directory; the directory itself without one.
        """
        top = os.path.abspath(self.mktemp())
        deep = os.path.join(top, "mod", "a", "b")
        os.makedirs(deep)
        with open(os.path.join(top, "mod", "go.mod"), "w") as f:
            f.write("module x\n")
        self.assertEqual(module_root(deep), os.path.join(top, "mod"))
        self.assertEqual(module_root(top), top)

    def test_parent_command(self) -> None:
        """
        The description holds the starting process's arguments and
        executable (here: this test's own process as the "parent").
        """
        described = describe({"GOOS": "plan9", "GOARCH": "arm", "GOFLAGS": "-race"}, ppid=os.getpid(), cwd="/")
        self.assertTrue(described["command"])
        self.assertEqual(described["toolchain"], os.readlink("/proc/self/exe"))
        self.assertEqual((described["goos"], described["goarch"], described["goflags"]), ("plan9", "arm", "-race"))

    def test_keys(self) -> None:
        """
        Keys are 64 hex digits; another command, another key; the same
        description, the same key; an override replaces the description.
        """
        build = {"command": ["go", "build", "./..."], "module": "/src"}
        test = {"command": ["go", "test", "./..."], "module": "/src"}
        self.assertRegex(run_key(build), r"^[0-9a-f]{64}$")
        self.assertEqual(run_key(build), run_key(dict(reversed(list(build.items())))))
        self.assertNotEqual(run_key(build), run_key(test))
        self.assertEqual(run_key(build, "shared"), run_key(test, "shared"))
        self.assertNotEqual(run_key(build, "shared"), run_key(build))

    def test_onefile_bootstrap(self) -> None:
        """
        In the one-file binary whose bootstrap is our parent, the starter is
        the bootstrap's parent; otherwise the parent itself.
        """
        me, parent = os.getpid(), os.getppid()
        self.assertEqual(starter({"NUITKA_ONEFILE_PARENT": str(me)}, me), parent)
        self.assertEqual(starter({}, me), me)

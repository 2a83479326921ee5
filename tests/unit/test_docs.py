"""
The docs match the tree: docs/architecture.md names every module of the
package and only modules that exist, and every C{test-case-name} marker
names a test module.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

TOP = Path(__file__).resolve().parents[2]
#: Where a bare module name in the architecture page may live.
PLACES = ("", "cacheprog", "cacheprog/remote", "cacheprog/proxy")


def named_modules(text: str) -> set[str]:
    """
    Every C{`something.py`} the page names.
    """
    return set(re.findall(r"`([A-Za-z0-9_./-]+\.py)`", text))


def markers() -> dict[str, list[str]]:
    """
    Each source file's C{test-case-name} modules.
    """
    found: dict[str, list[str]] = {}
    for path in sorted([*TOP.glob("cacheprog/**/*.py"), *TOP.glob("twisted/plugins/*.py")]):
        head = path.read_text(encoding="utf-8").split("\n", 1)[0]
        m = re.search(r"test-case-name:\s*(\S+)\s*-\*-", head)
        if m:
            found[str(path.relative_to(TOP))] = m.group(1).split(",")
    return found


class ArchitectureTests(SynchronousTestCase):
    def test_named_modules_exist(self) -> None:
        """
        Every module the architecture page names exists.
        """
        text = (TOP / "docs" / "architecture.md").read_text(encoding="utf-8")
        names = named_modules(text)
        self.assertTrue(names, "the page names no module: the pattern is wrong")
        missing = [n for n in sorted(names) if not any((TOP / place / n).is_file() for place in PLACES)]
        self.assertEqual(missing, [])

    def test_every_module_is_named(self) -> None:
        """
        Every module of the package is named (by its file name, or its path
        below C{cacheprog/} or from the top).
        """
        names = named_modules((TOP / "docs" / "architecture.md").read_text(encoding="utf-8"))
        unnamed = []
        for path in sorted((TOP / "cacheprog").glob("**/*.py")):
            below, from_top = str(path.relative_to(TOP / "cacheprog")), str(path.relative_to(TOP))
            if path.name != "__init__.py" and not {path.name, below, from_top} & names:
                unnamed.append(below)
        self.assertEqual(unnamed, [])

    def test_pattern_sees_a_missing_module(self) -> None:
        """
        The check above can fail: a name that is not in the tree is caught.
        """
        self.assertEqual(named_modules("see `nowhere_at_all.py` and `cli.py`"), {"nowhere_at_all.py", "cli.py"})
        self.assertFalse(any((TOP / place / "nowhere_at_all.py").is_file() for place in PLACES))


class MarkerTests(SynchronousTestCase):
    def test_markers_name_test_modules(self) -> None:
        """
        Every C{test-case-name} marker names a test module that exists.
        """
        found = markers()
        self.assertTrue(found, "no marker found: the pattern is wrong")
        missing = {
            source: name
            for source, names in found.items()
            for name in names
            if not (TOP / (name.replace(".", "/") + ".py")).is_file()
        }
        self.assertEqual(missing, {})

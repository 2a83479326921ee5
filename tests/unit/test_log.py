"""
Tests for L{cacheprog.log}: logfmt lines, levels, and where they go.
"""

from __future__ import annotations

import io
import logging
import os

from twisted.trial.unittest import SynchronousTestCase

from cacheprog import log


class ParseLevelTests(SynchronousTestCase):
    """
    L{log.parse_level} takes the level names Go's slog takes.
    """

    def test_names(self) -> None:
        """
        Names are case-insensitive; WARNING is WARN.
        """
        self.assertEqual(log.parse_level("debug"), logging.DEBUG)
        self.assertEqual(log.parse_level("Info"), logging.INFO)
        self.assertEqual(log.parse_level("WARN"), logging.WARNING)
        self.assertEqual(log.parse_level("warning"), logging.WARNING)
        self.assertEqual(log.parse_level(" ERROR "), logging.ERROR)

    def test_offsets(self) -> None:
        """
        slog's offsets (4 per level) map onto the stdlib's (10 per level).
        """
        self.assertEqual(log.parse_level("INFO+4"), logging.WARNING)
        self.assertEqual(log.parse_level("INFO-4"), logging.DEBUG)

    def test_unknown(self) -> None:
        """
        Anything else is a ValueError naming the text and the choices.
        """
        for text in ("", "loud", "INFO+", "3"):
            with self.assertRaises(ValueError) as caught:
                log.parse_level(text)
            self.assertIn("DEBUG, INFO, WARN or ERROR", str(caught.exception))


class OutputTests(SynchronousTestCase):
    """
    L{log.configure} and L{log.Logger} write logfmt lines to a stream or a file.
    """

    def tearDown(self) -> None:
        log.configure(stream=io.StringIO())

    def test_logfmt_fields(self) -> None:
        """
        A line has time, level, msg and the fields; values with spaces, quotes
        or newlines are quoted and escaped, bare ones are not.
        """
        stream = io.StringIO()
        log.configure(level=logging.DEBUG, stream=stream)
        log.Logger("t").info("hello world", key="v", spaced="a b", quoted='say "x"', lines="1\n2", n=3)
        line = stream.getvalue()
        self.assertTrue(line.startswith('time="'), line)
        self.assertIn(' level=INFO msg="hello world" key=v spaced="a b" quoted="say \\"x\\"" lines="1\\n2" n=3', line)
        self.assertEqual(line.count("\n"), 1)

    def test_level_filters(self) -> None:
        """
        Lines below the configured level are dropped.
        """
        stream = io.StringIO()
        log.configure(level=logging.WARNING, stream=stream)
        logger = log.Logger("t")
        logger.debug("d")
        logger.info("i")
        logger.warn("w")
        logger.error("e")
        lines = stream.getvalue().splitlines()
        self.assertEqual([line.split(" level=")[1].split(" ")[0] for line in lines], ["WARN", "ERROR"])

    def test_file_output_appends(self) -> None:
        """
        C{--log-output} appends to the file; nothing goes to the stream then.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("earlier\n")
        log.configure(output=path)
        log.Logger("t").warn("to the file")
        logging.getLogger("cacheprog").handlers[0].flush()
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertTrue(text.startswith("earlier\n"))
        self.assertIn('msg="to the file"', text)
        self.assertTrue(os.path.getsize(path) > len("earlier\n"))

    def test_reconfigure_replaces_handler(self) -> None:
        """
        Configuring again replaces the handler instead of adding one, so a
        line is never written twice.
        """
        first, second = io.StringIO(), io.StringIO()
        log.configure(stream=first)
        log.configure(stream=second)
        log.Logger("t").info("once")
        self.assertEqual(first.getvalue(), "")
        self.assertEqual(second.getvalue().count("once"), 1)

"""
Tests for L{cacheprog.proxy.access}: tokens from files or variables.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.proxy.access import TokenError, Tokens, load_tokens


class LoadTests(SynchronousTestCase):
    def test_file_or_variable(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\n")
        tokens = load_tokens("", path, {"CACHEPROG_PROXY_READ_TOKEN": " r "})
        self.assertEqual(tokens, Tokens(read=b"r", write=b"s3cret"))
        self.assertTrue(load_tokens("", "", {}).open)

    def test_errors_name_their_source(self) -> None:
        empty = self.mktemp()
        open(empty, "w").close()
        for read, write, name in (
            ("", "/nonexistent/token", "--proxy-write-token-file"),
            (empty, "", "--proxy-read-token-file"),
        ):
            with self.assertRaises(TokenError) as caught:
                load_tokens(read, write, {})
            self.assertIn(name, str(caught.exception))
        with self.assertRaises(TokenError) as caught:
            load_tokens("", "", {"CACHEPROG_PROXY_WRITE_TOKEN": "has space"})
        self.assertIn("CACHEPROG_PROXY_WRITE_TOKEN", str(caught.exception))


class RefusalTests(SynchronousTestCase):
    def test_open(self) -> None:
        self.assertIsNone(Tokens().refusal(b"PUT", None))

    def test_write_only(self) -> None:
        """
        Only a write token: reads stay open, writes need it.
        """
        tokens = Tokens(write=b"w")
        self.assertIsNone(tokens.refusal(b"GET", None))
        self.assertEqual(tokens.refusal(b"PUT", None)[0], 401)  # type: ignore[index]
        self.assertEqual(tokens.refusal(b"PUT", b"Basic w")[0], 403)  # type: ignore[index]
        self.assertIsNone(tokens.refusal(b"PUT", b"bearer w"))

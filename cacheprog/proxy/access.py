# -*- test-case-name: tests.unit.test_access -*-
"""
Who may read and write through the proxy: optional bearer tokens.

The SHA-256 check on every body cannot catch a consistent lie (a body that
matches its OutputID but is not what the action builds): only limiting who
may write can.  With a write token set, a PUT must carry
C{Authorization: Bearer <write token>}; with a read token set, a GET or HEAD
must carry the read token (or the write token).  Checked from the headers,
before any body byte is read (401 without the header, 403 with a wrong
one), compared in constant time.  Unset tokens: anyone who can reach the
proxy may do it (today's behaviour).

Tokens come from files (C{--proxy-write-token-file}) or variables
(C{CACHEPROG_PROXY_WRITE_TOKEN}), never from the command line, which other
local users can read in C{/proc}.  Clients send them with
C{--http-storage-extra-headers "Authorization:Bearer <token>"}.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

import attrs

_E = "CACHEPROG_PROXY_"
READS = (b"GET", b"HEAD")


class TokenError(Exception):
    """
    A token file cannot be read or is empty (named in the message).
    """


@attrs.frozen
class Tokens:
    """
    The proxy's tokens (None: that access is open).
    """

    read: bytes | None = None
    write: bytes | None = None

    @property
    def open(self) -> bool:
        return self.read is None and self.write is None

    def refusal(self, method: bytes, authorization: bytes | None) -> tuple[int, str] | None:
        """
        Why a storage request may not proceed, as (status, text); None if it may.
        """
        if method in READS:
            wanted = [t for t in (self.read, self.write) if t is not None] if self.read is not None else []
        else:
            wanted = [self.write] if self.write is not None else []
        if not wanted:
            return None
        if authorization is None:
            return 401, "a token is required: send Authorization: Bearer <token>"
        scheme, _, given = authorization.strip().partition(b" ")
        given = given.strip()
        ok = False
        for token in wanted:
            # Every token is compared (no early exit), each in constant time.
            ok = hmac.compare_digest(given, token) | ok
        if scheme.lower() != b"bearer" or not ok:
            return 403, "the token does not allow this"
        return None


def load_tokens(read_file: str, write_file: str, environ: Mapping[str, str]) -> Tokens:
    """
    The tokens from their files or variables (a file wins).

    @raise TokenError: naming the file or variable at fault.
    """
    return Tokens(
        read=_token(read_file, "--proxy-read-token-file", _E + "READ_TOKEN", environ),
        write=_token(write_file, "--proxy-write-token-file", _E + "WRITE_TOKEN", environ),
    )


def _token(path: str, flag: str, variable: str, environ: Mapping[str, str]) -> bytes | None:
    if path:
        try:
            with open(path, "rb") as f:
                text = f.read().strip()
        except OSError as e:
            raise TokenError(f"{flag}: cannot read {path}: {e.strerror}") from None
        if not text:
            raise TokenError(f"{flag}: {path} is empty")
        where = flag
    else:
        text = environ.get(variable, "").strip().encode("utf-8")
        if not text:
            return None
        where = variable
    if any(c < 0x21 or c > 0x7E for c in text):
        raise TokenError(f"{where}: a token is printable ASCII without spaces")
    return text

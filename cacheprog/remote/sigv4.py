# -*- test-case-name: tests.unit.test_sigv4 -*-
"""
AWS Signature Version 4 for S3 requests, header form.

botocore's signer builds an C{AWSRequest}, splits the URL again and derives
a fresh signing key (four HMACs) for every request: about 0.7 ms each, which
is a fifth of the CPU of a small upload.  The signing key only changes with
the day, the region and the secret, so it is kept; what is left per request
is one canonical request, one SHA-256 and one HMAC.

Sans-I/O: the caller passes the clock's time and the credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import quote

#: The payload hash of a body that is not signed (TLS protects it).
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

#: Headers a proxy or the HTTP client may change on the way: never signed
#: (botocore leaves out the same ones).
_NEVER_SIGNED = frozenset({"authorization", "user-agent", "expect", "x-amzn-trace-id", "accept-encoding"})


class Credentials(NamedTuple):
    """
    What a signature needs of the credentials (botocore's
    C{ReadOnlyCredentials} has the same fields).
    """

    access_key: str
    secret_key: str
    token: str | None = None


def canonical_query(query: str) -> str:
    """
    The canonical form of a query string whose names and values are already
    percent-encoded the strict way (L{encode_query}): parameters sorted, a
    bare name given an empty value.
    """
    if not query:
        return ""
    pairs = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        pairs.append((name, value))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def encode_query(params: Mapping[str, str]) -> str:
    """
    A query string encoded as SigV4 wants it (everything but unreserved
    characters percent-encoded, C{/} included), so that the bytes sent are
    the canonical ones.
    """
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in params.items())


class Signer:
    """
    Signs S3 requests for one service; keeps the last signing key.
    """

    def __init__(self, service: str = "s3", exclude: frozenset[str] = frozenset()) -> None:
        """
        @param exclude: lowercase header names sent but left out of the
            signature (C{--s3-exclude-headers-from-signing}).
        """
        self._service = service
        self._exclude = exclude | _NEVER_SIGNED
        self._key_for: tuple[str, str, str] = ("", "", "")
        self._key = b""

    def _signing_key(self, secret: str, day: str, region: str) -> bytes:
        if self._key_for != (secret, day, region):
            key = _hmac(("AWS4" + secret).encode("utf-8"), day)
            for part in (region, self._service, "aws4_request"):
                key = _hmac(key, part)
            self._key_for, self._key = (secret, day, region), key
        return self._key

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        payload_sha256: str,
        credentials: Credentials,
        region: str,
        now: float | None = None,
    ) -> dict[str, str]:
        """
        The headers to send: C{headers} plus C{X-Amz-Date},
        C{X-Amz-Content-SHA256}, C{X-Amz-Security-Token} (with a session
        token) and C{Authorization}.

        @param host: the C{Host} header (with the port when not the default).
        @param path: the request path, already percent-encoded as sent
            (S3 paths are not encoded twice).
        @param payload_sha256: hex SHA-256 of the body, or L{UNSIGNED_PAYLOAD}.
        @param now: seconds since the epoch (default: the system clock).
        """
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        day = stamp[:8]
        sent = dict(headers)
        sent["X-Amz-Date"] = stamp
        sent["X-Amz-Content-SHA256"] = payload_sha256
        if credentials.token:
            sent["X-Amz-Security-Token"] = credentials.token
        signed = {"host": host}
        for name, value in sent.items():
            lower = name.lower()
            if lower not in self._exclude:
                signed[lower] = " ".join(str(value).split())
        names = sorted(signed)
        signed_headers = ";".join(names)
        canonical = "\n".join(
            (
                method,
                path or "/",
                canonical_query(query),
                "".join(f"{n}:{signed[n]}\n" for n in names),
                signed_headers,
                payload_sha256,
            )
        )
        scope = f"{day}/{region}/{self._service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
        signature = hmac.new(self._signing_key(credentials.secret_key, day, region), to_sign.encode(), "sha256")
        sent["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature.hexdigest()}"
        )
        return sent


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), "sha256").digest()

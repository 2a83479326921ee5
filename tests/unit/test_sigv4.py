"""
The SigV4 signer against botocore's: same canonical request, same
signature, and the signing key derived once per day and region.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.remote.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD, Credentials, Signer, canonical_query, encode_query

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
NOW = 1_780_000_000.0


def botocore_signature(
    method: str, url: str, headers: dict[str, str], payload: str, creds: Credentials, region: str
) -> str:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    request = AWSRequest(method=method, url=url, headers=headers)
    stamp = headers["X-Amz-Date"]

    class Fixed(S3SigV4Auth):  # type: ignore[misc]
        def payload(self, request: Any) -> str:
            return payload

        def add_auth(self, request: Any) -> None:
            request.context["timestamp"] = stamp
            canonical = self.canonical_request(request)
            self.signature_value = self.signature(self.string_to_sign(request, canonical), request)

    signer = Fixed(BotoCredentials(creds.access_key, creds.secret_key, creds.token), "s3", region)
    signer.add_auth(request)
    return str(signer.signature_value)


class SignerTests(SynchronousTestCase):
    def check(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        headers: dict[str, str],
        payload: str,
        creds: Credentials = CREDS,
        signer: Signer | None = None,
    ) -> dict[str, str]:
        sent = (signer or Signer()).sign(method, host, path, query, headers, payload, creds, "eu-west-1", now=NOW)
        url = f"http://{host}{path}" + (f"?{query}" if query else "")
        mine = sent["Authorization"].rsplit("Signature=", 1)[1]
        names = sent["Authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
        signed = {k: v for k, v in sent.items() if k.lower() in names}
        theirs = botocore_signature(method, url, signed, payload, creds, "eu-west-1")
        self.assertEqual(mine, theirs)
        return sent

    def test_get(self) -> None:
        sent = self.check("GET", "s3.test:9000", "/bucket/ab/cd", "", {}, EMPTY_SHA256)
        self.assertEqual(sent["X-Amz-Content-SHA256"], EMPTY_SHA256)
        self.assertIn("SignedHeaders=host;x-amz-content-sha256;x-amz-date,", sent["Authorization"])
        self.assertIn("Credential=AKIDEXAMPLE/20260528/eu-west-1/s3/aws4_request", sent["Authorization"])

    def test_put_with_metadata_and_token(self) -> None:
        headers = {"x-amz-meta-output_id": "AAAA  BB", "Expires": "Wed, 06 May 2026 07:08:09 GMT"}
        sent = self.check("PUT", "b.s3.test", "/key%20x", "", headers, UNSIGNED_PAYLOAD, Credentials("A", "S", "TOKEN"))
        self.assertEqual(sent["X-Amz-Security-Token"], "TOKEN")
        self.assertIn("x-amz-security-token", sent["Authorization"])

    def test_queries(self) -> None:
        self.check("GET", "s3.test", "/bucket", "location", {}, EMPTY_SHA256)
        query = encode_query({"list-type": "2", "prefix": "ci/linux/", "continuation-token": "a+b="})
        self.assertEqual(query, "list-type=2&prefix=ci%2Flinux%2F&continuation-token=a%2Bb%3D")
        self.check("GET", "s3.test", "/bucket", query, {}, EMPTY_SHA256)
        self.assertEqual(canonical_query("b=2&a=1&c"), "a=1&b=2&c=")

    def test_excluded_and_unsigned_headers(self) -> None:
        signer = Signer(exclude=frozenset({"if-match"}))
        sent = self.check(
            "HEAD", "s3.test", "/k", "", {"If-Match": "abc", "User-Agent": "x"}, EMPTY_SHA256, signer=signer
        )
        self.assertEqual(sent["If-Match"], "abc")
        self.assertNotIn("if-match", sent["Authorization"])
        self.assertNotIn("user-agent", sent["Authorization"])

    def test_signing_key_cached(self) -> None:
        """
        The four-HMAC key derivation runs once per (secret, day, region).
        """
        signer = Signer()
        calls: list[tuple[str, str, str]] = []
        original = Signer._signing_key

        def counting(this: Signer, secret: str, day: str, region: str) -> bytes:
            if this._key_for != (secret, day, region):
                calls.append((secret, day, region))
            return original(this, secret, day, region)

        self.patch(Signer, "_signing_key", counting)
        for _ in range(3):
            self.check("GET", "h", "/k", "", {}, EMPTY_SHA256, signer=signer)
        self.check("GET", "h", "/k", "", {}, EMPTY_SHA256, Credentials("A", "other"), signer=signer)
        self.assertEqual(len(calls), 2)

"""
Tests for L{cacheprog.remote.s3request}: how the store's requests are signed.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.interfaces import NotFound
from cacheprog.remote.s3request import USER_AGENT, SignedRequest, target
from cacheprog.remote.sigv4 import EMPTY_SHA256, Credentials, Signer
from tests.unit.fakes3 import AID, KEY_ID, SECRET, S3TestCase, upload


class SignatureTests(S3TestCase):
    def test_authorization(self) -> None:
        obj = upload(b"signed body " * 100)
        self.result(self.make().put(obj))
        put = self.fake.requests[-1]
        self.assertEqual(put.method, "PUT")
        auth = put.headers["authorization"]
        self.assertTrue(auth.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/"), auth)
        self.assertIn("/us-east-1/s3/aws4_request", auth)
        self.assertEqual(put.headers["x-amz-content-sha256"], hashlib.sha256(put.body).hexdigest())
        self.assertEqual(put.body, obj.data)
        signed = put.signed_headers
        for name in ("host", "x-amz-content-sha256", "x-amz-date", "x-amz-meta-output_id"):
            self.assertIn(name, signed)
        self.assertNotIn("accept-encoding", signed)
        self.assertNotIn("user-agent", signed)
        head = self.fake.requests[-2]
        self.assertEqual(head.headers["x-amz-content-sha256"], EMPTY_SHA256)

    def test_signature_verifies(self) -> None:
        """
        botocore's own signer, given the recorded request, finds the same
        signature (so our precomputed payload hash is the right one).
        """
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        self.result(self.make().put(upload(b"verify me")))
        put = self.fake.requests[-1]
        signed = put.signed_headers
        request = AWSRequest(
            method="PUT",
            url=f"http://{put.host}{put.uri}",
            headers={k: v for k, v in put.headers.items() if k in signed and k != "host"},
            data=put.body,
        )
        stamp = put.headers["x-amz-date"]

        class Fixed(S3SigV4Auth):  # type: ignore[misc]
            def add_auth(self, request: Any) -> None:
                request.context["timestamp"] = stamp
                self._modify_request_before_signing(request)
                canonical = self.canonical_request(request)
                self.signature_value = self.signature(self.string_to_sign(request, canonical), request)

        signer = Fixed(Credentials(KEY_ID, SECRET), "s3", "us-east-1")
        signer.add_auth(request)
        self.assertIn(f"Signature={signer.signature_value}", put.headers["authorization"])

    def test_excluded_headers(self) -> None:
        store = self.make(exclude_headers_from_signing=("if-match", "expires", "accept-encoding"), expiration=60.0)
        self.result(store.put(upload(b"x")))
        head, put = self.fake.requests
        self.assertIn("if-match", head.headers)
        self.assertNotIn("if-match", head.signed_headers)
        self.assertIn("expires", put.headers)
        self.assertNotIn("expires", put.signed_headers)
        self.assertIn("x-amz-meta-output_id", put.signed_headers)
        # Without the option they are signed.
        self.result(self.make(expiration=60.0).put(upload(b"y")))
        head, put = self.fake.requests[2:]
        self.assertIn("if-match", head.signed_headers)
        self.assertIn("expires", put.signed_headers)

    def test_session_token(self) -> None:
        store = self.make(session_token="TOKEN")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        request = self.fake.requests[-1]
        self.assertEqual(request.headers["x-amz-security-token"], "TOKEN")
        self.assertIn("x-amz-security-token", request.signed_headers)


class TargetTests(SynchronousTestCase):
    def test_default_port_left_out(self) -> None:
        """
        The signed C{Host} is the one Twisted sends: without a default port.
        """
        self.assertEqual(target("https://b.s3.test:443/k?x=1"), ("b.s3.test", "/k", "x=1"))
        self.assertEqual(target("http://s3.test:80/b/k"), ("s3.test", "/b/k", ""))
        self.assertEqual(target("http://s3.test:9000/b/k"), ("s3.test:9000", "/b/k", ""))
        self.assertEqual(target("https://s3.test:80/b/k"), ("s3.test:80", "/b/k", ""))

    def test_user_agent(self) -> None:
        """
        Every request says who sends it (not signed).
        """
        sent: dict[str, Any] = {}

        class Client:
            def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
                sent.update(kwargs)
                return Deferred()

        request = SignedRequest(
            Client(), Signer(), "GET", "http://s3.test:9000/b/k", {}, None, EMPTY_SHA256, Credentials("K", "S"), "r"
        )
        request()
        self.assertEqual(sent["headers"]["User-Agent"], USER_AGENT)
        self.assertNotIn("user-agent", sent["headers"]["Authorization"])
        self.assertEqual((sent["unbuffered"], sent["allow_redirects"]), (True, False))

"""
Tests for L{cacheprog.remote.s3region}: the region a store signs for, given
or detected.
"""

from __future__ import annotations

import sys
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from cacheprog.cache import inline_runner
from cacheprog.interfaces import NotFound
from cacheprog.remote import credentials as credentials_module
from cacheprog.remote.credentials import CredentialsError, CredentialSource
from cacheprog.remote.s3answers import S3Error
from cacheprog.remote.s3config import S3Settings
from cacheprog.remote.s3region import Probed, environment_region, probe_region
from tests.unit.fakes3 import AID, BUCKET, FakeS3, FakeStatic, S3TestCase, error_xml


class RegionTests(S3TestCase):
    def test_detect(self) -> None:
        store = self.make(region="")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        location, get = self.fake.requests
        self.assertEqual((location.method, location.uri), ("GET", f"/{BUCKET}?location"))
        self.assertIn("/us-east-1/s3/aws4_request", location.headers["authorization"])
        self.assertIn("/eu-central-1/s3/aws4_request", get.headers["authorization"])
        self.assertEqual(store.region, "eu-central-1")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(len(self.fake.requests), 3, "detected once")

    def test_seaweedfs_location(self) -> None:
        self.fake.location = (
            b'<?xml version="1.0" encoding="UTF-8"?>\n<CreateBucketConfiguration>'
            b"<LocationConstraint></LocationConstraint></CreateBucketConfiguration>"
        )
        store = self.make(region="")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(store.region, "us-east-1")

    def profile_region(self, region: str) -> None:
        """
        The botocore profile's region (AWS_REGION would skip the probe).
        """
        self.patch(sys.modules["cacheprog.remote.s3region"], "default_region", lambda: region)

    def test_failure_falls_back_to_profile(self) -> None:
        self.fake.fail.extend([(403, "AccessDenied"), (403, "")])
        self.profile_region("ap-east-1")
        store = self.make(region="")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(store.region, "ap-east-1")
        self.assertEqual([r.method for r in self.fake.requests], ["GET", "HEAD", "GET"])

    def test_bucket_region_header(self) -> None:
        class Redirect(FakeS3):
            def render(self, request: Request) -> bytes | int:
                if request.uri.endswith(b"?location"):
                    request.setResponseCode(301)
                    request.setHeader("x-amz-bucket-region", "sa-east-1")
                    return error_xml("PermanentRedirect")
                return super().render(request)

        self.fake = Redirect()
        self.stub = StubTreq(self.fake)
        store = self.make(region="")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(store.region, "sa-east-1")

    def test_timeout(self) -> None:
        self.fake.hang = True
        self.profile_region("eu-north-1")
        store = self.make(region="")
        d = self.start(store.get(AID))
        self.assertNoResult(d)
        self.clock.advance(store.region_timeout)
        self.assertEqual(store.region, "eu-north-1")
        self.assertEqual(len(self.fake.requests), 2, "location probe, then the get")
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_waiter_cancel_does_not_stop_detection(self) -> None:
        self.fake.hang = True
        self.profile_region("eu-north-1")
        store = self.make(region="")
        d = self.start(store.get(AID))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.clock.advance(store.region_timeout)
        self.assertEqual(store.region, "eu-north-1")

    def test_fallback_default(self) -> None:
        self.patch(credentials_module, "default_region", lambda: "")
        self.patch(sys.modules["cacheprog.remote.s3region"], "default_region", lambda: "")
        self.fake.fail.extend([(500, ""), (500, "")])
        store = self.make(region="")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(store.region, "us-east-1")

    def test_credentials_failure_does_not_pin_a_region(self) -> None:
        self.profile_region("eu-north-1")
        store = self.make(region="")
        calls: list[int] = []

        def resolver(s: S3Settings) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise CredentialsError("not yet")
            return FakeStatic()

        store._credentials = CredentialSource(store.settings, inline_runner, self.clock, resolver=resolver)
        self.failureResultOf(self.start(store.get(AID)), CredentialsError)
        self.assertEqual(store.region, "")
        self.clock.advance(CredentialSource.retry_after)
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(store.region, "eu-central-1")

    def test_given_region_never_probes(self) -> None:
        store = self.make(region="eu-west-3")
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(len(self.fake.requests), 1)


class ProbeTests(SynchronousTestCase):
    """
    L{probe_region} against scripted answers.
    """

    def probe(self, *answers: Probed) -> tuple[Deferred[str], list[tuple[str, str, str]]]:
        asked: list[tuple[str, str, str]] = []
        script = list(answers)

        async def ask(method: str, query: str, operation: str) -> Probed:
            asked.append((method, query, operation))
            return script.pop(0)

        return Deferred.fromCoroutine(probe_region(ask)), asked

    def test_location(self) -> None:
        d, asked = self.probe(Probed(200, None, b"<LocationConstraint>ap-south-1</LocationConstraint>"))
        self.assertEqual(self.successResultOf(d), "ap-south-1")
        self.assertEqual(asked, [("GET", "location", "get bucket location")])

    def test_unreadable_location_with_hint(self) -> None:
        d, _ = self.probe(Probed(200, "eu-west-2", b"not xml"))
        self.assertEqual(self.successResultOf(d), "eu-west-2")

    def test_head_bucket_hint(self) -> None:
        d, asked = self.probe(Probed(403, None, error_xml("AccessDenied")), Probed(200, "ca-central-1", b""))
        self.assertEqual(self.successResultOf(d), "ca-central-1")
        self.assertEqual([a[:2] for a in asked], [("GET", "location"), ("HEAD", "")])

    def test_no_answer(self) -> None:
        d, _ = self.probe(Probed(403, None, error_xml("AccessDenied", "no")), Probed(403, None, b""))
        error = self.failureResultOf(d, S3Error).value
        self.assertEqual((error.status, error.code, error.message), (403, "AccessDenied", "no"))

    def test_environment_order(self) -> None:
        self.assertEqual(environment_region({"AWS_REGION": "a", "AWS_DEFAULT_REGION": "b"}), "a")
        self.assertEqual(environment_region({"AWS_REGION": " ", "AWS_DEFAULT_REGION": "b"}), "b")
        self.assertEqual(environment_region({}), "")

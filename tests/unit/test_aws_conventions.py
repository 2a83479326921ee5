"""
The AWS conventions the S3 backend follows: the region from C{AWS_REGION} /
C{AWS_DEFAULT_REGION} before any probe (corrected by the bucket's region
header when wrong), endpoints from C{AWS_ENDPOINT_URL_S3} /
C{AWS_ENDPOINT_URL}, and jittered retry delays.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Mapping

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from cacheprog.config import ConfigError
from cacheprog.interfaces import NotFound
from cacheprog.remote import factory
from cacheprog.remote.s3config import Endpoint, S3Settings
from cacheprog.remote.s3retry import jittered
from tests.unit.fakes3 import AID, HEX, FakeS3, S3TestCase, Stored, config_for, error_xml


class EnvironmentRegionTests(S3TestCase):
    def test_awsRegionBeforeProbe(self) -> None:
        """
        With C{--s3-region} empty and C{AWS_REGION} set (GitHub's AWS
        actions always set it), no GetBucketLocation is sent: the first
        request is the get itself, signed for that region.
        """
        store = self.make(region="", environ={"AWS_REGION": "eu-north-1", "AWS_DEFAULT_REGION": "ap-east-1"})
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual([r.uri for r in self.fake.requests], [f"/{self.fake.bucket}/{HEX}"])
        self.assertIn("/eu-north-1/s3/", self.fake.requests[0].headers["authorization"])
        self.assertEqual(store.region, "eu-north-1")

    def test_awsDefaultRegion(self) -> None:
        """
        C{AWS_DEFAULT_REGION} when C{AWS_REGION} is unset (or empty).
        """
        store = self.make(region="", environ={"AWS_REGION": " ", "AWS_DEFAULT_REGION": "ap-east-1"})
        self.failureResultOf(self.start(store.get(AID)), NotFound)
        self.assertEqual(len(self.fake.requests), 1)
        self.assertEqual(store.region, "ap-east-1")

    def test_explicitRegionWins(self) -> None:
        """
        C{--s3-region} beats the environment.
        """
        store = self.make(region="us-west-2", environ={"AWS_REGION": "eu-north-1"})
        self.assertEqual(store.region, "us-west-2")

    def test_wrongEnvironmentRegionCorrected(self) -> None:
        """
        A bucket in another region than C{AWS_REGION} answers a redirect
        naming its region (C{x-amz-bucket-region}): the store switches to
        it and asks again, once; later requests use it directly.
        """

        class Elsewhere(FakeS3):
            def render(self, request: Request) -> bytes | int:
                if b"/sa-east-1/s3/" not in (request.getHeader(b"authorization") or b""):
                    self.requests.append(None)  # type: ignore[arg-type]
                    request.setResponseCode(301)
                    request.setHeader("x-amz-bucket-region", "sa-east-1")
                    return error_xml("PermanentRedirect")
                return super().render(request)

        self.fake = Elsewhere()
        self.stub = StubTreq(self.fake)
        body = b"elsewhere"
        self.fake.objects[HEX] = self.stored(body)
        store = self.make(region="", environ={"AWS_REGION": "eu-north-1"})
        got = self.result(store.get(AID))
        self.assertEqual(self.body(got), body)
        self.assertEqual(store.region, "sa-east-1")
        self.assertEqual(len(self.fake.requests), 2)
        self.failureResultOf(self.start(store.get(b"\x02" * 32)), NotFound)
        self.assertEqual(len(self.fake.requests), 3)

    def stored(self, body: bytes) -> Stored:
        return Stored(body, {"output_id": base64.b64encode(hashlib.sha256(body).digest()).decode()})


class EndpointEnvironmentTests(SynchronousTestCase):
    def settings(self, environ: Mapping[str, str], *args: str) -> S3Settings:
        cfg, env = config_for(["--s3-bucket", "b", *args], environ)
        plan = factory.check(cfg, env)
        assert isinstance(plan, S3Settings)
        return plan

    def test_serviceSpecificFirst(self) -> None:
        """
        C{AWS_ENDPOINT_URL_S3} beats C{AWS_ENDPOINT_URL}.
        """
        built = self.settings({"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_ENDPOINT_URL": "http://other:1"})
        self.assertEqual(built.endpoint, Endpoint("http", "127.0.0.1:9000", "", minio=False))

    def test_generic(self) -> None:
        """
        C{AWS_ENDPOINT_URL} alone is used.
        """
        built = self.settings({"AWS_ENDPOINT_URL": "https://s3.example.com"})
        self.assertEqual(built.endpoint, Endpoint("https", "s3.example.com", "", minio=False))

    def test_cacheprogWins(self) -> None:
        """
        C{CACHEPROG_S3_ENDPOINT} (or the flag) beats both.
        """
        built = self.settings({"AWS_ENDPOINT_URL_S3": "http://a:1", "CACHEPROG_S3_ENDPOINT": "http://b:2"})
        self.assertEqual(built.endpoint, Endpoint("http", "b:2", "", minio=False))

    def test_ignoreConfigured(self) -> None:
        """
        C{AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true} (botocore's switch)
        leaves AWS.
        """
        built = self.settings({"AWS_ENDPOINT_URL_S3": "http://a:1", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"})
        self.assertIsNone(built.endpoint)

    def test_badValueNamesVariable(self) -> None:
        """
        A bad endpoint from the environment names that variable.
        """
        cfg, env = config_for(["--s3-bucket", "b"], {"AWS_ENDPOINT_URL": "ftp://x"})
        message = str(self.assertRaises(ConfigError, factory.check, cfg, env))
        self.assertIn("AWS_ENDPOINT_URL", message)


class JitterTests(SynchronousTestCase):
    def test_equalJitter(self) -> None:
        """
        A retry waits between half and all of its backoff step, so many
        clients failing together do not retry in lock step.
        """
        generator = random.Random(7)
        delays = [jittered(0.2, generator.random) for _ in range(200)]
        self.assertTrue(all(0.1 <= d <= 0.2 for d in delays), delays)
        self.assertGreater(len(set(delays)), 100)


class JitteredRetryTests(S3TestCase):
    def test_retryAfterJitteredDelay(self) -> None:
        """
        The store sleeps the jittered delay: with the random source at 0,
        the first retry comes after half the first step, not before.
        """
        store = self.make()
        store.random = lambda: 0.0
        self.fake.fail.append((503, "SlowDown"))
        d = self.start(store.get(AID))
        self.clock.advance(store.backoff[0] / 2 - 0.001)
        self.stub.flush()
        self.assertEqual(len(self.fake.requests), 1)
        self.clock.advance(0.001)
        self.stub.flush()
        self.assertEqual(len(self.fake.requests), 2)
        self.failureResultOf(d, NotFound)

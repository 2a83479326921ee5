"""
Tests for L{cacheprog.remote.credentials}: resolving and refreshing S3
credentials off the reactor.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, TypeVar, cast

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.cache import inline_runner
from cacheprog.interfaces import NotFound
from cacheprog.remote import credentials as credentials_module
from cacheprog.remote.credentials import CredentialsError, CredentialSource
from cacheprog.remote.s3 import S3Store
from cacheprog.remote.s3config import S3Settings
from cacheprog.remote.s3request import HTTPClient
from tests.unit.fakes3 import AID, KEY_ID, SECRET, FakeS3, FakeStatic, quiet_logs, settings

T = TypeVar("T")


class RecordingRunner:
    """
    A thread runner that runs inline but records what ran in it.
    """

    def __init__(self) -> None:
        self.inside = False
        self.calls = 0

    def __call__(self, f: Callable[..., T], *args: object) -> Deferred[T]:
        self.calls += 1
        self.inside = True
        try:
            return inline_runner(f, *args)
        finally:
            self.inside = False


class FakeRefreshable:
    def __init__(self, runner: RecordingRunner) -> None:
        self.runner = runner
        self.frozen_calls = 0
        self.needed = False

    def refresh_needed(self) -> bool:
        return self.needed

    def get_frozen_credentials(self) -> Any:
        from botocore.credentials import ReadOnlyCredentials

        assert self.runner.inside, "refresh must run in the thread runner"
        self.frozen_calls += 1
        return ReadOnlyCredentials(f"KEY{self.frozen_calls}", "secret", None)


class CredentialSourceTests(SynchronousTestCase):
    def test_refresh_in_thread(self) -> None:
        clock = Clock()
        runner = RecordingRunner()
        creds = FakeRefreshable(runner)
        source = CredentialSource(settings(), runner, clock, resolver=lambda s: creds)
        self.assertEqual(self.successResultOf(source.frozen()).access_key, "KEY1")
        self.assertEqual(self.successResultOf(source.frozen()).access_key, "KEY1")
        self.assertEqual(runner.calls, 1)
        creds.needed = True
        self.assertEqual(self.successResultOf(source.frozen()).access_key, "KEY1", "rechecked every 30 s only")
        clock.advance(source.recheck)
        self.assertEqual(self.successResultOf(source.frozen()).access_key, "KEY2")
        self.assertEqual(runner.calls, 2)

    def test_shared_resolution(self) -> None:
        clock = Clock()
        gate: Deferred[Any] = Deferred()
        calls: list[int] = []

        def runner(f: Callable[..., T], *args: object) -> Deferred[T]:
            calls.append(1)
            return gate.addCallback(lambda _: f(*args))

        source = CredentialSource(settings(), runner, clock, resolver=lambda s: FakeStatic())
        first, second = source.frozen(), source.frozen()
        second.cancel()
        gate.callback(None)
        self.assertEqual(self.successResultOf(first).access_key, "STATIC")
        self.failureResultOf(second, CancelledError)
        self.assertEqual(len(calls), 1)

    def test_failure_remembered_briefly(self) -> None:
        clock = Clock()
        calls: list[int] = []

        def resolver(s: S3Settings) -> Any:
            calls.append(1)
            raise CredentialsError("none")

        source = CredentialSource(settings(), inline_runner, clock, resolver=resolver)
        self.failureResultOf(source.frozen(), CredentialsError)
        self.failureResultOf(source.frozen(), CredentialsError)
        self.assertEqual(len(calls), 1)
        clock.advance(source.retry_after)
        self.failureResultOf(source.frozen(), CredentialsError)
        self.assertEqual(len(calls), 2)


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """
    Exactly C{values} plus a few settings that keep botocore off the network
    and away from this machine's AWS files.
    """
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(
        {
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "PATH": saved.get("PATH", ""),
        }
    )
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class CredentialsHandler(BaseHTTPRequestHandler):
    answer: dict[str, Any] = {}
    status = 200

    def do_GET(self) -> None:
        body = json.dumps(self.answer).encode()
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ResolveTests(SynchronousTestCase):
    def setUp(self) -> None:
        quiet_logs(self)

    def test_static(self) -> None:
        creds = credentials_module.resolve(settings(session_token="T"))
        frozen = creds.get_frozen_credentials()
        self.assertEqual((frozen.access_key, frozen.secret_key, frozen.token), (KEY_ID, SECRET, "T"))

    def test_default_chain_environment(self) -> None:
        with environment({"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "envsecret"}):
            creds = credentials_module.resolve(settings(access_key_id="", access_key_secret=""))
        self.assertEqual(creds.get_frozen_credentials().access_key, "ENVKEY")

    def test_default_chain_empty(self) -> None:
        with environment({}):
            self.assertRaises(
                CredentialsError, credentials_module.resolve, settings(access_key_id="", access_key_secret="")
            )

    def test_default_region(self) -> None:
        with environment({"AWS_DEFAULT_REGION": "me-south-1"}):
            self.assertEqual(credentials_module.default_region(), "me-south-1")
        with environment({}):
            self.assertEqual(credentials_module.default_region(), "")

    def serve(self, answer: dict[str, Any], status: int = 200) -> str:
        handler = type("Handler", (CredentialsHandler,), {"answer": answer, "status": status})
        server = HTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return f"http://127.0.0.1:{server.server_address[1]}/creds"

    def test_endpoint(self) -> None:
        url = self.serve(
            {
                "AccessKeyId": "EPKEY",
                "SecretAccessKey": "epsecret",
                "Token": "eptoken",
                "Expiration": "2099-01-01T00:00:00Z",
            }
        )
        creds = credentials_module.resolve(settings(access_key_id="", access_key_secret="", credentials_endpoint=url))
        frozen = creds.get_frozen_credentials()
        self.assertEqual((frozen.access_key, frozen.token), ("EPKEY", "eptoken"))
        self.assertTrue(hasattr(creds, "refresh_needed"))

    def test_endpoint_without_expiration(self) -> None:
        url = self.serve({"AccessKeyId": "EPKEY", "SecretAccessKey": "epsecret"})
        creds = credentials_module.resolve(settings(access_key_id="", access_key_secret="", credentials_endpoint=url))
        self.assertEqual(creds.get_frozen_credentials().token, None)

    def test_endpoint_failure_falls_back_to_static(self) -> None:
        from botocore.utils import ContainerMetadataFetcher

        self.patch(ContainerMetadataFetcher, "SLEEP_TIME", 0)
        url = self.serve({"message": "no"}, status=500)
        creds = credentials_module.resolve(settings(credentials_endpoint=url))
        self.assertEqual(creds.get_frozen_credentials().access_key, KEY_ID)
        self.assertRaises(
            CredentialsError,
            credentials_module.resolve,
            settings(access_key_id="", access_key_secret="", credentials_endpoint=url),
        )

    def test_store_signs_with_endpoint_credentials(self) -> None:
        url = self.serve({"AccessKeyId": "EPKEY", "SecretAccessKey": "s", "Token": "tok"})
        fake = FakeS3()
        stub = StubTreq(fake)
        store = S3Store(
            settings(access_key_id="", access_key_secret="", credentials_endpoint=url),
            cast(HTTPClient, stub),
            Clock(),
            inline_runner,
            environ={},
        )
        d = Deferred.fromCoroutine(store.get(AID))
        stub.flush()
        self.failureResultOf(d, NotFound)
        self.assertIn("Credential=EPKEY/", fake.requests[0].headers["authorization"])
        self.assertEqual(fake.requests[0].headers["x-amz-security-token"], "tok")

    def test_no_credentials_is_an_error(self) -> None:
        store = S3Store(
            settings(access_key_id="", access_key_secret=""),
            cast(HTTPClient, StubTreq(FakeS3())),
            Clock(),
            inline_runner,
            environ={},
        )
        with environment({}):
            d = Deferred.fromCoroutine(store.get(AID))
        self.failureResultOf(d, CredentialsError)

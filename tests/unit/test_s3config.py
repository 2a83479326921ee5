"""
Tests for L{cacheprog.remote.s3config}: key layout, Go names, the checked
options and URLs.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.config import ConfigError
from cacheprog.remote import factory
from cacheprog.remote.s3config import Endpoint, S3Settings, go_arch, go_os, object_key, parse_endpoint
from tests.unit.fakes3 import AID, ENDPOINT, HEX, config_for


class KeyLayoutTests(SynchronousTestCase):
    def test_no_prefix(self) -> None:
        self.assertEqual(object_key("", AID), HEX)

    def test_prefix_join_rules(self) -> None:
        self.assertEqual(object_key("a/b", AID), f"a/b/{HEX}")
        self.assertEqual(object_key("a//b/", AID), f"a/b/{HEX}")
        self.assertEqual(object_key("a/./b/../c", AID), f"a/c/{HEX}")
        self.assertEqual(object_key("/lead", AID), f"/lead/{HEX}")
        self.assertEqual(object_key("//lead//x", AID), f"/lead/x/{HEX}")
        self.assertEqual(object_key(".", AID), HEX)
        self.assertEqual(object_key("a/..", AID), HEX)

    def test_lowercase_hex(self) -> None:
        self.assertEqual(object_key("", b"\xab\xcd"), "abcd")


class GoNamesTests(SynchronousTestCase):
    def test_arch(self) -> None:
        self.assertEqual(go_arch("x86_64"), "amd64")
        self.assertEqual(go_arch("AMD64"), "amd64")
        self.assertEqual(go_arch("aarch64"), "arm64")
        self.assertEqual(go_arch("arm64"), "arm64")
        self.assertEqual(go_arch("i686"), "386")
        self.assertEqual(go_arch("armv7l"), "arm")
        self.assertEqual(go_arch("riscv64"), "riscv64")

    def test_os(self) -> None:
        self.assertEqual(go_os("linux"), "linux")
        self.assertEqual(go_os("darwin"), "darwin")
        self.assertEqual(go_os("win32"), "windows")
        self.assertEqual(go_os("freebsd14"), "freebsd")


class CheckTests(SynchronousTestCase):
    def check(self, args: list[str], environ: Mapping[str, str] | None = None) -> S3Settings:
        cfg, env = config_for(args, environ)
        plan = factory.check(cfg, env)
        assert isinstance(plan, S3Settings)
        return plan

    def error(self, args: list[str], environ: Mapping[str, str] | None = None) -> str:
        return str(self.assertRaises(ConfigError, self.check, args, environ))

    def test_plan(self) -> None:
        plan = self.check(
            ["--s3-bucket", "b", "--s3-endpoint", "minio+http://127.0.0.1:9000/base/", "--s3-prefix", "p"],
            {"CACHEPROG_S3_ACCESS_KEY_ID": "id", "CACHEPROG_S3_ACCESS_KEY_SECRET": "s"},
        )
        self.assertEqual(plan.kind, "s3")
        built = plan
        self.assertEqual(built.bucket, "b")
        self.assertEqual(built.prefix, "p")
        self.assertEqual(built.endpoint, Endpoint("http", "127.0.0.1:9000", "/base", minio=True))
        self.assertEqual((built.access_key_id, built.access_key_secret), ("id", "s"))
        self.assertNotIn("access_key_secret", repr(built))

    def test_missing_bucket(self) -> None:
        message = self.error([])
        self.assertIn("--s3-bucket", message)
        self.assertIn("CACHEPROG_S3_BUCKET", message)

    def test_bad_endpoint_scheme(self) -> None:
        message = self.error(["--s3-bucket", "b", "--s3-endpoint", "ftp://host"])
        self.assertIn("--s3-endpoint", message)
        self.assertIn("unsupported endpoint scheme: ftp", message)
        message = self.error(["--s3-bucket", "b"], {"CACHEPROG_S3_ENDPOINT": "s3://host"})
        self.assertIn("CACHEPROG_S3_ENDPOINT", message)

    def test_prefix_template(self) -> None:
        plan = self.check(
            ["--s3-bucket", "b", "--s3-prefix", "{% GOOS %}/{%GOARCH%}/{% env.BRANCH %}/{% env.UNSET %}x"],
            {"GOOS": "plan9", "BRANCH": "main"},
        )
        self.assertEqual(plan.prefix, f"plan9/{go_arch()}/main/x")

    def test_prefix_default_go_names(self) -> None:
        plan = self.check(["--s3-bucket", "b", "--s3-prefix", "{% GOOS %}-{% GOARCH %}"])
        self.assertEqual(plan.prefix, f"{go_os()}-{go_arch()}")
        self.assertNotIn("x86_64", plan.prefix)
        self.assertNotIn("aarch64", plan.prefix)

    def test_unknown_tag(self) -> None:
        message = self.error(["--s3-bucket", "b", "--s3-prefix", "{% NOPE %}"])
        self.assertIn("--s3-prefix", message)
        self.assertIn("NOPE", message)
        message = self.error(["--s3-bucket", "b"], {"CACHEPROG_S3_PREFIX": "{% env %}"})
        self.assertIn("CACHEPROG_S3_PREFIX", message)

    def test_secret_needed(self) -> None:
        message = self.error(["--s3-bucket", "b", "--s3-access-key-id", "id"])
        self.assertIn("--s3-access-key-id", message)
        self.assertIn("CACHEPROG_S3_ACCESS_KEY_SECRET", message)

    def test_credentials_endpoint_url(self) -> None:
        message = self.error(["--s3-bucket", "b", "--s3-credentials-endpoint", "file:///etc/passwd"])
        self.assertIn("--s3-credentials-endpoint", message)

    def test_exclude_headers_normalised(self) -> None:
        plan = self.check(["--s3-bucket", "b", "--s3-exclude-headers-from-signing", "Accept-Encoding", "X-Foo"])
        self.assertEqual(plan.exclude_headers_from_signing, ("accept-encoding", "x-foo"))


class URLTests(SynchronousTestCase):
    def test_aws_virtual_host(self) -> None:
        s = S3Settings(bucket="cache")
        self.assertEqual(s.url("a/b", "eu-west-1"), "https://cache.s3.eu-west-1.amazonaws.com/a/b")
        self.assertEqual(s.url("", "us-east-1", "location"), "https://cache.s3.us-east-1.amazonaws.com/?location")

    def test_aws_path_style(self) -> None:
        s = S3Settings(bucket="cache", force_path_style=True)
        self.assertEqual(s.url("a/b", "eu-west-1"), "https://s3.eu-west-1.amazonaws.com/cache/a/b")
        # Dots and TLS do not mix in host names: path style.
        s = S3Settings(bucket="my.cache")
        self.assertEqual(s.url("k", "eu-west-1"), "https://s3.eu-west-1.amazonaws.com/my.cache/k")

    def test_aws_china(self) -> None:
        self.assertEqual(
            S3Settings(bucket="cn1").url("k", "cn-north-1"), "https://cn1.s3.cn-north-1.amazonaws.com.cn/k"
        )

    def test_custom_endpoint(self) -> None:
        endpoint = parse_endpoint("https://storage.example.com/base/")
        s = S3Settings(bucket="cache", endpoint=endpoint)
        self.assertEqual(s.url("k", "r"), "https://cache.storage.example.com/base/k")
        s = S3Settings(bucket="cache", endpoint=endpoint, force_path_style=True)
        self.assertEqual(s.url("k", "r"), "https://storage.example.com/base/cache/k")
        s = S3Settings(bucket="cache", endpoint=parse_endpoint("http://127.0.0.1:9000"))
        self.assertEqual(s.url("k", "r"), "http://127.0.0.1:9000/cache/k", "an IP host cannot take a bucket label")

    def test_minio_scheme(self) -> None:
        endpoint = parse_endpoint("minio+https://minio.local:9000/x")
        self.assertEqual(endpoint, Endpoint("https", "minio.local:9000", "/x", minio=True))
        s = S3Settings(bucket="cache", endpoint=endpoint, force_path_style=False)
        self.assertEqual(s.url("k", "r"), "https://minio.local:9000/x/cache/k")

    def test_bad_endpoints(self) -> None:
        self.assertIsNone(parse_endpoint(""))
        self.assertRaises(ValueError, parse_endpoint, "ftp://host")
        self.assertRaises(ValueError, parse_endpoint, "minio+ftp://host")
        self.assertRaises(ValueError, parse_endpoint, "http://user:pw@host")

    def test_key_quoting(self) -> None:
        s = S3Settings(bucket="cache", endpoint=parse_endpoint(ENDPOINT), force_path_style=True)
        self.assertEqual(s.url("/a b/ü~k", "r"), "http://s3.test:9000/cache//a%20b/%C3%BC~k")

"""
Tests for L{tests.goenv}: the one environment of the go commands that the
end-to-end tests and the benchmarks start.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.goenv import REPO, clean_environ, go_environ

CALLER = {
    "PATH": "/usr/bin",
    "HOME": "/root",
    "GOFLAGS": "-race",
    "GOCACHEPROG": "other",
    "GOPROXY": "https://example.invalid",
    "CGO_CFLAGS": "-O0",
    "CACHEPROG_S3_BUCKET": "production",
    "AWS_PROFILE": "prod",
    "PYTHONPATH": "/elsewhere",
    "NO_PROXY": "internal.example",
}


class CleanEnvironTests(SynchronousTestCase):
    def test_drops_the_callers_configuration(self) -> None:
        """
        Nothing of go's, cgo's, cacheprog's or AWS's survives, nor the
        caller's PYTHONPATH; the rest does.
        """
        env = clean_environ(CALLER)
        self.assertEqual(sorted(env), ["HOME", "NO_PROXY", "PATH", "no_proxy"])
        self.assertEqual(env["PATH"], "/usr/bin")

    def test_loopback_never_proxied(self) -> None:
        """
        Loopback joins the caller's NO_PROXY list instead of replacing it.
        """
        env = clean_environ(CALLER)
        self.assertEqual(env["NO_PROXY"], "internal.example,127.0.0.1,localhost")
        self.assertEqual(env["no_proxy"], "127.0.0.1,localhost")


class GoEnvironTests(SynchronousTestCase):
    def test_offline_build_with_the_given_cache(self) -> None:
        env = go_environ("/tmp/gocache", environ=CALLER)
        self.assertEqual(env["GOCACHE"], "/tmp/gocache")
        self.assertEqual(
            [env[k] for k in ("GOPROXY", "GOSUMDB", "GOTOOLCHAIN", "GOENV", "GOFLAGS")],
            ["off", "off", "local", "off", "-mod=mod"],
        )
        self.assertNotIn("GOCACHEPROG", env)
        self.assertEqual(env["AWS_EC2_METADATA_DISABLED"], "true")

    def test_this_checkout_first(self) -> None:
        """
        A cacheprog started by go imports this checkout, then the caller's path.
        """
        self.assertEqual(go_environ("/c", environ=CALLER)["PYTHONPATH"], REPO + ":/elsewhere")

    def test_extra_wins(self) -> None:
        env = go_environ("/c", goflags="", environ=CALLER, GOCACHEPROG="cacheprog -x", GOPROXY="direct")
        self.assertEqual((env["GOFLAGS"], env["GOCACHEPROG"], env["GOPROXY"]), ("", "cacheprog -x", "direct"))

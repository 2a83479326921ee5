"""
Tests for L{cacheprog.settings}: every option of a command reaches its
typed settings, and the settings say what the options say.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from cacheprog import settings
from cacheprog.config import Config, ConfigError, parse
from cacheprog.options import OPTIONS, Option
from cacheprog.remote.dirconfig import DirSettings
from cacheprog.remote.factory import NoSettings
from cacheprog.remote.httpconfig import HTTPSettings
from cacheprog.remote.s3config import S3Settings


class Recording(Config):
    """
    A configuration that remembers which options were read.
    """

    def __init__(self, config: Config) -> None:
        super().__init__(config.command, config._values, config.sources)
        self.read: set[str] = set()

    def __getitem__(self, option: Option[Any]) -> Any:
        self.read.add(option.name)
        return super().__getitem__(option)


def read_by(command: str, argv: list[str], environ: dict[str, str]) -> set[str]:
    cfg = Recording(parse([command, *argv], environ))
    if command == "direct":
        settings.direct(cfg, environ)
    elif command == "proxy":
        settings.proxy(cfg, environ)
    else:
        settings.wait(cfg)
    return cfg.read


class CoverageTests(SynchronousTestCase):
    def backends(self) -> list[list[str]]:
        """
        Command lines that choose each backend, with options that switch on
        every optional part (push, warm start, forwarding).
        """
        return [
            ["--remote-storage-type", "dir", "--dir-storage-root", self.mktemp()],
            [
                "--remote-storage-type",
                "s3",
                "--s3-bucket",
                "b",
                "--s3-access-key-id",
                "k",
                "--s3-access-key-secret",
                "s",
            ],
            ["--remote-storage-type", "http", "--http-storage-base-url", "http://127.0.0.1:1"],
        ]

    def test_every_option_is_read(self) -> None:
        """
        Each command's settings read every option of that command: an option
        added to the table without a setting fails here.
        """
        extra = {
            "direct": ["--metrics-push-endpoint", "http://127.0.0.1:1", "--detached-drain"],
            "proxy": ["--metrics-proxy-endpoint", "http://127.0.0.1:1"],
            "wait": [],
        }
        for command in ("direct", "proxy", "wait"):
            read: set[str] = set()
            for backend in self.backends() if command != "wait" else [[]]:
                read |= read_by(command, backend + extra[command], {})
            wanted = {o.name for o in OPTIONS if o.applies_to(command)}
            self.assertEqual(wanted - read, set(), command)


class DirectTests(SynchronousTestCase):
    def direct(self, *argv: str, environ: dict[str, str] | None = None) -> settings.Direct:
        return settings.direct(parse(list(argv), environ or {}), environ or {})

    def test_defaults(self) -> None:
        """
        No options: the disabled backend, the reference's limits, warm start
        on, no push, attached drain, the default root.
        """
        direct = self.direct()
        self.assertEqual(direct.remote.plan, NoSettings("disabled"))
        self.assertFalse(direct.remote.enabled)
        self.assertEqual(direct.transfers, settings.Transfers(remote_enabled=False))
        self.assertEqual(direct.warm_start, settings.WarmStartSettings("", 1.0, write=True))
        self.assertIsNone(direct.push)
        self.assertIsNone(direct.detached_drain_timeout)
        self.assertEqual(direct.root_given, "")
        self.assertTrue(os.path.isabs(direct.root))

    def test_values(self) -> None:
        """
        Flags and variables land in their typed fields.
        """
        direct = self.direct(
            "--root-directory",
            "rel",
            "--remote-get-timeout",
            "250ms",
            "--detached-drain",
            "--disable-put",
            "--metrics-push-endpoint",
            "http://push",
            "--metrics-push-extra-labels",
            "job=ci",
            environ={"CACHEPROG_MAX_CONCURRENT_REMOTE_PUTS": "3", "CACHEPROG_MANIFEST_KEY": "k"},
        )
        self.assertEqual((direct.root, direct.root_given), (os.path.abspath("rel"), "rel"))
        self.assertEqual(direct.transfers.get_timeout, 0.25)
        self.assertEqual(direct.transfers.max_concurrent_puts, 3)
        self.assertEqual(direct.detached_drain_timeout, 300.0)
        self.assertEqual(direct.warm_start, settings.WarmStartSettings("k", 1.0, write=False))
        self.assertEqual(direct.push, settings.Push("http://push", "GET", {"job": "ci"}, {}))

    def test_disable_get(self) -> None:
        """
        Without gets there is nothing to warm up and nothing to list.
        """
        direct = self.direct("--disable-get", "--presence-list-pages", "3")
        self.assertIsNone(direct.warm_start)
        self.assertEqual(direct.presence_list_pages, 0)

    def test_backend_plans(self) -> None:
        """
        Each backend's check gives its own typed settings.
        """
        root = self.mktemp()
        plan = self.direct("--remote-storage-type", "dir", "--dir-storage-root", root).remote.plan
        self.assertEqual(plan, DirSettings(os.path.abspath(root)))
        plan = self.direct("--remote-storage-type", "s3", "--s3-bucket", "b").remote.plan
        self.assertIsInstance(plan, S3Settings)
        plan = self.direct("--remote-storage-type", "http", "--http-storage-base-url", "http://p").remote.plan
        self.assertEqual(plan, HTTPSettings("http://p"))

    def test_errors_name_the_source(self) -> None:
        """
        A backend's bad value names the variable it came from.
        """
        env = {"CACHEPROG_REMOTE_STORAGE_TYPE": "s3", "CACHEPROG_S3_BUCKET": "b", "CACHEPROG_S3_PREFIX": "{% X %}"}
        e = self.assertRaises(ConfigError, self.direct, environ=env)
        self.assertIn("CACHEPROG_S3_PREFIX", str(e))


class ProxyTests(SynchronousTestCase):
    def test_settings(self) -> None:
        """
        The listen address becomes an endpoint; forwarding is set only with
        an endpoint; the tokens are loaded.
        """
        proxy = settings.proxy(parse(["proxy", "--listen-address", ":9000"], {}), {})
        self.assertEqual(proxy.endpoint, "tcp:9000:backlog=1024")
        self.assertIsNone(proxy.forward)
        self.assertTrue(proxy.tokens.open)
        env = {"CACHEPROG_METRICS_PROXY_ENDPOINT": "http://gw", "CACHEPROG_PROXY_WRITE_TOKEN": "t"}
        proxy = settings.proxy(parse(["proxy"], env), env)
        self.assertEqual(proxy.forward, settings.Push("http://gw"))
        self.assertFalse(proxy.tokens.open)

    def test_bad_address(self) -> None:
        e = self.assertRaises(ConfigError, settings.proxy, parse(["proxy", "--listen-address", "x"], {}), {})
        self.assertIn("listen address", str(e))


class WaitTests(SynchronousTestCase):
    def test_settings(self) -> None:
        wait = settings.wait(parse(["wait", "--root-directory", "/r", "--wait-timeout", "1m"], {}))
        self.assertEqual((wait.root, wait.timeout), ("/r", 60.0))

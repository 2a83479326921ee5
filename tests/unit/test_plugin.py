"""
Tests for the twistd plugin (C{twisted/plugins/cacheprog_proxy.py}) and the
service it makes (L{cacheprog.proxy.tap}).

A dropin that fails to import is silently dropped by Twisted's plugin scan:
L{PluginTests.test_discovered} is what notices.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService, IServiceMaker
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from cacheprog import config, log, settings
from cacheprog import options as o
from cacheprog.cache import inline_runner
from cacheprog.options import OPTIONS
from cacheprog.proxy import tap
from cacheprog.proxy.address import endpoint_description
from cacheprog.remote.breaker import BreakerStore
from cacheprog.remote.dirconfig import DirSettings
from cacheprog.remote.disabled import DisabledStore
from cacheprog.remote.memory import MemoryStore
from cacheprog.remote.observing import ObservingStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plugin() -> Any:
    found = [p for p in getPlugins(IServiceMaker) if p.tapname == "cacheprog"]
    assert len(found) == 1, found
    return found[0]


class PluginTests(SynchronousTestCase):
    """
    The dropin is found and works.
    """

    def test_discovered(self) -> None:
        """
        C{getPlugins(IServiceMaker)} yields exactly one C{cacheprog} plugin,
        providing L{IPlugin} and L{IServiceMaker}, with a description.
        """
        maker = plugin()
        self.assertTrue(IPlugin.providedBy(maker))
        self.assertTrue(IServiceMaker.providedBy(maker))
        self.assertIn("proxy", maker.description)

    def test_options_and_service(self) -> None:
        """
        The plugin's options parse proxy flags and its C{makeService} makes
        an L{IService}.
        """
        self.patch(log, "configure", lambda **kw: None)
        options = plugin().options()
        options.environ = {}
        options.parseOptions(["--listen-address", ":0", "--remote-storage-type", "memory"])
        service = plugin().makeService(options)
        self.assertTrue(IService.providedBy(service))
        self.assertEqual(service.endpoint, "tcp:0:backlog=1024")


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options}: the option table of C{cacheprog proxy}, for twistd.
    """

    def parse(self, *argv: str, environ: dict[str, str] | None = None) -> tap.Options:
        options = tap.Options(environ=environ or {})
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """
        With no flags: the default listen address (loopback:8080), the
        disabled backend.
        """
        proxy = self.parse().settings
        assert proxy is not None
        self.assertEqual(proxy.endpoint, "tcp:8080:interface=127.0.0.1:backlog=1024")
        self.assertEqual(proxy.remote.plan.kind, "disabled")

    def test_same_table(self) -> None:
        """
        Every option of the proxy command, and only those, is a twistd option.
        """
        names = {o.name for o in OPTIONS if o.applies_to("proxy")}
        options = tap.Options(environ={})
        known = {long.rstrip("=") for long in options.longOpt}
        self.assertTrue(names <= known, names - known)
        self.assertNotIn("disable-get", known)
        self.assertNotIn("root-directory", known)

    def test_environment(self) -> None:
        """
        The environment fills in what the command line leaves out; the
        command line wins.
        """
        env = {"CACHEPROG_PROXY_LISTEN_ADDRESS": ":9000", "CACHEPROG_REMOTE_STORAGE_TYPE": "memory"}
        proxy = self.parse(environ=env).settings
        assert proxy is not None
        self.assertEqual(proxy.endpoint, "tcp:9000:backlog=1024")
        self.assertEqual(proxy.remote.plan.kind, "memory")
        proxy = self.parse("--listen-address", "tcp:7000", environ=env).settings
        assert proxy is not None
        self.assertEqual(proxy.endpoint, "tcp:7000")

    def test_remote_options(self) -> None:
        """
        Remote options, flags and repeatable options reach the configuration.
        """
        root = self.mktemp()
        options = self.parse(
            "--remote-storage-type=dir",
            "--dir-storage-root",
            root,
            "--max-consecutive-errors",
            "3",
            "--http-storage-extra-headers",
            "A:1",
            "--http-storage-extra-headers",
            "B: 2",
            "--s3-force-path-style",
            "--log-level",
            "debug",
        )
        proxy = options.settings
        assert proxy is not None
        self.assertEqual(proxy.remote.plan, DirSettings(os.path.abspath(root)))
        self.assertEqual(proxy.remote.breaker_threshold, 3)
        self.assertEqual(proxy.common.log_level, 10)
        cfg = config.parse(options.argv(), {})
        self.assertEqual(cfg[o.HTTP_STORAGE_EXTRA_HEADERS], {"A": "1", "B": "2"})
        self.assertTrue(cfg[o.S3_FORCE_PATH_STYLE])

    def test_errors(self) -> None:
        """
        Bad values are usage errors naming the option.
        """
        for argv, word in [
            (["--listen-address", "nowhere"], "listen address"),
            (["--remote-storage-type", "http"], "--http-storage-base-url"),
            (["--remote-storage-type", "floppy"], "--remote-storage-type"),
            (["--max-consecutive-errors", "many"], "--max-consecutive-errors"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(word, str(e))
        self.assertRaises(usage.UsageError, self.parse, "--disable-get")

    def test_listen_addresses(self) -> None:
        """
        C{host:port}, C{:port}, C{[v6]:port} and endpoint strings.
        """
        for address, expected in [
            (":8080", "tcp:8080:backlog=1024"),
            ("0.0.0.0:80", "tcp:80:interface=0.0.0.0:backlog=1024"),
            ("localhost:8080", "tcp:8080:interface=localhost:backlog=1024"),
            ("[::1]:8080", "tcp6:8080:interface=\\:\\:1:backlog=1024"),
            ("tcp:8080", "tcp:8080"),
            ("unix:/run/c.sock", "unix:/run/c.sock"),
        ]:
            self.assertEqual(endpoint_description(address), expected)
        for bad in ("8080", "host:", "h:99999", "http://h:1"):
            self.assertRaises(config.ConfigError, endpoint_description, bad)


class ServiceTests(SynchronousTestCase):
    """
    L{tap.make_service} and L{tap.ProxyService} on a L{MemoryReactor}.
    """

    def make(self, *argv: str) -> tap.ProxyService:
        options = tap.Options(environ={})
        options.parseOptions(list(argv))
        assert options.settings is not None
        self.reactor = MemoryReactor()
        return tap.make_service(options.settings, self.reactor, run_in_thread=inline_runner)

    def test_listen_and_stop(self) -> None:
        """
        Starting listens on the address; stopping stops listening and closes
        the store.
        """
        service = self.make("--listen-address", "127.0.0.1:8123", "--remote-storage-type", "memory")
        service.privilegedStartService()
        service.startService()
        ((port, factory, _, interface),) = self.reactor.tcpServers
        self.assertEqual((port, interface), (8123, "127.0.0.1"))
        self.assertIs(factory, service.site)
        self.assertIsNotNone(service.port)
        self.successResultOf(service.stopService())
        self.assertIsNone(service.port)

    def test_makeService(self) -> None:
        """
        The twistd entry point builds the same service from parsed options.
        """
        self.patch(log, "configure", lambda **kw: None)
        options = tap.Options(environ={})
        options.parseOptions(["--remote-storage-type", "memory", "--listen-address", ":9999"])
        service = tap.makeService(options, reactor=MemoryReactor())
        self.assertIsInstance(service, tap.ProxyService)

    def test_breaker(self) -> None:
        """
        The backend is wrapped in the circuit breaker, with the configured
        threshold; not when switched off, and not around the disabled store.
        """
        service = self.make("--remote-storage-type", "memory", "--max-consecutive-errors", "4")
        observed: Any = service.store
        self.assertIsInstance(observed, ObservingStore)
        store = observed._inner
        self.assertIsInstance(store, BreakerStore)
        self.assertIsInstance(store._inner, MemoryStore)
        self.assertEqual(store.gets._threshold, 4)
        service = self.make("--remote-storage-type", "memory", "--max-consecutive-errors", "0")
        self.assertIsInstance(service.store._inner, MemoryStore)  # type: ignore[attr-defined]
        service = self.make()
        self.assertIsInstance(service.store._inner, DisabledStore)  # type: ignore[attr-defined]

    def test_listen_failure(self) -> None:
        """
        A port that cannot be bound raises from C{privilegedStartService} (so
        twistd exits with an error) and is recorded.
        """
        service = self.make("--remote-storage-type", "memory")

        def refuse(*args: object, **kwargs: object) -> Any:
            raise CannotListenError("127.0.0.1", 8080, OSError("in use"))

        self.reactor.listenTCP = refuse  # type: ignore[method-assign]
        self.assertRaises(CannotListenError, service.privilegedStartService)
        self.assertIsNotNone(service.failed)

    def test_stop_drains(self) -> None:
        """
        Stopping waits for the site to drain before closing the store.
        """
        service = self.make("--remote-storage-type", "memory")
        calls: list[str] = []

        class Site:
            async def drain(self, timeout: float, clock: object) -> int:
                calls.append(f"drain {timeout}")
                return 0

        class Store:
            async def close(self) -> None:
                calls.append("close")

        service.site, service.store = Site(), Store()  # type: ignore[assignment]
        service.startService()
        d: Deferred[None] = service.stopService()
        self.successResultOf(d)
        self.assertEqual(calls, [f"drain {tap.DRAIN_TIMEOUT}", "close"])


class MetricsMountTests(SynchronousTestCase):
    def test_metrics_and_metricsproxy(self) -> None:
        """
        The proxy serves its own series at /metrics, and /metricsproxy only
        when an endpoint is configured.
        """
        from treq.testing import StubTreq

        cfg = config.parse(
            ["proxy", "--remote-storage-type", "memory", "--metrics-proxy-endpoint", "http://127.0.0.1:1/"], {}
        )
        service = tap.make_service(proxy_settings(cfg), MemoryReactorClock(), run_in_thread=inline_runner)
        stub: Any = StubTreq(service.site.resource)
        self.successResultOf(Deferred.fromCoroutine(service.store.get(b"\x01" * 32)).addErrback(lambda f: None))
        response = self.successResultOf(stub.get("http://proxy/metrics"))
        text = self.successResultOf(response.text())
        self.assertIn('cacheprog_object_miss_total{storage_type="remote"} 1', text)
        self.assertIn(b"metricsproxy", service.site.resource.children)
        cfg = config.parse(["proxy", "--remote-storage-type", "memory"], {})
        service = tap.make_service(proxy_settings(cfg), MemoryReactor(), run_in_thread=inline_runner)
        stub = StubTreq(service.site.resource)
        self.assertEqual(self.successResultOf(stub.post("http://proxy/metricsproxy")).code, 404)


def proxy_settings(cfg: config.Config) -> settings.Proxy:
    return settings.proxy(cfg, {})

# -*- test-case-name: tests.unit.test_plugin,tests.unit.test_proxy -*-
"""
The proxy as a service: L{Options} and L{makeService} for
C{twistd -n cacheprog ...} (through the dropin
C{twisted/plugins/cacheprog_proxy.py}), and L{run} for C{cacheprog proxy}.
Both build the same L{ProxyService} from the same option table
(L{cacheprog.options}, scopes C{global}, C{remote} and C{proxy}) through
L{cacheprog.settings.proxy}.

The remote store comes from L{cacheprog.assembly}, as in direct mode (so
the proxy has the circuit breaker too).  On SIGINT/SIGTERM the proxy stops
listening, lets requests in progress finish for up to L{DRAIN_TIMEOUT}
seconds, closes the backend and exits 0.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from cacheprog import config as _config
from cacheprog import log
from cacheprog import settings as _settings
from cacheprog.assembly import assemble, thread_runner
from cacheprog.interfaces import RemoteStore, ThreadRunner
from cacheprog.options import MULTI_KINDS, OPTIONS, Option
from cacheprog.proxy.address import loopback

_log = log.Logger("proxy")

#: Seconds a stopping proxy waits for requests in progress.
DRAIN_TIMEOUT = 10.0


def _help(option: Option[Any]) -> str:
    notes = [f"env: {', '.join(option.envs)}"]
    if option.default not in (None, "", "0", "false"):
        notes.insert(0, f"default: {option.default}")
    return f"{option.help} [{'; '.join(notes)}]"


def _adder(name: str, doc: str) -> Any:
    def opt(self: Options, value: str) -> None:
        self.multi.setdefault(name, []).append(value)

    opt.__doc__ = doc
    return opt


class Options(usage.Options):
    """
    The proxy's options, generated from L{cacheprog.options.OPTIONS}; the
    environment fills in what the command line leaves out, as for
    C{cacheprog proxy}.  After parsing: L{settings}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve a remote storage over HTTP for cacheprog clients using --remote-storage-type http "
        "(a docker build sidecar). The proxy has NO authentication: listen on a private address."
    )
    optParameters: list[list[Any]] = []
    optFlags: list[list[Any]] = []

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.environ = os.environ if environ is None else environ
        self.multi: dict[str, list[str]] = {}
        self.settings: _settings.Proxy | None = None

    def argv(self) -> list[str]:
        """
        The parsed options as a C{cacheprog proxy} command line.
        """
        args = ["proxy"]
        for option in OPTIONS:
            if not option.applies_to("proxy"):
                continue
            if option.kind == "bool":
                if self[option.name]:
                    args.append(f"--{option.name}")
            elif option.kind in MULTI_KINDS:
                if option.name in self.multi:
                    args += [f"--{option.name}", *self.multi[option.name]]
            elif self[option.name] is not None:
                args.append(f"--{option.name}={self[option.name]}")
        return args

    def postOptions(self) -> None:
        try:
            self.settings = _settings.proxy(_config.parse(self.argv(), self.environ), self.environ)
        except _config.ConfigError as e:
            raise usage.UsageError(str(e)) from None


for _option in OPTIONS:
    if not _option.applies_to("proxy"):
        continue
    if _option.kind == "bool":
        Options.optFlags.append([_option.name, None, _help(_option)])
    elif _option.kind in MULTI_KINDS:
        setattr(Options, "opt_" + _option.name.replace("-", "_"), _adder(_option.name, _help(_option)))
    else:
        Options.optParameters.append([_option.name, None, None, _help(_option)])
del _option


def _address(port: Any) -> str:
    host = port.getHost()
    if hasattr(host, "port"):
        return f"[{host.host}]:{host.port}" if ":" in host.host else f"{host.host}:{host.port}"
    return str(getattr(host, "name", host))


class ProxyService(Service):
    """
    Listens on C{endpoint} with C{site}; stops gracefully.

    @ivar port: the listening port, once listening.
    @ivar failed: set when listening failed.
    """

    name = "cacheprog-proxy"

    def __init__(self, endpoint: str, site: Any, store: RemoteStore, reactor: Any) -> None:
        self.endpoint = endpoint
        self.site = site
        self.store = store
        self._reactor = reactor
        self.port: Any = None
        self.failed: Failure | None = None
        self._listening: Deferred[Any] | None = None
        self.drain_timeout = DRAIN_TIMEOUT
        #: Stopped with the service (twistd: C{--cpu-profile}, C{--mem-profile}).
        self.profiles: Any = None

    def privilegedStartService(self) -> None:
        """
        Listen now (a low port may need privileges); a synchronous failure,
        such as an address in use, raises so twistd exits with an error.
        """
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._listen()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._listen()

    def _listen(self) -> None:
        if self._listening is not None:
            return
        from twisted.internet.endpoints import serverFromString

        endpoint = serverFromString(self._reactor, self.endpoint)  # type: ignore[no-untyped-call]
        self._listening = endpoint.listen(self.site)
        self._listening.addCallbacks(self._listened, self._not_listening)
        if self.failed is not None:
            self.failed.raiseException()

    def _listened(self, port: Any) -> None:
        self.port = port
        if hasattr(self.site, "port") and hasattr(port, "stopReading"):
            self.site.port = port
        _log.info("Listening", address=_address(port))

    def _not_listening(self, failure: Failure) -> None:
        self.failed = failure
        _log.error("Cannot listen", address=self.endpoint, reason=str(failure.value))
        if self._reactor.running:
            self._reactor.stop()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if hasattr(self.site, "port"):
            self.site.port = None  # never resumed once it stops listening
        if self.port is not None:
            port, self.port = self.port, None
            await maybeDeferred(port.stopListening)
        if hasattr(self.site, "drain"):
            cut = await self.site.drain(self.drain_timeout, self._reactor)
            if cut:
                _log.warn("Requests still in progress were cut off at shutdown", requests=cut)
        await self.store.close()
        _log.info("Proxy stopped")
        if self.profiles is not None:
            self.profiles.stop()
        # twistd re-raises the signal that stopped the reactor once it has
        # stopped, so the exit status reads "killed by SIGTERM".  The proxy
        # stopped cleanly: exit 0, as `cacheprog proxy` does.
        if getattr(self._reactor, "_exitSignal", None) is not None:
            self._reactor._exitSignal = None


def make_service(
    proxy: _settings.Proxy,
    reactor: Any,
    *,
    run_in_thread: ThreadRunner | None = None,
    metrics: IResource | None = None,
    metricsproxy: IResource | None = None,
) -> ProxyService:
    """
    The proxy for checked settings: the remote store, the site, the service.

    @param metrics: mounted at C{/metrics} (the store's own series when None).
    @param metricsproxy: mounted at C{/metricsproxy} (forwarding to
        C{proxy.forward} when None and it is set).
    """
    from cacheprog.proxy.site import MetricsResource, build_site

    runner = run_in_thread if run_in_thread is not None else thread_runner(reactor)
    observer = None
    if metrics is None:
        from cacheprog.metrics import Metrics

        observer = Metrics(vm_histograms=proxy.common.vm_histograms)
        metrics = MetricsResource(observer.render)
    stack = assemble(proxy.remote, reactor, runner, observer)
    if metricsproxy is None and proxy.forward is not None:
        metricsproxy = _metrics_proxy(proxy.forward, reactor)
    if proxy.tokens.open and not loopback(proxy.endpoint):
        _log.warn(
            "The proxy listens beyond loopback without a write token: anyone who reaches it can plant "
            "build outputs (set --proxy-write-token-file or CACHEPROG_PROXY_WRITE_TOKEN)",
            address=proxy.endpoint,
        )
    site = build_site(
        stack.store,
        reactor=reactor,
        run_in_thread=runner,
        metrics=metrics,
        metricsproxy=metricsproxy,
        blobs=stack.blobs,
        tokens=proxy.tokens,
    )
    site.header_timeout = proxy.header_timeout
    return ProxyService(proxy.endpoint, site, stack.store, reactor)


def _metrics_proxy(forward: _settings.Push, reactor: Any) -> IResource:
    """
    C{/metricsproxy}: forwards the clients' pushes with the proxy's labels
    and headers.  No trailing slash after the label path: a Pushgateway
    refuses one once there are labels besides job.
    """
    from cacheprog.proxy.metricsproxy import MetricsProxyResource
    from cacheprog.remote.pool import build_client

    client, _ = build_client(reactor)
    return MetricsProxyResource(
        client,
        reactor,
        forward.endpoint,
        labels=forward.labels,
        headers=forward.headers,
    )


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    The twistd entry point (L{IServiceMaker.makeService}).
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    assert options.settings is not None
    common = options.settings.common
    log.configure(level=common.log_level, output=common.log_output)
    service = make_service(options.settings, reactor)
    if common.cpu_profile or common.mem_profile:
        from cacheprog.profiling import Profiles

        service.profiles = Profiles.start(common)
    return service


def run(cfg: _config.Config, environ: Mapping[str, str]) -> int:
    """
    C{cacheprog proxy}: serve until SIGINT/SIGTERM.

    @return: the exit status (0 after a signal, 1 when the proxy cannot start).
    """
    from cacheprog.profiling import Profiles

    try:
        proxy = _settings.proxy(cfg, environ)
    except _config.ConfigError as e:
        sys.stderr.write(f"cacheprog: {e}\nRun 'cacheprog proxy --help' to see every option.\n")
        return 1
    profiles = Profiles.start(proxy.common)
    try:
        return _serve(proxy)
    finally:
        profiles.stop()


def _serve(proxy: _settings.Proxy) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    log.route_twisted()
    try:
        service = make_service(proxy, reactor)
    except Exception as e:  # noqa: BLE001 - reported, exit 1
        _log.error("Cannot start the proxy", reason=str(e) or repr(e))
        return 1

    def start() -> None:
        try:
            service.privilegedStartService()
            service.startService()
        except Exception as e:  # noqa: BLE001 - reported, exit 1
            if service.failed is None:
                service.failed = Failure()  # type: ignore[no-untyped-call]
                _log.error("Cannot start the proxy", reason=str(e) or repr(e))
                reactor.stop()

    def stop() -> Deferred[None] | None:
        return service.stopService() if service.running else None

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    _handle_signals(reactor, service)
    reactor.run(installSignalHandlers=False)
    return 1 if service.failed is not None else 0


def _handle_signals(reactor: Any, service: ProxyService) -> None:
    """
    SIGINT/SIGTERM: stop, letting requests in progress finish (up to
    L{DRAIN_TIMEOUT}); a second signal cuts them off at once.  Never a
    traceback (Twisted's own handler logged ReactorNotRunning for the second).
    """
    import signal

    received = [0]

    def handle() -> None:
        received[0] += 1
        if received[0] == 1:
            reactor.stop()
        elif hasattr(service.site, "cut"):
            _log.info("Second signal: cutting off requests in progress")
            service.site.cut()

    def handler(signum: int, frame: object) -> None:
        reactor.callFromThread(handle)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)

# -*- test-case-name: tests.unit.test_plugin,tests.unit.test_proxy -*-
"""
The proxy as a service: L{Options} and L{makeService} for
C{twistd -n cacheprog ...} (through the dropin
C{twisted/plugins/cacheprog_proxy.py}), and L{run} for C{cacheprog proxy}.
Both build the same L{ProxyService} from the same option table
(L{cacheprog.config.OPTIONS}, scopes C{global}, C{remote} and C{proxy}).

The backend is made by the same factory as direct mode and wrapped in the
circuit breaker (the reference built one and never used it in proxy mode).
On SIGINT/SIGTERM the proxy stops listening, lets requests in progress
finish for up to L{DRAIN_TIMEOUT} seconds, closes the backend and exits 0.

C{--listen-address} takes the reference's C{host:port} and C{:port} (all
IPv4 interfaces), C{[v6]:port}, or any Twisted server endpoint string
(C{tcp:8080:interface=127.0.0.1}, C{unix:/run/cacheprog.sock},
C{systemd:domain=INET:index=0}), passed as it is.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any, cast

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from cacheprog import config as _config
from cacheprog import log
from cacheprog.interfaces import BlobStore, RemoteStore, ThreadRunner
from cacheprog.proxy.access import Tokens
from cacheprog.remote import factory

_log = log.Logger("proxy")

#: Seconds a stopping proxy waits for requests in progress.
DRAIN_TIMEOUT = 10.0
#: Pending connections the kernel queues for us (Twisted's default is 50;
#: a burst of new clients beyond that waits for SYN retransmissions).
BACKLOG = 1024
#: Endpoint types passed to Twisted as they are.
ENDPOINT_TYPES = ("tcp", "tcp6", "unix", "ssl", "systemd")
_MULTI = ("list", "headers", "labels")
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^\[\]:]*):([0-9]{1,5})")


def endpoint_description(address: str) -> str:
    """
    The Twisted endpoint string for a C{--listen-address}.

    @raise _config.ConfigError: for an address that is neither C{host:port}
        nor an endpoint string.
    """
    text = address.strip()
    kind = text.partition(":")[0].lower()
    if kind in ENDPOINT_TYPES and ":" in text:
        return text
    m = _HOST_PORT.fullmatch(text)
    if m is None or int(m.group(2)) > 65535:
        raise _config.ConfigError(
            f"invalid listen address {address!r}: use host:port, :port or a Twisted endpoint such as tcp:8080"
        )
    host, port = m.group(1), int(m.group(2))
    if host.startswith("["):
        return f"tcp6:{port}:interface=" + host[1:-1].replace(":", "\\:") + f":backlog={BACKLOG}"
    if not host:
        return f"tcp:{port}:backlog={BACKLOG}"
    return f"tcp:{port}:interface={host}:backlog={BACKLOG}"


def _help(option: _config.Option) -> str:
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
    The proxy's options, generated from L{cacheprog.config.OPTIONS}; the
    environment fills in what the command line leaves out, as for
    C{cacheprog proxy}.  After parsing: L{config}, L{plan} and L{endpoint}.
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
        self.config: _config.Config | None = None
        self.plan: factory.RemotePlan | None = None
        self.endpoint = ""

    def argv(self) -> list[str]:
        """
        The parsed options as a C{cacheprog proxy} command line.
        """
        args = ["proxy"]
        for option in _config.OPTIONS:
            if not option.applies_to("proxy"):
                continue
            if option.kind == "bool":
                if self[option.name]:
                    args.append(f"--{option.name}")
            elif option.kind in _MULTI:
                if option.name in self.multi:
                    args += [f"--{option.name}", *self.multi[option.name]]
            elif self[option.name] is not None:
                args.append(f"--{option.name}={self[option.name]}")
        return args

    def postOptions(self) -> None:
        try:
            self.config = _config.parse(self.argv(), self.environ)
            self.plan = factory.check(self.config, self.environ)
            self.endpoint = endpoint_description(self.config.text("listen-address"))
            tokens(self.config, self.environ)
        except _config.ConfigError as e:
            raise usage.UsageError(str(e)) from None


for _option in _config.OPTIONS:
    if not _option.applies_to("proxy"):
        continue
    if _option.kind == "bool":
        Options.optFlags.append([_option.name, None, _help(_option)])
    elif _option.kind in _MULTI:
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
        # stopped cleanly: exit 0, as `cacheprog proxy` and the reference do.
        if getattr(self._reactor, "_exitSignal", None) is not None:
            self._reactor._exitSignal = None


def thread_runner(reactor: Any) -> ThreadRunner:
    """
    Runs blocking work in C{reactor}'s thread pool.
    """
    from twisted.internet.threads import deferToThreadPool

    def run_in_thread(f: Any, *args: object) -> Any:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return run_in_thread


def make_service(
    cfg: _config.Config,
    plan: factory.RemotePlan,
    endpoint: str,
    reactor: Any,
    *,
    run_in_thread: ThreadRunner | None = None,
    metrics: IResource | None = None,
    metricsproxy: IResource | None = None,
) -> ProxyService:
    """
    The proxy for checked options: backend (with its breaker), site, service.

    @param metrics: mounted at C{/metrics} (a stub when None).
    @param metricsproxy: mounted at C{/metricsproxy} when given.
    """
    from cacheprog.proxy.site import build_site

    runner = run_in_thread if run_in_thread is not None else thread_runner(reactor)
    store: RemoteStore = factory.build(plan, reactor, runner)
    # The backend itself (before the breaker and metrics wrap it) serves /blob/.
    blobs = cast("BlobStore", store) if hasattr(store, "get_range") else None
    if plan.kind != "disabled" and cfg.integer("max-consecutive-errors") > 0:
        from cacheprog.remote.breaker import BreakerStore

        store = BreakerStore(store, cfg.integer("max-consecutive-errors"), cfg.number("retry-after"), reactor)
    if metrics is None:
        store, metrics = _own_metrics(cfg, store, reactor)
    if metricsproxy is None and cfg.text("metrics-proxy-endpoint"):
        metricsproxy = _metrics_proxy(cfg, reactor)
    access = tokens(cfg, os.environ)
    if access.open and not loopback(endpoint):
        _log.warn(
            "The proxy listens beyond loopback without a write token: anyone who reaches it can plant "
            "build outputs (set --proxy-write-token-file or CACHEPROG_PROXY_WRITE_TOKEN)",
            address=endpoint,
        )
    site = build_site(
        store,
        reactor=reactor,
        run_in_thread=runner,
        metrics=metrics,
        metricsproxy=metricsproxy,
        blobs=blobs,
        tokens=access,
    )
    site.header_timeout = cfg.number("proxy-header-timeout")
    return ProxyService(endpoint, site, store, reactor)


def tokens(cfg: _config.Config, environ: Mapping[str, str]) -> Tokens:
    """
    The proxy's tokens (files or variables).

    @raise _config.ConfigError: naming the file or variable at fault.
    """
    from cacheprog.proxy.access import TokenError, load_tokens

    try:
        return load_tokens(cfg.text("proxy-read-token-file"), cfg.text("proxy-write-token-file"), environ)
    except TokenError as e:
        raise _config.ConfigError(str(e)) from None


def loopback(endpoint: str) -> bool:
    """
    Whether a Twisted endpoint string listens on loopback (or a unix socket) only.
    """
    kind, _, rest = endpoint.partition(":")
    if kind == "unix":
        return True
    interface = re.search(r"interface=((?:\\:|[^:])*)", rest)
    host = interface.group(1).replace("\\:", ":") if interface else ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _own_metrics(cfg: _config.Config, store: RemoteStore, reactor: Any) -> tuple[RemoteStore, IResource]:
    """
    The proxy's C{/metrics}: the series of its remote store, observed.
    """
    from cacheprog.metrics import Metrics
    from cacheprog.proxy.site import MetricsResource
    from cacheprog.remote.observing import ObservingStore

    metrics = Metrics(vm_histograms=cfg.flag("use-vm-histograms"))
    return ObservingStore(store, metrics, reactor), MetricsResource(metrics.render)


def _metrics_proxy(cfg: _config.Config, reactor: Any) -> IResource:
    """
    C{/metricsproxy}: forwards the clients' pushes with the proxy's labels
    and headers.  No trailing slash after the label path (the reference
    added one, which a Pushgateway refuses once there are labels besides job).
    """
    from cacheprog.proxy.metricsproxy import MetricsProxyResource
    from cacheprog.remote.pool import build_client

    client, _ = build_client(reactor)
    return MetricsProxyResource(
        client,
        reactor,
        cfg.text("metrics-proxy-endpoint"),
        labels=cfg.mapping("metrics-proxy-extra-labels"),
        headers=cfg.mapping("metrics-proxy-extra-headers"),
    )


def _configure_logging(cfg: _config.Config) -> None:
    log.configure(level=cfg.integer("log-level"), output=cfg.text("log-output"))


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    The twistd entry point (L{IServiceMaker.makeService}).
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    assert options.config is not None and options.plan is not None
    _configure_logging(options.config)
    service = make_service(options.config, options.plan, options.endpoint, reactor)
    if options.config.text("cpu-profile") or options.config.text("mem-profile"):
        from cacheprog.profiling import Profiles

        service.profiles = Profiles.start(options.config)
    return service


def run(cfg: _config.Config, environ: Mapping[str, str]) -> int:
    """
    C{cacheprog proxy}: serve until SIGINT/SIGTERM.

    @return: the exit status (0 after a signal, 1 when the proxy cannot start).
    """
    from cacheprog.profiling import Profiles

    try:
        plan = factory.check(cfg, environ)
        endpoint = endpoint_description(cfg.text("listen-address"))
        tokens(cfg, environ)
    except _config.ConfigError as e:
        sys.stderr.write(f"cacheprog: {e}\nRun 'cacheprog proxy --help' to see every option.\n")
        return 1
    profiles = Profiles.start(cfg)
    try:
        return _serve(cfg, plan, endpoint)
    finally:
        profiles.stop()


def _serve(cfg: _config.Config, plan: factory.RemotePlan, endpoint: str) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    log.route_twisted()
    try:
        service = make_service(cfg, plan, endpoint, reactor)
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

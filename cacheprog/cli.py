# -*- test-case-name: tests.unit.test_cli -*-
"""
The command line: C{cacheprog [direct]} (the GOCACHEPROG program) and
C{cacheprog proxy}.

Start-up is on the go command's critical path (it starts us once per go
command), so the handshake is written as soon as the configuration is known
to be good, before Twisted or any backend library is imported.  The go
command keeps working meanwhile; its requests wait in the pipe.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from cacheprog import config as _config
from cacheprog import log
from cacheprog import settings as _settings

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime

    from cacheprog.assembly import Stack
    from cacheprog.cache import Cache
    from cacheprog.interfaces import RemoteStore, ThreadRunner
    from cacheprog.local import DiskStore
    from cacheprog.metrics import Metrics
    from cacheprog.prelude import Handover
    from cacheprog.presence import Presence
    from cacheprog.stats import Stats
    from cacheprog.stdio import CacheProtocol
    from cacheprog.uploaders import Detacher
    from cacheprog.warmstart import WarmStart


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> NoReturn:
    """
    Parse, then run the chosen command; exits the process.
    """
    args = sys.argv[1:] if argv is None else argv
    env = os.environ if environ is None else environ
    if args[:1] == ["summary"]:
        from cacheprog.summary import main as _summary

        raise SystemExit(_summary(args[1:], env))
    try:
        cfg = _config.parse(args, env)
    except _config.Usage as u:
        sys.stdout.write(u.text)
        sys.stdout.flush()
        raise SystemExit(0) from None
    except _config.ConfigError as e:
        _die(str(e))
    common = _settings.common(cfg)
    log.configure(level=common.log_level, output=common.log_output)
    if cfg.command == "proxy":
        from cacheprog.proxy.tap import run as _run_proxy

        raise SystemExit(_run_proxy(cfg, env))
    if cfg.command == "wait":
        raise SystemExit(_wait(_settings.wait(cfg)))
    try:
        direct = _settings.direct(cfg, env)
    except _config.ConfigError as e:
        _die(str(e))
    raise SystemExit(_direct(direct))


def _detacher(direct: _settings.Direct, protocol_fd: int) -> Detacher | None:
    if direct.detached_drain_timeout is None:
        return None
    from cacheprog.uploaders import Detacher, Uploaders

    return Detacher(Uploaders(direct.root), direct.detached_drain_timeout, protocol_fd)


def _wait(wait: _settings.Wait) -> int:
    """
    C{cacheprog wait}: block until the detached uploaders of the local root
    are done; print what they uploaded and dropped (stdout, one line).
    """
    from cacheprog.uploaders import Uploaders

    summary = Uploaders(wait.root).wait(wait.timeout)
    sys.stdout.write(summary.line() + "\n")
    return 0


def _die(message: str) -> NoReturn:
    sys.stderr.write(f"cacheprog: {message}\nRun 'cacheprog --help' to see every option.\n")
    raise SystemExit(1)


def isolate_stdout() -> int:
    """
    Keep the protocol pipe on a private descriptor and point fd 1 and
    C{sys.stdout} at stderr, so no library (nor a C extension) can write a
    stray byte into the go command's JSON stream.

    @return: the descriptor of the protocol pipe.
    """
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return fd


_STARTED = time.monotonic()
_STARTED_WALL = time.time()


def _direct(direct: _settings.Direct) -> int:
    from cacheprog.local import DiskStore, LocalWriteError
    from cacheprog.profiling import Profiles
    from cacheprog.wire import handshake

    profiles = Profiles.start(direct.common)
    if direct.root_given and not os.path.isabs(direct.root_given):
        log.Logger("cli").warn("Root directory is not absolute, using it from the current directory", root=direct.root)
    local = DiskStore(direct.root, default=not direct.root_given)
    try:
        local.probe()
    except LocalWriteError as e:
        _die(str(e))
    protocol_fd = isolate_stdout()
    _hold_signals()
    os.write(protocol_fd, handshake(direct.disable_get, direct.disable_put))
    # Spool files of killed runs (while go's first requests wait in the pipe).
    local.sweep()
    log.Logger("cli").info("Starting cacheprog", root=local.root, remote=direct.remote.plan.kind)
    try:
        handover = _prelude(direct, local, protocol_fd)
        if handover is not None and handover.finished:
            return _finished_in_prelude(local, handover)
        return _serve(direct, local, protocol_fd, handover)
    finally:
        profiles.stop()


def _prelude(direct: _settings.Direct, local: DiskStore, protocol_fd: int) -> Handover | None:
    """
    Answer local hits before Twisted is imported (L{cacheprog.prelude}).
    Not when metrics are pushed: their local-get timings come from the
    cache.  With a run manifest to keep, a run that used an entry closes in
    the reactor (the manifest decides whether to write).

    @return: the prelude's L{Handover}, or None when it did not run.
    """
    if direct.push is not None:
        return None
    from cacheprog.prelude import on_descriptors

    remote = direct.remote.enabled
    journal = remote and direct.warm_start is not None
    return on_descriptors(local, 0, protocol_fd, remote_enabled=remote, finish_alone=not journal).run()


def _finished_in_prelude(local: DiskStore, handover: Handover) -> int:
    from cacheprog.stats import Stats

    stats = Stats()
    handover.count_into(stats)
    log.Logger("cli").info("cacheprog statistics", **dict(stats.fields()))
    _record_run(local.root, stats.record())
    return 0


def needs_tls(direct: _settings.Direct) -> bool:
    """
    Could this run open a TLS connection?  (S3 on AWS or any https URL.)
    """
    urls = [direct.push.endpoint if direct.push else "", *direct.remote.plan.urls()]
    return any(url.lower().startswith(("https", "minio+https")) for url in urls)


@contextlib.contextmanager
def _tls_unless_needed(direct: _settings.Direct) -> Iterator[None]:
    """
    Import the reactor without pyOpenSSL when nothing will speak TLS:
    twisted.internet.tcp loads TLS support eagerly (about 50 ms of the
    start-up go waits for), and does without it when the import fails.
    """
    if needs_tls(direct) or "OpenSSL" in sys.modules:
        yield
        return
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        del sys.modules["OpenSSL"]


def _serve(direct: _settings.Direct, local: DiskStore, protocol_fd: int, handover: Handover | None = None) -> int:
    from cacheprog.frozen import resolve_hosts_first

    resolve_hosts_first()
    with _tls_unless_needed(direct):
        from twisted.internet import reactor as _reactor
    from twisted.internet.error import ReactorNotRunning
    from twisted.internet.stdio import StandardIO

    from cacheprog.assembly import assemble, thread_runner
    from cacheprog.cache import Cache
    from cacheprog.stats import Stats
    from cacheprog.stdio import CacheProtocol

    reactor: Any = _reactor
    log.route_twisted()
    run_in_thread = thread_runner(reactor)
    metrics, after_close = _metrics(direct, reactor)
    with _tls_unless_needed(direct):
        # treq pulls in twisted.internet.ssl (pyOpenSSL) even for http:// stores.
        stack = assemble(direct.remote, reactor, run_in_thread, metrics)
    presence = _presence(direct, stack.backend, reactor)
    stats = Stats()
    journal = _warm_start(direct, stack, local, reactor, run_in_thread, stats)
    cache = Cache(
        local,
        stack.store,
        reactor,
        run_in_thread,
        direct.transfers,
        stats=stats,
        observer=metrics,
        journal=journal,
        presence=presence,
    )
    if handover is not None:
        handover.count_into(stats)
        if journal is not None:
            handover.replay_into(journal)
    if journal is not None:
        reactor.callWhenRunning(journal.start)
    protocol = CacheProtocol(
        cache,
        run_in_thread,
        after_close=after_close,
        handover=handover,
        detacher=_detacher(direct, protocol_fd),
    )
    status: list[int] = [1]

    def finished(code: int) -> None:
        status[0] = code
        log.Logger("cli").info("cacheprog statistics", **dict(cache.stats.fields()))
        _record_run(local.root, cache.stats.record())
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # a signal is already stopping it

    protocol.done.addCallback(finished)
    # A stop from elsewhere still answers what is in flight first.
    reactor.addSystemEventTrigger("before", "shutdown", protocol.shutdown)
    _handle_signals(reactor, protocol, cache)
    reactor.callWhenRunning(StandardIO, protocol, stdin=0, stdout=protocol_fd, reactor=reactor)
    reactor.run(installSignalHandlers=False)
    return status[0]


#: Seconds a signal leaves remote work in flight before it is abandoned.
SIGNAL_GRACE = 3.0
#: Signals received while Twisted starts, handled once the reactor runs.
_EARLY_SIGNALS: list[int] = []


def _hold_signals() -> None:
    """
    From the handshake on, SIGINT/SIGTERM must take the close path, not
    kill us mid-start: record them until the reactor handles them.
    """
    import signal

    def record(signum: int, frame: object) -> None:
        _EARLY_SIGNALS.append(signum)

    signal.signal(signal.SIGINT, record)
    signal.signal(signal.SIGTERM, record)


def _handle_signals(reactor: Any, protocol: CacheProtocol, cache: Cache) -> None:
    """
    SIGINT/SIGTERM: answer what is in flight, drain uploads, close stdout,
    exit, at once rather than at the next request.
    Remote work still running after L{SIGNAL_GRACE} (a stuck store with no
    timeouts) is abandoned: gets answer "miss", uploads are dropped.  A
    second signal abandons it at once.  Never a traceback.
    """
    import signal

    received = [0]

    def handle() -> None:
        received[0] += 1
        if received[0] == 1:
            protocol.shutdown()
            reactor.callLater(SIGNAL_GRACE, cache.abandon)
        else:
            cache.abandon()

    def handler(signum: int, frame: object) -> None:
        reactor.callFromThread(handle)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    for _ in _EARLY_SIGNALS:
        reactor.callWhenRunning(handle)
    _EARLY_SIGNALS.clear()


def _presence(direct: _settings.Direct, backend: RemoteStore, reactor: IReactorTime) -> Presence:
    """
    The presence view, fed by a bounded listing of the prefix when asked
    for (and the store can list).
    """
    from cacheprog.presence import Presence, load

    presence = Presence()
    pages = direct.presence_list_pages
    if pages > 0 and hasattr(backend, "list_keys"):
        load(presence, backend.list_keys(pages), reactor, direct.transfers.get_timeout)
    return presence


def _warm_start(
    direct: _settings.Direct,
    stack: Stack,
    local: DiskStore,
    reactor: IReactorTime,
    run_in_thread: ThreadRunner,
    stats: Stats,
) -> WarmStart | None:
    """
    The run manifest, packs and prefetch, when the store can hold them
    and the option is on.
    """
    warm, blobs = direct.warm_start, stack.blobs
    if warm is None or blobs is None:
        return None
    from cacheprog.runkey import describe, run_key
    from cacheprog.warmstart import WarmStart

    description = {} if warm.manifest_key else describe(os.environ)
    key = run_key(description, warm.manifest_key)
    log.Logger("cli").debug("Run manifest", key=key, **{k: str(v) for k, v in description.items()})
    return WarmStart(blobs, local, reactor, run_in_thread, key, stats, wait=warm.prefetch_wait, write=warm.write)


def _record_run(root: str, stats: dict[str, object]) -> None:
    """
    Append this run's statistics to the run log (C{cacheprog summary});
    trouble is a warning, never a failed build.
    """
    from cacheprog.runlog import RunLog, go_command, run_record

    record = run_record(stats, _STARTED_WALL, time.time(), go_command(os.getppid()))
    try:
        RunLog(root).append(record)
    except OSError as e:
        log.Logger("cli").warn("Cannot append to the run log", reason=str(e))


def _metrics(direct: _settings.Direct, reactor: Any) -> tuple[Metrics | None, Callable[[], Deferred[bool]] | None]:
    """
    Metrics and their push at close, only when a push endpoint is set (no
    endpoint: no prometheus_client import, no cost).  The push happens
    before stdout closes, so go waits for it, at most its 5 s timeout.
    """
    push = direct.push
    if push is None:
        return None, None
    from twisted.internet.defer import Deferred

    from cacheprog.metrics import Metrics, push_at_exit
    from cacheprog.remote.pool import build_client

    metrics = Metrics(vm_histograms=direct.common.vm_histograms)

    def after_close() -> Deferred[bool]:
        metrics.run_time(time.monotonic() - _STARTED)
        client, _ = build_client(reactor, persistent=False)
        return Deferred.fromCoroutine(
            push_at_exit(
                metrics,
                client,
                reactor,
                push.endpoint,
                method=push.method,
                extra_labels=push.labels,
                extra_headers=push.headers,
            )
        )

    return metrics, after_close

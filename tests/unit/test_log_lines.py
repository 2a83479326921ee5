"""
The log lines users of the Go reference already grep and alert on keep its
wording (listed in the README, "Log lines"): each is produced here through
the real code path and matched as the formatted line, C{msg="..."}.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog import log
from cacheprog.cache import Cache
from cacheprog.local import DiskStore
from cacheprog.remote.breaker import BreakerStore
from cacheprog.settings import Transfers
from cacheprog.stats import Stats
from tests.unit.helpers import action, output_of
from tests.unit.test_breaker import UPLOAD, Flaky


class LogLinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.out = io.StringIO()
        handler = logging.StreamHandler(self.out)
        handler.setFormatter(log._Logfmt())
        root = logging.getLogger("cacheprog")
        saved = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        self.addCleanup(root.removeHandler, handler)
        self.addCleanup(root.setLevel, saved)
        self.clock = Clock()

    def lines(self, msg: str) -> list[str]:
        return [line for line in self.out.getvalue().splitlines() if f'msg="{msg}"' in line]

    def cache(self, remote: Any) -> Cache:
        local = DiskStore(self.mktemp())
        local.probe()
        return Cache(local, remote, self.clock, settings=Transfers(remote_enabled=True))

    def test_failedRemoteGet(self) -> None:
        """
        C{level=ERROR msg="Failed to get from remote storage"}.
        """
        cache = self.cache(Flaky())
        self.successResultOf(Deferred.fromCoroutine(cache.get(action(1))))
        [line] = self.lines("Failed to get from remote storage")
        self.assertIn("level=ERROR", line)

    def test_failedRemotePut(self) -> None:
        """
        C{level=ERROR msg="Failed to put to remote storage"}.
        """
        cache = self.cache(Flaky())
        spool = cache.new_spool(3)
        spool.write(b"abc")
        self.successResultOf(Deferred.fromCoroutine(cache.put(action(2), output_of(b"abc"), spool)))
        self.clock.advance(1)
        self.successResultOf(Deferred.fromCoroutine(cache.close()))
        [line] = self.lines("Failed to put to remote storage")
        self.assertIn("level=ERROR", line)

    def test_breakerOpens(self) -> None:
        """
        C{level=ERROR msg="Remote storage has been disabled because of too
        many consecutive errors"}, then on probing
        C{msg="Circuit breaker half-open: allowing probe request"}.
        """
        store = BreakerStore(Flaky(), threshold=2, retry_after=15.0, clock=self.clock)
        for _ in range(2):
            Deferred.fromCoroutine(store.put(UPLOAD)).addErrback(lambda _: None)
        [line] = self.lines("Remote storage has been disabled because of too many consecutive errors")
        self.assertIn("level=ERROR", line)
        self.clock.advance(15)
        Deferred.fromCoroutine(store.put(UPLOAD)).addErrback(lambda _: None)
        self.assertEqual(len(self.lines("Circuit breaker half-open: allowing probe request")), 1)

    def test_statistics(self) -> None:
        """
        C{msg="cacheprog statistics" get_calls=N get_hits=N get_hit_ratio=N.NN
        put_calls=N}, the reference's fields first, as logfmt fields.
        """
        stats = Stats(gets=4, local_hits=1, remote_hits=2, puts=5)
        log.Logger("cli").info("cacheprog statistics", **dict(stats.fields()))
        [line] = self.lines("cacheprog statistics")
        self.assertIn('msg="cacheprog statistics" get_calls=4 get_hits=3 get_hit_ratio=0.75 put_calls=5 ', line)

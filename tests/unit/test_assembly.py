"""
Tests for L{cacheprog.assembly}: the one remote stack of both modes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.assembly import assemble
from cacheprog.cache import inline_runner
from cacheprog.metrics import Metrics
from cacheprog.remote.breaker import BreakerStore
from cacheprog.remote.disabled import DisabledStore
from cacheprog.remote.factory import NoSettings
from cacheprog.remote.memory import MemoryStore
from cacheprog.remote.observing import ObservingStore
from cacheprog.settings import Remote


class AssembleTests(SynchronousTestCase):
    def test_breaker_then_observer(self) -> None:
        """
        The backend, inside the breaker (with its threshold), inside the
        observer; the backend itself serves blobs.
        """
        stack = assemble(Remote(NoSettings("memory"), breaker_threshold=4), Clock(), inline_runner, Metrics())
        observed: Any = stack.store
        self.assertIsInstance(observed, ObservingStore)
        self.assertIsInstance(observed._inner, BreakerStore)
        self.assertEqual(observed._inner.gets._threshold, 4)
        self.assertIs(observed._inner._inner, stack.backend)
        self.assertIsInstance(stack.backend, MemoryStore)
        self.assertIs(stack.blobs, stack.backend)

    def test_no_breaker(self) -> None:
        """
        No breaker when switched off, nor around the disabled store; no
        observer without metrics; the disabled store holds no blobs.
        """
        stack = assemble(Remote(NoSettings("memory"), breaker_threshold=0), Clock(), inline_runner)
        self.assertIs(stack.store, stack.backend)
        stack = assemble(Remote(NoSettings("disabled")), Clock(), inline_runner)
        self.assertIsInstance(stack.store, DisabledStore)
        self.assertIsNone(stack.blobs)

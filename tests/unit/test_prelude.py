"""
Tests for L{cacheprog.prelude}: local hits answered before Twisted, and the
hand-over to L{cacheprog.stdio.CacheProtocol} at the first request that
needs the reactor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.cache import Cache, inline_runner
from cacheprog.local import DiskStore
from cacheprog.prelude import Handover, Prelude
from cacheprog.remote.memory import MemoryStore
from cacheprog.stats import Stats
from cacheprog.stdio import CacheProtocol

from .helpers import action, output_of, store_object
from .test_stdio import close, get, put

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Pipe:
    """
    stdin as a list of reads, stdout as a list of writes.
    """

    def __init__(self, *reads: bytes) -> None:
        self.reads = list(reads)
        self.written: list[bytes] = []
        self.closed = False

    def read(self, n: int) -> bytes:
        return self.reads.pop(0) if self.reads else b""

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def answers(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in b"".join(self.written).splitlines()]


class PreludeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.local = DiskStore(self.mktemp())
        self.local.probe()

    def hit(self, n: int, body: bytes) -> str:
        """
        Put an entry for action C{n} in the local tier; return its DiskPath.
        """
        when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        digest = output_of(body)
        path = self.local.write_data(body, digest)
        self.local.write_meta(action(n), digest, digest, len(body), when)
        return path

    def prelude(self, pipe: _Pipe, remote: bool = True) -> Prelude:
        return Prelude(self.local, pipe.read, pipe.write, pipe.close, remote_enabled=remote)

    def test_hits_then_close(self) -> None:
        """
        Local hits are answered with the entry; close is answered, stdout
        closed, the run finished; the counts are kept.
        """
        path = self.hit(1, b"one")
        pipe = _Pipe(get(1, action(1)) + get(2, action(1)), close(3))
        state = self.prelude(pipe).run()
        self.assertTrue(state.finished)
        self.assertTrue(pipe.closed)
        answers = pipe.answers()
        self.assertEqual([a["ID"] for a in answers], [1, 2, 3])
        self.assertEqual(answers[0]["DiskPath"], path)
        self.assertEqual(answers[0]["Size"], 3)
        self.assertEqual(answers[2], {"ID": 3})
        self.assertEqual((state.gets, state.local_hits, state.misses), (2, 2, 0))
        self.assertEqual(state.asked, [action(1), action(1)])

    def test_eof_finishes(self) -> None:
        """
        stdin EOF after complete requests (go list sends no close) ends the
        run with stdout closed.
        """
        self.hit(1, b"one")
        pipe = _Pipe(get(1, action(1)))
        state = self.prelude(pipe).run()
        self.assertTrue(state.finished)
        self.assertTrue(pipe.closed)
        self.assertEqual([a["ID"] for a in pipe.answers()], [1])

    def test_eof_inside_request(self) -> None:
        """
        EOF in the middle of a request is left to the protocol, which reports
        it: not finished, stdout open.
        """
        pipe = _Pipe(get(1, action(1))[:10])
        state = self.prelude(pipe).run()
        self.assertFalse(state.finished)
        self.assertFalse(pipe.closed)

    def test_miss_with_remote_hands_over(self) -> None:
        """
        A local miss with a remote store stops the prelude: that get and
        everything decoded after it are the backlog, unanswered.
        """
        self.hit(2, b"two")
        pipe = _Pipe(get(1, action(1)) + get(2, action(2)))
        state = self.prelude(pipe).run()
        self.assertFalse(state.finished)
        self.assertEqual(pipe.written, [])
        self.assertEqual([e.id for e in state.backlog], [1, 2])  # type: ignore[union-attr]
        self.assertEqual(state.gets, 0)

    def test_miss_without_remote(self) -> None:
        """
        Without a remote store a local miss is a miss, answered here.
        """
        pipe = _Pipe(get(1, action(1)), close(2))
        state = self.prelude(pipe, remote=False).run()
        self.assertTrue(state.finished)
        self.assertEqual(pipe.answers(), [{"ID": 1, "Miss": True}, {"ID": 2}])
        self.assertEqual((state.gets, state.misses), (1, 1))

    def test_put_hands_over(self) -> None:
        """
        A put needs the reactor (the spool, the upload): handed over with
        the part of its body decoded so far.
        """
        self.hit(1, b"one")
        pipe = _Pipe(get(1, action(1)) + put(2, action(2), b"body")[:-3])
        state = self.prelude(pipe).run()
        self.assertEqual([a["ID"] for a in pipe.answers()], [1])
        self.assertEqual(state.answered, {1})
        self.assertEqual(type(state.backlog[0]).__name__, "Request")
        self.assertEqual(state.backlog[0].id, 2)  # type: ignore[union-attr]

    def test_malformed_hands_over(self) -> None:
        """
        Bad input: the good requests before it are handed over with the
        reason.
        """
        pipe = _Pipe(get(1, action(1)) + b"not json\n\n")
        state = self.prelude(pipe).run()
        self.assertIn("unmarshal", state.malformed)
        self.assertEqual([e.id for e in state.backlog], [1])  # type: ignore[union-attr]

    def test_stdout_gone(self) -> None:
        """
        A write that fails (go is gone) ends the run quietly.
        """
        self.hit(1, b"one")

        def broken(data: bytes) -> None:
            raise BrokenPipeError()

        pipe = _Pipe(get(1, action(1)))
        state = Prelude(self.local, pipe.read, broken, pipe.close, remote_enabled=True).run()
        self.assertTrue(state.finished)

    def test_close_left_to_protocol(self) -> None:
        """
        With work at close (a run manifest), hits are answered but close
        and EOF are handed over, stdout open.
        """
        self.hit(1, b"one")
        for reads in ((get(1, action(1)), close(2)), (get(1, action(1)),)):
            pipe = _Pipe(*reads)
            state = Prelude(self.local, pipe.read, pipe.write, pipe.close, True, finish_alone=False).run()
            self.assertFalse(state.finished)
            self.assertFalse(pipe.closed)
            self.assertEqual([a["ID"] for a in pipe.answers()], [1])
            self.assertEqual([e.id for e in state.backlog], [2] if len(reads) == 2 else [])  # type: ignore[union-attr]

    def test_nothing_used_finishes_here(self) -> None:
        """
        With a run manifest kept, a run that used no entry (close or EOF
        first: C{go list}, C{go env}) still ends here: the manifest records
        used entries only, so the reactor would have nothing to write.
        """
        for reads in ((close(1),), (b"",)):
            pipe = _Pipe(*reads)
            state = Prelude(self.local, pipe.read, pipe.write, pipe.close, True, finish_alone=False).run()
            self.assertTrue(state.finished)
            self.assertTrue(pipe.closed)
            self.assertEqual(pipe.answers(), [{"ID": 1}] if reads[0] else [])

    def test_replay_into(self) -> None:
        """
        The journal hears every key asked, then every hit with its entry.
        """
        self.hit(1, b"one")
        pipe = _Pipe(get(1, action(1)) + get(2, action(2)))
        state = self.prelude(pipe).run()
        calls: list[tuple[str, bytes, object]] = []

        class Journal:
            def note(self, action_id: bytes) -> None:
                calls.append(("note", action_id, None))

            def record(self, action_id: bytes, entry: object) -> None:
                calls.append(("record", action_id, entry))

        state.replay_into(Journal())  # type: ignore[arg-type]
        self.assertEqual([(c[0], c[1]) for c in calls], [("note", action(1)), ("record", action(1))])
        self.assertEqual(calls[1][2], self.local.lookup(action(1)))

    def test_count_into(self) -> None:
        """
        The counts go into the run's statistics.
        """
        stats = Stats(gets=1, local_hits=1)
        state = Handover(decoder=None, gets=2, local_hits=1, misses=1, asked=[b"a", b"b"])  # type: ignore[arg-type]
        state.count_into(stats)
        self.assertEqual((stats.gets, stats.local_hits, stats.misses), (3, 2, 1))


class HandoverTests(SynchronousTestCase):
    """
    The protocol carries on where the prelude stopped.
    """

    def test_protocol_continues(self) -> None:
        """
        The backlog is answered first, the rest of a put's body arrives
        through the protocol, answered IDs are not answered again, and the
        statistics include the prelude's hits.
        """
        local = DiskStore(self.mktemp())
        local.probe()
        remote = MemoryStore()
        store_object(remote, action(3), b"remote")
        digest = output_of(b"one")
        local.write_data(b"one", digest)
        local.write_meta(action(1), digest, digest, 3, datetime.now(timezone.utc))
        body = put(2, action(2), b"body")
        pipe = _Pipe(get(1, action(1)) + body[:-3])
        state = Prelude(local, pipe.read, pipe.write, pipe.close, remote_enabled=True).run()
        cache = Cache(local, remote, Clock())
        state.count_into(cache.stats)
        proto = CacheProtocol(cache, inline_runner, handover=state)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(body[-3:] + get(3, action(3)) + close(4))
        answers = [json.loads(line) for line in transport.value().splitlines()]
        self.assertEqual([a["ID"] for a in answers], [2, 3, 4])
        self.assertIn("DiskPath", answers[0])
        self.assertEqual(answers[1]["Size"], len(b"remote"))
        self.assertEqual((cache.stats.gets, cache.stats.local_hits, cache.stats.remote_hits), (2, 1, 1))

    def test_malformed_after_handover(self) -> None:
        """
        Input the prelude found malformed ends the run with status 1 once
        the backlog is answered.
        """
        local = DiskStore(self.mktemp())
        local.probe()
        pipe = _Pipe(get(1, action(1)) + b"not json\n\n")
        state = Prelude(local, pipe.read, pipe.write, pipe.close, remote_enabled=False).run()
        proto = CacheProtocol(Cache(local, MemoryStore(), Clock()), inline_runner, handover=state)
        transport = StringTransport()
        proto.makeConnection(transport)
        self.assertEqual([json.loads(line) for line in transport.value().splitlines()], [{"ID": 1, "Miss": True}])
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(self.successResultOf(proto.done), 1)


class ProcessTests(SynchronousTestCase):
    """
    C{python -m cacheprog}: a run of local hits never imports Twisted.
    """

    def run_cacheprog(self, root: str, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEPROG_")}
        env["CACHEPROG_WARM_START"] = "false"
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "cacheprog", "--root-directory", root, *args],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=60,
        )

    def test_local_hits_without_twisted(self) -> None:
        """
        A put (which needs Twisted), then a run of one hit and close: the
        second run (a remote store, no run manifest) answers from the local
        tier and imports no Twisted.
        """
        root = os.path.abspath(self.mktemp())
        first = self.run_cacheprog(root, put(1, action(1), b"body") + close(2))
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertIn(b"| twisted.internet.reactor\n", first.stderr)
        second = self.run_cacheprog(root, get(1, action(1)) + close(2), "--remote-storage-type", "memory")
        self.assertEqual(second.returncode, 0, second.stderr)
        lines = [json.loads(line) for line in second.stdout.splitlines()]
        self.assertEqual([a["ID"] for a in lines], [0, 1, 2])
        self.assertEqual(lines[1]["Size"], 4)
        self.assertNotIn(b"| twisted", second.stderr)
        self.assertIn(b"local_hits=1", second.stderr)

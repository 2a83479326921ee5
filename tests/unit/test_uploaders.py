"""
The bookkeeping of detached uploaders (L{cacheprog.uploaders}) and the
detached drain in the protocol: stdout closes first, the uploads finish
after, C{cacheprog wait} collects the result.
"""

from __future__ import annotations

import io
import json
import os

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from cacheprog import log
from cacheprog.cache import Cache, inline_runner
from cacheprog.local import DiskStore
from cacheprog.settings import Transfers
from cacheprog.stdio import CacheProtocol
from cacheprog.uploaders import Detacher, Registration, Summary, Uploaders
from cacheprog.wire import handshake

from .helpers import GatedStore, action
from .test_stdio import close, put


class UploadersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = self.mktemp()
        self.uploaders = Uploaders(self.root)
        self.report = io.StringIO()

    def wait(self, timeout: float = 0.0, during: list[Registration] | None = None) -> Summary:
        """
        Wait with a fake sleep: each sleep finishes one registration of
        C{during} (the uploaders ending while we wait).
        """
        now = [0.0]
        pending = list(during or [])
        sleeps = [0]

        def sleep(seconds: float) -> None:
            sleeps[0] += 1
            now[0] += seconds
            if pending:
                pending.pop(0).finish(uploaded=3, dropped=1)

        summary = self.uploaders.wait(timeout, self.report, clock=lambda: now[0], sleep=sleep)
        self.sleeps = sleeps[0]
        return summary

    def test_nothing_registered(self) -> None:
        self.assertEqual(self.wait().line(), "cacheprog wait: uploaders=0 uploaded=0 dropped=0")

    def test_waits_until_done(self) -> None:
        """
        wait blocks while an uploader holds its lock, then sums the results
        and removes the entries.
        """
        first, second = self.uploaders.register(4), self.uploaders.register(4)
        summary = self.wait(during=[first, second])
        self.assertEqual(summary.line(), "cacheprog wait: uploaders=2 uploaded=6 dropped=2")
        self.assertGreaterEqual(self.sleeps, 2)
        self.assertEqual(os.listdir(self.uploaders.directory), [])

    def test_killed_uploader(self) -> None:
        """
        An uploader that died without its result (SIGKILL: the kernel drops
        the lock) counts its pending jobs as dropped.
        """
        registration = self.uploaders.register(5)
        os.close(registration._lock)
        summary = self.wait()
        self.assertEqual(
            summary.line(),
            "cacheprog wait: uploaders=1 uploaded=0 dropped=5 killed=1",
        )
        self.assertIn("ended before its result", self.report.getvalue())

    def test_timeout(self) -> None:
        self.uploaders.register(2)
        summary = self.wait(timeout=1.0)
        self.assertEqual(summary.running, 1)
        self.assertIn("still_running=1", summary.line())

    def test_log_of_dropping_uploader_reported(self) -> None:
        registration = self.uploaders.register(1)
        with open(registration.log_path, "w") as f:
            f.write('level=ERROR msg="Failed to put to remote storage"\n')
        registration.finish(uploaded=0, dropped=1)
        self.wait()
        self.assertIn("Failed to put", self.report.getvalue())

    def test_result_file(self) -> None:
        registration = self.uploaders.register(3)
        path = os.path.join(self.uploaders.directory, registration.name + ".json")
        with open(path) as f:
            self.assertEqual(json.load(f)["state"], "running")
        registration.finish(uploaded=3, dropped=0)
        with open(path) as f:
            self.assertEqual(json.load(f)["uploaded"], 3)


class DetachedDrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.local = DiskStore(self.mktemp())
        self.local.probe()
        self.remote = GatedStore()
        self.uploaders = Uploaders(self.local.root)
        self.detacher = Detacher(self.uploaders, timeout=30.0)
        self.cache = Cache(self.local, self.remote, self.clock, settings=Transfers())
        self.proto = CacheProtocol(self.cache, inline_runner, handshake=handshake(), detacher=self.detacher)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def answered(self) -> list[int]:
        return [json.loads(line)["ID"] for line in self.transport.value().splitlines()]

    def test_close_answers_and_closes_stdout_before_uploads(self) -> None:
        """
        With uploads pending, close is answered and stdout closed at once;
        the run ends only when the uploads are done, and the result is
        there for C{cacheprog wait}.
        """
        self.proto.dataReceived(put(1, action(1), b"one") + put(2, action(2), b"two") + close(3))
        self.assertEqual(self.answered(), [0, 1, 2, 3])
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(None)
        self.assertNoResult(self.proto.done)
        self.assertEqual(len(os.listdir(self.uploaders.directory)), 2)
        self.remote.release()
        self.assertEqual(self.successResultOf(self.proto.done), 0)
        summary = self.uploaders.wait()
        self.assertEqual((summary.uploaders, summary.uploaded, summary.dropped), (1, 2, 0))

    def test_statistics_reach_go_before_detaching(self) -> None:
        """
        The statistics line (with the uploads still pending) is logged
        before the uploader moves its stderr away from go's: the job's log
        has one for every go command, detached or not.
        """
        stream = io.StringIO()
        log.configure(stream=stream)
        self.addCleanup(log.configure, stream=io.StringIO())
        seen: list[str] = []
        detach = self.detacher.detach

        def detach_and_look(pending: int) -> bool:
            seen.append(stream.getvalue())
            return detach(pending)

        self.detacher.detach = detach_and_look  # type: ignore[method-assign]
        self.proto.dataReceived(put(1, action(1), b"one") + put(2, action(2), b"two") + close(3))
        (before,) = seen
        self.assertIn('msg="cacheprog statistics"', before)
        self.assertIn(" put_calls=2 ", before)
        self.assertIn(" uploads_pending=2", before)
        self.proto.connectionLost(None)
        self.remote.release()
        self.successResultOf(self.proto.done)

    def test_eof_takes_the_same_path(self) -> None:
        self.proto.dataReceived(put(1, action(1), b"one"))
        self.proto.readConnectionLost()
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(None)
        self.assertNoResult(self.proto.done)
        self.remote.release()
        self.successResultOf(self.proto.done)
        self.assertEqual(self.uploaders.wait().uploaded, 1)

    def test_bounded_in_time(self) -> None:
        self.proto.dataReceived(put(1, action(1), b"one") + close(2))
        self.proto.connectionLost(None)
        self.clock.advance(30.0)
        self.successResultOf(self.proto.done)
        summary = self.uploaders.wait()
        self.assertEqual((summary.uploaded, summary.dropped), (0, 1))

    def test_signal_drops_what_is_left(self) -> None:
        """
        SIGTERM while detached (docker stop): the uploads left are
        cancelled and counted dropped at once, not after the time limit.
        """
        self.proto.dataReceived(put(1, action(1), b"one") + close(2))
        self.proto.connectionLost(None)
        stopping = self.proto.shutdown()
        assert stopping is not None
        self.successResultOf(stopping)
        self.assertEqual(self.uploaders.wait().dropped, 1)

    def test_nothing_pending_stays_attached(self) -> None:
        """
        No uploads left at close: nothing registers, the run ends as usual.
        """
        self.proto.dataReceived(close(1))
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(None)
        self.successResultOf(self.proto.done)
        self.assertFalse(os.path.exists(self.uploaders.directory))


class ReleaseStdoutTests(SynchronousTestCase):
    def test_pipe_ends(self) -> None:
        """
        Twisted's stdio keeps the protocol descriptor open after
        loseConnection; releasing it is what ends go's read of the pipe.
        """
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        os.write(write, b"answers\n")
        Detacher(Uploaders(self.mktemp()), 1.0, stdout_fd=write).release_stdout()
        self.assertEqual(os.read(read, 100), b"answers\n")
        self.assertEqual(os.read(read, 100), b"")

"""
Tests for L{cacheprog.stdio.CacheProtocol} over a StringTransport, with a
fake clock, a real DiskStore in a temp dir and memory backends.
"""

from __future__ import annotations

import base64
import json
import os

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from cacheprog.cache import Cache, inline_runner
from cacheprog.local import DiskStore
from cacheprog.remote.memory import MemoryStore
from cacheprog.settings import Transfers
from cacheprog.spool import BIG
from cacheprog.stdio import CacheProtocol
from cacheprog.wire import handshake

from .helpers import GatedStore, action, output_of, store_object


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def get(request_id: int, action_id: bytes) -> bytes:
    return json.dumps({"ID": request_id, "Command": "get", "ActionID": b64(action_id)}).encode() + b"\n\n"


def put(request_id: int, action_id: bytes, body: bytes) -> bytes:
    head = {"ID": request_id, "Command": "put", "ActionID": b64(action_id), "OutputID": b64(output_of(body))}
    if body:
        head["BodySize"] = len(body)
    out = json.dumps(head).encode() + b"\n\n"
    if body:
        out += b'"' + base64.b64encode(body) + b'"\n'
    return out


def close(request_id: int) -> bytes:
    return json.dumps({"ID": request_id, "Command": "close"}).encode() + b"\n\n"


class ProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.local = DiskStore(self.mktemp())
        self.local.probe()
        self.remote: MemoryStore | GatedStore = MemoryStore()

    def connect(self, remote: object = None, **settings: object) -> tuple[CacheProtocol, StringTransport]:
        if remote is not None:
            self.remote = remote  # type: ignore[assignment]
        cache = Cache(self.local, self.remote, self.clock, settings=Transfers(**settings))  # type: ignore[arg-type]
        self.cache = cache
        proto = CacheProtocol(cache, inline_runner, handshake=handshake())
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def answers(self, transport: StringTransport) -> list[dict[str, object]]:
        lines = transport.value().splitlines()
        return [json.loads(line) for line in lines]

    def finish(self, proto: CacheProtocol, transport: StringTransport) -> int:
        self.assertTrue(transport.disconnecting, "stdout was not closed")
        proto.connectionLost(None)
        return self.successResultOf(proto.done)

    def test_handshake_first(self) -> None:
        """
        The first line is the ID 0 handshake.
        """
        _, transport = self.connect()
        self.assertEqual(self.answers(transport), [{"ID": 0, "KnownCommands": ["close", "get", "put"]}])

    def test_round_trip(self) -> None:
        """
        put, get and close are each answered once; the get is a hit on the
        put's file; close closes stdout and the run ends with status 0.
        """
        proto, transport = self.connect()
        proto.dataReceived(get(1, action(1)) + put(2, action(1), b"hello") + get(3, action(1)) + close(4))
        answers = self.answers(transport)[1:]
        self.assertEqual([a["ID"] for a in answers], [1, 2, 3, 4])
        self.assertEqual(answers[0], {"ID": 1, "Miss": True})
        path = answers[1]["DiskPath"]
        assert isinstance(path, str)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"hello")
        self.assertEqual(answers[2]["DiskPath"], path)
        self.assertEqual(answers[2]["Size"], 5)
        self.assertEqual(answers[2]["OutputID"], b64(output_of(b"hello")))
        self.assertIn("Time", answers[2])
        self.assertEqual(answers[3], {"ID": 4})
        self.assertEqual(self.finish(proto, transport), 0)

    def test_out_of_order(self) -> None:
        """
        A slow remote get does not hold up later requests: the put after it
        is answered first, the get when its fetch ends.
        """
        gated = GatedStore()
        store_object(gated.memory, action(1), b"remote body")
        proto, transport = self.connect(gated)
        proto.dataReceived(get(1, action(1)) + put(2, action(2), b""))
        self.assertEqual([a["ID"] for a in self.answers(transport)[1:]], [2])
        gated.release()
        gated.release()
        self.assertEqual([a["ID"] for a in self.answers(transport)[1:]], [2, 1])
        self.assertIn("DiskPath", self.answers(transport)[2])

    def test_close_waits_for_in_flight(self) -> None:
        """
        close is answered only after every request before it was answered.
        """
        gated = GatedStore()
        proto, transport = self.connect(gated)
        proto.dataReceived(get(1, action(1)) + close(2))
        self.assertEqual([a["ID"] for a in self.answers(transport)[1:]], [])
        gated.release()
        self.assertEqual([a["ID"] for a in self.answers(transport)[1:]], [1, 2])
        self.assertEqual(self.finish(proto, transport), 0)

    def test_eof_is_close(self) -> None:
        """
        stdin EOF without close (go list) answers what is in flight, drains
        uploads, closes stdout, and ends with status 0.
        """
        gated = GatedStore()
        proto, transport = self.connect(gated)
        proto.dataReceived(put(1, action(1), b"data"))
        proto.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        gated.release()
        self.assertIn(action(1), gated.memory.objects)
        self.assertEqual(self.finish(proto, transport), 0)

    def test_malformed(self) -> None:
        """
        A malformed line: what was in flight is still answered, nothing but
        JSON reaches stdout, stdout closes and the status is 1.
        """
        gated = GatedStore()
        proto, transport = self.connect(gated)
        proto.dataReceived(get(1, action(1)) + b"this is not json\n")
        gated.release()
        answers = self.answers(transport)
        self.assertEqual([a["ID"] for a in answers], [0, 1])
        self.assertEqual(self.finish(proto, transport), 1)

    def test_truncated(self) -> None:
        """
        EOF inside a put body ends the run with status 1 and no hang.
        """
        proto, transport = self.connect()
        proto.dataReceived(put(1, action(1), b"hello world")[:-6])
        proto.readConnectionLost()
        self.assertEqual(self.finish(proto, transport), 1)

    def spools(self) -> list[str]:
        return [n for _, _, names in os.walk(self.local.root) for n in names if n.startswith(".spool.")]

    def test_cut_off_put_leaves_no_spool(self) -> None:
        """
        EOF, a signal or bad input in the middle of a big put body removes its
        spool file (it stayed in the root for ever).
        """
        data = put(1, action(1), os.urandom(BIG * 3))
        for end in ("eof", "signal", "garbage"):
            proto, _ = self.connect()
            proto.dataReceived(data[: len(data) // 2])
            self.assertEqual(len(self.spools()), 1, end)
            if end == "eof":
                proto.readConnectionLost()
            elif end == "signal":
                proto.shutdown()
            else:
                proto.dataReceived(b'"garbage\n')
            self.assertEqual(self.spools(), [], end)
            proto.connectionLost(None)

    def test_nothing_after_close(self) -> None:
        """
        Requests after close are not dispatched (go never sends any).
        """
        proto, transport = self.connect()
        proto.dataReceived(close(1) + get(2, action(1)) + put(3, action(2), b"late"))
        self.assertEqual([a["ID"] for a in self.answers(transport)], [0, 1])
        self.assertIsNone(self.local.lookup(action(2)))
        self.assertEqual(self.cache.stats.gets, 0)

    def test_unknown_command(self) -> None:
        """
        An unknown command gets an Err naming it, and the run goes on.
        """
        proto, transport = self.connect()
        proto.dataReceived(b'{"ID":5,"Command":"get2"}\n\n' + get(6, action(1)))
        answers = self.answers(transport)[1:]
        self.assertEqual(answers[0], {"ID": 5, "Err": "unsupported command 'get2'"})
        self.assertEqual(answers[1], {"ID": 6, "Miss": True})

    def test_big_body_in_pieces(self) -> None:
        """
        A body of more than 1 MiB fed in small pieces is stored whole.
        """
        proto, transport = self.connect()
        body = os.urandom(BIG + 12345)
        data = put(1, action(1), body)
        for i in range(0, len(data), 8192):
            proto.dataReceived(data[i : i + 8192])
        answer = self.answers(transport)[1]
        path = answer["DiskPath"]
        assert isinstance(path, str)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), body)

    def test_local_failure_is_err_and_drains(self) -> None:
        """
        A put whose local write fails answers Err, and the request after its
        body is still read and answered.
        """
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        self.local = DiskStore(os.path.join(blocker, "root"))
        proto, transport = self.connect()
        proto.dataReceived(put(1, action(1), b"x" * 100) + get(2, action(2)))
        answers = self.answers(transport)[1:]
        self.assertEqual(answers[0]["ID"], 1)
        self.assertIn("failed to put object", str(answers[0]["Err"]))
        self.assertEqual(answers[1], {"ID": 2, "Miss": True})

    def test_remote_trouble_never_err(self) -> None:
        """
        A remote that fails every call gives misses and plain DiskPath answers.
        """
        gated = GatedStore()
        gated.fail_with = ConnectionRefusedError("down")
        proto, transport = self.connect(gated)
        proto.dataReceived(get(1, action(1)) + put(2, action(2), b"abc"))
        gated.release()
        gated.release()
        answers = self.answers(transport)[1:]
        self.assertTrue(all("Err" not in a for a in answers), answers)
        self.assertEqual(sorted(str(a["ID"]) for a in answers), ["1", "2"])


class ShutdownTests(SynchronousTestCase):
    def test_signal_answers_in_flight(self) -> None:
        """
        shutdown (on SIGTERM) answers the requests in flight, closes stdout,
        and fires once the run is over.
        """
        local = DiskStore(self.mktemp())
        local.probe()
        gated = GatedStore()
        proto = CacheProtocol(Cache(local, gated, Clock()), inline_runner)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(get(1, action(1)))
        waiting = proto.shutdown()
        assert waiting is not None
        self.assertNoResult(waiting)
        gated.release()
        self.assertEqual(json.loads(transport.value()), {"ID": 1, "Miss": True})
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.successResultOf(waiting)
        self.assertIsNone(proto.shutdown())


class HalfCloseTests(SynchronousTestCase):
    def test_stdout_gone_ends_the_run(self) -> None:
        """
        When the reader closes our stdout (go exited without close), the run
        still ends: done fires although the transport will never report the
        connection lost (it already lost its writer).
        """
        local = DiskStore(self.mktemp())
        local.probe()
        proto = CacheProtocol(Cache(local, MemoryStore(), Clock()), inline_runner)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(get(1, action(1)))
        proto.writeConnectionLost()
        self.assertEqual(self.successResultOf(proto.done), 0)

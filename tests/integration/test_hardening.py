"""
Hardening cases that need real processes (issue 12): a planted default
root, a decompression bomb, the proxy's memory under huge and stalled
bodies, slowloris clients, and write/read tokens.  Everything runs on
127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.trial.unittest import TestCase

from tests.integration.test_proxy import _environ


def run_direct(env: dict[str, str], stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """
    C{python -m cacheprog} with C{stdin}, as go would start it.
    """
    return subprocess.run(
        [sys.executable, "-m", "cacheprog"],
        input=stdin,
        capture_output=True,
        env=_environ(**env),
        timeout=timeout,
        check=False,
    )


class PlantedRootTests(TestCase):
    """
    Another local user who creates the predictable default root first must
    not get files served to go.
    """

    timeout = 120

    def test_planted_default_root_refused(self) -> None:
        """
        A world-writable C{<tmp>/cacheprog-<uid>} created before us: exit 1
        before the handshake, with a message naming the directory.
        """
        tmp = tempfile.mkdtemp(prefix="cacheprog-planted-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp], check=False)
        planted = os.path.join(tmp, f"cacheprog-{os.getuid()}")
        os.mkdir(planted)
        os.chmod(planted, 0o777)
        done = run_direct({"TMPDIR": tmp})
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertEqual(done.stdout, b"", "no handshake")
        self.assertIn(planted.encode(), done.stderr)

    def test_fresh_default_root_private(self) -> None:
        """
        A default root we create ourselves is 0700 and works.
        """
        tmp = tempfile.mkdtemp(prefix="cacheprog-planted-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp], check=False)
        done = run_direct({"TMPDIR": tmp}, b'{"ID":1,"Command":"close"}\n\n')
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(b'"ID":1', done.stdout)
        self.assertEqual(os.stat(os.path.join(tmp, f"cacheprog-{os.getuid()}")).st_mode & 0o777, 0o700)


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def plant_bomb(store: str, action_id: bytes, claimed: int) -> int:
    """
    A zstd object in a dir store whose C{claimed} bytes of zeros compress to
    a few KiB, under a made-up OutputID.  Returns its stored size.
    """
    import base64
    import json

    import zstandard

    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(claimed >> 20)]
    data = b"".join(parts) + compressor.flush()
    name = action_id.hex()
    directory = os.path.join(store, name[:2])
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)
    meta = {
        "output_id": base64.b64encode(os.urandom(32)).decode(),
        "compression_algorithm": "zstd",
        "uncompressed_size": str(claimed),
    }
    with open(os.path.join(directory, name + ".meta"), "w") as f:
        json.dump(meta, f)
    return len(data)


class DirectProcess:
    """
    C{python -m cacheprog} speaking the protocol over pipes, one request at
    a time.
    """

    def __init__(self, *options: str, stderr: Any = subprocess.DEVNULL) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cacheprog", *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_environ(),
        )
        self.readline()  # the handshake

    def readline(self) -> bytes:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def send_get(self, request_id: int, action_id: bytes) -> None:
        import base64
        import json

        line = json.dumps({"ID": request_id, "Command": "get", "ActionID": base64.b64encode(action_id).decode()})
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n\n")
        self.process.stdin.flush()

    def get(self, request_id: int, action_id: bytes) -> bytes:
        self.send_get(request_id, action_id)
        return self.readline()

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(60)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class BombTests(TestCase):
    """
    A decompression bomb costs a bounded amount of memory.
    """

    timeout = 300

    def test_bomb_through_dir_store(self) -> None:
        """
        A ~16 KiB zstd object whose metadata claims 512 MiB (all zeros, under
        a wrong OutputID): the get is a miss and the process's peak RSS
        grows by less than 100 MiB over its idle peak (it was 1 GiB).
        """
        work = tempfile.mkdtemp(prefix="cacheprog-bomb-")
        self.addCleanup(subprocess.run, ["rm", "-rf", work], check=False)
        store = os.path.join(work, "store")
        bomb = bytes(range(32))
        stored = plant_bomb(store, bomb, 512 << 20)
        self.assertLess(stored, 64 * 1024)
        direct = DirectProcess(
            "--remote-storage-type=dir",
            f"--dir-storage-root={store}",
            f"--root-directory={os.path.join(work, 'local')}",
            "--remote-get-timeout=0",
        )
        self.addCleanup(direct.kill)
        self.assertIn(b'"Miss":true', direct.get(1, bytes(32)))
        idle = vm_hwm_kib(direct.process.pid)
        self.assertIn(b'"Miss":true', direct.get(2, bomb))
        peak = vm_hwm_kib(direct.process.pid)
        print(f"\nbomb: idle peak RSS {idle / 1024:.0f} MiB, after the 512 MiB bomb {peak / 1024:.0f} MiB")
        self.assertLess(peak - idle, 100 * 1024, f"idle {idle} KiB, peak {peak} KiB")
        self.assertEqual(direct.close(), 0)
        leftovers = [n for _, _, names in os.walk(os.path.join(work, "local")) for n in names if n.endswith(".tmp")]
        self.assertEqual(leftovers, [])


GIB = 1 << 30


class _Body:
    """
    A big body without holding it: one random MiB repeated, with its sums.
    """

    def __init__(self, size: int) -> None:
        import hashlib

        self.size = size
        self.block = os.urandom(1 << 20)
        md5, sha256 = hashlib.md5(), hashlib.sha256()
        for _ in range(size // len(self.block)):
            md5.update(self.block)
            sha256.update(self.block)
        self.md5, self.sha256 = md5.hexdigest(), sha256.hexdigest()

    def headers(self) -> bytes:
        lines = {
            "Content-Length": str(self.size),
            "X-Cacheprog-OutputID": self.sha256,
            "X-Cacheprog-MD5Sum": self.md5,
            "X-Cacheprog-Sha256Sum": self.sha256,
            "X-Cacheprog-Compression": "",
            "X-Cacheprog-UncompressedSize": str(self.size),
        }
        return "".join(f"{k}: {v}\r\n" for k, v in lines.items()).encode()


def _connect(address: str) -> Any:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    return sock


def _answer(sock: Any) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class ProxyMemoryTests(TestCase):
    """
    The proxy streams bodies both ways: a 1 GiB PUT and four stalled
    readers of a 1 GiB object keep it under 150 MiB.
    """

    timeout = 600

    def test_huge_put_and_stalled_gets(self) -> None:
        from tests.integration.test_proxy import start_proxy

        store = tempfile.mkdtemp(prefix="cacheprog-proxy-mem-")
        self.addCleanup(subprocess.run, ["rm", "-rf", store], check=False)
        proxy = start_proxy(
            self, "--listen-address=127.0.0.1:0", "--remote-storage-type=dir", f"--dir-storage-root={store}"
        )
        body = _Body(GIB)
        key = "ab" * 32
        sock = _connect(proxy.address)
        sock.sendall(b"PUT /cache/" + key.encode() + b" HTTP/1.1\r\nHost: p\r\n" + body.headers() + b"\r\n")
        for _ in range(body.size // len(body.block)):
            sock.sendall(body.block)
        answer = _answer(sock)
        sock.close()
        self.assertRegex(answer, rb"^HTTP/1.1 200 ", answer)
        after_put = proxy.peak_rss_kib()
        readers = []
        for _ in range(4):
            reader = _connect(proxy.address)
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            reader.sendall(b"GET /cache/" + key.encode() + b" HTTP/1.1\r\nHost: p\r\n\r\n")
            self.assertRegex(reader.recv(65536), rb"^HTTP/1.1 200 ")
            readers.append(reader)
        time.sleep(5)  # the proxy fills the sockets, then must pause
        peak = proxy.peak_rss_kib()
        for reader in readers:
            reader.close()
        put_mib, peak_mib = after_put / 1024, peak / 1024
        print(f"\nproxy memory: peak RSS {put_mib:.0f} MiB after a 1 GiB PUT, {peak_mib:.0f} MiB with 4 stalled GETs")
        self.assertLess(peak, 150 * 1024, proxy.log())
        self.assertEqual(proxy.stop(), 0, proxy.log())


def _proxy_limited(testcase: TestCase, nofile: int, *options: str) -> Any:
    """
    A proxy under C{ulimit -n nofile}.
    """
    import shlex
    import shutil

    from tests.integration.test_proxy import ProxyProcess

    workdir = tempfile.mkdtemp(prefix="cacheprog-proxy-")
    testcase.addCleanup(shutil.rmtree, workdir, True)
    command = shlex.join([sys.executable, "-m", "cacheprog", "proxy", "--listen-address=127.0.0.1:0", *options])
    proxy = ProxyProcess(["sh", "-c", f"ulimit -n {nofile} && exec {command}"], workdir)
    testcase.addCleanup(proxy.kill)
    return proxy


def _health(address: str) -> bytes:
    sock = _connect(address)
    try:
        sock.settimeout(10)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: p\r\n\r\n")
        return bytes(sock.recv(65536))
    except OSError as e:
        return repr(e).encode()
    finally:
        sock.close()


class SlowlorisTests(TestCase):
    """
    Clients trickling bytes cannot lock real clients out.
    """

    timeout = 120

    def test_trickling_clients_dropped(self) -> None:
        """
        Under C{ulimit -n 128}, 120 connections each trickling a byte a
        second fill the proxy; at the header deadline they are dropped
        (although bytes keep coming) and a real client is served.
        """
        proxy = _proxy_limited(self, 128, "--proxy-header-timeout=3s")
        trickles = []
        for _ in range(120):
            try:
                sock = _connect(proxy.address)
                sock.sendall(b"G")
                trickles.append(sock)
            except OSError:
                break
        started = time.monotonic()
        served = b""
        while time.monotonic() - started < 20 and not served.startswith(b"HTTP/1.1 200"):
            for sock in trickles:
                try:
                    sock.sendall(b"E")
                except OSError:
                    pass
            time.sleep(1)
            served = _health(proxy.address)
        waited = time.monotonic() - started
        for sock in trickles:
            sock.close()
        print(f"\nslowloris: {len(trickles)} trickling connections; a real client served after {waited:.1f} s")
        self.assertTrue(served.startswith(b"HTTP/1.1 200"), served)
        self.assertLess(waited, 15)
        self.assertIn("Client too slow", proxy.log())
        self.assertEqual(proxy.stop(), 0, proxy.log())


class TokenProcessTests(TestCase):
    """
    A proxy with a write token refuses anonymous writes from the headers.
    """

    timeout = 120

    def test_write_token(self) -> None:
        """
        A PUT announcing 1 GiB without the token is answered 401 before any
        body byte is sent; with a wrong token 403; with the token, stored.
        """
        import hashlib

        from tests.integration.test_proxy import start_proxy

        token_file = os.path.join(tempfile.mkdtemp(prefix="cacheprog-token-"), "token")
        self.addCleanup(subprocess.run, ["rm", "-rf", os.path.dirname(token_file)], check=False)
        with open(token_file, "w") as f:
            f.write("t0ken\n")
        store = tempfile.mkdtemp(prefix="cacheprog-token-store-")
        self.addCleanup(subprocess.run, ["rm", "-rf", store], check=False)
        proxy = start_proxy(
            self,
            "--listen-address=127.0.0.1:0",
            "--remote-storage-type=dir",
            f"--dir-storage-root={store}",
            f"--proxy-write-token-file={token_file}",
        )
        key = ("cd" * 32).encode()
        big = _Body(0)
        big.size = GIB
        for auth, code in ((b"", b"401"), (b"Authorization: Bearer nope\r\n", b"403")):
            sock = _connect(proxy.address)
            sock.sendall(b"PUT /cache/" + key + b" HTTP/1.1\r\nHost: p\r\n" + auth + big.headers() + b"\r\n")
            self.assertTrue(_answer(sock).startswith(b"HTTP/1.1 " + code))
            sock.close()
        body = b"a real output"
        digest = hashlib.sha256(body).hexdigest()
        headers = (
            f"Content-Length: {len(body)}\r\nX-Cacheprog-OutputID: {digest}\r\n"
            f"X-Cacheprog-MD5Sum: {hashlib.md5(body).hexdigest()}\r\nX-Cacheprog-Sha256Sum: {digest}\r\n"
            f"X-Cacheprog-UncompressedSize: {len(body)}\r\nAuthorization: Bearer t0ken\r\n"
        ).encode()
        sock = _connect(proxy.address)
        sock.sendall(b"PUT /cache/" + key + b" HTTP/1.1\r\nHost: p\r\n" + headers + b"\r\n" + body)
        self.assertTrue(_answer(sock).startswith(b"HTTP/1.1 200"))
        sock.close()
        status, data = proxy.get("/cache/" + key.decode())
        self.assertEqual((status, data), (200, body), "reads stay open without a read token")
        self.assertEqual(proxy.stop(), 0, proxy.log())


class StuckRemoteTests(TestCase):
    """
    A remote that accepts connections and never answers, with every
    timeout of ours switched off: signals still end the run promptly.
    """

    timeout = 120

    def start(self, log: str) -> DirectProcess:
        stuck = self.stuck = socket.socket()
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(64)  # the kernel accepts; nobody ever answers
        self.addCleanup(stuck.close)
        work = tempfile.mkdtemp(prefix="cacheprog-stuck-")
        self.addCleanup(subprocess.run, ["rm", "-rf", work], check=False)
        direct = DirectProcess(
            "--remote-storage-type=http",
            f"--http-storage-base-url=http://127.0.0.1:{stuck.getsockname()[1]}",
            f"--root-directory={os.path.join(work, 'local')}",
            "--remote-get-timeout=0",
            "--remote-put-timeout=0",
            "--max-background-wait=0",
            stderr=open(log, "wb"),  # noqa: SIM115 - the process owns it
        )
        self.addCleanup(direct.kill)
        return direct

    def test_sigterm_answers_and_exits(self) -> None:
        """
        One SIGTERM: the stuck get is answered "miss" after the grace and
        the process exits 0.
        """
        import signal

        log = self.mktemp()
        direct = self.start(log)
        direct.send_get(1, bytes(32))
        self.stuck.settimeout(60)
        self.addCleanup(self.stuck.accept()[0].close)  # it is running, and stuck
        started = time.monotonic()
        direct.process.send_signal(signal.SIGTERM)
        self.assertIn(b'"Miss":true', direct.readline())
        self.assertEqual(direct.process.wait(30), 0)
        self.assertLess(time.monotonic() - started, 15)

    def test_two_sigterms_no_traceback(self) -> None:
        """
        Two SIGTERMs: the second abandons the stuck work at once, and
        nothing like a traceback (ReactorNotRunning) reaches stderr.
        """
        import signal

        log = self.mktemp()
        direct = self.start(log)
        direct.send_get(1, bytes(32))
        self.stuck.settimeout(60)
        self.addCleanup(self.stuck.accept()[0].close)  # it is running, and stuck
        started = time.monotonic()
        direct.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        direct.process.send_signal(signal.SIGTERM)
        self.assertIn(b'"Miss":true', direct.readline())
        self.assertEqual(direct.process.wait(30), 0)
        self.assertLess(time.monotonic() - started, 3)
        with open(log, "rb") as f:
            stderr = f.read()
        self.assertNotIn(b"Traceback", stderr)
        self.assertNotIn(b"ReactorNotRunning", stderr)


class ProxySignalTests(TestCase):
    """
    A second SIGTERM stops a draining proxy at once, cleanly.
    """

    timeout = 120

    def test_second_sigterm_cuts_the_drain(self) -> None:
        """
        A PUT whose body never ends holds the drain (10 s); a second SIGTERM
        cuts it off: exit 0 at once, no traceback (it logged
        ReactorNotRunning and could die of the signal).
        """
        import signal

        from tests.integration.test_proxy import start_proxy

        proxy = start_proxy(self, "--listen-address=127.0.0.1:0")
        body = _Body(0)
        body.size = 1 << 20
        sock = _connect(proxy.address)
        sock.sendall(b"PUT /cache/" + b"ef" * 32 + b" HTTP/1.1\r\nHost: p\r\n" + body.headers() + b"\r\nabc")
        time.sleep(0.5)
        started = time.monotonic()
        proxy.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proxy.process.send_signal(signal.SIGTERM)
        status = proxy.process.wait(30)
        sock.close()
        self.assertEqual(status, 0, proxy.log())
        self.assertLess(time.monotonic() - started, 5)
        self.assertNotIn("Traceback", proxy.log())
        self.assertIn("cut off", proxy.log())

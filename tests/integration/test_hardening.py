"""
Hardening cases that need real processes (issue 12): a planted default
root, a decompression bomb, the proxy's memory under huge and stalled
bodies, slowloris clients, and write/read tokens.  Everything runs on
127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

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

    def __init__(self, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cacheprog", *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_environ(),
        )
        self.readline()  # the handshake

    def readline(self) -> bytes:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def get(self, request_id: int, action_id: bytes) -> bytes:
        import base64
        import json

        line = json.dumps({"ID": request_id, "Command": "get", "ActionID": base64.b64encode(action_id).decode()})
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n\n")
        self.process.stdin.flush()
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

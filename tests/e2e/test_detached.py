"""
End to end with the detached drain (C{--detached-drain}) and C{cacheprog
wait}: the real go command, SeaweedFS behind Toxiproxy on 127.0.0.1.

 - go returns while uploads are still on their way; C{cacheprog wait}
   returns only once every one of them is in the bucket (counted), and a
   build in another local root right after gets them all (no compiler).
 - SIGKILL of a detached uploader in the middle of its uploads leaves no
   partial object under a final key, and C{cacheprog wait} reports it.
 - With a complete listing (C{--presence-list-pages}), misses are answered
   without a request and never turn a present entry into a wrong build.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from typing import Any

from tests.e2e.test_gobuild import _program, _stat
from tests.e2e.test_s3_build import (
    Command,
    S3BuildCase,
    check_bucket_layout,
    compiled_packages,
    list_keys,
    object_problems,
    server_flags,
    upload_seed,
)
from tests.integration.servers import SeaweedFS, Toxiproxy

_WAIT_LINE = re.compile(r"cacheprog wait: uploaders=(\d+) uploaded=(\d+) dropped=(\d+)(?: killed=(\d+))?")


class DetachedDrainTests(S3BuildCase):
    timeout = 600

    def setUp(self) -> None:
        super().setUp()
        self.seaweed = self.servers.get(SeaweedFS)
        self.toxiproxy = self.servers.get(Toxiproxy, bucket=None)
        self.s3 = self.client(self.seaweed)
        self.proxyName = self._testMethodName
        self.proxy = self.toxiproxy.create_proxy(self.proxyName, self.seaweed.endpoint)
        self.addCleanup(self.toxiproxy.delete_proxy, self.proxyName)
        # Whatever a test leaves behind is collected (and so ended) here.
        self.addCleanup(self.cacheprog_wait, 120.0)

    def through_proxy(self, *extra: str) -> None:
        self.ws.flags = server_flags(self.seaweed, self.prefix, self.proxy.endpoint, extra=extra)

    def cacheprog_wait(self, timeout: float = 300.0) -> tuple[int, int, int, int, str]:
        """
        Run C{cacheprog wait} for the workspace's root: (uploaders,
        uploaded, dropped, killed, stderr).
        """
        done = subprocess.run(
            [*_program(), "wait", "--root-directory", self.ws.local, f"--wait-timeout={timeout:g}s"],
            capture_output=True,
            text=True,
            timeout=timeout + 60,
            env=self.ws.environ(),
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        m = _WAIT_LINE.search(done.stdout)
        assert m is not None, done.stdout + done.stderr
        uploaders, uploaded, dropped, killed = (int(g or 0) for g in m.groups())
        return uploaders, uploaded, dropped, killed, done.stderr

    def start_build(self, name: str) -> Command:
        argv = [self.ws.go, "build", "-x", "-o", self.ws.binary(name), "."]
        return Command(argv, self.ws.app, self.ws.environ(), 300)

    def test_goReturnsThenWaitCountsEveryObject(self) -> None:
        """
        With every request to the bucket held back 2 s (the standard packages in
        the local root, so only the app goes remote) and uploads deferred
        to close, go returns first; its uploads land after; C{cacheprog wait} then reports exactly the
        objects that are in the bucket, and a build in another local root
        runs no compiler.
        """
        seeded = upload_seed(self.s3, self.goBinary, self.prefix)
        self.ws.seed_local()
        # Uploads deferred to close, so they are all left for the drain;
        # without run manifests every job of the drain is one object.
        self.through_proxy("--detached-drain", "--defer-uploads", "--presence-list-pages=4", "--warm-start=false")
        # Requests (not only answers) are held back, so objects land late.
        self.toxiproxy.add_latency(self.proxyName, 2000, 0, stream="upstream")

        run, _ = self.start_build("app1").wait()
        self.assertEqual(run.code, 0, run.describe())
        self.assertAppRuns(self.ws.binary("app1"), run)
        self.assertIn("example.com/app/greet", compiled_packages(run))
        early = list_keys(self.s3, self.prefix) - seeded

        uploaders, uploaded, dropped, killed, stderr = self.cacheprog_wait()
        added = list_keys(self.s3, self.prefix) - seeded
        self.assertEqual((uploaders, dropped, killed), (1, 0, 0), stderr)
        self.assertGreater(len(added), 0)
        # Every new object was uploaded by this run (some uploads may rewrite
        # a seeded key), and nothing arrives after wait returned.
        self.assertGreaterEqual(uploaded, len(added))
        time.sleep(2.0)
        self.assertEqual(list_keys(self.s3, self.prefix) - seeded, added)
        self.assertLess(len(early), len(added), "every upload was done before go returned")
        self.assertTrue(early <= added)
        check_bucket_layout(self, self.s3, self.prefix, added)

        self.ws.wipe_local()
        self.ws.flags = server_flags(self.seaweed, self.prefix)
        second = self.build("app2")
        self.assertCompiles(second, False)
        self.assertEqual(_stat(second.stderr, "local_hits"), 0)

    def test_sigkillLeavesNoPartialObject(self) -> None:
        """
        The detached uploader is killed while its bodies trickle out at
        1 KB/s: no object under the prefix is partial (every one decodes to
        its OutputID), and C{cacheprog wait} reports the uploader killed.
        """
        self.ws.seed_local()
        self.through_proxy("--detached-drain", "--remote-put-timeout=0")
        self.toxiproxy.add_bandwidth(self.proxyName, 1, stream="upstream")

        run, _ = self.start_build("app1").wait()
        self.assertEqual(run.code, 0, run.describe())
        pid = self.uploader_pid()
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        uploaders, _, dropped, killed, stderr = self.cacheprog_wait()
        self.assertEqual((uploaders, killed), (1, 1), stderr)
        self.assertGreater(dropped, 0)

        self.toxiproxy.reset()
        for key in sorted(list_keys(self.s3, self.prefix)):
            self.assertEqual(object_problems(self.s3, key), [], key)

    def uploader_pid(self) -> int:
        directory = os.path.join(self.ws.local, ".uploaders")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for name in os.listdir(directory) if os.path.isdir(directory) else []:
                if name.endswith(".json"):
                    with open(os.path.join(directory, name)) as f:
                        state: dict[str, Any] = json.load(f)
                    return int(state["pid"])
            time.sleep(0.05)
        self.fail("no detached uploader registered")

    def test_instantMissesNeverWrong(self) -> None:
        """
        A complete listing taken before another job uploads the app's
        packages: our build answers those misses at once and recompiles
        (never a wrong entry); its binary works.
        """
        self.ws.seed_local()
        self.through_proxy("--presence-list-pages=4")
        first = self.build("app1")
        self.assertGreater(_stat(first.stderr, "instant_misses"), 0, first.describe())
        self.assertEqual(_stat(first.stderr, "misses"), _stat(first.stderr, "instant_misses"))

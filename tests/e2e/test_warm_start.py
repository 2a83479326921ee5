"""
End to end, warm start (run manifests, packs, prefetch) with the real go
command on SeaweedFS, every request counted by a relay in front of it
(L{tests.integration.relay}).

Each test starts from a bucket holding the seed's objects (the standard
packages, per object, as the Go reference writes them) and a first build
that compiles the app, uploads it and writes the run's manifest and pack.
Then the local root is wiped and go runs again.

The Go reference binary (C{CACHEPROG_REFERENCE_BINARY}, default
C{/work/ref-bin/cacheprog}) reads our per-object entries in
L{WarmStartTests.test_referenceReadsOurEntries}; that test skips without it.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SkipTest

from tests.e2e.test_gobuild import _quote, _stats
from tests.e2e.test_s3_build import BUCKET, REGION, S3BuildCase, list_keys, server_flags, upload_seed
from tests.integration.relay import CountingRelay, counting_relay
from tests.integration.servers import SeaweedFS

#: What a warm rebuild may ask of the store (the issue's target).
MAX_REQUESTS = 20
REFERENCE = os.environ.get("CACHEPROG_REFERENCE_BINARY", "/work/ref-bin/cacheprog")


class WarmStartTests(S3BuildCase):
    """
    go build twice through cacheprog on SeaweedFS, the second time with an
    empty local root.
    """

    def setUp(self) -> None:
        super().setUp()
        self.server = self.servers.get(SeaweedFS)
        self.s3 = self.client(self.server)
        upload_seed(self.s3, self.goBinary, self.prefix)
        relay = counting_relay(self.server.endpoint)
        self.relay: CountingRelay = relay.__enter__()
        self.addCleanup(relay.__exit__, None, None, None)
        self.ws.flags = server_flags(self.server, self.prefix, endpoint=self.relay.endpoint)

    def first_build(self) -> None:
        run = self.build("app")
        self.assertCompiles(run, True)
        stats = _stats(run.stderr)
        self.assertEqual((stats["manifest"], stats["manifest_written"]), ("none", "true"), run.describe())
        self.ws.wipe_local()
        self.relay.reset()

    def objects(self, kind: str) -> list[str]:
        return sorted(k for k in list_keys(self.s3, self.prefix, entries_only=False) if f"/{kind}/v1/" in k)

    def test_secondBuildFromPacks(self) -> None:
        """
        The second build (the same go command: same arguments) runs no compiler, gets its entries from the packs
        (prefetched, counted as remote hits), and asks the store at most
        MAX_REQUESTS times, none of them a per-object GET that hits.
        """
        self.first_build()
        run = self.build("app")
        self.assertCompiles(run, False)
        stats = _stats(run.stderr)
        self.assertEqual(stats["manifest"], "found")
        self.assertGreater(int(stats["prefetched"]), 100, stats)
        self.assertEqual(stats["local_hits"], "0")
        requests = self.relay.seen()
        self.assertLessEqual(len(requests), MAX_REQUESTS, requests)
        ranged = [path for method, path in requests if method == "GET" and "/packs/v1/" in path]
        self.assertGreater(len(ranged), 0, requests)

        self.ws.wipe_local()
        self.relay.reset()
        third = self.build("app")
        self.assertCompiles(third, False)
        self.assertEqual(_stats(third.stderr)["manifest_written"], "false")
        self.assertLessEqual(len(self.relay.seen()), MAX_REQUESTS, self.relay.seen())

    def test_corruptPackEntry(self) -> None:
        """
        A pack whose bytes were damaged in one entry: that entry is a
        corrupt object and takes the per-object path; the build passes
        without compiling, and the binary works.
        """
        self.first_build()
        (pack,) = self.objects("packs")
        data = bytearray(self.s3.get_object(Bucket=BUCKET, Key=pack)["Body"].read())
        data[len(data) // 2] ^= 0xFF
        self.s3.put_object(Bucket=BUCKET, Key=pack, Body=bytes(data))
        run = self.build("app")
        self.assertCompiles(run, False)
        stats = _stats(run.stderr)
        self.assertGreaterEqual(int(stats["corrupt_objects"]), 1, stats)
        self.assertGreater(int(stats["prefetched"]), 0, stats)

    def test_deletedPack(self) -> None:
        """
        A manifest pointing at a deleted pack: gets take the per-object
        path, the build passes without compiling, and the run packs its
        entries again.
        """
        self.first_build()
        (pack,) = self.objects("packs")
        self.s3.delete_object(Bucket=BUCKET, Key=pack)
        run = self.build("app")
        self.assertCompiles(run, False)
        stats = _stats(run.stderr)
        self.assertEqual((stats["prefetched"], stats["manifest_written"]), ("0", "true"), stats)
        self.assertEqual(len(self.objects("packs")), 1)

    def test_commandsHaveTheirOwnManifests(self) -> None:
        """
        C{go build} and C{go vet} of one module do not read each other's
        manifests: each finds none the first time, its own the second.
        """
        self.first_build()
        vet = self.go("vet", "./...")
        self.assertEqual(_stats(vet.stderr)["manifest"], "none", vet.describe())
        self.assertEqual(len(self.objects("manifests")), 2)
        self.ws.wipe_local()
        again = self.go("vet", "./...")
        self.assertEqual(_stats(again.stderr)["manifest"], "found", again.describe())

    def test_referenceReadsOurEntries(self) -> None:
        """
        The Go reference, on the same bucket and prefix, with an empty
        local root, gets every entry our first build wrote (per object: it
        ignores manifests and packs): it compiles nothing.
        """
        if not os.access(REFERENCE, os.X_OK):
            raise SkipTest(f"no Go reference binary at {REFERENCE} (set CACHEPROG_REFERENCE_BINARY)")
        self.first_build()
        run = self.go("build", "-x", "-o", self.ws.binary("app2"), ".", env=self.reference_env())
        self.assertCompiles(run, False)
        self.assertAppRuns(self.ws.binary("app2"), run)
        self.assertEqual([r for r in self.relay.seen() if "/packs/" in r[1] or "/manifests/" in r[1]], [])

    def reference_env(self) -> dict[str, Any]:
        return {
            "GOCACHEPROG": _quote(REFERENCE),
            "CACHEPROG_ROOT_DIRECTORY": self.ws.local,
            "CACHEPROG_REMOTE_STORAGE_TYPE": "s3",
            "CACHEPROG_S3_ENDPOINT": "minio+" + self.relay.endpoint,
            "CACHEPROG_S3_FORCE_PATH_STYLE": "true",
            "CACHEPROG_S3_REGION": REGION,
            "CACHEPROG_S3_BUCKET": BUCKET,
            "CACHEPROG_S3_PREFIX": self.prefix,
            "CACHEPROG_S3_ACCESS_KEY_ID": self.server.access_key,
            "CACHEPROG_S3_ACCESS_KEY_SECRET": self.server.secret_key,
        }

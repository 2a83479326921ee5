"""
End to end: read-through prefixes (C{--s3-read-prefixes}), the pattern for
pull requests, with the real go command on SeaweedFS.  The main branch's
job fills its prefix; a pull request's job, writing to its own (empty)
prefix and reading main's after it, builds without running the compiler
and never writes to main's prefix, even when it compiles something new.
"""

from __future__ import annotations

import os

from tests.e2e.test_gobuild import _stat
from tests.e2e.test_s3_build import S3BuildCase, compiled_packages, list_keys, server_flags, upload_seed
from tests.integration.servers import SeaweedFS

MAIN = "trusted/main"
PR = "untrusted/pr-17"


class ReadThroughBuildTests(S3BuildCase):
    def test_pullRequestReadsMain(self) -> None:
        """
        Main's job: standard packages already in its prefix, it compiles the
        app and uploads it.  The pull request's job on a fresh machine
        (empty local root, empty own prefix) then runs no compiler, every
        hit coming from main's prefix (what it puts, go's few non-compiled
        outputs such as the link, lands in its own prefix); after a source change it compiles
        just that package and uploads it to its own prefix only.  Main's
        keys never change.
        """
        server = self.servers.get(SeaweedFS)
        client = self.client(server)
        upload_seed(client, self.goBinary, MAIN)
        self.ws.flags = server_flags(server, MAIN)
        main = self.build("main")
        self.assertGreater(_stat(main.stderr, "uploads"), 0, main.describe())
        main_keys = list_keys(client, MAIN)

        self.ws.wipe_local()
        self.assertEqual(list_keys(client, PR), set())
        self.ws.flags = server_flags(server, PR, extra=[f"--s3-read-prefixes={MAIN}"])
        pr = self.build("pr1")
        self.assertCompiles(pr, False)
        self.assertEqual(_stat(pr.stderr, "remote_hits"), _stat(pr.stderr, "get_calls") - _stat(pr.stderr, "misses"))
        self.assertGreater(_stat(pr.stderr, "remote_hits"), 0)
        self.assertEqual(list_keys(client, MAIN), main_keys)
        pr_keys = list_keys(client, PR)

        greet = os.path.join(self.ws.app, "greet", "greet.go")
        with open(greet, "a") as f:
            f.write("\nfunc Changed() int { return 17 }\n")
        changed = self.build("pr2")
        self.assertEqual(compiled_packages(changed) & {"example.com/app/greet"}, {"example.com/app/greet"})
        self.assertGreater(_stat(changed.stderr, "uploads"), 0, changed.describe())
        self.assertGreater(list_keys(client, PR), pr_keys)
        self.assertEqual(list_keys(client, MAIN), main_keys)

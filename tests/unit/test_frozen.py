"""
Tests for L{cacheprog.frozen}: what the compiled binary adjusts at start-up.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from cacheprog import frozen


class FrozenTests(SynchronousTestCase):
    def test_from_source_nothing(self) -> None:
        """
        Run from source, C{prepare_frozen} leaves the environment alone.
        """
        environ: dict[str, str] = {}
        frozen.prepare_frozen(environ)
        self.assertFalse(frozen.is_compiled())
        self.assertEqual(environ, {})

    def test_compiled_sets_data_path(self) -> None:
        """
        Compiled, C{AWS_DATA_PATH} names C{awsdata} next to the package.
        """
        self.patch(frozen, "is_compiled", lambda: True)
        environ: dict[str, str] = {}
        frozen.prepare_frozen(environ)
        package = os.path.dirname(os.path.abspath(frozen.__file__))
        self.assertEqual(environ, {"AWS_DATA_PATH": os.path.join(os.path.dirname(package), "awsdata")})

    def test_user_path_first(self) -> None:
        """
        A user's C{AWS_DATA_PATH} stays first; ours is appended once.
        """
        environ = {"AWS_DATA_PATH": "/models"}
        frozen.add_data_path(environ)
        frozen.add_data_path(environ)
        self.assertEqual(environ["AWS_DATA_PATH"], "/models" + os.pathsep + frozen.data_directory())


class HostsFirstTests(SynchronousTestCase):
    """
    The binary's glibc without the image's nsswitch.conf: /etc/hosts first.
    """

    def setUp(self) -> None:
        self.hosts = self.mktemp()
        with open(self.hosts, "w") as f:
            f.write("# comment\n127.0.0.1\tlocalhost s3.test  # minio\n::1 localhost\n")
        self.asked: list[tuple[object, ...]] = []

    def getaddrinfo(self, *args: object) -> list[tuple[object, ...]]:
        import socket

        self.asked.append(args)
        if args[0] == "::1" and args[2] == socket.AF_INET:
            raise socket.gaierror("family")
        return [("answer", *args)]

    def test_read_hosts(self) -> None:
        table = frozen.read_hosts(self.hosts)
        self.assertEqual(table, {"localhost": ["127.0.0.1", "::1"], "s3.test": ["127.0.0.1"]})
        self.assertEqual(frozen.read_hosts(self.mktemp()), {})

    def test_listed_name_numeric(self) -> None:
        """
        A listed name is answered from its addresses, asked as numeric
        hosts (no DNS); an address of the wrong family is skipped.
        """
        import socket

        lookup = frozen.hosts_first(self.getaddrinfo, frozen.read_hosts(self.hosts))
        answer = lookup("LOCALHOST.", 443, socket.AF_INET)
        self.assertEqual([a[1] for a in answer], ["127.0.0.1"])
        self.assertTrue(all(int(str(a[-1])) & socket.AI_NUMERICHOST for a in self.asked))

    def test_other_names_unchanged(self) -> None:
        lookup = frozen.hosts_first(self.getaddrinfo, frozen.read_hosts(self.hosts))
        self.assertEqual(lookup("example.test", 80), [("answer", "example.test", 80, 0, 0, 0, 0)])

    def test_only_compiled_without_nsswitch(self) -> None:
        """
        From source, or with an nsswitch.conf, socket.getaddrinfo stays.
        """
        import socket

        original = socket.getaddrinfo
        self.addCleanup(setattr, socket, "getaddrinfo", original)
        frozen.resolve_hosts_first(nsswitch=self.mktemp(), hosts=self.hosts)
        self.assertIs(socket.getaddrinfo, original)
        self.patch(frozen, "is_compiled", lambda: True)
        frozen.resolve_hosts_first(nsswitch=self.hosts, hosts=self.hosts)
        self.assertIs(socket.getaddrinfo, original)
        frozen.resolve_hosts_first(nsswitch=self.mktemp(), hosts=self.hosts)
        self.assertIsNot(socket.getaddrinfo, original)

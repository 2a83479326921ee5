"""
Tests for L{cacheprog.config}: precedence, the reference's names and syntax,
and the reference bugs fixed.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from cacheprog import options as o
from cacheprog.config import ConfigError, Usage, parse, parse_duration
from cacheprog.options import OPTIONS
from cacheprog.remote.s3config import render_prefix


class ParseTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        With nothing set, the reference's defaults apply and the command is direct.
        """
        cfg = parse([], {})
        self.assertEqual(cfg.command, "direct")
        self.assertEqual(cfg[o.REMOTE_STORAGE_TYPE], "disabled")
        self.assertEqual(cfg[o.REMOTE_GET_TIMEOUT], 5.0)
        self.assertEqual(cfg[o.MAX_BACKGROUND_WAIT], 10.0)
        self.assertEqual(cfg[o.MAX_CONSECUTIVE_ERRORS], 10)
        self.assertEqual(cfg[o.METRICS_PUSH_METHOD], "GET")
        self.assertFalse(cfg[o.DISABLE_GET])

    def test_precedence(self) -> None:
        """
        A flag beats the variable, which beats the default.
        """
        env = {"CACHEPROG_REMOTE_GET_TIMEOUT": "2s", "CACHEPROG_S3_BUCKET": "from-env"}
        cfg = parse(["--remote-get-timeout", "250ms"], env)
        self.assertEqual(cfg[o.REMOTE_GET_TIMEOUT], 0.25)
        self.assertEqual(cfg[o.S3_BUCKET], "from-env")
        self.assertEqual(cfg.source(o.S3_BUCKET), "CACHEPROG_S3_BUCKET")

    def test_equals_form(self) -> None:
        """
        --flag=value works like --flag value.
        """
        self.assertEqual(parse(["--s3-prefix=a/b"], {})[o.S3_PREFIX], "a/b")

    def test_empty_env_is_unset(self) -> None:
        """
        An empty variable means unset (the reference failed on it).
        """
        env = {"CACHEPROG_DISABLE_GET": "", "CACHEPROG_REMOTE_GET_TIMEOUT": " ", "CACHEPROG_LOG_LEVEL": ""}
        cfg = parse([], env)
        self.assertFalse(cfg[o.DISABLE_GET])
        self.assertEqual(cfg[o.REMOTE_GET_TIMEOUT], 5.0)

    def test_direct_flags_without_word(self) -> None:
        """
        Direct-only flags work without the word direct (the reference refused them).
        """
        cfg = parse(["--s3-prefix=x", "--disable-put"], {})
        self.assertEqual((cfg.command, cfg[o.S3_PREFIX], cfg[o.DISABLE_PUT]), ("direct", "x", True))

    def test_global_after_command(self) -> None:
        """
        Global options may stand before or after the command word.
        """
        self.assertEqual(parse(["--log-level", "debug", "direct"], {})[o.LOG_LEVEL], 10)
        self.assertEqual(parse(["direct", "--log-level=ERROR"], {})[o.LOG_LEVEL], 40)

    def test_proxy_rejects_direct_flags(self) -> None:
        """
        A direct-only flag given to proxy is refused, naming it.
        """
        e = self.assertRaises(ConfigError, parse, ["proxy", "--disable-get"], {})
        self.assertIn("--disable-get", str(e))

    def test_proxy_default_listen(self) -> None:
        """
        The proxy listens on loopback by default.
        """
        self.assertEqual(parse(["proxy"], {})[o.LISTEN_ADDRESS], "127.0.0.1:8080")

    def test_unknown_flag(self) -> None:
        """
        An unknown flag is refused, naming it.
        """
        e = self.assertRaises(ConfigError, parse, ["--no-such-thing"], {})
        self.assertIn("--no-such-thing", str(e))

    def test_missing_value(self) -> None:
        """
        A valued flag at the end, or followed by a flag, is missing its value.
        """
        self.assertRaises(ConfigError, parse, ["--s3-bucket"], {})
        self.assertRaises(ConfigError, parse, ["--s3-bucket", "--disable-get"], {})

    def test_bad_values_name_their_source(self) -> None:
        """
        A bad value names the variable or flag it came from.
        """
        cases = [
            ({"CACHEPROG_REMOTE_GET_TIMEOUT": "abc"}, "CACHEPROG_REMOTE_GET_TIMEOUT"),
            ({"CACHEPROG_DISABLE_GET": "yes"}, "CACHEPROG_DISABLE_GET"),
            ({"CACHEPROG_MAX_CONCURRENT_REMOTE_GETS": "many"}, "CACHEPROG_MAX_CONCURRENT_REMOTE_GETS"),
            ({"CACHEPROG_REMOTE_STORAGE_TYPE": "ftp"}, "CACHEPROG_REMOTE_STORAGE_TYPE"),
            ({"CACHEPROG_LOG_LEVEL": "TRACE"}, "CACHEPROG_LOG_LEVEL"),
            ({"CACHEPROG_S3_ENDPOINT": "no scheme"}, "CACHEPROG_S3_ENDPOINT"),
            ({"CACHEPROG_MIN_REMOTE_PUT_SIZE": "-1"}, "CACHEPROG_MIN_REMOTE_PUT_SIZE"),
        ]
        for env, name in cases:
            e = self.assertRaises(ConfigError, parse, [], env)
            self.assertIn(name, str(e))
        e = self.assertRaises(ConfigError, parse, ["--retry-after", "soon"], {})
        self.assertIn("--retry-after", str(e))

    def test_lists_headers_labels(self) -> None:
        """
        Lists are CSV in env and space-separated on the command line; headers
        split at the first colon, labels at '='.
        """
        env = {
            "CACHEPROG_HTTP_STORAGE_EXTRA_HEADERS": '"A:1,2",B:2:3',
            "CACHEPROG_METRICS_PUSH_EXTRA_LABELS": "job=ci,branch=main",
            "CACHEPROG_S3_EXCLUDE_HEADERS_FROM_SIGNING": "Accept-Encoding, X-Other",
        }
        cfg = parse([], env)
        self.assertEqual(cfg[o.HTTP_STORAGE_EXTRA_HEADERS], {"A": "1,2", "B": "2:3"})
        self.assertEqual(cfg[o.METRICS_PUSH_EXTRA_LABELS], {"job": "ci", "branch": "main"})
        self.assertEqual(cfg[o.S3_EXCLUDE_HEADERS_FROM_SIGNING], ["Accept-Encoding", "X-Other"])
        cfg = parse(["--metrics-push-extra-headers", "X:1", "Y:2", "--disable-get"], {})
        self.assertEqual(cfg[o.METRICS_PUSH_EXTRA_HEADERS], {"X": "1", "Y": "2"})
        self.assertTrue(cfg[o.DISABLE_GET])

    def test_list_flag_stops_at_command(self) -> None:
        """
        A list flag before the command word does not swallow it.
        """
        cfg = parse(["--s3-exclude-headers-from-signing", "Accept-Encoding", "proxy"], {})
        self.assertEqual(cfg.command, "proxy")
        self.assertEqual(cfg[o.S3_EXCLUDE_HEADERS_FROM_SIGNING], ["Accept-Encoding"])
        cfg = parse(["proxy", "--s3-exclude-headers-from-signing", "A", "direct"], {})
        self.assertEqual(cfg[o.S3_EXCLUDE_HEADERS_FROM_SIGNING], ["A", "direct"])

    def test_equals_list_is_csv(self) -> None:
        """
        C{--opt=a,b} means what C{a,b} means in the variable.
        """
        flag = parse(["--s3-exclude-headers-from-signing=Accept-Encoding,X-Other"], {})
        env = parse([], {"CACHEPROG_S3_EXCLUDE_HEADERS_FROM_SIGNING": "Accept-Encoding,X-Other"})
        self.assertEqual(flag[o.S3_EXCLUDE_HEADERS_FROM_SIGNING], ["Accept-Encoding", "X-Other"])
        self.assertEqual(flag[o.S3_EXCLUDE_HEADERS_FROM_SIGNING], env[o.S3_EXCLUDE_HEADERS_FROM_SIGNING])
        flag = parse(["--metrics-push-extra-labels=job=ci,branch=main"], {})
        self.assertEqual(flag[o.METRICS_PUSH_EXTRA_LABELS], {"job": "ci", "branch": "main"})

    def test_list_with_a_line_break(self) -> None:
        """
        A list value that the CSV reader cannot split (a bare line break) is a
        clear error naming the variable, not a crash.
        """
        with self.assertRaises(ConfigError) as caught:
            parse([], {"CACHEPROG_S3_EXCLUDE_HEADERS_FROM_SIGNING": "Accept\rEncoding"})
        self.assertIn("CACHEPROG_S3_EXCLUDE_HEADERS_FROM_SIGNING", str(caught.exception))

    def test_bad_header_label(self) -> None:
        """
        A header without a colon, or a label without '=', is refused.
        """
        self.assertRaises(ConfigError, parse, [], {"CACHEPROG_HTTP_STORAGE_EXTRA_HEADERS": "nocolon"})
        self.assertRaises(ConfigError, parse, [], {"CACHEPROG_METRICS_PUSH_EXTRA_LABELS": "noequals"})

    def test_root_alias(self) -> None:
        """
        CACHEPROG_DISK_STORAGE_ROOT (the name the reference README uses) works;
        CACHEPROG_ROOT_DIRECTORY wins when both are set.
        """
        self.assertEqual(parse([], {"CACHEPROG_DISK_STORAGE_ROOT": "/a"})[o.ROOT_DIRECTORY], "/a")
        both = {"CACHEPROG_DISK_STORAGE_ROOT": "/a", "CACHEPROG_ROOT_DIRECTORY": "/b"}
        self.assertEqual(parse([], both)[o.ROOT_DIRECTORY], "/b")

    def test_bool_forms(self) -> None:
        """
        Booleans take Go's ParseBool spellings, in env and as --flag=value.
        """
        self.assertTrue(parse([], {"CACHEPROG_DISABLE_PUT": "1"})[o.DISABLE_PUT])
        self.assertFalse(parse(["--disable-put=false"], {})[o.DISABLE_PUT])

    def test_help_lists_everything(self) -> None:
        """
        --help lists every option of the command with its variable.
        """
        e = self.assertRaises(Usage, parse, ["--help"], {})
        for option in OPTIONS:
            if option.applies_to("direct"):
                self.assertIn(f"--{option.name}", e.text)
                self.assertIn(option.envs[0], e.text)
        self.assertIn("default: 5s", e.text)
        e = self.assertRaises(Usage, parse, ["proxy", "-h"], {})
        self.assertIn("--listen-address", e.text)
        self.assertIn("write token", e.text)

    def test_version(self) -> None:
        """
        --version gives one line starting with "cacheprog version".
        """
        e = self.assertRaises(Usage, parse, ["--version"], {})
        self.assertTrue(e.text.startswith("cacheprog version "))
        self.assertEqual(e.text.count("\n"), 1)


class DurationTests(SynchronousTestCase):
    def test_go_syntax(self) -> None:
        """
        Go duration strings parse to seconds.
        """
        for text, seconds in [
            ("0", 0),
            ("250ms", 0.25),
            ("5s", 5),
            ("1m30s", 90),
            ("1h", 3600),
            ("-1s", -1),
            ("1.5s", 1.5),
            ("100us", 0.0001),
            ("2h45m", 9900),
        ]:
            self.assertAlmostEqual(parse_duration(text), seconds)

    def test_refused(self) -> None:
        """
        What Go refuses is refused: bare numbers, unknown units, junk.
        """
        for text in ["", "5", "5x", "s", "1s junk", "abc"]:
            self.assertRaises(ValueError, parse_duration, text)


class PrefixTests(SynchronousTestCase):
    def test_tags(self) -> None:
        """
        GOOS, GOARCH and env.NAME expand (the reference broke env.NAME);
        an unset variable is empty; GOOS/GOARCH env overrides win.
        """
        env = {"CI_PROJECT": "shop", "GOARCH": "arm64"}
        self.assertEqual(
            render_prefix("{% env.CI_PROJECT %}/{%GOOS%}-{% GOARCH %}/{% env.NOPE %}x", env, "linux", "amd64"),
            "shop/linux-arm64/x",
        )

    def test_unknown_tag(self) -> None:
        """
        An unknown tag is an error naming it; an unclosed {% stays literal.
        """
        e = self.assertRaises(ValueError, render_prefix, "{% HOME %}", {}, "linux", "amd64")
        self.assertIn("HOME", str(e))
        self.assertEqual(render_prefix("a{%b", {}, "linux", "amd64"), "a{%b")


_WORDS = st.sampled_from(
    ["direct", "proxy", "--help", "-x", "5s", "0", "-1", "abc", "a,b", "K:v", "k=v", "true", "", "1GiB", "s3"]
)
_FLAGS = st.sampled_from([f"--{o.name}" for o in OPTIONS] + ["--nope"])
_ENVS = st.sampled_from(sorted({e for o in OPTIONS for e in o.envs}))


class ParserPropertyTests(SynchronousTestCase):
    """
    For any mix of flags, words and variables: a configuration, a usage
    text, or a L{ConfigError} that names an option; never another exception.
    """

    @settings(max_examples=400, deadline=None)
    @given(
        st.lists(st.one_of(_FLAGS, _WORDS, st.builds(lambda f, w: f"{f}={w}", _FLAGS, _WORDS)), max_size=8),
        st.dictionaries(_ENVS, st.one_of(_WORDS, st.text(max_size=12)), max_size=5),
    )
    def test_any_mix(self, argv: list[str], environ: dict[str, str]) -> None:
        try:
            cfg = parse(argv, environ)
        except Usage:
            return
        except ConfigError as e:
            message = str(e)
            named = [o for o in OPTIONS if f"--{o.name}" in message or any(env in message for env in o.envs)]
            self.assertTrue(named or "argument" in message, message)
            return
        self.assertIn(cfg.command, ("direct", "proxy"))

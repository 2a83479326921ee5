# -*- test-case-name: tests.unit.test_config -*-
"""
Every option, declared once: its flag, its C{CACHEPROG_*} variable(s), its
default, its kind and its help.  The same table serves C{direct}, C{proxy}
and C{--help}.  Precedence: flag > environment > default.  An empty variable
counts as unset (the Go reference made it a fatal error).

This module must stay cheap to import: it runs before the handshake.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence

from cacheprog import __version__

COMMANDS = ("direct", "proxy", "wait")
#: The commands that talk to a remote store.
REMOTE_COMMANDS = ("direct", "proxy")
STORAGE_TYPES = ("disabled", "dir", "s3", "http", "memory")


class ConfigError(Exception):
    """
    A bad option value; the message names the flag or variable at fault.
    """


class Option:
    """
    One option: C{--name}, its environment variables, default, kind and help.

    @ivar scope: C{global}, C{remote} (direct and proxy), C{local} (direct
        and wait: the local root), C{direct}, C{proxy} or C{wait}.
    """

    def __init__(
        self,
        name: str,
        env: str | Sequence[str],
        kind: str,
        help: str,
        default: str | None = None,
        scope: str = "direct",
        placeholder: str = "",
    ) -> None:
        self.name = name
        self.envs = (env,) if isinstance(env, str) else tuple(env)
        self.kind = kind
        self.help = help
        self.default = default
        self.scope = scope
        self.placeholder = placeholder or _PLACEHOLDERS.get(kind, "VALUE")

    def applies_to(self, command: str) -> bool:
        return (
            self.scope in ("global", command)
            or (self.scope == "remote" and command in REMOTE_COMMANDS)
            or (self.scope == "local" and command in ("direct", "wait"))
        )


_PLACEHOLDERS = {
    "duration": "DURATION",
    "int": "NUM",
    "size": "SIZE",
    "url": "URL",
    "list": "[header ...]",
    "headers": "[key:value ...]",
    "labels": "[key=value ...]",
    "level": "LEVEL",
    "path": "PATH",
    "type": "TYPE",
}

_E = "CACHEPROG_"
OPTIONS: tuple[Option, ...] = (
    # global
    Option("log-level", _E + "LOG_LEVEL", "level", "log level: DEBUG, INFO, WARN or ERROR", "INFO", "global"),
    Option("log-output", _E + "LOG_OUTPUT", "path", "append logs to this file instead of stderr", None, "global"),
    Option(
        "cpu-profile", _E + "CPU_PROFILE_PATH", "path", "write a cProfile profile of the whole run here", None, "global"
    ),
    Option("mem-profile", _E + "MEM_PROFILE_PATH", "path", "write a tracemalloc snapshot here at exit", None, "global"),
    Option(
        "trace-profile",
        _E + "TRACE_PROFILE_PATH",
        "path",
        "accepted for compatibility; ignored with a warning",
        None,
        "global",
    ),
    Option("fgprof", _E + "FGPROF_PATH", "path", "accepted for compatibility; ignored with a warning", None, "global"),
    Option(
        "use-vm-histograms",
        _E + "USE_VM_HISTOGRAMS",
        "bool",
        "VictoriaMetrics-style (vmrange) histograms in pushed metrics",
        "false",
        "global",
    ),
    # remote storage (direct and proxy)
    Option(
        "remote-storage-type",
        _E + "REMOTE_STORAGE_TYPE",
        "type",
        "remote storage: disabled, dir, s3 or http (memory: for testing)",
        "disabled",
        "remote",
    ),
    Option(
        "dir-storage-root",
        _E + "DIR_STORAGE_ROOT",
        "path",
        "shared directory for the dir storage (a CI volume, NFS)",
        None,
        "remote",
    ),
    Option(
        "dir-read-roots",
        _E + "DIR_READ_ROOTS",
        "list",
        "more directories to read from, in order, after --dir-storage-root; never written",
        None,
        "remote",
        "[dir ...]",
    ),
    Option(
        "max-consecutive-errors",
        _E + "REMOTE_STORAGE_MAX_CONSECUTIVE_ERRORS",
        "int",
        "circuit breaker: consecutive remote errors before remote storage is switched off (<=0: never)",
        "10",
        "remote",
    ),
    Option(
        "retry-after",
        _E + "REMOTE_STORAGE_RETRY_AFTER",
        "duration",
        "circuit breaker: wait this long before one probe request (<=0: stay off)",
        "15s",
        "remote",
    ),
    Option(
        "s3-endpoint",
        _E + "S3_ENDPOINT",
        "url",
        "S3 endpoint: http(s)://host or minio+http(s)://host; empty for AWS",
        None,
        "remote",
    ),
    Option(
        "s3-force-path-style",
        _E + "S3_FORCE_PATH_STYLE",
        "bool",
        "path-style bucket addressing instead of virtual hosts",
        "false",
        "remote",
    ),
    Option(
        "s3-region",
        _E + "S3_REGION",
        "str",
        "bucket region; empty: detected with GetBucketLocation",
        None,
        "remote",
        "REGION",
    ),
    Option("s3-bucket", _E + "S3_BUCKET", "str", "bucket name (required for s3)", None, "remote", "BUCKET"),
    Option(
        "s3-exclude-headers-from-signing",
        _E + "S3_EXCLUDE_HEADERS_FROM_SIGNING",
        "list",
        "headers sent but not signed (GCS: Accept-Encoding)",
        None,
        "remote",
    ),
    Option(
        "s3-prefix",
        _E + "S3_PREFIX",
        "str",
        "key prefix; templated: {% GOOS %}, {% GOARCH %}, {% env.NAME %}",
        None,
        "remote",
        "PREFIX",
    ),
    Option(
        "s3-read-prefixes",
        _E + "S3_READ_PREFIXES",
        "list",
        "more prefixes of the bucket to read from, in order, after --s3-prefix; never written (a pull request reading main's cache); templated like it",
        None,
        "remote",
        "[prefix ...]",
    ),
    Option(
        "s3-expiration",
        _E + "S3_EXPIRATION",
        "duration",
        "set the Expires header to now+this on uploads (0: none; use lifecycle rules for real expiry)",
        "0",
        "remote",
    ),
    Option(
        "s3-credentials-endpoint",
        _E + "S3_CREDENTIALS_ENDPOINT",
        "str",
        "container-credentials endpoint",
        None,
        "remote",
        "URL",
    ),
    Option(
        "s3-access-key-id",
        _E + "S3_ACCESS_KEY_ID",
        "str",
        "static access key id (else the AWS credential chain)",
        None,
        "remote",
        "ID",
    ),
    Option(
        "s3-access-key-secret", _E + "S3_ACCESS_KEY_SECRET", "str", "static secret access key", None, "remote", "SECRET"
    ),
    Option("s3-session-token", _E + "S3_SESSION_TOKEN", "str", "static session token", None, "remote", "TOKEN"),
    Option(
        "http-storage-base-url",
        _E + "HTTP_STORAGE_BASE_URL",
        "url",
        "base URL of a cacheprog proxy (required for http)",
        None,
        "remote",
    ),
    Option(
        "http-storage-extra-headers",
        _E + "HTTP_STORAGE_EXTRA_HEADERS",
        "headers",
        "headers added to every storage request",
        None,
        "remote",
    ),
    # direct
    Option(
        "root-directory",
        (_E + "ROOT_DIRECTORY", _E + "DISK_STORAGE_ROOT"),
        "path",
        "local cache directory; default: <tmp>/cacheprog-<uid>, shared by the go commands of a job",
        None,
        "local",
    ),
    Option(
        "remote-get-timeout",
        _E + "REMOTE_GET_TIMEOUT",
        "duration",
        "answer miss when a remote get takes longer (the download still lands locally; 0: no limit)",
        "5s",
    ),
    Option(
        "remote-put-timeout",
        _E + "REMOTE_PUT_TIMEOUT",
        "duration",
        "give up one background upload after this (0: no limit)",
        "5s",
    ),
    Option(
        "max-concurrent-remote-gets", _E + "MAX_CONCURRENT_REMOTE_GETS", "int", "remote gets at once (0: no limit)", "0"
    ),
    Option("max-concurrent-remote-puts", _E + "MAX_CONCURRENT_REMOTE_PUTS", "int", "uploads at once (0: 64)", "0"),
    Option(
        "max-background-wait",
        _E + "MAX_BACKGROUND_WAIT",
        "duration",
        "at close, wait this long for uploads (0: no limit)",
        "10s",
    ),
    Option(
        "min-remote-put-size",
        _E + "MIN_REMOTE_PUT_SIZE",
        "size",
        "do not upload objects smaller than this many bytes",
        "0",
    ),
    Option(
        "detached-drain",
        _E + "DETACHED_DRAIN",
        "bool",
        "at close, answer go and close stdout at once; finish uploads in the background (see cacheprog wait)",
        "false",
    ),
    Option(
        "detached-drain-timeout",
        _E + "DETACHED_DRAIN_TIMEOUT",
        "duration",
        "a detached uploader gives up what is left after this (0: no limit)",
        "5m",
    ),
    Option(
        "defer-uploads",
        _E + "DEFER_UPLOADS",
        "bool",
        "queue uploads until close instead of running them during the build",
        "false",
    ),
    Option(
        "presence-list-pages",
        _E + "PRESENCE_LIST_PAGES",
        "int",
        "s3: list the prefix at start, up to this many pages of 1000 keys, to answer misses without a request (0: off)",
        "0",
    ),
    Option(
        "wait-timeout",
        _E + "WAIT_TIMEOUT",
        "duration",
        "cacheprog wait: give up after this (0: no limit)",
        "0",
        "wait",
    ),
    Option(
        "disable-get", _E + "DISABLE_GET", "bool", "do not offer get: rebuild everything, still fill the cache", "false"
    ),
    Option("disable-put", _E + "DISABLE_PUT", "bool", "do not offer put: read-only cache", "false"),
    Option(
        "warm-start",
        _E + "WARM_START",
        "bool",
        "keep a run manifest and packs per go command and prefetch them at start (s3, dir, http)",
        "true",
    ),
    Option(
        "manifest-key",
        _E + "MANIFEST_KEY",
        "str",
        "name of this run's manifest; default: derived from the go command, module, GOOS/GOARCH and toolchain",
        None,
        "direct",
        "NAME",
    ),
    Option(
        "prefetch-wait",
        _E + "PREFETCH_WAIT",
        "duration",
        "longest a get waits for an entry the prefetch is bringing before fetching it alone",
        "1s",
    ),
    Option("metrics-push-endpoint", _E + "METRICS_PUSH_ENDPOINT", "url", "push metrics here once at exit", None),
    Option(
        "metrics-push-method",
        _E + "METRICS_PUSH_METHOD",
        "str",
        "HTTP method of the metrics push",
        "GET",
        "direct",
        "METHOD",
    ),
    Option(
        "metrics-push-extra-labels",
        _E + "METRICS_PUSH_EXTRA_LABELS",
        "labels",
        "labels added to every pushed series",
        None,
    ),
    Option(
        "metrics-push-extra-headers",
        _E + "METRICS_PUSH_EXTRA_HEADERS",
        "headers",
        "headers added to the metrics push",
        None,
    ),
    # proxy
    Option(
        "listen-address",
        _E + "PROXY_LISTEN_ADDRESS",
        "str",
        "address to listen on (beyond loopback, set the write token)",
        "127.0.0.1:8080",
        "proxy",
        "ADDR",
    ),
    Option(
        "proxy-read-token-file",
        _E + "PROXY_READ_TOKEN_FILE",
        "path",
        "GET/HEAD need this token (Authorization: Bearer); or the token in CACHEPROG_PROXY_READ_TOKEN",
        None,
        "proxy",
    ),
    Option(
        "proxy-write-token-file",
        _E + "PROXY_WRITE_TOKEN_FILE",
        "path",
        "PUT needs this token (Authorization: Bearer); or the token in CACHEPROG_PROXY_WRITE_TOKEN",
        None,
        "proxy",
    ),
    Option(
        "proxy-header-timeout",
        _E + "PROXY_HEADER_TIMEOUT",
        "duration",
        "a request's headers must arrive within this time of its first byte (slow clients are dropped)",
        "30s",
        "proxy",
    ),
    Option(
        "metrics-proxy-endpoint",
        _E + "METRICS_PROXY_ENDPOINT",
        "url",
        "forward /metricsproxy pushes here",
        None,
        "proxy",
    ),
    Option(
        "metrics-proxy-extra-labels",
        _E + "METRICS_PROXY_EXTRA_LABELS",
        "labels",
        "labels encoded into the forwarded push path",
        None,
        "proxy",
    ),
    Option(
        "metrics-proxy-extra-headers",
        _E + "METRICS_PROXY_EXTRA_HEADERS",
        "headers",
        "headers added to forwarded pushes",
        None,
        "proxy",
    ),
)
_BY_NAME = {o.name: o for o in OPTIONS}

# Go duration syntax: "300ms", "1.5h", "2h45m", "-1s", "0".
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """
    Seconds in a Go duration string.

    @raise ValueError: on anything Go's time.ParseDuration refuses.
    """
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == "0":
        return 0.0
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"invalid duration {text!r} (use Go syntax: 300ms, 5s, 1m30s)")
    return sign * total


def parse_bool(text: str) -> bool:
    t = text.strip()
    if t in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if t in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"invalid boolean {text!r} (use true or false)")


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"invalid integer {text!r}") from None


def _parse_size(text: str) -> int:
    value = _parse_int(text)
    if value < 0:
        raise ValueError(f"size {text!r} is negative")
    return value


def _parse_url(text: str) -> str:
    from urllib.parse import urlsplit

    value = text.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise ValueError(f"invalid URL {text!r}: {e}") from None
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"invalid URL {text!r}: it needs a scheme and a host")
    return value


def _parse_type(text: str) -> str:
    value = text.strip().lower()
    if value not in STORAGE_TYPES:
        raise ValueError(f"invalid remote storage type {text!r} (use one of {', '.join(STORAGE_TYPES[:4])})")
    return value


def _parse_level(text: str) -> int:
    from cacheprog.log import parse_level

    return parse_level(text)


def _split_pairs(items: list[str], sep: str, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found or not key.strip():
            raise ValueError(f"invalid {what} {item!r}, expected key{sep}value")
        pairs[key.strip()] = value.strip() if sep == ":" else value
    return pairs


_SCALARS: dict[str, Callable[[str], object]] = {
    "str": str,
    "path": str,
    "bool": parse_bool,
    "int": _parse_int,
    "size": _parse_size,
    "duration": parse_duration,
    "url": _parse_url,
    "type": _parse_type,
    "level": _parse_level,
}


def _convert(option: Option, raw: str | list[str]) -> object:
    if option.kind in ("list", "headers", "labels"):
        items = raw if isinstance(raw, list) else _csv(raw)
        if option.kind == "headers":
            return _split_pairs(items, ":", "http header")
        if option.kind == "labels":
            return _split_pairs(items, "=", "label")
        return [i.strip() for i in items if i.strip()]
    assert isinstance(raw, str)
    return _SCALARS[option.kind](raw)


def _csv(text: str) -> list[str]:
    if not text.strip():
        return []
    try:
        return [item for row in csv.reader([text]) for item in row]
    except csv.Error as e:  # a bare line break, a NUL: not a list we can read
        raise ValueError(f"not a comma-separated list ({e})") from None


class Config:
    """
    Parsed options for one command.  Values are typed by kind: durations are
    float seconds, lists are lists, headers/labels are dicts, levels ints.
    """

    def __init__(self, command: str, values: dict[str, object], sources: dict[str, str]) -> None:
        self.command = command
        self._values = values
        self.sources = sources

    def __getitem__(self, name: str) -> object:
        return self._values[name]

    def text(self, name: str) -> str:
        value = self._values[name]
        return "" if value is None else str(value)

    def flag(self, name: str) -> bool:
        return bool(self._values[name])

    def number(self, name: str) -> float:
        value = self._values[name]
        assert isinstance(value, (int, float))
        return value

    def integer(self, name: str) -> int:
        value = self._values[name]
        assert isinstance(value, int)
        return value

    def mapping(self, name: str) -> dict[str, str]:
        value = self._values[name]
        return dict(value) if isinstance(value, dict) else {}

    def items(self, name: str) -> list[str]:
        value = self._values[name]
        return list(value) if isinstance(value, list) else []

    def source(self, name: str) -> str:
        """
        Where a value came from, for messages: C{--flag} or C{VARIABLE}.
        """
        return self.sources.get(name, f"--{name}")


class Usage(Exception):
    """
    Not a run: print C{text} (help or version) and exit 0.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _next_values(args: list[str], i: int, command_given: bool) -> tuple[list[str], int]:
    """
    The words after a list flag, up to the next flag, or up to a command
    word when no command was given yet (C{--s3-exclude-headers-from-signing
    Accept-Encoding proxy} runs the proxy; it ran C{direct} with a header
    named "proxy").
    """
    values = []
    while i < len(args) and not args[i].startswith("-"):
        if args[i] in COMMANDS and not command_given:
            break
        values.append(args[i])
        i += 1
    return values, i


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """
    Parse C{argv} (without the program name) and C{environ}.

    @raise Usage: for C{--help} / C{--version}.
    @raise ConfigError: on any bad flag or value.
    """
    args = list(argv)
    command = ""
    given: dict[str, str | list[str]] = {}
    wants_help = False
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "--help"):
            wants_help = True
        elif arg == "--version":
            raise Usage(version() + "\n")
        elif arg in COMMANDS and not command:
            command = arg
        elif arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            option = _BY_NAME.get(name)
            if option is None:
                raise ConfigError(f"unknown argument {arg}")
            if option.kind == "bool":
                given[name] = value if eq else "true"
            elif option.kind in ("list", "headers", "labels"):
                if eq:
                    # One value: CSV, exactly as the same text in the variable.
                    given[name] = value
                else:
                    given[name], i = _next_values(args, i, bool(command))
            elif eq:
                given[name] = value
            elif i < len(args) and not args[i].startswith("-"):
                given[name] = args[i]
                i += 1
            else:
                raise ConfigError(f"missing value for {arg}")
        else:
            raise ConfigError(f"unexpected argument {arg!r}")
    command = command or "direct"
    if wants_help:
        raise Usage(help_text(command))
    return _resolve(command, given, environ)


def _resolve(command: str, given: dict[str, str | list[str]], environ: Mapping[str, str]) -> Config:
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name in given:
        if not _BY_NAME[name].applies_to(command):
            raise ConfigError(f"--{name} is not an option of the {command} command")
    for option in OPTIONS:
        if not option.applies_to(command):
            continue
        raw: str | list[str] | None = given.get(option.name)
        source = f"--{option.name}"
        if raw is None:
            for env in option.envs:
                text = environ.get(env)
                if text is not None and text.strip():
                    raw, source = text, env
                    break
        if raw is None:
            raw, source = option.default, f"the default of --{option.name}"
        sources[option.name] = source
        if raw is None:
            values[option.name] = None
            continue
        try:
            values[option.name] = _convert(option, raw)
        except ValueError as e:
            raise ConfigError(f"invalid value for {source}: {e}") from None
    return Config(command, values, sources)


def default_root() -> str:
    """
    The local tier when no root is given: one directory per user, shared by
    every go command of a CI job (the reference made a new one per process).
    """
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"cacheprog-{uid}")


def version() -> str:
    import platform

    return f"cacheprog version {__version__} built with Python {platform.python_version()}"


def help_text(command: str) -> str:
    """
    Help for C{command}: every option with its variable and default.
    """
    lines = [
        version(),
        "",
        "Usage: cacheprog [direct|proxy|wait] [options]",
        "",
        "  direct  [default] run as the GOCACHEPROG program: GOCACHEPROG=cacheprog",
        "  proxy   serve a remote storage over HTTP for cacheprog clients (docker build sidecar)",
        "  wait    block until the detached uploaders of the local root are done; print what they uploaded",
        "  summary add up this job's runs: a table, Markdown, a GitHub job summary (cacheprog summary --help)",
        "",
        f"Options of {command} (flag > environment variable > default; an empty variable is unset):",
    ]
    for option in OPTIONS:
        if not option.applies_to(command):
            continue
        flag = f"--{option.name}" if option.kind == "bool" else f"--{option.name} {option.placeholder}"
        notes = [f"env: {', '.join(option.envs)}"]
        if option.default not in (None, "", "0", "false"):
            notes.insert(0, f"default: {option.default}")
        lines.append(f"  {flag}")
        lines.append(f"        {option.help} [{'; '.join(notes)}]")
    lines += [
        "  -h, --help",
        "        show this help and exit",
        "  --version",
        "        show the version and exit",
    ]
    return "\n".join(lines) + "\n"


def render_prefix(template: str, environ: Mapping[str, str], goos: str, goarch: str) -> str:
    """
    Expand C{{% GOOS %}}, C{{% GOARCH %}} and C{{% env.NAME %}} in an S3 prefix
    (an unset variable gives "").  An unclosed C{{%} stays as it is.

    @raise ValueError: for any other tag, naming it.
    """

    def tag(m: re.Match[str]) -> str:
        name = m.group(1).strip()
        if name == "GOOS":
            return environ.get("GOOS") or goos
        if name == "GOARCH":
            return environ.get("GOARCH") or goarch
        if name.startswith("env.") and len(name) > 4:
            return environ.get(name[4:], "")
        raise ValueError(f"unknown template tag {name!r} (use GOOS, GOARCH or env.NAME)")

    return re.sub(r"\{%(.*?)%\}", tag, template)

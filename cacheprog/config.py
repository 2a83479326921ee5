# -*- test-case-name: tests.unit.test_config -*-
"""
Options from the command line and the environment, by the table of
L{cacheprog.options}: precedence flag > environment > default; an empty
variable counts as unset (C{VAR=} means the default).  Values
are read with the option's constant: C{config[S3_BUCKET]} is a C{str}.

This module must stay cheap to import: it runs before the handshake.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from cacheprog import __version__
from cacheprog.options import BY_NAME, MULTI_KINDS, OPTIONS, STORAGE_TYPES, Option

COMMANDS = ("direct", "proxy", "wait")
T = TypeVar("T")


class ConfigError(Exception):
    """
    A bad option value; the message names the flag or variable at fault.
    """


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


def _convert(option: Option[Any], raw: str | list[str]) -> object:
    if option.kind in MULTI_KINDS:
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
    Parsed options for one command, read by their constants:
    C{config[REMOTE_GET_TIMEOUT]} is float seconds, lists are lists,
    headers and labels dicts, levels ints; an unset option gives its kind's
    empty value (C{""}, C{0}, C{False}, C{[]}, C{{}}).
    """

    def __init__(self, command: str, values: dict[str, object], sources: dict[str, str]) -> None:
        self.command = command
        self._values = values
        self.sources = sources

    def __getitem__(self, option: Option[T]) -> T:
        value = self._values[option.name]
        if value is None:
            value = option.unset
        if isinstance(value, (list, dict)):
            value = value.copy()
        return cast(T, value)

    def given(self, option: Option[Any]) -> bool:
        """
        Whether a flag, variable or default gave C{option} a value.
        """
        return self._values[option.name] is not None

    def source(self, option: Option[Any]) -> str:
        """
        Where a value came from, for messages: C{--flag} or C{VARIABLE}.
        """
        return self.sources.get(option.name, f"--{option.name}")


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
            option = BY_NAME.get(name)
            if option is None:
                raise ConfigError(f"unknown argument {arg}")
            if option.kind == "bool":
                given[name] = value if eq else "true"
            elif option.kind in MULTI_KINDS:
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
        if not BY_NAME[name].applies_to(command):
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
    every go command of a CI job, so one command's outputs are the next's hits.
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

# -*- test-case-name: tests.unit.test_s3config -*-
"""
The S3 options, checked and normalised before the handshake.

This module runs before the handshake (from L{cacheprog.remote.factory.check}),
so it imports the standard library and L{cacheprog.config} only:
never Twisted, treq or botocore (those are for L{cacheprog.remote.s3}, after
the handshake).

What is decided here:
 - the key layout: prefix path-joined with the lowercase hex ActionID (Go's
   C{path.Join}: duplicate slashes collapse, C{.}/C{..} resolved, a leading
   C{/} kept; no prefix gives just the hex);
 - the prefix template (C{{% GOOS %}}, C{{% GOARCH %}}, C{{% env.NAME %}}),
   rendered once, with Go's names for the running OS and architecture;
 - the endpoint: none (AWS), C{http(s)://host[/path]} or
   C{minio+http(s)://host[/path]} (always path-style);
 - the addressing of a request (virtual host or path style) and its URL.
"""

from __future__ import annotations

import ipaddress
import platform
import posixpath
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

from cacheprog import options as o
from cacheprog.config import Config, ConfigError

DEFAULT_REGION = "us-east-1"

# Python's names for the running system -> Go's GOOS / GOARCH.
_GOOS = {
    "linux": "linux",
    "darwin": "darwin",
    "win32": "windows",
    "cygwin": "windows",
    "freebsd": "freebsd",
    "openbsd": "openbsd",
    "netbsd": "netbsd",
    "dragonfly": "dragonfly",
    "sunos": "solaris",
    "aix": "aix",
}
_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "aarch64_be": "arm64be",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "x86": "386",
    "armv5l": "arm",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "arm": "arm",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "loongarch64": "loong64",
    "mips": "mips",
    "mipsel": "mipsle",
    "mips64": "mips64",
    "mips64el": "mips64le",
}


def go_os(sys_platform: str | None = None) -> str:
    """
    Go's C{GOOS} for the running system (C{linux}, C{darwin}, C{windows}...).
    """
    name = sys.platform if sys_platform is None else sys_platform
    for prefix, goos in _GOOS.items():
        if name.startswith(prefix):
            return goos
    return name


def go_arch(machine: str | None = None) -> str:
    """
    Go's C{GOARCH} for the running machine: C{x86_64} -> C{amd64},
    C{aarch64} -> C{arm64}, and so on.
    """
    name = (platform.machine() if machine is None else machine).strip()
    return _GOARCH.get(name.lower(), name.lower())


def object_key(prefix: str, action_id: bytes) -> str:
    """
    The S3 key of C{action_id}: C{prefix} joined to its lowercase hex with
    Go's C{path.Join} rules.
    """
    return named_key(prefix, action_id.hex())


def named_key(prefix: str, name: str) -> str:
    """
    The S3 key of a named object (an entry, a manifest, a pack): C{prefix}
    joined to C{name} with Go's C{path.Join} rules.
    """
    if not prefix:
        return name
    key = posixpath.normpath(posixpath.join(prefix, name))
    if key.startswith("//"):
        # POSIX keeps a leading "//"; Go's path.Clean does not.
        key = "/" + key.lstrip("/")
    return key


@dataclass(frozen=True)
class Endpoint:
    """
    A custom S3 endpoint.

    @ivar scheme: C{http} or C{https}.
    @ivar netloc: C{host[:port]}.
    @ivar path: a base path (no trailing slash) or C{""}.
    @ivar minio: the C{minio+} form: requests are always path-style.
    """

    scheme: str
    netloc: str
    path: str = ""
    minio: bool = False

    @property
    def hostname(self) -> str:
        return urlsplit(f"{self.scheme}://{self.netloc}").hostname or ""

    def __str__(self) -> str:
        return f"{'minio+' if self.minio else ''}{self.scheme}://{self.netloc}{self.path}"


def parse_endpoint(text: str) -> Endpoint | None:
    """
    C{""} (AWS) -> None; C{http(s)://host[/path]}; C{minio+http(s)://...}.

    @raise ValueError: C{unsupported endpoint scheme: X}, or no host.
    """
    value = text.strip()
    if not value:
        return None
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    minio = scheme.startswith("minio+")
    if minio:
        scheme = scheme[len("minio+") :]
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported endpoint scheme: {parts.scheme}")
    if not parts.netloc or not parts.hostname:
        raise ValueError(f"endpoint {text!r} has no host")
    if parts.username or parts.password:
        raise ValueError("the endpoint must not contain credentials")
    return Endpoint(scheme=scheme, netloc=parts.netloc, path=parts.path.rstrip("/"), minio=minio)


def _virtual_hostable(bucket: str, https: bool) -> bool:
    """
    Whether C{bucket} can be a DNS label in front of the endpoint host (with
    TLS, dots would break the certificate match, so they force path style).
    """
    if not 3 <= len(bucket) <= 63 or ".." in bucket:
        return False
    if https and "." in bucket:
        return False
    if bucket[0] in ".-" or bucket[-1] in ".-":
        return False
    if any(not (c.islower() or c.isdigit() or c in ".-") or not c.isascii() for c in bucket):
        return False
    try:
        ipaddress.ip_address(bucket)
    except ValueError:
        return True
    return False


def _is_ip(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class S3Settings:
    """
    Everything the S3 backend needs, validated.  Secrets are kept out of
    C{repr}.
    """

    kind: ClassVar[str] = "s3"
    bucket: str
    prefix: str = ""
    endpoint: Endpoint | None = None
    region: str = ""
    force_path_style: bool = False
    exclude_headers_from_signing: tuple[str, ...] = ()
    expiration: float = 0.0
    credentials_endpoint: str = ""
    access_key_id: str = ""
    access_key_secret: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    #: Trusted prefixes read after C{prefix}, never written (rendered).
    read_prefixes: tuple[str, ...] = ()

    def urls(self) -> tuple[str, ...]:
        """
        What this store contacts: the endpoint (AWS is https) and the
        credentials endpoint.
        """
        return (str(self.endpoint) if self.endpoint else "https://aws", self.credentials_endpoint)

    def path_style(self) -> bool:
        """
        Whether requests put the bucket in the path rather than in the host.
        """
        if self.endpoint is None:
            return self.force_path_style or not _virtual_hostable(self.bucket, https=True)
        return (
            self.endpoint.minio
            or self.force_path_style
            or _is_ip(self.endpoint.hostname)
            or not _virtual_hostable(self.bucket, self.endpoint.scheme == "https")
        )

    def url(self, key: str, region: str, query: str = "") -> str:
        """
        The URL of C{key} (C{""}: the bucket itself) for a request signed
        for C{region}.
        """
        if self.endpoint is None:
            suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
            scheme, host, base = "https", f"s3.{region}.{suffix}", ""
        else:
            scheme, host, base = self.endpoint.scheme, self.endpoint.netloc, self.endpoint.path
        quoted = quote(key, safe="/~")
        if self.path_style():
            path = f"{base}/{quote(self.bucket, safe='')}" + (f"/{quoted}" if key else "")
        else:
            host = f"{self.bucket}.{host}"
            path = f"{base}/{quoted}"
        return urlunsplit((scheme, host, path, query, ""))

    def describe(self) -> dict[str, object]:
        """
        The fields of the C{Configuring S3 storage} log line (no secrets).
        """
        endpoint = ""
        if self.credentials_endpoint:
            # No user info, query or fragment: they may carry tokens.
            parts = urlsplit(self.credentials_endpoint)
            endpoint = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        described: dict[str, object] = {
            "region": self.region or "(detect)",
            "bucket": self.bucket,
            "prefix": self.prefix,
            "endpoint": str(self.endpoint) if self.endpoint else "(aws)",
            "force_path_style": self.force_path_style,
            "expiration": f"{self.expiration:g}s",
            "credentials_endpoint": endpoint,
            "exclude_headers_from_signing": ",".join(self.exclude_headers_from_signing),
            "credentials": "static"
            if self.access_key_id
            else ("endpoint" if self.credentials_endpoint else "default chain"),
        }
        if self.read_prefixes:
            described["read_prefixes"] = ",".join(self.read_prefixes)
        return described


def _same_prefix(a: str, b: str) -> bool:
    """
    Do two prefixes name the same keys (C{path.Join} rules)?
    """
    probe = b"\0" * 32
    return object_key(a, probe) == object_key(b, probe)


def _endpoint_setting(config: Config, environ: Mapping[str, str]) -> tuple[str, str]:
    """
    The endpoint and where it came from: C{--s3-endpoint} /
    C{CACHEPROG_S3_ENDPOINT}, else the AWS SDKs' C{AWS_ENDPOINT_URL_S3}, then
    C{AWS_ENDPOINT_URL} (unless C{AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true}).
    """
    text = config[o.S3_ENDPOINT].strip()
    if text or environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return text, config.source(o.S3_ENDPOINT)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = environ.get(name, "").strip()
        if value:
            return value, name
    return "", config.source(o.S3_ENDPOINT)


def check_s3(config: Config, environ: Mapping[str, str]) -> S3Settings:
    """
    Validate the s3 options (before the handshake).

    @return: the settings of L{cacheprog.remote.s3.S3Store}.
    @raise ConfigError: naming the flag or variable at fault.
    """
    bucket = config[o.S3_BUCKET].strip()
    if not bucket:
        raise ConfigError("the s3 remote storage needs a bucket: set --s3-bucket or CACHEPROG_S3_BUCKET")
    text, source = _endpoint_setting(config, environ)
    try:
        endpoint = parse_endpoint(text)
    except ValueError as e:
        raise ConfigError(f"invalid value for {source}: {e}") from None
    try:
        prefix = render_prefix(config[o.S3_PREFIX], environ, go_os(), go_arch())
    except ValueError as e:
        raise ConfigError(f"invalid value for {config.source(o.S3_PREFIX)}: {e}") from None
    read_prefixes = []
    for template in config[o.S3_READ_PREFIXES]:
        try:
            rendered = render_prefix(template.strip(), environ, go_os(), go_arch())
        except ValueError as e:
            raise ConfigError(f"invalid value for {config.source(o.S3_READ_PREFIXES)}: {e}") from None
        if _same_prefix(rendered, prefix):
            continue
        read_prefixes.append(rendered)
    credentials_endpoint = config[o.S3_CREDENTIALS_ENDPOINT].strip()
    if credentials_endpoint:
        parts = urlsplit(credentials_endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"invalid value for {config.source(o.S3_CREDENTIALS_ENDPOINT)}: "
                f"{credentials_endpoint!r} is not an http(s) URL"
            )
    access_key_id = config[o.S3_ACCESS_KEY_ID].strip()
    secret = config[o.S3_ACCESS_KEY_SECRET]
    if access_key_id and not secret:
        raise ConfigError(
            f"{config.source(o.S3_ACCESS_KEY_ID)} is set but the secret is not: "
            "set --s3-access-key-secret or CACHEPROG_S3_ACCESS_KEY_SECRET"
        )
    excluded = tuple(dict.fromkeys(h.strip().lower() for h in config[o.S3_EXCLUDE_HEADERS_FROM_SIGNING]))
    return S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint,
        region=config[o.S3_REGION].strip(),
        force_path_style=config[o.S3_FORCE_PATH_STYLE],
        exclude_headers_from_signing=tuple(h for h in excluded if h),
        expiration=max(0.0, config[o.S3_EXPIRATION]),
        credentials_endpoint=credentials_endpoint,
        access_key_id=access_key_id if secret else "",
        access_key_secret=secret if access_key_id else "",
        session_token=config[o.S3_SESSION_TOKEN] if access_key_id else "",
        read_prefixes=tuple(read_prefixes),
    )


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

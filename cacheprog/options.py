# -*- test-case-name: tests.unit.test_config -*-
"""
Every option, declared once: its flag, its C{CACHEPROG_*} variable(s), its
default, its kind and its help.  The same table drives C{direct}, C{proxy},
C{wait}, twistd's options and C{--help}.

Code reads a value through its constant (C{config[S3_BUCKET]}), never by
name: a typo is a lint error, and the constant's type says what comes back.
This module must stay cheap to import: it runs before the handshake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Scopes: which commands an option belongs to.
GLOBAL, REMOTE, LOCAL, DIRECT, PROXY, WAIT = "global", "remote", "local", "direct", "proxy", "wait"
#: The commands that talk to a remote store.
REMOTE_COMMANDS = (DIRECT, PROXY)
STORAGE_TYPES = ("disabled", "dir", "s3", "http", "memory")
#: Kinds that take several words on the command line (or one CSV value).
MULTI_KINDS = ("list", "headers", "labels")

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


class Option(Generic[T]):
    """
    One option: C{--name}, its environment variables, default, kind and
    help.  C{T} is the type of its parsed value (L{cacheprog.config.Config}).

    @ivar scope: C{global}, C{remote} (direct and proxy), C{local} (direct
        and wait: the local root), C{direct}, C{proxy} or C{wait}.
    @ivar unset: the value when neither flag, variable nor default gives one.
    """

    def __init__(
        self, kind: str, unset: T, name: str, env: str | Sequence[str], *,
        help: str, default: str | None = None, scope: str = DIRECT, placeholder: str = "",
    ) -> None:  # fmt: skip
        self.kind = kind
        self.unset = unset
        self.name = name
        self.envs = (env,) if isinstance(env, str) else tuple(env)
        self.help = help
        self.default = default
        self.scope = scope
        self.placeholder = placeholder or _PLACEHOLDERS.get(kind, "VALUE")

    def __repr__(self) -> str:
        return f"<Option --{self.name}>"

    def applies_to(self, command: str) -> bool:
        return (
            self.scope in (GLOBAL, command)
            or (self.scope == REMOTE and command in REMOTE_COMMANDS)
            or (self.scope == LOCAL and command in (DIRECT, WAIT))
        )


class Kind(Generic[T]):
    """
    A kind of option (text, flag, duration...) and the type of its values;
    calling it declares an option of that kind.
    """

    def __init__(self, kind: str, unset: T) -> None:
        self.kind = kind
        self.unset = unset

    def __call__(
        self, name: str, env: str | Sequence[str], *,
        help: str, default: str | None = None, scope: str = DIRECT, placeholder: str = "",
    ) -> Option[T]:  # fmt: skip
        return Option(
            self.kind, self.unset, name, env, help=help, default=default, scope=scope, placeholder=placeholder
        )


text: Kind[str] = Kind("str", "")
path: Kind[str] = Kind("path", "")
url: Kind[str] = Kind("url", "")
storage_type: Kind[str] = Kind("type", "")
flag: Kind[bool] = Kind("bool", False)
integer: Kind[int] = Kind("int", 0)
size: Kind[int] = Kind("size", 0)
level: Kind[int] = Kind("level", 0)
duration: Kind[float] = Kind("duration", 0.0)
#: Lists and mappings: L{cacheprog.config.Config} hands out copies.
items: Kind[list[str]] = Kind("list", [])
headers: Kind[dict[str, str]] = Kind("headers", {})
labels: Kind[dict[str, str]] = Kind("labels", {})


# One option per two lines: the table reads best unwrapped.
# fmt: off

# global
LOG_LEVEL = level("log-level", "CACHEPROG_LOG_LEVEL", default="INFO", scope=GLOBAL,
    help="log level: DEBUG, INFO, WARN or ERROR")
LOG_OUTPUT = path("log-output", "CACHEPROG_LOG_OUTPUT", scope=GLOBAL,
    help="append logs to this file instead of stderr")
CPU_PROFILE = path("cpu-profile", "CACHEPROG_CPU_PROFILE_PATH", scope=GLOBAL,
    help="write a cProfile profile of the whole run here")
MEM_PROFILE = path("mem-profile", "CACHEPROG_MEM_PROFILE_PATH", scope=GLOBAL,
    help="write a tracemalloc snapshot here at exit")
TRACE_PROFILE = path("trace-profile", "CACHEPROG_TRACE_PROFILE_PATH", scope=GLOBAL,
    help="accepted for compatibility; ignored with a warning")
FGPROF = path("fgprof", "CACHEPROG_FGPROF_PATH", scope=GLOBAL,
    help="accepted for compatibility; ignored with a warning")
USE_VM_HISTOGRAMS = flag("use-vm-histograms", "CACHEPROG_USE_VM_HISTOGRAMS", default="false", scope=GLOBAL,
    help="VictoriaMetrics-style (vmrange) histograms in pushed metrics")

# remote
REMOTE_STORAGE_TYPE = storage_type("remote-storage-type", "CACHEPROG_REMOTE_STORAGE_TYPE", default="disabled", scope=REMOTE,
    help="remote storage: disabled, dir, s3 or http (memory: for testing)")
DIR_STORAGE_ROOT = path("dir-storage-root", "CACHEPROG_DIR_STORAGE_ROOT", scope=REMOTE,
    help="shared directory for the dir storage (a CI volume, NFS)")
DIR_READ_ROOTS = items("dir-read-roots", "CACHEPROG_DIR_READ_ROOTS", scope=REMOTE, placeholder="[dir ...]",
    help="more directories to read from, in order, after --dir-storage-root; never written")
MAX_CONSECUTIVE_ERRORS = integer("max-consecutive-errors", "CACHEPROG_REMOTE_STORAGE_MAX_CONSECUTIVE_ERRORS", default="10", scope=REMOTE,
    help="circuit breaker: consecutive remote errors before remote storage is switched off (<=0: never)")
RETRY_AFTER = duration("retry-after", "CACHEPROG_REMOTE_STORAGE_RETRY_AFTER", default="15s", scope=REMOTE,
    help="circuit breaker: wait this long before one probe request (<=0: stay off)")
S3_ENDPOINT = url("s3-endpoint", "CACHEPROG_S3_ENDPOINT", scope=REMOTE,
    help="S3 endpoint: http(s)://host or minio+http(s)://host; empty for AWS")
S3_FORCE_PATH_STYLE = flag("s3-force-path-style", "CACHEPROG_S3_FORCE_PATH_STYLE", default="false", scope=REMOTE,
    help="path-style bucket addressing instead of virtual hosts")
S3_REGION = text("s3-region", "CACHEPROG_S3_REGION", scope=REMOTE, placeholder="REGION",
    help="bucket region; empty: detected with GetBucketLocation")
S3_BUCKET = text("s3-bucket", "CACHEPROG_S3_BUCKET", scope=REMOTE, placeholder="BUCKET",
    help="bucket name (required for s3)")
S3_EXCLUDE_HEADERS_FROM_SIGNING = items("s3-exclude-headers-from-signing", "CACHEPROG_S3_EXCLUDE_HEADERS_FROM_SIGNING", scope=REMOTE,
    help="headers sent but not signed (GCS: Accept-Encoding)")
S3_PREFIX = text("s3-prefix", "CACHEPROG_S3_PREFIX", scope=REMOTE, placeholder="PREFIX",
    help="key prefix; templated: {% GOOS %}, {% GOARCH %}, {% env.NAME %}")
S3_READ_PREFIXES = items("s3-read-prefixes", "CACHEPROG_S3_READ_PREFIXES", scope=REMOTE, placeholder="[prefix ...]",
    help="more prefixes of the bucket to read from, in order, after --s3-prefix; never written (a pull request reading main's cache); templated like it")
S3_EXPIRATION = duration("s3-expiration", "CACHEPROG_S3_EXPIRATION", default="0", scope=REMOTE,
    help="set the Expires header to now+this on uploads (0: none; use lifecycle rules for real expiry)")
S3_CREDENTIALS_ENDPOINT = text("s3-credentials-endpoint", "CACHEPROG_S3_CREDENTIALS_ENDPOINT", scope=REMOTE, placeholder="URL",
    help="container-credentials endpoint")
S3_ACCESS_KEY_ID = text("s3-access-key-id", "CACHEPROG_S3_ACCESS_KEY_ID", scope=REMOTE, placeholder="ID",
    help="static access key id (else the AWS credential chain)")
S3_ACCESS_KEY_SECRET = text("s3-access-key-secret", "CACHEPROG_S3_ACCESS_KEY_SECRET", scope=REMOTE, placeholder="SECRET",
    help="static secret access key")
S3_SESSION_TOKEN = text("s3-session-token", "CACHEPROG_S3_SESSION_TOKEN", scope=REMOTE, placeholder="TOKEN",
    help="static session token")
HTTP_STORAGE_BASE_URL = url("http-storage-base-url", "CACHEPROG_HTTP_STORAGE_BASE_URL", scope=REMOTE,
    help="base URL of a cacheprog proxy (required for http)")
HTTP_STORAGE_EXTRA_HEADERS = headers("http-storage-extra-headers", "CACHEPROG_HTTP_STORAGE_EXTRA_HEADERS", scope=REMOTE,
    help="headers added to every storage request")

# local
ROOT_DIRECTORY = path("root-directory", ("CACHEPROG_ROOT_DIRECTORY", "CACHEPROG_DISK_STORAGE_ROOT"), scope=LOCAL,
    help="local cache directory; default: <tmp>/cacheprog-<uid>, shared by the go commands of a job")

# direct
REMOTE_GET_TIMEOUT = duration("remote-get-timeout", "CACHEPROG_REMOTE_GET_TIMEOUT", default="5s",
    help="answer miss when a remote get takes longer (the download still lands locally; 0: no limit)")
REMOTE_PUT_TIMEOUT = duration("remote-put-timeout", "CACHEPROG_REMOTE_PUT_TIMEOUT", default="5s",
    help="give up one background upload after this (0: no limit)")
MAX_CONCURRENT_REMOTE_GETS = integer("max-concurrent-remote-gets", "CACHEPROG_MAX_CONCURRENT_REMOTE_GETS", default="0",
    help="remote gets at once (0: no limit)")
MAX_CONCURRENT_REMOTE_PUTS = integer("max-concurrent-remote-puts", "CACHEPROG_MAX_CONCURRENT_REMOTE_PUTS", default="0",
    help="uploads at once (0: 64)")
MAX_BACKGROUND_WAIT = duration("max-background-wait", "CACHEPROG_MAX_BACKGROUND_WAIT", default="10s",
    help="at close, wait this long for uploads (0: no limit)")
MIN_REMOTE_PUT_SIZE = size("min-remote-put-size", "CACHEPROG_MIN_REMOTE_PUT_SIZE", default="0",
    help="do not upload objects smaller than this many bytes")
DETACHED_DRAIN = flag("detached-drain", "CACHEPROG_DETACHED_DRAIN", default="false",
    help="at close, answer go and close stdout at once; finish uploads in the background (see cacheprog wait)")
DETACHED_DRAIN_TIMEOUT = duration("detached-drain-timeout", "CACHEPROG_DETACHED_DRAIN_TIMEOUT", default="5m",
    help="a detached uploader gives up what is left after this (0: no limit)")
DEFER_UPLOADS = flag("defer-uploads", "CACHEPROG_DEFER_UPLOADS", default="false",
    help="queue uploads until close instead of running them during the build")
PRESENCE_LIST_PAGES = integer("presence-list-pages", "CACHEPROG_PRESENCE_LIST_PAGES", default="0",
    help="s3: list the prefix at start, up to this many pages of 1000 keys, to answer misses without a request (0: off)")

# wait
WAIT_TIMEOUT = duration("wait-timeout", "CACHEPROG_WAIT_TIMEOUT", default="0", scope=WAIT,
    help="cacheprog wait: give up after this (0: no limit)")

# direct
DISABLE_GET = flag("disable-get", "CACHEPROG_DISABLE_GET", default="false",
    help="do not offer get: rebuild everything, still fill the cache")
DISABLE_PUT = flag("disable-put", "CACHEPROG_DISABLE_PUT", default="false",
    help="do not offer put: read-only cache")
WARM_START = flag("warm-start", "CACHEPROG_WARM_START", default="true",
    help="keep a run manifest and packs per go command and prefetch them at start (s3, dir, http)")
MANIFEST_KEY = text("manifest-key", "CACHEPROG_MANIFEST_KEY", placeholder="NAME",
    help="name of this run's manifest; default: derived from the go command, module, GOOS/GOARCH and toolchain")
PREFETCH_WAIT = duration("prefetch-wait", "CACHEPROG_PREFETCH_WAIT", default="1s",
    help="longest a get waits for an entry the prefetch is bringing before fetching it alone")
METRICS_PUSH_ENDPOINT = url("metrics-push-endpoint", "CACHEPROG_METRICS_PUSH_ENDPOINT",
    help="push metrics here once at exit")
METRICS_PUSH_METHOD = text("metrics-push-method", "CACHEPROG_METRICS_PUSH_METHOD", default="GET", placeholder="METHOD",
    help="HTTP method of the metrics push")
METRICS_PUSH_EXTRA_LABELS = labels("metrics-push-extra-labels", "CACHEPROG_METRICS_PUSH_EXTRA_LABELS",
    help="labels added to every pushed series")
METRICS_PUSH_EXTRA_HEADERS = headers("metrics-push-extra-headers", "CACHEPROG_METRICS_PUSH_EXTRA_HEADERS",
    help="headers added to the metrics push")

# proxy
LISTEN_ADDRESS = text("listen-address", "CACHEPROG_PROXY_LISTEN_ADDRESS", default="127.0.0.1:8080", scope=PROXY, placeholder="ADDR",
    help="address to listen on (beyond loopback, set the write token)")
PROXY_READ_TOKEN_FILE = path("proxy-read-token-file", "CACHEPROG_PROXY_READ_TOKEN_FILE", scope=PROXY,
    help="GET/HEAD need this token (Authorization: Bearer); or the token in CACHEPROG_PROXY_READ_TOKEN")
PROXY_WRITE_TOKEN_FILE = path("proxy-write-token-file", "CACHEPROG_PROXY_WRITE_TOKEN_FILE", scope=PROXY,
    help="PUT needs this token (Authorization: Bearer); or the token in CACHEPROG_PROXY_WRITE_TOKEN")
PROXY_HEADER_TIMEOUT = duration("proxy-header-timeout", "CACHEPROG_PROXY_HEADER_TIMEOUT", default="30s", scope=PROXY,
    help="a request's headers must arrive within this time of its first byte (slow clients are dropped)")
METRICS_PROXY_ENDPOINT = url("metrics-proxy-endpoint", "CACHEPROG_METRICS_PROXY_ENDPOINT", scope=PROXY,
    help="forward /metricsproxy pushes here")
METRICS_PROXY_EXTRA_LABELS = labels("metrics-proxy-extra-labels", "CACHEPROG_METRICS_PROXY_EXTRA_LABELS", scope=PROXY,
    help="labels encoded into the forwarded push path")
METRICS_PROXY_EXTRA_HEADERS = headers("metrics-proxy-extra-headers", "CACHEPROG_METRICS_PROXY_EXTRA_HEADERS", scope=PROXY,
    help="headers added to forwarded pushes")
# fmt: on

OPTIONS: tuple[Option[Any], ...] = (
    LOG_LEVEL,
    LOG_OUTPUT,
    CPU_PROFILE,
    MEM_PROFILE,
    TRACE_PROFILE,
    FGPROF,
    USE_VM_HISTOGRAMS,
    REMOTE_STORAGE_TYPE,
    DIR_STORAGE_ROOT,
    DIR_READ_ROOTS,
    MAX_CONSECUTIVE_ERRORS,
    RETRY_AFTER,
    S3_ENDPOINT,
    S3_FORCE_PATH_STYLE,
    S3_REGION,
    S3_BUCKET,
    S3_EXCLUDE_HEADERS_FROM_SIGNING,
    S3_PREFIX,
    S3_READ_PREFIXES,
    S3_EXPIRATION,
    S3_CREDENTIALS_ENDPOINT,
    S3_ACCESS_KEY_ID,
    S3_ACCESS_KEY_SECRET,
    S3_SESSION_TOKEN,
    HTTP_STORAGE_BASE_URL,
    HTTP_STORAGE_EXTRA_HEADERS,
    ROOT_DIRECTORY,
    REMOTE_GET_TIMEOUT,
    REMOTE_PUT_TIMEOUT,
    MAX_CONCURRENT_REMOTE_GETS,
    MAX_CONCURRENT_REMOTE_PUTS,
    MAX_BACKGROUND_WAIT,
    MIN_REMOTE_PUT_SIZE,
    DETACHED_DRAIN,
    DETACHED_DRAIN_TIMEOUT,
    DEFER_UPLOADS,
    PRESENCE_LIST_PAGES,
    WAIT_TIMEOUT,
    DISABLE_GET,
    DISABLE_PUT,
    WARM_START,
    MANIFEST_KEY,
    PREFETCH_WAIT,
    METRICS_PUSH_ENDPOINT,
    METRICS_PUSH_METHOD,
    METRICS_PUSH_EXTRA_LABELS,
    METRICS_PUSH_EXTRA_HEADERS,
    LISTEN_ADDRESS,
    PROXY_READ_TOKEN_FILE,
    PROXY_WRITE_TOKEN_FILE,
    PROXY_HEADER_TIMEOUT,
    METRICS_PROXY_ENDPOINT,
    METRICS_PROXY_EXTRA_LABELS,
    METRICS_PROXY_EXTRA_HEADERS,
)
BY_NAME = {o.name: o for o in OPTIONS}

# -*- test-case-name: tests.unit.test_http -*-
"""
The HTTP storage protocol, shared by the C{http} backend (the client,
L{cacheprog.remote.http}) and the proxy's storage resource (the server,
L{cacheprog.proxy.storage}).  Wire-compatible with the Go reference
(C{internal/infra/storage/http_contract.go}, C{pkg/httpstorage}), so either
side may be the Go tool.

The wire, for one object keyed by its ActionID::

    GET  {base}/cache/{lowercase hex ActionID}
         200  Content-Length: <stored size>
              Last-Modified: <HTTP date, GMT>
              X-Cacheprog-OutputID: <hex>
              X-Cacheprog-CompressionAlgorithm: "" | zstd
              X-Cacheprog-UncompressedSize: <decimal>
              <the stored bytes, possibly zstd>
         404  not found
    PUT  {base}/cache/{lowercase hex ActionID}
              Content-Length, X-Cacheprog-OutputID, X-Cacheprog-MD5Sum,
              X-Cacheprog-Sha256Sum (hex, of the stored bytes),
              X-Cacheprog-CompressionAlgorithm, X-Cacheprog-UncompressedSize
         2xx  stored

Hex here (OutputID, checksums) is base64 in the S3 metadata: a different
encoding of the same bytes.

Stdlib only: L{cacheprog.remote.httpconfig} checks options with it before
the handshake.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

#: The path segment under which objects live.
CACHE_SEGMENT = "cache"
#: The path segment under which run manifests and packs live (warm start).
BLOB_SEGMENT = "blob"
#: The largest manifest or pack a PUT may carry.
BLOB_LIMIT = 128 << 20

OUTPUT_ID = "X-Cacheprog-OutputID"
MD5_SUM = "X-Cacheprog-MD5Sum"
SHA256_SUM = "X-Cacheprog-Sha256Sum"
COMPRESSION = "X-Cacheprog-CompressionAlgorithm"
UNCOMPRESSED_SIZE = "X-Cacheprog-UncompressedSize"
CONTENT_LENGTH = "Content-Length"
LAST_MODIFIED = "Last-Modified"

#: Go's action and output IDs are SHA-256 sized.
ID_SIZE = 32
MD5_SIZE = 16

_KEY = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_DECIMAL = re.compile(r"[0-9]{1,19}")
_ALGORITHM = re.compile(r"[A-Za-z0-9._+-]{0,32}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ContractError(ValueError):
    """
    A request or response that breaks the protocol; the message says how.
    """


def object_url(base_url: str, action_id: bytes) -> str:
    """
    The URL of one object: C{{base}/cache/{hex}}.

    The base's path is kept (one trailing C{/} dropped); its query string, if
    any, stays a query string after the path.
    """
    parts = urlsplit(base_url)
    path = parts.path[:-1] if parts.path.endswith("/") else parts.path
    path = f"{path}/{CACHE_SEGMENT}/{action_id.hex()}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def blob_url(base_url: str, name: str) -> str:
    """
    The URL of a run manifest or pack: C{{base}/blob/{name}}.
    """
    parts = urlsplit(base_url)
    path = parts.path[:-1] if parts.path.endswith("/") else parts.path
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/{BLOB_SEGMENT}/{name}", parts.query, ""))


_BLOB = re.compile(r"(?:manifests|packs)/v1/[0-9a-f]{64}")


def parse_blob_name(segments: list[bytes]) -> str:
    """
    The manifest or pack named by the path segments after C{/blob/}:
    C{manifests/v1/<64 hex>} or C{packs/v1/<64 hex>}, nothing else.

    @raise ContractError: for any other path.
    """
    name = "/".join(s.decode("latin-1") for s in segments)
    if not _BLOB.fullmatch(name):
        raise ContractError(f"invalid blob name {name[:100]!r}: expected manifests/v1/<hex> or packs/v1/<hex>")
    return name


def parse_range(value: str | None) -> tuple[int, int] | None:
    """
    C{Range: bytes=<first>-<last>} as C{(start, stop)}; None without one.

    @raise ContractError: for any other form (one closed range only).
    """
    if value is None:
        return None
    match = re.fullmatch(r"bytes=([0-9]{1,19})-([0-9]{1,19})", value.strip())
    if match is None or int(match.group(2)) < int(match.group(1)):
        raise ContractError(f"unsupported Range {value[:60]!r}: use bytes=<first>-<last>")
    return int(match.group(1)), int(match.group(2)) + 1


def parse_key(segment: str | bytes) -> bytes:
    """
    The ActionID named by a path segment: exactly 64 lowercase hex digits.

    @raise ContractError: for anything else (uppercase, other lengths,
        C{..}, slashes, empty).
    """
    text = segment.decode("latin-1") if isinstance(segment, bytes) else segment
    if not _KEY.fullmatch(text):
        raise ContractError(f"invalid action id {text[:80]!r}: expected 64 lowercase hex digits")
    return bytes.fromhex(text)


def parse_hex(name: str, value: str | None, size: int) -> bytes:
    """
    A required hex header of C{size} bytes (either case accepted, as Go's
    C{hex.DecodeString} does).

    @raise ContractError: when missing, not hex, or of another length.
    """
    if value is None or value == "":
        raise ContractError(f"missing {name} header")
    if not _HEX.fullmatch(value):
        raise ContractError(f"failed to parse {name}: {value[:80]!r} is not hex")
    raw = bytes.fromhex(value)
    if len(raw) != size:
        raise ContractError(f"failed to parse {name}: {len(raw)} bytes, expected {size}")
    return raw


def parse_size(name: str, value: str | None) -> int:
    """
    A required non-negative decimal header.

    @raise ContractError: when missing or not a plain non-negative integer.
    """
    if value is None:
        raise ContractError(f"missing {name} header")
    if not _DECIMAL.fullmatch(value.strip()):
        raise ContractError(f"failed to parse {name}: {value[:40]!r} is not a non-negative integer")
    return int(value)


def parse_compression(value: str | None) -> str:
    """
    The compression algorithm header (optional; C{""} is raw bytes).  Any
    short token passes: an algorithm this version does not know is a miss
    for readers, not a protocol error.
    """
    text = (value or "").strip()
    if not _ALGORITHM.fullmatch(text):
        raise ContractError(f"failed to parse {COMPRESSION}: {text[:40]!r}")
    return text


def format_http_date(when: datetime) -> str:
    """
    C{Last-Modified}: an HTTP date, always in GMT (a naive time is UTC).
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return format_datetime(when.astimezone(timezone.utc), usegmt=True)


def parse_http_date(value: str | None) -> datetime:
    """
    An HTTP date as an aware datetime.

    @raise ContractError: when missing or unparsable.
    """
    if not value:
        raise ContractError(f"missing {LAST_MODIFIED} header")
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise ContractError(f"failed to parse {LAST_MODIFIED}: {value[:60]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when


def header_problem(name: str, value: str) -> str | None:
    """
    Why C{name: value} cannot be sent as an HTTP header, or None.
    """
    if not _TOKEN.fullmatch(name):
        return f"invalid header name {name!r}"
    if any(c in value for c in "\r\n\0"):
        return f"invalid value for header {name!r}"
    return None

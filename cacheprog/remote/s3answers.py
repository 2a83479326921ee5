# -*- test-case-name: tests.unit.test_s3answers -*-
"""
What S3's answers mean: L{S3Error}, the XML documents (errors, bucket
locations, listings) and the headers of an object (the Go reference's
C{x-amz-meta-*} metadata, C{Last-Modified}).  Pure functions of bytes and
headers; the store in L{cacheprog.remote.s3} sends the requests.

XML elements are found by local name wherever they sit: namespaces vary,
and SeaweedFS wraps C{LocationConstraint} in a non-standard root.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

from cacheprog.remote.s3config import DEFAULT_REGION

#: Prefix of the user metadata headers.
META_PREFIX = "x-amz-meta-"


class S3Error(Exception):
    """
    S3 answered with an error (or could not be reached).

    @ivar status: the HTTP status (0: no answer).
    @ivar code: the S3 error code (C{SlowDown}, C{NoSuchBucket}...) or C{""}.
    """

    def __init__(self, operation: str, status: int = 0, code: str = "", message: str = "") -> None:
        self.operation = operation
        self.status = status
        self.code = code
        self.message = message
        parts = [f"HTTP {status}"] if status else []
        if code:
            parts.append(code)
        if message:
            parts.append(message)
        super().__init__(f"{operation}: {': '.join(parts) or 'failed'}")


def body_error(message: str) -> S3Error:
    """
    What a broken object body raises (L{cacheprog.remote.body.BodyStream}'s
    C{error}).
    """
    return S3Error("get object", message=message)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_error(body: bytes) -> tuple[str, str]:
    """
    (code, message) of an S3 error document; C{("", "")} if there is none.
    """
    if not body.strip():
        return "", ""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", body[:200].decode("utf-8", "replace").strip()
    code = message = ""
    for element in root.iter():
        tag = _local(element.tag)
        if tag == "Code" and not code:
            code = (element.text or "").strip()
        elif tag == "Message" and not message:
            message = (element.text or "").strip()
    return code, message


def answered_error(operation: str, status: int, headers: Any, body: bytes) -> S3Error:
    """
    The error an answer of C{status} with C{body} means; one naming the
    bucket's region (C{x-amz-bucket-region}) says to set it.
    """
    code, message = parse_error(body)
    hint = header(headers, "x-amz-bucket-region")
    if hint and code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
        message = f"{message} (the bucket is in {hint}: set --s3-region)".strip()
    return S3Error(operation, status, code, message)


def parse_location(body: bytes) -> str:
    """
    The region in a GetBucketLocation answer.  Empty means us-east-1; C{EU}
    is the legacy name of eu-west-1.

    @raise ValueError: when there is no such element.
    @raise ET.ParseError: when the body is not XML.
    """
    root = ET.fromstring(body)
    for element in root.iter():
        if _local(element.tag) == "LocationConstraint":
            text = (element.text or "").strip()
            if not text:
                return DEFAULT_REGION
            return "eu-west-1" if text == "EU" else text
    raise ValueError("no LocationConstraint in the answer")


def parse_listing(body: bytes) -> tuple[list[str], str]:
    """
    The keys of a ListObjectsV2 page and the token of the next page
    (C{""}: this was the last).
    """
    root = ET.fromstring(body)
    keys: list[str] = []
    token = ""
    truncated = False
    for element in root.iter():
        tag = _local(element.tag)
        if tag == "Key":
            keys.append(element.text or "")
        elif tag == "NextContinuationToken":
            token = element.text or ""
        elif tag == "IsTruncated":
            truncated = (element.text or "").strip() == "true"
    return keys, token if truncated else ""


def action_ids(keys: list[str], prefix: str) -> Iterator[bytes]:
    """
    The action IDs among listed keys: those of C{prefix} named by 64 hex
    digits (not manifests, not packs).
    """
    for key in keys:
        name = key[len(prefix) :]
        if key.startswith(prefix) and len(name) == 64:
            try:
                yield bytes.fromhex(name)
            except ValueError:
                continue


def header(headers: Any, name: str) -> str | None:
    """
    The last value of header C{name} of a Twisted response, or None.
    """
    values = headers.getRawHeaders(name)
    if not values:
        return None
    value = values[-1]
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def response_metadata(headers: Any) -> dict[str, str]:
    """
    The C{x-amz-meta-*} headers of a Twisted response, lowercased names
    without the prefix.
    """
    meta: dict[str, str] = {}
    for name, values in headers.getAllRawHeaders():
        lname = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
        if lname.startswith(META_PREFIX) and values:
            value = values[-1]
            meta[lname[len(META_PREFIX) :]] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return meta


def same_metadata(stored: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """
    Whether the metadata S3 returned is what we would write.  An empty value
    and a missing one are the same (servers and SDKs drop empty headers).
    """
    return {k: v for k, v in stored.items() if v} == {k: v for k, v in wanted.items() if v}


class ObjectMetadata(NamedTuple):
    """
    The reference's metadata of an object.

    @ivar size: the uncompressed size; 0 when not recorded (the stored size
        then is the size).
    """

    output_id: bytes
    size: int
    compression: str


def object_metadata(headers: Any) -> ObjectMetadata:
    """
    The metadata of a GetObject answer.

    @raise S3Error: C{output_id} is missing or not base64, or
        C{uncompressed_size} is not a size.
    """
    meta = response_metadata(headers)
    encoded = meta.get("output_id")
    if encoded is None:
        raise S3Error("get object", message='metadata "output_id" not found')
    try:
        output_id = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise S3Error("get object", message=f'metadata "output_id" is not base64: {encoded!r}') from None
    size_text = meta.get("uncompressed_size", "").strip()
    try:
        size = int(size_text) if size_text else 0
    except ValueError:
        size = -1
    if size < 0:
        raise S3Error("get object", message=f'metadata "uncompressed_size" is not a size: {size_text!r}')
    return ObjectMetadata(output_id, size, meta.get("compression_algorithm", ""))


def last_modified(headers: Any) -> datetime | None:
    """
    The C{Last-Modified} time of an answer (UTC when it names no zone);
    None when it is missing or unreadable.
    """
    text = header(headers, "last-modified")
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)

"""
Tests for L{cacheprog.remote.s3answers}: what S3's answers mean.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from cacheprog.remote.s3answers import (
    S3Error,
    action_ids,
    answered_error,
    last_modified,
    object_metadata,
    parse_error,
    parse_listing,
    parse_location,
    response_metadata,
    same_metadata,
)
from tests.unit.fakes3 import error_xml

OUTPUT = hashlib.sha256(b"output").digest()


def headers(**values: str) -> Headers:
    """
    Response headers: C{x_amz_meta_output_id} is C{x-amz-meta-output_id}
    (the reference's metadata names keep their underscores).
    """
    named: dict[str, list[str]] = {}
    for name, value in values.items():
        if name.startswith("x_amz_meta_"):
            named["x-amz-meta-" + name[len("x_amz_meta_") :]] = [value]
        else:
            named[name.replace("_", "-")] = [value]
    return Headers(named)


class DocumentTests(SynchronousTestCase):
    def test_parse_error(self) -> None:
        self.assertEqual(parse_error(error_xml("NoSuchKey", "gone")), ("NoSuchKey", "gone"))
        self.assertEqual(parse_error(b""), ("", ""))
        self.assertEqual(parse_error(b"<html>oops"), ("", "<html>oops"))

    def test_parse_location(self) -> None:
        self.assertEqual(parse_location(b"<LocationConstraint>EU</LocationConstraint>"), "eu-west-1")
        self.assertEqual(parse_location(b"<LocationConstraint/>"), "us-east-1")
        self.assertEqual(
            parse_location(b"<a><b><LocationConstraint>ap-south-1</LocationConstraint></b></a>"), "ap-south-1"
        )
        self.assertRaises(ValueError, parse_location, b"<Other/>")

    def test_parse_listing(self) -> None:
        page = (
            b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated>'
            b"<Contents><Key>a</Key></Contents><Contents><Key>b</Key></Contents>"
            b"<NextContinuationToken>next</NextContinuationToken></ListBucketResult>"
        )
        self.assertEqual(parse_listing(page), (["a", "b"], "next"))
        last = page.replace(b"<IsTruncated>true", b"<IsTruncated>false")
        self.assertEqual(parse_listing(last), (["a", "b"], ""), "not truncated: no next page")

    def test_action_ids(self) -> None:
        """
        Only keys of the prefix named by 64 hex digits are action IDs.
        """
        keys = [f"p/{OUTPUT.hex()}", "p/manifests/x", f"q/{OUTPUT.hex()}", "p/" + "z" * 64]
        self.assertEqual(list(action_ids(keys, "p/")), [OUTPUT])


class ErrorTests(SynchronousTestCase):
    def test_error_text(self) -> None:
        self.assertEqual(str(S3Error("get object", 404, "NoSuchKey", "gone")), "get object: HTTP 404: NoSuchKey: gone")
        self.assertEqual(str(S3Error("put object")), "put object: failed")

    def test_region_hint(self) -> None:
        """
        An answer naming the bucket's region says to set it.
        """
        error = answered_error(
            "get object", 301, headers(x_amz_bucket_region="eu-west-3"), error_xml("PermanentRedirect", "moved")
        )
        self.assertEqual((error.status, error.code), (301, "PermanentRedirect"))
        self.assertEqual(error.message, "moved (the bucket is in eu-west-3: set --s3-region)")
        plain = answered_error("get object", 403, headers(x_amz_bucket_region="eu-west-3"), error_xml("AccessDenied"))
        self.assertEqual(plain.message, "")


class MetadataTests(SynchronousTestCase):
    def test_response_metadata(self) -> None:
        found = response_metadata(headers(x_amz_meta_output_id="abc", x_amz_meta_compression_algorithm="", etag="e"))
        self.assertEqual(found, {"output_id": "abc", "compression_algorithm": ""})

    def test_same_metadata(self) -> None:
        self.assertTrue(same_metadata({"output_id": "a"}, {"output_id": "a", "compression_algorithm": ""}))
        self.assertFalse(same_metadata({"output_id": "a"}, {"output_id": "b"}))

    def test_object_metadata(self) -> None:
        encoded = base64.b64encode(OUTPUT).decode()
        meta = object_metadata(
            headers(
                x_amz_meta_output_id=encoded, x_amz_meta_compression_algorithm="zstd", x_amz_meta_uncompressed_size="9"
            )
        )
        self.assertEqual(meta, (OUTPUT, 9, "zstd"))
        self.assertEqual(object_metadata(headers(x_amz_meta_output_id=encoded)), (OUTPUT, 0, ""))

    def test_bad_object_metadata(self) -> None:
        for bad in (
            headers(),
            headers(x_amz_meta_output_id="not base64!"),
            headers(x_amz_meta_output_id="AAAA", x_amz_meta_uncompressed_size="-1"),
        ):
            self.assertRaises(S3Error, object_metadata, bad)

    def test_last_modified(self) -> None:
        when = last_modified(headers(last_modified="Wed, 06 May 2026 07:08:09 GMT"))
        self.assertEqual(when, datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone.utc))
        self.assertIsNone(last_modified(headers()))
        self.assertIsNone(last_modified(headers(last_modified="yesterday")))

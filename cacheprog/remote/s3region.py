# -*- test-case-name: tests.unit.test_s3region -*-
"""
Which region an S3 bucket's requests are signed for.

C{--s3-region}, else C{AWS_REGION}, then C{AWS_DEFAULT_REGION} (the SDKs'
order), used without a probe; a bucket that answers a redirect naming
another region (C{x-amz-bucket-region}) corrects an environment region once
(L{cacheprog.remote.s3.S3Store}).  With none of them the store detects it
once, lazily, at the first request (never before the handshake, never on a
path where nobody needs it): L{detect_region} runs L{probe_region} within a
budget (2 s), and falls back to L{fallback_region} with a warning.

The probe is GetBucketLocation signed for us-east-1, sent to the configured
endpoint with the same addressing (a custom or C{minio+} endpoint is never
sent to AWS).  If it gives no answer, the C{x-amz-bucket-region} header of
that answer or of a HeadBucket is used.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from cacheprog.interfaces import ThreadRunner
from cacheprog.log import Logger
from cacheprog.remote.credentials import CredentialsError, default_region
from cacheprog.remote.s3answers import S3Error, parse_error, parse_location
from cacheprog.remote.s3config import DEFAULT_REGION

_log = Logger("s3")


class Probed(NamedTuple):
    """
    What a probe request was answered: the status, the
    C{x-amz-bucket-region} header (None: absent) and the (small) body.
    """

    status: int
    hint: str | None
    body: bytes


#: Sends one bucket request signed for us-east-1, without retries:
#: C{ask(method, query, operation)}.
Ask = Callable[[str, str, str], Awaitable[Probed]]


def environment_region(environ: Mapping[str, str]) -> str:
    """
    C{AWS_REGION}, else C{AWS_DEFAULT_REGION} (the SDKs' order), else "".
    """
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = environ.get(name, "").strip()
        if value:
            return value
    return ""


async def probe_region(ask: Ask) -> str:
    """
    The bucket's region from GetBucketLocation, else from the
    C{x-amz-bucket-region} header of its answer or of a HeadBucket.

    @raise S3Error: no answer named a region.
    """
    location = await ask("GET", "location", "get bucket location")
    if location.status == 200:
        try:
            return parse_location(location.body)
        except (ValueError, ET.ParseError):
            if location.hint:
                return location.hint
            raise
    if location.hint:
        return location.hint
    code, message = parse_error(location.body)
    head = await ask("HEAD", "", "head bucket")
    if head.hint:
        return head.hint
    raise S3Error("get bucket location", head.status, code, message)


async def fallback_region(environ: Mapping[str, str], run_in_thread: ThreadRunner) -> str:
    """
    The region when the bucket did not say: the environment's, the botocore
    profile's (read in a thread), else us-east-1.
    """
    region = environment_region(environ)
    if region:
        return region
    try:
        configured = await run_in_thread(default_region)
    except Exception:  # noqa: BLE001 - no configuration is fine
        configured = ""
    return configured or DEFAULT_REGION


async def detect_region(
    probe: Callable[[], Coroutine[Any, Any, str]],
    clock: IReactorTime,
    timeout: float,
    environ: Mapping[str, str],
    run_in_thread: ThreadRunner,
) -> str:
    """
    The bucket's region from C{probe} within C{timeout} seconds, else the
    fallback (with a warning).

    @raise CredentialsError: no credentials to sign the probe with (not the
        bucket's fault: the next request tries again).
    """
    job = Deferred.fromCoroutine(probe())
    job.addTimeout(timeout, clock)
    try:
        region = await job
    except CredentialsError:
        raise
    except Exception as e:  # noqa: BLE001 - detection is best effort
        region = await fallback_region(environ, run_in_thread)
        _log.warn("Could not detect the bucket region, using a default (set --s3-region)", region=region, reason=str(e))
    else:
        _log.info("Bucket region detected", region=region)
    return region

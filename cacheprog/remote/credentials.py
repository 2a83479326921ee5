# -*- test-case-name: tests.unit.test_credentials -*-
"""
AWS credentials for the S3 backend, from botocore, resolved and refreshed in
the thread runner (never on the reactor thread: the default chain reads files
and may call the instance-metadata service; a refresh may call an endpoint).

Sources, as in the Go reference:
 - C{--s3-credentials-endpoint}: container-credentials JSON (C{AccessKeyId},
   C{SecretAccessKey}, C{Token}, C{Expiration}), refreshed before it expires;
 - C{--s3-access-key-id}/C{--s3-access-key-secret}/C{--s3-session-token}:
   static;
 - both: the endpoint first, the static keys if the endpoint fails;
 - neither: botocore's default chain (C{AWS_*} variables, shared config and
   profiles, web identity, SSO, container, EC2 instance metadata).

botocore is imported inside the functions that run in the thread runner, so
importing this module stays cheap and the import cost lands off the reactor
thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from cacheprog.concurrency import Shared
from cacheprog.interfaces import ThreadRunner
from cacheprog.log import Logger
from cacheprog.remote.s3config import S3Settings

_log = Logger("s3")


class CredentialsError(Exception):
    """
    No usable credentials (the message says where we looked).
    """


def _container_credentials(url: str) -> Any:
    """
    Credentials from a container-credentials endpoint (blocking).

    botocore's L{ContainerMetadataFetcher} does the HTTP part (timeouts,
    retries); its host allow-list is lifted because the user named this
    endpoint explicitly (the Go reference accepts any host).
    """
    from botocore.credentials import Credentials, RefreshableCredentials
    from botocore.utils import ContainerMetadataFetcher

    class Fetcher(ContainerMetadataFetcher):  # type: ignore[misc]
        def _validate_allowed_url(self, full_url: str) -> None:
            return None

    fetcher = Fetcher()

    def fetch() -> dict[str, Any]:
        data = fetcher.retrieve_full_uri(url)
        if not isinstance(data, dict) or not data.get("AccessKeyId") or not data.get("SecretAccessKey"):
            raise CredentialsError(f"the credentials endpoint {url} answered without AccessKeyId/SecretAccessKey")
        return {
            "access_key": data["AccessKeyId"],
            "secret_key": data["SecretAccessKey"],
            "token": data.get("Token") or None,
            "expiry_time": data.get("Expiration") or None,
        }

    first = fetch()
    if first["expiry_time"]:
        return RefreshableCredentials.create_from_metadata(first, refresh_using=fetch, method="container-role")
    return Credentials(first["access_key"], first["secret_key"], first["token"], method="container-role")


def resolve(settings: S3Settings) -> Any:
    """
    The botocore credentials object for C{settings} (blocking: call it in
    the thread runner).

    @raise CredentialsError: when no source gives any.
    """
    from botocore.credentials import Credentials

    static = None
    if settings.access_key_id:
        static = Credentials(
            settings.access_key_id, settings.access_key_secret, settings.session_token or None, method="static"
        )
    if settings.credentials_endpoint:
        try:
            return _container_credentials(settings.credentials_endpoint)
        except Exception as e:  # any failure falls back (or is reported)
            if static is None:
                raise CredentialsError(f"credentials endpoint {settings.credentials_endpoint}: {e}") from e
            _log.warn("Credentials endpoint failed, using the static keys", reason=str(e))
            return static
    if static is not None:
        return static
    import botocore.session

    found = botocore.session.Session().get_credentials()
    if found is None:
        raise CredentialsError(
            "no AWS credentials found: set CACHEPROG_S3_ACCESS_KEY_ID/CACHEPROG_S3_ACCESS_KEY_SECRET, "
            "--s3-credentials-endpoint, or configure the AWS default chain (AWS_* variables, profile, "
            "web identity, instance role)"
        )
    return found


def default_region() -> str:
    """
    The region of botocore's configuration (C{AWS_DEFAULT_REGION}, the
    profile's C{region}), or C{""} (blocking: reads config files).
    """
    import botocore.session

    region = botocore.session.Session().get_config_variable("region")
    return str(region) if region else ""


def _frozen(credentials: Any) -> Any:
    return credentials.get_frozen_credentials()


class CredentialSource:
    """
    Hands out frozen credentials (C{access_key}, C{secret_key}, C{token}).

    The first call resolves in the thread runner; later calls answer from a
    cache on the reactor thread, going back to the thread runner only when
    botocore says a refresh is due (15 minutes before expiry), at most once
    per C{recheck} seconds.  Concurrent callers share one resolution; a
    failed resolution is remembered for C{retry_after} seconds, so a missing
    configuration does not start a thread per request.
    """

    recheck = 30.0
    retry_after = 5.0

    def __init__(
        self,
        settings: S3Settings,
        run_in_thread: ThreadRunner,
        clock: IReactorTime,
        resolver: Callable[[S3Settings], Any] = resolve,
    ) -> None:
        self._settings = settings
        self._thread = run_in_thread
        self._clock = clock
        self._resolver = resolver
        self._credentials: Any = None
        self._frozen: Any = None
        self._loaded_at = 0.0
        self._failure: tuple[float, BaseException] | None = None
        self._loading: Shared[Any] = Shared(self._load)

    def _fresh(self) -> bool:
        if self._frozen is None:
            return False
        if self._clock.seconds() - self._loaded_at < self.recheck:
            return True
        needed = getattr(self._credentials, "refresh_needed", None)
        return needed is None or not needed()

    def frozen(self) -> Deferred[Any]:
        """
        Fire with frozen credentials, or fail with L{CredentialsError}.
        Cancelling the result only abandons this caller's wait.
        """
        if self._fresh():
            d: Deferred[Any] = Deferred()
            d.callback(self._frozen)
            return d
        if self._frozen is None and self._failure is not None:
            when, error = self._failure
            if self._clock.seconds() - when < self.retry_after:
                failed: Deferred[Any] = Deferred()
                failed.errback(error)
                return failed
        return self._loading.wait()

    def _load_blocking(self) -> tuple[Any, Any]:
        credentials = self._credentials
        if credentials is None:
            credentials = self._resolver(self._settings)
        return credentials, _frozen(credentials)

    async def _load(self) -> Any:
        # One load however many wait (L{Shared}): its result or failure is
        # everyone's.
        try:
            credentials, frozen = await self._thread(self._load_blocking)
            if not frozen.access_key or not frozen.secret_key:
                raise CredentialsError("the credentials have no access key or no secret")
        except Exception as e:
            if self._frozen is not None:
                # A failed refresh: keep what we have (botocore keeps it too
                # until the mandatory refresh window).
                _log.warn("Could not refresh AWS credentials", reason=str(e))
                return self._frozen
            self._failure = (self._clock.seconds(), e)
            raise
        self._credentials, self._frozen = credentials, frozen
        self._loaded_at = self._clock.seconds()
        self._failure = None
        return frozen

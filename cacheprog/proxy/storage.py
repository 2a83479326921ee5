# -*- test-case-name: tests.unit.test_storage -*-
"""
C{/cache/{hex}}: the HTTP storage protocol of
L{cacheprog.remote.httpcontract} over any L{RemoteStore} (like the Go
reference's C{pkg/httpstorage}), and the checks of its requests.

L{StorageResource} is public and reusable: mount it in any
L{twisted.web.server.Site} to serve a store.  Under the proxy's site
(L{cacheprog.proxy.site.build_site}) request bodies are hashed while they
arrive (L{HashingFile}) and refused from their headers alone
(L{screen_storage}); elsewhere they are hashed after.

Strict, so that nothing bad is ever stored: the key is
exactly 64 lowercase hex digits; C{Content-Length}, C{X-Cacheprog-OutputID},
C{X-Cacheprog-MD5Sum}, C{X-Cacheprog-Sha256Sum} and
C{X-Cacheprog-UncompressedSize} are required and well formed; and the body's
MD5 and SHA-256 must match their headers.  Any refusal is a 4xx and stores
nothing.  C{Last-Modified} is sent in GMT.  A client that goes away cancels
the store call it was waiting for.
"""

from __future__ import annotations

import hashlib
from typing import IO, Any

from twisted.internet.defer import CancelledError
from twisted.web.http_headers import Headers

from cacheprog.compression import MAX_OBJECT
from cacheprog.interfaces import NotFound, RemoteObject, RemoteStore, Unavailable, UploadObject
from cacheprog.log import Logger
from cacheprog.proxy.web import JobResource, Pacer, WebRequest, abort, header, plain, read_all, write_paced
from cacheprog.remote import httpcontract as contract

_log = Logger("proxy")

#: Bodies from this size on are handed to the store as their temporary file.
BIG = 1 << 20

METHODS = (b"GET", b"HEAD", b"PUT")


class HashingFile:
    """
    A request body file that computes MD5 and SHA-256 as the body arrives.
    """

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        self.sha256.update(data)
        self.size += len(data)
        return self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _digests(content: IO[bytes]) -> tuple[bytes, bytes, int]:
    """
    MD5, SHA-256 and size of a request body, from the hashing file or by
    reading it.
    """
    if isinstance(content, HashingFile):
        return content.md5.digest(), content.sha256.digest(), content.size
    md5, sha256, size = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    content.seek(0)
    for block in iter(lambda: content.read(1 << 16), b""):
        md5.update(block)
        sha256.update(block)
        size += len(block)
    content.seek(0)
    return md5.digest(), sha256.digest(), size


async def close_body(obj: RemoteObject) -> None:
    """
    Release a body that will not be read (HEAD, a client gone).
    """
    await obj.body.aclose()


def _lie(compression: str, output_id: bytes, sha256: bytes) -> str:
    """
    Why a PUT can never be a good object: a raw body is the output itself,
    so its SHA-256 must be its OutputID (clients would miss on it for ever).
    """
    if compression == "" and sha256 != output_id:
        return f"{contract.SHA256_SUM} of a raw body must equal its {contract.OUTPUT_ID}"
    return ""


def screen_storage(method: bytes, headers: Headers, length: int | None) -> tuple[int, str] | None:
    """
    What can be refused of a storage request from its headers alone (before
    its body is read): a PUT without a length or beyond the largest object,
    with missing or malformed storage headers, or a raw body that cannot be
    its OutputID.
    """
    if method != b"PUT":
        return None
    if length is None:
        return 411, "a PUT needs a Content-Length"
    if length > MAX_OBJECT:
        return 413, f"objects are limited to {MAX_OBJECT} bytes"

    def get(name: str) -> str | None:
        values = headers.getRawHeaders(name.encode("latin-1"))
        return values[0].decode("latin-1") if values else None

    try:
        output_id = contract.parse_hex(contract.OUTPUT_ID, get(contract.OUTPUT_ID), contract.ID_SIZE)
        contract.parse_hex(contract.MD5_SUM, get(contract.MD5_SUM), contract.MD5_SIZE)
        sha256 = contract.parse_hex(contract.SHA256_SUM, get(contract.SHA256_SUM), contract.ID_SIZE)
        compression = contract.parse_compression(get(contract.COMPRESSION))
        size = contract.parse_size(contract.UNCOMPRESSED_SIZE, get(contract.UNCOMPRESSED_SIZE))
    except contract.ContractError as e:
        return 400, str(e)
    if size > MAX_OBJECT:
        return 413, f"objects are limited to {MAX_OBJECT} bytes"
    problem = _lie(compression, output_id, sha256)
    return (400, problem) if problem else None


class StorageResource(JobResource):
    """
    C{GET}, C{HEAD} and C{PUT} of C{/{hex}} below where it is mounted, over
    C{store}.  Other methods get 405; other paths 404.

    @param store: any L{RemoteStore}; L{DisabledStore} gives GET 404, PUT 200.
    """

    isLeaf = True

    def __init__(self, store: RemoteStore) -> None:
        super().__init__()
        self._store = store

    def render(self, request: WebRequest) -> bytes | int:
        if len(request.postpath) != 1 or not request.postpath[0]:
            return plain(request, 404, "404 page not found")
        try:
            key = contract.parse_key(request.postpath[0])
        except contract.ContractError as e:
            return plain(request, 400 if request.method in METHODS else 404, f"failed to decode actionID: {e}")
        if request.method in (b"GET", b"HEAD"):
            return self._start(request, self._get(request, key, head=request.method == b"HEAD"))
        if request.method == b"PUT":
            return self._put(request, key)
        request.setHeader(b"allow", b"GET, HEAD, PUT")
        return plain(request, 405, "Method Not Allowed")

    # GET and HEAD

    async def _get(self, request: WebRequest, key: bytes, head: bool) -> None:
        try:
            obj = await self._store.get(key)
        except NotFound:
            request.write(plain(request, 404))
            request.finish()
            return
        except Unavailable:
            request.write(plain(request, 503, "remote storage is switched off after repeated errors"))
            request.finish()
            return
        except CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the client gets the text, as from the reference
            _log.warn("Failed to get from remote storage", action_id=key.hex(), reason=repr(e))
            request.write(plain(request, 500, str(e) or repr(e)))
            request.finish()
            return
        try:
            request.setResponseCode(200)
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(contract.CONTENT_LENGTH, str(obj.stored_size))
            request.setHeader(contract.LAST_MODIFIED, contract.format_http_date(obj.mtime))
            request.setHeader(contract.OUTPUT_ID, obj.output_id.hex())
            request.setHeader(contract.COMPRESSION, obj.compression)
            request.setHeader(contract.UNCOMPRESSED_SIZE, str(obj.size))
            if head:
                request.finish()
                return
            await self._stream(request, obj)
        finally:
            await close_body(obj)

    async def _stream(self, request: WebRequest, obj: RemoteObject) -> None:
        pacer = Pacer()
        request.registerProducer(pacer, True)
        sent = 0
        try:
            async for chunk in obj.body:
                sent += len(chunk)
                if sent > obj.stored_size:
                    await close_body(obj)
                    break
                await write_paced(request, pacer, chunk)
        finally:
            if getattr(request, "channel", None) is not None:  # None once the client is gone
                request.unregisterProducer()
        if sent != obj.stored_size:
            # Headers promised another length: the client must see a broken
            # response, not a short or long one.
            _log.error(
                "Stored object has another size than its metadata",
                action_id=request.postpath[0].decode("latin-1"),
                sent=sent,
                expected=obj.stored_size,
            )
            abort(request)
            return
        request.finish()

    # PUT

    def _put(self, request: WebRequest, key: bytes) -> bytes | int:
        try:
            length = contract.parse_size(contract.CONTENT_LENGTH, header(request, contract.CONTENT_LENGTH))
            output_id = contract.parse_hex(contract.OUTPUT_ID, header(request, contract.OUTPUT_ID), contract.ID_SIZE)
            md5 = contract.parse_hex(contract.MD5_SUM, header(request, contract.MD5_SUM), contract.MD5_SIZE)
            sha256 = contract.parse_hex(contract.SHA256_SUM, header(request, contract.SHA256_SUM), contract.ID_SIZE)
            compression = contract.parse_compression(header(request, contract.COMPRESSION))
            size = contract.parse_size(contract.UNCOMPRESSED_SIZE, header(request, contract.UNCOMPRESSED_SIZE))
        except contract.ContractError as e:
            return plain(request, 400, str(e))
        problem = _lie(compression, output_id, sha256)
        if problem:
            return plain(request, 400, problem)
        content = request.content
        got_md5, got_sha256, got_size = _digests(content)
        if got_size != length:
            return plain(request, 400, f"body has {got_size} bytes, Content-Length says {length}")
        if got_md5 != md5:
            return plain(request, 400, f"{contract.MD5_SUM} does not match the body")
        if got_sha256 != sha256:
            return plain(request, 400, f"{contract.SHA256_SUM} does not match the body")

        async def store() -> None:
            if length >= BIG:
                # Big bodies stay in their temp file: a 1 GiB PUT must not
                # be a 1 GiB process.
                obj = UploadObject(key, output_id, size, compression, b"", md5, sha256, file=content, file_size=length)
            else:
                obj = UploadObject(key, output_id, size, compression, read_all(content), md5, sha256)
            try:
                await self._store.put(obj)
            except Unavailable:
                message = "remote storage is switched off after repeated errors"
                request.write(plain(request, 503, message))
            except CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the client gets the text
                _log.warn("Failed to put to remote storage", action_id=key.hex(), reason=repr(e))
                request.write(plain(request, 500, str(e) or repr(e)))
            else:
                request.write(plain(request, 200))
            request.finish()

        return self._start(request, store())

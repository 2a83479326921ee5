# -*- test-case-name: tests.unit.test_readthrough -*-
"""
Read-through tiers (C{--s3-read-prefixes}, C{--dir-read-roots}): the safe
cache for pull requests.  A job reads its own store first, then each
trusted store in order (the main branch's prefix), and writes only to its
own, so an untrusted job can use the trusted cache but never poison it.

A hit from a trusted store is an ordinary remote object: the core checks
its SHA-256 against the OutputID like any other.

Deliberately only the L{RemoteStore} methods: no C{list_keys} (a listing of
the own prefix would answer "absent" for keys a trusted prefix holds) and no
blob/range methods, so presence listing and warm start stay off for a
read-through job rather than read or write the wrong prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

from cacheprog.interfaces import NotFound, RemoteObject, RemoteStore, UploadObject
from cacheprog.log import Logger

_log = Logger("readthrough")


class ReadThroughStore:
    """
    C{own} for everything, then C{trusted} (read only) for its misses.

    @ivar trusted_hits: gets answered by a trusted store.
    """

    def __init__(self, own: RemoteStore, trusted: Sequence[RemoteStore]) -> None:
        self.name = own.name
        self._own = own
        self._trusted = tuple(trusted)
        self.trusted_hits = 0

    async def get(self, action_id: bytes) -> RemoteObject:
        try:
            return await self._own.get(action_id)
        except NotFound:
            pass
        for store in self._trusted:
            try:
                obj = await store.get(action_id)
            except NotFound:
                continue
            self.trusted_hits += 1
            return obj
        raise NotFound(action_id.hex())

    async def put(self, obj: UploadObject) -> None:
        await self._own.put(obj)

    async def close(self) -> None:
        try:
            await self._own.close()
        finally:
            for store in self._trusted:
                await store.close()
        if self.trusted_hits:
            _log.info("Read-through hits from trusted storage", hits=self.trusted_hits)

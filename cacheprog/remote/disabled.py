"""
The null backend: no remote storage (the default).
"""

from __future__ import annotations

from cacheprog.interfaces import NotFound, RemoteObject, UploadObject


class DisabledStore:
    """
    Always misses, drops every upload.
    """

    name = "disabled"

    async def get(self, action_id: bytes) -> RemoteObject:
        raise NotFound(action_id.hex())

    async def put(self, obj: UploadObject) -> None:
        return None

    async def close(self) -> None:
        return None

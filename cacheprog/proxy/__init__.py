"""
The HTTP proxy (C{cacheprog proxy}, C{twistd -n cacheprog}): serves a remote
store over the HTTP storage protocol, for cacheprog clients using the C{http}
backend (a C{docker build} sidecar holding the real credentials).

L{cacheprog.proxy.storage} serves any store (L{StorageResource}),
L{cacheprog.proxy.blobs} the warm start's manifests and packs,
L{cacheprog.proxy.site} puts them on one site, L{cacheprog.proxy.tap} has
the options and the service.
"""

__all__: list[str] = []

"""
The HTTP proxy (C{cacheprog proxy}, C{twistd -n cacheprog}): serves a remote
store over the HTTP storage protocol, for cacheprog clients using the C{http}
backend (a C{docker build} sidecar holding the real credentials).

L{cacheprog.proxy.resource} has the web resources (L{StorageResource}
wraps any store), L{cacheprog.proxy.tap} the options and the service.
"""

__all__: list[str] = []

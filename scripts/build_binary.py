#!/usr/bin/env python3
"""
Build the one-file binary with Nuitka from C{build/nuitka.cfg} (C{make binary}).

    python scripts/build_binary.py [--config build/nuitka.cfg] [--output dist/cacheprog]
                                   [-- EXTRA-NUITKA-OPTION ...]

The configuration has one Nuitka option per line; C{#} starts a comment at the
start of a line or after a blank.  Placeholders:

 - C{@BOTOCORE_DATA@}: the installed C{botocore/data} directory;
 - C{@REPO@}: this checkout.

Nuitka runs from the checkout (relative paths in the configuration are
relative to it) and compiles the C{cacheprog} package.  The result is copied
to C{--output} atomically (a temporary name, then a rename), so a binary that
is running or being tested is never half-written.  The script prints the
wall time, the peak memory of the largest build process (the C compiler or
Nuitka itself) and the size of the result.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_options(path: str, placeholders: dict[str, str]) -> list[str]:
    """
    The options of a configuration file, comments dropped, placeholders
    replaced.
    """
    options = []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = re.sub(r"(^|\s)#.*$", "", raw).strip()
            if not line:
                continue
            for name, value in placeholders.items():
                line = line.replace(f"@{name}@", value)
            leftover = re.search(r"@[A-Z_]+@", line)
            if leftover:
                raise SystemExit(f"{path}:{number}: unknown placeholder {leftover.group(0)}")
            if not line.startswith("--"):
                raise SystemExit(f"{path}:{number}: not an option: {line!r}")
            options.append(line)
    return options


def placeholders() -> dict[str, str]:
    import botocore

    return {
        "BOTOCORE_DATA": os.path.join(os.path.dirname(os.path.abspath(botocore.__file__)), "data"),
        "REPO": REPO,
    }


def option_value(options: list[str], name: str, default: str) -> str:
    value = default
    for option in options:
        if option.startswith(f"--{name}="):
            value = option.split("=", 1)[1]
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(REPO, "build", "nuitka.cfg"))
    parser.add_argument("--output", default=os.path.join(REPO, "dist", "cacheprog"))
    parser.add_argument("extra", nargs="*", help="more Nuitka options, after the configuration's")
    args = parser.parse_args(argv)

    options = read_options(args.config, placeholders()) + args.extra
    out_dir = os.path.join(REPO, option_value(options, "output-dir", "."))
    name = option_value(options, "output-filename", "cacheprog")
    command = [sys.executable, "-m", "nuitka", *options, "cacheprog"]
    print("+ " + " ".join(command), flush=True)
    start = time.monotonic()
    done = subprocess.run(command, cwd=REPO, check=False)
    elapsed = time.monotonic() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode != 0:
        print(f"build_binary: Nuitka failed (exit {done.returncode}) after {elapsed:.0f} s", file=sys.stderr)
        return done.returncode

    built = os.path.join(out_dir, name)
    target = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.tmp-{os.getpid()}"
    shutil.copy2(built, temporary)
    os.replace(temporary, target)
    size_mib = os.path.getsize(target) / (1 << 20)
    print(
        f"build_binary: {os.path.relpath(target, REPO)}: {size_mib:.1f} MiB,"
        f" built in {elapsed:.0f} s, peak RSS of one build process {peak_mib:.0f} MiB",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""
Nuitka user plugin (C{--user-plugin=scripts/nuitka_onefile_cache.py} in
C{build/nuitka.cfg}): a one-file binary that unpacks once per build and then
starts like a standalone one, safely when many start at the same time.

go starts cacheprog once per go command, so start-up latency matters.  A
Nuitka one-file binary unpacks its payload before Python starts: into a new
temporary directory on every start by default (~75 MB written and deleted per
go command), or, with a static C{--onefile-tempdir-spec} ("cached" mode), into
a fixed directory where Nuitka 4.2.2 still decompresses the whole payload and
CRC-checks every unpacked file on every start, and rewrites in place (truncate,
write) any file whose checksum differs, for instance one that a concurrent
first start is still writing, while a third process may already run from it.

This plugin patches the bootstrap (C{OnefileBootstrap.c}, checked against
Nuitka 4.2.2, the pinned version: a missing anchor stops the build) in cached
mode only:

 1. The unpack directory is the spec plus C{/<version>-<payload hash>}: one
    directory per distinct payload, so a directory's files never need to
    change once complete.
 2. Fast path: if C{<dir>/.unpacked} exists, the payload is not read at all.
 3. Slow path: take an exclusive C{flock} on C{<dir>/.lock}, check the marker
    again (another process may have finished meanwhile), unpack (Nuitka's
    loop, which repairs files a killed process left half-written), C{syncfs},
    then create the marker with an atomic rename, release the lock.  No process
    runs from a directory before its marker exists, and no process writes to
    a directory after it exists, so a running process never sees a file change.
 4. The bootstrap C{exec}s the Python program instead of forking it and
    waiting: there is nothing to clean up in cached mode, so the go command
    talks to (and signals) the Python process directly, its exit status is
    passed through unchanged (Nuitka's parent turns a child killed by a signal
    into exit status 0), and SIGTERM is not turned into SIGINT followed by a
    SIGKILL after the grace time.

A directory that cannot be created or locked fails as in Nuitka (an error
message naming the path, exit 2); a marker that cannot be written only costs
the next start another unpack.  Old directories are not removed (one per
build, ~75 MB each): C{rm -rf ~/.cache/cacheprog} is always safe while no
cacheprog runs.

Before the payload is hashed, the shared libraries lose their debug sections
(C{strip --strip-debug}).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from typing import Any

from nuitka.freezer.IncludedEntryPoints import getStandaloneMainEntryPoint
from nuitka.options.Options import isOnefileTempDirMode
from nuitka.plugins.PluginBase import NuitkaPluginBase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (anchor, replacement); "{anchor}" in the replacement stands for the anchor.
_PATCHES: tuple[tuple[str, str], ...] = (
    (
        "#if defined(__OpenBSD__) || defined(_AIX) || defined(_NUITKA_EXPERIMENTAL_FORCE_UNIX_BINARY_NAME)\n",
        """#if _NUITKA_ONEFILE_TEMP_BOOL == 0 && !defined(_WIN32)
#include <fcntl.h>
#include <sys/file.h>
#define CACHEPROG_PAYLOAD_ID "@PAYLOAD_ID@"
#define CACHEPROG_MAIN_FILENAME "@MAIN_FILENAME@"
#define CACHEPROG_MARKER "/.unpacked"

static int cacheprog_lock_fd = -1;

static void cacheprogPath(char *target, size_t size, char const *suffix) {
    target[0] = 0;
    appendStringSafeFilename(target, payload_path, size);
    appendStringSafeFilename(target, suffix, size);
}

static bool cacheprogUnpacked(void) {
    char marker[4096];
    cacheprogPath(marker, sizeof(marker), CACHEPROG_MARKER);
    return access(marker, F_OK) == 0;
}

static void cacheprogLock(void) {
    char lock[4096];
    cacheprogPath(lock, sizeof(lock), "/.lock");
    createContainingDirectory(lock);
    cacheprog_lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (cacheprog_lock_fd == -1) {
        fatalIOError("Error, couldn't create the unpack lock file.", errno);
    }
    while (flock(cacheprog_lock_fd, LOCK_EX) == -1) {
        if (errno != EINTR) {
            fatalIOError("Error, couldn't lock the unpack directory.", errno);
        }
    }
}

static void cacheprogUnlock(void) {
    if (cacheprog_lock_fd != -1) {
        close(cacheprog_lock_fd);
        cacheprog_lock_fd = -1;
    }
}

static void cacheprogMarkUnpacked(void) {
    char marker[4096];
    char temporary[4096];
    char suffix[64];
    cacheprogPath(marker, sizeof(marker), CACHEPROG_MARKER);
    snprintf(suffix, sizeof(suffix), CACHEPROG_MARKER ".%ld", (long)getpid());
    cacheprogPath(temporary, sizeof(temporary), suffix);
    syncfs(cacheprog_lock_fd);
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1) {
        return;
    }
    bool ok = write(fd, CACHEPROG_PAYLOAD_ID "\\n", sizeof(CACHEPROG_PAYLOAD_ID)) == sizeof(CACHEPROG_PAYLOAD_ID);
    ok = fsync(fd) == 0 && ok;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(temporary, marker) != 0) {
        unlink(temporary);
    }
}
#endif

{anchor}""",
    ),
    (
        "    bool bool_res = expandTemplatePathFilename(payload_path, pattern,"
        " sizeof(payload_path) / sizeof(filename_char_t));\n",
        """{anchor}
#if _NUITKA_ONEFILE_TEMP_BOOL == 0 && !defined(_WIN32)
    appendStringSafeFilename(payload_path, "/" CACHEPROG_PAYLOAD_ID, sizeof(payload_path) / sizeof(filename_char_t));
#endif
""",
    ),
    (
        '    NUITKA_PRINT_TIMING("ONEFILE: Checking header for compression.");\n',
        """#if _NUITKA_ONEFILE_TEMP_BOOL == 0 && !defined(_WIN32)
#ifndef _NUITKA_ONEFILE_MAIN_FILENAME
    cacheprogPath(first_filename, sizeof(first_filename) / sizeof(filename_char_t), "/" CACHEPROG_MAIN_FILENAME);
#endif
    static filename_char_t cacheprog_main_filename[4096];
    copyStringSafeFilename(cacheprog_main_filename, first_filename,
                           sizeof(cacheprog_main_filename) / sizeof(filename_char_t));
    if (cacheprogUnpacked()) {
        goto cacheprog_unpacked;
    }
    cacheprogLock();
    if (cacheprogUnpacked()) {
        cacheprogUnlock();
        goto cacheprog_unpacked;
    }
#ifndef _NUITKA_ONEFILE_MAIN_FILENAME
    // The loop below sets it again, from the payload's first entry.
    first_filename[0] = 0;
#endif
#endif
{anchor}""",
    ),
    (
        '    NUITKA_PRINT_TIMING("ONEFILE: Finishing decompression, cleanup payload.");\n',
        """#if _NUITKA_ONEFILE_TEMP_BOOL == 0 && !defined(_WIN32)
    // Only a payload whose main program is where the fast path looks for it
    // gets the marker; otherwise every start keeps unpacking (slow, correct).
    if (strcmpFilename(first_filename, cacheprog_main_filename) == 0) {
        cacheprogMarkUnpacked();
    }
    cacheprogUnlock();
#endif
{anchor}""",
    ),
    (
        "#if _NUITKA_ONEFILE_COMPRESSION_BOOL == 1\n    releaseZSTD();\n#endif\n",
        """{anchor}
#if _NUITKA_ONEFILE_TEMP_BOOL == 0 && !defined(_WIN32)
cacheprog_unpacked:;
#endif
""",
    ),
    (
        "    pid_t pid = fork();\n",
        """#if _NUITKA_ONEFILE_TEMP_BOOL == 0
    // Nothing to clean up afterwards: become the Python program.  Without a
    // parent there is nothing for the child's parent monitor to watch.
    unsetEnvironmentVariable("NUITKA_ONEFILE_PARENT");
    argv[0] = (char *)getBinaryPath();
    for (int cacheprog_try = 0; cacheprog_try < 10; cacheprog_try++) {
        execv(fork_binary, argv);
        if (errno != ETXTBSY) {
            break;
        }
        usleep(100000);
    }
    fatalErrorChild("Error, couldn't launch child (exec)", errno);
#endif
{anchor}""",
    ),
)


def payload_id(dist_dir: str) -> str:
    """
    C{<cacheprog version>-<16 hex digits>}: a hash of every file of the
    distribution folder (relative path, kind, executable bit, content).
    """
    digest = hashlib.sha256()
    for directory, dirnames, filenames in os.walk(dist_dir):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, dist_dir).encode()
            if os.path.islink(path):
                digest.update(b"L" + relative + b"\0" + os.readlink(path).encode() + b"\0")
                continue
            executable = b"x" if os.access(path, os.X_OK) else b"-"
            digest.update(b"F" + relative + b"\0" + executable + str(os.path.getsize(path)).encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return f"{_version()}-{digest.hexdigest()[:16]}"


def _version() -> str:
    with open(os.path.join(REPO, "cacheprog", "__init__.py"), encoding="utf-8") as f:
        found = re.search(r'^__version__ = "([^"]+)"', f.read(), re.MULTILINE)
    return found.group(1) if found else "0"


def patch_bootstrap(source: str, payload: str, main_filename: str) -> str:
    """
    The bootstrap source with the patches applied.

    @raise ValueError: an anchor is missing or not unique (another Nuitka).
    """
    for anchor, replacement in _PATCHES:
        if source.count(anchor) != 1:
            raise ValueError(f"anchor found {source.count(anchor)} times, expected once: {anchor!r}")
        text = replacement.replace("{anchor}", anchor)
        text = text.replace("@PAYLOAD_ID@", payload).replace("@MAIN_FILENAME@", main_filename)
        source = source.replace(anchor, text)
    return source


class CacheprogOnefileCache(NuitkaPluginBase):  # type: ignore[misc]
    plugin_name = "cacheprog-onefile-cache"
    plugin_desc = "Cached one-file unpacking: once per payload, locked, marked complete; exec instead of fork."

    def __init__(self) -> None:
        self.payload: str | None = None

    @staticmethod
    def isAlwaysEnabled() -> bool:
        return True

    def onStandaloneDistributionFinished(self, dist_dir: str) -> None:
        self._strip_debug_info(dist_dir)
        self.payload = payload_id(dist_dir)
        self.info(f"Payload id {self.payload}.")

    def _strip_debug_info(self, dist_dir: str) -> None:
        """
        Drop the debug sections of the shared libraries (wheels ship some
        with them: zstandard's backend_c has 10 MB): ~4 MB less in the
        binary, ~20 MB less unpacked.  Symbols stay (C{--strip-debug}).
        """
        strip = shutil.which("strip")
        if strip is None:
            self.warning("no strip command (binutils): shared libraries keep their debug information")
            return
        libraries = [
            os.path.join(directory, name)
            for directory, _, names in os.walk(dist_dir)
            for name in names
            if name.endswith(".so") or ".so." in name
        ]
        before = sum(os.path.getsize(p) for p in libraries)
        for path in libraries:
            subprocess.run([strip, "--strip-debug", path], check=True)
        after = sum(os.path.getsize(p) for p in libraries)
        self.info(f"Stripped debug information from {len(libraries)} libraries: {before >> 20} -> {after >> 20} MiB.")

    def onGeneratedSourceCode(self, source_dir: str, onefile: bool) -> None:
        if not onefile:
            return
        if isOnefileTempDirMode():
            self.sysexit("needs a static --onefile-tempdir-spec (cached mode)")
        if self.payload is None:
            self.sysexit("the distribution folder was not seen before the onefile build")
        main: Any = getStandaloneMainEntryPoint()
        path = os.path.join(source_dir, "static_src", "OnefileBootstrap.c")
        with open(path, encoding="utf-8") as f:
            source = f.read()
        try:
            patched = patch_bootstrap(source, self.payload, main.dest_path)
        except ValueError as e:
            self.sysexit(f"cannot patch {path} (Nuitka is pinned to 4.2.2): {e}")
        # Nuitka provides the file as a symbolic link into its installation:
        # replace the link, never write through it.
        temporary = path + ".cacheprog"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(patched)
        os.replace(temporary, path)
        self.info("Patched the onefile bootstrap: unpack once per payload, then exec.")

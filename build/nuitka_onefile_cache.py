"""
Nuitka user plugin (C{--user-plugin=build/nuitka_onefile_cache.py} in
C{build/nuitka.cfg}): a one-file binary that needs nothing from the image it
runs in, unpacks once per build and then starts like a standalone one,
safely when many start at the same time.

go starts cacheprog once per go command, so start-up latency matters.  A
Nuitka one-file binary unpacks its payload before Python starts: into a new
temporary directory on every start by default (~75 MB written and deleted per
go command), or, with a static C{--onefile-tempdir-spec} ("cached" mode), into
a fixed directory where Nuitka 4.2.2 still decompresses the whole payload and
CRC-checks every unpacked file on every start, and rewrites in place (truncate,
write) any file whose checksum differs, for instance one that a concurrent
first start is still writing, while a third process may already run from it.

Users copy the binary into any image (Alpine's musl, distroless, scratch), so
the C runtime travels inside: the payload carries the glibc loader and every
library outside the distribution folder that its programs link (C{ldd}),
plus C{libgcc_s} (glibc loads it to unwind exiting threads) and the C.UTF-8
locale (C{LOCPATH}: Nuitka's start-up aborts when C{LANG} names a locale the
image lacks and C.UTF-8 is missing too, as in scratch and Alpine images), and the
bootstrap is linked statically.  Python itself cannot be rebuilt against
musl here, so this is the way to need nothing from the image: the bootstrap
starts the program through the bundled loader (C{ld-linux-x86-64.so.2
--library-path <dir>/glibc --argv0 <argv0> <dir>/cacheprog.bin ...}).  The
loader sits next to C{cacheprog.bin}, so the program, which finds its files
from C{/proc/self/exe}, sees the same directory.

This plugin patches the bootstrap (C{OnefileBootstrap.c}, checked against
Nuitka 4.2.2, the pinned version: a missing anchor stops the build) in cached
mode only:

 1. The unpack directory is chosen without the C library's user database
    (a static binary must not load NSS modules from the image): the first
    usable of C{$XDG_CACHE_HOME/cacheprog} (if absolute),
    C{$HOME/.cache/cacheprog} (if absolute) and C{/tmp/cacheprog-<uid>} (created
    0700, used only if it is a directory owned by us that nobody else can
    write), plus C{/<version>-<payload hash>}: one directory per distinct
    payload, so a directory's files never need to change once complete.
    "Usable" means complete already (read-only is fine) or creatable and
    writable: an unwritable or missing home falls back to /tmp.  No usable
    directory: an error message naming the candidates, exit 2.
 2. Fast path: if C{<dir>/.unpacked} exists, the payload is not read at all.
 3. Slow path: take an exclusive C{flock} on C{<dir>/.lock}, check the marker
    again (another process may have finished meanwhile), unpack (Nuitka's
    loop, which repairs files a killed process left half-written), C{syncfs},
    then create the marker with an atomic rename, release the lock.  No process
    runs from a directory before its marker exists, and no process writes to
    a directory after it exists, so a running process never sees a file change.
 4. The bootstrap C{exec}s the Python program (through the bundled loader)
    instead of forking it and waiting: there is nothing to clean up in cached
    mode, so the go command talks to (and signals) the Python process
    directly, its exit status is passed through unchanged (Nuitka's parent
    turns a child killed by a signal into exit status 0), and SIGTERM is not
    turned into SIGINT followed by a SIGKILL after the grace time.

A marker that cannot be written only costs the next start another unpack.
Old directories are not removed (one per build, ~75 MB each): C{rm -rf
~/.cache/cacheprog} is always safe while no cacheprog runs.

Before the payload is hashed, the shared libraries lose their debug sections
(C{strip --strip-debug}).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from typing import Any, NamedTuple

from nuitka.freezer.IncludedEntryPoints import getStandaloneMainEntryPoint
from nuitka.options.Options import isOnefileTempDirMode
from nuitka.plugins.PluginBase import NuitkaPluginBase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (anchor, replacement); "{anchor}" in the replacement stands for the anchor.
_PATCHES: tuple[tuple[str, str], ...] = (
    # Nuitka prints its fatal errors with puts(): on stdout, which is the go
    # command's protocol stream.  They belong on stderr.
    (
        "static void fatalError(char const *message) {\n    puts(message);\n",
        """static void fatalError(char const *message) {
    fprintf(stderr, "%s\\n", message);
""",
    ),
    (
        "#if defined(__OpenBSD__) || defined(_AIX) || defined(_NUITKA_EXPERIMENTAL_FORCE_UNIX_BINARY_NAME)\n",
        """#if _NUITKA_ONEFILE_TEMP_BOOL == 0 && !defined(_WIN32)
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#define CACHEPROG_PAYLOAD_ID "@PAYLOAD_ID@"
#define CACHEPROG_MAIN_FILENAME "@MAIN_FILENAME@"
#define CACHEPROG_MARKER "/.unpacked"
@LOADER_DEFINES@
static int cacheprog_lock_fd = -1;

static bool cacheprogMakeDirectories(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            int res = mkdir(path, 0700);
            *p = '/';
            if (res != 0 && errno != EEXIST) {
                return false;
            }
        }
    }
    return mkdir(path, 0700) == 0 || errno == EEXIST;
}

// Complete already (then read-only is fine), or creatable and writable.
static bool cacheprogUsable(char *directory) {
    char marker[4096];
    snprintf(marker, sizeof(marker), "%s" CACHEPROG_MARKER, directory);
    if (access(marker, F_OK) == 0) {
        return true;
    }
    return cacheprogMakeDirectories(directory) && access(directory, W_OK | X_OK) == 0;
}

// A directory in /tmp only if it is ours alone: another user must not be
// able to plant a payload there.
static bool cacheprogPrivateTemporary(char *base, size_t size) {
    snprintf(base, size, "/tmp/cacheprog-%ld", (long)geteuid());
    if (mkdir(base, 0700) != 0 && errno != EEXIST) {
        return false;
    }
    struct stat st;
    if (lstat(base, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
        fprintf(stderr, "cacheprog: %s is not a directory owned by uid %ld and closed to others: not used\\n", base,
                (long)geteuid());
        return false;
    }
    return true;
}

static bool cacheprogChooseDirectory(char *target, size_t size) {
    char candidates[3][4096];
    int count = 0;
    char const *xdg = getenv("XDG_CACHE_HOME");
    char const *home = getenv("HOME");
    if (xdg != NULL && xdg[0] == '/') {
        snprintf(candidates[count++], sizeof(candidates[0]), "%s/cacheprog/" CACHEPROG_PAYLOAD_ID, xdg);
    }
    if (home != NULL && home[0] == '/') {
        snprintf(candidates[count++], sizeof(candidates[0]), "%s/.cache/cacheprog/" CACHEPROG_PAYLOAD_ID,
                 strcmp(home, "/") == 0 ? "" : home);
    }
    for (int i = 0; i < count; i++) {
        if (cacheprogUsable(candidates[i])) {
            copyStringSafe(target, candidates[i], size);
            return true;
        }
    }
    char base[4096];
    if (cacheprogPrivateTemporary(base, sizeof(base))) {
        snprintf(candidates[count], sizeof(candidates[0]), "%s/" CACHEPROG_PAYLOAD_ID, base);
        if (cacheprogUsable(candidates[count])) {
            copyStringSafe(target, candidates[count], size);
            return true;
        }
    }
    fprintf(stderr,
            "cacheprog: no directory to unpack into: set XDG_CACHE_HOME (or HOME) to a writable directory;"
            " tried XDG_CACHE_HOME=%s HOME=%s and /tmp/cacheprog-%ld\\n",
            xdg ? xdg : "(unset)", home ? home : "(unset)", (long)geteuid());
    // Nuitka's own failure path aborts (a signal); go deserves an exit status.
    exit(2);
}

// Run the unpacked program; through the bundled loader when there is one.
static void cacheprogExec(char const *program, char **argv) {
    char **args = argv;
    char const *target = program;
#ifdef CACHEPROG_LOADER
    char loader[4096];
    char libraries[4096];
    snprintf(loader, sizeof(loader), "%s/" CACHEPROG_LOADER, payload_path);
    snprintf(libraries, sizeof(libraries), "%s/" CACHEPROG_LIBRARIES, payload_path);
    int count = 0;
    while (argv[count] != NULL) {
        count++;
    }
    args = (char **)calloc(count + 8, sizeof(char *));
    if (args == NULL) {
        fatalErrorMemory();
    }
    int n = 0;
    args[n++] = argv[0];
    args[n++] = (char *)"--library-path";
    args[n++] = libraries;
#ifdef CACHEPROG_LOADER_ARGV0
    args[n++] = (char *)"--argv0";
    args[n++] = argv[0];
#endif
    args[n++] = (char *)program;
    for (int i = 1; i < count; i++) {
        args[n++] = argv[i];
    }
    args[n] = NULL;
    target = loader;
    char locales[4096];
    snprintf(locales, sizeof(locales), "%s/" CACHEPROG_LIBRARIES "/locale", payload_path);
    if (access(locales, F_OK) == 0) {
        // The bundled C.UTF-8: Nuitka's start-up aborts without any usable locale.
        setenv("LOCPATH", locales, 1);
    }
#endif
    for (int attempt = 0; attempt < 10; attempt++) {
        execv(target, args);
        if (errno != ETXTBSY) {
            break;
        }
        usleep(100000);
    }
}

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
        """#if _NUITKA_ONEFILE_TEMP_BOOL == 0 && !defined(_WIN32)
    bool bool_res = cacheprogChooseDirectory(payload_path, sizeof(payload_path) / sizeof(filename_char_t));
#else
{anchor}#endif
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
    cacheprogExec(fork_binary, argv);
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


def patch_bootstrap(source: str, payload: str, main_filename: str, loader: Loader | None = None) -> str:
    """
    The bootstrap source with the patches applied.

    @param loader: the bundled C runtime, None to exec the program directly.
    @raise ValueError: an anchor is missing or not unique (another Nuitka).
    """
    defines = ""
    if loader is not None:
        defines = f'#define CACHEPROG_LOADER "{loader.name}"\n#define CACHEPROG_LIBRARIES "{LIBRARIES}"\n'
        if loader.argv0:
            defines += "#define CACHEPROG_LOADER_ARGV0 1\n"
    for anchor, replacement in _PATCHES:
        if source.count(anchor) != 1:
            raise ValueError(f"anchor found {source.count(anchor)} times, expected once: {anchor!r}")
        text = replacement.replace("{anchor}", anchor)
        text = text.replace("@PAYLOAD_ID@", payload).replace("@MAIN_FILENAME@", main_filename)
        text = text.replace("@LOADER_DEFINES@\n", defines)
        source = source.replace(anchor, text)
    return source


#: Where the bundled C libraries go, relative to the distribution folder.
LIBRARIES = "glibc"
#: Loaded at run time with dlopen, so ldd does not list them.
RUNTIME_LOADED = ("libgcc_s.so.1",)
#: The C.UTF-8 locale (glibc 2.35+, Debian's libc-bin), shipped in glibc/locale.
C_UTF8 = "/usr/lib/locale/C.utf8"


class Loader(NamedTuple):
    """
    The bundled dynamic loader: its file name in the distribution folder and
    whether it takes C{--argv0} (glibc 2.33 and later).
    """

    name: str
    argv0: bool


def _is_elf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def linked_outside(dist_dir: str) -> tuple[str, set[str]]:
    """
    The loader and the libraries outside C{dist_dir} that its ELF files
    link, as C{ldd} resolves them on this machine.
    """
    loader = ""
    outside: set[str] = set()
    top = os.path.realpath(dist_dir)
    for directory, _, names in os.walk(dist_dir):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.islink(path) or not _is_elf(path):
                continue
            done = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
            for line in done.stdout.splitlines():
                found = re.match(r"\s*(\S+)(?: => (\S+))? \(0x", line)
                if found is None:
                    if "not found" in line:
                        raise RuntimeError(f"{path}: {line.strip()}")
                    continue
                target = found.group(2) or found.group(1)
                if not target.startswith("/"):
                    continue  # linux-vdso.so.1
                if found.group(2) is None:
                    loader = target
                elif not os.path.realpath(target).startswith(top + os.sep):
                    outside.add(target)
    return loader, outside


def bundle_c_runtime(dist_dir: str) -> Loader:
    """
    Copy the loader into C{dist_dir} (next to the program) and the C
    libraries it needs into C{dist_dir/glibc}.
    """
    loader, libraries = linked_outside(dist_dir)
    if not loader:
        raise RuntimeError("ldd named no dynamic loader")
    for name in RUNTIME_LOADED:
        found = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=False)
        path = found.stdout.strip()
        if found.returncode == 0 and os.path.isabs(path):
            libraries.add(path)
    target = os.path.join(dist_dir, LIBRARIES)
    os.makedirs(target, exist_ok=True)
    for path in sorted(libraries):
        shutil.copyfile(path, os.path.join(target, os.path.basename(path)))
    if os.path.isdir(C_UTF8):
        # Nuitka's start-up converts paths with the environment's locale and,
        # failing that, C.UTF-8; with neither installed (LANG=C.UTF-8 in a
        # scratch or Alpine image) it aborts.  The bootstrap points LOCPATH here.
        shutil.copytree(C_UTF8, os.path.join(target, "locale", os.path.basename(C_UTF8)), dirs_exist_ok=True)
    name = os.path.basename(loader)
    shutil.copyfile(loader, os.path.join(dist_dir, name))
    os.chmod(os.path.join(dist_dir, name), 0o755)
    usage = subprocess.run([loader, "--help"], capture_output=True, text=True, check=False).stdout
    return Loader(name=name, argv0="--argv0" in usage)


class CacheprogOnefileCache(NuitkaPluginBase):  # type: ignore[misc]
    plugin_name = "cacheprog-onefile-cache"
    plugin_desc = "Cached one-file unpacking: once per payload, locked, marked complete; exec instead of fork."

    def __init__(self) -> None:
        self.payload: str | None = None
        self.loader: Loader | None = None

    @staticmethod
    def isAlwaysEnabled() -> bool:
        return True

    def onStandaloneDistributionFinished(self, dist_dir: str) -> None:
        if os.environ.get("CACHEPROG_BUNDLE_LIBC", "1") != "0":
            try:
                self.loader = bundle_c_runtime(dist_dir)
            except (OSError, RuntimeError) as e:
                self.sysexit(f"cannot bundle the C runtime: {e}")
            bundled = sorted(os.listdir(os.path.join(dist_dir, LIBRARIES)))
            self.info(f"Bundled the C runtime: {self.loader.name}, {LIBRARIES}/: {' '.join(bundled)}.")
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
            patched = patch_bootstrap(source, self.payload, main.dest_path, self.loader)
        except ValueError as e:
            self.sysexit(f"cannot patch {path} (Nuitka is pinned to 4.2.2): {e}")
        # Nuitka provides the file as a symbolic link into its installation:
        # replace the link, never write through it.
        temporary = path + ".cacheprog"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(patched)
        os.replace(temporary, path)
        if self.loader is not None:
            # The bootstrap runs before anything is unpacked: it must need
            # nothing from the image either.  The backend is linked already.
            os.environ["LDFLAGS"] = (os.environ.get("LDFLAGS", "") + " -static").strip()
        self.info("Patched the onefile bootstrap: unpack once per payload, then exec.")

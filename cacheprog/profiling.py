"""
C{--cpu-profile} (cProfile, readable with C{python -m pstats} or snakeviz) and
C{--mem-profile} (a tracemalloc snapshot).  C{--trace-profile} and C{--fgprof}
are Go-runtime profiles with no Python equivalent: accepted, with a warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cacheprog.log import Logger

if TYPE_CHECKING:
    from cacheprog.settings import Common

_log = Logger("profiling")


class Profiles:
    """
    The profilers of one run; L{stop} writes their files.
    """

    def __init__(self, cpu_path: str, mem_path: str) -> None:
        self._cpu_path = cpu_path
        self._mem_path = mem_path
        self._cpu: Any = None

    @classmethod
    def start(cls, common: Common) -> Profiles:
        for flag in common.go_profiles:
            _log.warn("This profile exists only in the Go implementation; ignored", option=flag)
        profiles = cls(common.cpu_profile, common.mem_profile)
        if profiles._cpu_path:
            import cProfile

            profiles._cpu = cProfile.Profile()
            profiles._cpu.enable()
        if profiles._mem_path:
            import tracemalloc

            tracemalloc.start()
        return profiles

    def stop(self) -> None:
        if self._cpu is not None:
            self._cpu.disable()
            self._cpu.dump_stats(self._cpu_path)
        if self._mem_path:
            import tracemalloc

            tracemalloc.take_snapshot().dump(self._mem_path)
            current, peak = tracemalloc.get_traced_memory()
            _log.debug("Memory at exit", current_bytes=current, peak_bytes=peak)
            tracemalloc.stop()

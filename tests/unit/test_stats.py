"""
Tests for L{cacheprog.stats}: the statistics line and the run log record.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.stats import Stats

BUSY = Stats(
    gets=10,
    local_hits=4,
    remote_hits=3,
    misses=3,
    instant_misses=1,
    remote_timeouts=1,
    remote_faults=2,
    upload_faults=1,
    corrupt=1,
    puts=5,
    put_bytes=500,
    uploads=4,
    uploads_dropped=1,
    bytes_up=300,
    bytes_down=700,
    remote_wait=1.23456,
)


class StatsTests(SynchronousTestCase):
    def test_line(self) -> None:
        """
        The reference's four fields come first; faults of gets and uploads
        are one count; the wait is in seconds with a unit.
        """
        self.assertEqual(
            BUSY.summary(),
            "get_calls=10 get_hits=7 get_hit_ratio=0.70 put_calls=5 local_hits=4 remote_hits=3 misses=3"
            " instant_misses=1 put_bytes=500 uploads=4 bytes_up=300 bytes_down=700 remote_wait=1.235s"
            " remote_timeouts=1 remote_faults=3 corrupt_objects=1 uploads_dropped=1 uploads_skipped=0"
            " manifest=off prefetched=0 prefetch_waits=0 packs_written=0 manifest_written=false",
        )

    def test_idle_ratio(self) -> None:
        self.assertEqual(Stats().fields()[2], ("get_hit_ratio", "0.00"))

    def test_record(self) -> None:
        """
        The run log gets numbers, in a fixed order, under the line's names
        where the line has them.
        """
        self.assertEqual(
            list(BUSY.record().items()),
            [
                ("gets", 10),
                ("local_hits", 4),
                ("remote_hits", 3),
                ("misses", 3),
                ("puts", 5),
                ("put_bytes", 500),
                ("uploads", 4),
                ("bytes_up", 300),
                ("bytes_down", 700),
                ("remote_wait", 1.235),
                ("remote_timeouts", 1),
                ("remote_faults", 3),
                ("corrupt_objects", 1),
                ("uploads_dropped", 1),
                ("uploads_skipped", 0),
            ],
        )

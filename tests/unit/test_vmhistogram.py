"""
Tests for L{cacheprog.vmhistogram}: VictoriaMetrics buckets, and the histograms rendered through L{Metrics}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.metrics import Metrics
from cacheprog.vmhistogram import go_log10, vmrange


class VMHistogramTests(SynchronousTestCase):
    """
    VictoriaMetrics buckets, checked against strings VictoriaMetrics/metrics
    prints (bounds 10^(i/18) from 1e-9, printed with C{%.3e}).
    """

    def test_known_buckets(self) -> None:
        """
        Values fall into the buckets Go's VictoriaMetrics/metrics chooses;
        10^n closes its bucket (C{le} semantics).
        """
        cases = {
            1200: "1.136e+03...1.292e+03",
            1000: "8.799e+02...1.000e+03",
            0.0123: "1.136e-02...1.292e-02",
            0.005: "4.642e-03...5.275e-03",
            0.1: "8.799e-02...1.000e-01",
            1: "8.799e-01...1.000e+00",
            2: "1.896e+00...2.154e+00",
            4096: "4.084e+03...4.642e+03",
            65536: "5.995e+04...6.813e+04",
            123456789: "1.136e+08...1.292e+08",
            1e-9: "1.000e-09...1.136e-09",
            0: "0...1.000e-09",
            1e-10: "0...1.000e-09",
            1e18: "1.000e+18...+Inf",
            1e19: "1.000e+18...+Inf",
        }
        for value, expected in cases.items():
            self.assertEqual((value, vmrange(value)), (value, expected))

    def test_first_buckets_by_hand(self) -> None:
        """
        The first bounds are 1e-9 times powers of 10^(1/18) = 1.13646...
        """
        self.assertEqual(vmrange(1.1e-9), "1.000e-09...1.136e-09")
        self.assertEqual(vmrange(1.2e-9), "1.136e-09...1.292e-09")
        self.assertEqual(vmrange(1.3e-9), "1.292e-09...1.468e-09")

    def test_go_log10(self) -> None:
        """
        Go's C{math.Log10} is not exact for some powers of ten; ours matches it.
        """
        self.assertEqual(go_log10(1e-4), -3.9999999999999996)
        self.assertEqual(go_log10(1e15), 14.999999999999998)
        self.assertEqual(go_log10(1000), 3.0)

    def test_exposition(self) -> None:
        """
        Only non-empty buckets, then C{_sum} and C{_count}; no C{le}.
        """
        metrics = Metrics(vm_histograms=True)
        for size in (1200, 1250, 1200, 5):
            metrics.object_ok("remote", "get", size)
        metrics.duration("local", "get", 0.0125)
        metrics.duration("local", "get", 0.0125)
        text = metrics.render({"testlabel": "testvalue"})
        head = 'cacheprog_object_get_size_bytes_bucket{testlabel="testvalue",storage_type="remote",operation="get"'
        self.assertIn(head + ',vmrange="1.136e+03...1.292e+03"} 3\n', text)
        self.assertIn(head + ',vmrange="4.642e+00...5.275e+00"} 1\n', text)
        self.assertEqual(text.count("cacheprog_object_get_size_bytes_bucket"), 2)
        self.assertIn(
            'cacheprog_object_get_size_bytes_sum{testlabel="testvalue",storage_type="remote",operation="get"} 3655\n',
            text,
        )
        self.assertIn(
            'cacheprog_object_get_size_bytes_count{testlabel="testvalue",storage_type="remote",operation="get"} 4\n',
            text,
        )
        dur = 'cacheprog_object_get_duration_seconds_{}{{testlabel="testvalue",storage_type="local",operation="get"{}'
        self.assertIn(dur.format("bucket", ',vmrange="1.136e-02...1.292e-02"}') + " 2\n", text)
        self.assertIn(dur.format("sum", "}") + " 0.025\n", text)
        self.assertNotIn("le=", text)

    def test_buckets_in_order(self) -> None:
        """
        Buckets are listed from the lowest up, as VictoriaMetrics does.
        """
        metrics = Metrics(vm_histograms=True)
        for size in (1e19, 5000, 0, 3):
            metrics.object_ok("local", "get", int(size))
        ranges = [
            line.split('vmrange="')[1].split('"')[0] for line in metrics.render().splitlines() if "vmrange" in line
        ]
        self.assertEqual(
            ranges, ["0...1.000e-09", "2.783e+00...3.162e+00", "4.642e+03...5.275e+03", "1.000e+18...+Inf"]
        )

"""
Tests for L{cacheprog.exposition}: the reference's text format of the run's series.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from cacheprog.exposition import InvalidLabels, format_value, go_g
from cacheprog.metrics import Metrics

from .test_metrics import busy


class ExpositionTests(SynchronousTestCase):
    def test_extra_labels_first_everywhere(self) -> None:
        """
        Extra labels come first in every series, in both flavours.
        """
        for vm in (False, True):
            text = busy(Metrics(vm_histograms=vm)).render({"testlabel": "testvalue", "job": "ci"})
            lines = text.splitlines()
            self.assertEqual(len(lines), len([x for x in lines if '{testlabel="testvalue",job="ci"' in x]))
            self.assertIn('cacheprog_overall_run_time_ms{testlabel="testvalue",job="ci"} 1234', lines)
            self.assertIn(
                'cacheprog_object_miss_total{testlabel="testvalue",job="ci",storage_type="local"} 1',
                lines,
            )

    def test_label_values_escaped(self) -> None:
        """
        Backslash, double quote and newline are escaped in label values.
        """
        text = busy(Metrics()).render({"note": 'a"b\\c\nd'})
        self.assertIn('cacheprog_overall_run_time_ms{note="a\\"b\\\\c\\nd"} 1234', text)

    def test_invalid_label_names(self) -> None:
        """
        A label name Prometheus would refuse, a reserved one, or one cacheprog
        sets itself, is refused with a message naming it.
        """
        for bad in ("test-label", "1abc", "", "__name__", "storage_type", "le", "vmrange"):
            e = self.assertRaises(InvalidLabels, busy(Metrics()).render, {bad: "x"})
            self.assertIn(repr(bad), str(e))

    def test_go_g(self) -> None:
        """
        Non-integer sums are printed as Go's C{%g}: shortest digits, exponent
        form below 1e-4 and from 1e6.
        """
        cases = {
            0.1: "0.1",
            0.123456789: "0.123456789",
            1.5e-05: "1.5e-05",
            1234567.5: "1.2345675e+06",
            123456.5: "123456.5",
            0.0001: "0.0001",
            0.00001234: "1.234e-05",
            3.0000000000000004: "3.0000000000000004",
            -12.75: "-12.75",
            float("inf"): "+Inf",
        }
        for value, expected in cases.items():
            self.assertEqual(go_g(value), expected)
        self.assertEqual(format_value(3.0), "3")
        self.assertEqual(format_value(1e21), "1e+21")

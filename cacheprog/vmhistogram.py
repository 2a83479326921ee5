# -*- test-case-name: tests.unit.test_vmhistogram -*-
"""
The VictoriaMetrics histogram kind (C{--use-vm-histograms}): 18 logarithmic
buckets per decade from 1e-9 to 1e18, only non-empty ones, as
C{name_bucket{...,vmrange="1.136e+03...1.292e+03"} 3}, plus C{_sum} and
C{_count}; the bucket of a value is computed exactly as
VictoriaMetrics/metrics (C{histogram.go}) does, down to Go's C{math.Log10}.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

_E10_MIN, _E10_MAX, _PER_DECADE = -9, 18, 18
_VM_BUCKETS = (_E10_MAX - _E10_MIN) * _PER_DECADE
_VM_LOWER = f"0...{10.0**_E10_MIN:.3e}"
_VM_UPPER = f"{10.0**_E10_MAX:.3e}...+Inf"


def _vm_ranges() -> list[str]:
    # As initBucketRanges: repeated multiplication, printed with %.3e.
    multiplier = math.pow(10, 1.0 / _PER_DECADE)
    v = 1e-9
    start = f"{v:.3e}"
    ranges = []
    for _ in range(_VM_BUCKETS):
        v *= multiplier
        end = f"{v:.3e}"
        ranges.append(f"{start}...{end}")
        start = end
    return ranges


_VM_RANGES = _vm_ranges()

# Go's math.Log (amd64 assembly and pure Go alike: FreeBSD's e_log.c); libm's
# log differs in the last bit for some values, and a last bit decides the
# bucket of exact powers of ten (Go's Log10(1e-4) is -3.9999999999999996).
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_L1, _L2, _L3 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01
_L4, _L5 = 2.222219843214978396e-01, 1.818357216161805012e-01
_L6, _L7 = 1.531383769920937332e-01, 1.479819860511658591e-01
_HALF_SQRT2 = 7.07106781186547524401e-01
_INV_LN10 = 0.43429448190325182765112891891660508229439700580366656611445378316586464920887


def go_log10(x: float) -> float:
    """
    Go's C{math.Log10} for a positive finite C{x}, bit for bit.
    """
    f1, ki = math.frexp(x)
    if f1 < _HALF_SQRT2:
        f1 *= 2
        ki -= 1
    f = f1 - 1
    k = float(ki)
    s = f / (2 + f)
    s2 = s * s
    s4 = s2 * s2
    t1 = s2 * (_L1 + s4 * (_L3 + s4 * (_L5 + s4 * _L7)))
    t2 = s4 * (_L2 + s4 * (_L4 + s4 * _L6))
    r = t1 + t2
    hfsq = 0.5 * f * f
    ln = k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)
    return ln * _INV_LN10


def vmrange(value: float) -> str:
    """
    The C{vmrange} label of the bucket VictoriaMetrics puts C{value} in
    (lower bound excluded, upper bound included, like C{le}).
    """
    if value <= 0:
        return _VM_LOWER
    if math.isinf(value):
        return _VM_UPPER
    index = (go_log10(value) - _E10_MIN) * _PER_DECADE
    if index < 0:
        return _VM_LOWER
    if index >= _VM_BUCKETS:
        return _VM_UPPER
    i = int(index)
    if index == i and i > 0:
        # 10^n belongs to the bucket it closes, as with le.
        i -= 1
    return _VM_RANGES[i]


class _VMSeries:
    def __init__(self) -> None:
        self.buckets: dict[str, int] = {}
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if math.isnan(value) or value < 0:
            return
        key = vmrange(value)
        self.buckets[key] = self.buckets.get(key, 0) + 1
        self.sum += value
        self.count += 1


_ORDER = {_VM_LOWER: -1, **{r: i for i, r in enumerate(_VM_RANGES)}, _VM_UPPER: len(_VM_RANGES)}


class VMHistogram:
    """
    A labelled VictoriaMetrics-style histogram, as a C{prometheus_client}
    collector (C{labels(...).observe(v)} like a C{Histogram}).
    """

    def __init__(self, name: str, labelnames: Sequence[str]) -> None:
        self._name = name
        self._labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], _VMSeries] = {}

    def labels(self, *values: str) -> _VMSeries:
        return self._series.setdefault(tuple(values), _VMSeries())

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import Metric

        family = Metric(self._name, "", "histogram")
        for values, series in self._series.items():
            if not series.count:
                continue
            labels = dict(zip(self._labelnames, values, strict=True))
            for key in sorted(series.buckets, key=_ORDER.__getitem__):
                family.add_sample(self._name + "_bucket", {**labels, "vmrange": key}, series.buckets[key])
            family.add_sample(self._name + "_sum", labels, series.sum)
            family.add_sample(self._name + "_count", labels, series.count)
        yield family

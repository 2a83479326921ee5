# -*- test-case-name: tests.unit.test_exposition -*-
"""
The text the run's series are pushed as, the reference's rather than
C{generate_latest}'s: no C{# HELP} / C{# TYPE} lines, no C{_created}
series, samples renamed where the reference's names differ, the extra labels
(C{--metrics-push-extra-labels}) first in every series, and values printed
as VictoriaMetrics/metrics prints them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_OWN_LABELS = frozenset({"storage_type", "operation", "le", "vmrange"})


class InvalidLabels(ValueError):
    """
    An extra label cannot be put into the exposition (bad or clashing name).
    """


def validate_labels(labels: Mapping[str, str]) -> None:
    """
    Check extra label names: Prometheus syntax, not reserved (C{__}), not one
    cacheprog sets itself.

    @raise InvalidLabels: naming the first bad label.
    """
    for name in labels:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise InvalidLabels(f"invalid label name {name!r} (use letters, digits and _, not starting with a digit)")
        if name in _OWN_LABELS:
            raise InvalidLabels(f"label name {name!r} is set by cacheprog itself")


def render(registry: CollectorRegistry, extra_labels: Mapping[str, str], renames: Mapping[str, str]) -> str:
    """
    The text exposition of C{registry}, C{extra_labels} first in every
    series, samples named as in C{renames} where they are there.

    @raise InvalidLabels: for a bad extra label name.
    """
    extra = dict(extra_labels)
    validate_labels(extra)
    lines = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = renames.get(sample.name, sample.name)
            pairs = [*extra.items(), *sample.labels.items()]
            lines.append(f"{name}{_label_text(pairs)} {format_value(sample.value)}\n")
    return "".join(lines)


def _label_text(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """
    A sample value as VictoriaMetrics/metrics prints it: C{%d} when whole,
    else Go's C{%g} (L{go_g}).
    """
    if math.isfinite(value) and value == int(value) and abs(value) < 2**63:
        return str(int(value))
    return go_g(value)


def go_g(value: float) -> str:
    """
    Go's C{fmt.Sprintf("%g", value)} for a float64: the shortest digits that
    read back exactly, in exponent form below 1e-4 and from 1e6 on.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    point = len(digits) + exponent  # digits before the decimal point
    x = point - 1
    text: str
    if x < -4 or x >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        text = f"{mantissa}e{'-' if x < 0 else '+'}{abs(x):02d}"
    elif point <= 0:
        text = "0." + "0" * -point + digits
    elif point >= len(digits):
        text = digits + "0" * (point - len(digits))
    else:
        text = digits[:point] + "." + digits[point:]
    return ("-" if sign else "") + text

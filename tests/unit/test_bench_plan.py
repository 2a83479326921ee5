"""
Tests for the benchmark's plan (L{bench.plan}) and statistics parsing
(L{bench.measure}): what a group runs, and what a run's stderr says.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bench.measure import parse_stats
from bench.plan import DRAIN, NATIVE, OURS, REFERENCE, Options, Program, plan

PROGRAMS = [
    Program(OURS, "cacheprog", frozenset({"cold", "warm-local", "warm-remote", "pr"}), OURS),
    Program(DRAIN, "cacheprog --detached-drain", frozenset({"cold"}), DRAIN, "cacheprog wait", timed=False),
    Program(REFERENCE, "/ref", frozenset({"warm-remote"}), OURS),
]


def options(*only: str) -> Options:
    return Options(
        only=only,
        workloads=["std", "golangci-lint", "cmd"],
        latencies=[0, 50],
        cold_latencies=[0, 50],
        big_latencies=[0],
        big_cold_latencies=[0],
        peer_latencies=[50],
        pr_latency=50,
        runs=3,
        big_runs=2,
        cold_runs=2,
        big_cold_runs=1,
    )


def labels(only: str) -> dict[str, list[str]]:
    return {w: [c.label for c in p.cells] for w, p in plan(options(only), PROGRAMS).items()}


class PlanTests(SynchronousTestCase):
    def test_pull_request_brings_its_baselines(self) -> None:
        """
        The PR group needs go's own cache filled (native cold) and our seed,
        on golangci-lint only.
        """
        self.assertEqual(
            labels("pr"),
            {
                "golangci-lint": [
                    "golangci-lint:native:native-cold",
                    "golangci-lint:cacheprog:cold@0ms",
                    "golangci-lint:native:native-pr",
                    "golangci-lint:cacheprog:pr@50ms",
                ]
            },
        )

    def test_std_warm_has_the_reference_at_its_latencies(self) -> None:
        got = labels("std-warm")["std"]
        self.assertIn("std:reference:warm-remote@50ms", got)
        self.assertNotIn("std:reference:warm-remote@0ms", got)
        self.assertNotIn("std:cacheprog-drain:cold@0ms", got)

    def test_seed_runs_first(self) -> None:
        """
        Our lowest-latency cold run comes right after the native one in round
        0, ahead of the drain's: it seeds the warm phase.
        """
        cold = plan(options("std-cold", "std-warm"), PROGRAMS)["std"].cold
        self.assertEqual([(c.program, c.latency) for c in cold[:2]], [(NATIVE, None), (OURS, 0)])
        self.assertIn((DRAIN, 50), [(c.program, c.latency) for c in cold])
        self.assertEqual({c.runs for c in cold}, {2})


class ParseStatsTests(SynchronousTestCase):
    def test_sums_numbers_and_keeps_words(self) -> None:
        text = (
            'time="x" level=INFO msg="cacheprog statistics get_calls=3 get_hit_ratio=0.50 remote_wait=1.5s '
            'manifest=found"\n'
            "noise\n"
            "cacheprog statistics get_calls=2 put_calls=1\n"
        )
        lines, stats, words = parse_stats(text)
        self.assertEqual(lines, 2)
        self.assertEqual(stats, {"get_calls": 5, "remote_wait": 1.5, "put_calls": 1})
        self.assertEqual(words, {"manifest": "found"})

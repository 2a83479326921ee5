#!/usr/bin/env python3
"""
Run trial on the given test modules and end with one plain line,
"N passed, M failed, K skipped", which CI reads.  Trial says PASSED and exits
0 even when it ran no test; this script fails then.

  trial_summary.py [--also "VAR=value module ..."] module ...

Each --also runs more modules afterwards with extra environment variables
(e.g. the end-to-end tier again against the compiled binary); the counts
are added up.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

KEYS = ("successes", "failures", "errors", "skips", "expectedFailures", "unexpectedSuccesses")


def run_trial(modules: list[str], env: dict[str, str], temp: str) -> dict[str, int]:
    cmd = [sys.executable, "-m", "twisted.trial", "--temp-directory", temp, *modules]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        sys.stdout.write(line)
        tail = [*tail, line][-20:]
    status = proc.wait()
    counts = dict.fromkeys(KEYS, 0)
    for line in tail:
        m = re.match(r"^(PASSED|FAILED) \((.*)\)\s*$", line)
        if m:
            for key, value in re.findall(r"(\w+)=(\d+)", m.group(2)):
                counts[key] = int(value)
    if status != 0 and not (counts["failures"] or counts["errors"] or counts["unexpectedSuccesses"]):
        counts["errors"] += 1  # trial itself broke (import error, crash)
    return counts


def main(argv: list[str]) -> int:
    runs: list[tuple[dict[str, str], list[str]]] = []
    modules: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--also":
            words = next(args).split()
            extra = dict(w.split("=", 1) for w in words if "=" in w)
            runs.append((extra, [w for w in words if "=" not in w]))
        else:
            modules.append(arg)
    runs.insert(0, ({}, modules))
    total = dict.fromkeys(KEYS, 0)
    for i, (extra, mods) in enumerate(runs):
        if extra:
            print(f"\n=== again with {' '.join(f'{k}={v}' for k, v in extra.items())}: {' '.join(mods)}", flush=True)
        counts = run_trial(mods, {**os.environ, **extra}, f"_trial_temp{i or ''}")
        for key in KEYS:
            total[key] += counts[key]
    passed = total["successes"] + total["expectedFailures"]
    failed = total["failures"] + total["errors"] + total["unexpectedSuccesses"]
    print(f"\n{passed} passed, {failed} failed, {total['skips']} skipped")
    if passed == 0:
        print("no test ran: failing", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

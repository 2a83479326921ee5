#!/usr/bin/env python3
"""
Run trial on the given test modules and end with one plain line,
"N passed, M failed, K skipped", which CI reads.  Trial says PASSED and exits
0 even when it ran no test; this script fails then.
"""

from __future__ import annotations

import re
import subprocess
import sys


def main(argv: list[str]) -> int:
    cmd = [sys.executable, "-m", "twisted.trial", "--temp-directory", "_trial_temp", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        sys.stdout.write(line)
        tail = [*tail, line][-20:]
    status = proc.wait()
    counts = {"successes": 0, "failures": 0, "errors": 0, "skips": 0, "expectedFailures": 0, "unexpectedSuccesses": 0}
    for line in tail:
        m = re.match(r"^(PASSED|FAILED) \((.*)\)\s*$", line)
        if m:
            for key, value in re.findall(r"(\w+)=(\d+)", m.group(2)):
                counts[key] = int(value)
    passed = counts["successes"] + counts["expectedFailures"]
    failed = counts["failures"] + counts["errors"] + counts["unexpectedSuccesses"]
    if status != 0 and failed == 0:
        failed = 1  # trial itself broke (import error, crash)
    print(f"\n{passed} passed, {failed} failed, {counts['skips']} skipped")
    if passed == 0:
        print("no test ran: failing", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

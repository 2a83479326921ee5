"""The benchmarks: the harness (harness.py) and its parts, the start-up, core and proxy benchmarks."""

# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TESTS ?= tests

.PHONY: install install-test demo test test-only lint unit bench

install:
	$(PIP) install --quiet --disable-pip-version-check -e .

install-test:
	$(PIP) install --quiet --disable-pip-version-check -e '.[test]'
	bash .ci/install-servers.sh

# Build a sample Go module through cacheprog with the embedded `dir` store,
# wipe the local tier, rebuild, and show the second build came from the cache.
demo: install
	bash scripts/demo.sh

# Install everything the tests need (servers included), lint, run every tier.
test: install-test lint test-only

test-only:
	$(PYTHON) scripts/trial_summary.py $(TESTS)

unit:
	$(PYTHON) scripts/trial_summary.py tests.unit

lint:
	$(PYTHON) -m ruff check cacheprog tests scripts bench
	$(PYTHON) -m ruff format --check cacheprog tests scripts bench
	$(PYTHON) -m mypy

bench: install
	$(PIP) install --quiet --disable-pip-version-check -e '.[bench]'
	$(PYTHON) bench/bench_core.py

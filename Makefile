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
	bash .ci/install-buildah.sh

# Build a sample Go module through cacheprog with the embedded `dir` store,
# wipe the local tier, rebuild, and show the second build came from the cache.
demo: install
	bash scripts/demo.sh

# Install everything the tests need (servers included), lint, run every tier.
test: install-test lint test-only

# Every tier; the binary tier builds dist/cacheprog (make binary), and the
# end-to-end tier then runs a second time against that binary
# (CACHEPROG_SKIP_BINARY=1 leaves both out).
ifeq ($(CACHEPROG_SKIP_BINARY),1)
BINARY_E2E :=
else
BINARY_E2E := --also "CACHEPROG_E2E_BINARY=$(CURDIR)/dist/cacheprog tests.e2e.test_gobuild"
endif

test-only:
	$(PYTHON) scripts/trial_summary.py $(TESTS) $(BINARY_E2E)

unit:
	$(PYTHON) scripts/trial_summary.py tests.unit

lint:
	$(PYTHON) -m ruff check cacheprog tests scripts bench
	$(PYTHON) -m ruff format --check cacheprog tests scripts bench
	$(PYTHON) -m mypy

bench: install
	$(PIP) install --quiet --disable-pip-version-check -e '.[bench]'
	CACHEPROG_SKIP_MINIO=$${CACHEPROG_SKIP_MINIO:-1} PYTHON=$(PYTHON) bash .ci/install-servers.sh
	$(PYTHON) bench/harness.py $(or $(BENCH_ARGS),--wait-load 2.0)

# One self-extracting executable, dist/cacheprog, built by Nuitka from
# build/nuitka.cfg (scripts/build_binary.py).  Installs what it needs:
# patchelf and ccache (apt-get, when missing) and Nuitka (the `binary` extra).
# Cold (empty ccache): ~19 CPU-minutes, 24 min wall on a busy 2-core machine;
# with a warm ccache (~/.cache/Nuitka): 3-5 min, ~2 of them compressing the payload.
# NUITKA_EXTRA: more Nuitka options, after the configuration's.
BINARY_APT_PACKAGES ?= patchelf ccache
# The musl root of tests/binary/test_environments.py (Debian's musl loader and libc).
BINARY_TEST_PACKAGES ?= musl
NUITKA_EXTRA ?=

.PHONY: binary dist
binary:
	@missing=; for tool in $(BINARY_APT_PACKAGES); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	for package in $(BINARY_TEST_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; fi
	$(PIP) install --quiet --disable-pip-version-check -e '.[binary]'
	$(PYTHON) scripts/build_binary.py -- $(NUITKA_EXTRA)

# What a release publishes, in dist/: the wheel and the sdist (built from the
# sdist, so a file missing from it fails here), the binary, and SHA256SUMS.
dist: binary
	$(PIP) install --quiet --disable-pip-version-check 'build>=1.2,<2'
	rm -f dist/*.whl dist/*.tar.gz dist/SHA256SUMS
	$(PYTHON) -m build --outdir dist .
	cd dist && sha256sum cacheprog *.whl *.tar.gz > SHA256SUMS && cat SHA256SUMS

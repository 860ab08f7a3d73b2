# Everything runs from a project-local virtualenv built from the pinned lock files. The system
# tools the tests call (chromium, systemd-analyze, openssl, curl, aria2c, ...) come from
# Debian's packages: `make test` first runs scripts/system-deps, which installs what is missing
# when run as root and otherwise names the packages and stops.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in a package of its own.
NOVENV := $(PYTHON) cannot make a virtualenv with pip (Debian/Ubuntu: sudo apt-get install python3-venv), then run make again

.PHONY: help venv demo test check lint format typecheck pytest soak bench lock clean system-deps mutate

help:
	@echo "make demo   - run the archiver against the built-in Zoom simulator, then verify"
	@echo "make test   - the full gate: system tools (scripts/system-deps), lint, format check,"
	@echo "              mypy --strict, pytest; this is what CI (.ci/run) runs"
	@echo "make soak   - long soak and crash tests (marked slow; not part of make test)"
	@echo "make bench  - benchmarks (see BENCHMARKS.md)"
	@echo "make mutate - mutation testing of the core (docs/TESTING.md; hours the first time, not in make test)"
	@echo "make lock   - refresh requirements*.lock from pyproject.toml"

$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11 or newer is required (found: $$($(PYTHON) --version)); set PYTHON=python3.11" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "$(NOVENV)" >&2; exit 2; }
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV); echo "$(NOVENV)" >&2; exit 2; }
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/zoom-sms-archiver demo

lint: $(STAMP)
	$(BIN)/ruff check archiver tests bench
	$(BIN)/ruff format --check archiver tests bench

format: $(STAMP)
	$(BIN)/ruff format archiver tests bench
	$(BIN)/ruff check --fix archiver tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: that is a failure, not a pass. Two workers
# (pytest-xdist): most tests wait on sockets and subprocesses, so two halve the wall time on
# 2 cores; PYTEST_WORKERS=0 runs everything in one process (easier to debug).
PYTEST_WORKERS ?= 2
pytest: $(STAMP)
	@$(BIN)/pytest -q -n $(PYTEST_WORKERS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

check: lint typecheck pytest

system-deps:
	@scripts/system-deps

# The system tools first, in their own step, so that nothing starts without them (even -j).
test: system-deps
	@$(MAKE) --no-print-directory check

soak: system-deps $(STAMP)
	$(BIN)/pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python -m bench

# Mutation testing with mutmut ([tool.mutmut] in pyproject.toml, work dir ./mutants/): about an
# hour on 2 cores, so not part of `make test`. MODULES=archiver/store/verify.py runs some only;
# MUTATE_CHILDREN (default 8) mutants run side by side, under nice.
mutate: $(STAMP)
	MUTMUT=$(BIN)/mutmut scripts/mutate $(MODULES)

lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -q -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -q -o requirements-dev.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

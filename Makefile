# The whole set-up is two commands: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lifeguard-installed
TORCH_PIN := torch==2.13.0

.PHONY: install demo test test-long lint bench clean ops-tools postgres-tools

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch goes in first and pinned: resolving it through the project's range with no torch
# installed would pull a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	PYTHONPATH=$(CURDIR) HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 $(VENV)/bin/lifeguard demo $(ARGS)

lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy lifeguard daemon detectors actions deploy simulator harness bench

# promtool and amtool for the ops/ tests (Debian's prometheus, prometheus-alertmanager). Only
# the binaries are wanted: where systemd runs, the packaged services are stopped and disabled
# again (the tests start their own prometheus on a free loopback port).
ops-tools:
	@command -v promtool >/dev/null && command -v amtool >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends \
	    prometheus prometheus-alertmanager >/dev/null && \
	  { [ ! -d /run/systemd/system ] || systemctl disable --now -q \
	    prometheus prometheus-alertmanager 2>/dev/null || true; }; }

# PostgreSQL's server binaries for the shared-store tests (Debian's postgresql-15): the tests
# start a throwaway cluster of their own on a free loopback port, so the packaged cluster's
# service is stopped and disabled again where systemd runs.
PG_BIN := /usr/lib/postgresql/15/bin
postgres-tools:
	@test -x $(PG_BIN)/initdb || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends postgresql-15 >/dev/null && \
	  { [ ! -d /run/systemd/system ] || systemctl disable --now -q postgresql 2>/dev/null \
	    || true; }; }

# `long` tests (the generative loop end to end, several minutes on 2 cores) run with
# `make test-long`; `make test` (what CI runs) leaves them out to stay inside its time budget.
test: install lint ops-tools postgres-tools
	HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 $(PY) -m pytest -m "not long"

test-long: install postgres-tools
	HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 $(PY) -m pytest -m long

bench: install
	HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 $(PY) bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache var

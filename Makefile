# The whole set-up is two commands: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lifeguard-installed
TORCH_PIN := torch==2.13.0

.PHONY: install demo test lint bench clean

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
	HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 $(VENV)/bin/lifeguard demo

lint: install
	$(PY) -m ruff check .

test: install lint
	HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 $(PY) -m pytest

bench: install
	HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 $(PY) bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache var

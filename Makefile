# Two commands on a fresh machine:  `make repro` (set-up, default data, every study)
# and `make test` (set-up if needed, lint, tests). Everything runs from the .venv below.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# DVC stage commands (papermill, python) must find the venv's executables first
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MPLBACKEND := Agg

.PHONY: repro test venv data lint paper-scale clean-venv

repro: data
	dvc repro

test: $(STAMP) lint
	pytest

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# Build the embedded phantom cohorts unless data/ already matches data.dvc, then check the
# result matches data.dvc bit for bit (generators are seeded and write integers, gzip mtime 0).
# `dvc commit` stores the data in the DVC cache; data.dvc must come out of it unchanged.
data: $(STAMP)
	@if dvc status --quiet data.dvc 2>/dev/null; then \
	  echo "data/ matches data.dvc"; \
	else \
	  python -m medclust.phantoms --out data; \
	  cp data.dvc $(VENV)/data.dvc.expected; \
	  dvc commit --force --quiet data.dvc; \
	  if ! cmp -s data.dvc $(VENV)/data.dvc.expected; then \
	    mv $(VENV)/data.dvc.expected data.dvc; \
	    echo "data/ differs from data.dvc after generation. If you changed a phantom generator"; \
	    echo "on purpose, record the new data with: dvc add data && git add data.dvc"; \
	    exit 1; \
	  fi; \
	  echo "data/ rebuilt; it matches data.dvc"; \
	fi

lint: $(STAMP)
	ruff check lib tests
	ruff format --check lib tests

# Paper scale: the sizes of the papers as a DVC experiment (params in paper_scale.yaml)
paper-scale: data
	dvc exp run --name paper-scale $$(python -m medclust.scale paper_scale.yaml)

clean-venv:
	rm -rf $(VENV)

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
# CPU profile of the study runs (python -m medclust.run, README "Reproducibility"):
# x86-64-v3 (default: the same bits on every CPU with AVX2 + FMA) or native (faster on some)
ifdef CPU_PROFILE
export MEDCLUST_CPU_PROFILE := $(CPU_PROFILE)
endif

.PHONY: repro test venv data data-record verify lint paper-scale benchmark-env clean-venv

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

# Build the embedded phantom cohorts unless data/ already matches data.dvc, then check every
# file against data.md5 (a mismatch names the cohorts and files) and the whole folder against
# data.dvc. The generators are seeded, write integers (gzip mtime 0) and use no BLAS, so the
# bytes are the same on every x86-64 CPU. `dvc commit` stores the data in the DVC cache.
data: $(STAMP)
	@if dvc status --quiet data.dvc 2>/dev/null; then \
	  echo "data/ matches data.dvc"; \
	else \
	  python -m medclust_phantoms --out data --force; \
	  if ! python -m medclust_phantoms.manifest check data data.md5; then \
	    echo "If you changed a phantom generator on purpose, record the new data: make data-record"; \
	    exit 1; \
	  fi; \
	  cp data.dvc $(VENV)/data.dvc.expected; \
	  dvc commit --force --quiet data.dvc; \
	  if ! cmp -s data.dvc $(VENV)/data.dvc.expected; then \
	    mv $(VENV)/data.dvc.expected data.dvc; \
	    echo "data/ matches data.md5 but not data.dvc: record both with: make data-record"; \
	    exit 1; \
	  fi; \
	  echo "data/ rebuilt; it matches data.dvc"; \
	fi

# After a deliberate generator change: rebuild data/ and record it in data.dvc and data.md5
data-record: $(STAMP)
	python -m medclust_phantoms --out data --force
	python -m medclust_phantoms.manifest record data data.md5
	dvc commit --force --quiet data.dvc
	@echo "recorded; commit data.dvc and data.md5"

# Rerun the studies (all, or STAGES="cdcn cae_dec") into verify/ and compare every metric with
# the committed reports/*/metrics.json within a tolerance from the committed seed spread.
verify: data
	python -m medclust.verify --scratch verify $(STAGES)

lint: $(STAMP)
	ruff check lib tests notebooks benchmarks
	ruff format --check lib tests notebooks benchmarks

# Paper scale: the sizes of the papers as a DVC experiment (params in paper_scale.yaml)
paper-scale: data
	dvc exp run --name paper-scale $$(python -m medclust.scale paper_scale.yaml)

# ClustPy 0.0.3, only for benchmarks/peer_benchmark.py (never a project dependency):
# --no-deps into build/clustpy (a source build with one C extension, clustpy/utils/dip.c: needs
# gcc and the Python headers); the benchmark puts the folder on sys.path itself.
CLUSTPY_DIR := build/clustpy
benchmark-env: $(CLUSTPY_DIR)/.installed

$(CLUSTPY_DIR)/.installed: $(STAMP)
	rm -rf $(CLUSTPY_DIR)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
	  --target $(CLUSTPY_DIR) clustpy==0.0.3
	PYTHONPATH=$(CLUSTPY_DIR) $(VENV)/bin/python -c "import clustpy.deep"
	touch $@

clean-venv:
	rm -rf $(VENV)

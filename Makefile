# Two commands set everything up on a fresh Linux machine (Python >= 3.10 with venv):
#   make demo   — create .venv if missing, install SMAF, run the workflow on the demo config
#   make test   — create .venv if missing, install SMAF with dev extras, run the test suite
#   make test-fast — the same without the `slow` tests (workflow runs, training): the edit loop
#   make bench  — CPU benchmarks (~8 min): results/bench/cpu.csv and the table in BENCHMARKS.md
#   make bench-gpu — GPU benchmarks (needs CUDA): results/bench/gpu.csv and its BENCHMARKS.md table
# Both are idempotent: the install steps rerun only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
PYTEST_ARGS ?=

.PHONY: demo test test-fast bench bench-gpu lint format clean help

help:
	@echo "make demo | test | test-fast | bench | bench-gpu | lint | format | clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files record what was installed; they are newer than pyproject.toml until it changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES) --resources gpu=1

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/cpu.py

bench-gpu: $(VENV)/.installed-dev
	$(BIN)/python bench/gpu.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt Snakefile workflow/

clean:
	rm -rf results resources/synthetic logs benchmarks .snakemake

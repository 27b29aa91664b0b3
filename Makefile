# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv if missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned by constraints.txt so that pip does not pull a newer torch with GBs of CUDA wheels.
PIP_INSTALL := $(BIN)/python -m pip install -q -c constraints.txt
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: install test lint type format docs wheel-smoke bench bench-rl demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) "torch==2.13.0"
	$(PIP_INSTALL) -e ".[dev,zoo,cluster]"
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(PIP_INSTALL) -e ".[docs]"
	touch $(DOCS_STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS) tests

lint: $(STAMP)
	$(BIN)/ruff check sb3_natural tests benchmarks examples
	$(BIN)/ruff format --check sb3_natural tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff format sb3_natural tests benchmarks examples
	$(BIN)/ruff check --fix sb3_natural tests benchmarks examples

type: $(STAMP)
	$(BIN)/mypy sb3_natural

# The Sphinx site (docs/*.md with MyST, API reference from the docstrings); warnings are errors.
docs: $(DOCS_STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html -q docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# Build the wheel, install it (not editable) into a fresh venv, run every entry point elsewhere.
wheel-smoke: $(STAMP)
	bash .ci/wheel_smoke.sh $(BIN)/python

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m sb3_natural.demo

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_math.py

SUITE ?= quick
bench-rl: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m sb3_natural.benchmark --suite $(SUITE)

clean:
	rm -rf $(VENV) build dist docs/_build *.egg-info .pytest_cache .mypy_cache .ruff_cache

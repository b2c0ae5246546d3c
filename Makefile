# Everything a fresh machine needs, from the project's own files.
# `make test`: set up (venv, package, dev tools) and run lint, docs build and the test suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint docs pytest clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"

lint: setup
	$(BIN)/ruff check src tests examples benchmarks

docs: setup
	$(BIN)/mkdocs build --strict --quiet --site-dir site

pytest: setup
	$(BIN)/python -m pytest -q

test: lint docs pytest

clean:
	rm -rf site .pytest_cache .ruff_cache

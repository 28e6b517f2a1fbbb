# The two commands of the README. Each creates .venv on first use and installs from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint

$(BIN)/flexmarket-runtime.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/flexmarket-dev.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/flexmarket-runtime.stamp $@

## demo: the main job on the embedded default (SQLite file ./flexmarket.db, tasks in-process)
demo: $(BIN)/flexmarket-runtime.stamp
	$(BIN)/flexmarket demo

## lint: ruff and mypy strict
lint: $(BIN)/flexmarket-dev.stamp
	$(BIN)/ruff check market settlement tests migrations benchmarks
	$(BIN)/ruff format --check market settlement tests migrations/env.py benchmarks
	$(BIN)/mypy

## test: lint, then the whole suite against PostgreSQL and Redis on 127.0.0.1
test: lint
	$(BIN)/pytest -n 2 -q

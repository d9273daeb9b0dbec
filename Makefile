# Each target installs what it needs into .venv first, so a fresh clone works.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install dev run test test-fast lint format openapi bench demo soak clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

dev: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'

run: install
	$(BIN)/python -m service

test: dev
	$(BIN)/python -m pytest -n 2

test-fast: dev
	$(BIN)/python -m pytest -n 2 -m "not slow"

lint: dev
	$(BIN)/ruff check service tests bench scripts
	$(BIN)/ruff format --check service tests bench scripts

format: dev
	$(BIN)/ruff check --fix service tests bench scripts
	$(BIN)/ruff format service tests bench scripts

openapi: dev
	$(BIN)/python scripts/export_openapi.py

bench: dev
	$(BIN)/python bench/run.py

demo: install
	$(BIN)/python -m pip install -q httpx
	$(BIN)/python examples/notebook.py

soak: dev
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache gmm-store

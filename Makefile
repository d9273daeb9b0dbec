# Each target installs what it needs into .venv first, so a fresh clone works.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install dev run test test-fast lint format openapi lock bench demo soak clean

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
	$(BIN)/ruff check service tests bench scripts client
	$(BIN)/ruff format --check service tests bench scripts client
	$(BIN)/lint-imports

format: dev
	$(BIN)/ruff check --fix service tests bench scripts client
	$(BIN)/ruff format service tests bench scripts client

openapi: dev
	$(BIN)/python scripts/export_openapi.py

# requirements.lock: the runtime dependencies the Docker image installs, with the grpc
# extra (GMM_GRPC_PORT turns it on), pinned with hashes; requirements-cluster.lock: the
# same with the s3, dask and postgres extras too, for the image compose's cluster
# profile builds (Dockerfile ARG LOCK_FILE). Run after
# editing pyproject's dependencies or those extras (a test fails while a lock is
# stale); existing pins are kept unless LOCK_FLAGS=--upgrade. Pins come from PyPI itself:
# this machine's pip configuration (wheel folders, extra indexes, constraints) must
# not leak into what every image builds from.
#
# pip-compile is run with its static reading of pyproject.toml turned off: that
# reading fails on the dev extra's `{root:uri}/client` (a hatchling context
# variable), while asking the build backend for the metadata resolves it.
LOCK_FLAGS ?=
PIP_COMPILE = env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
	$(BIN)/python -c 'import sys, piptools.build as b, piptools.scripts.compile as c; \
	b.maybe_statically_parse_project_metadata = lambda _: None; sys.argv[0] = "pip-compile"; c.cli()' \
	--quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(LOCK_FLAGS)
lock: $(BIN)/python
	$(BIN)/python -m pip install -q 'pip-tools>=7.4'
	$(PIP_COMPILE) --extra grpc --output-file requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra s3 --extra dask --extra postgres --extra grpc --output-file requirements-cluster.lock pyproject.toml

bench: dev
	$(BIN)/python bench/run.py
	$(BIN)/python bench/predict_wrk.py
	$(BIN)/python bench/v2_infer.py
	$(BIN)/python bench/v2_grpc.py
	$(BIN)/python bench/predict_large.py
	$(BIN)/python bench/fit_e2e.py
	$(BIN)/python bench/parse_points.py

demo: install
	$(BIN)/python -m pip install -q httpx
	$(BIN)/python examples/notebook.py

soak: dev
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache gmm-store

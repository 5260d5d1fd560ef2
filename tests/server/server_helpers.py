"""Helpers of the server tests: start `arborlm serve` as a subprocess, talk to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from arborlm.runtime.pyproc import python_module_argv

API_KEY = "test-key-123"
REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProc:
    proc: subprocess.Popen
    url: str
    api_key: str | None
    log_path: Path
    extra: dict = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def start_server(model: str, tmp: Path, *extra: str, api_key: str | None = None,
                 env: dict[str, str] | None = None) -> ServerProc:
    port = free_port()
    cmd = [*python_module_argv("arborlm.runtime.cli"), "serve", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--num-threads", "1", *extra]
    if api_key:
        cmd += ["--api-key", api_key]
    log_path = tmp / f"server-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
    srv = ServerProc(proc, f"http://127.0.0.1:{port}", api_key, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} during startup:\n{srv.log()[-4000:]}")
        try:
            if httpx.get(f"{srv.url}/health", timeout=2).status_code == 200:
                return srv
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    srv.stop()
    raise RuntimeError(f"server did not come up in {STARTUP_TIMEOUT_S}s:\n{srv.log()[-4000:]}")


def grammar_available() -> bool:
    try:
        from arborlm.constrain import GrammarCompiler  # noqa: F401
    except ImportError:
        return False
    return True


needs_grammar = pytest.mark.skipif(not grammar_available(), reason="arborlm.constrain.GrammarCompiler not built yet")

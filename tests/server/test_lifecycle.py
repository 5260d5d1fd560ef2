"""Process lifetime: SIGTERM leaves no orphans; a dead child means 503 and a non-zero exit."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx
import psutil
import pytest
from server_helpers import start_server

from arborlm.runtime.pyproc import python_module_argv


def test_serve_help_documents_flags() -> None:
    out = subprocess.run([*python_module_argv("arborlm.runtime.cli"), "serve", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for flag in ("--model", "--host", "--port", "--dtype", "--max-total-tokens", "--chunked-prefill-size",
                 "--schedule-policy", "--disable-radix-cache", "--api-key", "--log-level"):
        assert flag in out, flag
    assert "--scheduler-factory" not in out


@pytest.fixture
def lone_server(tiny_model_path: str, tmp_path):
    srv = start_server(tiny_model_path, tmp_path, "--max-total-tokens", "2048")
    yield srv
    srv.stop()


def _children(pid: int) -> list[psutil.Process]:
    kids = psutil.Process(pid).children(recursive=True)
    # multiprocessing's resource tracker is a helper, not one of our workers
    return [k for k in kids if "resource_tracker" not in " ".join(k.cmdline())]


def test_sigterm_leaves_no_orphans(lone_server) -> None:
    kids = _children(lone_server.proc.pid)
    assert len(kids) >= 2  # scheduler + detokenizer
    r = httpx.post(f"{lone_server.url}/generate", json={"text": "hi", "sampling_params": {"max_new_tokens": 2}},
                   timeout=120)
    assert r.status_code == 200
    assert "rid=" in lone_server.log() and "completion_tokens=" in lone_server.log()  # per-request log line
    lone_server.proc.send_signal(signal.SIGTERM)
    assert lone_server.proc.wait(30) == 0
    gone, alive = psutil.wait_procs(kids, timeout=10)
    assert not alive, alive


def test_dead_scheduler_gives_503_then_nonzero_exit(lone_server) -> None:
    kids = _children(lone_server.proc.pid)
    # the scheduler is the first spawned child
    sched = min((k for k in kids if any("spawn" in p for p in k.cmdline())), key=lambda k: k.create_time())
    sched.kill()
    saw_503 = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and lone_server.proc.poll() is None:
        try:
            r = httpx.get(f"{lone_server.url}/health", timeout=1)
            if r.status_code == 503:
                saw_503 = True
                r2 = httpx.post(f"{lone_server.url}/generate", json={"text": "hi"}, timeout=5)
                assert r2.status_code == 503
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    assert saw_503
    assert lone_server.proc.wait(30) != 0
    _, alive = psutil.wait_procs(kids, timeout=10)
    assert not alive

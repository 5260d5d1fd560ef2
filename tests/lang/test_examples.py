"""Every example in examples/ runs (subprocess, default model) and prints what it should."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TIMEOUT_S = 240


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / name), *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module", autouse=True)
def _model_ready(smollm2_path: str) -> None:
    """The converted model exists before the subprocesses start."""


def test_quickstart():
    out = run_example("quickstart.py")
    assert re.search(r"answer: .*Paris", out)
    assert "'role': 'assistant'" in out and "batch cached share" in out


def test_json_extraction():
    out = run_example("json_extraction.py")
    assert re.search(r"Person \{'name': 'Maria', 'age': 34, 'city': 'Lisbon'\}", out)
    assert out.count("Person {") == 2


def test_multi_turn_agent_live():
    out = run_example("multi_turn_agent.py")
    assert "Action 1: Search[" in out and "Observation 1: " in out and "Action 2: " in out


def test_multi_turn_agent_replays_recorded_traces():
    out = run_example("multi_turn_agent.py", "--replay", "2", "--steps", "2", "--max-tokens", "8")
    m = re.search(r"replayed 2 traces x 2 steps in [\d.]+s; cached share ([\d.]+); failed \[\]", out)
    assert m and float(m.group(1)) >= 0.8


def test_tree_of_thought():
    out = run_example("tree_of_thought.py")
    assert len(re.findall(r"^idea \d:", out, flags=re.M)) == 3 and re.search(r"best approach: [123] ", out)


def test_few_shot_batch():
    out = run_example("few_shot_batch.py", "--num-questions", "4", "--max-tokens", "16")
    m = re.search(r"prefix tokens sent once: (\d+); cached share: ([\d.]+); failed: \[\]", out)
    assert m and int(m.group(1)) > 200 and float(m.group(2)) >= 0.8


def test_parallel_encoding():
    out = run_example("parallel_encoding.py")
    assert out.index("Document 1:") < out.index("Document 2:") < out.index("Document 3:") < out.index("Question:")
    assert "answer:" in out


def test_chat_server_client(endpoint_server):
    out = run_example("chat_server_client.py", "--url", endpoint_server.url)
    assert re.search(r"^user: Name a fruit\.$", out, flags=re.M) and re.search(r"^assistant: \S", out, flags=re.M)
    assert "streamed:" in out

"""Small public data sets shipped as package data (see SOURCES.md beside this file for origins
and licences): the workloads the benchmarks and examples run, JSONSchemaBench subsets and the
JSON Schema Test Suite. `DATA_DIR` has the layout `workloads/`, `jsonschemabench/`,
`json-schema-test-suite/tests/draft2020-12/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent
WORKLOADS = DATA_DIR / "workloads"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def workload(name: str) -> Path:
    """Path of a shipped workload file, e.g. `workload("gsm8k_test.jsonl")`."""
    path = WORKLOADS / name
    if not path.is_file():
        known = sorted(p.name for p in WORKLOADS.iterdir() if p.is_file())
        raise FileNotFoundError(f"no shipped workload {name!r}; known: {known}")
    return path

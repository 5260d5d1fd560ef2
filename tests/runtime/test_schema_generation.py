"""Every output that finishes with "stop" under a compiled JSONSchemaBench schema parses and
validates. The tiny random model samples at temperature 1, so its outputs wander into odd corners of
each grammar (a sound FSM must still only emit valid instances). The full run over every file on the
default model is `arborlm bench json --coverage --generate`."""

from __future__ import annotations

import pytest

from arborlm.runtime import Engine
from arborlm.runtime.bench.schema_generation import generate_and_validate


@pytest.fixture(scope="module")
def engine(tiny_model_path: str):
    eng = Engine(model=tiny_model_path, dtype="float32", max_total_tokens=16384, max_running_requests=32)
    yield eng
    eng.shutdown()


def test_sampled_outputs_validate(engine: Engine, shared_data) -> None:
    rows = generate_and_validate(engine, shared_data, limit=8, max_new_tokens=256, batch=16,
                                 params={"temperature": 1.0, "seed": 5}, max_regex_chars=20_000)
    total_stop = sum(r["stop"] for r in rows)
    assert sum(r["compiled"] for r in rows) >= 25
    assert total_stop >= 10, rows  # enough outputs finished to make the check meaningful
    for r in rows:
        assert r["valid"] == r["stop"], (r["subset"], r["invalid"])
    engine.check_invariants()

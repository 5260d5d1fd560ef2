"""`arborlm bench programs` end to end at a tiny scale: one JSON line per workload, ratios computed
from the printed timings, fp32 greedy outputs equal across run_batch, Engine.generate and transformers."""

from __future__ import annotations

import json

import pytest

from arborlm.runtime.cli import main


@pytest.mark.slow  # benchmark-style (~1 min): run with `pytest -m slow tests/lang/test_bench_programs.py`
def test_bench_programs_prints_one_line_per_workload(capsys, smollm2_path):
    rc = main(["bench", "programs", "--dtype", "float32", "--threads", "2", "--num-questions", "3",
               "--num-shots", "2", "--max-new-tokens", "6", "--hf-batch-size", "3", "--num-topics", "2",
               "--fork-max-tokens", "4", "--num-traces", "2", "--steps", "2", "--react-max-tokens", "4"])
    assert rc == 0
    rows = {r["workload"]: r for r in (json.loads(line) for line in capsys.readouterr().out.splitlines()
                                       if line.startswith("{"))}
    assert sorted(rows) == ["fork_join_tips", "gsm8k_run_batch", "react_replay"]
    g = rows["gsm8k_run_batch"]
    assert g["failed"] == [] and g["num_programs"] == 3
    assert g["run_batch_over_engine_generate"] == pytest.approx(g["run_batch_s"] / g["engine_generate_s"], rel=0.05)
    assert g["speedup_vs_hf_batched"] == pytest.approx(g["hf_batched_s"] / g["run_batch_s"], rel=0.05)
    assert g["identical_vs_engine_generate"] == 1.0 and g["identical_vs_hf_batched"] == 1.0
    assert g["cached_share"] > 0.5
    f = rows["fork_join_tips"]
    assert f["failed"] == [] and f["identical_summaries_vs_engine_generate"] == 1.0
    r = rows["react_replay"]
    assert r["failed"] == [] and r["cached_share"] >= 0.8 and r["cached_tokens"] <= r["prompt_tokens"]

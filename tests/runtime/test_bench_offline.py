"""`arborlm bench offline` end to end on a tiny workload: one JSON line per workload, with both
sides timed in alternation and our greedy output equal to transformers' (fp32)."""

from __future__ import annotations

import json
import statistics

import pytest

from arborlm.runtime.cli import main


def test_bench_offline_prints_one_line_per_workload(capsys):
    rc = main(["bench", "offline", "--dtype", "float32", "--threads", "2", "--workloads", "few-shot,independent",
               "--num-few-shot", "2", "--num-independent", "2", "--max-new-tokens", "8", "--repeats", "2",
               "--sequential-limit", "1"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["workload"] for r in rows] == ["few-shot", "independent"]
    for r in rows:
        assert r["repeats"] == 2 and len(r["arborlm_runs_s"]) == 2 and len(r["hf_batched_runs_s"]) == 2
        assert r["arborlm_s"] > 0 and r["hf_batched_s"] > 0
        assert r["arborlm_s"] == pytest.approx(statistics.median(r["arborlm_runs_s"]), abs=0.011)
        assert r["speedup_vs_hf_batched"] == pytest.approx(r["hf_batched_s"] / r["arborlm_s"], rel=0.05)
        assert r["dtype"] == "float32" and r["threads"] == 2
        assert r["greedy_identical_vs_hf_batched"] == 1.0  # fp32: the same tokens as transformers
        assert r["greedy_identical_vs_hf_sequential"] == 1.0
    assert rows[0]["cached_token_share"] > 0.4  # the second question reuses the 8-shot prefix (~half of all)

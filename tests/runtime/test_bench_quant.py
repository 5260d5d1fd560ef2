"""`arborlm bench offline --quantization ...` end to end on the tiny model: one JSON line per
(workload, system), medians of alternated runs, ratios against unquantized arborlm."""

from __future__ import annotations

import json
import statistics

import pytest

from arborlm.runtime.cli import main


def test_bench_quantization_prints_one_line_per_system(capsys, tiny_model_path: str) -> None:
    rc = main(["bench", "offline", "--model", tiny_model_path, "--dtype", "float32", "--threads", "2",
               "--quantization", "none,int8,int4", "--workloads", "decode-b1,independent",
               "--num-independent", "3", "--max-new-tokens", "6", "--repeats", "2"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    rows = [r for r in rows if "workload" in r]
    systems = ["arborlm-none", "arborlm-int8", "arborlm-int4", "transformers-float32"]
    assert [(r["workload"], r["system"]) for r in rows] == [(w, s) for w in ("decode-b1", "independent") for s in systems]
    for r in rows:
        n = r["num_prompts"] * 6
        assert len(r["runs_s"]) == 2
        assert r["output_tok_s"] == pytest.approx(n / statistics.median(r["runs_s"]), rel=0.05)
        assert r["num_prompts"] == (1 if r["workload"] == "decode-b1" else 3)
    assert all(r["vs_arborlm_none"] == 1.0 for r in rows if r["system"] == "arborlm-none")
    with pytest.raises(SystemExit, match="few-shot"):
        main(["bench", "offline", "--model", tiny_model_path, "--dtype", "float32", "--quantization", "none",
              "--workloads", "few-shot"])

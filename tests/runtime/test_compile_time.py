"""compile_time.py: censored percentiles, the summary row, and the forked compile child."""

from __future__ import annotations

import math
import os

import pytest

from arborlm.runtime.bench.compile_time import Sample, censored_pct, rejection_key, summarize


def test_censored_pct_uncensored_matches_rank_rule() -> None:
    xs = [float(i) for i in range(1, 101)]  # 1..100
    assert censored_pct(xs, 0, 0.0, 0.5) == (51.0, False)  # sorted[int(0.5 * 100)]
    assert censored_pct(xs, 0, 0.0, 0.95) == (96.0, False)
    assert censored_pct([], 0, 5.0, 0.5)[0] != censored_pct([], 0, 5.0, 0.5)[0]  # nan
    assert censored_pct([], 0, 5.0, 0.5)[1] is False


def test_censored_pct_ranks_censored_last_and_flags_lower_bound() -> None:
    xs = [float(i) for i in range(1, 95)]  # 94 compiled, 6 censored at the cap: 6% > 5%
    assert censored_pct(xs, 6, 1000.0, 0.5) == (51.0, False)
    assert censored_pct(xs, 6, 1000.0, 0.95) == (1000.0, True)
    # 4% censored: p95 still lands on a measured value
    assert censored_pct([float(i) for i in range(1, 97)], 4, 1000.0, 0.95) == (96.0, False)
    assert censored_pct([], 3, 60.0, 0.5) == (60.0, True)


def test_rejection_key() -> None:
    assert rejection_key("unsupported JSON Schema keyword 'patternProperties' at #/a") == "patternProperties"
    assert rejection_key("JSON schema nested too deeply") == "JSON schema nested too deeply"


def test_summarize_counts_failures_apart_from_timings() -> None:
    samples = [Sample("s", i, "ok", cold_ms=float(i + 1), cached_ms=0.01, source_ms=0.5, engine_ms=float(i) + 0.5)
               for i in range(8)]
    samples.append(Sample("s", 8, "capped"))
    samples.append(Sample("s", 9, "failed", reason="unsupported JSON Schema keyword 'if' at #"))
    row = summarize(samples, "s", cap_s=2.0)
    assert (row["num_schemas"], row["compiled"], row["capped"], row["failed"], row["crashed"]) == (10, 8, 1, 1, 0)
    assert row["top_failures"] == {"if": 1}
    assert row["censored_share"] == round(1 / 9, 3)
    assert row["cold_ms_p50"] == 5.0 and not row["cold_ms_p50_lower_bound"]  # 9 timed: sorted[4]
    assert row["cold_ms_p95"] == 2000.0 and row["cold_ms_p95_lower_bound"]
    assert row["cached_ms_p50"] == 0.01
    assert not math.isnan(row["source_share_of_cold"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_compile_ok_and_capped(tokenizer) -> None:
    from arborlm.constrain import get_token_vocab
    from arborlm.runtime.bench.compile_time import _run_child

    get_token_vocab(tokenizer)
    res = _run_child(tokenizer, ({"type": "string", "maxLength": 3},), cap_s=60.0, mem_extra_bytes=0)
    assert res["status"] == "ok" and res["cached_ms"] < res["cold_ms"]
    assert res["source_ms"] >= 0 and res["engine_ms"] >= 0
    assert _run_child(tokenizer, ({"type": "object"},), cap_s=0.05, mem_extra_bytes=0) == {"status": "capped"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_checks_on_llguidance(tokenizer) -> None:
    """The compile child also checks label agreement (token level) and the batch-16 mask time."""
    from arborlm.runtime.bench.compile_time import _run_child

    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}}, "required": ["n"]}
    tests = [{"data": {"n": 3}, "valid": True}, {"data": {"n": 12}, "valid": False}, {"data": {}, "valid": False}]
    res = _run_child(tokenizer, (schema, "llguidance", ("coverage", "mask"), tests), cap_s=60.0, mem_extra_bytes=0)
    assert res["status"] == "ok", res
    assert res["agreement"] == {"labelled": 3, "agree": 3, "accepted_invalid": 0, "rejected_valid": 0}
    assert len(res["mask_ms"]) >= 3 and all(t > 0 for t in res["mask_ms"])

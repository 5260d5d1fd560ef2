"""Issue 11 regressions through the Engine on the tiny random Llama: tiny temperature / top_p /
repetition_penalty (defect 2), one request's failure isolated (defect 2), max_new_tokens=0
(defect 3), min_new_tokens with stop strings (defect 8). Each checks the KV pool returns to baseline."""

from __future__ import annotations

import re

import pytest
from kv_check import assert_kv_baseline

from arborlm.runtime import Engine
from arborlm.runtime.types import Req, SamplingParams

PROMPT = "The quick brown fox jumps over the lazy dog. Then"


@pytest.fixture(scope="module")
def engine(tiny_model_path: str):
    eng = Engine(model=tiny_model_path, dtype="float32", max_total_tokens=4096, max_running_requests=16)
    yield eng
    eng.shutdown()


@pytest.fixture(autouse=True)
def back_to_baseline(engine: Engine):
    yield
    assert_kv_baseline(engine)


def greedy(n: int = 16, **kw) -> dict:
    return {"temperature": 0.0, "max_new_tokens": n, "ignore_eos": True, **kw}


def test_tiny_temperature_with_grammar_is_greedy(engine: Engine) -> None:
    """Before: logits / 1e-39 = NaN, argmax 0, grammar.advance(0) raised out of step() and every
    later generate failed."""
    base = engine.generate(PROMPT, greedy(8, regex="[a-z]+"))
    out = engine.generate(PROMPT, greedy(8, regex="[a-z]+", temperature=1e-39))
    assert out["output_ids"] == base["output_ids"]
    assert re.fullmatch("[a-z]+", out["text"])
    assert engine.generate(PROMPT, greedy(4))["meta"]["completion_tokens"] == 4


def test_underflowing_top_p_and_repetition_penalty(engine: Engine) -> None:
    base = engine.generate(PROMPT, greedy(12))["output_ids"]
    top1 = engine.generate(PROMPT, {"temperature": 1.0, "top_p": 1e-46, "max_new_tokens": 12, "ignore_eos": True})
    assert top1["output_ids"] == base  # keeps only the most likely token, as top_p -> 0 should
    tiny = engine.generate(PROMPT, greedy(12, repetition_penalty=1e-46))["output_ids"]
    small = engine.generate(PROMPT, greedy(12, repetition_penalty=1e-6))["output_ids"]
    assert tiny == small and 0 not in tiny
    with pytest.raises(ValueError, match="temperature"):
        engine.generate(PROMPT, greedy(4, temperature=float("nan")))


def test_failing_request_leaves_others_identical(engine: Engine) -> None:
    sched = engine.scheduler
    prompts = [PROMPT, "Once upon a time", "One two three four five six"]
    solo = [engine.generate(p, greedy(12))["output_ids"] for p in prompts]
    real_sample = sched.sample_fn
    calls = {"bad": 0}

    def sample_failing_for_bad(logits, reqs):
        if any(r.rid == "bad" for r in reqs):
            calls["bad"] += 1
            if calls["bad"] >= 3:
                raise RuntimeError("injected sampling failure")
        return real_sample(logits, reqs)

    sched.sample_fn = sample_failing_for_bad
    try:
        reqs = [Req(f"ok{i}", engine.tokenizer.encode(p), SamplingParams(**greedy(12))) for i, p in enumerate(prompts)]
        bad = Req("bad", engine.tokenizer.encode("A request that will fail"), SamplingParams(**greedy(12)))
        for r in [reqs[0], bad, *reqs[1:]]:
            sched.add_request(r)
        errors = {}
        while sched.has_work():
            for out in sched.step():
                if out.finished and out.error is not None:
                    errors[out.rid] = out.error
    finally:
        sched.sample_fn = real_sample
    assert list(errors) == ["bad"] and errors["bad"].code == 500 and "injected" in errors["bad"].message
    assert bad.finish_reason.kind == "abort" and len(bad.output_ids) == 2
    assert [r.output_ids for r in reqs] == solo
    assert engine.generate(PROMPT, greedy(12))["output_ids"] == solo[0]


def test_max_new_tokens_zero_returns_nothing_and_caches_the_prompt(engine: Engine) -> None:
    engine.flush_cache()
    ids = engine.tokenizer.encode(PROMPT)
    out = engine.generate(PROMPT, {"max_new_tokens": 0, "logprob_start_len": 0})
    assert out["output_ids"] == [] and out["text"] == ""
    assert out["meta"]["finish_reason"] == {"type": "length"} and out["meta"]["completion_tokens"] == 0
    lps = out["meta"]["prompt_logprobs"]
    assert len(lps) == len(ids) and lps[0] is None and all(isinstance(x, float) for x in lps[1:])
    assert engine.stats()["tokens_in_tree"] >= len(ids)
    again = engine.generate(PROMPT, greedy(2))
    assert again["meta"]["cached_tokens"] == len(ids) - 1  # all but the last token, which gives logits


def test_min_new_tokens_trims_at_the_stop_that_stopped(engine: Engine) -> None:
    base = engine.generate(PROMPT, greedy(40))
    tok = engine.tokenizer
    ids = base["output_ids"]
    texts = [tok.decode(ids[: k + 1]) for k in range(len(ids))]
    # a stop character whose first occurrence ends within the first tokens and that occurs again later
    for ch in sorted(set(base["text"]) - set(" \n"), key=base["text"].find):
        first = next(k for k, t in enumerate(texts) if ch in t)
        # tokens after the first occurrence whose text adds another one
        later = [k for k in range(first + 1, len(ids)) if texts[k].count(ch) > texts[k - 1].count(ch)]
        if later:
            break
    else:
        pytest.skip("no repeated character in this output")
    out = engine.generate(PROMPT, greedy(40, stop=[ch], min_new_tokens=first + 2))
    assert out["meta"]["finish_reason"]["matched"] == ch
    assert len(out["output_ids"]) == later[0] + 1
    full = tok.decode(out["output_ids"])
    stopped_at = full.find(ch, len(texts[later[0] - 1]))  # the first occurrence in the last token's text
    assert out["text"] == full[:stopped_at] and stopped_at > full.find(ch)
    assert "".join(engine.stream(PROMPT, greedy(40, stop=[ch], min_new_tokens=first + 2))) == out["text"]

"""Greedy output of the Engine equals plain transformers greedy `generate` (fp32, default model),
and stays equal under a full cache hit, shared prefixes, chunked prefill, batching and retraction."""

from __future__ import annotations

import pytest
import torch
from greedy_prompts import PROMPTS
from kv_check import assert_kv_baseline

from arborlm.runtime import Engine

NEW_TOKENS = 32
GREEDY = {"temperature": 0.0, "max_new_tokens": NEW_TOKENS}


@pytest.fixture(scope="module")
def hf_reference(smollm2_path: str, tokenizer) -> dict[str, list[int]]:
    """token ids that transformers' own greedy generate produces, per prompt (fp32, one at a time)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    extra = [
        "A long shared system prompt. " * 20 + "Question: what is two plus two?",
        "A long shared system prompt. " * 20 + "Question: name a red fruit.",
        "Short.",
        "Numbers: " + ", ".join(str(i) for i in range(40)),
    ]
    out: dict[str, list[int]] = {}
    with torch.inference_mode():
        for p in PROMPTS + extra:
            ids = tokenizer(p, return_tensors="pt", add_special_tokens=False).input_ids
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=2)
            out[p] = gen[0, ids.shape[1]:].tolist()
    return out


@pytest.fixture(scope="module")
def engine(smollm2_path: str):
    eng = Engine(model=smollm2_path, dtype="float32", max_total_tokens=8192, max_running_requests=32)
    yield eng
    eng.shutdown()


def test_greedy_matches_transformers(engine: Engine, hf_reference) -> None:
    outs = engine.generate(PROMPTS, GREEDY)
    for p, o in zip(PROMPTS, outs):
        assert o["output_ids"] == hf_reference[p], p
    assert_kv_baseline(engine)


def test_full_cache_hit_keeps_output(engine: Engine, hf_reference) -> None:
    first = engine.generate(PROMPTS[0], GREEDY)
    second = engine.generate(PROMPTS[0], GREEDY)
    assert second["meta"]["cached_tokens"] == second["meta"]["prompt_tokens"] - 1
    assert first["output_ids"] == second["output_ids"] == hf_reference[PROMPTS[0]]
    assert_kv_baseline(engine)


def test_shared_prefix_keeps_output(engine: Engine, hf_reference) -> None:
    prefix = "A long shared system prompt. " * 20
    prompts = [prefix + "Question: what is two plus two?", prefix + "Question: name a red fruit."]
    a = engine.generate(prompts[0], GREEDY)
    b = engine.generate(prompts[1], GREEDY)
    assert b["meta"]["cached_tokens"] >= 100  # the shared prefix came from the tree
    assert a["output_ids"] == hf_reference[prompts[0]]
    assert b["output_ids"] == hf_reference[prompts[1]]
    assert_kv_baseline(engine)


def test_batch_of_16_mixed_lengths(engine: Engine, hf_reference) -> None:
    engine.flush_cache()
    pool = PROMPTS + ["Short.", "Numbers: " + ", ".join(str(i) for i in range(40))]
    prompts = [pool[i % len(pool)] for i in range(16)]
    outs = engine.generate(prompts, GREEDY)
    for p, o in zip(prompts, outs):
        assert o["output_ids"] == hf_reference[p], p
    assert_kv_baseline(engine)


def test_chunked_prefill_keeps_output(smollm2_path: str, hf_reference) -> None:
    eng = Engine(model=smollm2_path, dtype="float32", max_total_tokens=4096, chunked_prefill_size=16,
                 max_prefill_tokens=48)
    prompt = "Numbers: " + ", ".join(str(i) for i in range(40))
    outs = eng.generate([prompt, PROMPTS[2]], GREEDY)
    assert outs[0]["meta"]["num_forward_passes"] > NEW_TOKENS  # it really ran in chunks
    assert outs[0]["output_ids"] == hf_reference[prompt]
    assert outs[1]["output_ids"] == hf_reference[PROMPTS[2]]
    assert_kv_baseline(eng)


def test_retraction_keeps_output(smollm2_path: str, hf_reference) -> None:
    """A pool too small for the batch: requests are retracted and re-admitted, outputs unchanged."""
    eng = Engine(model=smollm2_path, dtype="float32", max_total_tokens=200, disable_radix_cache=False)
    prompts = PROMPTS[:6]
    outs = eng.generate(prompts, GREEDY)
    assert sum(o["meta"]["num_retractions"] for o in outs) > 0, "the pool was not small enough to retract"
    for p, o in zip(prompts, outs):
        assert o["output_ids"] == hf_reference[p], p
    assert_kv_baseline(eng)


def test_no_radix_cache_same_output(smollm2_path: str, hf_reference) -> None:
    eng = Engine(model=smollm2_path, dtype="float32", max_total_tokens=2048, disable_radix_cache=True)
    outs = eng.generate(PROMPTS[:2] * 2, GREEDY)
    assert all(o["meta"]["cached_tokens"] == 0 for o in outs)
    for p, o in zip(PROMPTS[:2] * 2, outs):
        assert o["output_ids"] == hf_reference[p]
    s = eng.stats()
    assert s["free_slots"] == s["kv_total_tokens"] and s["tokens_in_tree"] == 0
    eng.check_invariants()

"""The in-process backend: select scores vs plain transformers (fp32), prefix caching of run_batch
and fork, concurrent programs sharing scheduler steps, greedy output unchanged by caching and
batching, KV accounting after errors."""

from __future__ import annotations

import math

import pytest
import torch

import arborlm as al
from arborlm.select_scoring import split_choice_tokens, unconditional_start_id


@pytest.fixture(scope="module")
def hf_model(smollm2_path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_path, torch_dtype=torch.float32).eval()


def hf_token_logprobs(model, ids: list[int], start: int) -> list[float]:
    """logprob of ids[j] given ids[:j], for j >= start (plain transformers, fp32)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return [lp[j - 1, ids[j]].item() for j in range(start, len(ids))]


def expected_scores(model, tokenizer, prefix: str, choices: list[str], method: str) -> list[float]:
    toks = split_choice_tokens(lambda t: tokenizer.encode(t, add_special_tokens=False), prefix, choices)
    cond = [hf_token_logprobs(model, ids, toks.shared_len) for ids in toks.full_ids]
    if method == "unconditional_likelihood_normalized":
        start = unconditional_start_id(tokenizer)
        uncond = [hf_token_logprobs(model, [start, *toks.choice_ids(i)], 1) for i in range(len(choices))]
        return [sum(c - u for c, u in zip(cl, ul)) / len(cl) for cl, ul in zip(cond, uncond)]
    return [sum(c) / len(c) for c in cond]


@pytest.mark.parametrize("method", ["token_length_normalized", "greedy_token", "unconditional_likelihood_normalized"])
def test_select_scores_equal_transformers_fp32(engine_backend, hf_model, tokenizer, method):
    prefix = "Question: which animal barks?\nAnswer: the"
    choices = [" dog", " cat", " small grey mouse"]
    result = engine_backend.select(prefix, choices, method)
    want = expected_scores(hf_model, tokenizer, prefix, choices, method)
    assert result.meta.scores == pytest.approx(want, abs=2e-3)
    if method != "greedy_token":
        assert result.index == max(range(3), key=lambda i: want[i])


def test_select_choice_merging_with_the_prefix(engine_backend, hf_model, tokenizer):
    prefix, choices = "The sky is bl", ["ue", "ack"]
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
    toks = split_choice_tokens(lambda t: tokenizer.encode(t, add_special_tokens=False), prefix, choices)
    # " bl" + "ue" is the single token " blue": the scored tokens start before the prefix's end
    assert toks.shared_len == len(prefix_ids) - 1
    assert [tokenizer.decode(toks.choice_ids(i)) for i in range(2)] == [" blue", " black"]
    result = engine_backend.select(prefix, choices, "token_length_normalized")
    assert result.meta.scores == pytest.approx(
        expected_scores(hf_model, tokenizer, prefix, choices, "token_length_normalized"), abs=2e-3)
    assert result.choice == "ue"


FEW_SHOT = "".join(f"Question: What is {a} plus {b}?\nAnswer: {a + b}\n\n" for a, b in
                   [(3, 4), (10, 5), (7, 8), (12, 30), (6, 6), (21, 9), (14, 11), (8, 13)])


@al.program
def arithmetic(s, a, b):
    s += FEW_SHOT
    s += f"Question: What is {a} plus {b}?\nAnswer:"
    s += al.gen("sum", max_tokens=3, stop="\n")


def test_run_batch_sends_the_shared_prefix_once(engine_backend):
    trace = arithmetic.trace(backend=engine_backend, a=None, b=None)
    assert trace.constant_prefix == FEW_SHOT + "Question: What is "
    engine_backend.max_requests_per_step = 0
    items = [{"a": i, "b": i + 1} for i in range(16)]
    states = arithmetic.run_batch(items, backend=engine_backend, num_threads=16, temperature=0)
    assert states.failed == []
    assert states.prefix == trace.constant_prefix and states.prefix_tokens > 100
    # every item found the prefix in the cache: the prefix was computed once
    for s in states:
        assert s.meta().cached_tokens >= states.prefix_tokens - 1
    assert states.cached_share >= 0.8
    # the 16 programs' gens shared scheduler steps (one engine loop, no global lock)
    assert engine_backend.max_requests_per_step >= 8
    # greedy output is the same as one program at a time
    for i in (0, 7):
        alone = arithmetic.run(backend=engine_backend, temperature=0, **items[i])
        assert alone["sum"] == states[i]["sum"]


class CountingBackend:
    """Wraps a backend and records the calls (to check what fork sends)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name in ("generate", "stream", "select", "cache_prefix"):
            def wrapped(*args, **kwargs):
                self.calls.append((name, args[0]))
                return attr(*args, **kwargs)
            return wrapped
        return attr


def test_fork_sends_the_parent_prefix_once(engine_backend):
    @al.program
    def brainstorm(s):
        s += FEW_SHOT + "Now four different questions about numbers:\n"
        forks = s.fork(4)
        for i, f in enumerate(forks):
            f += f"{i}. Question:" + al.gen("q", max_tokens=4, stop="\n")
        forks.join()

    spy = CountingBackend(engine_backend)
    state = brainstorm.run(backend=spy, temperature=0)
    prefix = FEW_SHOT + "Now four different questions about numbers:\n"
    assert spy.calls[0] == ("cache_prefix", prefix)
    assert [c[0] for c in spy.calls].count("cache_prefix") == 1
    gens = [c for c in spy.calls if c[0] == "generate"]
    assert len(gens) == 4 and all(p.startswith(prefix) for _, p in gens)
    prefix_tokens = len(engine_backend.encode(prefix))
    metas = state.meta("q")
    assert all(m.cached_tokens >= prefix_tokens - 1 for m in metas)
    assert len(state["q"]) == 4


def test_greedy_gen_equals_transformers(engine_backend, hf_model, tokenizer):
    prompt = "The three primary colors are"
    state = al.program(lambda s: s.__iadd__(prompt + al.gen("x", max_tokens=8))).run(
        backend=engine_backend, temperature=0)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    assert state["x"] == tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def test_errors_leave_kv_accounting_at_baseline(engine_backend):
    @al.program
    def bad(s):
        s += "Hello" + al.gen("x", max_tokens=2, temperature=0)
        s += al.gen("y", json_schema={"$ref": "http://example.com/x.json"})

    states = bad.run_batch([{}] * 3, backend=engine_backend)
    assert states.failed == [0, 1, 2]
    stats = engine_backend.stats()
    assert stats["num_running"] == 0 and stats["num_waiting"] == 0
    assert stats["kv_used_tokens"] == stats["tokens_in_tree"]  # only the cache holds slots
    assert stats["protected_tokens"] == 0
    engine_backend.runtime.check_invariants()
    assert not math.isnan(states.cached_share)

"""ModelRunner vs. plain transformers: full prefill, prefix + extend, decode, mixed batches,
prompt logprobs. Req/Batch are built by hand with a trivial slot counter (no scheduler)."""

from __future__ import annotations

import pytest
import torch
from kv_check import Slots

from arborlm.kernels.attention import build_metadata
from arborlm.runtime.config import EngineConfig
from arborlm.runtime.model_loader import load_model
from arborlm.runtime.model_runner import ModelRunner
from arborlm.runtime.types import Batch, ForwardMode, Req, SamplingParams

ATOL = 1e-4



def make_runner(path: str, dtype: str = "float32") -> ModelRunner:
    cfg = EngineConfig(model=path, dtype=dtype, max_total_tokens=2048, max_running_requests=8, max_context_len=512)
    return ModelRunner(cfg, load_model(cfg))


def hf_logits(path: str, ids: list[int], dtype=torch.float32) -> torch.Tensor:
    """`[len(ids), vocab]` float32 logits of transformers' own forward."""
    from transformers import AutoModelForCausalLM

    model = _HF_CACHE.get((path, dtype))
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        _HF_CACHE[(path, dtype)] = model
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float()


_HF_CACHE: dict = {}


def new_req(rid: str, ids: list[int], row: int, **params) -> Req:
    return Req(rid=rid, input_ids=list(ids), params=SamplingParams(**params), req_pool_idx=row)


def extend(runner: ModelRunner, slots: Slots, reqs: list[Req], lens: list[int]) -> torch.Tensor:
    """Give each request `lens[i]` new slots and run them as one EXTEND batch."""
    for r, n in zip(reqs, lens, strict=True):
        r.slot_ids += slots.take(n)
    return runner.forward(Batch(reqs, lens, ForwardMode.EXTEND, [True] * len(reqs)))


def decode(runner: ModelRunner, slots: Slots, reqs: list[Req], next_ids: list[int]) -> torch.Tensor:
    for r, tok in zip(reqs, next_ids, strict=True):
        r.output_ids.append(tok)
        r.slot_ids += slots.take(1)
    return runner.forward(Batch(reqs, [1] * len(reqs), ForwardMode.DECODE, [True] * len(reqs)))


def all_position_logits(runner: ModelRunner, req: Req) -> torch.Tensor:
    """Logits at every new position of a fresh prefill (the model supports any logits_idx)."""
    n = len(req.slot_ids)
    runner.req_to_token.write_row(req.req_pool_idx, req.slot_ids)
    out_slots = torch.tensor(req.slot_ids, dtype=torch.int64)
    meta = build_metadata(runner.req_to_token.table, [req.req_pool_idx], [0], [n], out_slots)
    with torch.inference_mode():
        return runner.model.forward(
            torch.tensor(req.fill_ids), torch.arange(n), meta,
            runner.kv_pool.k_buffers, runner.kv_pool.v_buffers, None,
        )


@pytest.fixture(scope="module")
def tiny_runner(tiny_model_path):
    return make_runner(tiny_model_path)


@pytest.fixture(scope="module")
def smol_runner(smollm2_path):
    return make_runner(smollm2_path)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    texts = [
        "The capital of France is Paris, and the capital of Germany is",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
        "Once upon a time, in a land far, far away, there lived a small dragon who loved to read books about",
    ]
    return [tokenizer(t).input_ids for t in texts]


# (a) full-prompt logits equal transformers
@pytest.mark.parametrize("which", ["tiny", "smol"])
def test_full_prompt_logits_match_hf(which, tiny_runner, smol_runner, tiny_model_path, smollm2_path, prompts):
    runner, path = (tiny_runner, tiny_model_path) if which == "tiny" else (smol_runner, smollm2_path)
    slots = Slots()
    for ids in prompts[:2] if which == "tiny" else prompts[:1]:  # smollm2 is slow on 2 shared cores
        req = new_req("a", ids, row=3)
        req.slot_ids = slots.take(len(ids))
        ours = all_position_logits(runner, req)
        ref = hf_logits(path, ids)
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=1e-4)
        # the runner's own path returns only the last position
        req2 = new_req("b", ids, row=5)
        last = extend(runner, slots, [req2], [len(ids)])
        assert last.shape == (1, runner.vocab_size) and last.dtype == torch.float32
        torch.testing.assert_close(last[0], ref[-1], atol=ATOL, rtol=1e-4)


# (b) prefix prefill, then extend the rest over the reused prefix slots (tiny: same code path, and
# (c) covers extending over a prefix on smollm2 one token at a time)
def test_prefix_then_extend_equals_full(tiny_runner, prompts):
    runner = tiny_runner
    ids = prompts[2]
    slots = Slots()
    full = extend(runner, slots, [new_req("full", ids, row=0)], [len(ids)])[0]
    cut = 9
    first = new_req("first", ids[:cut], row=1)
    extend(runner, slots, [first], [cut])
    # a second request reuses the first one's prefix slots (as a radix-cache hit would), new row
    second = new_req("second", ids, row=2)
    second.slot_ids = list(first.slot_ids)
    second.prefix_len = cut
    got = extend(runner, slots, [second], [len(ids) - cut])[0]
    torch.testing.assert_close(got, full, atol=ATOL, rtol=1e-4)
    # chunked: the rest in two chunks on the same row
    third = new_req("third", ids, row=1)
    third.slot_ids = list(first.slot_ids)
    extend(runner, slots, [third], [5])
    got2 = extend(runner, slots, [third], [len(ids) - cut - 5])[0]
    torch.testing.assert_close(got2, full, atol=ATOL, rtol=1e-4)


# (c) prefill then decode steps equal transformers at those positions
@pytest.mark.parametrize("which", ["tiny", "smol"])
def test_decode_steps_match_hf(which, tiny_runner, smol_runner, tiny_model_path, smollm2_path, prompts):
    runner, path = (tiny_runner, tiny_model_path) if which == "tiny" else (smol_runner, smollm2_path)
    seq = prompts[0] + prompts[1][:6]
    p = len(prompts[0])
    ref = hf_logits(path, seq)
    slots = Slots()
    req = new_req("c", seq[:p], row=4)
    out = extend(runner, slots, [req], [p])
    torch.testing.assert_close(out[0], ref[p - 1], atol=ATOL, rtol=1e-4)
    for j in range(p, len(seq)):
        out = decode(runner, slots, [req], [seq[j]])
        torch.testing.assert_close(out[0], ref[j], atol=ATOL, rtol=1e-4)


# (d) a batch mixing extend and decode rows equals running each row alone
def test_mixed_batch_equals_each_alone(tiny_model_path, prompts):
    together, alone = make_runner(tiny_model_path), make_runner(tiny_model_path)
    results: dict[str, list[torch.Tensor]] = {}
    for name, runner in (("together", together), ("alone", alone)):
        slots = Slots()
        a = new_req("a", prompts[0], row=0)  # will decode
        b = new_req("b", prompts[1], row=1)  # will decode
        c = new_req("c", prompts[2], row=2)  # prefix cached, extends the rest
        d = new_req("d", prompts[1][:4], row=6)  # fresh prompt
        e = new_req("e", prompts[2][:1], row=7)  # fresh prompt of one token
        extend(runner, slots, [a], [len(a.input_ids)])
        extend(runner, slots, [b], [len(b.input_ids)])
        extend(runner, slots, [c], [7])
        rows = [a, c, b, d, e]
        for r in (a, b):
            r.output_ids.append(42)
        lens = [1, len(c.input_ids) - 7, 1, len(d.input_ids), 1]
        if name == "together":
            results[name] = list(extend(runner, slots, rows, lens))
        else:
            results[name] = [extend(runner, slots, [r], [n])[0] for r, n in zip(rows, lens, strict=True)]
    for x, y in zip(results["together"], results["alone"], strict=True):
        torch.testing.assert_close(x, y, atol=ATOL, rtol=1e-4)


def test_decode_batch_ragged_equals_alone(tiny_runner, prompts):
    slots = Slots()
    reqs = [new_req(str(i), prompts[i], row=i) for i in range(3)]
    alone_first = [extend(tiny_runner, slots, [r], [len(r.input_ids)])[0] for r in reqs]
    batched = decode(tiny_runner, slots, reqs, [int(x.argmax()) for x in alone_first])
    for r, row_logits in zip(reqs, batched, strict=True):
        solo = new_req("solo", r.fill_ids, row=5)
        ref = extend(tiny_runner, slots, [solo], [len(solo.input_ids)])[0]
        torch.testing.assert_close(row_logits, ref, atol=ATOL, rtol=1e-4)


# (e) prompt logprobs equal log_softmax of transformers' logits
@pytest.mark.parametrize("which", ["tiny", "smol"])
def test_prompt_logprobs_match_hf(which, tiny_runner, smol_runner, tiny_model_path, smollm2_path, prompts):
    runner, path = (tiny_runner, tiny_model_path) if which == "tiny" else (smol_runner, smollm2_path)
    ids = prompts[2]
    ref = torch.log_softmax(hf_logits(path, ids), dim=-1)  # ref[p, input_ids[p+1]] = logprob of input_ids[p+1]
    slots = Slots()
    cases = ((0, [len(ids)]), (5, [8, len(ids) - 8]), (3, [2, 10, len(ids) - 12]))
    for lsl, chunks in cases if which == "tiny" else cases[2:]:
        req = new_req("e", ids, row=0, logprob_start_len=lsl, top_logprobs_num=3)
        for n in chunks:
            extend(runner, slots, [req], [n])
        assert len(req.prompt_logprobs) == len(ids)
        assert req.prompt_logprobs[: lsl + 1] == [None] * (lsl + 1)
        expected = [ref[j - 1, ids[j]].item() for j in range(lsl + 1, len(ids))]
        torch.testing.assert_close(torch.tensor(req.prompt_logprobs[lsl + 1 :]), torch.tensor(expected), atol=ATOL, rtol=0)
        assert len(req.prompt_top_logprobs) == len(ids)
        top = req.prompt_top_logprobs[-1]
        vals, idx = ref[len(ids) - 2].topk(3)
        assert [t for t, _ in top] == idx.tolist()
        torch.testing.assert_close(torch.tensor([v for _, v in top]), vals, atol=ATOL, rtol=0)
    # no logprobs requested: nothing filled
    req = new_req("none", ids, row=0)
    extend(runner, slots, [req], [len(ids)])
    assert req.prompt_logprobs == [] and req.prompt_top_logprobs == []


def test_bfloat16_close_to_hf(tiny_model_path, prompts):
    runner = make_runner(tiny_model_path, "bfloat16")
    assert runner.dtype == torch.bfloat16
    ids = prompts[0]
    ours = extend(runner, Slots(), [new_req("bf", ids, row=0)], [len(ids)])[0]
    ref = hf_logits(tiny_model_path, ids, torch.bfloat16)[-1]
    assert (ours - ref).abs().max() < 0.1
    assert ours.argmax() == ref.argmax()


def test_runner_attributes_and_errors(tiny_runner):
    assert tiny_runner.vocab_size == 49152
    assert tiny_runner.num_slots == 2049
    assert tiny_runner.max_context_len == 512
    assert tiny_runner.kv_pool.k_buffers[0].shape == (2049, 2, 16)
    assert tiny_runner.req_to_token.table.shape == (8, 512)
    req = new_req("long", [1] * 600, row=0)
    req.slot_ids = list(range(1, 601))
    with pytest.raises(ValueError, match="max_context_len"):
        tiny_runner.forward(Batch([req], [600], ForwardMode.EXTEND, [True]))


def test_unsupported_config_raises(tiny_model_path):
    from transformers import AutoConfig

    from arborlm.runtime.models.llama import LlamaArgs

    cfg = AutoConfig.from_pretrained(tiny_model_path)
    cfg.hidden_act = "gelu"
    with pytest.raises(ValueError, match="gelu"):
        LlamaArgs.from_hf(cfg)
    cfg = AutoConfig.from_pretrained(tiny_model_path)
    cfg.rope_parameters = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}
    with pytest.raises(ValueError, match="yarn"):
        LlamaArgs.from_hf(cfg)


def _tiny_variant(tmp_path, tokenizer, kind: str) -> str:
    """A 2-layer random model of another supported family / RoPE variant, saved as an HF folder."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    common = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256, rms_norm_eps=1e-6,
    )
    if kind == "qwen2":  # q/k/v biases, untied lm_head
        cfg, cls = Qwen2Config(**common, tie_word_embeddings=False), Qwen2ForCausalLM
    elif kind == "mistral":
        cfg, cls = MistralConfig(**common, head_dim=16, sliding_window=None, tie_word_embeddings=False), MistralForCausalLM
    else:  # llama with scaled RoPE; a small original context so test positions hit the scaled bands
        rope = {"rope_type": kind, "rope_theta": 10000.0, "factor": 4.0}
        if kind == "llama3":
            rope.update(low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)
        cfg, cls = LlamaConfig(**common, rope_parameters=rope, attention_bias=True, tie_word_embeddings=True), LlamaForCausalLM
    torch.manual_seed(1)
    model = cls(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:  # weights and biases; norms stay 1 so attention is sharp, RoPE matters
                p.normal_(0.0, 0.15)
    out = tmp_path / kind
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("kind", ["qwen2", "mistral", "llama3", "linear"])
def test_other_families_match_hf(kind, tmp_path, tokenizer, prompts):
    path = _tiny_variant(tmp_path, tokenizer, kind)
    runner = make_runner(path)
    ids = prompts[2] + prompts[0]
    req = new_req(kind, ids, row=0)
    req.slot_ids = Slots().take(len(ids))
    torch.testing.assert_close(all_position_logits(runner, req), hf_logits(path, ids), atol=ATOL, rtol=1e-4)

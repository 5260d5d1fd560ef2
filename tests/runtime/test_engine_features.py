"""Engine features on the tiny random Llama (fast): stop strings, min_new_tokens, seeds, penalties,
logprobs, streaming, bad input. Each test fails if its feature were ignored, and checks the KV
pool returns to baseline."""

from __future__ import annotations

import pytest
import torch
from kv_check import assert_kv_baseline

from arborlm.runtime import Engine

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


def greedy(n: int = 24, **kw) -> dict:
    return {"temperature": 0.0, "max_new_tokens": n, "ignore_eos": True, **kw}


def test_stop_string_split_across_tokens(engine: Engine) -> None:
    base = engine.generate(PROMPT, greedy(24))
    tok = engine.tokenizer
    ids = base["output_ids"]
    # choose a stop string that straddles a token boundary in the middle of the output
    for i in range(4, len(ids) - 2):
        left = tok.decode(ids[:i])
        right = tok.decode(ids[: i + 1])
        if len(left) >= 2 and len(right) - len(left) >= 2 and left[-2:].strip() and right[len(left):][:2].strip():
            stop = left[-2:] + right[len(left): len(left) + 2]
            break
    else:
        pytest.skip("no token boundary with 2 printable chars on each side in this output")
    full = base["text"]
    out = engine.generate(PROMPT, greedy(24, stop=[stop]))
    assert out["meta"]["finish_reason"] == {"type": "stop", "matched": stop}
    assert out["text"] == full[: full.find(stop)]
    assert stop not in out["text"]
    streamed = "".join(engine.stream(PROMPT, greedy(24, stop=[stop])))
    assert streamed == out["text"]


def test_stop_token_ids_and_min_new_tokens(engine: Engine) -> None:
    base = engine.generate(PROMPT, greedy(24))
    t = base["output_ids"][3]
    first = base["output_ids"].index(t)
    stopped = engine.generate(PROMPT, greedy(24, stop_token_ids=[t]))
    assert stopped["output_ids"] == base["output_ids"][: first + 1]
    assert stopped["meta"]["finish_reason"]["matched"] == t
    held = engine.generate(PROMPT, greedy(24, stop_token_ids=[t], min_new_tokens=12))
    assert len(held["output_ids"]) >= 12
    assert t not in held["output_ids"][:11]  # masked until min_new_tokens


def test_seed_reproducible_and_batch_independent(engine: Engine) -> None:
    params = {"temperature": 1.0, "max_new_tokens": 16, "seed": 1234, "ignore_eos": True}
    a = engine.generate(PROMPT, params)["output_ids"]
    b = engine.generate(PROMPT, params)["output_ids"]
    assert a == b
    c = engine.generate(PROMPT, {**params, "seed": 4321})["output_ids"]
    assert c != a
    batch = engine.generate([PROMPT, "Other prompt", "Third one here"],
                            [params, {**params, "seed": 7}, {"temperature": 1.0, "max_new_tokens": 5}])
    assert batch[0]["output_ids"] == a


def test_penalties_change_output(engine: Engine) -> None:
    base = engine.generate(PROMPT, greedy(40))["output_ids"]
    assert len(set(base)) < len(base), "the greedy baseline should repeat itself for this test to bite"
    for kw in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}, {"repetition_penalty": 2.0}):
        out = engine.generate(PROMPT, greedy(40, **kw))["output_ids"]
        assert out != base, kw
        assert len(set(out)) >= len(set(base)), kw


def test_output_and_prompt_logprobs(engine: Engine, tiny_model_path: str) -> None:
    from transformers import AutoModelForCausalLM

    out = engine.generate(PROMPT, greedy(8, return_logprob=True, top_logprobs_num=3, logprob_start_len=0))
    meta = out["meta"]
    assert len(meta["output_logprobs"]) == len(out["output_ids"]) == 8
    for tid, lp, top in zip(out["output_ids"], meta["output_logprobs"], meta["output_top_logprobs"]):
        assert top[0][0] == tid and abs(top[0][1] - lp) < 1e-5  # greedy picks the top token
        assert top[0][1] >= top[1][1] >= top[2][1]
    ids = engine.tokenizer.encode(PROMPT, add_special_tokens=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    with torch.inference_mode():
        ref = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    plp = meta["prompt_logprobs"]
    assert len(plp) == len(ids) and plp[0] is None
    for j in range(1, len(ids)):
        assert abs(plp[j] - ref[j - 1, ids[j]].item()) < 1e-4


def test_stream_equals_generate(engine: Engine) -> None:
    text = engine.generate(PROMPT, greedy(20))["text"]
    assert "".join(engine.stream(PROMPT, greedy(20))) == text


def test_bad_input_loses_nothing(engine: Engine) -> None:
    with pytest.raises(ValueError, match="empty"):
        engine.generate(input_ids=[[]], sampling_params=greedy(4))
    with pytest.raises(ValueError, match="context length"):
        engine.generate(PROMPT, greedy(10**6))
    with pytest.raises(ValueError, match="unknown sampling parameter"):
        engine.generate(PROMPT, {"temprature": 0.5})
    with pytest.raises(ValueError, match="temperature"):
        engine.generate(PROMPT, {"temperature": -1})
    with pytest.raises(ValueError, match="mutually exclusive"):
        engine.generate(PROMPT, {"regex": "a+", "choices": ["a"]})
    # a bad prompt in a list fails the whole call and leaves nothing running
    with pytest.raises(ValueError):
        engine.generate(input_ids=[[1, 2, 3], []], sampling_params=greedy(4))
    assert engine.generate(PROMPT, greedy(4))["meta"]["completion_tokens"] == 4


def test_abort_frees_kv(engine: Engine) -> None:
    from arborlm.runtime.types import Req, SamplingParams

    sched = engine.scheduler
    req = Req("to-abort", engine.tokenizer.encode(PROMPT), SamplingParams(**greedy(50)))
    sched.add_request(req)
    for _ in range(3):
        sched.step()
    assert sched.stats()["num_running"] == 1
    assert sched.abort_request("to-abort")
    outs = sched.step()
    assert any(o.rid == "to-abort" and o.finished and o.finish_reason.kind == "abort" for o in outs)

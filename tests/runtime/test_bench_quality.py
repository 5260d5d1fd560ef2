"""`arborlm bench quality` pieces: the perplexity equals transformers' on the same text (fp32, tiny
model), and GSM8K answers are read from after '####'."""

from __future__ import annotations

import math

import torch

from arborlm.runtime import Engine
from arborlm.runtime.bench.quality import final_number, held_out_texts, perplexity


def test_final_number_reads_the_gsm8k_marker() -> None:
    assert final_number("so 3 + 4 = 7\n#### 1,250.") == "1250"
    assert final_number("#### -3") == "-3"
    assert final_number("no marker 42") is None


def test_perplexity_matches_transformers(tiny_model_path: str) -> None:
    from transformers import AutoModelForCausalLM

    texts = held_out_texts(2)
    engine = Engine(model=tiny_model_path, dtype="float32", max_total_tokens=2048, max_running_requests=4)
    try:
        ppl, num_tokens = perplexity(engine, texts)
    finally:
        engine.shutdown()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    nll, count = 0.0, 0
    with torch.inference_mode():
        for t in texts:
            ids = engine.tokenizer(t, add_special_tokens=False, return_tensors="pt").input_ids
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            nll -= logprobs.gather(1, ids[0, 1:, None]).sum().item()
            count += ids.shape[1] - 1
    assert num_tokens == count
    assert math.isclose(ppl, math.exp(nll / count), rel_tol=1e-4)

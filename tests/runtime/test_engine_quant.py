"""Quantized engines (EngineConfig.quantization) keep greedy answers close to the unquantized model.

Measured when written (SmolLM2-135M, 8 prompts one at a time so every decode step runs the
quantized kernels, 16 tokens): int8 in bfloat16 against unquantized bfloat16 matched the first 16
tokens on 5/8 prompts (bf16 rounding adds its own drift); the float32 runs below pass their
thresholds (int8 >= 5/8, "gguf" >= 7/8: the converted safetensors hold the very same Q4_1 weights,
dequantized, so only the order of the sums and the quantized lm_head's top-8 refinement differ).
"""

from __future__ import annotations

import pytest
from greedy_prompts import PROMPTS
from kv_check import assert_kv_baseline

from arborlm.runtime import Engine
from arborlm.runtime.config import EngineConfig

NEW_TOKENS = 16
GREEDY = {"temperature": 0.0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True}


def _greedy_one_at_a_time(engine: Engine) -> list[list[int]]:
    return [engine.generate(p, GREEDY)["output_ids"] for p in PROMPTS]


def _share_equal(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


KW = {"model": "smollm2", "dtype": "float32", "max_total_tokens": 1024, "max_running_requests": 4}


@pytest.fixture(scope="module")
def unquantized_greedy() -> list[list[int]]:
    plain = Engine(**KW)
    try:
        return _greedy_one_at_a_time(plain)
    finally:
        plain.shutdown()


@pytest.mark.parametrize(("quantization", "min_share"), [("int8", 5 / 8), ("gguf", 7 / 8)])
def test_quantized_greedy_matches_unquantized(unquantized_greedy: list[list[int]], quantization: str,
                                              min_share: float) -> None:
    quant = Engine(**KW, quantization=quantization)
    try:
        layer = quant.scheduler.runner.model.layers[0].qkv
        assert getattr(layer, "kind", None) == ("int8" if quantization == "int8" else "int4")
        got = _greedy_one_at_a_time(quant)
        assert_kv_baseline(quant)
    finally:
        quant.shutdown()
    assert all(len(x) == NEW_TOKENS for x in got)
    share = _share_equal(got, unquantized_greedy)
    assert share >= min_share, f"{quantization}: {share:.3f} of prompts match on the first {NEW_TOKENS} tokens"


def test_bad_quantization_is_named(tiny_model_path: str) -> None:
    with pytest.raises(ValueError, match="quantization='int3'"):
        EngineConfig(quantization="int3")
    assert EngineConfig(quantization="none").quantization is None
    with pytest.raises(ValueError, match="quantization='gguf'.*embedded GGUF"):
        Engine(model=tiny_model_path, quantization="gguf")

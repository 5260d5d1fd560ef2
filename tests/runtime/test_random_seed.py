"""EngineConfig.random_seed seeds the sampler's generator for requests without their own seed."""

from __future__ import annotations

import pytest
import torch

from arborlm.runtime import Engine

UNSEEDED = {"temperature": 1.0, "max_new_tokens": 12, "ignore_eos": True}


def sample_with(model: str, random_seed: int) -> list[int]:
    eng = Engine(model=model, dtype="float32", max_total_tokens=512, max_running_requests=2,
                 random_seed=random_seed)
    try:
        torch.rand(100)  # other users of torch's global generator must not change the samples
        return eng.generate("Once upon a time", UNSEEDED)["output_ids"]
    finally:
        eng.shutdown()


@pytest.fixture(scope="module")
def runs(tiny_model_path: str) -> dict[str, list[int]]:
    return {"a": sample_with(tiny_model_path, 5), "b": sample_with(tiny_model_path, 5),
            "c": sample_with(tiny_model_path, 6)}


def test_same_random_seed_same_samples(runs: dict[str, list[int]]) -> None:
    assert runs["a"] == runs["b"]


def test_other_random_seed_other_samples(runs: dict[str, list[int]]) -> None:
    assert runs["a"] != runs["c"]  # 12 draws at temperature 1 over a 49k vocabulary

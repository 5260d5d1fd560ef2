"""Shared fixtures.

- `tokenizer`: the real SmolLM2 tokenizer (from the converted embedded model).
- `tiny_model_path`: a tiny random Llama (2 layers, hidden 64) saved as a local HF folder with the
  real tokenizer: fast tests of every code path without the 135M model's cost.
- `smollm2_path`: the converted default model folder (correctness tests against transformers).
- `shared_data`: the data shipped with the package (`arborlm.runtime.data.DATA_DIR`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# Child Pythons the tests start (`python -c`, servers) must not put the repo root on sys.path: its
# `kernels/` folder would shadow the hub package transformers imports (see arborlm.runtime.pyproc).
os.environ["PYTHONSAFEPATH"] = "1"


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from arborlm.runtime.model_loader import prepare_embedded

    return prepare_embedded("smollm2")


@pytest.fixture(scope="session")
def tokenizer(smollm2_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny_llama")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    # Larger-than-default init so the random model's argmax is not flat (ties make greedy flaky).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    from arborlm.runtime.data import DATA_DIR

    return DATA_DIR

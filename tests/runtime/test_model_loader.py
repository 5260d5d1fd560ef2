"""Model resolution: clear errors for what cannot load, and the cached conversion is reused."""

from __future__ import annotations

import json
import os

import pytest

from arborlm.runtime.config import EngineConfig
from arborlm.runtime.model_loader import load_model, prepare_embedded, resolve_dtype, resolve_model_path


def test_missing_path_names_what_was_given(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-model.*never downloads"):
        resolve_model_path(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        resolve_model_path(str(tmp_path))


def test_unsupported_architecture_lists_supported(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel.*supported: \['LlamaForCausalLM'"):
        load_model(EngineConfig(model=str(tmp_path)))


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="dtype='float8'"):
        EngineConfig(dtype="float8")
    with pytest.raises(TypeError, match="unknown Engine option"):
        EngineConfig.from_kwargs(max_total_token=5)


def test_embedded_model_is_converted_once(smollm2_path: str) -> None:
    marker = os.path.join(smollm2_path, ".converted")
    before = os.path.getmtime(marker)
    assert prepare_embedded("smollm2") == smollm2_path
    assert os.path.getmtime(marker) == before  # no second conversion
    assert resolve_dtype("float32", "cpu").is_floating_point


def test_local_folder_loads(tiny_model_path: str) -> None:
    loaded = load_model(EngineConfig(model=tiny_model_path, dtype="float32"))
    assert loaded.hf_config.architectures == ["LlamaForCausalLM"]
    assert "model.embed_tokens.weight" in loaded.state_dict

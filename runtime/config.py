"""The one frozen configuration object shared by Engine, Scheduler, ModelRunner and the server."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
# CPU kernels for decode attention and the layer's elementwise glue: "native" = the C++ kernels
# (kernels/native_cpu.cpp, built on first use), "torch" = the pure-torch references, "auto" = native
# where it builds and supports the device and dtype.
KERNEL_BACKENDS = ("auto", "native", "torch")
# Weight-only quantization of the linear layers at load (kernels/quant.py): None = model dtype,
# "int8" per output row, "int4" per group of 32 inputs, "gguf" = the GGUF's own Q4_0/Q4_1 blocks.
QUANTIZATIONS = (None, "int8", "int4", "gguf")


def default_cache_dir() -> str:
    return os.environ.get("ARBORLM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "arborlm"))


@dataclass(frozen=True)
class EngineConfig:
    model: str = "smollm2"
    dtype: str = "auto"  # "auto" resolves per device in model_loader.resolve_dtype
    device: str = "cpu"
    # KV budget: number of token slots in the pool (slot 0 is padding and never handed out).
    max_total_tokens: int = 32768
    max_running_requests: int = 64
    max_context_len: int | None = None  # default: the model's max_position_embeddings
    # Prefill budget per step (tokens), and the chunk size for long prompts (0 = no chunking).
    max_prefill_tokens: int = 4096
    chunked_prefill_size: int = 2048
    schedule_policy: str = "lpm"
    disable_radix_cache: bool = False
    # Constrained decoding
    # Speculative jump-forward: forced text is verified by the model, so output never changes.
    jump_forward: bool = True
    grammar_compile_threads: int = 2
    json_whitespace: str | None = None  # None = compact
    kernel_backend: str = "auto"
    quantization: str | None = None  # one of QUANTIZATIONS ("none" means None)
    num_threads: int | None = None  # torch intra-op threads; None = leave torch's default
    cache_dir: str = field(default_factory=default_cache_dir)
    random_seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not supported; choose one of {('auto',) + SUPPORTED_DTYPES}")
        if self.quantization == "none":
            object.__setattr__(self, "quantization", None)
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization={self.quantization!r} is not one of {QUANTIZATIONS}")
        if self.kernel_backend not in KERNEL_BACKENDS:
            raise ValueError(f"kernel_backend={self.kernel_backend!r} is not one of {KERNEL_BACKENDS}")
        if self.max_total_tokens < 16:
            raise ValueError(f"max_total_tokens={self.max_total_tokens} is too small (need >= 16)")
        if self.max_running_requests < 1:
            raise ValueError("max_running_requests must be >= 1")
        if self.chunked_prefill_size < 0:
            raise ValueError("chunked_prefill_size must be >= 0 (0 disables chunking)")

    def replace(self, **changes: object) -> EngineConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> EngineConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown Engine option(s) {unknown}; known options: {sorted(names)}")
        return cls(**kwargs)  # type: ignore[arg-type]

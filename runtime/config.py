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
# Grammar engines (constrain/compiler.py BACKENDS): both enforce the same regexes; llguidance also
# compiles `ebnf` grammars and compiles in milliseconds (see constrain/README_json.md for the numbers).
GRAMMAR_BACKENDS = ("outlines", "llguidance")


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
    grammar_backend: str = "llguidance"  # one of GRAMMAR_BACKENDS
    # JSON numbers without a bound: at most this many integral and fraction digits (15: exact in an
    # IEEE double, see constrain/number_digits.py); 0 = unbounded. Per request: json_number_digits.
    json_number_digits: int = 15
    kernel_backend: str = "auto"
    num_threads: int | None = None  # torch intra-op threads; None = leave torch's default
    cache_dir: str = field(default_factory=default_cache_dir)
    random_seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not supported; choose one of {('auto',) + SUPPORTED_DTYPES}")
        if self.grammar_backend not in GRAMMAR_BACKENDS:
            raise ValueError(f"grammar_backend={self.grammar_backend!r} is not one of {GRAMMAR_BACKENDS}")
        if isinstance(self.json_number_digits, bool) or not isinstance(self.json_number_digits, int) \
                or not 0 <= self.json_number_digits <= 400:
            raise ValueError(f"json_number_digits={self.json_number_digits!r} must be an integer in [0, 400] (0: unbounded)")
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

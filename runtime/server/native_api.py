"""Native POST /generate (SGLang-style): text or input_ids, one or a batch, full SamplingParams.

Response: {"text", "output_ids", "meta_info": {id, prompt_tokens, cached_tokens, completion_tokens,
finish_reason, e2e_latency, [output_token_logprobs, output_top_logprobs, input_token_logprobs,
input_top_logprobs]: entries [logprob, token_id, token_text]}}, or a list of those for a batch.
`input_token_logprobs` has one entry per prompt token from `logprob_start_len` on; an entry's
logprob is None where it was not computed: the prompt's first token, and the token at
`logprob_start_len` itself (its logits position precedes the start).
Streaming sends SSE chunks of that shape where `text` is cumulative (as SGLang) and `delta` is
the new piece, plus `index` (the prompt's position in a batch); then `data: [DONE]`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from arborlm.runtime.server.protocol import ApiError, GenerateRequest
from arborlm.runtime.server.streams import collect, first_then_rest, output_error, sse
from arborlm.runtime.server.tokenizer_manager import ReqState, SubmitJob, TokenizerManager, state_usage
from arborlm.runtime.types import SamplingParams


def _prompts(body: GenerateRequest, tm: TokenizerManager) -> tuple[list[list[int]], bool]:
    """(token ids per prompt, is_batch)."""
    if (body.text is None) == (body.input_ids is None):
        raise ApiError("give exactly one of text and input_ids", param="text")
    if body.text is not None:
        if isinstance(body.text, str):
            return [tm.check_ids(tm.encode(body.text), "text")], False
        if not body.text:
            raise ApiError("text is an empty list", param="text")
        return [tm.check_ids(tm.encode(t), "text") for t in body.text], True
    ids = body.input_ids
    if ids and isinstance(ids[0], list):
        return [tm.check_ids(x, "input_ids") for x in ids], True  # type: ignore[arg-type]
    return [tm.check_ids(ids, "input_ids")], False


def _params(body: GenerateRequest, tm: TokenizerManager, ids: list[int], i: int) -> SamplingParams:
    sp = body.sampling_params
    if isinstance(sp, list):
        if i >= len(sp):
            raise ApiError("sampling_params has fewer entries than prompts", param="sampling_params")
        sp = sp[i]
    d = dict(sp or {})
    for name in ("return_logprob", "top_logprobs_num", "logprob_start_len"):
        if name in d:
            continue
        d[name] = getattr(body, name)
    if isinstance(d.get("json_schema"), str):
        try:
            d["json_schema"] = json.loads(d["json_schema"])
        except json.JSONDecodeError as e:
            raise ApiError(f"json_schema is not valid JSON: {e}", param="json_schema") from None
    if d.get("json_schema") is not None and not isinstance(d["json_schema"], (dict, bool)):
        raise ApiError("json_schema must be a JSON object", param="json_schema")
    try:
        params = SamplingParams.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ApiError(str(e), param="sampling_params") from None
    tm.validate(ids, params)
    return params


def _lp_entries(tm: TokenizerManager, ids: list[int], lps: list[Any]) -> list[list[Any]]:
    return [[lp, tid, tm.tokenizer.decode([tid])] for tid, lp in zip(ids, lps, strict=False)]


def _top_entries(tm: TokenizerManager, tops: list[Any]) -> list[Any]:
    return [None if row is None else [[lp, tid, tm.tokenizer.decode([tid])] for tid, lp in row] for row in tops]


def meta_info(tm: TokenizerManager, s: ReqState) -> dict[str, Any]:
    u = state_usage(s)
    info: dict[str, Any] = {
        "id": s.rid,
        "prompt_tokens": u.prompt_tokens,
        "cached_tokens": u.cached_tokens,
        "completion_tokens": u.completion_tokens,
        "finish_reason": s.finish_reason.to_dict() if s.finish_reason else None,
        "e2e_latency": time.perf_counter() - s.created,
    }
    if s.usage is not None:
        info["jump_forward_tokens"], info["grammar_compile_ms"] = u.jump_forward_tokens, u.grammar_compile_ms
    if s.params.return_logprob:
        info["output_token_logprobs"] = _lp_entries(tm, s.output_ids, s.logprobs)
        info["output_top_logprobs"] = _top_entries(tm, s.top_logprobs)
        if u.prompt_logprobs is not None:
            # The scheduler's lists are indexed by prompt position (entry j: logprob of input_ids[j]);
            # the API reports positions start.. of the prompt, so both sides are sliced alike.
            start = max(0, s.params.logprob_start_len)
            info["input_token_logprobs"] = _lp_entries(tm, s.input_ids[start:], u.prompt_logprobs[start:])
            info["input_top_logprobs"] = _top_entries(tm, (u.prompt_top_logprobs or [])[start:])
    return info


async def generate(request: Request, body: GenerateRequest, tm: TokenizerManager) -> Any:
    prompts, is_batch = _prompts(body, tm)
    rids: list[str | None] = [None] * len(prompts)
    if body.rid is not None:
        given = [body.rid] if isinstance(body.rid, str) else list(body.rid)
        if len(given) != len(prompts):
            raise ApiError("rid must have one entry per prompt", param="rid")
        rids = list(given)
    tm.check_rids(rids)
    # Validate the whole batch, then submit all or nothing: a 400 leaves nothing running.
    jobs = [SubmitJob(ids, _params(body, tm, ids, i), rid) for i, (ids, rid) in enumerate(zip(prompts, rids))]
    states = await tm.submit_all(jobs, body.stream)

    def result(s: ReqState) -> dict[str, Any]:
        return {"text": s.text, "output_ids": list(s.output_ids), "meta_info": meta_info(tm, s)}

    if not body.stream:
        await collect(request, tm, states)
        results = [result(s) for s in states]
        return JSONResponse(results if is_batch else results[0])

    async def events(items: AsyncIterator[tuple[int, Any]]) -> AsyncIterator[str]:
        async for i, out in items:
            err = output_error(out)
            if err is not None:
                yield sse(err.body())
                continue
            if out.text or out.finished or out.new_token_ids:
                chunk = result(states[i]) | {"delta": out.text, "index": i}
                yield sse(chunk)

    return await first_then_rest(request, tm, states, events)

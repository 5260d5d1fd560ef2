"""OpenAI-compatible /v1/completions and /v1/chat/completions on top of the TokenizerManager.

Each choice (prompt × n) is one scheduler request. Before answering 200 (streaming or not) we wait
for every request's first output: grammar compile errors surface there and must be a 400.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from arborlm.runtime.server.protocol import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    _SamplingFields,
)
from arborlm.runtime.server.streams import collect, first_then_rest, output_error, sse
from arborlm.runtime.server.tokenizer_manager import ReqState, SubmitJob, TokenizerManager, state_usage
from arborlm.runtime.types import SamplingParams

# SamplingParams field -> the OpenAI parameter a client set, for error messages.
OPENAI_NAMES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens", "top_logprobs_num": "logprobs",
                "json_schema": "response_format"}
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


def build_params(req: _SamplingFields, max_tokens: int, logprobs: int | None) -> dict[str, Any]:
    """The SamplingParams dict of one choice (seed is varied per choice by the caller)."""
    if req.logit_bias:
        raise ApiError("logit_bias is not supported", param="logit_bias")
    d: dict[str, Any] = {"max_new_tokens": max_tokens}
    for name in ("temperature", "top_p", "top_k", "min_p", "seed", "frequency_penalty", "presence_penalty",
                 "repetition_penalty", "ignore_eos", "skip_special_tokens", "regex", "ebnf", "json_number_digits"):
        if getattr(req, name) is not None:
            d[name] = getattr(req, name)
    if req.min_tokens is not None:
        d["min_new_tokens"] = req.min_tokens
    if req.stop is not None:
        d["stop"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    if req.stop_token_ids is not None:
        d["stop_token_ids"] = list(req.stop_token_ids)
    if req.choices_ is not None:
        d["choices"] = list(req.choices_)
    schema: Any = req.json_schema
    rf = req.response_format
    if rf is not None and rf.type != "text":
        if schema is not None:
            raise ApiError("give either response_format or json_schema, not both", param="response_format")
        if rf.type == "json_object":
            schema = JSON_OBJECT_SCHEMA
        elif rf.json_schema is None or rf.json_schema.schema_ is None:
            raise ApiError("response_format json_schema needs json_schema.schema", param="response_format")
        else:
            schema = rf.json_schema.schema_
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise ApiError(f"json_schema is not valid JSON: {e}", param="json_schema") from None
    if schema is not None:
        d["json_schema"] = schema
    if logprobs is not None:
        d["return_logprob"] = True
        d["top_logprobs_num"] = logprobs
    return d


async def submit_choices(tm: TokenizerManager, prompts: list[list[int]], req: _SamplingFields,
                         max_tokens: int | None, logprobs: int | None, stream: bool) -> list[ReqState]:
    """Validate everything first, then submit all or nothing: a 400 must leave nothing running."""
    jobs: list[SubmitJob] = []
    for ids in prompts:
        mt = tm.default_max_tokens(ids) if max_tokens is None else max_tokens
        base = build_params(req, mt, logprobs)
        for j in range(req.n):
            d = dict(base)
            if req.seed is not None:
                d["seed"] = req.seed + j  # distinct but reproducible choices
            try:
                params = SamplingParams.from_dict(d)
            except (TypeError, ValueError) as e:
                raise ApiError(str(e)) from None
            tm.validate(ids, params, OPENAI_NAMES)
            jobs.append(SubmitJob(ids, params))
    return await tm.submit_all(jobs, stream)


def finish_reason(state: ReqState) -> str | None:
    fr = state.finish_reason
    return None if fr is None else fr.kind


def usage(states: list[ReqState], n: int) -> dict[str, Any]:
    prompt = cached = completion = 0
    for i in range(0, len(states), n):  # the n choices of a prompt share it: count it once
        group = states[i:i + n]
        prompt += state_usage(group[0]).prompt_tokens
        cached += max(state_usage(s).cached_tokens for s in group)
    for s in states:
        completion += state_usage(s).completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


class LogprobFormatter:
    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer

    def text(self, tid: int) -> str:
        return self.tok.decode([tid])

    def chat(self, ids: list[int], lps: list[float], tops: list[list[tuple[int, float]]]) -> dict[str, Any]:
        def entry(tid: int, lp: float) -> dict[str, Any]:
            t = self.text(tid)
            return {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}

        content = []
        for k, (tid, lp) in enumerate(zip(ids, lps, strict=False)):
            e = entry(tid, lp)
            e["top_logprobs"] = [entry(t, v) for t, v in (tops[k] if k < len(tops) else [])]
            content.append(e)
        return {"content": content}

    def completion(self, ids: list[int], lps: list[float], tops: list[list[tuple[int, float]]],
                   offset: int = 0) -> dict[str, Any]:
        tokens = [self.text(t) for t in ids[:len(lps)]]
        offsets, pos = [], offset
        for t in tokens:
            offsets.append(pos)
            pos += len(t)
        top = [{self.text(t): v for t, v in (tops[k] if k < len(tops) else [])} for k in range(len(tokens))]
        return {"tokens": tokens, "token_logprobs": list(lps[:len(tokens)]), "top_logprobs": top,
                "text_offset": offsets}


async def completions(request: Request, body: CompletionRequest, tm: TokenizerManager, model: str) -> Any:
    if body.echo:
        raise ApiError("echo is not supported", param="echo")
    if body.suffix:
        raise ApiError("suffix is not supported", param="suffix")
    if body.best_of is not None and body.best_of != body.n:
        raise ApiError("best_of other than n is not supported", param="best_of")
    p = body.prompt
    if isinstance(p, str):
        prompts = [tm.check_ids(tm.encode(p), "prompt")]
    elif p and all(isinstance(x, str) for x in p):
        prompts = [tm.check_ids(tm.encode(x), "prompt") for x in p]  # type: ignore[arg-type]
    elif p and all(isinstance(x, list) for x in p):
        prompts = [tm.check_ids(x, "prompt") for x in p]  # type: ignore[arg-type]
    else:
        prompts = [tm.check_ids(p, "prompt")]
    max_tokens = 16 if body.max_tokens is None else body.max_tokens  # OpenAI's default for completions
    states = await submit_choices(tm, prompts, body, max_tokens, body.logprobs, body.stream)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    fmt = LogprobFormatter(tm.tokenizer)
    want_lp = body.logprobs is not None

    def base(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices}

    if not body.stream:
        await collect(request, tm, states)
        choices = []
        for i, s in enumerate(states):
            lp = fmt.completion(s.output_ids, s.logprobs, s.top_logprobs) if want_lp else None
            choices.append({"index": i, "text": s.text, "logprobs": lp, "finish_reason": finish_reason(s),
                            "matched_stop": s.finish_reason.matched if s.finish_reason else None})
        return JSONResponse(base(choices) | {"usage": usage(states, body.n)})

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    offsets = [0] * len(states)

    async def events(items: AsyncIterator[tuple[int, Any]]) -> AsyncIterator[str]:
        async for i, out in items:
            err = output_error(out)
            if err is not None:
                yield sse(err.body())
                continue
            s = states[i]
            lp = None
            if want_lp:  # this output's own logprobs: later outputs may already be in s.logprobs
                lp = fmt.completion(out.new_token_ids, out.logprobs, out.top_logprobs, offsets[i])
            offsets[i] += len(out.text)
            if out.text or out.finished:
                chunk = base([{"index": i, "text": out.text, "logprobs": lp,
                               "finish_reason": finish_reason(s) if out.finished else None}])
                if include_usage:
                    chunk["usage"] = None
                yield sse(chunk)
        if include_usage:
            yield sse(base([]) | {"usage": usage(states, body.n)})

    return await first_then_rest(request, tm, states, events)


def chat_messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    msgs = []
    for k, m in enumerate(body.messages):
        if isinstance(m.content, list):
            parts = []
            for part in m.content:
                if part.type != "text" or part.text is None:
                    raise ApiError(f"messages[{k}]: content part type {part.type!r} is not supported (text only)",
                                   param=f"messages[{k}].content")
                parts.append(part.text)
            content = "".join(parts)
        else:
            content = m.content or ""
        msgs.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return msgs


async def chat_completions(request: Request, body: ChatCompletionRequest, tm: TokenizerManager,
                           model: str) -> Any:
    if body.tools:
        raise ApiError("tools are not supported", param="tools")
    if body.top_logprobs and not body.logprobs:
        raise ApiError("top_logprobs needs logprobs=true", param="top_logprobs")
    cont = body.continue_final_message and body.messages[-1].role == "assistant"
    try:
        text = tm.tokenizer.apply_chat_template(chat_messages(body), tokenize=False, add_generation_prompt=not cont,
                                                continue_final_message=cont)
    except ApiError:
        raise
    except Exception as e:  # a template's own error (e.g. roles out of order) is the client's
        raise ApiError(f"cannot apply the chat template: {e}", param="messages") from None
    ids = tm.check_ids(tm.encode(text), "messages")
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    states = await submit_choices(tm, [ids], body, max_tokens, logprobs, body.stream)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    fmt = LogprobFormatter(tm.tokenizer)

    def base(choices: list[dict[str, Any]], obj: str) -> dict[str, Any]:
        return {"id": rid, "object": obj, "created": created, "model": model, "choices": choices}

    if not body.stream:
        await collect(request, tm, states)
        choices = []
        for i, s in enumerate(states):
            lp = fmt.chat(s.output_ids, s.logprobs, s.top_logprobs) if body.logprobs else None
            choices.append({"index": i, "message": {"role": "assistant", "content": s.text}, "logprobs": lp,
                            "finish_reason": finish_reason(s),
                            "matched_stop": s.finish_reason.matched if s.finish_reason else None})
        return JSONResponse(base(choices, "chat.completion") | {"usage": usage(states, body.n)})

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        c = base(choices, "chat.completion.chunk")
        if include_usage:
            c["usage"] = None
        return c

    async def events(items: AsyncIterator[tuple[int, Any]]) -> AsyncIterator[str]:
        for i in range(len(states)):
            yield sse(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None}]))
        async for i, out in items:
            err = output_error(out)
            if err is not None:
                yield sse(err.body())
                continue
            s = states[i]
            lp = None
            if body.logprobs and out.new_token_ids:
                lp = fmt.chat(out.new_token_ids, out.logprobs, out.top_logprobs)
            if out.text or out.finished:
                delta = {"content": out.text} if out.text else {}
                yield sse(chunk([{"index": i, "delta": delta, "logprobs": lp,
                                  "finish_reason": finish_reason(s) if out.finished else None}]))
        if include_usage:
            yield sse(base([], "chat.completion.chunk") | {"usage": usage(states, body.n)})

    return await first_then_rest(request, tm, states, events)


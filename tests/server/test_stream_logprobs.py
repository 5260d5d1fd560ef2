"""Streamed OpenAI logprobs belong to each chunk's own tokens even when outputs queue up before the
route reads them (issue 11, defect 5). In-process: a TokenizerManager without sockets, outputs fed
straight into it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from arborlm.runtime.server.io_struct import TextOutput
from arborlm.runtime.server.openai_api import chat_completions, completions
from arborlm.runtime.server.protocol import ChatCompletionRequest, CompletionRequest
from arborlm.runtime.server.tokenizer_manager import TokenizerManager
from arborlm.runtime.types import FinishReason


class _Sink:
    """Stands in for the zmq.asyncio socket to the scheduler (its sends are awaited)."""

    async def send_pyobj(self, obj: Any, **kw: Any) -> None:
        return None


class _Connected:
    async def is_disconnected(self) -> bool:
        return False


async def _stream(tokenizer, route: Any, body: Any) -> list[dict]:
    tm = TokenizerManager(tokenizer, None, max_context_len=2048, vocab_size=len(tokenizer))  # type: ignore[arg-type]
    tm.to_sched = _Sink()
    task = asyncio.create_task(route(_Connected(), body, tm, "m"))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if tm.states:
            break
    (state,) = tm.states.values()
    ids = tokenizer.encode(" red green blue", add_special_tokens=False)[:3]
    for k, tid in enumerate(ids):  # three steps arrive before the route reads any of them
        last = k == len(ids) - 1
        tm._on_output(TextOutput(state.rid, tokenizer.decode([tid]), [tid], last,
                                 FinishReason("length") if last else None, [-(k + 1.0)], [[(tid, -(k + 1.0))]]))
    response = await task
    events = []
    async for chunk in response.body_iterator:
        text = chunk if isinstance(chunk, str) else chunk.decode()
        for line in text.splitlines():
            if line.startswith("data: {"):
                events.append(json.loads(line[len("data: "):]))
    return events


@pytest.mark.parametrize("kind", ["completions", "chat"])
def test_streamed_logprobs_per_chunk(tokenizer, kind: str) -> None:
    if kind == "completions":
        body = CompletionRequest.model_validate({"prompt": "hi", "max_tokens": 3, "logprobs": 1, "stream": True})
        events = asyncio.run(_stream(tokenizer, completions, body))
        values = [v for e in events for c in e["choices"] if c["logprobs"] for v in c["logprobs"]["token_logprobs"]]
    else:
        body = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}],
                                                     "max_tokens": 3, "logprobs": True, "top_logprobs": 1,
                                                     "stream": True})
        events = asyncio.run(_stream(tokenizer, chat_completions, body))
        values = [x["logprob"] for e in events for c in e["choices"] if c["logprobs"] for x in c["logprobs"]["content"]]
    assert values == [-1.0, -2.0, -3.0]

"""The OpenAI-compatible API, driven with the official `openai` client."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from server_helpers import API_KEY, ServerProc, needs_grammar


@pytest.fixture(scope="module")
def oai(server: ServerProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def real_oai(real_server: ServerProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{real_server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_completion(oai: openai.OpenAI) -> None:
    r = oai.completions.create(model="tiny", prompt="Hello", max_tokens=4, temperature=0,
                               extra_body={"ignore_eos": True})
    assert r.object == "text_completion" and len(r.choices) == 1
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4 and r.usage.prompt_tokens >= 1
    assert r.usage.prompt_tokens_details.cached_tokens is not None


def test_completion_n_and_batch_prompts(oai: openai.OpenAI) -> None:
    r = oai.completions.create(model="tiny", prompt=["a b", "c d e"], n=2, max_tokens=3, seed=7,
                               extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    assert r.usage.completion_tokens == 12


def test_completion_logprobs(oai: openai.OpenAI) -> None:
    r = oai.completions.create(model="tiny", prompt="x y", max_tokens=3, logprobs=2, temperature=0,
                               extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.token_logprobs) == 3 and len(lp.top_logprobs[0]) <= 2


def test_completion_stream_with_usage(oai: openai.OpenAI) -> None:
    chunks = list(oai.completions.create(model="tiny", prompt="Stream me", max_tokens=6, stream=True,
                                         temperature=0, stream_options={"include_usage": True},
                                         extra_body={"ignore_eos": True}))
    assert chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens is not None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_chat(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                    temperature=0, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    c = r.choices[0]
    assert c.message.role == "assistant" and isinstance(c.message.content, str)
    assert len(c.logprobs.content) == 3 and len(c.logprobs.content[0].top_logprobs) == 2
    assert r.usage.total_tokens == r.usage.prompt_tokens + 3


def test_chat_max_completion_tokens_and_stop(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                    max_completion_tokens=2, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 2


def test_chat_stream(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                         max_tokens=5, stream=True, stream_options={"include_usage": True},
                                         extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert isinstance(text, str)
    assert chunks[-1].usage.completion_tokens == 5


def test_64_concurrent_streams(server: ServerProc) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=300)

    async def one(i: int) -> tuple[str, str | None]:
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"request {i}"}], max_tokens=8, stream=True,
            extra_body={"ignore_eos": True})
        text, reason = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                reason = chunk.choices[0].finish_reason or reason
        return text, reason

    async def run_all() -> list[tuple[str, str | None]]:
        try:
            return await asyncio.gather(*(one(i) for i in range(64)))
        finally:
            await client.close()

    results = asyncio.run(run_all())
    assert len(results) == 64 and all(reason == "length" for _, reason in results)


# ---- the default model: outputs that must make sense ----


def test_real_chat(real_oai: openai.OpenAI) -> None:
    """No max_tokens: the default fills what is left of the context / KV pool; EOS ends it."""
    r = real_oai.chat.completions.create(model="smollm2", temperature=0,
                                         messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


@needs_grammar
def test_real_response_format_json_schema(real_oai: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    r = real_oai.chat.completions.create(
        model="smollm2", temperature=0, max_tokens=40,
        messages=[{"role": "user", "content": "Describe a person as JSON with name and age."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    data = json.loads(r.choices[0].message.content)
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)


@needs_grammar
def test_real_json_object_and_regex(real_oai: openai.OpenAI) -> None:
    r = real_oai.chat.completions.create(
        model="smollm2", temperature=0, max_tokens=100, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": 'Reply with the JSON object {"a": 1} and nothing else.'}])
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    r = real_oai.completions.create(model="smollm2", prompt="The year is", max_tokens=8,
                                    extra_body={"regex": r" [0-9]{4}"})
    assert r.choices[0].text.strip().isdigit() and len(r.choices[0].text) == 5

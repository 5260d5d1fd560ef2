"""Issue 11 through the server (tiny model): a tiny temperature with a grammar no longer kills the
scheduler process (defect 2), `max_tokens: 0` returns no token (defect 3), validation errors name
the API's parameter without parsing messages (one validator)."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from server_helpers import needs_grammar

COMP = "/v1/completions"


def still_serving(c: httpx.Client) -> None:
    r = c.post(COMP, json={"prompt": "still there?", "max_tokens": 2, "ignore_eos": True})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2


@needs_grammar
@pytest.mark.parametrize("stream", [False, True])
def test_tiny_temperature_with_grammar_keeps_the_server(client: httpx.Client, stream: bool) -> None:
    body = {"prompt": "Name a fruit:", "regex": "[a-z]+", "max_tokens": 6, "ignore_eos": True}
    greedy = client.post(COMP, json={**body, "temperature": 0}).json()["choices"][0]["text"]
    r = client.post(COMP, json={**body, "temperature": 1e-39, "stream": stream})
    assert r.status_code == 200, r.text
    if stream:
        text = "".join(json.loads(line[6:])["choices"][0]["text"]
                       for line in r.text.splitlines() if line.startswith("data: {"))
    else:
        text = r.json()["choices"][0]["text"]
    assert text == greedy and re.fullmatch("[a-z]+", text)
    still_serving(client)


def test_underflowing_sampling_values(client: httpx.Client) -> None:
    for extra in ({"top_p": 1e-46, "temperature": 1.0}, {"repetition_penalty": 1e-46, "temperature": 0}):
        r = client.post("/generate", json={"text": "Hello there", "sampling_params": {
            "max_new_tokens": 4, "ignore_eos": True, **extra}})
        assert r.status_code == 200, r.text
        assert 0 not in r.json()["output_ids"]
    still_serving(client)


def test_max_tokens_zero(client: httpx.Client) -> None:
    r = client.post(COMP, json={"prompt": "Hello there", "max_tokens": 0})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"] == "" and choice["finish_reason"] == "length"
    assert r.json()["usage"]["completion_tokens"] == 0
    r = client.post("/generate", json={"text": "Hello there", "sampling_params": {"max_new_tokens": 0},
                                       "return_logprob": True, "logprob_start_len": 0})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["output_ids"] == [] and out["meta_info"]["finish_reason"] == {"type": "length"}
    assert any(e[0] is not None for e in out["meta_info"]["input_token_logprobs"])


def test_parameter_names_come_from_the_validator(client: httpx.Client) -> None:
    r = client.post(COMP, json={"prompt": "hi", "min_tokens": 9, "max_tokens": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "min_tokens", r.text
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                  "max_tokens": 10**7})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text

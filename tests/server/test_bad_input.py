"""Every bad input is a 400 in OpenAI's error shape, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest
from server_helpers import API_KEY, ServerProc, needs_grammar

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]

CASES = [
    # (id, route, json body or raw bytes, substring expected in message (lowercase), expected param or None)
    ("malformed-json", CHAT, b'{"messages": [', "not valid json", None),
    ("body-not-object", CHAT, b"[1, 2]", "json object", None),
    ("wrong-type-max-tokens", CHAT, {"messages": MSG, "max_tokens": "lots"}, "integer", "max_tokens"),
    ("wrong-type-messages", CHAT, {"messages": "hi"}, "list", "messages"),
    ("missing-prompt", COMP, {"model": "m"}, "field required", "prompt"),
    ("negative-max-tokens", COMP, {"prompt": "hi", "max_tokens": -1}, "greater than or equal", "max_tokens"),
    ("absurd-max-tokens", CHAT, {"messages": MSG, "max_tokens": 10**9}, "context length", "max_tokens"),
    ("huge-int-max-tokens", COMP, {"prompt": "hi", "max_tokens": 10**30}, "context length", "max_tokens"),
    ("negative-temperature", CHAT, {"messages": MSG, "temperature": -0.5}, "greater than or equal", "temperature"),
    ("n-too-large", COMP, {"prompt": "hi", "n": 1000}, "less than or equal", "n"),
    ("top-p-zero", COMP, {"prompt": "hi", "top_p": 0}, "greater than", "top_p"),
    ("top-k-zero", COMP, {"prompt": "hi", "top_k": 0, "max_tokens": 2}, "top_k", "top_k"),
    ("over-context", COMP, {"prompt": list(range(100, 2100)), "max_tokens": 100}, "context length", "max_tokens"),
    ("regex-and-schema", COMP, {"prompt": "hi", "regex": "a+", "json_schema": {"type": "string"}},
     "mutually exclusive", None),
    ("response-format-and-schema", CHAT, {"messages": MSG, "response_format": {"type": "json_object"},
                                          "json_schema": {"type": "string"}}, "not both", "response_format"),
    ("json-schema-format-without-schema", CHAT, {"messages": MSG, "response_format": {"type": "json_schema"}},
     "json_schema", "response_format"),
    ("bad-response-format-type", CHAT, {"messages": MSG, "response_format": {"type": "yaml"}}, "", None),
    ("top-logprobs-without-logprobs", CHAT, {"messages": MSG, "top_logprobs": 3}, "logprobs", "top_logprobs"),
    ("too-many-top-logprobs", CHAT, {"messages": MSG, "logprobs": True, "top_logprobs": 50}, "", "top_logprobs"),
    ("tools-unsupported", CHAT, {"messages": MSG, "tools": [{"type": "function"}]}, "tools", "tools"),
    ("image-part", CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text only", None),
    ("empty-messages", CHAT, {"messages": []}, "at least 1", "messages"),
    ("bad-role", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, "", None),
    ("empty-prompt", COMP, {"prompt": ""}, "empty", "prompt"),
    ("token-out-of-vocab", COMP, {"prompt": [10**9]}, "token ids", "prompt"),
    ("stop-too-many", COMP, {"prompt": "hi", "stop": [str(i) for i in range(40)]}, "stop", "stop"),
    ("gen-unknown-param", "/generate", {"text": "hi", "sampling_params": {"bogus": 1}}, "unknown", None),
    ("gen-text-and-ids", "/generate", {"text": "hi", "input_ids": [1, 2]}, "exactly one", "text"),
    ("gen-neither", "/generate", {}, "exactly one", "text"),
    ("gen-bad-stop-type", "/generate", {"text": "hi", "sampling_params": {"stop": 5}}, "", None),
    ("gen-bad-choices", "/generate", {"text": "hi", "sampling_params": {"choices": []}}, "choices", None),
    ("gen-logprob-start-past-prompt", "/generate", {"input_ids": [1, 2], "logprob_start_len": 5}, "logprob", None),
    ("abort-missing-rid", "/abort_request", {}, "field required", "rid"),
]


def _post(c: httpx.Client, route: str, body) -> httpx.Response:
    if isinstance(body, bytes):
        return c.post(route, content=body, headers={"Content-Type": "application/json"})
    return c.post(route, json=body)


def assert_400(r: httpx.Response, needle: str = "", param: str | None = None) -> dict:
    assert r.status_code == 400, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["code"] == 400 and err["message"]
    assert needle in err["message"].lower(), err
    if param is not None:
        assert err["param"] == param, err
    return err


def assert_still_serving(c: httpx.Client) -> None:
    r = c.post(COMP, json={"prompt": "still there?", "max_tokens": 2, "ignore_eos": True})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("route,body,needle,param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_400(client: httpx.Client, route: str, body, needle: str, param: str | None) -> None:
    assert_400(_post(client, route, body), needle, param)
    assert_still_serving(client)


@needs_grammar
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("route,body", [
    (COMP, {"prompt": "hi", "regex": "(unclosed"}),
    (CHAT, {"messages": MSG, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}}}}),
    ("/generate", {"text": "hi", "sampling_params": {"regex": "[z-a]"}}),
], ids=["invalid-regex", "unsupported-schema-keyword", "generate-invalid-regex"])
def test_grammar_errors_are_400(client: httpx.Client, route: str, body: dict, stream: bool) -> None:
    """Compile errors surface asynchronously: the server waits for the first output before a 200."""
    assert_400(client.post(route, json={**body, "stream": stream, "max_tokens": 4} if route != "/generate"
                           else {**body, "stream": stream}))
    assert_still_serving(client)


def test_auth(server: ServerProc) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        r = httpx.post(f"{server.url}{COMP}", json={"prompt": "hi", "max_tokens": 1}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{server.url}/v1/models", headers=headers).status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers=headers).status_code == 401
    assert httpx.get(f"{server.url}/health").status_code == 200
    r = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200


def test_unknown_route_is_openai_shaped(client: httpx.Client) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == 404

"""`al.OpenAICompatible(base_url, model, api_key)`: any OpenAI-compatible server.

- A gen inside an open assistant role goes to `/v1/chat/completions` with the messages (a partial
  assistant message continues via the `continue_final_message` extension); any other gen goes to
  `/v1/completions` with the state's text.
- `regex` and the other non-OpenAI sampling fields go as the extension fields arborlm / SGLang / vLLM
  accept; `json_schema` goes as `response_format`. A server that lacks one answers 400, which
  reaches the user naming the call and the server's message.
- `select` scores the choices with `echo` + `logprobs` on /v1/completions (prompt logprobs); a server
  that cannot echo prompt logprobs (arborlm's own cannot; use RuntimeEndpoint) raises an error
  naming that feature.
- Roles render with the server model's own chat template when `tokenizer=` is given or the server
  exposes arborlm's `/get_model_info`; otherwise a plain `role: content` layout is used for the text
  (the chat endpoint still renders the real template for the model).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from arborlm.backends.base import (
    Backend,
    BackendError,
    CallMeta,
    ChatTemplate,
    GenResult,
    HFChatTemplate,
    Messages,
    SelectResult,
)
from arborlm.backends.http_util import get_json, make_client, post_json, post_sse
from arborlm.select_scoring import NEEDS_UNCONDITIONAL, SCORERS

# engine SamplingParams name -> request field (OpenAI's own name, or the extension field)
FIELD_NAMES = {
    "max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens", "temperature": "temperature", "top_p": "top_p",
    "top_k": "top_k", "min_p": "min_p", "seed": "seed", "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty", "repetition_penalty": "repetition_penalty", "stop": "stop",
    "stop_token_ids": "stop_token_ids", "ignore_eos": "ignore_eos", "skip_special_tokens": "skip_special_tokens",
    "regex": "regex", "choices": "choices",
}


class PlainTemplate:
    """`role: content` lines: the text of a conversation when the model's template is unknown."""

    def render(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant: " if add_generation_prompt else "")


def request_fields(params: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, value in params.items():
        if name == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": value}}
        elif name == "return_logprob":
            if value:
                body["logprobs"] = True
        elif name in FIELD_NAMES:
            body[FIELD_NAMES[name]] = value
        else:
            raise BackendError(f"OpenAICompatible cannot send the sampling parameter {name!r}")
    return body


def usage_meta(usage: dict[str, Any] | None, finish_reason: str | None) -> CallMeta:
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    return CallMeta(prompt_tokens=int(usage.get("prompt_tokens", 0)), completion_tokens=int(usage.get("completion_tokens", 0)),
                    cached_tokens=int(details.get("cached_tokens", 0) or 0), finish_reason=finish_reason)


class OpenAICompatible(Backend):
    def __init__(self, base_url: str, model: str, api_key: str | None = None, tokenizer: str | None = None,
                 timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model = model
        self.client = make_client(self.base_url, api_key, timeout)
        self._template: ChatTemplate = PlainTemplate()
        path = tokenizer or self._server_model_path()
        if path is not None:
            from transformers import AutoTokenizer

            self._template = HFChatTemplate(AutoTokenizer.from_pretrained(path))

    def _server_model_path(self) -> str | None:
        try:
            return str(get_json(self.client, self.base_url.removesuffix("/v1") + "/get_model_info")["model_path"])
        except (BackendError, KeyError, ValueError):
            return None

    def chat_template(self) -> ChatTemplate:
        return self._template

    # ------------------------------------------------------------------ requests
    def _request(self, prompt: str, params: dict[str, Any], messages: Messages | None) -> tuple[str, dict[str, Any]]:
        body = {"model": self.model, **request_fields(params)}
        if messages and messages[-1]["role"] == "assistant":
            if messages[-1]["content"]:
                body |= {"messages": messages, "continue_final_message": True}
            else:
                body["messages"] = messages[:-1]
            return "/chat/completions", body
        if body.get("logprobs") is True:
            body["logprobs"] = 0  # /v1/completions takes the number of top logprobs
        return "/completions", body | {"prompt": prompt}

    def generate(self, prompt: str, params: dict[str, Any], messages: Messages | None = None) -> GenResult:
        path, body = self._request(prompt, params, messages)
        data = post_json(self.client, path, body)
        choice = data["choices"][0]
        text = choice["message"]["content"] if path == "/chat/completions" else choice["text"]
        return GenResult(text or "", usage_meta(data.get("usage"), choice.get("finish_reason")))

    def stream(self, prompt: str, params: dict[str, Any],
               messages: Messages | None = None) -> Iterator[str | GenResult]:
        path, body = self._request(prompt, params, messages)
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        pieces: list[str] = []
        usage, finish = None, None
        for event in post_sse(self.client, path, body):
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or []:
                delta = choice.get("delta", {}).get("content") if path == "/chat/completions" else choice.get("text")
                if delta:
                    pieces.append(delta)
                    yield delta
                finish = choice.get("finish_reason") or finish
        yield GenResult("".join(pieces), usage_meta(usage, finish))

    def cache_prefix(self, prefix: str) -> CallMeta:
        """Best effort: a 0-token completion (a server that refuses it just does not precache)."""
        try:
            data = post_json(self.client, "/completions", {"model": self.model, "prompt": prefix, "max_tokens": 0})
        except BackendError:
            return CallMeta()
        return usage_meta(data.get("usage"), None)

    def _echo_logprobs(self, texts: list[str], prefix_len: list[int]) -> list[list[float]]:
        """Logprobs of the tokens of texts[i] that start at or after char prefix_len[i]."""
        body = {"model": self.model, "prompt": texts, "max_tokens": 0, "echo": True, "logprobs": 0}
        try:
            data = post_json(self.client, "/completions", body)
        except BackendError as e:
            raise BackendError(f"select needs prompt logprobs (echo + logprobs on /v1/completions), which this "
                               f"server does not provide: {e}") from None
        out: list[list[float]] = []
        for choice in sorted(data["choices"], key=lambda c: c["index"]):
            lp = choice.get("logprobs") or {}
            offsets, values = lp.get("text_offset") or [], lp.get("token_logprobs") or []
            i = choice["index"]
            out.append([float(v) for off, v in zip(offsets, values) if off >= prefix_len[i] and v is not None])
        return out

    def select(self, prefix: str, choices: list[str], method: str) -> SelectResult:
        cond = self._echo_logprobs([prefix + c for c in choices], [len(prefix)] * len(choices))
        uncond = self._echo_logprobs(list(choices), [0] * len(choices)) if method in NEEDS_UNCONDITIONAL else None
        if any(not lps for lps in cond) or (uncond is not None and any(len(u) != len(c) for u, c in zip(uncond, cond))):
            raise BackendError("select: the server's echoed logprobs do not cover every choice's tokens")
        index, scores = SCORERS[method](cond, uncond)
        return SelectResult(index, choices[index], CallMeta(scores=scores, token_logprobs=cond,
                                                            unconditional_logprobs=uncond))

    def close(self) -> None:
        self.client.close()

"""`al.RuntimeEndpoint(url)`: a program against a running `arborlm serve`, through native /generate.

The chat template comes from the server's own tokenizer (`/get_model_info`'s model_path), so roles
render exactly as `/v1/chat/completions` would; select tokenizes locally with the same tokenizer and
sends token ids.
"""

from __future__ import annotations

import threading
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
from arborlm.select_scoring import NEEDS_UNCONDITIONAL, SCORERS, split_choice_tokens, unconditional_start_id


def call_meta(info: dict[str, Any], ignore_output: bool = False) -> CallMeta:
    fr = info.get("finish_reason")
    out_lps = info.get("output_token_logprobs")
    return CallMeta(prompt_tokens=int(info.get("prompt_tokens", 0)), cached_tokens=int(info.get("cached_tokens", 0)),
                    completion_tokens=0 if ignore_output else int(info.get("completion_tokens", 0)),
                    finish_reason=fr.get("type") if isinstance(fr, dict) else fr,
                    output_logprobs=[e[0] for e in out_lps] if out_lps else None)


class RuntimeEndpoint(Backend):
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = make_client(self.base_url, api_key, timeout)
        self.model_info = get_json(self.client, "/get_model_info")
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.model_info["model_path"])
            return self._tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def chat_template(self) -> ChatTemplate:
        return HFChatTemplate(self.tokenizer)

    def generate(self, prompt: str, params: dict[str, Any], messages: Messages | None = None) -> GenResult:
        data = post_json(self.client, "/generate", {"text": prompt, "sampling_params": params})
        return GenResult(data["text"], call_meta(data["meta_info"]))

    def stream(self, prompt: str, params: dict[str, Any],
               messages: Messages | None = None) -> Iterator[str | GenResult]:
        last: dict[str, Any] | None = None
        for event in post_sse(self.client, "/generate", {"text": prompt, "sampling_params": params, "stream": True}):
            if event.get("delta"):
                yield event["delta"]
            last = event
        if last is None:
            raise BackendError("the stream ended without a result")
        yield GenResult(last["text"], call_meta(last["meta_info"]))

    def cache_prefix(self, prefix: str) -> CallMeta:
        data = post_json(self.client, "/generate", {"text": prefix, "sampling_params": {"max_new_tokens": 0}})
        return call_meta(data["meta_info"], ignore_output=True)

    def _prompt_logprobs(self, ids: list[list[int]], start: int) -> tuple[list[list[float]], list[dict[str, Any]]]:
        """Logprobs of ids[i][start:] for each i, in one batched request whose first `start - 1` tokens
        can come from the radix cache. /generate pairs input_ids[lsl:] with their logprobs; entry 0
        (the token at lsl itself) has none, so the scores start one entry later."""
        lsl = max(start - 1, 0)
        infos = self._logprob_request(ids, lsl)
        return [[float(e[0]) for e in info["input_token_logprobs"][start - lsl:]] for info in infos], infos

    def _logprob_request(self, ids: list[list[int]], lsl: int) -> list[dict[str, Any]]:
        data = post_json(self.client, "/generate", {"input_ids": ids, "sampling_params": {"max_new_tokens": 0},
                                                    "return_logprob": True, "logprob_start_len": lsl})
        return [d["meta_info"] for d in data]

    def select(self, prefix: str, choices: list[str], method: str) -> SelectResult:
        toks = split_choice_tokens(self.encode, prefix, choices)
        meta = CallMeta()
        cond, infos = self._prompt_logprobs(toks.full_ids, toks.shared_len)
        for info in infos:
            meta.add(call_meta(info, ignore_output=True))
        uncond = None
        if method in NEEDS_UNCONDITIONAL:
            bos = unconditional_start_id(self.tokenizer)
            infos = self._logprob_request([[bos, *toks.choice_ids(i)] for i in range(len(choices))], 0)
            uncond = [[float(e[0]) for e in info["input_token_logprobs"][1:]] for info in infos]
            for info in infos:
                meta.add(call_meta(info, ignore_output=True))
        index, scores = SCORERS[method](cond, uncond)
        meta.scores, meta.token_logprobs, meta.unconditional_logprobs = scores, cond, uncond
        return SelectResult(index, choices[index], meta)

    def close(self) -> None:
        self.client.close()

"""The one small interface every backend implements, and the typed records it returns.

    generate(prompt, params, messages) -> GenResult   params: engine SamplingParams names
    stream(prompt, params, messages)   -> iterator of str deltas, then one GenResult
    select(prefix, choices, method) -> SelectResult
    `messages` is the conversation when the call is inside an open role (the prompt is its rendering;
    a chat-API backend sends the messages instead), else None.
    cache_prefix(prefix)     -> CallMeta           (a 0-new-token request: the prefix enters the cache)
    chat_template()          -> ChatTemplate
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

Messages = list[dict[str, str]]


class BackendError(Exception):
    """A request the backend rejected (bad schema, HTTP 400, ...); the message says why."""


@dataclass
class CallMeta:
    """What one backend call reports. Select fills `scores` (one per choice) and `token_logprobs`."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    output_logprobs: list[float] | None = None
    scores: list[float] | None = None
    token_logprobs: list[list[float]] | None = None
    unconditional_logprobs: list[list[float]] | None = None

    def add(self, other: CallMeta) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens
        self.completion_tokens += other.completion_tokens

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass
class GenResult:
    text: str
    meta: CallMeta = field(default_factory=CallMeta)


@dataclass
class SelectResult:
    index: int
    choice: str
    meta: CallMeta


class ChatTemplate(Protocol):
    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str: ...


class HFChatTemplate:
    """Renders with the tokenizer's own chat template, as `/v1/chat/completions` does."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


class Backend(ABC):
    @abstractmethod
    def generate(self, prompt: str, params: dict[str, Any], messages: Messages | None = None) -> GenResult: ...

    @abstractmethod
    def stream(self, prompt: str, params: dict[str, Any],
               messages: Messages | None = None) -> Iterator[str | GenResult]: ...

    @abstractmethod
    def select(self, prefix: str, choices: list[str], method: str) -> SelectResult: ...

    @abstractmethod
    def cache_prefix(self, prefix: str) -> CallMeta: ...

    @abstractmethod
    def chat_template(self) -> ChatTemplate: ...

    def close(self) -> None:
        """Release threads / connections (optional)."""
        return None

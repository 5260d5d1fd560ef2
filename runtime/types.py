"""Shared types: the one request dataclass (`Req`) that flows scheduler → runner → sampler,
its `SamplingParams`, the `Batch` a step runs, and what a step reports back.

No torch here: the scheduler and radix cache import this module.

Token bookkeeping of a running request (all indices into `req.fill_ids` = input + output ids):

    [0, prefix_len)          K/V slots owned by the radix tree (locked via req.last_node)
    [prefix_len, kv_len)     K/V slots owned by the request (req.slot_ids[prefix_len:])
    [kv_len, len(fill_ids))  tokens whose K/V are not computed yet (next extend / decode input)
"""

from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    min_p: float = 0.0
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    # Constrained decoding: at most one of these.
    regex: str | None = None
    json_schema: Any = None  # dict, JSON string, or a pydantic model class
    choices: list[str] | None = None
    ebnf: str | None = None  # a Lark / GBNF grammar (needs the llguidance grammar engine)
    # JSON numbers without a bound: at most this many integral / fraction digits (0: unbounded);
    # None: the engine's json_number_digits.
    json_number_digits: int | None = None
    jump_forward: bool | None = None  # None: the engine's default
    # Logprobs
    return_logprob: bool = False
    top_logprobs_num: int = 0
    logprob_start_len: int = -1  # -1: no prompt logprobs

    @classmethod
    def from_dict(cls, d: dict[str, Any] | SamplingParams | None) -> SamplingParams:
        if d is None:
            return cls()
        if isinstance(d, SamplingParams):
            return dataclasses.replace(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown sampling parameter(s) {unknown}; known: {sorted(names)}")
        params = cls(**d)
        if isinstance(params.stop, str):
            params.stop = [params.stop]
        params.stop = list(params.stop or [])
        params.stop_token_ids = list(params.stop_token_ids or [])
        return params

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def grammar(self) -> tuple[str, Any] | None:
        """(kind, spec) of the constraint, or None. Validation guarantees at most one."""
        if self.regex is not None:
            return ("regex", self.regex)
        if self.json_schema is not None:
            return ("json_schema", self.json_schema)
        if self.choices is not None:
            return ("choice", self.choices)
        if self.ebnf is not None:
            return ("ebnf", self.ebnf)
        return None

    def validate(self, vocab_size: int | None = None) -> None:
        """Raise `validation.InvalidRequest` (a ValueError) naming the offending field; normalize
        values that would break float arithmetic (see runtime/validation.py)."""
        from arborlm.runtime.validation import validate_params

        validate_params(self, vocab_size)


class ReqStatus(enum.Enum):
    WAITING_GRAMMAR = "waiting_grammar"
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class FinishReason:
    kind: str  # "stop" | "length" | "abort"
    matched: int | str | None = None  # the EOS/stop token id or the stop string
    message: str | None = None  # for "abort": why
    # For a stop string: how many characters of the decoded output, counted from its end, start at
    # the match that stopped generation (an earlier occurrence may have been ignored because of
    # min_new_tokens, so "the first occurrence" is not it). Not part of to_dict().
    stop_chars_from_end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.kind}
        if self.matched is not None:
            d["matched"] = self.matched
        if self.message is not None:
            d["message"] = self.message
        return d


@dataclass(eq=False)
class Req:
    rid: str
    input_ids: list[int]
    params: SamplingParams
    output_ids: list[int] = field(default_factory=list)
    status: ReqStatus = ReqStatus.WAITING
    finish_reason: FinishReason | None = None
    # --- KV state (see the module docstring's table) ---
    req_pool_idx: int | None = None  # row of the ReqToToken table while running
    slot_ids: list[int] = field(default_factory=list)  # K/V slot of token i, for i < kv_len
    prefix_len: int = 0  # tree-owned, locked
    last_node: Any = None  # radix node locked for [0, prefix_len)
    # The runner must rewrite the request's whole ReqToToken row before the next forward (set when
    # slot_ids changed below kv_len: admission, cache_progress swapping duplicates for tree slots).
    table_dirty: bool = False
    cached_tokens: int = 0  # prompt tokens served from the cache at first admission
    # --- constrained decoding ---
    grammar: Any = None  # a GrammarMatcher, or None
    grammar_future: Any = None
    grammar_compile_ms: float = 0.0
    jump_forward_tokens: int = 0  # draft tokens the model accepted (each saved one forward pass)
    jump_forward_proposed: int = 0  # draft tokens proposed
    # An unverified jump-forward draft that follows output_ids (no K/V yet, not reported, the
    # matcher not advanced over it); the next forward verifies it. Part of fill_ids / seq_len.
    draft_ids: list[int] = field(default_factory=list)
    # --- logprobs (filled by the sampler / runner) ---
    output_logprobs: list[float] = field(default_factory=list)
    output_top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    prompt_logprobs: list[float | None] = field(default_factory=list)
    prompt_top_logprobs: list[list[tuple[int, float]] | None] = field(default_factory=list)
    # --- stop strings ---
    stop_text_len: int | None = None  # chars of decoded output to keep (text ends before stop str)
    # --- timing / stats ---
    arrival_time: float = field(default_factory=time.perf_counter)
    first_token_time: float | None = None
    finish_time: float | None = None
    num_forward_passes: int = 0
    num_retractions: int = 0

    @property
    def fill_ids(self) -> list[int]:
        return self.input_ids + self.output_ids + self.draft_ids

    @property
    def seq_len(self) -> int:
        return len(self.input_ids) + len(self.output_ids) + len(self.draft_ids)

    @property
    def num_draft(self) -> int:
        return len(self.draft_ids)

    @property
    def kv_len(self) -> int:
        return len(self.slot_ids)

    @property
    def num_pending(self) -> int:
        """Tokens whose K/V are still to be computed."""
        return self.seq_len - self.kv_len

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def owned_len(self) -> int:
        return self.kv_len - self.prefix_len


class ForwardMode(enum.Enum):
    EXTEND = "extend"  # any row may have >1 new token (prefill, chunk, jump-forward)
    DECODE = "decode"  # every row has exactly one new token


@dataclass
class Batch:
    """What one forward runs. Row i computes K/V for req.fill_ids[start_i : start_i + extend_lens[i]],
    where start_i = len(req.slot_ids) - extend_lens[i] (the scheduler appended the new slots already),
    and writes them to `req.slot_ids[start_i:]`.

    `sample_rows[i]` says whether row i samples a token this step (False for a non-final prefill chunk).
    `verify_lens[i]` = v > 0 asks for logits at the v positions before row i's last new token too
    (a jump-forward draft of v tokens is verified); empty = all zero.
    """

    reqs: list[Req]
    extend_lens: list[int]
    mode: ForwardMode
    sample_rows: list[bool]
    verify_lens: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.extend_lens)

    def __len__(self) -> int:
        return len(self.reqs)

    def row(self, i: int) -> Batch:
        """Row i as a batch of its own."""
        ext = self.extend_lens[i]
        return Batch([self.reqs[i]], [ext], ForwardMode.DECODE if ext == 1 else ForwardMode.EXTEND,
                     [self.sample_rows[i]], [self.verify_lens[i]] if self.verify_lens else [])


@dataclass
class RequestError:
    """Why a request failed, in OpenAI's error terms (code 400: the client's fault)."""

    message: str
    type: str = "server_error"  # or "invalid_request_error"
    code: int = 500
    param: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "code": self.code, "param": self.param}


@dataclass
class Usage:
    """A request's totals, sent once with its finishing output. Prompt logprobs ride here because
    they are complete only when the prompt is (index j: logprob of input_ids[j], see model_runner)."""

    prompt_tokens: int
    cached_tokens: int = 0
    completion_tokens: int = 0
    jump_forward_tokens: int = 0
    jump_forward_proposed: int = 0
    grammar_compile_ms: float = 0.0
    num_forward_passes: int = 0
    num_retractions: int = 0
    e2e_latency: float = 0.0
    ttft: float | None = None
    prompt_logprobs: list[float | None] | None = None  # None unless logprob_start_len >= 0
    prompt_top_logprobs: list[list[tuple[int, float]] | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("ttft", "prompt_logprobs", "prompt_top_logprobs"):
            if d[k] is None:
                del d[k]
        return d


@dataclass
class StepOutput:
    """One request's news from one scheduler step. `logprobs` / `top_logprobs` belong to exactly
    this output's `new_token_ids` (one entry each, when the request asked for logprobs) and are
    never resent; `usage` comes with the finishing output; `error` when the request failed."""

    rid: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None = None
    logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    usage: Usage | None = None
    error: RequestError | None = None

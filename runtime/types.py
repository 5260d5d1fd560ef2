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
        """Raise ValueError naming the offending field."""

        def bad(name: str, why: str) -> None:
            raise ValueError(f"sampling parameter {name}={getattr(self, name)!r} is invalid: {why}")

        for name in ("max_new_tokens", "min_new_tokens", "top_k", "top_logprobs_num", "logprob_start_len"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                bad(name, "must be an integer")
        for name in ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty",
                     "repetition_penalty"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                bad(name, "must be a number")
        if self.max_new_tokens < 0:
            bad("max_new_tokens", "must be >= 0")
        if self.min_new_tokens < 0:
            bad("min_new_tokens", "must be >= 0")
        if self.min_new_tokens > self.max_new_tokens:
            bad("min_new_tokens", f"must be <= max_new_tokens ({self.max_new_tokens})")
        if self.temperature < 0:
            bad("temperature", "must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            bad("top_p", "must be in (0, 1]")
        if self.top_k == 0 or self.top_k < -1:
            bad("top_k", "must be -1 (off) or >= 1")
        if not 0.0 <= self.min_p <= 1.0:
            bad("min_p", "must be in [0, 1]")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            bad("frequency_penalty", "must be in [-2, 2]")
        if not -2.0 <= self.presence_penalty <= 2.0:
            bad("presence_penalty", "must be in [-2, 2]")
        if not 0.0 < self.repetition_penalty <= 2.0:
            bad("repetition_penalty", "must be in (0, 2]")
        if self.top_logprobs_num < 0 or self.top_logprobs_num > 20:
            bad("top_logprobs_num", "must be in [0, 20]")
        if self.logprob_start_len < -1:
            bad("logprob_start_len", "must be -1 or >= 0")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            bad("seed", "must be an integer")
        if not all(isinstance(s, str) and s for s in self.stop):
            bad("stop", "must be a list of non-empty strings")
        if len(self.stop) > 16:
            bad("stop", "at most 16 stop strings")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in self.stop_token_ids):
            bad("stop_token_ids", "must be a list of integers")
        if vocab_size is not None and any(not 0 <= t < vocab_size for t in self.stop_token_ids):
            bad("stop_token_ids", f"token ids must be in [0, {vocab_size})")
        set_grammars = [n for n in ("regex", "json_schema", "choices", "ebnf") if getattr(self, n) is not None]
        if len(set_grammars) > 1:
            raise ValueError(f"sampling parameters {set_grammars} are mutually exclusive: give at most one")
        if self.regex is not None and not isinstance(self.regex, str):
            bad("regex", "must be a string")
        if self.choices is not None and (
            not isinstance(self.choices, list) or not self.choices
            or not all(isinstance(c, str) and c for c in self.choices)
        ):
            bad("choices", "must be a non-empty list of non-empty strings")
        if self.ebnf is not None and (not isinstance(self.ebnf, str) or not self.ebnf.strip()):
            bad("ebnf", "must be a non-empty grammar text (Lark or GBNF)")
        if self.json_number_digits is not None and (
            isinstance(self.json_number_digits, bool) or not isinstance(self.json_number_digits, int)
            or not 0 <= self.json_number_digits <= 400
        ):
            bad("json_number_digits", "must be an integer in [0, 400] (0: unbounded)")


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
    # Trailing output_ids that are an unverified jump-forward draft (no K/V yet, not reported,
    # the matcher not advanced over them); the next forward verifies them.
    num_draft: int = 0
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
        return self.input_ids + self.output_ids

    @property
    def seq_len(self) -> int:
        return len(self.input_ids) + len(self.output_ids)

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


@dataclass
class StepOutput:
    """One request's news from one scheduler step."""

    rid: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None = None
    meta: dict[str, Any] = field(default_factory=dict)
